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

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::path::Path;

use q35_format::artifact::{Artifact, Manifest};
use q35_format::signature::CodeSignatures;

use crate::artifact::{load_with, ArtifactInfo, Descriptor, LoadError, Validated};

/// The SM an artifact's PTX is for (`target.cpu`): `sm_80` runs on compute
/// capability 8.0 and later; `sm_90a` (architecture-specific features)
/// only on 9.0; `sm_100f` (family) on 10.x from 10.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sm {
    pub major: u32,
    pub minor: u32,
    pub variant: SmVariant,
}

/// The suffix of an SM name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmVariant {
    /// `sm_80`: this compute capability or any later one.
    Portable,
    /// `sm_90a`: exactly this compute capability.
    ArchSpecific,
    /// `sm_100f`: this major version, this minor version or later.
    Family,
}

impl Sm {
    /// Parses `sm_80`, `sm_90a`, `sm_100f`, ...
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("sm_")?;
        let (digits, variant) = match rest.strip_suffix('a') {
            Some(digits) => (digits, SmVariant::ArchSpecific),
            None => match rest.strip_suffix('f') {
                Some(digits) => (digits, SmVariant::Family),
                None => (rest, SmVariant::Portable),
            },
        };
        if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let number: u32 = digits.parse().ok()?;
        Some(Self {
            major: number / 10,
            minor: number % 10,
            variant,
        })
    }

    /// Whether code for this SM runs on a device of compute capability
    /// `major.minor`.
    pub fn runs_on(&self, major: u32, minor: u32) -> bool {
        match self.variant {
            SmVariant::Portable => (major, minor) >= (self.major, self.minor),
            SmVariant::ArchSpecific => (major, minor) == (self.major, self.minor),
            SmVariant::Family => major == self.major && minor >= self.minor,
        }
    }
}

impl std::fmt::Display for Sm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let suffix = match self.variant {
            SmVariant::Portable => "",
            SmVariant::ArchSpecific => "a",
            SmVariant::Family => "f",
        };
        write!(f, "sm_{}{}{suffix}", self.major, self.minor)
    }
}

/// What one kernel parameter holds. Every parameter is a `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Tokens of the call.
    Tokens,
    /// Position of the call's first token.
    Start,
    /// A descriptor's allocated pointer (a device address).
    Allocated,
    /// A descriptor's aligned pointer (the same address).
    Aligned,
    /// A descriptor's offset, in elements (always 0).
    Offset,
    /// One of a descriptor's sizes.
    Size,
    /// One of a descriptor's strides, in elements.
    Stride,
}

impl ParamKind {
    /// Whether the parameter is a device pointer (`.ptr` in the PTX).
    pub fn is_pointer(self) -> bool {
        matches!(self, Self::Allocated | Self::Aligned)
    }
}

/// The parameter values of one dispatch, laid out once at load; a call
/// only rewrites `tokens`, `start` and the per-token sizes
/// ([`KernelParams::set_call`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelParams {
    kinds: Vec<ParamKind>,
    values: Vec<u64>,
    /// Indices of the sizes that are the call's token count.
    per_token: Vec<usize>,
}

impl KernelParams {
    fn new() -> Self {
        Self {
            kinds: vec![ParamKind::Tokens, ParamKind::Start],
            values: vec![0, 0],
            per_token: Vec::new(),
        }
    }

    /// Appends a descriptor of `shape` over the device address `address`.
    fn push_descriptor(&mut self, address: u64, shape: Descriptor) {
        let (sizes, strides) = match shape {
            Descriptor::Vector { len, .. } => (vec![len as u64], vec![1]),
            Descriptor::Matrix { rows, cols, .. } => {
                (vec![rows as u64, cols as u64], vec![cols as u64, 1])
            }
        };
        self.push(ParamKind::Allocated, address);
        self.push(ParamKind::Aligned, address);
        self.push(ParamKind::Offset, 0);
        if shape.per_token() {
            self.per_token.push(self.values.len());
        }
        sizes
            .into_iter()
            .for_each(|s| self.push(ParamKind::Size, s));
        strides
            .into_iter()
            .for_each(|s| self.push(ParamKind::Stride, s));
    }

    fn push(&mut self, kind: ParamKind, value: u64) {
        self.kinds.push(kind);
        self.values.push(value);
    }

    /// Sets the call's token count (parameter 0 and every per-token size)
    /// and start position (parameter 1).
    pub fn set_call(&mut self, tokens: usize, start: usize) {
        self.values[0] = tokens as u64;
        self.values[1] = start as u64;
        for &i in &self.per_token {
            self.values[i] = tokens as u64;
        }
    }

    /// What each parameter holds, in order.
    pub fn kinds(&self) -> &[ParamKind] {
        &self.kinds
    }

    /// The parameter values, in order.
    pub fn values(&self) -> &[u64] {
        &self.values
    }

    /// The values, for taking the addresses `cuLaunchKernel` reads them
    /// from.
    #[cfg(feature = "cuda")]
    pub(crate) fn values_mut(&mut self) -> &mut [u64] {
        &mut self.values
    }
}

/// One `.entry` of a PTX module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxEntry {
    pub name: String,
    pub params: Vec<PtxParam>,
}

/// One `.param` of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxParam {
    /// The fundamental type: `.u64`, `.b32`, `.f32`, ...
    pub ty: String,
    /// Declared `.ptr` (a pointer kernel parameter).
    pub pointer: bool,
}

impl PtxParam {
    fn is_64_bit(&self) -> bool {
        matches!(self.ty.as_str(), ".u64" | ".b64" | ".s64")
    }
}

/// Every kernel entry of a PTX module with its parameters, in order.
/// `//` and `/* */` comments are skipped; `.func`s are not entries.
pub fn ptx_entries(ptx: &str) -> Result<Vec<PtxEntry>, String> {
    let text = strip_comments(ptx);
    let mut entries = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = find_directive(rest, ".entry") {
        rest = rest[at + ".entry".len()..].trim_start();
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '%')))
            .unwrap_or(rest.len());
        let name = rest[..name_len].to_string();
        if name.is_empty() {
            return Err("an `.entry` directive has no name".into());
        }
        rest = rest[name_len..].trim_start();
        let mut params = Vec::new();
        if let Some(list) = rest.strip_prefix('(') {
            let close = list
                .find(')')
                .ok_or_else(|| format!("entry `{name}`: the parameter list is not closed"))?;
            for param in list[..close].split(',').map(str::trim) {
                if !param.is_empty() {
                    params.push(
                        parse_param(param)
                            .ok_or_else(|| format!("entry `{name}`: cannot read `{param}`"))?,
                    );
                }
            }
            rest = &list[close + 1..];
        }
        entries.push(PtxEntry { name, params });
    }
    Ok(entries)
}

/// The text with comments replaced by spaces (PTX has C-style comments;
/// a line comment's newline stays).
fn strip_comments(ptx: &str) -> String {
    let mut out = String::with_capacity(ptx.len());
    let mut rest = ptx;
    while let Some(at) = rest.find('/') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(body) = tail.strip_prefix("//") {
            out.push(' ');
            rest = &body[body.find('\n').unwrap_or(body.len())..];
        } else if let Some(body) = tail.strip_prefix("/*") {
            out.push(' ');
            rest = &body[body.find("*/").map_or(body.len(), |end| end + 2)..];
        } else {
            out.push('/');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The byte offset of `directive` as a whole word in `text`.
fn find_directive(text: &str, directive: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text[from..].find(directive) {
        let at = from + at;
        let end = at + directive.len();
        let before = text[..at]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace);
        let after = text[end..].chars().next().is_none_or(char::is_whitespace);
        if before && after {
            return Some(at);
        }
        from = end;
    }
    None
}

/// `.param .u64 .ptr .align 1 name` → type `.u64`, pointer.
fn parse_param(text: &str) -> Option<PtxParam> {
    let mut words = text.split_whitespace();
    if words.next()? != ".param" {
        return None;
    }
    let words: Vec<&str> = words.collect();
    let fundamental = |w: &str| {
        w.strip_prefix('.').is_some_and(|t| {
            let (class, bits) = t.split_at(1.min(t.len()));
            matches!(class, "u" | "s" | "b" | "f") && matches!(bits, "8" | "16" | "32" | "64")
        })
    };
    Some(PtxParam {
        ty: words.iter().find(|w| fundamental(w))?.to_string(),
        pointer: words.contains(&".ptr"),
    })
}

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
