//! How a dequant-matmul's coded weights are split over a rectangle of PEs
//! and laid out in each PE's memory.
//!
//! PE (x, y) of a `width × height` rectangle holds output rows
//! `x·rows ..` and input columns `y·cols ..`: activations are broadcast
//! along each PE row, partial sums reduced down each PE column. A PE's
//! columns are whole groups (or, for per-channel groups, a slice of the
//! row's one group), so every group's parameters live on one PE.
//!
//! In a PE the codes are stored column by column, so the program decodes
//! one column of its rows and adds it times one activation (the SDK's
//! GEMV tutorials' column-wise `@fmacs`): a 4-bit column is `rows / 4`
//! 16-bit words of nibbles (row r at word r / 4, bit 4·(r mod 4)); a 3-bit
//! column is `rows / 8` words of low bit pairs then `rows / 16` words of
//! high bits, the artifact's planes transposed. The group parameters are
//! the artifact's bits: the f16 min and range code of each (group, row)
//! and the f16 range scale of each row. Rows past the matrix's are zero
//! (their weights decode to 0).

use crate::{pack::unpack_planes, GroupSize, Layout, Payload, QuantKind, QuantizedTensor};
use std::ops::Range;

/// Rows a PE holds are a multiple of this: a word of high bits holds 16.
pub const ROW_QUANTUM: usize = 16;

/// How one matrix is split over PEs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockShape {
    pub n: usize,
    pub k: usize,
    pub kind: QuantKind,
    pub group: GroupSize,
    /// Output rows per PE, a multiple of [`ROW_QUANTUM`].
    pub rows: usize,
    /// Input columns per PE: a multiple of the group width (an even number
    /// for per-channel groups); the last PE row may have fewer.
    pub cols: usize,
}

/// The groups of one PE's columns: `groups` of `group_width`, the last
/// `last_width` wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalGroups {
    pub groups: usize,
    pub group_width: usize,
    pub last_width: usize,
}

impl BlockShape {
    /// A split, or why `rows` and `cols` do not make one.
    pub fn new(n: usize, k: usize, kind: QuantKind, group: GroupSize, rows: usize, cols: usize) -> Result<Self, String> {
        if kind.code_counts(1).is_none() {
            return Err(format!("a PE block holds coded weights (q35, int4 or int3), not {kind}"));
        }
        if rows == 0 || rows % ROW_QUANTUM != 0 {
            return Err(format!("{rows} rows per PE: a multiple of {ROW_QUANTUM} is needed"));
        }
        // A group wider than the row is the row (as the artifact's layout has it).
        match group.fixed().map(|g| g.min(k.max(1))) {
            Some(g) if cols == 0 || cols % g != 0 => return Err(format!("{cols} columns per PE: a multiple of the group width {g} is needed")),
            None if cols == 0 || cols % 2 != 0 => return Err(format!("{cols} columns per PE: an even number is needed")),
            _ => {}
        }
        Ok(BlockShape { n, k, kind, group, rows, cols: cols.min(k.next_multiple_of(2)) })
    }

    /// The width of the row's groups (`None`: one group a row).
    fn group_width(&self) -> Option<usize> {
        self.group.fixed().map(|g| g.min(self.k.max(1)))
    }

    /// PEs along x (output row blocks) and along y (input column blocks).
    pub fn width(&self) -> usize {
        self.n.div_ceil(self.rows)
    }

    pub fn height(&self) -> usize {
        self.k.div_ceil(self.cols)
    }

    pub fn pes(&self) -> usize {
        self.width() * self.height()
    }

    /// Input columns of PE row `y`.
    pub fn span(&self, y: usize) -> Range<usize> {
        (y * self.cols).min(self.k)..((y + 1) * self.cols).min(self.k)
    }

    /// Output rows of PE column `x` that exist (the rest of its `rows` are
    /// padding).
    pub fn row_span(&self, x: usize) -> Range<usize> {
        (x * self.rows).min(self.n)..((x + 1) * self.rows).min(self.n)
    }

    pub fn local_groups(&self, y: usize) -> LocalGroups {
        let cols = self.span(y).len();
        match self.group_width() {
            Some(g) => {
                let groups = cols.div_ceil(g).max(1);
                LocalGroups { groups, group_width: g, last_width: cols - (groups - 1) * g }
            }
            None => LocalGroups { groups: 1, group_width: cols, last_width: cols },
        }
    }

    /// The row's group that local group `g` of PE row `y` is.
    pub fn global_group(&self, y: usize, g: usize) -> usize {
        match self.group_width() {
            Some(width) => self.span(y).start / width + g,
            None => 0,
        }
    }

    /// Whether local column `c` holds 4-bit codes (PE spans start on an
    /// even column, so q35's even columns stay even).
    pub fn four_bit(&self, c: usize) -> bool {
        match self.kind {
            QuantKind::Q35 => c % 2 == 0,
            QuantKind::Int4 => true,
            _ => false,
        }
    }

    /// 16-bit words of codes of a PE in row `y`.
    pub fn code_words(&self, y: usize) -> usize {
        let cols = self.span(y).len();
        let fours = (0..cols).filter(|&c| self.four_bit(c)).count();
        fours * self.rows / 4 + (cols - fours) * (self.rows / 8 + self.rows / 16)
    }

    /// Bytes of the arrays a PE of row `y` declares: x, y, the decoded
    /// column, two step vectors, codes, mins, range codes and range scales.
    pub fn data_bytes(&self, y: usize) -> usize {
        let cols = self.span(y).len();
        let groups = self.local_groups(y).groups;
        4 * cols + 4 * 4 * self.rows + 2 * self.code_words(y) + 2 * 2 * groups * self.rows + 2 * self.rows
    }

    /// The most any PE of the rectangle declares.
    pub fn max_data_bytes(&self) -> usize {
        (0..self.height()).map(|y| self.data_bytes(y)).max().unwrap_or(0)
    }
}

/// One PE's weight arrays, as its program declares them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Block {
    pub codes: Vec<u16>,
    /// f16 bits, `groups × rows`, group-major.
    pub mins: Vec<u16>,
    /// Range codes, `groups × rows`.
    pub range_codes: Vec<u16>,
    /// f16 bits, one per row.
    pub range_scales: Vec<u16>,
}

impl Block {
    /// PE (x, y)'s arrays of `tensor` split as `shape` says.
    pub fn pack(tensor: &QuantizedTensor, shape: &BlockShape, x: usize, y: usize) -> Result<Block, String> {
        if (tensor.rows(), tensor.cols(), tensor.kind(), tensor.group()) != (shape.n, shape.k, shape.kind, shape.group) {
            return Err(format!(
                "`{}` is {}×{} {} g{}, the PE blocks are cut for {}×{} {} g{}",
                tensor.name(),
                tensor.rows(),
                tensor.cols(),
                tensor.kind(),
                tensor.group(),
                shape.n,
                shape.k,
                shape.kind,
                shape.group
            ));
        }
        let Payload::Coded { codes, range_scale, mins, range_codes } = tensor.payload() else {
            return Err(format!("`{}` is not coded", tensor.name()));
        };
        let layout: &Layout = tensor.layout();
        let (rows, span, local) = (shape.rows, shape.span(y), shape.local_groups(y));
        let ng = layout.groups();
        let mut block = Block {
            codes: vec![0; shape.code_words(y)],
            mins: vec![0; local.groups * rows],
            range_codes: vec![0; local.groups * rows],
            range_scales: vec![0; rows],
        };
        // Where each local column's words start.
        let mut starts = Vec::with_capacity(span.len());
        let mut at = 0;
        for c in 0..span.len() {
            starts.push(at);
            at += if shape.four_bit(c) { rows / 4 } else { rows / 8 + rows / 16 };
        }
        let (mut q4, mut q3, mut all) = (Vec::new(), Vec::new(), Vec::new());
        let rb = layout.row_bytes();
        for (local_row, r) in shape.row_span(x).enumerate() {
            block.range_scales[local_row] = range_scale[r];
            let row = &codes[r * rb..(r + 1) * rb];
            for g in 0..local.groups {
                let global = shape.global_group(y, g);
                block.mins[g * rows + local_row] = mins[r * ng + global];
                block.range_codes[g * rows + local_row] = u16::from(range_codes[r * ng + global]);
            }
            // Every code of the row's groups that meet the span, by column.
            let first = span.start / layout.group_width().max(1);
            let last = (span.end - 1) / layout.group_width().max(1);
            for g in first..=last.min(ng - 1) {
                let cols = layout.group_cols(g);
                let (n4, n3) = shape.kind.code_counts(cols.len()).expect("coded");
                q4.resize(n4, 0);
                q3.resize(n3, 0);
                unpack_planes(&row[layout.block_range(g)], &mut q4, &mut q3);
                all.clear();
                all.extend((0..cols.len()).map(|i| match shape.kind {
                    QuantKind::Q35 if i % 2 == 0 => q4[i / 2],
                    QuantKind::Q35 => q3[i / 2],
                    QuantKind::Int4 => q4[i],
                    _ => q3[i],
                }));
                for (i, col) in cols.enumerate() {
                    if !span.contains(&col) {
                        continue;
                    }
                    let c = col - span.start;
                    let (q, start) = (u16::from(all[i]), starts[c]);
                    if shape.four_bit(c) {
                        block.codes[start + local_row / 4] |= (q & 15) << (4 * (local_row % 4));
                    } else {
                        block.codes[start + local_row / 8] |= (q & 3) << (2 * (local_row % 8));
                        block.codes[start + rows / 8 + local_row / 16] |= ((q >> 2) & 1) << (local_row % 16);
                    }
                }
            }
        }
        Ok(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes weight (row, col) from the blocks as the PE program does.
    fn decode(shape: &BlockShape, blocks: &[Vec<Block>], r: usize, col: usize) -> f32 {
        let (x, lr) = (r / shape.rows, r % shape.rows);
        let y = col / shape.cols;
        let c = col - shape.span(y).start;
        let block = &blocks[x][y];
        let local = shape.local_groups(y);
        let g = c / local.group_width;
        let start: usize = (0..c).map(|c| if shape.four_bit(c) { shape.rows / 4 } else { shape.rows / 8 + shape.rows / 16 }).sum();
        let half = |bits: u16| half::f16::from_bits(bits).to_f32();
        let range = half(block.range_scales[lr]) * f32::from(block.range_codes[g * shape.rows + lr]);
        let min = half(block.mins[g * shape.rows + lr]);
        if shape.four_bit(c) {
            let q = (block.codes[start + lr / 4] >> (4 * (lr % 4))) & 15;
            crate::dequant(min, range / 15.0, q as u8)
        } else {
            let lo = (block.codes[start + lr / 8] >> (2 * (lr % 8))) & 3;
            let hi = (block.codes[start + shape.rows / 8 + lr / 16] >> (lr % 16)) & 1;
            crate::dequant(min, range / 7.0, (lo | hi << 2) as u8)
        }
    }

    #[test]
    fn blocks_decode_to_the_reference_weights() {
        for (kind, group, n, k, rows, cols) in [
            (QuantKind::Q35, GroupSize::G32, 40, 96, 16, 64),
            (QuantKind::Int4, GroupSize::G64, 33, 160, 32, 64),
            (QuantKind::Int3, GroupSize::G128, 17, 200, 16, 128),
            (QuantKind::Q35, GroupSize::Channel, 20, 70, 16, 32),
        ] {
            let weights: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * (1.0 + (i % k) as f32 / k as f32)).collect();
            let tensor = QuantizedTensor::quantize("w", n, k, &weights, kind, group).unwrap();
            let reference = tensor.dequantize();
            let shape = BlockShape::new(n, k, kind, group, rows, cols).unwrap();
            let blocks: Vec<Vec<Block>> = (0..shape.width()).map(|x| (0..shape.height()).map(|y| Block::pack(&tensor, &shape, x, y).unwrap()).collect()).collect();
            for r in 0..n {
                for c in 0..k {
                    assert_eq!(decode(&shape, &blocks, r, c).to_bits(), reference[r * k + c].to_bits(), "{kind} g{group} ({r}, {c})");
                }
            }
            for (x, column) in blocks.iter().enumerate() {
                for (y, block) in column.iter().enumerate() {
                    assert_eq!(block.codes.len(), shape.code_words(y), "({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn bad_splits_say_why() {
        assert!(BlockShape::new(64, 64, QuantKind::Q35, GroupSize::G32, 8, 32).unwrap_err().contains("multiple of 16"));
        assert!(BlockShape::new(64, 64, QuantKind::Q35, GroupSize::G32, 16, 48).unwrap_err().contains("group width 32"));
        assert!(BlockShape::new(64, 64, QuantKind::F16, GroupSize::G32, 16, 32).unwrap_err().contains("coded"));
    }
}
