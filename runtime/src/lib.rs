//! The q35 runtime: loads what the compiler produced and runs it.
//!
//! `q35-rt` is the deployed half of q35. It reads a compiled `model.q35`
//! artifact, validates it, binds buffers as the manifest says and executes
//! the dispatch list; around that it provides what generation and
//! evaluation need: the tokenizer, sampling, perplexity, and the reference
//! forward pass that every backend is checked against.
//!
//! What it must not do:
//! - link MLIR or LLVM, or depend on the compiler crate: a deployed runtime
//!   is small and starts fast;
//! - plan anything: buffer sizes, tiling and the order of dispatches come
//!   from the artifact, decided at compile time.
//!
//! Each module has its own error type, so a caller can tell a bad
//! `tokenizer.json` from a bad weight file without string matching.
//!
//! - [`tokenizer`]: byte-level BPE from a Hugging Face `tokenizer.json`;
//! - [`sampling`]: greedy and seeded temperature / top-k / top-p sampling;
//! - [`reference`](mod@reference): the plain f32/f64 Llama forward pass used as the oracle;
//! - [`perplexity`]: llama.cpp-compatible perplexity over any evaluator.

pub mod perplexity;
pub mod reference;
pub mod sampling;
pub mod tokenizer;

pub use q35_format::ModelConfig;
