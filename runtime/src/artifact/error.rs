//! Why an artifact cannot be loaded: one error type for every step and
//! every target, each message naming the file.

use q35_format::artifact::ArtifactError;

use crate::kernel::CIFACE_PREFIX;

/// Why an artifact cannot be loaded; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// A target kind this build does not run; `known` lists those it runs
    /// (the target registry fills it in).
    #[error("{path}: compiled for target `{target}`, but this q35-rt runs {known} artifacts{hint}")]
    Target {
        path: String,
        target: String,
        known: String,
        hint: String,
    },
    #[error("{path}: compiled for {triple}, but this machine is {host}; recompile the model on (or for) this machine")]
    Arch {
        path: String,
        triple: String,
        host: String,
    },
    #[error(
        "{path}: compiled for CPU features this machine lacks ({}); recompile the model on this machine or for a more generic CPU",
        .missing.join(", ")
    )]
    CpuFeatures { path: String, missing: Vec<String> },
    #[error("{path}: {what}")]
    Invalid { path: String, what: String },
    #[error("{path}: weight `{name}`: {what}")]
    Weight {
        path: String,
        name: String,
        what: String,
    },
    #[error("{path}: the plan disagrees with the kernels of the code object `{payload}`: {what}")]
    Signature {
        path: String,
        payload: String,
        what: String,
    },
    #[error("{path}: cannot load the code object `{payload}`: {what}")]
    Code {
        path: String,
        payload: String,
        what: String,
    },
    #[error("{path}: dispatch {index} calls kernel `{kernel}`, but the code object has no symbol `{CIFACE_PREFIX}{kernel}`")]
    MissingKernel {
        path: String,
        index: usize,
        kernel: String,
    },
    #[error(
        "{path}: dispatch {index} launches kernel `{kernel}`, but the PTX has no entry `{kernel}`"
    )]
    MissingEntry {
        path: String,
        index: usize,
        kernel: String,
    },
    /// No usable GPU: the CUDA driver is missing or sees no device.
    #[cfg(feature = "cuda")]
    #[error("{path}: this nvptx artifact needs an NVIDIA GPU, but {what}")]
    NoGpu { path: String, what: String },
    #[cfg(feature = "cuda")]
    #[error(
        "{path}: compiled for {sm}, but {device} has compute capability {major}.{minor}; \
         recompile with `q35c --target nvptx --gpu-arch sm_{major}{minor}`"
    )]
    ComputeCapability {
        path: String,
        sm: String,
        device: String,
        major: u32,
        minor: u32,
    },
    /// The driver refused something (PTX compilation, memory, limits).
    #[cfg(feature = "cuda")]
    #[error("{path}: {what}")]
    Cuda { path: String, what: String },
}
