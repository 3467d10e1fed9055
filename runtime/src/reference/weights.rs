//! Where the reference gets its weights: any name → f32 tensor map
//! ([`Weights`]), such as a `HashMap` or a memory-mapped Hugging Face
//! `model.safetensors` ([`SafetensorsWeights`], converting f16 and bf16).

use std::collections::HashMap;
use std::path::Path;

use super::{ReferenceError, Result};


/// A weight as f32 with its shape (row-major, Hugging Face layout).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Where the reference gets its weights from, by Hugging Face tensor name
/// (`model.layers.0.self_attn.q_proj.weight`).
pub trait Weights {
    fn get(&self, name: &str) -> Result<WeightTensor>;
}

/// An in-memory map, for tests and for weights built by other tools.
impl Weights for HashMap<String, WeightTensor> {
    fn get(&self, name: &str) -> Result<WeightTensor> {
        HashMap::get(self, name)
            .cloned()
            .ok_or_else(|| ReferenceError::MissingTensor {
                origin: "weight map".into(),
                name: name.into(),
            })
    }
}

/// Weights of one Hugging Face `model.safetensors`, memory-mapped and
/// converted to f32 tensor by tensor.
pub struct SafetensorsWeights {
    file: String,
    mmap: memmap2::Mmap,
    /// Offset of the data section (after the 8-byte length and the header).
    data_start: usize,
    metadata: safetensors::tensor::Metadata,
}

impl SafetensorsWeights {
    /// Maps the file and checks its header (offsets, sizes, dtypes' byte
    /// counts) before any tensor is read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let read_err = |source| ReferenceError::Read {
            file: file.clone(),
            source,
        };
        let handle = std::fs::File::open(path).map_err(read_err)?;
        // SAFETY: the map is read-only and we never hand out references that
        // outlive it. Memory-mapping is only sound while no other process
        // truncates or rewrites the file; like every mmap-based model loader
        // we accept that (a truncated file would fault, not corrupt memory
        // silently). The header is validated before any offset is used.
        let mmap = unsafe { memmap2::Mmap::map(&handle) }.map_err(read_err)?;
        let (header_len, metadata) =
            safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| {
                ReferenceError::Safetensors {
                    file: file.clone(),
                    what: e.to_string(),
                }
            })?;
        Ok(Self {
            file,
            mmap,
            data_start: 8 + header_len,
            metadata,
        })
    }

    /// Names of all tensors in the file.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.metadata.tensors().into_keys().collect();
        names.sort();
        names
    }
}

impl Weights for SafetensorsWeights {
    fn get(&self, name: &str) -> Result<WeightTensor> {
        use safetensors::Dtype;
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| ReferenceError::MissingTensor {
                origin: self.file.clone(),
                name: name.into(),
            })?;
        let (begin, end) = info.data_offsets;
        // read_metadata checked that the offsets tile the data section exactly.
        let bytes = &self.mmap[self.data_start + begin..self.data_start + end];
        let data: Vec<f32> = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ReferenceError::UnsupportedDtype {
                    origin: self.file.clone(),
                    name: name.into(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok(WeightTensor {
            shape: info.shape.clone(),
            data,
        })
    }
}
