//! A real compiled artifact, damaged: every kind of damage is refused
//! before any code runs, with a message that says what is wrong.

use q35_format::{GroupSize, QuantKind};
use q35_rt::executor::Session;
use q35_tests::TinyModel;

fn load_error(bytes: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    match Session::load(file.path(), 1) {
        Ok(_) => panic!("a damaged artifact loaded"),
        Err(e) => e.to_string(),
    }
}

fn artifact() -> (TinyModel, Vec<u8>) {
    let tiny = TinyModel::new().unwrap();
    let path = tiny.compile(QuantKind::Q35, GroupSize::G64, 8).unwrap();
    let bytes = std::fs::read(path).unwrap();
    (tiny, bytes)
}

#[test]
fn the_undamaged_artifact_loads() {
    let (tiny, _) = artifact();
    let path = tiny.compile(QuantKind::Q35, GroupSize::G64, 8).unwrap();
    Session::load(path, 1).unwrap();
}

#[test]
fn a_flipped_byte_anywhere_in_the_payloads_is_caught() {
    let (_tiny, bytes) = artifact();
    // Bytes spread over the file after the header: weights, code, tokenizer.
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for i in 0..16 {
        let at = header + (bytes.len() - header) * i / 16;
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x40;
        let error = load_error(&damaged);
        assert!(error.contains("checksum"), "byte {at}: {error}");
    }
}

#[test]
fn truncation_is_caught() {
    let (_tiny, bytes) = artifact();
    for len in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        let error = load_error(&bytes[..len]);
        eprintln!("length {len}: {error}");
        assert!(
            ["shorter than", "exceeds the file size", "truncated", "corrupted"].iter().any(|w| error.contains(w)),
            "length {len}: {error}"
        );
    }
}

/// Rewrites the manifest JSON inside the safetensors header (same length,
/// so the container stays well-formed) and expects the given message.
fn with_manifest_edit(from: &str, to: &str, expect: &str) {
    assert_eq!(from.len(), to.len());
    let (_tiny, mut bytes) = artifact();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let text = String::from_utf8_lossy(&bytes[8..header]).to_string();
    let at = text.find(from).unwrap_or_else(|| panic!("`{from}` not in the header: {text}"));
    bytes[8 + at..8 + at + to.len()].copy_from_slice(to.as_bytes());
    let error = load_error(&bytes);
    assert!(error.contains(expect), "{from} -> {to}: {error}");
}

#[test]
fn another_version_or_target_is_refused() {
    with_manifest_edit(r#"\"version\":2"#, r#"\"version\":9"#, "version");
    // Any other edit of the manifest fails its checksum.
    with_manifest_edit(r#"\"kind\":\"cpu\""#, r#"\"kind\":\"gpu\""#, "checksum mismatch in the manifest");
}
