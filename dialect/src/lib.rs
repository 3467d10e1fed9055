//! The `q35` MLIR dialect.
//!
//! The dialect is defined declaratively in IRDL (`dialect/irdl/q35.irdl.mlir`)
//! and registered with MLIR at start-up through melior, so MLIR's own
//! verifier checks every `q35.*` op against it. This crate holds:
//!
//! - [`context`]: a context with the upstream dialects and `q35` loaded, and
//!   a diagnostic collector so MLIR's messages reach the user;
//! - [`packed`]: the `!q35.packed<...>` weight type as a Rust value;
//! - [`ops`]: one typed builder per op (IRDL ops have no generated builders);
//! - [`verify`]: the checks IRDL cannot express (shape and element-type
//!   agreement), run by every tool and as the `q35-verify` pass.
//!
//! It must not transform IR: passes live in the compiler crate.

pub mod context;
pub mod ops;
pub mod packed;
pub mod verify;

pub use context::{Diagnostics, Q35Context};
pub use packed::{PackedType, Quant};
pub use verify::{verify_module, VerifyError};

/// The IRDL source of the dialect, embedded so every tool loads the same
/// definition without needing the source tree at run time.
pub const IRDL_SOURCE: &str = include_str!("../irdl/q35.irdl.mlir");

/// Errors of this crate. Messages name the file, op or type concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the embedded q35 IRDL definition failed to load:\n{0}")]
    DialectLoad(String),
    #[error("{path}: input contains a NUL byte at offset {offset}; MLIR text must not")]
    NulByte { path: String, offset: usize },
    #[error("{path}: invalid MLIR:\n{diagnostics}")]
    Parse { path: String, diagnostics: String },
    #[error("{path}: MLIR verification failed:\n{diagnostics}")]
    Verify { path: String, diagnostics: String },
    #[error("{0}")]
    Shape(#[from] VerifyError),
    #[error("invalid q35 type `{text}`: {reason}")]
    Type { text: String, reason: String },
    #[error("failed to build `{op}`: {reason}")]
    Build { op: &'static str, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;
