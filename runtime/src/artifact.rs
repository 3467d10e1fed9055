//! Loading a `.q35` artifact for the CPU: validation, weights, buffers,
//! descriptors and the code object, ready for [`crate::executor`].
//!
//! Loading checks everything before it runs anything (loading the shared
//! object runs its initializers, so that comes last):
//!
//! 1. the container: [`Artifact::parse`] checks magic, version, every
//!    offset and size, and every checksum;
//! 2. the target: a `cpu` artifact for this architecture, whose CPU
//!    features this machine has;
//! 3. the model config and the buffer plan: every buffer has a known role
//!    and element type, inputs are `tokens`/`positions`, there is one
//!    `output` of `vocab_size` columns, caches divide into
//!    `context_length` rows, every dispatch names known buffers;
//! 4. every weight: its payload decodes ([`QuantizedTensor::from_bytes`]
//!    validates lengths, parameters and padding) and agrees with the
//!    buffer's type (shape, kind, group layout);
//! 5. the code: an ELF shared object for this machine, loaded, and every
//!    kernel's `_mlir_ciface_` symbol present.
//!
//! It plans nothing: sizes come from the manifest.
//!
//! Buffers become MLIR memref descriptors (docs/artifact.md):
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

use q35_format::artifact::{Artifact, ArtifactError, BufferSpec, Manifest, WeightSpec};
use q35_format::{GroupSize, Layout, Payload, QuantKind, QuantizedTensor};

use crate::code::CodeObject;
use crate::host;
use crate::kernel::{self, Trampoline, CIFACE_PREFIX, MAX_DESCRIPTORS};
use crate::memref::{AlignedBuffer, MemRef1, MemRef2};

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
    #[error("{path}: compiled for target `{target}`, but this q35-rt runs `cpu` artifacts{hint}")]
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
}

impl Descriptors {
    fn vector(&mut self, data: *mut c_void, len: usize) -> *mut c_void {
        let ptr = Box::into_raw(Box::new(MemRef1::vector(data, len)));
        self.rank1.push(ptr);
        ptr.cast()
    }

    fn matrix(&mut self, data: *mut c_void, rows: usize, cols: usize) -> *mut c_void {
        let ptr = Box::into_raw(Box::new(MemRef2::matrix(data, rows, cols)));
        self.rank2.push(ptr);
        ptr.cast()
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

/// One manifest buffer with its memory.
pub struct BoundBuffer {
    pub spec: BufferSpec,
    pub class: BufferClass,
    /// The arrays behind it (four for coded weights, else one).
    storage: Vec<AlignedBuffer>,
    /// Descriptor pointers, in kernel argument order.
    descriptors: Vec<*mut c_void>,
}

impl BoundBuffer {
    /// Bytes of memory it holds.
    pub fn bytes(&self) -> usize {
        self.storage.iter().map(AlignedBuffer::len).sum()
    }

    /// The first `tokens` rows of an activation or output buffer (`None`
    /// for other classes). Valid while no dispatch runs.
    pub fn rows(&self, tokens: usize) -> Option<&[f32]> {
        match self.class {
            BufferClass::Activation { width } | BufferClass::Output { width } => {
                let data = self.storage[0].as_slice::<f32>();
                Some(&data[..(tokens * width).min(data.len())])
            }
            _ => None,
        }
    }
}

/// A validated artifact with its buffers allocated, weights decoded and
/// code loaded.
pub struct LoadedArtifact {
    path: String,
    manifest: Manifest,
    buffers: Vec<BoundBuffer>,
    pub(crate) dispatches: Vec<BoundDispatch>,
    /// Descriptors whose first size is the call's token count.
    rank1_per_token: Vec<*mut MemRef1>,
    rank2_per_token: Vec<*mut MemRef2>,
    tokens: usize,
    positions: usize,
    output: usize,
    tokenizer_json: Option<String>,
    file_bytes: u64,
    // Dropped last: descriptors point into `buffers`, kernels live in `code`.
    _descriptors: Descriptors,
    _code: CodeObject,
}

// SAFETY: the raw pointers point into memory the LoadedArtifact owns
// (buffers, descriptors) or into the loaded code, which lives as long as
// it; nothing is tied to the thread that loaded it.
unsafe impl Send for LoadedArtifact {}

impl std::fmt::Debug for LoadedArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedArtifact")
            .field("path", &self.path)
            .field("buffers", &self.buffers.len())
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

impl LoadedArtifact {
    /// Loads and validates `path` (see the module docs for every step).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let _span = tracing::info_span!("load", path = %path.display()).entered();
        let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        with_artifact(path, |artifact| {
            Self::from_artifact(&path.display().to_string(), artifact, file_bytes)
        })
    }

    /// Steps 2 to 5 on a parsed artifact; `path` names it in errors.
    pub fn from_artifact(
        path: &str,
        artifact: &Artifact<'_>,
        file_bytes: u64,
    ) -> Result<Self, LoadError> {
        let manifest = &artifact.manifest;
        check_target(path, manifest)?;
        let invalid = |what: String| LoadError::Invalid {
            path: path.to_string(),
            what,
        };
        manifest.model.validate().map_err(invalid)?;
        let classes = check_plan(manifest).map_err(invalid)?;

        // Weights: decode and check every one before any code runs.
        let started = std::time::Instant::now();
        let specs: HashMap<&str, &WeightSpec> = manifest
            .weights
            .iter()
            .map(|w| (w.name.as_str(), w))
            .collect();
        let mut storage: Vec<Vec<AlignedBuffer>> = Vec::with_capacity(manifest.buffers.len());
        let rows_of = |width: usize| manifest.max_tokens.saturating_mul(width);
        for (spec, class) in manifest.buffers.iter().zip(&classes) {
            let arrays = match class {
                BufferClass::Tokens | BufferClass::Positions => {
                    vec![AlignedBuffer::zeroed(manifest.max_tokens * 4)]
                }
                BufferClass::Activation { width } | BufferClass::Output { width } => {
                    vec![AlignedBuffer::zeroed(rows_of(*width).saturating_mul(4))]
                }
                BufferClass::KvCache { rows, cols } => vec![AlignedBuffer::zeroed(rows * cols * 4)],
                BufferClass::PackedWeight(_) | BufferClass::VectorWeight { .. } => {
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
                    decode_weight(weight, class, bytes).map_err(|what| LoadError::Weight {
                        path: path.to_string(),
                        name: weight.name.clone(),
                        what,
                    })?
                }
            };
            storage.push(arrays);
        }
        tracing::debug!(elapsed = ?started.elapsed(), "weights decoded");

        let tokenizer_json = match &manifest.tokenizer {
            Some(name) => {
                let bytes = artifact.payload(name).unwrap_or_default();
                Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                    invalid(format!("tokenizer payload `{name}` is not UTF-8 text"))
                })?)
            }
            None => None,
        };

        // Code: last, since loading runs its initializers.
        let code_err = |what: String| LoadError::Code {
            path: path.to_string(),
            payload: manifest.code.clone(),
            what,
        };
        let code_bytes = artifact
            .payload(&manifest.code)
            .ok_or_else(|| code_err("the payload is missing".into()))?;
        let code = CodeObject::load(code_bytes).map_err(code_err)?;

        // Descriptors.
        let mut descriptors = Descriptors::default();
        let mut buffers = Vec::with_capacity(storage.len());
        let (mut rank1_per_token, mut rank2_per_token) = (Vec::new(), Vec::new());
        for ((spec, class), mut arrays) in manifest.buffers.iter().zip(classes).zip(storage) {
            let mut ptrs = Vec::with_capacity(arrays.len());
            match &class {
                BufferClass::Tokens | BufferClass::Positions => {
                    let d = descriptors.vector(arrays[0].as_mut_ptr(), 0);
                    rank1_per_token.push(d.cast());
                    ptrs.push(d);
                }
                BufferClass::Activation { width } | BufferClass::Output { width } => {
                    let d = descriptors.matrix(arrays[0].as_mut_ptr(), 0, *width);
                    rank2_per_token.push(d.cast());
                    ptrs.push(d);
                }
                BufferClass::KvCache { rows, cols } => {
                    ptrs.push(descriptors.matrix(arrays[0].as_mut_ptr(), *rows, *cols))
                }
                BufferClass::PackedWeight(p) => {
                    let element_sizes: &[usize] = match p.kind {
                        QuantKind::F16 => &[2],
                        QuantKind::F32 => &[4],
                        // codes (u8), mins (f16), range codes (u8), range scales (f16)
                        _ => &[1, 2, 1, 2],
                    };
                    for (array, size) in arrays.iter_mut().zip(element_sizes) {
                        let len = array.len() / size;
                        ptrs.push(descriptors.vector(array.as_mut_ptr(), len));
                    }
                }
                BufferClass::VectorWeight { len } => {
                    ptrs.push(descriptors.vector(arrays[0].as_mut_ptr(), *len))
                }
            }
            buffers.push(BoundBuffer {
                spec: spec.clone(),
                class,
                storage: arrays,
                descriptors: ptrs,
            });
        }

        let index: HashMap<&str, usize> = manifest
            .buffers
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.as_str(), i))
            .collect();
        let mut dispatches = Vec::with_capacity(manifest.dispatches.len());
        let mut entries: HashMap<&str, *const c_void> = HashMap::new();
        for (i, d) in manifest.dispatches.iter().enumerate() {
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
            // check_plan guarantees every name resolves and the count fits.
            let args: Vec<*mut c_void> = d
                .buffers
                .iter()
                .flat_map(|name| buffers[index[name.as_str()]].descriptors.iter().copied())
                .collect();
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
        let find = |class: fn(&BufferClass) -> bool| {
            buffers
                .iter()
                .position(|b| class(&b.class))
                .expect("checked by check_plan")
        };
        let tokens = find(|c| matches!(c, BufferClass::Tokens));
        let positions = find(|c| matches!(c, BufferClass::Positions));
        let output = find(|c| matches!(c, BufferClass::Output { .. }));
        Ok(Self {
            path: path.to_string(),
            manifest: manifest.clone(),
            buffers,
            dispatches,
            rank1_per_token,
            rank2_per_token,
            tokens,
            positions,
            output,
            tokenizer_json,
            file_bytes,
            _descriptors: descriptors,
            _code: code,
        })
    }

    /// The file it was loaded from, as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn buffers(&self) -> &[BoundBuffer] {
        &self.buffers
    }

    /// The artifact's `tokenizer.json`, if it has one.
    pub fn tokenizer_json(&self) -> Option<&str> {
        self.tokenizer_json.as_deref()
    }

    /// Size of the artifact file.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Bytes of weights in memory (codes and parameters, all buffers).
    pub fn weight_bytes(&self) -> usize {
        self.buffers
            .iter()
            .filter(|b| {
                matches!(
                    b.class,
                    BufferClass::PackedWeight(_) | BufferClass::VectorWeight { .. }
                )
            })
            .map(BoundBuffer::bytes)
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
        self.buffers
            .iter()
            .map(|b| match (&b.class, uses.get(b.spec.name.as_str())) {
                (BufferClass::VectorWeight { .. }, Some(_)) => b.bytes(),
                (BufferClass::PackedWeight(_), Some(&(_, true))) => b.bytes(),
                (BufferClass::PackedWeight(p), Some(&(true, false))) => b.bytes() / p.rows.max(1),
                _ => 0,
            })
            .sum()
    }

    /// Sets the first dimension of every per-token descriptor and writes
    /// the call's token ids and positions. `ids.len()` ≤ max_tokens.
    pub(crate) fn bind_tokens(&mut self, ids: &[u32], start: usize) {
        let n = ids.len();
        for &d in &self.rank1_per_token {
            // SAFETY: descriptors are owned by self and no kernel runs now.
            unsafe { (*d).sizes[0] = n as i64 };
        }
        for &d in &self.rank2_per_token {
            // SAFETY: as above.
            unsafe { (*d).sizes[0] = n as i64 };
        }
        let tokens = self.buffers[self.tokens].storage[0].as_mut_slice::<i32>();
        for (slot, &id) in tokens.iter_mut().zip(ids) {
            *slot = id as i32;
        }
        let positions = self.buffers[self.positions].storage[0].as_mut_slice::<i32>();
        for (m, slot) in positions.iter_mut().take(n).enumerate() {
            *slot = (start + m) as i32;
        }
    }

    /// The first `tokens` rows of the output buffer.
    pub(crate) fn output(&self, tokens: usize) -> &[f32] {
        let width = self.manifest.model.vocab_size;
        &self.buffers[self.output].storage[0].as_slice::<f32>()[..tokens * width]
    }
}

/// Step 2: the artifact is for this machine.
fn check_target(path: &str, manifest: &Manifest) -> Result<(), LoadError> {
    let target = &manifest.target;
    if target.kind != "cpu" {
        let hint = match target.kind.as_str() {
            "nvptx" => {
                "; an nvptx artifact needs a q35-rt built with the `cuda` feature and an NVIDIA GPU"
            }
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
            BufferClass::Activation { width } | BufferClass::Output { width } => {
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
    Ok(classes)
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
