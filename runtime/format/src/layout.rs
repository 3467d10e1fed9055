//! Where each group's block sits inside a row, so kernels and the compiler can
//! index packed codes without a tensor at hand.

use std::ops::Range;

use crate::{planes_bytes, GroupSize, QuantKind};

/// The byte layout of one row of a tensor with `cols` weights.
///
/// For coded kinds a row is its groups' blocks back to back; every group but
/// the last is `group_width` wide, so block `g` starts at
/// `g * block_len(0)`. For f16/f32 there are no groups (`groups() == 0`) and
/// `row_bytes` is the row's raw data.
///
/// Group indices passed to the methods must be below [`Layout::groups`].
///
/// Sizes saturate at `usize::MAX` instead of overflowing; no real buffer is
/// that long, so a saturated size can never match one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    kind: QuantKind,
    group: GroupSize,
    cols: usize,
    width: usize,
    groups: usize,
    full_block: usize,
    row_bytes: usize,
}

impl Layout {
    /// The layout of a row of `cols` weights of `kind`, grouped by `group`.
    pub fn new(kind: QuantKind, group: GroupSize, cols: usize) -> Self {
        let width = group.width(cols);
        let block = |n| {
            kind.code_counts(n)
                .map_or(0, |(n4, n3)| planes_bytes(n4, n3))
        };
        let (groups, row_bytes) = match kind {
            QuantKind::F16 => (0, cols.saturating_mul(2)),
            QuantKind::F32 => (0, cols.saturating_mul(4)),
            _ if cols == 0 => (0, 0),
            _ => {
                let groups = cols.div_ceil(width);
                let tail = cols - (groups - 1) * width;
                (groups, (groups - 1) * block(width) + block(tail))
            }
        };
        Layout {
            kind,
            group,
            cols,
            width,
            groups,
            full_block: if groups > 1 { block(width) } else { row_bytes },
            row_bytes,
        }
    }

    pub fn kind(&self) -> QuantKind {
        self.kind
    }

    pub fn group(&self) -> GroupSize {
        self.group
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of groups per row (`ceil(cols / G)`); 0 for f16/f32.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// The nominal group width G (`cols` for per-channel groups).
    pub fn group_width(&self) -> usize {
        self.width
    }

    /// The columns group `g` covers: `g*G .. min((g+1)*G, cols)`.
    pub fn group_cols(&self, g: usize) -> Range<usize> {
        debug_assert!(g < self.groups);
        let start = g * self.width;
        start..(start + self.width).min(self.cols)
    }

    /// Byte offset of group `g`'s block inside a row.
    pub fn block_offset(&self, g: usize) -> usize {
        debug_assert!(g < self.groups);
        g * self.full_block
    }

    /// Bytes of group `g`'s block (only the last group may be shorter).
    pub fn block_len(&self, g: usize) -> usize {
        if g + 1 < self.groups {
            self.full_block
        } else {
            self.row_bytes - self.block_offset(g)
        }
    }

    /// The byte range of group `g`'s block inside a row.
    pub fn block_range(&self, g: usize) -> Range<usize> {
        let start = self.block_offset(g);
        start..start + self.block_len(g)
    }

    /// Bytes of one row's codes (or raw data for f16/f32).
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Parameter bytes per row: one f16 range scale, and per group an f16 min
    /// and a u8 range code. 0 for f16/f32.
    pub fn param_bytes_per_row(&self) -> usize {
        if self.groups == 0 {
            0
        } else {
            2 + 3 * self.groups
        }
    }

    /// True bits per weight, parameters included:
    /// `8 * (row_bytes + 2 + 3 * groups) / cols`. Rows are alike, so this is
    /// also the whole tensor's figure.
    pub fn bits_per_weight(&self) -> f64 {
        let bytes = self.row_bytes.saturating_add(self.param_bytes_per_row());
        8.0 * bytes as f64 / self.cols as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_bytes;

    #[test]
    fn smollm2_rows() {
        let l = Layout::new(QuantKind::Q35, GroupSize::G128, 576);
        assert_eq!(l.groups(), 5);
        assert_eq!(l.group_cols(4), 512..576);
        assert_eq!(l.block_range(3), 168..224);
        assert_eq!(l.block_range(4), 224..252);
        assert_eq!(l.row_bytes(), 252); // 576 * 3.5 / 8
        assert_eq!(l.param_bytes_per_row(), 17);
        assert!((l.bits_per_weight() - (3.5 + (5.0 * 24.0 + 16.0) / 576.0)).abs() < 1e-12);
        let l = Layout::new(QuantKind::Q35, GroupSize::G128, 1536);
        assert!((l.bits_per_weight() - (3.5 + (12.0 * 24.0 + 16.0) / 1536.0)).abs() < 1e-12);
        assert_eq!(format!("{:.3}", l.bits_per_weight()), "3.698");
    }

    #[test]
    fn tails_and_small_rows() {
        let l = Layout::new(QuantKind::Q35, GroupSize::G32, 71);
        assert_eq!(l.groups(), 3);
        assert_eq!(l.group_cols(2), 64..71);
        assert_eq!(l.row_bytes(), 2 * block_bytes(32) + block_bytes(7));
        assert_eq!(l.block_len(2), block_bytes(7));
        let l = Layout::new(QuantKind::Q35, GroupSize::G256, 5);
        assert_eq!(
            (l.groups(), l.row_bytes(), l.block_len(0)),
            (1, block_bytes(5), block_bytes(5))
        );
        let l = Layout::new(QuantKind::Q35, GroupSize::Channel, 49153);
        assert_eq!((l.groups(), l.row_bytes()), (1, block_bytes(49153)));
        let l = Layout::new(QuantKind::Int4, GroupSize::G64, 65);
        assert_eq!(l.row_bytes(), 32 + 1);
        let l = Layout::new(QuantKind::Int3, GroupSize::G64, 65);
        assert_eq!(l.row_bytes(), (16 + 8) + (1 + 1));
        let l = Layout::new(QuantKind::F16, GroupSize::G64, 65);
        assert_eq!(
            (l.groups(), l.row_bytes(), l.bits_per_weight()),
            (0, 130, 16.0)
        );
    }
}
