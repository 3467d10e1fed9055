//! Loading refuses every bad artifact with one message naming the file and
//! the problem, and (except for the code object itself) before the code is
//! loaded: these artifacts carry a code payload that is not an ELF object,
//! so an error about anything else proves loading stopped earlier.

use q35_format::artifact::{write_artifact, ARTIFACT_VERSION};
use q35_rt::artifact::{LoadError, PackedElement};
use q35_rt::host::{missing_features, triple_arch};
use q35_rt::Session;

use crate::support::{self, TempFile, CODE};

const NOT_ELF: &[u8] = b"this is not a shared object";

fn load_err(bytes: &[u8]) -> (String, LoadError) {
    let file = TempFile::new("m.q35", bytes);
    let err = Session::load(file.path(), 1).unwrap_err();
    (file.path().display().to_string(), err)
}

#[test]
fn a_missing_file_is_named() {
    let err = Session::load("/nonexistent/model.q35", 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/model.q35: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn a_flipped_byte_fails_the_checksum() {
    let mut bytes = support::artifact_with(&support::manifest(), NOT_ELF);
    let at = bytes.len() - NOT_ELF.len() - 5; // inside the last weight payload
    bytes[at] ^= 0x10;
    let (path, err) = load_err(&bytes);
    assert!(matches!(err, LoadError::Artifact(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{path}: checksum mismatch in `weights/")),
        "{err}"
    );
}

#[test]
fn truncation_is_caught() {
    let bytes = support::artifact_with(&support::manifest(), NOT_ELF);
    let (path, err) = load_err(&bytes[..bytes.len() - 7]);
    assert!(
        err.to_string()
            .starts_with(&format!("{path}: corrupted: tensor `")),
        "{err}"
    );
    assert!(
        err.to_string().contains("but the data section has"),
        "{err}"
    );
    let (path, err) = load_err(&bytes[..3]);
    assert_eq!(
        err.to_string(),
        format!("{path}: not a q35 artifact: shorter than the 8-byte header length")
    );
    let (path, err) = load_err(&[]);
    assert_eq!(
        err.to_string(),
        format!("{path}: not a q35 artifact: shorter than the 8-byte header length")
    );
}

/// Without the `cuda` feature an nvptx artifact is refused at the target
/// step, with the way to run it.
#[cfg(not(feature = "cuda"))]
#[test]
fn another_target_is_refused_with_a_hint() {
    let mut manifest = support::manifest();
    manifest.target.kind = "nvptx".into();
    let (path, err) = load_err(&support::artifact_with(&manifest, NOT_ELF));
    assert_eq!(
        err.to_string(),
        format!(
            "{path}: compiled for target `nvptx`, but this q35-rt runs `cpu`, `tsp` and `csl` artifacts; an nvptx artifact needs a \
             q35-rt built with the `cuda` feature and an NVIDIA GPU"
        )
    );
    manifest.target.kind = "wse".into();
    let (path, err) = load_err(&support::artifact_with(&manifest, NOT_ELF));
    assert_eq!(err.to_string(), format!("{path}: compiled for target `wse`, but this q35-rt runs `cpu`, `tsp` and `csl` artifacts"));
}

/// With the `cuda` feature an nvptx artifact goes to the nvptx checks (this
/// one has no launch configurations); other targets are still refused.
#[cfg(feature = "cuda")]
#[test]
fn another_target_is_refused_with_a_hint() {
    let mut manifest = support::manifest();
    manifest.target.kind = "nvptx".into();
    manifest.target.cpu = "sm_80".into();
    let (path, err) = load_err(&support::artifact_with(&manifest, NOT_ELF));
    assert_eq!(
        err.to_string(),
        format!("{path}: the plan has 5 dispatches but 0 launch configurations")
    );
    manifest.target.kind = "wse".into();
    let (path, err) = load_err(&support::artifact_with(&manifest, NOT_ELF));
    assert_eq!(err.to_string(), format!("{path}: compiled for target `wse`, but this q35-rt runs `cpu`, `nvptx`, `tsp` and `csl` artifacts"));
}

#[test]
fn another_architecture_is_refused() {
    let mut manifest = support::manifest();
    let other = if std::env::consts::ARCH == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    };
    manifest.target.triple = format!("{other}-unknown-linux-gnu");
    let (path, err) = load_err(&support::artifact_with(&manifest, NOT_ELF));
    assert_eq!(
        err.to_string(),
        format!(
            "{path}: compiled for {other}-unknown-linux-gnu, but this machine is {}; recompile the model on (or for) this machine",
            std::env::consts::ARCH
        )
    );
}

#[test]
fn another_version_is_refused() {
    let mut manifest = support::manifest();
    manifest.version = ARTIFACT_VERSION + 1;
    let (path, err) = load_err(&support::artifact_with(&manifest, NOT_ELF));
    assert!(
        err.to_string().starts_with(&format!(
            "{path}: artifact format version {}, this runtime reads version",
            ARTIFACT_VERSION + 1
        )),
        "{err}"
    );
}

#[test]
fn code_that_is_not_elf_is_refused_before_dlopen() {
    let (path, err) = load_err(&support::artifact_with(&support::manifest(), NOT_ELF));
    assert_eq!(
        err.to_string(),
        format!("{path}: cannot load the code object `{CODE}`: not an ELF shared object (no ELF header)")
    );
}

#[test]
fn a_broken_elf_object_gets_the_loaders_reason() {
    // A 64-bit little-endian shared-object header for this machine, and
    // nothing behind it: only dlopen can tell.
    let mut elf = vec![0u8; 128];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[6] = 1;
    elf[16] = 3;
    let machine: u16 = match std::env::consts::ARCH {
        "aarch64" => 183,
        _ => 62,
    };
    elf[18..20].copy_from_slice(&machine.to_le_bytes());
    let (path, err) = load_err(&support::artifact_with(&support::manifest(), &elf));
    let text = err.to_string();
    let prefix = format!("{path}: cannot load the code object `{CODE}`: ");
    assert!(text.starts_with(&prefix), "{text}");
    let reason = &text[prefix.len()..];
    assert!(!reason.is_empty(), "{text}");
    // The loader's message without the memfd or temporary path it saw.
    assert!(
        !reason.contains("/proc/self/fd") && !reason.contains("kernels.so"),
        "{text}"
    );
}

#[test]
fn plan_errors_name_the_buffer_or_dispatch() {
    type Edit = fn(&mut q35_format::artifact::Manifest);
    let cases: [(Edit, &str); 10] = [
        (
            |m| m.dispatches[0].buffers[3] = "nope".into(),
            "dispatch 0 (`probe`) uses buffer `nope`, which the plan does not declare",
        ),
        (
            |m| m.buffers[5].width = 9,
            "output buffer `logits` has width 9, but the vocabulary has 8 tokens",
        ),
        (
            |m| m.buffers[4].width = 17,
            "kv_cache buffer `cache` has width 17, not a multiple of the context length 16",
        ),
        (
            |m| m.buffers[0].element = "f32".into(),
            "input buffer `tokens` has element `f32`, expected `i32`",
        ),
        (
            |m| m.buffers[2].role = "scratch".into(),
            "buffer `norm` has role `scratch`",
        ),
        (
            |m| m.buffers.remove(1).name.clear(),
            "the plan must have one `tokens` and one `positions` input buffer",
        ),
        (
            |m| m.buffers[3].element = m.buffers[3].element.replace("planar", "tiled"),
            "weight buffer `proj` has layout `tiled`; this runtime reads `planar`",
        ),
        (
            |m| m.model.head_dim = 3,
            "model config: head_dim (3) must be even",
        ),
        // Concurrent dispatches may share only what neither writes.
        (
            |m| m.dispatches[1].concurrent = true,
            "dispatch 1 (`bump`) is marked concurrent with dispatch 0 (`probe`), but both bind `logits`, which one of them may write",
        ),
        (
            |m| m.dispatches[3].concurrent = true,
            "dispatch 3 (`recall`) is marked concurrent with dispatch 2 (`remember`), but both bind `cache`, which one of them may write",
        ),
    ];
    for (edit, expected) in cases {
        let mut manifest = support::manifest();
        edit(&mut manifest);
        let (path, err) = load_err(&support::artifact_with(&manifest, NOT_ELF));
        assert!(matches!(err, LoadError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&format!("{path}: ")), "{err}");
        assert!(
            err.to_string().contains(expected),
            "{err} lacks {expected:?}"
        );
    }
}

#[test]
fn weights_must_match_their_buffers() {
    // The manifest says 8x64 q35, the buffer type says int4.
    let mut manifest = support::manifest();
    manifest.buffers[3].element = manifest.buffers[3].element.replace("\"q35\"", "\"int4\"");
    let (path, err) = load_err(&support::artifact_with(&manifest, NOT_ELF));
    assert_eq!(
        err.to_string(),
        format!(
            "{path}: weight `proj`: the buffer's type is 8x64 int4, the payload a 8x64 q35 tensor"
        )
    );
    // A payload that is not a serialized tensor (checksums are right).
    let mut payloads = support::weight_payloads();
    payloads[1].1[0] = b'X';
    payloads.push((CODE.into(), NOT_ELF.to_vec()));
    let (path, err) = load_err(&write_artifact(&support::manifest(), &payloads));
    assert!(
        err.to_string()
            .starts_with(&format!("{path}: weight `proj`: tensor `proj`: bad magic")),
        "{err}"
    );
}

#[test]
fn packed_element_types_parse() {
    let p =
        PackedElement::parse(r#"!q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">"#)
            .unwrap();
    assert_eq!(
        (
            p.rows,
            p.cols,
            p.group,
            p.kind.to_string(),
            p.layout.as_str()
        ),
        (1536, 576, 128, "q35".into(), "planar")
    );
    assert!(PackedElement::parse("f16")
        .unwrap_err()
        .contains("neither f32, i32 nor !q35.packed"));
    assert!(PackedElement::parse("!q35.packed<1, 2>")
        .unwrap_err()
        .contains("does not have 5 parameters"));
}

#[test]
fn cpu_features_are_checked_against_the_host_flags() {
    let flags = ["sse4_1", "avx", "avx2", "fma", "avx512f"];
    let features = "+avx2,+fma,-avx512bw,+avx512fp16,+sse4.1,+some-unknown-feature,+avx512vnni";
    assert_eq!(
        missing_features("x86_64", features, &flags),
        ["avx512fp16", "avx512vnni"]
    );
    assert!(missing_features("aarch64", features, &flags).is_empty());
    assert_eq!(triple_arch("x86_64-pc-linux-gnu"), "x86_64");
    assert_eq!(triple_arch("arm64-apple-darwin"), "aarch64");
}
