//! The q35 compiler: front end, graph, q35 emission and the
//! target-independent passes (`q35-tile`, `q35-fuse`, the planning of
//! `q35-lower-to-kernels`), quantization, proof obligations, artifact
//! assembly, and the drivers behind the `q35c` and `q35-opt` binaries.
//! Backends live in `targets/<name>` behind [`q35_target::Target`]; the
//! driver knows them only through [`targets::REGISTRY`].
//!
//! Passes transform IR through melior or upstream MLIR passes; IR is never
//! rewritten as text. Weights never enter the IR (see DESIGN.md).

pub mod calibration;
pub mod capacity;
pub mod codegen;
pub mod driver;
pub mod emit;
pub mod front;
pub mod graph;
pub mod importance;
pub mod limits;
pub mod obligations;
pub mod parallel;
pub mod passes;
pub mod policy;
pub mod quant_report;
pub mod targets;

/// The pass pipeline runner every target shares.
pub use q35_target::pipeline;
