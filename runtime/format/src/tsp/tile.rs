//! How a coded weight tile sits in TSP SRAM: lane-parallel, so the VXM
//! decodes it with every lane doing the same thing to its own byte.
//!
//! A tile is `lanes` weight rows (lane j holds row n0 + j; rows past the
//! matrix are zero) and up to `lanes` columns k0..k0+cols. Its 4-bit codes
//! (q35's even columns, every int4 column), in column order, pack two to a
//! lane byte (`q(2m) | q(2m+1) << 4` in vector m); its 3-bit codes pack
//! their low two bits four to a byte, then their high bits eight to a
//! byte, as the artifact's planes do along a row. A full q35 tile is 80 +
//! 40 + 20 = 140 vectors for 320 × 320 weights: 3.5 bits a weight.
//! `dequant` turns them back into one int8 vector per column, each code
//! scaled to the integer path's common step range/105 (7·q4, 15·q3:
//! docs/format.md §8), ready for the MXM.

use crate::{unpack_planes, QuantKind, QuantizedTensor};

/// Whether column `k` of a `kind` matrix has a 4-bit code (q35: even
/// columns; group widths are even, so a column's parity is its parity in
/// its group).
pub fn is_four_bit(kind: QuantKind, k: usize) -> bool {
    match kind {
        QuantKind::Q35 => k % 2 == 0,
        QuantKind::Int4 => true,
        _ => false,
    }
}

/// The 4-bit and 3-bit column counts of columns k0..k0+cols.
fn plane_counts(kind: QuantKind, k0: usize, cols: usize) -> (usize, usize) {
    let n4 = (k0..k0 + cols).filter(|&k| is_four_bit(kind, k)).count();
    (n4, cols - n4)
}

/// Packed vectors of a tile of columns k0..k0+cols.
pub fn packed_vectors(kind: QuantKind, k0: usize, cols: usize) -> usize {
    let (n4, n3) = plane_counts(kind, k0, cols);
    n4.div_ceil(2) + n3.div_ceil(4) + n3.div_ceil(8)
}

/// Every code of row `n` of a coded matrix, one per column.
pub fn row_codes(weight: &QuantizedTensor, n: usize) -> Vec<u8> {
    let (kind, layout) = (weight.kind(), weight.layout());
    let row = weight.row_codes(n).expect("a coded weight");
    let mut out = vec![0u8; weight.cols()];
    let (mut q4, mut q3) = (Vec::new(), Vec::new());
    for g in 0..layout.groups() {
        let cols = layout.group_cols(g);
        let (n4, n3) = kind.code_counts(cols.len()).unwrap_or_default();
        q4.resize(n4, 0);
        q3.resize(n3, 0);
        unpack_planes(&row[layout.block_range(g)], &mut q4, &mut q3);
        for (i, k) in cols.enumerate() {
            out[k] = match kind {
                QuantKind::Q35 if i % 2 == 0 => q4[i / 2],
                QuantKind::Q35 => q3[i / 2],
                QuantKind::Int4 => q4[i],
                _ => q3[i],
            };
        }
    }
    out
}

/// The packed vectors of the tile of rows n0.. and columns k0..k0+cols
/// (`codes[j]` is row n0 + j's [`row_codes`], absent past the matrix).
pub fn pack_tile(kind: QuantKind, codes: &[Vec<u8>], k0: usize, cols: usize, lanes: usize) -> Vec<Vec<u8>> {
    let (n4, n3) = plane_counts(kind, k0, cols);
    let four: Vec<usize> = (k0..k0 + cols).filter(|&k| is_four_bit(kind, k)).collect();
    let three: Vec<usize> = (k0..k0 + cols).filter(|&k| !is_four_bit(kind, k)).collect();
    let mut vectors = vec![vec![0u8; lanes]; packed_vectors(kind, k0, cols)];
    let (lo_at, hi_at) = (n4.div_ceil(2), n4.div_ceil(2) + n3.div_ceil(4));
    for (lane, row) in codes.iter().enumerate().take(lanes) {
        for (j, &k) in four.iter().enumerate() {
            vectors[j / 2][lane] |= (row[k] & 0xf) << (4 * (j % 2));
        }
        for (j, &k) in three.iter().enumerate() {
            vectors[lo_at + j / 4][lane] |= (row[k] & 0b11) << (2 * (j % 4));
            vectors[hi_at + j / 8][lane] |= ((row[k] >> 2) & 1) << (j % 8);
        }
    }
    vectors
}

/// `dequant`: the packed vectors of columns k0..k0+cols back to one int8
/// vector per column, codes scaled to the common step (7·q4, 15·q3).
pub fn dequant_tile(kind: QuantKind, packed: &[Vec<u8>], k0: usize, cols: usize) -> Result<Vec<Vec<i8>>, String> {
    let expected = packed_vectors(kind, k0, cols);
    if packed.len() != expected {
        return Err(format!("dequant of {cols} {kind} columns reads {expected} packed vectors, not {}", packed.len()));
    }
    let lanes = packed.first().map_or(0, Vec::len);
    let (n4, n3) = plane_counts(kind, k0, cols);
    let (lo_at, hi_at) = (n4.div_ceil(2), n4.div_ceil(2) + n3.div_ceil(4));
    let (mut j4, mut j3) = (0, 0);
    let mut out = Vec::with_capacity(cols);
    for k in k0..k0 + cols {
        let column: Vec<i8> = if is_four_bit(kind, k) {
            let v = &packed[j4 / 2];
            let shift = 4 * (j4 % 2);
            j4 += 1;
            (0..lanes).map(|l| (7 * ((v[l] >> shift) & 0xf)) as i8).collect()
        } else {
            let (lo, hi) = (&packed[lo_at + j3 / 4], &packed[hi_at + j3 / 8]);
            let (shift, bit) = (2 * (j3 % 4), j3 % 8);
            j3 += 1;
            (0..lanes).map(|l| (15 * (((lo[l] >> shift) & 0b11) | (((hi[l] >> bit) & 1) << 2))) as i8).collect()
        };
        out.push(column);
    }
    Ok(out)
}

/// The group segments of columns k0..k0+cols: lane ranges of the tile,
/// each within one group of `group_width` columns.
pub fn segments(group_width: usize, k0: usize, cols: usize) -> Vec<super::Segment> {
    let mut out = Vec::new();
    let mut at = k0;
    while at < k0 + cols {
        let g = at / group_width;
        let end = ((g + 1) * group_width).min(k0 + cols);
        out.push(super::Segment { lo: (at - k0) as u16, hi: (end - k0) as u16, group: g as u16 });
        at = end;
    }
    out
}

/// An f32 vector as SRAM rows: four byte planes (row b holds byte b of
/// every lane, little-endian).
pub fn f32_rows(values: &[f32]) -> Vec<u8> {
    let lanes = values.len();
    let mut out = vec![0u8; 4 * lanes];
    for (l, v) in values.iter().enumerate() {
        for (b, byte) in v.to_bits().to_le_bytes().into_iter().enumerate() {
            out[b * lanes + l] = byte;
        }
    }
    out
}

/// The (range, min) f32 vector pair of each group segment of the tile of
/// rows n0.. and columns k0..k0+cols, as SRAM rows: lane j holds row n0 +
/// j's group range, and its min in the group's first segment only (the
/// accumulate adds a group's min term once), zero elsewhere.
pub fn segment_params(weight: &QuantizedTensor, n0: usize, k0: usize, cols: usize, lanes: usize) -> Vec<u8> {
    let group_width = weight.layout().group_width();
    let mut out = Vec::new();
    for segment in segments(group_width, k0, cols) {
        let g = segment.group as usize;
        let first = k0 + segment.lo as usize == g * group_width;
        let (mut range, mut min) = (vec![0f32; lanes], vec![0f32; lanes]);
        for (j, r) in (n0..(n0 + lanes).min(weight.rows())).enumerate() {
            let p = weight.group_params(r, g).expect("a coded weight");
            range[j] = p.range;
            min[j] = if first { p.min } else { 0.0 };
        }
        out.extend(f32_rows(&range));
        out.extend(f32_rows(&min));
    }
    out
}

/// Bytes of one row stored whole (the embedding table, which is read a
/// row per token): its codes as the artifact lays them out, then per group
/// the f16 min and the range code, then the row's f16 range scale.
pub fn row_bytes(kind: QuantKind, group: crate::GroupSize, cols: usize) -> usize {
    let layout = crate::Layout::new(kind, group, cols);
    layout.row_bytes() + 3 * layout.groups() + 2
}

/// Row `n` of a coded matrix stored whole ([`row_bytes`]).
pub fn pack_row(weight: &QuantizedTensor, n: usize) -> Vec<u8> {
    let crate::Payload::Coded { range_scale, mins, range_codes, .. } = weight.payload() else {
        panic!("pack_row of an uncoded weight");
    };
    let groups = weight.layout().groups();
    let mut out = weight.row_codes(n).expect("coded").to_vec();
    for g in 0..groups {
        out.extend(mins[n * groups + g].to_le_bytes());
        out.push(range_codes[n * groups + g]);
    }
    out.extend(range_scale[n].to_le_bytes());
    out
}

/// The reference dequantization (`w'`) of a row stored whole.
pub fn dequant_row(kind: QuantKind, group: crate::GroupSize, cols: usize, bytes: &[u8]) -> Result<Vec<f32>, String> {
    let layout = crate::Layout::new(kind, group, cols);
    let (codes, groups) = (layout.row_bytes(), layout.groups());
    if bytes.len() < row_bytes(kind, group, cols) {
        return Err(format!("a stored {kind} row of {cols} takes {} bytes, not {}", row_bytes(kind, group, cols), bytes.len()));
    }
    let params = &bytes[codes..];
    let payload = crate::Payload::Coded {
        codes: bytes[..codes].to_vec(),
        mins: (0..groups).map(|g| u16::from_le_bytes([params[3 * g], params[3 * g + 1]])).collect(),
        range_codes: (0..groups).map(|g| params[3 * g + 2]).collect(),
        range_scale: vec![u16::from_le_bytes([params[3 * groups], params[3 * groups + 1]])],
    };
    let row = QuantizedTensor::from_parts("row", 1, cols, kind, group, payload).map_err(|e| e.to_string())?;
    Ok(row.dequantize())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_row_stored_whole_dequantizes_as_the_artifact() {
        let (rows, cols) = (3usize, 200usize);
        let data: Vec<f32> = (0..rows * cols).map(|i| ((i * 31) % 97) as f32 / 20.0 - 2.0).collect();
        for kind in [QuantKind::Q35, QuantKind::Int4, QuantKind::Int3] {
            let w = QuantizedTensor::quantize("w", rows, cols, &data, kind, GroupSize::G64).unwrap();
            let all = w.dequantize();
            for n in 0..rows {
                let bytes = pack_row(&w, n);
                assert_eq!(bytes.len(), row_bytes(kind, GroupSize::G64, cols));
                assert_eq!(dequant_row(kind, GroupSize::G64, cols, &bytes).unwrap(), all[n * cols..(n + 1) * cols]);
            }
        }
    }

    use super::*;
    use crate::GroupSize;

    /// Packing a tile and decoding it gives every code times its step
    /// factor, for each kind, with a partial tile and rows past the matrix.
    #[test]
    fn dequant_inverts_pack_for_every_kind() {
        let (rows, cols) = (5usize, 200usize);
        let data: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 211) as f32 / 50.0 - 2.0).collect();
        for kind in [QuantKind::Q35, QuantKind::Int4, QuantKind::Int3] {
            let w = QuantizedTensor::quantize("w", rows, cols, &data, kind, GroupSize::G64).unwrap();
            let codes: Vec<Vec<u8>> = (0..rows).map(|n| row_codes(&w, n)).collect();
            for (k0, width) in [(0, 128), (128, 72), (3, 9)] {
                let packed = pack_tile(kind, &codes, k0, width, 8);
                let columns = dequant_tile(kind, &packed, k0, width).unwrap();
                for (c, column) in columns.iter().enumerate() {
                    let k = k0 + c;
                    for lane in 0..8 {
                        let q = codes.get(lane).map_or(0, |r| r[k]) as i32;
                        let factor = if is_four_bit(kind, k) { 7 } else { 15 };
                        assert_eq!(column[lane] as i32, factor * q, "{kind} k={k} lane={lane}");
                    }
                }
            }
            // A full q35 tile is 3.5 bits a weight.
            if kind == QuantKind::Q35 {
                assert_eq!(packed_vectors(kind, 0, 320), 140);
            }
        }
    }
}
