//! The executor: runs an artifact's dispatch list, on the CPU's cores or
//! (with the `cuda` feature) on an NVIDIA GPU.
//!
//! A [`Session`] is one loaded model with its KV cache. [`Session::forward`]
//! runs `tokens` new tokens at positions `start..start + tokens.len()`:
//! it writes token ids and positions into the input buffers, sets the
//! token dimension of every activation descriptor, and runs the
//! dispatches in order. Dispatch `d` runs
//! `d.workgroups + d.workgroups_per_token · tokens` workgroups, each id
//! exactly once, in parallel; the next dispatch starts when all have
//! finished. More tokens than the artifact's `max_tokens` are run in
//! chunks (the KV cache carries the context from one chunk to the next).
//!
//! The dispatch loop is the target's own ([`Executor`], chosen once at load
//! by the artifact's `target.kind`: [`crate::targets`]): on the CPU the
//! workgroups are spread over a thread pool; on a GPU each dispatch is one
//! kernel launch with that many blocks, on one stream. The session does
//! what is the same for every target: checking a call's range and tokens,
//! chunking, the cache position and the logits of a chunked call.
//!
//! The session holds no model logic: everything it does comes from the
//! manifest.

use std::path::Path;

use q35_format::artifact::Manifest;

use crate::artifact::{load_with, ArtifactInfo, LoadError};
use crate::bandwidth::MeasuredBandwidth;
use crate::targets::{self, DeviceError, LoadOptions};
use crate::tokenizer::{Tokenizer, TokenizerError};

pub use crate::targets::{DispatchObserver, Executor};

/// Why a forward call failed. Nothing has run when it is returned, except
/// after `ForwardError::Device`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error(
        "{tokens} tokens from position {start} need {} positions, but the artifact's context is {context} positions \
         (recompile with a larger --context, or use a shorter prompt)",
        start + tokens
    )]
    ContextOverflow {
        start: usize,
        tokens: usize,
        context: usize,
    },
    #[error("cannot start at position {start}: the cache holds only {cached} positions")]
    StartBeyondCache { start: usize, cached: usize },
    #[error("token {token} at index {index} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange {
        token: u32,
        index: usize,
        vocab_size: usize,
    },
    /// The device failed while running the call (the message names the
    /// file and the device's error; today only a GPU, with the `cuda`
    /// feature, can); the KV cache past the call's start is undefined, and
    /// CUDA keeps most such errors for every later call. Not behind the
    /// feature: every device target (the simulators too) can fail so.
    #[error("{0}")]
    Device(String),
}

impl From<DeviceError> for ForwardError {
    fn from(error: DeviceError) -> Self {
        Self::Device(error.0)
    }
}

/// A loaded model ready to run, with its KV cache.
pub struct Session {
    executor: Box<dyn Executor>,
    /// Positions held in the KV cache.
    cached: usize,
    /// Logits of a call that ran in several chunks.
    chunked_logits: Vec<f32>,
    /// Whether the last call's logits are in `chunked_logits` (else in the
    /// executor's output).
    last_chunked: bool,
    last_tokens: usize,
}

impl Session {
    /// Loads `path` (validating it, see [`crate::artifact`]) on the target
    /// its manifest names ([`crate::targets::load`]). A `cpu` artifact gets
    /// a pool of `threads` threads (0: one per core); with the `cuda`
    /// feature an `nvptx` artifact runs on the first CUDA device (`threads`
    /// is then unused).
    pub fn load(path: impl AsRef<Path>, threads: usize) -> Result<Self, LoadError> {
        load_with(path.as_ref(), |name, artifact, file_bytes| {
            let executor = targets::load(name, artifact, file_bytes, LoadOptions { threads })?;
            Ok(Self::with_executor(executor))
        })
    }

    /// A session over an artifact already loaded on its target (a cpu
    /// one: `CpuExecutor::new(LoadedArtifact::load(path)?, threads)`).
    pub fn with_executor(executor: Box<dyn Executor>) -> Self {
        Self {
            executor,
            cached: 0,
            chunked_logits: Vec::new(),
            last_chunked: false,
            last_tokens: 0,
        }
    }

    pub fn manifest(&self) -> &Manifest {
        self.artifact().manifest()
    }

    /// The validated artifact: manifest, buffers, tokenizer, sizes.
    pub fn artifact(&self) -> &ArtifactInfo {
        self.executor.info()
    }

    /// Threads running each dispatch on the CPU; 0 when the session runs
    /// on a GPU.
    pub fn threads(&self) -> usize {
        self.executor.threads()
    }

    /// What runs the dispatches, for people: `cpu, 4 threads`, or the GPU's
    /// name and compute capability.
    pub fn backend(&self) -> String {
        self.executor.backend()
    }

    /// For a simulated machine: what it counted (cycles, installs, MXM use).
    pub fn simulated(&self) -> Option<crate::targets::Simulated> {
        self.executor.simulated()
    }

    /// The bandwidth of the memory the weights are read from, for roofline
    /// figures: this machine's, with the session's threads, for a cpu
    /// session; the GPU's for a CUDA one (median of `runs` runs).
    pub fn measure_bandwidth(&mut self, runs: usize) -> Result<MeasuredBandwidth, String> {
        self.executor.measure_bandwidth(runs)
    }

    /// The longest sequence the artifact can run (its KV cache rows).
    pub fn context_length(&self) -> usize {
        self.manifest().context_length
    }

    pub fn vocab_size(&self) -> usize {
        self.manifest().model.vocab_size
    }

    /// Positions in the KV cache.
    pub fn cached(&self) -> usize {
        self.cached
    }

    /// Empties the KV cache (the next call must start at 0). The cache rows
    /// are not cleared: attention only reads rows written since.
    pub fn reset(&mut self) {
        self.cached = 0;
    }

    /// The artifact's tokenizer, parsed (`None` if it has none).
    pub fn tokenizer(&self) -> Result<Option<Tokenizer>, TokenizerError> {
        let info = self.artifact();
        info.tokenizer_json()
            .map(|json| Tokenizer::from_json_str(json, &format!("{}: tokenizer.json", info.path())))
            .transpose()
    }

    /// Runs `tokens` at positions `start..start + tokens.len()` and returns
    /// their logits, `[tokens.len() × vocab_size]` row-major, valid until
    /// the next call.
    ///
    /// The cache must hold at least `start` positions; positions from
    /// `start` on are overwritten (so `start < cached()` rewinds).
    pub fn forward(&mut self, tokens: &[u32], start: usize) -> Result<&[f32], ForwardError> {
        self.forward_with(tokens, start, None)
    }

    /// [`Session::forward`], calling `observer` before every dispatch (for
    /// calibration, which reads every matmul's input). Plain `forward` checks one
    /// `Option` per dispatch and pays nothing else. On a GPU every
    /// dispatch's activations are copied back to the host before it runs,
    /// which makes the call much slower (calibration runs are short).
    pub fn forward_observed(
        &mut self,
        tokens: &[u32],
        start: usize,
        observer: &mut DispatchObserver<'_>,
    ) -> Result<&[f32], ForwardError> {
        self.forward_with(tokens, start, Some(observer))
    }

    fn forward_with(
        &mut self,
        tokens: &[u32],
        start: usize,
        mut observer: Option<&mut DispatchObserver<'_>>,
    ) -> Result<&[f32], ForwardError> {
        let manifest = self.manifest();
        let (context, vocab, max_tokens) = (
            manifest.context_length,
            manifest.model.vocab_size,
            manifest.max_tokens,
        );
        if start > self.cached {
            return Err(ForwardError::StartBeyondCache {
                start,
                cached: self.cached,
            });
        }
        if start.saturating_add(tokens.len()) > context {
            return Err(ForwardError::ContextOverflow {
                start,
                tokens: tokens.len(),
                context,
            });
        }
        if let Some((index, &token)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= vocab)
        {
            return Err(ForwardError::TokenOutOfRange {
                token,
                index,
                vocab_size: vocab,
            });
        }
        let _span = tracing::debug_span!("forward", tokens = tokens.len(), start).entered();
        self.cached = start;
        self.last_tokens = tokens.len();
        self.last_chunked = tokens.len() > max_tokens;
        self.chunked_logits.clear();
        for (i, chunk) in tokens.chunks(max_tokens).enumerate() {
            let at = start + i * max_tokens;
            self.executor.run_chunk(chunk, at, observer.as_deref_mut())?;
            self.cached = at + chunk.len();
            if self.last_chunked {
                self.chunked_logits.extend_from_slice(self.executor.logits(chunk.len()));
            }
        }
        Ok(self.logits())
    }

    /// The logits of the last [`Session::forward`] call.
    pub fn logits(&self) -> &[f32] {
        if self.last_chunked {
            return &self.chunked_logits;
        }
        self.executor.logits(self.last_tokens)
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("artifact", &self.artifact().path())
            .field("backend", &self.backend())
            .field("cached", &self.cached)
            .finish()
    }
}
