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
    scalar_vectors,
    tile::{packed_vectors, segments},
    Elem, Form, Instr, Op, Placement, TspConfig, Unit,
};
use q35_format::{GroupSize, Layout, QuantKind};

/// What the schedule needs of a coded weight: its shape and format.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub kind: QuantKind,
    pub group: GroupSize,
}

/// Weights already in SRAM (a model's programs share them) and what the
/// loader must put there.
#[derive(Default)]
pub struct Placed {
    at: std::collections::HashMap<String, (usize, u32)>,
    pub placements: Vec<Placement>,
}

impl Placed {
    /// Where `weight`'s `form` is, placing it (`rows` rows) if it is not yet.
    pub fn get_or_place(&mut self, sram: &mut Sram, weight: &str, form: Form, rows: u32) -> Result<(usize, u32), String> {
        let key = format!("{weight}/{form:?}");
        if let Some(&at) = self.at.get(&key) {
            return Ok(at);
        }
        let at = sram.alloc(rows)?;
        self.placements.push(Placement { weight: weight.to_string(), slice: at.0 as u16, row: at.1, form });
        self.at.insert(key, at);
        Ok(at)
    }

    /// As [`Self::get_or_place`], for a table striped over whole slices:
    /// (first slice, slices).
    pub fn get_or_place_span(&mut self, sram: &mut Sram, weight: &str, form: Form, rows: u32) -> Result<(usize, u32), String> {
        let key = format!("{weight}/{form:?}");
        if let Some(&at) = self.at.get(&key) {
            return Ok(at);
        }
        let (first, count) = sram.alloc_span(rows)?;
        self.placements.push(Placement { weight: weight.to_string(), slice: first as u16, row: 0, form });
        self.at.insert(key, (first, count as u32));
        Ok((first, count as u32))
    }
}

/// The MXM planes' weight buffers across a program's matmuls: when each
/// (plane, buffer)'s last multiply ends, and the next tile's turn.
pub struct Planes {
    free: Vec<[u64; 2]>,
    next: usize,
}

impl Planes {
    pub fn new(config: &TspConfig) -> Self {
        Planes { free: vec![[0; 2]; config.mxm_planes], next: 0 }
    }
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
        Err(format!("{rows} SRAM rows of {} bytes do not fit any MEM slice ({} rows each, the chip's SRAM is full there): a smaller --context, or a description with more SRAM a chip", self.lanes, self.capacity))
    }

    /// `rows` rows striped over whole free slices in a row, for a table too
    /// big for one: (first slice, how many). Nothing else is placed in them.
    pub fn alloc_span(&mut self, rows: u32) -> Result<(usize, usize), String> {
        let count = rows.div_ceil(self.capacity) as usize;
        let free = |s: usize, next: &[u32]| next[s..s + count].iter().all(|&r| r == 0);
        let first = (0..=self.next.len().saturating_sub(count))
            .find(|&s| free(s, &self.next))
            .ok_or_else(|| format!("{rows} SRAM rows need {count} whole MEM slices in a row, and the chip has no such run free"))?;
        for next in &mut self.next[first..first + count] {
            *next = self.capacity;
        }
        Ok((first, count))
    }

    /// Rows in use, all slices together.
    pub fn used_rows(&self) -> u64 {
        self.next.iter().map(|&r| r as u64).sum()
    }
}

/// Where a matmul's activations live: `x` (f32, `tokens` rows of K) and
/// `y` (f32, `tokens` rows of N), each row its lane-wide vectors, token by
/// token, or y striped.
#[derive(Clone, Copy, Debug)]
pub struct Activations {
    pub x: (usize, u32),
    pub y: (usize, u32),
    /// 0: y token by token (as x). Otherwise tile by tile, each tile's
    /// tokens in a row, this many tiles a slice, over whole slices from
    /// `y`'s (logits too wide for one slice: `Io::striped`).
    pub y_striped: u32,
}

/// Schedules `y = W·x` for `tokens` tokens after cycle `not_before`;
/// places the weight tiles, their parameters and the scratch it needs in
/// `sram` (what the loader puts there in `placements`). Returns the
/// instructions and the cycle the last one ends.
#[allow(clippy::too_many_arguments)]
pub fn schedule(
    config: &TspConfig,
    weight: &Matrix,
    tokens: usize,
    at: Activations,
    sram: &mut Sram,
    placed: &mut Placed,
    reservations: &mut Reservations,
    planes: &mut Planes,
    not_before: u64,
) -> Result<(Vec<Instr>, u64), String> {
    let lanes = config.lanes();
    let (n, k, kind) = (weight.rows, weight.cols, weight.kind);
    if !kind.is_coded() {
        return Err(format!("`{}` is {kind}: the TSP target multiplies coded weights (q35, int4, int3)", weight.name));
    }
    let layout = Layout::new(kind, weight.group, k);
    let (group_width, groups) = (layout.group_width(), layout.groups());
    // A token's scalars take a vector per lanes / 2 groups; a K tile's
    // groups must lie in one of them.
    let (half, sv) = (lanes / 2, scalar_vectors(lanes, groups));
    if sv > 1 && (half * group_width) % lanes != 0 {
        return Err(format!("`{}`: {groups} groups of {group_width} columns straddle its scalar vectors of {half} groups", weight.name));
    }
    let (ntiles, ktiles) = (n.div_ceil(lanes), k.div_ceil(lanes));
    let t = tokens as u32;
    let d = &config.delays;
    let mut instrs = Vec::new();

    // 1. Quantize x once: codes tile-major, scalars per token.
    let x8 = sram.alloc_avoiding(t * ktiles as u32, &[at.x.0, at.y.0])?;
    let scalars = sram.alloc_avoiding(4 * t * sv as u32, &[at.x.0, at.y.0, x8.0])?;
    let xs = t * ktiles as u32;
    let quantize = [
        Step { unit: Unit::Mem(at.x.0 as u16), offset: 0, op: Op::Read { addr: at.x.1, stride: 0 }, inputs: vec![], outputs: vec![(Elem::F32, d.mem_read, xs)] },
        Step {
            unit: Unit::Vxm(0),
            offset: d.mem_read,
            op: Op::Quantize { group: group_width as u16, width: k as u16 },
            inputs: vec![Input { from: (0, 0), at: 0 }],
            outputs: vec![(Elem::I8, xs as u64 + d.vxm, xs), (Elem::F32, 2 * xs as u64 + d.vxm, t * sv as u32)],
        },
        Step { unit: Unit::Mem(x8.0 as u16), offset: d.mem_read + xs as u64 + d.vxm, op: Op::Write { addr: x8.1, stride: 0 }, inputs: vec![Input { from: (1, 0), at: 0 }], outputs: vec![] },
        Step { unit: Unit::Mem(scalars.0 as u16), offset: d.mem_read + 2 * xs as u64 + d.vxm, op: Op::Write { addr: scalars.1, stride: 0 }, inputs: vec![Input { from: (1, 1), at: 0 }], outputs: vec![] },
    ];
    instrs.extend(reservations.place(&quantize, not_before)?);
    let quantized = instrs.iter().map(Instr::end).max().unwrap_or(not_before);

    // Per (plane, buffer): when its last multiply ends, so the next
    // install into it waits for that.
    let mut end = quantized;
    for nt in 0..ntiles {
        let mut partial_written = quantized;
        for kt in 0..ktiles {
            let tile = nt * ktiles + kt;
            // Planes and buffers in turn across the program's matmuls.
            let turn = planes.next + tile;
            let (plane, buffer) = (turn % config.mxm_planes, (turn / config.mxm_planes) % 2);
            let (k0, cols) = (kt * lanes, lanes.min(k - kt * lanes));
            let p = packed_vectors(kind, k0, cols) as u32;
            let (n0, tile) = ((nt * lanes) as u32, (k0 as u32, cols as u32));
            let home = placed.get_or_place(sram, &weight.name, Form::Tile { n0, k0: tile.0, cols: tile.1 }, p)?;

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
            // Weights need no activation: they install as soon as the
            // buffer's last multiply is done, overlapping earlier work.
            let start = planes.free[plane][buffer].saturating_sub(d.mem_read + p as u64 + d.vxm);
            let chain = reservations.place(&install, start)?;
            let installed = chain[2].end();
            instrs.extend(chain);

            // 3. x codes -> MXM multiply -> VXM accumulate -> MEM.
            let segments = segments(group_width, k0, cols);
            let nseg = segments.len() as u32;
            let params = placed.get_or_place(sram, &weight.name, Form::Params { n0, k0: tile.0, cols: tile.1 }, 4 * 2 * nseg)?;
            // Tile nt of every token's row of y: 4 rows a vector, rows
            // of ntiles vectors.
            let (acc, stride) = match at.y_striped as usize {
                0 => ((at.y.0, at.y.1 + 4 * nt as u32), 4 * ntiles as u32),
                per => ((at.y.0 + nt / per, at.y.1 + 4 * ((nt % per) as u32) * t), 0),
            };
            let dots = t * nseg;
            let multiply_at = d.mem_read;
            // The accumulate takes the dots as they leave the MXM; its other
            // operands are read in time for it, one MEM slice's reads
            // after another's (a chain's uses of a slice never overlap).
            let accumulate_at = multiply_at + t as u64 + d.mxm_multiply;
            let mut free: Vec<(usize, u64)> = vec![(x8.0, d.mem_read + t as u64)];
            let mut read_at = |slice: usize, len: u32| -> u64 {
                let busy = free.iter().find(|(s, _)| *s == slice).map_or(0, |&(_, f)| f);
                let at = busy.max(accumulate_at - d.mem_read);
                match free.iter_mut().find(|(s, _)| *s == slice) {
                    Some(entry) => entry.1 = at + d.mem_read + len as u64,
                    None => free.push((slice, at + d.mem_read + len as u64)),
                }
                at
            };
            let params_at = read_at(params.0, 2 * nseg);
            let scalars_at = read_at(scalars.0, t);
            let acc_at = (kt > 0).then(|| read_at(acc.0, t));
            let mut chain = vec![
                Step { unit: Unit::Mem(x8.0 as u16), offset: 0, op: Op::Read { addr: x8.1 + kt as u32 * t, stride: 0 }, inputs: vec![], outputs: vec![(Elem::I8, d.mem_read, t)] },
                Step {
                    unit: Unit::Mxm(plane as u16),
                    offset: multiply_at,
                    op: Op::Multiply { buffer: buffer as u8, segments: segments.clone() },
                    inputs: vec![Input { from: (0, 0), at: 0 }],
                    outputs: vec![(Elem::I32, t as u64 + d.mxm_multiply, dots)],
                },
                Step { unit: Unit::Mem(params.0 as u16), offset: params_at, op: Op::Read { addr: params.1, stride: 0 }, inputs: vec![], outputs: vec![(Elem::F32, d.mem_read, 2 * nseg)] },
                // Each token's scalar vector that holds this tile's groups.
                Step {
                    unit: Unit::Mem(scalars.0 as u16),
                    offset: scalars_at,
                    op: Op::Read { addr: scalars.1 + 4 * (k0 / group_width / half) as u32, stride: if sv > 1 { 4 * sv as u32 } else { 0 } },
                    inputs: vec![],
                    outputs: vec![(Elem::F32, d.mem_read, t)],
                },
            ];
            let arrive = |read: u64| read + d.mem_read - accumulate_at;
            let mut inputs = vec![
                Input { from: (1, 0), at: 0 },
                Input { from: (2, 0), at: arrive(params_at) },
                Input { from: (3, 0), at: arrive(scalars_at) },
            ];
            let mut last = (dots as u64).max(arrive(params_at) + 2 * nseg as u64).max(arrive(scalars_at) + t as u64);
            if let Some(acc_read) = acc_at {
                chain.push(Step { unit: Unit::Mem(acc.0 as u16), offset: acc_read, op: Op::Read { addr: acc.1, stride }, inputs: vec![], outputs: vec![(Elem::F32, d.mem_read, t)] });
                inputs.push(Input { from: (4, 0), at: arrive(acc_read) });
                last = last.max(arrive(acc_read) + t as u64);
            }
            // The write back waits for the slice's reads in this chain.
            let write_free = free.iter().find(|(s, _)| *s == acc.0).map_or(0, |&(_, f)| f);
            let out_at = (last + d.vxm).max(write_free.saturating_sub(accumulate_at));
            let accumulate = chain.len();
            chain.push(Step {
                unit: Unit::Vxm(0),
                offset: accumulate_at,
                op: Op::Accumulate { segments, groups: groups as u16, first: kt == 0 },
                inputs,
                outputs: vec![(Elem::F32, out_at, t)],
            });
            chain.push(Step {
                unit: Unit::Mem(acc.0 as u16),
                offset: accumulate_at + out_at,
                op: Op::Write { addr: acc.1, stride },
                inputs: vec![Input { from: (accumulate, 0), at: 0 }],
                outputs: vec![],
            });
            // Weights in, and the previous partial sums written back
            // before they are read.
            let start = installed.max(partial_written.saturating_sub(acc_at.unwrap_or(0)));
            let chain = reservations.place(&chain, start)?;
            planes.free[plane][buffer] = chain[1].end();
            partial_written = chain.last().map_or(start, Instr::end);
            end = end.max(partial_written);
            instrs.extend(chain);
        }
    }
    planes.next += ntiles * ktiles;
    Ok((instrs, end))
}
