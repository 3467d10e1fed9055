//! Storage element types of model tensors and their exact conversion to
//! f32: the float types of safetensors and GGUF, and llama.cpp's block
//! quantizations (Q8_0, Q4_0, Q4_1) with ggml's block semantics.
//!
//! All data is little-endian and read byte by byte, so nothing here
//! depends on the alignment of a memory-mapped file.

use half::{bf16, f16};
use std::fmt;

/// Elements per block of ggml's 32-element quantizations.
pub const QK: usize = 32;

/// How a tensor's elements are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// ggml Q8_0: per 32 elements an f16 scale `d` and 32 `i8`; `x = q*d`.
    Q8_0,
    /// ggml Q4_0: per 32 elements an f16 `d` and 16 bytes of nibbles;
    /// `x = (q-8)*d`; low nibbles are elements 0..16, high nibbles 16..32.
    Q4_0,
    /// ggml Q4_1: per 32 elements f16 `d`, f16 `m` and 16 bytes of
    /// nibbles (same order as Q4_0); `x = q*d + m`.
    Q4_1,
}

impl DType {
    /// The name used by safetensors (`F32`, `BF16`) and ggml (`Q4_1`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q8_0 => "Q8_0",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
        }
    }

    /// Elements per storage block (1 for plain floats).
    pub fn block_len(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => QK,
        }
    }

    /// Bytes per storage block.
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q8_0 => 2 + QK,
            DType::Q4_0 => 2 + QK / 2,
            DType::Q4_1 => 4 + QK / 2,
        }
    }

    /// Whether this is one of ggml's block quantizations.
    pub fn is_quantized(self) -> bool {
        self.block_len() > 1
    }

    /// Bytes a tensor of this type and (row-major, HF order) shape takes.
    /// Blocks run along the last dimension (the row), so it must be a
    /// multiple of the block length, as ggml requires.
    pub fn byte_len(self, shape: &[usize]) -> Result<usize, String> {
        let elements = element_count(shape)
            .ok_or_else(|| format!("shape {shape:?} has more elements than fit in memory"))?;
        let block = self.block_len();
        if block > 1 {
            let row = shape.last().copied().unwrap_or(1);
            if row % block != 0 {
                return Err(format!(
                    "{} stores blocks of {block} along a row, but the row length is {row}",
                    self.name()
                ));
            }
        }
        (elements / block)
            .checked_mul(self.block_bytes())
            .ok_or_else(|| format!("shape {shape:?} of {} does not fit in memory", self.name()))
    }

    /// Converts stored bytes to f32. `bytes` must hold whole blocks; the
    /// readers have checked the length against the shape already, so an
    /// error here means a reader let a bad length through.
    pub fn to_f32(self, bytes: &[u8]) -> Result<Vec<f32>, String> {
        let block_bytes = self.block_bytes();
        if bytes.len() % block_bytes != 0 {
            return Err(format!(
                "{} data is {} bytes, not a whole number of {block_bytes}-byte blocks",
                self.name(),
                bytes.len()
            ));
        }
        let mut out = Vec::with_capacity(bytes.len() / block_bytes * self.block_len());
        let blocks = bytes.chunks_exact(block_bytes);
        match self {
            DType::F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            DType::F16 => out.extend(blocks.map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
            DType::BF16 => out.extend(blocks.map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
            DType::Q8_0 => {
                for block in blocks {
                    let (d, qs) = block.split_at(2);
                    let d = f16::from_le_bytes([d[0], d[1]]).to_f32();
                    out.extend(qs.iter().map(|&q| f32::from(q as i8) * d));
                }
            }
            DType::Q4_0 => {
                for block in blocks {
                    let (d, qs) = block.split_at(2);
                    let d = f16::from_le_bytes([d[0], d[1]]).to_f32();
                    out.extend(qs.iter().map(|&q| (i32::from(q & 0x0f) - 8) as f32 * d));
                    out.extend(qs.iter().map(|&q| (i32::from(q >> 4) - 8) as f32 * d));
                }
            }
            DType::Q4_1 => {
                for block in blocks {
                    let (dm, qs) = block.split_at(4);
                    let d = f16::from_le_bytes([dm[0], dm[1]]).to_f32();
                    let m = f16::from_le_bytes([dm[2], dm[3]]).to_f32();
                    // Multiply, then add, in f32 (no fused multiply-add), as
                    // ggml's reference dequantization does.
                    out.extend(qs.iter().map(|&q| f32::from(q & 0x0f) * d + m));
                    out.extend(qs.iter().map(|&q| f32::from(q >> 4) * d + m));
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The number of elements of a shape, `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Little-endian bytes of f32 values, as safetensors stores them.
pub fn f32_to_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_decode_little_endian() {
        let bytes = f32_to_le_bytes(&[1.5, -2.0]);
        assert_eq!(DType::F32.to_f32(&bytes).unwrap(), vec![1.5, -2.0]);
        let h: Vec<u8> = [f16::from_f32(0.5), f16::from_f32(-3.0)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(DType::F16.to_f32(&h).unwrap(), vec![0.5, -3.0]);
        let b: Vec<u8> = [bf16::from_f32(0.25), bf16::from_f32(7.0)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(DType::BF16.to_f32(&b).unwrap(), vec![0.25, 7.0]);
    }

    #[test]
    fn q4_0_nibble_order_and_offset() {
        // d = 0.5; byte j holds element j (low nibble) and j+16 (high).
        let mut block = f16::from_f32(0.5).to_le_bytes().to_vec();
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let x = DType::Q4_0.to_f32(&block).unwrap();
        for j in 0..16 {
            assert_eq!(x[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(x[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
        }
    }

    #[test]
    fn q4_1_and_q8_0_blocks() {
        let mut block = f16::from_f32(0.25).to_le_bytes().to_vec();
        block.extend(f16::from_f32(-1.0).to_le_bytes());
        block.extend((0..16u8).map(|j| j | (3 << 4)));
        let x = DType::Q4_1.to_f32(&block).unwrap();
        assert_eq!(x[5], 5.0 * 0.25 - 1.0);
        assert_eq!(x[20], 3.0 * 0.25 - 1.0);

        let mut block = f16::from_f32(2.0).to_le_bytes().to_vec();
        block.extend((0..32i8).map(|q| (q - 16) as u8));
        let x = DType::Q8_0.to_f32(&block).unwrap();
        assert_eq!(x[0], -32.0);
        assert_eq!(x[31], 30.0);
    }

    #[test]
    fn byte_lengths_check_blocks_and_overflow() {
        assert_eq!(DType::Q4_1.byte_len(&[3, 64]).unwrap(), 3 * 2 * 20);
        assert_eq!(DType::F16.byte_len(&[]).unwrap(), 2);
        assert!(DType::Q8_0
            .byte_len(&[2, 33])
            .unwrap_err()
            .contains("row length is 33"));
        assert!(DType::F32.byte_len(&[usize::MAX, 2]).is_err());
        assert!(DType::F32.to_f32(&[0; 5]).is_err());
    }
}
