//! The q35 weight format: 3.5-bit asymmetric quantization of linear weights.
//!
//! A weight matrix `W` of shape `[rows, cols]` (Hugging Face layout, a row is
//! one output channel) is split along `cols` into groups. Inside a group the
//! even columns get a 4-bit code (`0..=L4`) and the odd columns a 3-bit code
//! (`0..=L3`), so two weights take 7 bits. Each (row, group) stores an f16 min
//! and an 8-bit range code; each row stores one f16 range scale. Every
//! consumer reconstructs a weight as `fl32(min + fl32(q * s))` with
//! `s = fl32(range / L)` (see [`dequant`]).
//!
//! This crate is the reference for that format: it quantizes, packs and
//! unpacks code blocks, dequantizes, reports true bits per weight, and
//! (de)serializes tensors. It also holds what compiler and runtime share
//! without MLIR: the model configuration, the `.q35` artifact container
//! ([`artifact`]) and the one way every binary writes an output file
//! ([`output`]). Kernels, the compiler and the Coq
//! proofs mirror the names and arithmetic here, so the arithmetic must stay
//! exactly as `docs/format.md` states it. It has no MLIR/LLVM dependency and
//! no `unsafe`.
//!
//! The same grouping and parameter scheme also gives the comparison formats
//! `int4` (every weight 4-bit) and `int3` (every weight 3-bit); `f16` and
//! `f32` are pass-through.

pub mod activations;
pub mod artifact;
pub mod output;
pub mod plan;
pub mod quote;
pub mod signature;
pub mod csl;
pub mod tsp;
mod config;
pub mod allocate;
pub mod gptq;
pub mod rotation;
mod kind;
mod layout;
mod math;
mod pack;
mod search;
mod serial;
mod tensor;

pub use config::ModelConfig;
pub use kind::{GroupSize, QuantKind};
pub use layout::Layout;
pub use math::{dequant, f16_round_down, quantize_code, GroupParams, INT8_PATH_MAX_K};
pub use pack::{
    block_bytes, pack_group, pack_planes, planes_bytes, unpack_group, unpack_planes, L3, L4,
};
pub use search::QuantSearch;
pub use serial::{HEADER_BYTES, LAYOUT_VERSION, MAGIC};
pub use tensor::{Payload, QuantStats, QuantizedTensor};

/// Everything that can go wrong when quantizing, reading or parsing a tensor.
///
/// Messages name the tensor (and the row, group or column where it helps) so
/// a tool can print them as they are.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("tensor `{tensor}`: shape {rows}x{cols} is empty")]
    EmptyShape {
        tensor: String,
        rows: usize,
        cols: usize,
    },
    #[error("tensor `{tensor}`: shape {rows}x{cols} needs {expected} values, got {found}")]
    DataLength {
        tensor: String,
        rows: usize,
        cols: usize,
        expected: usize,
        found: usize,
    },
    #[error("tensor `{tensor}`: non-finite weight {value} at row {row}, column {col}")]
    NonFinite {
        tensor: String,
        row: usize,
        col: usize,
        value: f32,
    },
    #[error("tensor `{tensor}`: row {row}, group {group}: min {min} is below the f16 range")]
    MinOverflow {
        tensor: String,
        row: usize,
        group: usize,
        min: f32,
    },
    #[error(
        "tensor `{tensor}`: row {row}: group span {span} needs a range scale beyond f16 \
         (at most 65504 * 255)"
    )]
    RangeOverflow {
        tensor: String,
        row: usize,
        span: f64,
    },
    #[error("tensor `{tensor}`: weight {value} at row {row}, column {col} overflows f16")]
    F16Overflow {
        tensor: String,
        row: usize,
        col: usize,
        value: f32,
    },
    #[error(
        "tensor `{tensor}`: bad magic {found:02x?}, expected {:02x?} (\"Q35T\")",
        MAGIC
    )]
    BadMagic { tensor: String, found: Vec<u8> },
    #[error(
        "tensor `{tensor}`: layout version {found}, this reader knows {}",
        LAYOUT_VERSION
    )]
    UnsupportedVersion { tensor: String, found: u8 },
    #[error("tensor `{tensor}`: unknown {field} code {code} in header")]
    UnknownCode {
        tensor: String,
        field: &'static str,
        code: u64,
    },
    #[error("tensor `{tensor}`: {what} is {found} bytes, expected {expected}")]
    Length {
        tensor: String,
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error(
        "tensor `{tensor}`: {what} at row {row}, index {index} is invalid (f16 bits {bits:#06x})"
    )]
    InvalidParam {
        tensor: String,
        what: &'static str,
        row: usize,
        index: usize,
        bits: u16,
    },
    #[error("tensor `{tensor}`: kind {kind} cannot hold {payload} data")]
    PayloadKind {
        tensor: String,
        kind: QuantKind,
        payload: &'static str,
    },
    #[error("tensor `{tensor}`: row {row}, group {group} has nonzero padding bits")]
    Padding {
        tensor: String,
        row: usize,
        group: usize,
    },
    #[error("unknown group size `{0}` (expected 32, 64, 128, 256 or channel)")]
    ParseGroupSize(String),
    #[error("unknown quantization kind `{0}` (expected q35, int4, int3, f16 or f32)")]
    ParseQuantKind(String),
    #[error("unknown quantization search `{0}` (expected none or mse)")]
    ParseQuantSearch(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
