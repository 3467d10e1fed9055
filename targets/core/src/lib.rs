//! What every q35 backend shares, and nothing backend-specific: the
//! [`Target`](target::Target) trait the driver and artifact writer know
//! targets through, the planned IR targets consume ([`plan`]: buffers,
//! dispatches and typed [`kernel`] descriptions), the pass pipeline
//! runner, and the op-building helpers kernels are written with.
//!
//! Dependencies point one way: `q35c` → `q35-target-<name>` → this crate.

pub mod activation_rows;
pub mod builder;
pub mod kernel;
pub mod math;
pub mod pass;
pub mod pipeline;
pub mod plan;
pub mod target;

pub use activation_rows::ActivationCodes;
pub use kernel::{AttentionShape, Epilogue, MatmulShape, RowOp};
pub use plan::{KernelSpec, Plan};
pub use target::{Backend, CodeObject, Common, Session, Stage, Target, TargetArg};
