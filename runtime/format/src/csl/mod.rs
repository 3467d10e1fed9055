//! The CSL target's shared parts: the machine a program is laid out for
//! ([`config`]) and how a dequant-matmul's coded weights sit in its PEs'
//! memories ([`block`]). Shared by the compiler, which partitions and
//! emits, and q35-rt's simulator, which loads the weights as data into
//! the arrays the emitted program declares.

pub mod block;
pub mod program;
pub mod config;

pub use block::{Block, BlockShape};
pub use program::{CslFile, CslProgram, Region, RegionKind};
pub use config::CslConfig;
