//! The artifact loader's checks that run before any code is loaded:
//! `q35_format::artifact::Artifact::parse` on the bytes of a `.q35` file,
//! then on its manifest the model config's `validate`, the runtime's plan
//! check `q35_rt::artifact::check_plan`, and every weight payload decoded
//! (`q35_rt::check::decoded_weights`). Nothing is dlopened.
//!
//! FNV checksums would stop almost every mutation at `Artifact::parse`, so
//! a checksum mismatch is repaired in place (the stored 16 hex digits
//! replaced by the computed ones that the error names, same length) and
//! the parse retried; and the manifest is also checked on its own when the
//! container does not parse.
//!
//! Only `Ok` or `Err` is accepted: a panic, abort, OOM or timeout is a
//! finding.

use libfuzzer_sys::fuzz_target;
use q35_format::artifact::{Artifact, Manifest};
use q35_fuzz::note;

const PATH: &str = "fuzz.q35";

fn check_manifest(manifest: &Manifest) {
    if let Err(e) = manifest.model.validate() {
        note!("model.validate: {e}");
    }
    match q35_rt::artifact::check_plan(manifest) {
        Ok(classes) => {
            note!("check_plan: ok, {} buffers", classes.len());
            for class in &classes {
                let _ = class.descriptor_count();
            }
        }
        Err(e) => note!("check_plan: {e}"),
    }
}

/// The manifest as `Artifact::parse` reads it, without the container's
/// other checks.
fn manifest_alone(bytes: &[u8]) -> Option<Manifest> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = 8usize.checked_add(usize::try_from(len).ok()?)?;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..end)?).ok()?;
    let text = header.get("__metadata__")?.get("q35.manifest")?.as_str()?;
    serde_json::from_str(text).ok()
}

/// The position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The stored and computed checksums a checksum error names, as its
/// message says them: `(expected 0123456789abcdef, found fedcba9876543210)`.
/// Read from the message so that every checksum error (payloads, the
/// manifest) is repaired alike.
fn checksums(message: &str) -> Option<(String, String)> {
    // The last occurrences: a tensor name, earlier in the message, may say anything.
    let hex16 = |text: &str, key: &str| -> Option<String> {
        let at = text.rfind(key)? + key.len();
        let digits = text.get(at..at + 16)?;
        digits.bytes().all(|b| b.is_ascii_hexdigit()).then(|| digits.to_string())
    };
    if !message.contains("checksum mismatch") {
        return None;
    }
    Some((hex16(message, "(expected ")?, hex16(message, ", found ")?))
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    // Each repair fixes one checksum (a payload's, then the manifest's,
    // whose text the first repair changed); a tiny artifact has ~20 payloads.
    for _ in 0..128 {
        let error = match Artifact::parse(PATH, &bytes) {
            Ok(artifact) => {
                note!("parse: ok");
                check_manifest(&artifact.manifest);
                match q35_rt::check::decoded_weights(PATH, &artifact) {
                    Ok(weights) => note!("decoded_weights: ok, {}", weights.len()),
                    Err(e) => note!("decoded_weights: {e}"),
                }
                return;
            }
            Err(e) => e.to_string(),
        };
        let Some((expected, found)) = checksums(&error).filter(|(e, f)| e != f) else {
            note!("parse: {error}");
            break;
        };
        // The stored value is in the header (the manifest's own checksum,
        // or a payload's inside the manifest text): same length, in place.
        let header_end = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .and_then(|len| usize::try_from(len).ok())
            .and_then(|len| len.checked_add(8))
            .map_or(0, |end| end.min(bytes.len()));
        match find(&bytes[..header_end], expected.as_bytes()) {
            Some(at) => {
                note!("parse: checksum {expected} repaired to {found}");
                bytes[at..at + found.len()].copy_from_slice(found.as_bytes());
            }
            None => {
                note!("parse: {error}");
                break;
            }
        }
    }
    if let Some(manifest) = manifest_alone(&bytes) {
        note!("manifest alone:");
        check_manifest(&manifest);
    }
});

fn main() {
    q35_fuzz::run()
}
