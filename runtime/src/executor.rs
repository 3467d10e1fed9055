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
//! On the CPU the workgroups are spread over a thread pool; on a GPU
//! (`crate::cuda`) each dispatch is one kernel launch with that many
//! blocks, on one stream. The backend is chosen by the artifact's target
//! once, at load: the per-dispatch loops are each backend's own.
//!
//! The session holds no model logic: everything it does comes from the
//! manifest.

use std::path::Path;

use q35_format::artifact::{DispatchSpec, Manifest};

use crate::artifact::{load_with, ArtifactInfo, BoundDispatch, LoadError, LoadedArtifact};
#[cfg(feature = "cuda")]
use crate::cuda::CudaArtifact;
use crate::thread_pool::ThreadPool;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Why a forward call failed. Nothing has run when it is returned, except
/// after `ForwardError::Device` (the `cuda` feature).
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
    /// The GPU failed while running the call (the message names the file
    /// and the driver's error); the KV cache past the call's start is
    /// undefined, and CUDA keeps most such errors for every later call.
    #[cfg(feature = "cuda")]
    #[error("{0}")]
    Device(String),
}

/// Called before each dispatch of [`Session::forward_observed`] runs, with
/// the dispatch's index in the manifest's list, its spec, and for each of
/// its bound buffers (in `spec.buffers` order) the first `tokens` rows of
/// its contents if it is an activation or the output (`None` for inputs,
/// weights and caches). The dispatch has not run yet, so its inputs are
/// what it will read.
pub type DispatchObserver<'a> = dyn FnMut(usize, &DispatchSpec, &[Option<&[f32]>]) + 'a;

/// A pointer to a bound dispatch that workers may share. Workgroups of one
/// dispatch write disjoint parts of their output buffers (the compiler's
/// contract), and the session outlives every `run`.
struct SharedDispatch<'a>(&'a BoundDispatch);
// SAFETY: see above; the raw pointers inside are only passed to kernels.
unsafe impl Sync for SharedDispatch<'_> {}

/// Where a session runs its dispatch list.
enum Engine {
    /// On this machine's cores: the loaded shared object and a thread pool.
    Cpu {
        artifact: LoadedArtifact,
        pool: ThreadPool,
    },
    /// On an NVIDIA GPU, through the CUDA driver.
    #[cfg(feature = "cuda")]
    Cuda(CudaArtifact),
}

/// A loaded model ready to run, with its KV cache.
pub struct Session {
    engine: Engine,
    /// Positions held in the KV cache.
    cached: usize,
    /// Logits of a call that ran in several chunks.
    chunked_logits: Vec<f32>,
    /// Whether the last call's logits are in `chunked_logits` (else in the
    /// output buffer).
    last_chunked: bool,
    last_tokens: usize,
}

impl Session {
    /// Loads `path` (validating it, see [`crate::artifact`]). A `cpu`
    /// artifact gets a pool of `threads` threads (0: one per core); with
    /// the `cuda` feature an `nvptx` artifact runs on the first CUDA device
    /// (`threads` is then unused).
    pub fn load(path: impl AsRef<Path>, threads: usize) -> Result<Self, LoadError> {
        load_with(path.as_ref(), |name, artifact, file_bytes| {
            #[cfg(feature = "cuda")]
            if artifact.manifest.target.kind == "nvptx" {
                let gpu = CudaArtifact::from_artifact(name, artifact, file_bytes)?;
                return Ok(Self::with_engine(Engine::Cuda(gpu)));
            }
            let artifact = LoadedArtifact::from_artifact(name, artifact, file_bytes)?;
            Ok(Self::new(artifact, threads))
        })
    }

    /// A session over an already loaded cpu artifact.
    pub fn new(artifact: LoadedArtifact, threads: usize) -> Self {
        Self::with_engine(Engine::Cpu {
            artifact,
            pool: ThreadPool::new(threads),
        })
    }

    fn with_engine(engine: Engine) -> Self {
        Self {
            engine,
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
        match &self.engine {
            Engine::Cpu { artifact, .. } => artifact.info(),
            #[cfg(feature = "cuda")]
            Engine::Cuda(gpu) => gpu.info(),
        }
    }

    /// Threads running each dispatch on the CPU; 0 when the session runs
    /// on a GPU.
    pub fn threads(&self) -> usize {
        match &self.engine {
            Engine::Cpu { pool, .. } => pool.threads(),
            #[cfg(feature = "cuda")]
            Engine::Cuda(_) => 0,
        }
    }

    /// What runs the dispatches, for people: `cpu, 4 threads`, or the GPU's
    /// name and compute capability.
    pub fn backend(&self) -> String {
        match &self.engine {
            Engine::Cpu { pool, .. } => format!("cpu, {} threads", pool.threads()),
            #[cfg(feature = "cuda")]
            Engine::Cuda(gpu) => gpu.device().to_string(),
        }
    }

    /// The CPU session's pool, for measurements that should use the same
    /// threads (`None` on a GPU).
    pub fn thread_pool(&mut self) -> Option<&mut ThreadPool> {
        match &mut self.engine {
            Engine::Cpu { pool, .. } => Some(pool),
            #[cfg(feature = "cuda")]
            Engine::Cuda(_) => None,
        }
    }

    /// The GPU a CUDA session runs on (`None` on the CPU), for device-side
    /// measurements such as [`CudaArtifact::measure_bandwidth`].
    #[cfg(feature = "cuda")]
    pub fn cuda(&mut self) -> Option<&mut CudaArtifact> {
        match &mut self.engine {
            Engine::Cpu { .. } => None,
            Engine::Cuda(gpu) => Some(gpu),
        }
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
    /// calibration: see [`crate::calibrate`]). Plain `forward` checks one
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
            self.run_chunk(chunk, at, observer.as_deref_mut())?;
            self.cached = at + chunk.len();
            if self.last_chunked {
                let logits = match &self.engine {
                    Engine::Cpu { artifact, .. } => artifact.output(chunk.len()),
                    #[cfg(feature = "cuda")]
                    Engine::Cuda(gpu) => gpu.output(chunk.len()),
                };
                self.chunked_logits.extend_from_slice(logits);
            }
        }
        Ok(self.logits())
    }

    /// The logits of the last [`Session::forward`] call.
    pub fn logits(&self) -> &[f32] {
        if self.last_chunked {
            return &self.chunked_logits;
        }
        match &self.engine {
            Engine::Cpu { artifact, .. } => artifact.output(self.last_tokens),
            #[cfg(feature = "cuda")]
            Engine::Cuda(gpu) => gpu.output(self.last_tokens),
        }
    }

    /// One call of the dispatch list for at most `max_tokens` tokens.
    fn run_chunk(
        &mut self,
        ids: &[u32],
        start: usize,
        observer: Option<&mut DispatchObserver<'_>>,
    ) -> Result<(), ForwardError> {
        match &mut self.engine {
            Engine::Cpu { artifact, pool } => {
                run_cpu_chunk(artifact, pool, ids, start, observer);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Engine::Cuda(gpu) => gpu.run_chunk(ids, start, observer),
        }
    }
}

/// One call of the dispatch list on the CPU: each group of dispatches
/// (one, or several marked `concurrent`: independent, so their workgroups
/// run as one) spread over the pool, groups in order.
fn run_cpu_chunk(
    artifact: &mut LoadedArtifact,
    pool: &mut ThreadPool,
    ids: &[u32],
    start: usize,
    mut observer: Option<&mut DispatchObserver<'_>>,
) {
    let n = ids.len();
    artifact.bind_tokens(ids, start);
    let (tokens, start_arg) = (n as i64, start as i64);
    let specs = &artifact.info().manifest().dispatches;
    let mut first = 0;
    while first < artifact.dispatches.len() {
        let end = (first + 1..specs.len()).find(|&i| !specs[i].concurrent).unwrap_or(specs.len());
        if let Some(observe) = observer.as_deref_mut() {
            // Independent: each dispatch's inputs are ready before the group runs.
            for (index, spec) in specs.iter().enumerate().take(end).skip(first) {
                let views: Vec<Option<&[f32]>> = artifact.info().bindings()[index]
                    .iter()
                    .map(|&b| artifact.rows(b, n))
                    .collect();
                observe(index, spec, &views);
            }
        }
        let group: Vec<(SharedDispatch, usize)> = artifact.dispatches[first..end]
            .iter()
            .map(|d| (SharedDispatch(d), d.workgroups + d.workgroups_per_token * n))
            .collect();
        let count: usize = group.iter().map(|(_, c)| c).sum();
        let _span = tracing::trace_span!("dispatch", index = first, kernel = %artifact.dispatches[first].kernel, dispatches = end - first, workgroups = count).entered();
        let call = |mut wg: usize| {
            // The group's workgroups in order: dispatch by dispatch.
            let Some((d, _)) = group.iter().find(|(_, c)| {
                let here = wg < *c;
                if !here {
                    wg -= c;
                }
                here
            }) else {
                return;
            };
            // SAFETY: the entry was found in the loaded code under the
            // kernel's name and its trampoline matches the argument
            // count; the descriptors and buffers they point to are
            // owned by the artifact and sized from the manifest; the
            // group's dispatches write no buffer another of them binds
            // (`check_concurrent`).
            unsafe { (d.0.trampoline)(d.0.entry, wg as i64, tokens, start_arg, &d.0.args) }
        };
        pool.run(count, &call);
        first = end;
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
