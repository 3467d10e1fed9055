//! Loading a `.q35` artifact: the validation every backend shares, and the
//! CPU backend's buffers, descriptors and code object, ready for
//! [`crate::executor`].
//!
//! Loading checks everything before it runs anything (loading the shared
//! object runs its initializers, so that comes last):
//!
//! 1. the container: [`Artifact::parse`] checks magic, version, every
//!    offset and size, and every checksum (the manifest's too);
//! 2. the target: a `cpu` artifact for this architecture, whose CPU
//!    features this machine has (an `nvptx` artifact: [`crate::nvptx`]);
//! 3. the model config and the buffer plan: every buffer has a known role
//!    and element type, inputs are `tokens`/`positions`, there is one
//!    `output` of `vocab_size` columns, caches divide into
//!    `context_length` rows, every dispatch names known buffers; and
//!    everything it allocates fits in this machine's available memory;
//! 4. every weight: its payload decodes ([`QuantizedTensor::from_bytes`]
//!    validates lengths, parameters and padding) and agrees with the
//!    buffer's type (shape, kind, group layout); then the plan against the
//!    kernel signatures the code object declares (read, not loaded: the
//!    ELF checked segment by segment, [`crate::elf`]; the PTX's comment
//!    line), so that no dispatch can make a kernel leave its buffers;
//! 5. the code: an ELF shared object for this machine, loaded, and every
//!    kernel's `_mlir_ciface_` symbol present (for `nvptx`, the PTX and the
//!    GPU: [`crate::nvptx`], `crate::cuda`).
//!
//! Steps 1, 3 and 4 are the same for every target ([`with_artifact`],
//! `Validated`, [`ArtifactInfo`]); a backend adds its own steps 2 and 5.
//! It plans nothing: sizes come from the manifest.
//!
//! Buffers become MLIR memref descriptors (docs/artifact.md §5,
//! [`BufferClass::descriptors`]; the GPU passes the same descriptors'
//! fields as kernel parameters):
//!
//! | buffer | descriptors |
//! |---|---|
//! | input `tokens` / `positions` (i32, width 1) | rank 1 i32, `[tokens]` |
//! | activation / output (f32, width W) | rank 2, `[tokens, W]` (max_tokens rows allocated) |
//! | kv_cache (f32, width C·W) | rank 2, `[context_length, W]` |
//! | weight `!q35.packed<N, K, G, q35/int4/int3, planar>` | four rank 1: codes (u8), mins (f16), range codes (u8), range scales (f16) |
//! | weight `!q35.packed<…, f16/f32, …>` | one rank 1 f16 / f32, N·K |
//! | weight `f32` (norm vectors) | one rank 1 f32 |

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::path::Path;

use q35_format::artifact::{Artifact, ArtifactError, BufferSpec, DispatchSpec, Manifest, WeightSpec};
use q35_format::signature::{CodeSignatures, SIGNATURES_SYMBOL};
use q35_format::{GroupSize, Layout, Payload, QuantKind, QuantizedTensor};

use crate::code::CodeObject;
use crate::elf::ElfFile;
use crate::host;
use crate::kernel::{self, Trampoline, CIFACE_PREFIX, MAX_DESCRIPTORS};
use crate::memref::{AlignedBuffer, MemRef1, MemRef2};

/// The targets this build runs, for messages.
#[cfg(not(feature = "cuda"))]
const SUPPORTED_TARGETS: &str = "`cpu`";
#[cfg(feature = "cuda")]
const SUPPORTED_TARGETS: &str = "`cpu` and `nvptx`";

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
    #[error("{path}: compiled for target `{target}`, but this q35-rt runs {SUPPORTED_TARGETS} artifacts{hint}")]
    Target {
        path: String,
        target: String,
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

/// A `!q35.packed<N, K, G, "kind", "layout">` buffer element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedElement {
    pub rows: usize,
    pub cols: usize,
    pub group: usize,
    pub kind: QuantKind,
    pub layout: String,
}

impl PackedElement {
    /// Parses the element text as the compiler prints it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let body = text
            .strip_prefix("!q35.packed<")
            .and_then(|rest| rest.strip_suffix('>'))
            .ok_or_else(|| {
                format!(
                    "element `{text}` is neither f32, i32 nor !q35.packed<N, K, G, kind, layout>"
                )
            })?;
        let params: Vec<&str> = body.split(',').map(str::trim).collect();
        let [rows, cols, group, kind, layout] = params[..] else {
            return Err(format!("element `{text}` does not have 5 parameters"));
        };
        let int = |param: &str, what: &str| {
            param
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("element `{text}`: {what} `{param}` is not a number"))
        };
        let unquote = |s: &str| s.trim_matches('"').to_string();
        Ok(Self {
            rows: int(rows, "rows")?,
            cols: int(cols, "cols")?,
            group: int(group, "group")?,
            kind: unquote(kind)
                .parse()
                .map_err(|e: q35_format::Error| format!("element `{text}`: {e}"))?,
            layout: unquote(layout),
        })
    }

    /// The group size the kernels use: a fixed width, else per-channel.
    fn group_size(&self) -> GroupSize {
        GroupSize::ALL
            .into_iter()
            .find(|g| g.fixed() == Some(self.group))
            .unwrap_or(GroupSize::Channel)
    }
}

/// What a manifest buffer is, from its role and element type.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferClass {
    /// Token ids of the current call (i32, one per token).
    Tokens,
    /// Positions of the current call (i32, one per token).
    Positions,
    /// An activation, `[tokens, width]` f32.
    Activation { width: usize },
    /// Activations quantized for the integer path (`element` i8): `width`
    /// bytes per token, written by a quantize kernel from an f32
    /// activation and read by the matmuls of that activation.
    ActivationCodes { width: usize },
    /// The logits, `[tokens, width]` f32.
    Output { width: usize },
    /// A KV cache, `[rows, cols]` f32, persistent across calls.
    KvCache { rows: usize, cols: usize },
    /// A weight matrix of a packed type.
    PackedWeight(PackedElement),
    /// An f32 weight vector (norm gains).
    VectorWeight { len: usize },
}

impl BufferClass {
    /// Classifies `spec` for an artifact with `context` KV rows.
    pub fn of(spec: &BufferSpec, context: usize) -> Result<Self, String> {
        let name = &spec.name;
        let (element, width) = (spec.element.as_str(), spec.width);
        if width == 0 {
            return Err(format!("buffer `{name}` has width 0"));
        }
        let need = |expected: &str| {
            if element == expected {
                Ok(())
            } else {
                Err(format!(
                    "{} buffer `{name}` has element `{element}`, expected `{expected}`",
                    spec.role
                ))
            }
        };
        match spec.role.as_str() {
            "input" => {
                need("i32")?;
                if width != 1 {
                    return Err(format!("input buffer `{name}` has width {width}, expected 1"));
                }
                match name.as_str() {
                    "tokens" => Ok(Self::Tokens),
                    "positions" => Ok(Self::Positions),
                    _ => Err(format!("input buffer `{name}`: this runtime provides only `tokens` and `positions`")),
                }
            }
            "activation" if element == "i8" => Ok(Self::ActivationCodes { width }),
            "activation" => need("f32").map(|()| Self::Activation { width }),
            "output" => need("f32").map(|()| Self::Output { width }),
            "kv_cache" => {
                need("f32")?;
                if width % context != 0 {
                    return Err(format!(
                        "kv_cache buffer `{name}` has width {width}, not a multiple of the context length {context}"
                    ));
                }
                Ok(Self::KvCache {
                    rows: context,
                    cols: width / context,
                })
            }
            "weight" if element == "f32" => Ok(Self::VectorWeight { len: width }),
            "weight" => {
                let packed = PackedElement::parse(element).map_err(|e| format!("weight buffer `{name}`: {e}"))?;
                if packed.layout != "planar" {
                    return Err(format!("weight buffer `{name}` has layout `{}`; this runtime reads `planar`", packed.layout));
                }
                if packed.rows.checked_mul(packed.cols) != Some(width) {
                    return Err(format!(
                        "weight buffer `{name}` has width {width}, but its type is {}x{}",
                        packed.rows, packed.cols
                    ));
                }
                Ok(Self::PackedWeight(packed))
            }
            role => Err(format!(
                "buffer `{name}` has role `{role}` (expected input, weight, kv_cache, activation or output)"
            )),
        }
    }

    /// How many memref descriptors the buffer passes to a kernel.
    pub fn descriptor_count(&self) -> usize {
        match self {
            Self::PackedWeight(p) if p.kind.is_coded() => 4,
            _ => 1,
        }
    }

    /// The memref descriptors a buffer of this class passes to a kernel, in
    /// argument order, given the byte length of each of its arrays:
    /// descriptor `i` views array `i` (docs/artifact.md §5). Every backend
    /// lays out its kernel arguments from this one table.
    pub fn descriptors(&self, array_bytes: &[usize]) -> Vec<Descriptor> {
        match self {
            Self::Tokens | Self::Positions => vec![Descriptor::Vector {
                len: 0,
                per_token: true,
            }],
            Self::Activation { width } | Self::ActivationCodes { width } | Self::Output { width } => vec![Descriptor::Matrix {
                rows: 0,
                cols: *width,
                per_token: true,
            }],
            Self::KvCache { rows, cols } => vec![Descriptor::Matrix {
                rows: *rows,
                cols: *cols,
                per_token: false,
            }],
            Self::PackedWeight(p) => {
                let element_sizes: &[usize] = match p.kind {
                    QuantKind::F16 => &[2],
                    QuantKind::F32 => &[4],
                    // codes (u8), mins (f16), range codes (u8), range scales (f16)
                    _ => &[1, 2, 1, 2],
                };
                array_bytes
                    .iter()
                    .zip(element_sizes)
                    .map(|(bytes, size)| Descriptor::Vector {
                        len: bytes / size,
                        per_token: false,
                    })
                    .collect()
            }
            Self::VectorWeight { len } => vec![Descriptor::Vector {
                len: *len,
                per_token: false,
            }],
        }
    }

    /// Bytes of the single array of a buffer that is not a weight (per-token
    /// buffers get `max_tokens` rows); `None` for weights, whose payloads
    /// size them. `check_plan` has bounded every product.
    fn array_bytes(&self, max_tokens: usize) -> Option<usize> {
        match self {
            Self::Tokens | Self::Positions => Some(max_tokens * 4),
            Self::Activation { width } | Self::Output { width } => Some(max_tokens * width * 4),
            Self::ActivationCodes { width } => Some(max_tokens * width),
            Self::KvCache { rows, cols } => Some(rows * cols * 4),
            Self::PackedWeight(_) | Self::VectorWeight { .. } => None,
        }
    }
}

/// The shape of one memref descriptor: offset 0, row-major strides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Descriptor {
    /// Rank 1, `len` elements, stride 1.
    Vector { len: usize, per_token: bool },
    /// Rank 2, `rows × cols`, strides `[cols, 1]`.
    Matrix {
        rows: usize,
        cols: usize,
        per_token: bool,
    },
}

impl Descriptor {
    /// Whether the first size is the call's token count (set before every
    /// call; the value above is a placeholder).
    pub fn per_token(&self) -> bool {
        match *self {
            Self::Vector { per_token, .. } | Self::Matrix { per_token, .. } => per_token,
        }
    }
}

/// What every backend knows of a validated artifact: the manifest, each
/// buffer's class and array sizes, which buffers each dispatch binds, and
/// the tokenizer.
#[derive(Debug)]
pub struct ArtifactInfo {
    path: String,
    manifest: Manifest,
    classes: Vec<BufferClass>,
    /// Bytes of each buffer's arrays (four for coded weights, else one).
    arrays: Vec<Vec<usize>>,
    /// Each dispatch's buffers, as indices into the manifest's buffers.
    bindings: Vec<Vec<usize>>,
    /// Indices of the `tokens`, `positions` and `output` buffers.
    pub(crate) tokens: usize,
    pub(crate) positions: usize,
    pub(crate) output: usize,
    tokenizer_json: Option<String>,
    file_bytes: u64,
}

impl ArtifactInfo {
    /// The file it was loaded from, as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Every buffer's class, in manifest order.
    pub fn classes(&self) -> &[BufferClass] {
        &self.classes
    }

    /// Bytes of each array of buffer `buffer` (manifest order), in
    /// descriptor order.
    pub fn array_bytes(&self, buffer: usize) -> &[usize] {
        &self.arrays[buffer]
    }

    /// For each dispatch, the indices of the buffers it binds, in order.
    pub fn bindings(&self) -> &[Vec<usize>] {
        &self.bindings
    }

    /// The artifact's `tokenizer.json`, if it has one.
    pub fn tokenizer_json(&self) -> Option<&str> {
        self.tokenizer_json.as_deref()
    }

    /// Size of the artifact file.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    fn buffer_bytes(&self, buffer: usize) -> usize {
        self.arrays[buffer].iter().sum()
    }

    /// Bytes of weights in memory (codes and parameters, all buffers).
    pub fn weight_bytes(&self) -> usize {
        (0..self.classes.len())
            .filter(|&b| {
                matches!(
                    self.classes[b],
                    BufferClass::PackedWeight(_) | BufferClass::VectorWeight { .. }
                )
            })
            .map(|b| self.buffer_bytes(b))
            .sum()
    }

    /// Bytes of weights one decoded token reads: every weight once, except
    /// that a table used only by `embedding_*` kernels contributes one row
    /// (an untied embedding is looked up, not multiplied).
    pub fn weight_bytes_per_token(&self) -> usize {
        let mut uses: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
        for d in &self.manifest.dispatches {
            let embedding = d.kernel.starts_with("embedding_");
            for name in &d.buffers {
                let entry = uses.entry(name.as_str()).or_default();
                if embedding {
                    entry.0 = true;
                } else {
                    entry.1 = true;
                }
            }
        }
        (0..self.classes.len())
            .map(|b| {
                let name = self.manifest.buffers[b].name.as_str();
                let bytes = self.buffer_bytes(b);
                match (&self.classes[b], uses.get(name)) {
                    (BufferClass::VectorWeight { .. }, Some(_)) => bytes,
                    (BufferClass::PackedWeight(_), Some(&(_, true))) => bytes,
                    (BufferClass::PackedWeight(p), Some(&(true, false))) => bytes / p.rows.max(1),
                    _ => 0,
                }
            })
            .sum()
    }
}

/// Steps 3 and 4, shared by every backend: the plan and every weight
/// checked, the weights decoded into host arrays that the backend binds
/// (CPU) or copies to its memory (GPU).
pub(crate) struct Validated {
    pub info: ArtifactInfo,
    /// Per buffer: its decoded weight arrays; empty for other buffers.
    pub weights: Vec<Vec<AlignedBuffer>>,
}

impl Validated {
    /// Checks the plan (step 3: on its own, and its memory against this
    /// machine's), decodes every weight (step 4), then checks the plan
    /// against the kernel signatures `code_signatures` reads from the code
    /// object, of an artifact whose container and target are checked;
    /// `path` names it in errors.
    pub(crate) fn new(
        path: &str,
        artifact: &Artifact<'_>,
        file_bytes: u64,
        code_signatures: impl FnOnce() -> Result<CodeSignatures, LoadError>,
    ) -> Result<Self, LoadError> {
        let manifest = &artifact.manifest;
        let invalid = |what: String| LoadError::Invalid {
            path: path.to_string(),
            what,
        };
        manifest.model.validate().map_err(invalid)?;
        let classes = check_plan(manifest).map_err(invalid)?;
        check_memory(artifact, &classes, host::available_memory()).map_err(invalid)?;

        // Weights: decode and check every one before any code runs.
        let started = std::time::Instant::now();
        let specs: HashMap<&str, &WeightSpec> = manifest
            .weights
            .iter()
            .map(|w| (w.name.as_str(), w))
            .collect();
        let mut weights = Vec::with_capacity(manifest.buffers.len());
        let mut arrays = Vec::with_capacity(manifest.buffers.len());
        for (spec, class) in manifest.buffers.iter().zip(&classes) {
            if let Some(bytes) = class.array_bytes(manifest.max_tokens) {
                weights.push(Vec::new());
                arrays.push(vec![bytes]);
                continue;
            }
            let weight = specs.get(spec.name.as_str()).ok_or_else(|| {
                invalid(format!(
                    "weight buffer `{}` has no entry in the manifest's weights",
                    spec.name
                ))
            })?;
            let bytes = artifact.payload(&weight.tensor).ok_or_else(|| {
                invalid(format!(
                    "weight `{}`: payload `{}` is missing",
                    weight.name, weight.tensor
                ))
            })?;
            let decoded =
                decode_weight(weight, class, bytes).map_err(|what| LoadError::Weight {
                    path: path.to_string(),
                    name: weight.name.clone(),
                    what,
                })?;
            arrays.push(decoded.iter().map(AlignedBuffer::len).collect());
            weights.push(decoded);
        }
        tracing::debug!(elapsed = ?started.elapsed(), "weights decoded");
        // The plan against the kernels the code object declares, before any
        // buffer but the weights is allocated and before any kernel runs.
        code_signatures()?.check(manifest).map_err(|what| LoadError::Signature {
            path: path.to_string(),
            payload: manifest.code.clone(),
            what,
        })?;

        let tokenizer_json = match &manifest.tokenizer {
            Some(name) => {
                let bytes = artifact.payload(name).unwrap_or_default();
                Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                    invalid(format!("tokenizer payload `{name}` is not UTF-8 text"))
                })?)
            }
            None => None,
        };

        let index: HashMap<&str, usize> = manifest
            .buffers
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.as_str(), i))
            .collect();
        // check_plan guarantees every name resolves.
        let bindings = manifest
            .dispatches
            .iter()
            .map(|d| d.buffers.iter().map(|name| index[name.as_str()]).collect())
            .collect();
        let find = |class: fn(&BufferClass) -> bool| {
            classes
                .iter()
                .position(class)
                .expect("checked by check_plan")
        };
        let tokens = find(|c| matches!(c, BufferClass::Tokens));
        let positions = find(|c| matches!(c, BufferClass::Positions));
        let output = find(|c| matches!(c, BufferClass::Output { .. }));
        Ok(Self {
            info: ArtifactInfo {
                path: path.to_string(),
                manifest: manifest.clone(),
                classes,
                arrays,
                bindings,
                tokens,
                positions,
                output,
                tokenizer_json,
                file_bytes,
            },
            weights,
        })
    }
}

/// One dispatch, bound: the kernel entry, its trampoline and arguments.
pub(crate) struct BoundDispatch {
    pub kernel: String,
    pub entry: *const c_void,
    pub trampoline: Trampoline,
    pub args: Vec<*mut c_void>,
    pub workgroups: usize,
    pub workgroups_per_token: usize,
}

/// Descriptors live at fixed heap addresses (kernels get pointers to
/// them) and are only touched through raw pointers.
#[derive(Default)]
struct Descriptors {
    rank1: Vec<*mut MemRef1>,
    rank2: Vec<*mut MemRef2>,
    /// Those whose first size is the call's token count.
    rank1_per_token: Vec<*mut MemRef1>,
    rank2_per_token: Vec<*mut MemRef2>,
}

impl Descriptors {
    /// A descriptor of `shape` over `data`; returns the pointer kernels get.
    fn bind(&mut self, data: *mut c_void, shape: Descriptor) -> *mut c_void {
        match shape {
            Descriptor::Vector { len, per_token } => {
                let ptr = Box::into_raw(Box::new(MemRef1::vector(data, len)));
                self.rank1.push(ptr);
                if per_token {
                    self.rank1_per_token.push(ptr);
                }
                ptr.cast()
            }
            Descriptor::Matrix {
                rows,
                cols,
                per_token,
            } => {
                let ptr = Box::into_raw(Box::new(MemRef2::matrix(data, rows, cols)));
                self.rank2.push(ptr);
                if per_token {
                    self.rank2_per_token.push(ptr);
                }
                ptr.cast()
            }
        }
    }
}

impl Drop for Descriptors {
    fn drop(&mut self) {
        // SAFETY: each pointer came from Box::into_raw and is freed once.
        self.rank1
            .drain(..)
            .for_each(|p| drop(unsafe { Box::from_raw(p) }));
        self.rank2
            .drain(..)
            .for_each(|p| drop(unsafe { Box::from_raw(p) }));
    }
}

/// A validated cpu artifact with its buffers allocated, weights decoded and
/// code loaded.
pub struct LoadedArtifact {
    info: ArtifactInfo,
    /// Each buffer's arrays (four for coded weights, else one).
    storage: Vec<Vec<AlignedBuffer>>,
    pub(crate) dispatches: Vec<BoundDispatch>,
    // Dropped last: descriptors point into `storage`, kernels live in `code`.
    descriptors: Descriptors,
    _code: CodeObject,
}

// SAFETY: the raw pointers point into memory the LoadedArtifact owns
// (buffers, descriptors) or into the loaded code, which lives as long as
// it; nothing is tied to the thread that loaded it.
unsafe impl Send for LoadedArtifact {}

impl std::fmt::Debug for LoadedArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedArtifact")
            .field("path", &self.info.path)
            .field("buffers", &self.storage.len())
            .field("dispatches", &self.dispatches.len())
            .finish()
    }
}

/// Reads `path` and parses the container (step 1 only): what `info` and
/// other read-only tools need. Calls `f` with the validated artifact.
pub fn with_artifact<T>(
    path: &Path,
    f: impl FnOnce(&Artifact<'_>) -> Result<T, LoadError>,
) -> Result<T, LoadError> {
    let name = path.display().to_string();
    let read_err = |source| LoadError::Read {
        path: name.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let metadata = file.metadata().map_err(read_err)?;
    if metadata.is_dir() {
        return Err(read_err(std::io::Error::other(
            "it is a directory, not a .q35 file",
        )));
    }
    let len = metadata.len();
    if len == 0 {
        return f(&Artifact::parse(&name, &[])?);
    }
    // SAFETY: a read-only private map. If another process truncates the
    // file while we read it we get SIGBUS, as every mmap-based model
    // loader does; the bytes are validated before any is trusted.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(read_err)?;
    f(&Artifact::parse(&name, &map)?)
}

/// Step 1 on `path`, then `load(name, artifact, file size)` for the other
/// steps, in a `load` span: what every backend's loader starts with.
pub(crate) fn load_with<T>(
    path: &Path,
    load: impl FnOnce(&str, &Artifact<'_>, u64) -> Result<T, LoadError>,
) -> Result<T, LoadError> {
    let _span = tracing::info_span!("load", path = %path.display()).entered();
    let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    with_artifact(path, |artifact| {
        load(&path.display().to_string(), artifact, file_bytes)
    })
}

impl LoadedArtifact {
    /// Loads and validates `path` (see the module docs for every step).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        load_with(path.as_ref(), Self::from_artifact)
    }

    /// Steps 2 to 5 on a parsed artifact; `path` names it in errors.
    pub fn from_artifact(
        path: &str,
        artifact: &Artifact<'_>,
        file_bytes: u64,
    ) -> Result<Self, LoadError> {
        let manifest = &artifact.manifest;
        check_target(path, manifest)?;
        let code_err = |what: String| LoadError::Code {
            path: path.to_string(),
            payload: manifest.code.clone(),
            what,
        };
        let code_bytes = artifact
            .payload(&manifest.code)
            .ok_or_else(|| code_err("the payload is missing".into()))?;
        // The code object is read (not loaded) after the plan's own checks:
        // its structure, and the kernel signatures the plan must match.
        let signatures = || cpu_signatures(code_bytes).map_err(code_err);
        let Validated { info, weights } = Validated::new(path, artifact, file_bytes, signatures)?;

        // Code: last, since loading runs its initializers.
        let code = CodeObject::load(code_bytes).map_err(code_err)?;

        // Memory and descriptors: weights as decoded, the rest zeroed.
        let mut descriptors = Descriptors::default();
        let mut storage = Vec::with_capacity(weights.len());
        let mut bound: Vec<Vec<*mut c_void>> = Vec::with_capacity(weights.len());
        for (b, mut arrays) in weights.into_iter().enumerate() {
            let bytes = info.array_bytes(b);
            if arrays.is_empty() {
                arrays = bytes.iter().map(|&n| AlignedBuffer::zeroed(n)).collect();
            }
            let shapes = info.classes()[b].descriptors(bytes);
            bound.push(
                arrays
                    .iter_mut()
                    .zip(shapes)
                    .map(|(array, shape)| descriptors.bind(array.as_mut_ptr(), shape))
                    .collect(),
            );
            storage.push(arrays);
        }

        let mut dispatches = Vec::with_capacity(manifest.dispatches.len());
        let mut entries: HashMap<&str, *const c_void> = HashMap::new();
        for (i, (d, buffers)) in manifest.dispatches.iter().zip(info.bindings()).enumerate() {
            let entry = match entries.get(d.kernel.as_str()) {
                Some(&entry) => entry,
                None => {
                    let entry = code
                        .symbol(&format!("{CIFACE_PREFIX}{}", d.kernel))
                        .ok_or_else(|| LoadError::MissingKernel {
                            path: path.to_string(),
                            index: i,
                            kernel: d.kernel.clone(),
                        })?;
                    entries.insert(&d.kernel, entry);
                    entry
                }
            };
            let args: Vec<*mut c_void> = buffers
                .iter()
                .flat_map(|&b| bound[b].iter().copied())
                .collect();
            // check_plan bounds the descriptor count.
            let trampoline = kernel::trampoline(args.len()).expect("descriptor count checked");
            dispatches.push(BoundDispatch {
                kernel: d.kernel.clone(),
                entry,
                trampoline,
                args,
                workgroups: d.workgroups,
                workgroups_per_token: d.workgroups_per_token,
            });
        }
        Ok(Self {
            info,
            storage,
            dispatches,
            descriptors,
            _code: code,
        })
    }

    /// The validated manifest, buffers and tokenizer.
    pub fn info(&self) -> &ArtifactInfo {
        &self.info
    }

    /// The first `tokens` rows of buffer `buffer` if it is an activation or
    /// the output (`None` for other classes). Valid while no dispatch runs.
    pub fn rows(&self, buffer: usize, tokens: usize) -> Option<&[f32]> {
        match self.info.classes[buffer] {
            BufferClass::Activation { width } | BufferClass::Output { width } => {
                let data = self.storage[buffer][0].as_slice::<f32>();
                Some(&data[..(tokens * width).min(data.len())])
            }
            _ => None,
        }
    }

    /// Sets the first dimension of every per-token descriptor and writes
    /// the call's token ids and positions. `ids.len()` ≤ max_tokens.
    pub(crate) fn bind_tokens(&mut self, ids: &[u32], start: usize) {
        let n = ids.len();
        for &d in &self.descriptors.rank1_per_token {
            // SAFETY: descriptors are owned by self and no kernel runs now.
            unsafe { (*d).sizes[0] = n as i64 };
        }
        for &d in &self.descriptors.rank2_per_token {
            // SAFETY: as above.
            unsafe { (*d).sizes[0] = n as i64 };
        }
        let tokens = self.storage[self.info.tokens][0].as_mut_slice::<i32>();
        for (slot, &id) in tokens.iter_mut().zip(ids) {
            *slot = id as i32;
        }
        let positions = self.storage[self.info.positions][0].as_mut_slice::<i32>();
        for (m, slot) in positions.iter_mut().take(n).enumerate() {
            *slot = (start + m) as i32;
        }
    }

    /// The first `tokens` rows of the output buffer.
    pub(crate) fn output(&self, tokens: usize) -> &[f32] {
        let width = self.info.manifest.model.vocab_size;
        &self.storage[self.info.output][0].as_slice::<f32>()[..tokens * width]
    }
}

/// The kernel signatures the artifact's code object declares, read without
/// loading it: the exported symbol of a CPU shared object, the comment line
/// of a PTX module.
pub fn code_signatures(manifest: &Manifest, code: &[u8]) -> Result<CodeSignatures, String> {
    match manifest.target.kind.as_str() {
        "nvptx" => CodeSignatures::from_ptx(
            std::str::from_utf8(code).map_err(|e| format!("PTX must be text, but it is not UTF-8 ({e})"))?,
        ),
        _ => cpu_signatures(code),
    }
}

/// What the loaders check of an artifact's plan, on any machine and
/// without loading its code (what `q35c verify` re-checks): the model
/// config, the plan on its own, and the plan against the kernel signatures
/// of the code object. Returns the number of kernels checked.
pub fn check_artifact_plan(artifact: &Artifact<'_>) -> Result<usize, String> {
    let manifest = &artifact.manifest;
    manifest.model.validate()?;
    check_plan(manifest)?;
    let code = artifact
        .payload(&manifest.code)
        .ok_or_else(|| format!("the code object `{}` is missing", manifest.code))?;
    let signatures =
        code_signatures(manifest, code).map_err(|e| format!("the code object `{}`: {e}", manifest.code))?;
    signatures
        .check(manifest)
        .map_err(|e| format!("the plan disagrees with the kernels of the code object `{}`: {e}", manifest.code))?;
    Ok(signatures.kernels.len())
}

/// The kernel signatures a CPU code object declares (its exported
/// [`SIGNATURES_SYMBOL`]), read from the validated ELF file.
pub fn cpu_signatures(code: &[u8]) -> Result<CodeSignatures, String> {
    let elf = ElfFile::parse(code)?;
    let bytes = elf
        .exported_bytes(SIGNATURES_SYMBOL)?
        .ok_or_else(|| format!("it declares no kernel signatures (no `{SIGNATURES_SYMBOL}` symbol)"))?;
    CodeSignatures::from_json(bytes)
}

/// Step 2 (cpu): the artifact is for this machine.
fn check_target(path: &str, manifest: &Manifest) -> Result<(), LoadError> {
    let target = &manifest.target;
    if target.kind != "cpu" {
        let hint = match target.kind.as_str() {
            #[cfg(not(feature = "cuda"))]
            "nvptx" => {
                "; an nvptx artifact needs a q35-rt built with the `cuda` feature and an NVIDIA GPU"
            }
            // Only a caller of the CPU loader itself gets here.
            #[cfg(feature = "cuda")]
            "nvptx" => "; this is the CPU loader: load it with `Session::load`",
            "csl" => "; a csl artifact runs on the CSL simulator",
            "tsp" => "; a tsp artifact runs on the TSP simulator",
            _ => "",
        };
        return Err(LoadError::Target {
            path: path.to_string(),
            target: target.kind.clone(),
            hint: hint.to_string(),
        });
    }
    let arch = host::triple_arch(&target.triple);
    if arch != host::host_arch() {
        return Err(LoadError::Arch {
            path: path.to_string(),
            triple: target.triple.clone(),
            host: host::host_arch().to_string(),
        });
    }
    let missing = host::missing_host_features(&target.triple, &target.features);
    if !missing.is_empty() {
        return Err(LoadError::CpuFeatures {
            path: path.to_string(),
            missing,
        });
    }
    Ok(())
}

/// Step 3: the buffer plan and dispatch list are consistent. Returns every
/// buffer's class, in manifest order.
pub fn check_plan(manifest: &Manifest) -> Result<Vec<BufferClass>, String> {
    if manifest.context_length == 0 {
        return Err("context_length is 0".into());
    }
    if manifest.max_tokens == 0 {
        return Err("max_tokens is 0".into());
    }
    // Positions are passed as i32.
    if manifest.context_length > i32::MAX as usize {
        return Err(format!(
            "context_length {} does not fit i32 positions",
            manifest.context_length
        ));
    }
    let mut classes = Vec::with_capacity(manifest.buffers.len());
    let mut seen = HashMap::new();
    for spec in &manifest.buffers {
        if seen.insert(spec.name.as_str(), ()).is_some() {
            return Err(format!("buffer `{}` is declared twice", spec.name));
        }
        let class = BufferClass::of(spec, manifest.context_length)?;
        // Guard allocations against sizes no machine has.
        let elements = match &class {
            BufferClass::Activation { width }
            | BufferClass::ActivationCodes { width }
            | BufferClass::Output { width } => {
                manifest.max_tokens.checked_mul(*width)
            }
            _ => Some(spec.width),
        };
        if elements
            .and_then(|e| e.checked_mul(4))
            .is_none_or(|bytes| bytes > isize::MAX as usize / 2)
        {
            return Err(format!(
                "buffer `{}` is too large ({} x {})",
                spec.name, manifest.max_tokens, spec.width
            ));
        }
        classes.push(class);
    }
    let count = |f: fn(&BufferClass) -> bool| classes.iter().filter(|c| f(c)).count();
    if count(|c| matches!(c, BufferClass::Tokens)) != 1
        || count(|c| matches!(c, BufferClass::Positions)) != 1
    {
        return Err("the plan must have one `tokens` and one `positions` input buffer".into());
    }
    match classes
        .iter()
        .zip(&manifest.buffers)
        .filter(|(c, _)| matches!(c, BufferClass::Output { .. }))
        .collect::<Vec<_>>()[..]
    {
        [(BufferClass::Output { width }, spec)] if *width != manifest.model.vocab_size => {
            return Err(format!(
                "output buffer `{}` has width {width}, but the vocabulary has {} tokens",
                spec.name, manifest.model.vocab_size
            ))
        }
        [_] => {}
        ref outputs => {
            return Err(format!(
                "the plan has {} output buffers, expected 1",
                outputs.len()
            ))
        }
    }
    let index: HashMap<&str, usize> = manifest
        .buffers
        .iter()
        .enumerate()
        .map(|(i, b)| (b.name.as_str(), i))
        .collect();
    for (i, d) in manifest.dispatches.iter().enumerate() {
        if d.kernel.is_empty() || d.kernel.contains('\0') {
            return Err(format!(
                "dispatch {i} has an invalid kernel name {:?}",
                d.kernel
            ));
        }
        let mut descriptors = 0;
        for name in &d.buffers {
            let b = index.get(name.as_str()).ok_or_else(|| {
                format!(
                    "dispatch {i} (`{}`) uses buffer `{name}`, which the plan does not declare",
                    d.kernel
                )
            })?;
            descriptors += classes[*b].descriptor_count();
        }
        if descriptors > MAX_DESCRIPTORS {
            return Err(format!(
                "dispatch {i} (`{}`) passes {descriptors} memref descriptors; this runtime calls kernels with at most {MAX_DESCRIPTORS}",
                d.kernel
            ));
        }
        let most = d
            .workgroups_per_token
            .checked_mul(manifest.max_tokens)
            .and_then(|w| w.checked_add(d.workgroups))
            .filter(|&w| w <= i64::MAX as usize);
        if most.is_none() {
            return Err(format!(
                "dispatch {i} (`{}`) has an impossible workgroup count",
                d.kernel
            ));
        }
    }
    check_concurrent(manifest, &index, &classes)?;
    Ok(classes)
}

/// Dispatches marked `concurrent` run at the same time as the rest of
/// their group, so the runtime does not take the compiler's word for it:
/// within a group, a buffer that is not a weight (nor a token input) may
/// be bound by two dispatches only if none of them may write it. Checked
/// conservatively: a dispatch may write its last buffer and any KV cache.
fn check_concurrent(manifest: &Manifest, index: &HashMap<&str, usize>, classes: &[BufferClass]) -> Result<(), String> {
    let mut start = 0;
    for (i, d) in manifest.dispatches.iter().enumerate() {
        if !d.concurrent {
            start = i;
            continue;
        }
        let mutable = |name: &String| {
            matches!(
                classes[index[name.as_str()]],
                BufferClass::Activation { .. } | BufferClass::ActivationCodes { .. } | BufferClass::Output { .. } | BufferClass::KvCache { .. }
            )
        };
        let written = |d: &DispatchSpec, name: &String| {
            d.buffers.last() == Some(name) || matches!(classes[index[name.as_str()]], BufferClass::KvCache { .. })
        };
        for (j, other) in manifest.dispatches[start..i].iter().enumerate() {
            if let Some(shared) = d
                .buffers
                .iter()
                .filter(|b| mutable(b))
                .find(|b| other.buffers.contains(b) && (written(d, b) || written(other, b)))
            {
                return Err(format!(
                    "dispatch {i} (`{}`) is marked concurrent with dispatch {} (`{}`), but both bind `{shared}`, which one of them may write",
                    d.kernel,
                    start + j,
                    other.kernel
                ));
            }
        }
    }
    Ok(())
}

/// Step 3 (last): everything the plan allocates fits in this machine's
/// available memory (`available`, when known), checked before anything is
/// allocated so that an oversized plan is a message, not an OOM kill.
fn check_memory(artifact: &Artifact<'_>, classes: &[BufferClass], available: Option<u64>) -> Result<(), String> {
    let manifest = &artifact.manifest;
    let mut kv = 0u64;
    let mut activations = 0u64;
    for class in classes {
        let bytes = class.array_bytes(manifest.max_tokens).unwrap_or(0) as u64;
        match class {
            BufferClass::KvCache { .. } => kv = kv.saturating_add(bytes),
            _ => activations = activations.saturating_add(bytes),
        }
    }
    // Decoded weights take about their payloads' size.
    let weights = manifest
        .weights
        .iter()
        .filter_map(|w| artifact.payload(&w.tensor))
        .fold(0u64, |sum, p| sum.saturating_add(p.len() as u64));
    let total = kv.saturating_add(activations).saturating_add(weights);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    match available {
        Some(available) if total > available => Err(format!(
            "running it needs {:.2} GiB (KV caches {:.2}, activations {:.2}, weights {:.2}) but this machine has {:.2} GiB available; recompile with a smaller --context or --max-tokens",
            gib(total),
            gib(kv),
            gib(activations),
            gib(weights),
            gib(available)
        )),
        _ => Ok(()),
    }
}

/// Step 4: one weight's payload, decoded into the arrays its descriptors
/// point to, after checking it matches the buffer's type.
fn decode_weight(
    spec: &WeightSpec,
    class: &BufferClass,
    bytes: &[u8],
) -> Result<Vec<AlignedBuffer>, String> {
    let tensor =
        QuantizedTensor::from_bytes(spec.name.clone(), bytes).map_err(|e| e.to_string())?;
    if (tensor.rows(), tensor.cols()) != (spec.rows, spec.cols)
        || tensor.kind().to_string() != spec.kind
    {
        return Err(format!(
            "payload holds a {}x{} {} tensor, the manifest says {}x{} {}",
            tensor.rows(),
            tensor.cols(),
            tensor.kind(),
            spec.rows,
            spec.cols,
            spec.kind
        ));
    }
    match class {
        BufferClass::VectorWeight { len } => {
            if tensor.kind() != QuantKind::F32 || tensor.rows() * tensor.cols() != *len {
                return Err(format!(
                    "the buffer is an f32 vector of {len}, the payload a {}x{} {} tensor",
                    tensor.rows(),
                    tensor.cols(),
                    tensor.kind()
                ));
            }
        }
        BufferClass::PackedWeight(p) => {
            if (p.rows, p.cols, p.kind) != (tensor.rows(), tensor.cols(), tensor.kind()) {
                return Err(format!(
                    "the buffer's type is {}x{} {}, the payload a {}x{} {} tensor",
                    p.rows,
                    p.cols,
                    p.kind,
                    tensor.rows(),
                    tensor.cols(),
                    tensor.kind()
                ));
            }
            if p.kind.is_coded() {
                // The kernels index codes with the type's group size; the
                // payload must have the same row layout.
                let kernel = Layout::new(p.kind, p.group_size(), p.cols);
                let stored = tensor.layout();
                if (kernel.groups(), kernel.row_bytes()) != (stored.groups(), stored.row_bytes()) {
                    return Err(format!(
                        "the buffer's group size {} gives {} groups of {} bytes per row, the payload (group {}) {} of {}",
                        p.group,
                        kernel.groups(),
                        kernel.row_bytes(),
                        tensor.group(),
                        stored.groups(),
                        stored.row_bytes()
                    ));
                }
            }
        }
        _ => return Err("the buffer is not a weight".into()),
    }
    Ok(match tensor.into_payload() {
        Payload::Coded {
            codes,
            range_scale,
            mins,
            range_codes,
        } => vec![
            AlignedBuffer::from_slice(&codes),
            AlignedBuffer::from_slice(&mins),
            AlignedBuffer::from_slice(&range_codes),
            AlignedBuffer::from_slice(&range_scale),
        ],
        Payload::F16(values) => vec![AlignedBuffer::from_slice(&values)],
        Payload::F32(values) => vec![AlignedBuffer::from_slice(&values)],
    })
}
