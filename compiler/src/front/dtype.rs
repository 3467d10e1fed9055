//! Storage element types of model tensors and their exact conversion to
//! f32: the float types of safetensors and GGUF, and llama.cpp's block
//! quantizations (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the K types Q2_K to
//! Q8_K) with ggml's block semantics (`dequantize_row_*` in
//! ggml-quants.c: every product and difference rounded to f32 on its own,
//! as the C code computes without fused multiply-adds).
//!
//! All data is little-endian and read byte by byte, so nothing here
//! depends on the alignment of a memory-mapped file.

use half::{bf16, f16};
use std::fmt;

/// Elements per block of ggml's 32-element quantizations.
pub const QK: usize = 32;
/// Elements per block (super-block) of ggml's K quantizations.
pub const QK_K: usize = 256;

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
    /// ggml Q5_0: f16 `d`, 32 high bits (u32), 16 bytes of low nibbles;
    /// `x = (q-16)*d`.
    Q5_0,
    /// ggml Q5_1: f16 `d`, f16 `m`, high bits, low nibbles; `x = q*d + m`.
    Q5_1,
    /// ggml Q2_K: 16 sub-blocks of 16, 4-bit scale and min each
    /// (`d·sc`, `dmin·m`), 2-bit codes.
    Q2K,
    /// ggml Q3_K: 16 sub-blocks of 16, 6-bit signed scales packed in 12
    /// bytes, 3-bit codes (2 low bits + a high-bit mask).
    Q3K,
    /// ggml Q4_K: 8 sub-blocks of 32, 6-bit scales and mins packed in 12
    /// bytes, 4-bit codes.
    Q4K,
    /// ggml Q5_K: as Q4_K with a fifth bit per code.
    Q5K,
    /// ggml Q6_K: 16 sub-blocks of 16, i8 scales, 6-bit codes.
    Q6K,
    /// ggml Q8_K: f32 `d`, 256 `i8`, and 16 i16 block sums (unused here).
    Q8K,
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
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q2K => "Q2_K",
            DType::Q3K => "Q3_K",
            DType::Q4K => "Q4_K",
            DType::Q5K => "Q5_K",
            DType::Q6K => "Q6_K",
            DType::Q8K => "Q8_K",
        }
    }

    /// Elements per storage block (1 for plain floats).
    pub fn block_len(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 => QK,
            DType::Q2K | DType::Q3K | DType::Q4K | DType::Q5K | DType::Q6K | DType::Q8K => QK_K,
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
            DType::Q5_0 => 2 + 4 + QK / 2,
            DType::Q5_1 => 4 + 4 + QK / 2,
            DType::Q2K => QK_K / 16 + QK_K / 4 + 4,
            DType::Q3K => QK_K / 8 + QK_K / 4 + 12 + 2,
            DType::Q4K => 4 + 12 + QK_K / 2,
            DType::Q5K => 4 + 12 + QK_K / 8 + QK_K / 2,
            DType::Q6K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
            DType::Q8K => 4 + QK_K + 2 * QK_K / 16,
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
            DType::Q5_0 | DType::Q5_1 => {
                let with_min = self == DType::Q5_1;
                for block in blocks {
                    let d = half_at(block, 0);
                    let (m, at) = if with_min { (half_at(block, 2), 4) } else { (0.0, 2) };
                    let qh = u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
                    let qs = &block[at + 4..];
                    // Element j's fifth bit is bit j of qh, element j + 16's
                    // bit j + 16.
                    let code = |j: usize, nibble: u8| i32::from(nibble) | (((qh >> j) & 1) << 4) as i32;
                    for (half, shift) in [(0, 0), (16, 4)] {
                        out.extend(qs.iter().enumerate().map(|(j, &q)| {
                            let q = code(j + half, (q >> shift) & 0x0f);
                            if with_min { q as f32 * d + m } else { (q - 16) as f32 * d }
                        }));
                    }
                }
            }
            DType::Q2K => {
                for block in blocks {
                    let (scales, rest) = block.split_at(QK_K / 16);
                    let (qs, dm) = rest.split_at(QK_K / 4);
                    let (d, min) = (half_at(dm, 0), half_at(dm, 2));
                    let mut is = 0;
                    for q in qs.chunks_exact(32) {
                        for shift in [0, 2, 4, 6] {
                            for part in q.chunks_exact(16) {
                                let sc = scales[is];
                                is += 1;
                                let (dl, ml) = (d * f32::from(sc & 0x0f), min * f32::from(sc >> 4));
                                out.extend(part.iter().map(|&b| dl * f32::from((b >> shift) & 3) - ml));
                            }
                        }
                    }
                }
            }
            DType::Q3K => {
                for block in blocks {
                    let (hmask, rest) = block.split_at(QK_K / 8);
                    let (qs, rest) = rest.split_at(QK_K / 4);
                    let (packed, d) = rest.split_at(12);
                    let d = half_at(d, 0);
                    let scales = q3k_scales(packed);
                    let (mut is, mut m) = (0, 1u8);
                    for (n, q) in qs.chunks_exact(32).enumerate() {
                        for shift in [0, 2, 4, 6] {
                            for (p, part) in q.chunks_exact(16).enumerate() {
                                let dl = d * f32::from(scales[is] - 32);
                                is += 1;
                                let hm = &hmask[16 * p..16 * p + 16];
                                out.extend(part.iter().zip(hm).map(|(&b, &h)| {
                                    let q = ((b >> shift) & 3) as i8 - if h & m != 0 { 0 } else { 4 };
                                    dl * f32::from(q)
                                }));
                            }
                            m <<= 1;
                        }
                        let _ = n;
                    }
                }
            }
            DType::Q4K | DType::Q5K => {
                let five = self == DType::Q5K;
                for block in blocks {
                    let (d, min) = (half_at(block, 0), half_at(block, 2));
                    let scales = &block[4..16];
                    let (qh, ql) = if five { block[16..].split_at(QK_K / 8) } else { (&[][..], &block[16..]) };
                    for (k, q) in ql.chunks_exact(32).enumerate() {
                        for (half, shift) in [(0, 0), (1, 4)] {
                            let (sc, m) = k_scale_min(2 * k + half, scales);
                            let (dl, ml) = (d * f32::from(sc), min * f32::from(m));
                            let bit = 2 * k + half;
                            out.extend(q.iter().enumerate().map(|(l, &b)| {
                                let high = if five && qh[l] & (1 << bit) != 0 { 16 } else { 0 };
                                dl * f32::from(((b >> shift) & 0x0f) + high) - ml
                            }));
                        }
                    }
                }
            }
            DType::Q6K => {
                for block in blocks {
                    let (ql, rest) = block.split_at(QK_K / 2);
                    let (qh, rest) = rest.split_at(QK_K / 4);
                    let (scales, d) = rest.split_at(QK_K / 16);
                    let d = half_at(d, 0);
                    let mut y = [0f32; QK_K];
                    for n in 0..2 {
                        let (ql, qh, sc, y) = (&ql[64 * n..], &qh[32 * n..], &scales[8 * n..], &mut y[128 * n..]);
                        for l in 0..32 {
                            let is = l / 16;
                            let q = |low: u8, shift: u32| i32::from(low) | (i32::from((qh[l] >> shift) & 3) << 4);
                            let codes = [q(ql[l] & 0x0f, 0), q(ql[l + 32] & 0x0f, 2), q(ql[l] >> 4, 4), q(ql[l + 32] >> 4, 6)];
                            for (i, code) in codes.into_iter().enumerate() {
                                y[l + 32 * i] = d * f32::from(sc[is + 2 * i] as i8) * (code - 32) as f32;
                            }
                        }
                    }
                    out.extend_from_slice(&y);
                }
            }
            DType::Q8K => {
                for block in blocks {
                    let d = f32::from_le_bytes([block[0], block[1], block[2], block[3]]);
                    out.extend(block[4..4 + QK_K].iter().map(|&q| d * f32::from(q as i8)));
                }
            }
        }
        Ok(out)
    }
}

/// The f16 at `at` of `bytes`, as f32.
fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Sub-block `j`'s 6-bit scale and min of a Q4_K/Q5_K block
/// (`get_scale_min_k4`): the low 6 bits of bytes j and j + 4 for j < 4;
/// otherwise a nibble of byte j + 4 and the top 2 bits of byte j - 4
/// (scale) or j (min).
fn k_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// A Q3_K block's 16 scales, 6 bits each (before the -32 offset): the low
/// 4 bits are nibbles of bytes 0..8 (scales 0..8 low nibbles, 8..16 high),
/// the top 2 bits pairs of bytes 8..12.
fn q3k_scales(packed: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, scale) in out.iter_mut().enumerate() {
        let low = (packed[i % 8] >> (4 * (i / 8))) & 0x0f;
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        *scale = (low | (high << 4)) as i8;
    }
    out
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

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    /// Random blocks of each type as gguf-py (llama.cpp's own Python
    /// package, no code shared with this file) dequantizes them
    /// (`scripts/kquant-fixture.py`): bit for bit the same values.
    #[test]
    fn every_block_type_decodes_as_llama_cpp_does() {
        let fixture: serde_json::Value = serde_json::from_str(include_str!("../../tests/data/ggml-blocks.json")).unwrap();
        let types = [DType::Q5_0, DType::Q5_1, DType::Q2K, DType::Q3K, DType::Q4K, DType::Q5K, DType::Q6K];
        for dtype in types {
            let case = &fixture[dtype.name()];
            let bytes = hex(case["bytes"].as_str().unwrap());
            let expected: Vec<f32> = hex(case["values"].as_str().unwrap()).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            assert_eq!(bytes.len() % dtype.block_bytes(), 0, "{dtype}");
            let got = dtype.to_f32(&bytes).unwrap();
            assert_eq!(got.len(), expected.len(), "{dtype}");
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert!(g.to_bits() == e.to_bits(), "{dtype} element {i}: {g} against gguf-py's {e}");
            }
        }
    }

    /// Blocks built here from chosen codes and scales, each value computed
    /// from them directly: the bit layouts ggml-quants.c documents.
    #[test]
    fn k_quant_layouts_from_chosen_codes() {
        let d = f16::from_f32(0.5);
        let dmin = f16::from_f32(0.25);
        // Q4_K: sub-block j has scale j + 1 and min 2j + 3 (6-bit: those
        // of j >= 4 split over two bytes); element l of sub-block j has
        // code (l + j) % 16.
        let (sc, mn): (Vec<u8>, Vec<u8>) = (0..8u8).map(|j| (j * 7 + 1, j * 5 + 3)).unzip();
        let mut packed = [0u8; 12];
        for j in 0..4 {
            packed[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            packed[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
            packed[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
        }
        let code = |j: usize, l: usize| ((l + j) % 16) as u8;
        let mut block: Vec<u8> = [d.to_le_bytes(), dmin.to_le_bytes()].concat();
        block.extend(packed);
        for k in 0..4 {
            block.extend((0..32).map(|l| code(2 * k, l) | (code(2 * k + 1, l) << 4)));
        }
        let x = DType::Q4K.to_f32(&block).unwrap();
        for j in 0..8 {
            for l in 0..32 {
                let expected = 0.5 * f32::from(sc[j]) * f32::from(code(j, l)) - 0.25 * f32::from(mn[j]);
                assert_eq!(x[32 * j + l], expected, "Q4_K sub-block {j} element {l}");
            }
        }
        // Q8_K: an f32 scale times signed bytes.
        let mut block = 0.125f32.to_le_bytes().to_vec();
        block.extend((0..256).map(|i| (i as i8).wrapping_sub(100) as u8));
        block.extend([0u8; 32]);
        let x = DType::Q8K.to_f32(&block).unwrap();
        assert_eq!((x[0], x[100], x[255]), (-12.5, 0.0, 0.125 * f32::from(155u8 as i8)));
        // Q5_0: element j's fifth bit is bit j of qh; 16 is the zero.
        let mut block = f16::from_f32(2.0).to_le_bytes().to_vec();
        block.extend(0x8000_0001u32.to_le_bytes());
        block.extend([0x3fu8; 16]);
        let x = DType::Q5_0.to_f32(&block).unwrap();
        assert_eq!((x[0], x[1], x[16], x[31]), (2.0 * (31.0 - 16.0), 2.0 * (15.0 - 16.0), 2.0 * (3.0 - 16.0), 2.0 * (19.0 - 16.0)));
        assert_eq!(DType::Q4K.byte_len(&[4, 256]).unwrap(), 4 * 144);
        assert!(DType::Q6K.byte_len(&[4, 576]).unwrap_err().contains("blocks of 256 along a row"));
    }
}
