//! Checking compiled code against the reference forward pass on the
//! artifact's own weights.
//!
//! The reference ([`crate::reference`]) runs on the artifact's weights
//! dequantized with [`QuantizedTensor::dequantize`], the same arithmetic the
//! kernels use, so any difference comes from the compiled code (summation
//! order, or a bug), never from quantization.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use q35_format::artifact::Artifact;
use q35_format::QuantizedTensor;

use crate::artifact::{with_artifact, LoadError};
use crate::executor::{ForwardError, Session};
use crate::reference::{Reference, ReferenceError, WeightTensor};
use crate::sampling::{greedy, SamplingError};

/// Why a check could not run (a failed comparison is a [`CheckReport`]).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{path}: weight `{name}`: {what}")]
    Weight {
        path: String,
        name: String,
        what: String,
    },
    #[error("reference forward pass: {0}")]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("choosing the next token: {0}")]
    Sampling(#[from] SamplingError),
    #[error("compiled logits have {found} values, the reference {expected}")]
    Length { expected: usize, found: usize },
}

/// How far the compiled logits are from the reference's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckReport {
    /// Token rows compared (prefill rows and decode steps).
    pub rows: usize,
    /// Largest |compiled − reference| over all logits.
    pub max_abs_error: f64,
    /// Largest |reference logit|.
    pub max_abs_logit: f64,
    /// Rows whose arg-max (greedy token) is the same.
    pub top1_agreement: usize,
    /// Any compiled logit NaN or infinite.
    pub non_finite: bool,
}

impl CheckReport {
    /// `max_abs_error / max_abs_logit` (infinite for non-finite logits).
    pub fn relative_error(&self) -> f64 {
        if self.non_finite {
            return f64::INFINITY;
        }
        self.max_abs_error / self.max_abs_logit.max(f64::MIN_POSITIVE)
    }

    fn add(&mut self, compiled: &[f32], reference: &[f32], vocab: usize) -> Result<(), CheckError> {
        if compiled.len() != reference.len() {
            return Err(CheckError::Length {
                expected: reference.len(),
                found: compiled.len(),
            });
        }
        for (c, r) in compiled.iter().zip(reference) {
            if !c.is_finite() {
                self.non_finite = true;
                continue;
            }
            self.max_abs_error = self
                .max_abs_error
                .max((f64::from(*c) - f64::from(*r)).abs());
            self.max_abs_logit = self.max_abs_logit.max(f64::from(*r).abs());
        }
        for (c, r) in compiled
            .chunks_exact(vocab)
            .zip(reference.chunks_exact(vocab))
        {
            self.rows += 1;
            if let (Ok(a), Ok(b)) = (greedy(c), greedy(r)) {
                self.top1_agreement += usize::from(a == b);
            }
        }
        Ok(())
    }
}

/// The columns per activation group of a matmul on the integer path
/// (`usize::MAX`: one group per row): the integer path quantizes each
/// matmul's input in its weight's own groups, so matrices of one model
/// may differ.
pub fn int8_activation_group(weight: &QuantizedTensor) -> usize {
    weight.group().fixed().unwrap_or(usize::MAX)
}

/// An artifact's weights, decoded once for a check: what the reference
/// forward pass and the per-matmul check both need.
pub struct ArtifactWeights {
    /// Every weight, by name.
    pub tensors: HashMap<String, QuantizedTensor>,
    /// Whether matmuls take int8 activations (the integer path), each in
    /// its weight's groups ([`int8_activation_group`]).
    pub int8: bool,
    /// Whether the model rotates its matrix inputs (`q35.rotate`).
    pub rotated_inputs: bool,
    config: q35_format::ModelConfig,
    /// Weights the plan binds as f32 vectors (norm weights): `[cols]`.
    vectors: HashSet<String>,
}

impl ArtifactWeights {
    /// Reads and decodes the weights of the artifact at `path`.
    pub fn load(path: &Path) -> Result<Self, CheckError> {
        let name = path.display().to_string();
        let loaded = with_artifact(path, |artifact| {
            let manifest = &artifact.manifest;
            let vectors = manifest
                .buffers
                .iter()
                .filter(|b| b.element == "f32")
                .map(|b| b.name.clone())
                .collect();
            Ok((
                decoded_weights(&name, artifact),
                manifest.activations == "int8",
                manifest.model.clone(),
                vectors,
                manifest.rotated_inputs,
            ))
        })?;
        let (tensors, int8, config, vectors, rotated_inputs) = loaded;
        Ok(Self {
            tensors: tensors?,
            int8,
            rotated_inputs,
            config,
            vectors,
        })
    }

    /// The reference model on these weights, dequantized with
    /// [`QuantizedTensor::dequantize`] (`[cols]` for the f32 vectors the
    /// plan declares, `[rows, cols]` for matrices).
    pub fn reference(&self) -> Result<Reference, CheckError> {
        let dense: HashMap<String, WeightTensor> = self
            .tensors
            .iter()
            .map(|(name, tensor)| {
                let shape = if self.vectors.contains(name) && tensor.rows() == 1 {
                    vec![tensor.cols()]
                } else {
                    vec![tensor.rows(), tensor.cols()]
                };
                let data = tensor.dequantize();
                (name.clone(), WeightTensor { shape, data })
            })
            .collect();
        let reference = Reference::new(self.config.clone(), &dense)?.with_rotated_inputs(self.rotated_inputs);
        Ok(match self.int8 {
            true => reference.with_int8_activations(
                self.tensors.iter().map(|(name, t)| (name.clone(), int8_activation_group(t))).collect(),
            ),
            false => reference,
        })
    }
}

/// The reference model built from the artifact's dequantized weights.
pub fn reference_for(path: &Path) -> Result<Reference, CheckError> {
    ArtifactWeights::load(path)?.reference()
}

/// Every weight of `artifact` decoded, by name.
pub fn decoded_weights(path: &str, artifact: &Artifact<'_>) -> Result<HashMap<String, QuantizedTensor>, CheckError> {
    let manifest = &artifact.manifest;
    let mut out = HashMap::with_capacity(manifest.weights.len());
    for spec in &manifest.weights {
        let err = |what: String| CheckError::Weight {
            path: path.to_string(),
            name: spec.name.clone(),
            what,
        };
        let bytes = artifact
            .payload(&spec.tensor)
            .ok_or_else(|| err(format!("payload `{}` is missing", spec.tensor)))?;
        let tensor = QuantizedTensor::from_bytes(spec.name.clone(), bytes).map_err(|e| err(e.to_string()))?;
        out.insert(spec.name.clone(), tensor);
    }
    Ok(out)
}

/// Runs `prompt` through both models from an empty cache, then
/// `decode_steps` single tokens (each the compiled model's greedy choice,
/// fed to both), and compares every row of logits.
pub fn compare(
    session: &mut Session,
    reference: &mut Reference,
    prompt: &[u32],
    decode_steps: usize,
) -> Result<CheckReport, CheckError> {
    let vocab = session.vocab_size();
    let mut report = CheckReport::default();
    session.reset();
    reference.reset();
    let compiled = session.forward(prompt, 0)?.to_vec();
    let expected = reference.forward(prompt, 0)?;
    report.add(&compiled, &expected, vocab)?;
    let mut last = compiled[compiled.len().saturating_sub(vocab)..].to_vec();
    for position in prompt.len()..prompt.len() + decode_steps {
        if last.is_empty() || report.non_finite {
            break;
        }
        let token = greedy(&last)?;
        let compiled = session.forward(&[token], position)?.to_vec();
        let expected = reference.forward(&[token], position)?;
        report.add(&compiled, &expected, vocab)?;
        last = compiled;
    }
    Ok(report)
}
