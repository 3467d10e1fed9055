//! A coded matmul on the TSP, for `tokens` tokens: `y = W·x` with W's
//! 3.5-bit codes in SRAM, activations quantized to int8 per group (the CPU
//! integer path's scheme), int32 sums on the MXM, f32 scaling on the VXM.
//!
//! 1. `x` (f32, `tokens` rows) is read and quantized once: int8 codes per
//!    lane-wide tile of K, and per token a vector of per-group scalars,
//!    both written back to SRAM.
//! 2. Per weight tile (`lanes` rows × `lanes` columns), rigidly chained:
//!    MEM reads its packed codes, the VXM dequantizes them to int8 column
//!    vectors, an MXM plane installs them into one of its two weight
//!    buffers (so the next tile installs while this one multiplies).
//! 3. Per tile again, rigidly chained once its weights are in: MEM reads
//!    the tile's column of x codes, the MXM multiplies them, once per group
//!    segment of the tile; MEM reads the segments' range and min vectors,
//!    the tokens' scalars and the partial sums so far; the VXM accumulates;
//!    MEM writes the partial sums back. After the last K tile they are y.

use crate::schedule::{Input, Reservations, Step};
use q35_format::tsp::{
    tile::{pack_tile, packed_vectors, row_codes},
    Elem, Instr, Op, Segment, TspConfig, Unit,
};
use q35_format::{QuantKind, QuantizedTensor};

/// SRAM contents the program expects before it runs: (slice, row, bytes).
#[derive(Clone, Debug, Default)]
pub struct SramImage {
    pub entries: Vec<(usize, u32, Vec<u8>)>,
}

/// Rows handed out per MEM slice, bump-allocated; slices in turn.
pub struct Sram {
    next: Vec<u32>,
    capacity: u32,
    lanes: usize,
    turn: usize,
}

impl Sram {
    pub fn new(config: &TspConfig) -> Self {
        Sram {
            next: vec![0; config.mem_slices],
            capacity: config.rows_per_slice() as u32,
            lanes: config.lanes(),
            turn: 0,
        }
    }

    /// `rows` rows in the next slice in turn with room: (slice, first row).
    pub fn alloc(&mut self, rows: u32) -> Result<(usize, u32), String> {
        self.alloc_avoiding(rows, &[])
    }

    /// [`Self::alloc`] in a slice none of `busy` (data read at the same
    /// cycles must come from different slices).
    pub fn alloc_avoiding(&mut self, rows: u32, busy: &[usize]) -> Result<(usize, u32), String> {
        for _ in 0..self.next.len() {
            let slice = self.turn;
            self.turn = (self.turn + 1) % self.next.len();
            if !busy.contains(&slice) && self.next[slice] + rows <= self.capacity {
                let row = self.next[slice];
                self.next[slice] += rows;
                return Ok((slice, row));
            }
        }
        Err(format!("{rows} SRAM rows of {} bytes do not fit any MEM slice: the weights exceed one chip's SRAM", self.lanes))
    }

    /// Rows in use, all slices together.
    pub fn used_rows(&self) -> u64 {
        self.next.iter().map(|&r| r as u64).sum()
    }
}

/// Where a matmul's activations live: `x` (f32, `tokens` rows of K, token
/// by token, each row its lane-wide tiles) and `y` (f32, a vector per N
/// tile and token, tile by tile).
#[derive(Clone, Copy, Debug)]
pub struct Activations {
    pub x: (usize, u32),
    pub y: (usize, u32),
}

/// The group segments of K tile `kt`: lane ranges of the tile, each within
/// one group.
fn segments(k: usize, group_width: usize, lanes: usize, kt: usize) -> Vec<Segment> {
    let (k0, k1) = (kt * lanes, ((kt + 1) * lanes).min(k));
    let mut out = Vec::new();
    let mut at = k0;
    while at < k1 {
        let g = at / group_width;
        let end = ((g + 1) * group_width).min(k1);
        out.push(Segment { lo: (at - k0) as u16, hi: (end - k0) as u16, group: g as u16 });
        at = end;
    }
    out
}

/// Schedules `y = W·x` for `tokens` tokens after cycle `not_before`;
/// places the weight tiles, their parameters and the scratch it needs in
/// `sram` (their contents in `image`). Returns the instructions and the
/// cycle the last one ends.
#[allow(clippy::too_many_arguments)]
pub fn schedule(
    config: &TspConfig,
    weight: &QuantizedTensor,
    tokens: usize,
    at: Activations,
    sram: &mut Sram,
    image: &mut SramImage,
    reservations: &mut Reservations,
    not_before: u64,
) -> Result<(Vec<Instr>, u64), String> {
    let lanes = config.lanes();
    let (n, k, kind) = (weight.rows(), weight.cols(), weight.kind());
    if !kind.is_coded() {
        return Err(format!("`{}` is {kind}: the TSP target multiplies coded weights (q35, int4, int3)", weight.name()));
    }
    let group_width = weight.layout().group_width();
    let groups = weight.layout().groups();
    if 2 * groups > lanes {
        return Err(format!("`{}` has {groups} groups; a scalar vector holds {}", weight.name(), lanes / 2));
    }
    let (ntiles, ktiles) = (n.div_ceil(lanes), k.div_ceil(lanes));
    let t = tokens as u32;
    let d = &config.delays;
    let mut instrs = Vec::new();

    // 1. Quantize x once: codes tile-major, scalars per token.
    let x8 = sram.alloc_avoiding(t * ktiles as u32, &[at.x.0, at.y.0])?;
    let scalars = sram.alloc_avoiding(4 * t, &[at.x.0, at.y.0, x8.0])?;
    let xs = t * ktiles as u32;
    let quantize = [
        Step { unit: Unit::Mem(at.x.0 as u16), offset: 0, op: Op::Read { addr: at.x.1, stride: 0 }, inputs: vec![], outputs: vec![(Elem::F32, d.mem_read, xs)] },
        Step {
            unit: Unit::Vxm(0),
            offset: d.mem_read,
            op: Op::Quantize { group: group_width as u16, width: k as u16 },
            inputs: vec![Input { from: (0, 0), at: 0 }],
            outputs: vec![(Elem::I8, xs as u64 + d.vxm, xs), (Elem::F32, 2 * xs as u64 + d.vxm, t)],
        },
        Step { unit: Unit::Mem(x8.0 as u16), offset: d.mem_read + xs as u64 + d.vxm, op: Op::Write { addr: x8.1, stride: 0 }, inputs: vec![Input { from: (1, 0), at: 0 }], outputs: vec![] },
        Step { unit: Unit::Mem(scalars.0 as u16), offset: d.mem_read + 2 * xs as u64 + d.vxm, op: Op::Write { addr: scalars.1, stride: 0 }, inputs: vec![Input { from: (1, 1), at: 0 }], outputs: vec![] },
    ];
    instrs.extend(reservations.place(&quantize, not_before)?);
    let quantized = instrs.iter().map(Instr::end).max().unwrap_or(not_before);

    // Per (plane, buffer): when its last multiply ends, so the next
    // install into it waits for that.
    let mut buffer_free = vec![[0u64; 2]; config.mxm_planes];
    let codes: Vec<Vec<u8>> = (0..n).map(|r| row_codes(weight, r)).collect();
    let mut end = quantized;
    for nt in 0..ntiles {
        let mut partial_written = quantized;
        for kt in 0..ktiles {
            let tile = nt * ktiles + kt;
            let (plane, buffer) = (tile % config.mxm_planes, (tile / config.mxm_planes) % 2);
            let (k0, cols) = (kt * lanes, lanes.min(k - kt * lanes));
            let rows = &codes[nt * lanes..((nt + 1) * lanes).min(n)];
            let packed = pack_tile(kind, rows, k0, cols, lanes);
            debug_assert_eq!(packed.len(), packed_vectors(kind, k0, cols));
            let p = packed.len() as u32;
            let home = sram.alloc_avoiding(p, &[x8.0])?;
            image.entries.push((home.0, home.1, packed.concat()));

            // 2. Packed codes -> VXM dequant -> MXM install.
            let install = [
                Step { unit: Unit::Mem(home.0 as u16), offset: 0, op: Op::Read { addr: home.1, stride: 0 }, inputs: vec![], outputs: vec![(Elem::I8, d.mem_read, p)] },
                Step {
                    unit: Unit::Vxm(0),
                    offset: d.mem_read,
                    op: Op::Dequant { kind, cols: cols as u16 },
                    inputs: vec![Input { from: (0, 0), at: 0 }],
                    outputs: vec![(Elem::I8, p as u64 + d.vxm, cols as u32)],
                },
                Step {
                    unit: Unit::Mxm(plane as u16),
                    offset: d.mem_read + p as u64 + d.vxm,
                    op: Op::Install { buffer: buffer as u8 },
                    inputs: vec![Input { from: (1, 0), at: 0 }],
                    outputs: vec![],
                },
            ];
            let start = buffer_free[plane][buffer].saturating_sub(d.mem_read + p as u64 + d.vxm);
            let placed = reservations.place(&install, start.max(not_before))?;
            let installed = placed[2].end();
            instrs.extend(placed);

            // 3. x codes -> MXM multiply -> VXM accumulate -> MEM.
            let segments = segments(k, group_width, lanes, kt);
            let nseg = segments.len() as u32;
            let params = sram.alloc_avoiding(4 * 2 * nseg, &[scalars.0, at.y.0, x8.0])?;
            let mut param_bytes = Vec::new();
            for segment in &segments {
                let g = segment.group as usize;
                let first = k0 + segment.lo as usize == g * group_width;
                let (mut range, mut min) = (vec![0f32; lanes], vec![0f32; lanes]);
                for (j, r) in (nt * lanes..((nt + 1) * lanes).min(n)).enumerate() {
                    let p = weight.group_params(r, g).expect("coded");
                    range[j] = p.range;
                    // The group's min term once, with its first segment.
                    min[j] = if first { p.min } else { 0.0 };
                }
                param_bytes.extend(q35_rt_free_rows(&range));
                param_bytes.extend(q35_rt_free_rows(&min));
            }
            image.entries.push((params.0, params.1, param_bytes));
            let acc = (at.y.0, at.y.1 + 4 * t * nt as u32);
            let dots = t * nseg;
            let multiply_at = d.mem_read;
            let accumulate_at = multiply_at + t as u64 + d.mxm_multiply;
            let longest = dots.max(2 * nseg).max(t) as u64;
            let mut chain = vec![
                Step { unit: Unit::Mem(x8.0 as u16), offset: 0, op: Op::Read { addr: x8.1 + kt as u32 * t, stride: 0 }, inputs: vec![], outputs: vec![(Elem::I8, d.mem_read, t)] },
                Step {
                    unit: Unit::Mxm(plane as u16),
                    offset: multiply_at,
                    op: Op::Multiply { buffer: buffer as u8, segments: segments.clone() },
                    inputs: vec![Input { from: (0, 0), at: 0 }],
                    outputs: vec![(Elem::I32, t as u64 + d.mxm_multiply, dots)],
                },
                Step { unit: Unit::Mem(params.0 as u16), offset: accumulate_at - d.mem_read, op: Op::Read { addr: params.1, stride: 0 }, inputs: vec![], outputs: vec![(Elem::F32, d.mem_read, 2 * nseg)] },
                Step { unit: Unit::Mem(scalars.0 as u16), offset: accumulate_at - d.mem_read, op: Op::Read { addr: scalars.1, stride: 0 }, inputs: vec![], outputs: vec![(Elem::F32, d.mem_read, t)] },
            ];
            let mut inputs = vec![Input { from: (1, 0), at: 0 }, Input { from: (2, 0), at: 0 }, Input { from: (3, 0), at: 0 }];
            if kt > 0 {
                chain.push(Step { unit: Unit::Mem(acc.0 as u16), offset: accumulate_at - d.mem_read, op: Op::Read { addr: acc.1, stride: 0 }, inputs: vec![], outputs: vec![(Elem::F32, d.mem_read, t)] });
                inputs.push(Input { from: (4, 0), at: 0 });
            }
            let accumulate = chain.len();
            chain.push(Step {
                unit: Unit::Vxm(0),
                offset: accumulate_at,
                op: Op::Accumulate { segments, groups: groups as u16, first: kt == 0 },
                inputs,
                outputs: vec![(Elem::F32, longest + d.vxm, t)],
            });
            chain.push(Step {
                unit: Unit::Mem(acc.0 as u16),
                offset: accumulate_at + longest + d.vxm,
                op: Op::Write { addr: acc.1, stride: 0 },
                inputs: vec![Input { from: (accumulate, 0), at: 0 }],
                outputs: vec![],
            });
            // Weights in, and the previous partial sums written back.
            let start = installed.max(partial_written.saturating_sub(accumulate_at - d.mem_read));
            let placed = reservations.place(&chain, start)?;
            buffer_free[plane][buffer] = placed[1].end();
            partial_written = placed.last().map_or(start, Instr::end);
            end = end.max(partial_written);
            instrs.extend(placed);
        }
    }
    Ok((instrs, end))
}

/// An f32 vector as SRAM rows (four byte planes, as the simulator reads them).
fn q35_rt_free_rows(values: &[f32]) -> Vec<u8> {
    let lanes = values.len();
    let mut out = vec![0u8; 4 * lanes];
    for (l, v) in values.iter().enumerate() {
        for (b, byte) in v.to_bits().to_le_bytes().into_iter().enumerate() {
            out[b * lanes + l] = byte;
        }
    }
    out
}

/// Whether `kind` can be scheduled here.
pub fn supports(kind: QuantKind) -> bool {
    kind.is_coded()
}
