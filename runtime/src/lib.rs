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
//! - [`artifact`]: loading and validating an artifact, the checks every
//!   target shares (container, plan, weights, kernel signatures);
//! - [`targets`]: the [`Executor`](targets::Executor) trait and one module
//!   per target behind it, picked by the artifact's `target.kind` in one
//!   registry: [`targets::cpu`] (the shared object, dlopened from memory,
//!   its workgroups on a thread pool) and [`targets::nvptx`] (the PTX
//!   checked without a GPU, kernel parameter lists; `cuda`, the `cuda`
//!   feature: running it on an NVIDIA GPU through the CUDA driver API,
//!   loaded at run time);
//! - [`executor`]: [`Session`], one loaded model with its KV cache, running
//!   forward calls on whichever executor its artifact needs;
//! - [`thread_pool`], [`memref`], [`kernel`], [`elf`], [`host`]: pieces
//!   targets share (workgroup scheduling, memref descriptors, the kernel
//!   calling convention, the code object read before loading, this
//!   machine's memory and CPU features);
//! - [`check`]: compiled code against the reference on the artifact's weights;
//! - [`dispatch_check`]: each compiled matmul against exact arithmetic on
//!   the inputs the compiled model gave it (what the integer path is
//!   checked by);
//! - [`bandwidth`]: the machine's memory read bandwidth, for roofline figures;
//! - [`prompt`]: BOS and chat template for user text;
//! - [`tokenizer`]: byte-level BPE from a Hugging Face `tokenizer.json`;
//! - [`sampling`]: greedy and seeded temperature / top-k / top-p sampling;
//! - [`reference`](mod@reference): the plain f32/f64 Llama forward pass used as the oracle;
//! - [`perplexity`]: llama.cpp-compatible perplexity over any evaluator;
//! - [`calibrate`]: per-column input mean squares of every matrix, for
//!   `q35c --quant-importance`.
//!
//! No module depends on one that depends on it (`scripts/module-cycles.py`).

pub mod artifact;
pub mod bandwidth;
pub mod calibrate;
pub mod chat;
pub mod check;
pub mod dispatch_check;
pub mod elf;
pub mod executor;
pub mod host;
pub mod kernel;
pub mod memref;
pub mod perplexity;
pub mod prompt;
pub mod reference;
pub mod sampling;
pub mod targets;
pub mod thread_pool;
pub mod tokenizer;

// The old paths of what moved under `targets`, kept for other crates.
pub use targets::cpu::code;
#[cfg(feature = "cuda")]
pub use targets::nvptx::cuda;
pub use targets::nvptx;

pub use executor::{ForwardError, Session};
pub use q35_format::ModelConfig;
