//! The `.q35` artifact: one file holding a versioned manifest, the packed
//! weights, the code object and the tokenizer, in a safetensors container
//! (8-byte little-endian header length, JSON header, data), so standard
//! tools can list it and it can be memory-mapped.
//!
//! Every payload is a `U8` tensor; the manifest is the header's
//! `__metadata__["q35.manifest"]` (JSON). [`Artifact::parse`] checks the
//! magic, the version, every offset and size, and every checksum before
//! anything is used. docs/artifact.md documents the layout.

use crate::ModelConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `Manifest::format` of every q35 artifact.
pub const ARTIFACT_FORMAT: &str = "q35-artifact";
/// Bumped on any incompatible change of the manifest or payloads.
pub const ARTIFACT_VERSION: u32 = 2;
const MANIFEST_KEY: &str = "q35.manifest";
/// FNV-1a 64 of the manifest's JSON text, beside it in the header metadata
/// (version 2): the manifest is covered like every payload.
const MANIFEST_CHECKSUM_KEY: &str = "q35.manifest_checksum";
/// Payload holding the artifact's proof obligations (JSON written by
/// `q35c`, checked by `q35c verify`; docs/proofs.md). Optional: artifacts
/// without it still load. Like every payload it is checksummed by
/// [`Artifact::parse`].
pub const OBLIGATIONS_PAYLOAD: &str = "proofs/obligations.json";

/// What the code was compiled for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSpec {
    /// `cpu` (a shared object), `nvptx`, `csl` or `tsp`.
    pub kind: String,
    pub triple: String,
    pub cpu: String,
    pub features: String,
}

/// One buffer of the execution plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferSpec {
    pub name: String,
    /// `f32`, `i32`, or a `!q35.packed<...>` type for weights.
    pub element: String,
    /// Elements per token (inputs, activations) or in total (weights, caches).
    pub width: usize,
    /// `input`, `weight`, `kv_cache`, `activation` or `output`.
    pub role: String,
}

/// One kernel call: `workgroups + workgroups_per_token · tokens` calls of
/// `kernel` with the named buffers bound to its memref arguments in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchSpec {
    pub kernel: String,
    pub workgroups: usize,
    pub workgroups_per_token: usize,
    pub buffers: Vec<String>,
    /// Runs together with the dispatches before it back to the last one
    /// without this flag, their workgroups spread over the threads as one
    /// dispatch: none of them writes a buffer another reads or writes (a
    /// kernel writes its last buffer; `kv_update` its last two). Absent
    /// from the JSON when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub concurrent: bool,
}

/// A stored weight: its payload tensor holds [`crate::QuantizedTensor`]'s
/// serialization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightSpec {
    pub name: String,
    pub tensor: String,
    pub kind: String,
    pub rows: usize,
    pub cols: usize,
}

/// The manifest: everything the runtime needs besides the payloads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub target: TargetSpec,
    pub model: ModelConfig,
    /// `q35`, `int4`, `int3`, `f16` or `f32`, and the group size.
    pub quant: String,
    pub group: String,
    /// KV cache rows: the longest sequence the artifact can run.
    pub context_length: usize,
    /// Rows of every activation buffer: the most tokens one call takes.
    pub max_tokens: usize,
    /// Output rows per matmul workgroup.
    pub rows_per_workgroup: usize,
    pub buffers: Vec<BufferSpec>,
    pub dispatches: Vec<DispatchSpec>,
    pub weights: Vec<WeightSpec>,
    /// Payload tensor holding the code object (ELF shared object for cpu).
    pub code: String,
    /// Payload tensor holding tokenizer.json, when the model had one.
    pub tokenizer: Option<String>,
    /// Payload tensor holding the model's chat template (JSON: the
    /// template and its BOS and EOS texts), when it had one. Absent from
    /// the JSON otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    /// Tool and library versions that produced the artifact.
    pub toolchain: BTreeMap<String, String>,
    /// FNV-1a 64 of every payload tensor, as 16 hex digits.
    pub checksums: BTreeMap<String, String>,
    /// GPU targets (`nvptx`): the launch configuration of each dispatch, in
    /// dispatch order (the grid is the dispatch's workgroup count in x).
    /// Empty, and absent from the JSON, for the CPU.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub launches: Vec<LaunchSpec>,
    /// How coded matmuls take their activations: `f32` (absent from the
    /// JSON), or `int8` (the integer path: `crate::activations`).
    #[serde(default = "f32_activations", skip_serializing_if = "is_f32_activations")]
    pub activations: String,
    /// The matrices are stored for rotated inputs and the dispatches rotate
    /// them (`q35.rotate`, `crate::rotation`); absent from the JSON when
    /// false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rotated_inputs: bool,
}

fn f32_activations() -> String {
    "f32".to_string()
}

fn is_f32_activations(activations: &str) -> bool {
    activations == "f32"
}

/// How one dispatch is launched on a GPU: threads per block, and dynamic
/// shared memory in bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

/// Problems with an artifact; each names what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0}: not a q35 artifact: {1}")]
    NotAnArtifact(String, String),
    #[error("{path}: artifact format version {found}, this runtime reads version {expected}; recompile the model with this q35c")]
    Version { path: String, found: u32, expected: u32 },
    #[error("{path}: corrupted: {reason}")]
    Corrupted { path: String, reason: String },
    #[error("{path}: checksum mismatch in `{tensor}` (expected {expected}, found {found}): the file is corrupted")]
    Checksum {
        path: String,
        tensor: String,
        expected: String,
        found: String,
    },
    #[error("{path}: checksum mismatch in the manifest (expected {expected}, found {found}): the file is corrupted or was edited; recompile it with q35c")]
    ManifestChecksum { path: String, expected: String, found: String },
}

/// FNV-1a, 64 bit: a dependency-free checksum that catches flipped and
/// truncated bytes (not an authenticity check).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Serializes an artifact: the manifest (checksums filled in here) and the
/// payload tensors, in the given order.
pub fn write_artifact(manifest: &Manifest, payloads: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut manifest = manifest.clone();
    manifest.checksums = payloads
        .iter()
        .map(|(name, bytes)| (name.clone(), format!("{:016x}", fnv1a64(bytes))))
        .collect();
    let mut header = serde_json::Map::new();
    let mut metadata = serde_json::Map::new();
    let manifest_text = serde_json::to_string(&manifest).expect("manifest serializes");
    metadata.insert(
        MANIFEST_CHECKSUM_KEY.into(),
        serde_json::Value::String(format!("{:016x}", fnv1a64(manifest_text.as_bytes()))),
    );
    metadata.insert(MANIFEST_KEY.into(), serde_json::Value::String(manifest_text));
    header.insert("__metadata__".into(), serde_json::Value::Object(metadata));
    let mut offset = 0usize;
    for (name, bytes) in payloads {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "U8", "shape": [bytes.len()], "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header)).expect("header serializes");
    // safetensors pads the header with spaces to a multiple of 8.
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for (_, bytes) in payloads {
        out.extend_from_slice(bytes);
    }
    out
}

/// A parsed and fully validated artifact borrowing the file's bytes.
pub struct Artifact<'a> {
    pub manifest: Manifest,
    tensors: BTreeMap<String, &'a [u8]>,
}

impl<'a> Artifact<'a> {
    /// Validates everything: container structure, manifest, version,
    /// references to payloads, and checksums. `path` names the file in errors.
    pub fn parse(path: &str, bytes: &'a [u8]) -> Result<Self, ArtifactError> {
        let corrupted = |reason: String| ArtifactError::Corrupted {
            path: path.to_string(),
            reason,
        };
        let not_artifact = |reason: &str| ArtifactError::NotAnArtifact(path.to_string(), reason.to_string());
        let len_bytes: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| not_artifact("shorter than the 8-byte header length"))?;
        let header_len = u64::from_le_bytes(len_bytes);
        let data_start = 8u64
            .checked_add(header_len)
            .filter(|&end| end <= bytes.len() as u64)
            .ok_or_else(|| not_artifact(&format!("header length {header_len} exceeds the file size {}", bytes.len())))?
            as usize;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&bytes[8..data_start]).map_err(|e| not_artifact(&format!("header is not JSON: {e}")))?;
        let manifest_text = header
            .get("__metadata__")
            .and_then(|m| m.get(MANIFEST_KEY))
            .and_then(|m| m.as_str())
            .ok_or_else(|| not_artifact("no q35 manifest in the header metadata"))?;
        let probe: serde_json::Value =
            serde_json::from_str(manifest_text).map_err(|e| corrupted(format!("manifest is not JSON: {e}")))?;
        if probe.get("format").and_then(|f| f.as_str()) != Some(ARTIFACT_FORMAT) {
            return Err(not_artifact("manifest format is not q35-artifact"));
        }
        let version = probe.get("version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        if version != ARTIFACT_VERSION {
            return Err(ArtifactError::Version {
                path: path.to_string(),
                found: version,
                expected: ARTIFACT_VERSION,
            });
        }
        let expected = header
            .get("__metadata__")
            .and_then(|m| m.get(MANIFEST_CHECKSUM_KEY))
            .and_then(|m| m.as_str())
            .ok_or_else(|| corrupted("the manifest has no checksum".into()))?;
        let found = format!("{:016x}", fnv1a64(manifest_text.as_bytes()));
        if found != expected {
            return Err(ArtifactError::ManifestChecksum {
                path: path.to_string(),
                expected: crate::quote::clip(expected),
                found,
            });
        }
        let manifest: Manifest =
            serde_json::from_value(probe).map_err(|e| corrupted(format!("manifest does not match version {ARTIFACT_VERSION}: {e}")))?;

        let data = &bytes[data_start..];
        let mut ranges: Vec<(usize, usize, String)> = Vec::new();
        let mut tensors = BTreeMap::new();
        for (name, info) in &header {
            if name == "__metadata__" {
                continue;
            }
            let dtype = info.get("dtype").and_then(|d| d.as_str());
            if dtype != Some("U8") {
                return Err(corrupted(format!("tensor `{name}` has dtype {dtype:?}, expected U8")));
            }
            let offsets: Vec<u64> = info
                .get("data_offsets")
                .and_then(|o| o.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
                .unwrap_or_default();
            let [start, end] = offsets[..] else {
                return Err(corrupted(format!("tensor `{name}` has no valid data_offsets")));
            };
            if start > end || end > data.len() as u64 {
                return Err(corrupted(format!(
                    "tensor `{name}` spans bytes {start}..{end} but the data section has {} bytes",
                    data.len()
                )));
            }
            let shape: Vec<u64> = info
                .get("shape")
                .and_then(|s| s.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
                .unwrap_or_default();
            if shape != [end - start] {
                return Err(corrupted(format!("tensor `{name}` shape {shape:?} disagrees with its {} bytes", end - start)));
            }
            ranges.push((start as usize, end as usize, name.clone()));
            tensors.insert(name.clone(), &data[start as usize..end as usize]);
        }
        ranges.sort();
        for pair in ranges.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(corrupted(format!("tensors `{}` and `{}` overlap", pair[0].2, pair[1].2)));
            }
        }
        // Every payload the manifest names must exist and match its checksum.
        let mut referenced: Vec<&String> = manifest.weights.iter().map(|w| &w.tensor).collect();
        referenced.push(&manifest.code);
        referenced.extend(manifest.tokenizer.iter());
        referenced.extend(manifest.chat_template.iter());
        for name in referenced {
            if !tensors.contains_key(name) {
                return Err(corrupted(format!("the manifest names payload `{name}`, which is missing")));
            }
        }
        for (name, bytes) in &tensors {
            let expected = manifest
                .checksums
                .get(name)
                .ok_or_else(|| corrupted(format!("payload `{name}` has no checksum")))?;
            let found = format!("{:016x}", fnv1a64(bytes));
            if &found != expected {
                return Err(ArtifactError::Checksum {
                    path: path.to_string(),
                    tensor: name.clone(),
                    expected: expected.clone(),
                    found,
                });
            }
        }
        Ok(Self { manifest, tensors })
    }

    /// A payload's bytes.
    pub fn payload(&self, name: &str) -> Option<&'a [u8]> {
        self.tensors.get(name).copied()
    }
}
