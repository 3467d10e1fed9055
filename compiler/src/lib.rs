//! The q35 compiler: front end, q35 passes, the pass pipeline and the
//! drivers behind the `q35c` and `q35-opt` binaries.
//!
//! Passes transform IR through melior or upstream MLIR passes; IR is never
//! rewritten as text. Weights never enter the IR (see DESIGN.md).

pub mod calibration;
pub mod codegen;
pub mod driver;
pub mod emit;
pub mod front;
pub mod graph;
pub mod importance;
pub mod limits;
pub mod nvptx;
pub mod obligations;
pub mod parallel;
pub mod passes;
pub mod pipeline;
pub mod policy;
pub mod quant_report;
