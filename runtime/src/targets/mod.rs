//! The targets this runtime runs, behind one [`Executor`] trait, and the
//! registry that picks one by the artifact's `target.kind`.
//!
//! A target is one module here: `cpu` (a shared object, dlopened, its
//! workgroups spread over a thread pool) and `nvptx` (the offline PTX
//! checks in every build; running on an NVIDIA GPU through the CUDA driver
//! with the `cuda` feature). Each one takes an artifact validated by
//! [`crate::artifact`] (steps 1, 3 and 4), adds its own checks and loading
//! (steps 2 and 5), and returns an [`Executor`]. A new target (the CSL and
//! TSP simulators) adds a module and one line to [`TARGETS`], and touches
//! no other target.
//!
//! Targets never depend on each other, nor on the session that drives
//! them (the `executor` module).

pub mod cpu;
pub mod csl;
pub mod nvptx;
pub mod tsp;

use q35_format::artifact::{Artifact, DispatchSpec};

use crate::artifact::{ArtifactInfo, LoadError};
use crate::bandwidth::MeasuredBandwidth;

/// Called before each dispatch of a chunk runs, with the dispatch's index
/// in the manifest's list, its spec, and for each of its bound buffers (in
/// `spec.buffers` order) the first `tokens` rows of its contents if it is
/// an activation or the output (`None` for inputs, weights and caches).
/// The dispatch has not run yet, so its inputs are what it will read.
pub type DispatchObserver<'a> = dyn FnMut(usize, &DispatchSpec, &[Option<&[f32]>]) + 'a;

/// The device failed while running a chunk (the message names the file
/// and the device's error); the KV cache past the call's start is then
/// undefined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(pub String);

/// What a session needs from a target: an artifact loaded on it, with its
/// buffers and KV cache, that runs the dispatch list for a chunk of tokens.
///
/// A chunk is at most `max_tokens` tokens at positions
/// `start..start + ids.len()`; the session checks the range, the
/// vocabulary and the cache before calling, and splits longer calls into
/// chunks. Dispatch `d` runs `d.workgroups + d.workgroups_per_token ·
/// tokens` workgroups, each id once, and the next dispatch starts when all
/// have finished (or, for dispatches marked `concurrent`, with the rest of
/// their group).
pub trait Executor: Send + std::fmt::Debug {
    /// The validated manifest, buffers, tokenizer and sizes.
    fn info(&self) -> &ArtifactInfo;

    /// What runs the dispatches, for people: `cpu, 4 threads`, or the GPU's
    /// name and compute capability.
    fn backend(&self) -> String;

    /// Threads running each dispatch on the CPU; 0 for a device.
    fn threads(&self) -> usize {
        0
    }

    /// Runs the dispatch list once for `ids` at positions from `start`,
    /// calling `observer` (if any) before each dispatch.
    fn run_chunk(
        &mut self,
        ids: &[u32],
        start: usize,
        observer: Option<&mut DispatchObserver<'_>>,
    ) -> Result<(), DeviceError>;

    /// The first `tokens` rows of the last chunk's logits,
    /// `[tokens × vocab_size]` row-major.
    fn logits(&self, tokens: usize) -> &[f32];

    /// The bandwidth of the memory the weights are read from (the roof
    /// decoding runs under), the median of `runs` timed runs.
    fn measure_bandwidth(&mut self, runs: usize) -> Result<MeasuredBandwidth, String>;

    /// For a simulated machine: what it has counted so far.
    fn simulated(&self) -> Option<Simulated> {
        None
    }
}

/// What a simulated machine counted over its runs so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Simulated {
    /// Cycles simulated, the program runs they took and the tokens those
    /// ran.
    pub cycles: u64,
    pub runs: u64,
    pub tokens: u64,
    /// The clock the cycles convert to time at.
    pub clock_hz: f64,
    /// Weight vectors installed into MXM planes, and the cycles one plane
    /// needs per vector (the decode bound: every weight streams in).
    pub installed_vectors: u64,
    pub install_cycles_per_vector: f64,
    /// Cycles the MXM planes multiplied, summed over planes, and the planes.
    pub mxm_busy: u64,
    pub mxm_planes: usize,
    /// Chips of the pipeline the program runs on.
    pub chips: usize,
    /// PEs of a wafer program, and the cycles they ran tasks, summed.
    pub pes: u64,
    pub pe_busy: u64,
}

/// What a target's loader gets besides the artifact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Threads for a CPU target (0: one per core).
    pub threads: usize,
}

/// Loads a parsed artifact (step 1 done) on its target: the remaining
/// checks and the loading. `path` names it in errors.
pub type Loader = fn(
    path: &str,
    artifact: &Artifact<'_>,
    file_bytes: u64,
    options: LoadOptions,
) -> Result<Box<dyn Executor>, LoadError>;

/// Every target kind this build runs, with its loader: the registry.
pub const TARGETS: &[(&str, Loader)] = &[
    ("cpu", cpu::load),
    #[cfg(feature = "cuda")]
    ("nvptx", nvptx::cuda::load),
    ("tsp", tsp::load),
    ("csl", csl::load),
];

/// Loads `artifact` on the target its manifest names; a kind this build
/// does not run is a [`LoadError::Target`] naming it and the kinds it runs.
pub fn load(
    path: &str,
    artifact: &Artifact<'_>,
    file_bytes: u64,
    options: LoadOptions,
) -> Result<Box<dyn Executor>, LoadError> {
    let kind = artifact.manifest.target.kind.as_str();
    match TARGETS.iter().find(|(known, _)| *known == kind) {
        Some((_, load)) => load(path, artifact, file_bytes, options),
        None => Err(unsupported(path, kind)),
    }
}

/// Whether this build runs artifacts of target `kind`.
pub fn runs(kind: &str) -> bool {
    TARGETS.iter().any(|(known, _)| *known == kind)
}

/// The kinds this build runs, for messages: "`cpu`", "`cpu` and `nvptx`".
pub fn known_kinds() -> String {
    let names: Vec<String> = TARGETS.iter().map(|(kind, _)| format!("`{kind}`")).collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => "no".into(),
    }
}

/// The error for an artifact of a target this build does not run, with
/// what would run it where that is known.
pub(crate) fn unsupported(path: &str, kind: &str) -> LoadError {
    let hint = match kind {
        "nvptx" => "; an nvptx artifact needs a q35-rt built with the `cuda` feature and an NVIDIA GPU",
        "tsp" => "; a tsp artifact runs on the TSP simulator",
        _ => "",
    };
    LoadError::Target {
        path: path.to_string(),
        target: kind.to_string(),
        known: known_kinds(),
        hint: hint.to_string(),
    }
}
