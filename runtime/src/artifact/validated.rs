//! Steps 3 and 4 together: an artifact whose plan and weights are
//! checked ([`Validated`]), and what every target knows of it
//! ([`ArtifactInfo`]).

use std::collections::{BTreeMap, HashMap};

use q35_format::artifact::{Artifact, Manifest, WeightSpec};
use q35_format::signature::CodeSignatures;
use q35_format::{Layout, Payload, QuantKind, QuantizedTensor};

use super::plan::{check_memory, check_plan};
use super::{BufferClass, LoadError};
use crate::host;
use crate::memref::AlignedBuffer;

/// What every backend knows of a validated artifact: the manifest, each
/// buffer's class and array sizes, which buffers each dispatch binds, and
/// the tokenizer.
#[derive(Debug)]
pub struct ArtifactInfo {
    path: String,
    manifest: Manifest,
    classes: Vec<BufferClass>,
    /// Bytes of each buffer's arrays (four for coded weights, else one).
    arrays: Vec<Vec<usize>>,
    /// Each dispatch's buffers, as indices into the manifest's buffers.
    bindings: Vec<Vec<usize>>,
    /// Indices of the `tokens`, `positions` and `output` buffers.
    pub(crate) tokens: usize,
    pub(crate) positions: usize,
    pub(crate) output: usize,
    tokenizer_json: Option<String>,
    chat_template: Option<crate::chat::TemplateSpec>,
    file_bytes: u64,
}

impl ArtifactInfo {
    /// The file it was loaded from, as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Every buffer's class, in manifest order.
    pub fn classes(&self) -> &[BufferClass] {
        &self.classes
    }

    /// Bytes of each array of buffer `buffer` (manifest order), in
    /// descriptor order.
    pub fn array_bytes(&self, buffer: usize) -> &[usize] {
        &self.arrays[buffer]
    }

    /// For each dispatch, the indices of the buffers it binds, in order.
    pub fn bindings(&self) -> &[Vec<usize>] {
        &self.bindings
    }

    /// The artifact's `tokenizer.json`, if it has one.
    pub fn tokenizer_json(&self) -> Option<&str> {
        self.tokenizer_json.as_deref()
    }

    /// The model's chat template, if the artifact has one.
    pub fn chat_template(&self) -> Option<&crate::chat::TemplateSpec> {
        self.chat_template.as_ref()
    }

    /// Size of the artifact file.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    fn buffer_bytes(&self, buffer: usize) -> usize {
        self.arrays[buffer].iter().sum()
    }

    /// Bytes of weights in memory (codes and parameters, all buffers).
    pub fn weight_bytes(&self) -> usize {
        (0..self.classes.len())
            .filter(|&b| {
                matches!(
                    self.classes[b],
                    BufferClass::PackedWeight(_) | BufferClass::VectorWeight { .. }
                )
            })
            .map(|b| self.buffer_bytes(b))
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
        (0..self.classes.len())
            .map(|b| {
                let name = self.manifest.buffers[b].name.as_str();
                let bytes = self.buffer_bytes(b);
                match (&self.classes[b], uses.get(name)) {
                    (BufferClass::VectorWeight { .. }, Some(_)) => bytes,
                    (BufferClass::PackedWeight(_), Some(&(_, true))) => bytes,
                    (BufferClass::PackedWeight(p), Some(&(true, false))) => bytes / p.rows.max(1),
                    _ => 0,
                }
            })
            .sum()
    }
}

/// Steps 3 and 4, shared by every backend: the plan and every weight
/// checked, the weights decoded into host arrays that the backend binds
/// (CPU) or copies to its memory (GPU).
pub(crate) struct Validated {
    pub info: ArtifactInfo,
    /// Per buffer: its decoded weight arrays; empty for other buffers.
    pub weights: Vec<Vec<AlignedBuffer>>,
}

impl Validated {
    /// Checks the plan (step 3: on its own, and its memory against this
    /// machine's), decodes every weight (step 4), then checks the plan
    /// against the kernel signatures `code_signatures` reads from the code
    /// object, of an artifact whose container and target are checked;
    /// `path` names it in errors.
    pub(crate) fn new(
        path: &str,
        artifact: &Artifact<'_>,
        file_bytes: u64,
        code_signatures: impl FnOnce() -> Result<CodeSignatures, LoadError>,
    ) -> Result<Self, LoadError> {
        let manifest = &artifact.manifest;
        let invalid = |what: String| LoadError::Invalid {
            path: path.to_string(),
            what,
        };
        manifest.model.validate().map_err(invalid)?;
        let classes = check_plan(manifest).map_err(invalid)?;
        check_memory(artifact, &classes, host::available_memory()).map_err(invalid)?;

        // Weights: decode and check every one before any code runs.
        let started = std::time::Instant::now();
        let specs: HashMap<&str, &WeightSpec> = manifest
            .weights
            .iter()
            .map(|w| (w.name.as_str(), w))
            .collect();
        let mut weights = Vec::with_capacity(manifest.buffers.len());
        let mut arrays = Vec::with_capacity(manifest.buffers.len());
        for (spec, class) in manifest.buffers.iter().zip(&classes) {
            if let Some(bytes) = class.array_bytes(manifest.max_tokens) {
                weights.push(Vec::new());
                arrays.push(vec![bytes]);
                continue;
            }
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
            let decoded =
                decode_weight(weight, class, bytes).map_err(|what| LoadError::Weight {
                    path: path.to_string(),
                    name: weight.name.clone(),
                    what,
                })?;
            arrays.push(decoded.iter().map(AlignedBuffer::len).collect());
            weights.push(decoded);
        }
        tracing::debug!(elapsed = ?started.elapsed(), "weights decoded");
        // The plan against the kernels the code object declares, before any
        // buffer but the weights is allocated and before any kernel runs.
        code_signatures()?.check(manifest).map_err(|what| LoadError::Signature {
            path: path.to_string(),
            payload: manifest.code.clone(),
            what,
        })?;

        let tokenizer_json = match &manifest.tokenizer {
            Some(name) => {
                let bytes = artifact.payload(name).unwrap_or_default();
                Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                    invalid(format!("tokenizer payload `{name}` is not UTF-8 text"))
                })?)
            }
            None => None,
        };
        let chat_template = match &manifest.chat_template {
            Some(name) => {
                let bytes = artifact.payload(name).unwrap_or_default();
                Some(serde_json::from_slice(bytes).map_err(|e| invalid(format!("chat template payload `{name}`: {e}")))?)
            }
            None => None,
        };

        let index: HashMap<&str, usize> = manifest
            .buffers
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.as_str(), i))
            .collect();
        // check_plan guarantees every name resolves.
        let bindings = manifest
            .dispatches
            .iter()
            .map(|d| d.buffers.iter().map(|name| index[name.as_str()]).collect())
            .collect();
        let find = |class: fn(&BufferClass) -> bool| {
            classes
                .iter()
                .position(class)
                .expect("checked by check_plan")
        };
        let tokens = find(|c| matches!(c, BufferClass::Tokens));
        let positions = find(|c| matches!(c, BufferClass::Positions));
        let output = find(|c| matches!(c, BufferClass::Output { .. }));
        Ok(Self {
            info: ArtifactInfo {
                path: path.to_string(),
                manifest: manifest.clone(),
                classes,
                arrays,
                bindings,
                tokens,
                positions,
                output,
                tokenizer_json,
                chat_template,
                file_bytes,
            },
            weights,
        })
    }
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
