//! A cpu artifact loaded: its buffers allocated (weights as decoded,
//! the rest zeroed), a memref descriptor over every array, the shared
//! object loaded and every dispatch bound to its kernel entry, trampoline
//! and arguments (steps 2 and 5 of `crate::artifact`'s list).

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::Path;

use q35_format::artifact::{Artifact, Manifest};

use super::code::CodeObject;
use crate::artifact::{cpu_signatures, load_with, ArtifactInfo, BufferClass, Descriptor, LoadError, Validated};
use crate::host;
use crate::kernel::{self, Trampoline, CIFACE_PREFIX};
use crate::memref::{AlignedBuffer, MemRef1, MemRef2};

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
            .field("path", &self.info.path())
            .field("buffers", &self.storage.len())
            .field("dispatches", &self.dispatches.len())
            .finish()
    }
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
        match self.info.classes()[buffer] {
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
        let width = self.info.manifest().model.vocab_size;
        &self.storage[self.info.output][0].as_slice::<f32>()[..tokens * width]
    }
}

/// Step 2 (cpu): the artifact is for this machine.
fn check_target(path: &str, manifest: &Manifest) -> Result<(), LoadError> {
    let target = &manifest.target;
    if target.kind != "cpu" {
        if crate::targets::runs(&target.kind) {
            // Only a caller of the CPU loader itself gets here.
            return Err(LoadError::Target {
                path: path.to_string(),
                target: target.kind.clone(),
                known: crate::targets::known_kinds(),
                hint: "; this is the CPU loader: load it with `Session::load`".into(),
            });
        }
        return Err(crate::targets::unsupported(path, &target.kind));
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
