//! How each dequant-matmul is split over PEs, and what one split costs:
//! the SRAM its PEs declare and the cycles a token takes through it.
//!
//! One block size serves every matrix of a model (rows per PE, groups per
//! PE; a matrix narrower than the block takes its whole K), so the model
//! is a handful of rectangle shapes. The cycle figures count the emitted
//! program's operations as q35-rt's simulator charges them (every scalar
//! operation `scalar_op_cycles`, every DSD element
//! `dsd_cycles_per_element`), plus the fabric's hops; a test checks them
//! against the simulator.

use q35_format::csl::{BlockShape, CslConfig};
use q35_format::{GroupSize, QuantKind};

/// Rows per PE (multiples of 16) and groups per PE the planner tries.
pub fn row_choices() -> impl Iterator<Item = usize> {
    (16..=512).step_by(16)
}

pub fn group_choices() -> impl Iterator<Item = usize> {
    1..=16
}

/// A block size: rows per PE, and groups per PE (per-channel matrices
/// take `groups × 128` columns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSize {
    pub rows: usize,
    pub groups: usize,
}

impl BlockSize {
    /// `n × k`'s split at this size.
    pub fn shape(&self, n: usize, k: usize, kind: QuantKind, group: GroupSize) -> Result<BlockShape, String> {
        let width = group.fixed().unwrap_or(128).min(k.max(1));
        let cols = (self.groups * width).min(k.next_multiple_of(width));
        // A narrow matrix takes no more rows per PE than it has.
        let rows = self.rows.min(n.next_multiple_of(q35_format::csl::block::ROW_QUANTUM));
        BlockShape::new(n, k, kind, group, rows, cols)
    }
}

/// Cycles the emitted program's `matvec` task takes on a PE of row `y`
/// (the operation counts of `emit::pe_program`, as the simulator charges
/// them).
pub fn matvec_cycles(config: &CslConfig, shape: &BlockShape, y: usize) -> u64 {
    let s = config.scalar_op_cycles;
    let rows = shape.rows as u64;
    let local = shape.local_groups(y);
    let cols = shape.span(y).len();
    let steps_per_row = match shape.kind {
        QuantKind::Q35 => 13,
        _ => 11,
    };
    let mut ops = 0u64;
    // Per group: its loop test, `base`, the call, the steps, `n`.
    ops += local.groups as u64 * (2 + 1 + 1 + (2 + rows * steps_per_row) + 3 + 1);
    for c in 0..cols {
        let four = shape.four_bit(c);
        let column = if four { 18 } else { 28 } * rows + 2;
        let parity = if shape.kind == QuantKind::Q35 { 3 } else { 0 };
        let advance = if four { 2 } else { 4 };
        // Loop test, parity, call, column, advance, fmacs' issue and x[c], c and j.
        ops += 2 + parity + 1 + column + advance + 2 + 2;
    }
    ops * s + cols as u64 * rows * config.dsd_cycles_per_element
}

/// Cycles from the launch until the bottom PEs hold the sums: the
/// activations' broadcast, the slowest PE row's matvec, and the partial
/// sums' walk down the PE columns (each PE adds what arrives, then sends).
pub fn matmul_cycles(config: &CslConfig, shape: &BlockShape) -> u64 {
    let (width, height) = (shape.width() as u64, shape.height() as u64);
    let ramp = 2 * config.ramp_cycles;
    let switch = config.task_switch_cycles;
    let broadcast = switch + 8 + shape.cols as u64 + ramp + width * config.hop_cycles;
    let matvec = (0..shape.height()).map(|y| matvec_cycles(config, shape, y)).max().unwrap_or(0);
    let rows = shape.rows as u64;
    let step = rows * config.dsd_cycles_per_element + ramp + config.hop_cycles + 2 * switch + 8;
    broadcast + switch + matvec + height * step
}
