//! The NVPTX kernel ABI (docs/artifact.md §5a) in plain Rust: an `nvptx`
//! artifact checked without a GPU, and every dispatch's kernel parameter
//! list laid out from device addresses: the `nvptx` target. The CUDA
//! backend (`cuda`, the `cuda` feature) supplies the addresses and
//! launches; this module is
//! compiled and tested in every build, so the marshaling is checked where
//! there is no GPU.
//!
//! A kernel's parameters are `tokens` and `start`, then for every memref
//! descriptor of the CPU ABI (the same buffer → descriptor table,
//! [`BufferClass::descriptors`](crate::artifact::BufferClass::descriptors)) its fields as separate
//! parameters: allocated pointer, aligned pointer, offset, the sizes, the
//! strides — 5 parameters for rank 1, 7 for rank 2, all 64-bit. There is
//! no workgroup parameter (a kernel reads its block id).
//!
//! Checking an artifact ([`Program::from_artifact`]) is steps 1, 3 and 4
//! of every loader ([`crate::artifact`]) with an nvptx step 2 (the SM
//! parses, one launch configuration per dispatch) and an offline step 5:
//! the PTX is text, has an entry for every kernel, and each entry takes
//! exactly the parameters the runtime passes (a different count would make
//! `cuLaunchKernel` read garbage, not fail).

#[cfg(feature = "cuda")]
pub mod cuda;
mod params;
mod ptx;
mod sm;

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::path::Path;

use q35_format::artifact::{Artifact, Manifest};
use q35_format::signature::CodeSignatures;

pub use params::{KernelParams, ParamKind};
pub use ptx::{ptx_entries, PtxEntry, PtxParam};
pub use sm::{Sm, SmVariant};

use crate::artifact::{load_with, ArtifactInfo, LoadError, Validated};

/// An `nvptx` artifact checked without a GPU: container, target, plan,
/// weights (decoded, for a backend to copy to the device) and the PTX
/// against the dispatch list.
pub struct Program {
    pub(crate) validated: Validated,
    sm: Sm,
    ptx: CString,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("path", &self.validated.info.path())
            .field("sm", &self.sm)
            .finish_non_exhaustive()
    }
}

impl Program {
    /// Reads and checks `path` (every step but the GPU's own).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        load_with(path.as_ref(), Self::from_artifact)
    }

    /// Checks a parsed artifact; `path` names it in errors.
    pub fn from_artifact(
        path: &str,
        artifact: &Artifact<'_>,
        file_bytes: u64,
    ) -> Result<Self, LoadError> {
        let manifest = &artifact.manifest;
        let sm = check_target(path, manifest)?;
        let code_err = |what: String| LoadError::Code {
            path: path.to_string(),
            payload: manifest.code.clone(),
            what,
        };
        let bytes = artifact
            .payload(&manifest.code)
            .ok_or_else(|| code_err("the payload is missing".into()))?;
        let text = std::str::from_utf8(bytes)
            .map_err(|e| code_err(format!("PTX must be text, but it is not UTF-8 ({e})")))?;
        let ptx = CString::new(text)
            .map_err(|_| code_err("PTX must be text, but it contains a NUL byte".into()))?;
        let validated = Validated::new(path, artifact, file_bytes, || CodeSignatures::from_ptx(text).map_err(code_err))?;
        let entries: HashMap<String, Vec<PtxParam>> = ptx_entries(text)
            .map_err(code_err)?
            .into_iter()
            .map(|e| (e.name, e.params))
            .collect();
        let program = Self { validated, sm, ptx };
        for (index, (d, params)) in manifest
            .dispatches
            .iter()
            .zip(program.params(|_, _| 0))
            .enumerate()
        {
            let entry = entries
                .get(&d.kernel)
                .ok_or_else(|| LoadError::MissingEntry {
                    path: path.to_string(),
                    index,
                    kernel: d.kernel.clone(),
                })?;
            if entry.len() != params.kinds().len() || !entry.iter().all(PtxParam::is_64_bit) {
                let types: Vec<&str> = entry.iter().map(|p| p.ty.as_str()).collect();
                return Err(code_err(format!(
                    "entry `{}` takes {} parameters ({}), but dispatch {index} passes {} of type .u64 \
                     (tokens, start and 5 per rank-1, 7 per rank-2 buffer descriptor: docs/artifact.md §5a)",
                    d.kernel,
                    entry.len(),
                    types.join(", "),
                    params.kinds().len()
                )));
            }
        }
        Ok(program)
    }

    /// The validated manifest, buffers and tokenizer.
    pub fn info(&self) -> &ArtifactInfo {
        &self.validated.info
    }

    /// The SM the PTX is for.
    pub fn sm(&self) -> Sm {
        self.sm
    }

    /// The PTX module, NUL-terminated as `cuModuleLoadData` takes it.
    pub fn ptx(&self) -> &CStr {
        &self.ptx
    }

    /// Every dispatch's parameters, in dispatch order, with
    /// `address(buffer, array)` the device address of array `array` of
    /// buffer `buffer` (manifest order). Token-dependent values are 0
    /// until [`KernelParams::set_call`].
    pub fn params(&self, mut address: impl FnMut(usize, usize) -> u64) -> Vec<KernelParams> {
        let info = &self.validated.info;
        info.bindings()
            .iter()
            .map(|buffers| {
                let mut params = KernelParams::new();
                for &b in buffers {
                    let shapes = info.classes()[b].descriptors(info.array_bytes(b));
                    for (a, shape) in shapes.into_iter().enumerate() {
                        params.push_descriptor(address(b, a), shape);
                    }
                }
                params
            })
            .collect()
    }
}

/// Step 2 (nvptx): the target names an SM, and every dispatch has a launch
/// configuration with a non-empty block.
fn check_target(path: &str, manifest: &Manifest) -> Result<Sm, LoadError> {
    let invalid = |what: String| LoadError::Invalid {
        path: path.to_string(),
        what,
    };
    let target = &manifest.target;
    if target.kind != "nvptx" {
        return Err(invalid(format!(
            "compiled for target `{}`, not `nvptx`",
            target.kind
        )));
    }
    let sm = Sm::parse(&target.cpu).ok_or_else(|| {
        invalid(format!(
            "target cpu `{}` is not an SM name such as sm_80 or sm_90",
            target.cpu
        ))
    })?;
    if manifest.launches.len() != manifest.dispatches.len() {
        return Err(invalid(format!(
            "the plan has {} dispatches but {} launch configurations",
            manifest.dispatches.len(),
            manifest.launches.len()
        )));
    }
    for (i, (d, launch)) in manifest
        .dispatches
        .iter()
        .zip(&manifest.launches)
        .enumerate()
    {
        if launch.block.contains(&0) {
            return Err(invalid(format!(
                "dispatch {i} (`{}`) has an empty block {:?}",
                d.kernel, launch.block
            )));
        }
    }
    Ok(sm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::Descriptor;

    #[test]
    fn sm_names() {
        let sm80 = Sm::parse("sm_80").unwrap();
        assert_eq!(
            (sm80.major, sm80.minor, sm80.variant),
            (8, 0, SmVariant::Portable)
        );
        assert!(sm80.runs_on(8, 0) && sm80.runs_on(8, 6) && sm80.runs_on(9, 0));
        assert!(!sm80.runs_on(7, 5));
        let sm90a = Sm::parse("sm_90a").unwrap();
        assert!(sm90a.runs_on(9, 0) && !sm90a.runs_on(10, 0));
        let sm100f = Sm::parse("sm_100f").unwrap();
        assert_eq!((sm100f.major, sm100f.minor), (10, 0));
        assert!(sm100f.runs_on(10, 3) && !sm100f.runs_on(12, 0));
        for text in ["sm_80", "sm_90a", "sm_100f", "sm_120"] {
            assert_eq!(Sm::parse(text).unwrap().to_string(), text);
        }
        for bad in ["", "sm_", "sm_8", "compute_80", "sm_8x", "sm_80b", "znver5"] {
            assert_eq!(Sm::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn entries_and_their_parameters() {
        let ptx = "
//
// Generated by LLVM NVPTX Back-End
// .visible .entry commented_out(.param .u64 x)
.version 7.0
.target sm_80
.func  (.param .align 16 .b8 func_retval0[16]) helper(
\t.param .b64 helper_param_0
)
{ ret; }
\t// .globl\tk
.visible .entry k(
\t.param .u64 k_param_0,
\t.param .u64 k_param_1,
\t.param .u64 .ptr .align 1 k_param_2, /* allocated */
\t.param .u64 .ptr .global .align 16 k_param_3
)
.maxntid 32, 1, 1
{ ret; }
.entry empty()
{ ret; }
.entry bare
{ ret; }
";
        let entries = ptx_entries(ptx).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["k", "empty", "bare"]);
        let params: Vec<(&str, bool)> = entries[0]
            .params
            .iter()
            .map(|p| (p.ty.as_str(), p.pointer))
            .collect();
        assert_eq!(
            params,
            [
                (".u64", false),
                (".u64", false),
                (".u64", true),
                (".u64", true)
            ]
        );
        assert!(entries[1].params.is_empty() && entries[2].params.is_empty());
        assert!(ptx_entries(".entry k(.param .u64 a").is_err());
        assert!(ptx_entries(".entry k(.param a)").is_err());
    }

    #[test]
    fn descriptors_flatten_in_abi_order() {
        let mut params = KernelParams::new();
        params.push_descriptor(
            0x100,
            Descriptor::Vector {
                len: 0,
                per_token: true,
            },
        );
        params.push_descriptor(
            0x200,
            Descriptor::Matrix {
                rows: 16,
                cols: 8,
                per_token: false,
            },
        );
        params.push_descriptor(
            0x300,
            Descriptor::Matrix {
                rows: 0,
                cols: 5,
                per_token: true,
            },
        );
        params.set_call(3, 7);
        use ParamKind::*;
        assert_eq!(
            params.kinds(),
            [
                Tokens, Start, //
                Allocated, Aligned, Offset, Size, Stride, //
                Allocated, Aligned, Offset, Size, Size, Stride, Stride, //
                Allocated, Aligned, Offset, Size, Size, Stride, Stride,
            ]
        );
        assert_eq!(
            params.values(),
            [
                3, 7, //
                0x100, 0x100, 0, 3, 1, //
                0x200, 0x200, 0, 16, 8, 8, 1, //
                0x300, 0x300, 0, 3, 5, 5, 1,
            ]
        );
    }
}

