//! The artifact container: round trip, and every corruption is refused with
//! a message naming the problem before anything is used.

use q35_format::artifact::{write_artifact, Artifact, ArtifactError, Manifest, TargetSpec, WeightSpec, ARTIFACT_FORMAT, ARTIFACT_VERSION};
use q35_format::ModelConfig;
use std::collections::BTreeMap;

fn manifest() -> Manifest {
    Manifest {
        format: ARTIFACT_FORMAT.into(),
        version: ARTIFACT_VERSION,
        target: TargetSpec {
            kind: "cpu".into(),
            triple: "x86_64-unknown-linux-gnu".into(),
            cpu: "generic".into(),
            features: String::new(),
        },
        model: ModelConfig {
            architecture: "llama".into(),
            vocab_size: 96,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            max_position_embeddings: 128,
            tie_word_embeddings: true,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        },
        quant: "q35".into(),
        group: "128".into(),
        context_length: 128,
        max_tokens: 16,
        rows_per_workgroup: 64,
        buffers: vec![],
        dispatches: vec![],
        weights: vec![WeightSpec {
            name: "w".into(),
            tensor: "weights/w".into(),
            kind: "q35".into(),
            rows: 2,
            cols: 2,
        }],
        code: "code/cpu".into(),
        tokenizer: None,
        chat_template: None,
        toolchain: BTreeMap::new(),
        checksums: BTreeMap::new(),
        launches: Vec::new(),
        activations: "f32".to_string(),
        rotated_inputs: false,
    }
}

fn bytes() -> Vec<u8> {
    write_artifact(
        &manifest(),
        &[("weights/w".into(), vec![1, 2, 3, 4, 5]), ("code/cpu".into(), b"\x7fELF...".to_vec())],
    )
}

#[test]
fn round_trip() {
    let bytes = bytes();
    let artifact = Artifact::parse("m.q35", &bytes).unwrap();
    assert_eq!(artifact.payload("weights/w"), Some(&[1u8, 2, 3, 4, 5][..]));
    assert_eq!(artifact.manifest.weights, manifest().weights);
    assert_eq!(artifact.manifest.checksums.len(), 2);
}

#[test]
fn a_flipped_byte_in_a_payload_fails_its_checksum() {
    let mut bytes = bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let err = Artifact::parse("m.q35", &bytes).err().unwrap();
    assert!(matches!(err, ArtifactError::Checksum { ref tensor, .. } if tensor == "code/cpu"), "{err}");
    assert!(err.to_string().starts_with("m.q35: checksum mismatch in `code/cpu`"), "{err}");
}

#[test]
fn truncation_is_caught() {
    let bytes = bytes();
    let err = Artifact::parse("m.q35", &bytes[..bytes.len() - 3]).err().unwrap();
    assert!(err.to_string().contains("spans bytes"), "{err}");
    let err = Artifact::parse("m.q35", &bytes[..5]).err().unwrap();
    assert_eq!(err.to_string(), "m.q35: not a q35 artifact: shorter than the 8-byte header length");
    let err = Artifact::parse("m.q35", &bytes[..100]).err().unwrap();
    assert!(err.to_string().contains("exceeds the file size 100"), "{err}");
}

#[test]
fn another_version_is_refused() {
    let mut m = manifest();
    m.version = ARTIFACT_VERSION + 1;
    let bytes = write_artifact(&m, &[("weights/w".into(), vec![1]), ("code/cpu".into(), vec![2])]);
    let err = Artifact::parse("old.q35", &bytes).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "old.q35: artifact format version {}, this runtime reads version {ARTIFACT_VERSION}; recompile the model with this q35c",
            ARTIFACT_VERSION + 1
        )
    );
}

#[test]
fn a_missing_payload_is_named() {
    let bytes = write_artifact(&manifest(), &[("code/cpu".into(), vec![2])]);
    let err = Artifact::parse("m.q35", &bytes).err().unwrap();
    assert!(err.to_string().contains("names payload `weights/w`, which is missing"), "{err}");
}

#[test]
fn other_files_are_not_artifacts() {
    let err = Artifact::parse("x.bin", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}        ").err().unwrap();
    assert_eq!(err.to_string(), "x.bin: not a q35 artifact: no q35 manifest in the header metadata");
}

/// The manifest is covered by its own checksum: an edit of any value in it
/// (here a workgroup count inside the JSON string) is caught.
#[test]
fn an_edited_manifest_fails_its_checksum() {
    let bytes = bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let edited = text.replacen("\\\"rows_per_workgroup\\\":64", "\\\"rows_per_workgroup\\\":96", 1);
    assert_ne!(edited, text, "the edit must apply");
    let err = Artifact::parse("m.q35", edited.as_bytes()).err().unwrap();
    assert!(matches!(err, ArtifactError::ManifestChecksum { .. }), "{err}");
    assert!(err.to_string().starts_with("m.q35: checksum mismatch in the manifest"), "{err}");
    // And a manifest without its checksum is refused.
    let stripped = text.replacen("\"q35.manifest_checksum\"", "\"q35.manifest_checksux\"", 1);
    let err = Artifact::parse("m.q35", stripped.as_bytes()).err().unwrap();
    assert!(err.to_string().contains("the manifest has no checksum"), "{err}");
}
