//! Loading a `.q35` artifact: the validation every target shares.
//!
//! This module knows no target's way of running code: each target
//! (the `targets` module, which depends on this one and never the other way)
//! adds its own steps 2 and 5 and binds what is validated here.
//!
//! Loading checks everything before it runs anything (loading the shared
//! object runs its initializers, so that comes last):
//!
//! 1. the container: [`Artifact::parse`] checks magic, version, every
//!    offset and size, and every checksum (the manifest's too);
//! 2. the target: the target's own checks (a `cpu` artifact is for this
//!    architecture and CPU features; an `nvptx` one names an SM);
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
//! 5. the code, loaded by the target (a cpu shared object and every
//!    kernel's `_mlir_ciface_` symbol; the PTX on the GPU).
//!
//! Steps 1, 3 and 4 are the same for every target ([`with_artifact`],
//! `Validated`, [`ArtifactInfo`]); a target adds its own steps 2 and 5.
//! It plans nothing: sizes come from the manifest.
//!
//! - `error`: [`LoadError`], what every step can refuse;
//! - `buffers`: what each manifest buffer is ([`BufferClass`]) and the
//!   memref descriptors it becomes ([`Descriptor`]);
//! - `plan`: step 3, the buffer plan and dispatch list on their own;
//! - `validated`: steps 3 and 4 together, and [`ArtifactInfo`], what
//!   every target knows of a validated artifact;
//! - here: step 1 ([`with_artifact`]) and the kernel signatures a code
//!   object declares, read without loading it ([`code_signatures`]: the
//!   artifact format defines where each kind of code object keeps them).
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

mod buffers;
mod error;
mod plan;
mod validated;

use std::path::Path;

use q35_format::artifact::{Artifact, Manifest};
use q35_format::signature::{CodeSignatures, SIGNATURES_SYMBOL};

use crate::elf::ElfFile;

pub use buffers::{BufferClass, Descriptor, PackedElement};
pub use error::LoadError;
pub use plan::check_plan;
pub(crate) use validated::Validated;
pub use validated::ArtifactInfo;

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

/// The kernel signatures the artifact's code object declares, read without
/// loading it: the exported symbol of a CPU shared object, the comment line
/// of a PTX module.
pub fn code_signatures(manifest: &Manifest, code: &[u8]) -> Result<CodeSignatures, String> {
    match manifest.target.kind.as_str() {
        // PTX and TSP programs are text that declares the signatures in a
        // comment line.
        "nvptx" | "tsp" | "csl" => CodeSignatures::from_ptx(
            std::str::from_utf8(code).map_err(|e| format!("the code object must be text, but it is not UTF-8 ({e})"))?,
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
