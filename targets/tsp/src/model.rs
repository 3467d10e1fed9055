//! A whole model's plan (`q35.plan`: buffers, dispatches and their kernel
//! specs, unfused) as one TSP program for `tokens` tokens a run: every
//! buffer gets its SRAM, every dispatch its chains, in plan order.
//!
//! - activations: `tokens` rows of f32 vectors, token by token;
//! - the KV caches: a row of f32 vectors per position, written by a
//!   scatter at the tokens' positions (data, so the schedule is the same
//!   at every position), read whole by attention, which masks by position;
//! - weights, placed where first used: a matmul's tiles and group
//!   parameters, the embedding's rows stored whole (gathered by token id),
//!   a norm's gain as f32 vectors.

use crate::matmul::{self, Activations, Matrix, Placed, Planes, Sram};
use crate::rows::{self, Sink, Source};
use crate::schedule::Reservations;
use q35_format::tsp::{tile, Elem, Form, Instr, Io, Op, Program, RowFunction, TspConfig};
use q35_target::{Epilogue, KernelSpec, Plan, RowOp};
use std::collections::HashMap;

/// The programs for `plan` on `config`, one per entry of `tokens` (tokens
/// a run), sharing the weights and the KV caches in SRAM; each has its own
/// activations.
pub fn lower_all(config: &TspConfig, plan: &Plan, tokens: &[u32]) -> Result<Vec<Program>, String> {
    lower_measured(config, plan, tokens).map(|(programs, _)| programs)
}

/// [`lower_all`], and the SRAM rows the programs take, all slices together.
pub fn lower_measured(config: &TspConfig, plan: &Plan, tokens: &[u32]) -> Result<(Vec<Program>, u64), String> {
    let mut memory = Memory { sram: Sram::new(config), placed: Placed::default(), shared: HashMap::new() };
    let programs = tokens.iter().map(|&t| lower(config, plan, t, &mut memory)).collect::<Result<Vec<_>, _>>()?;
    // Every program lists every placement (the loader puts each once).
    let placements = memory.placed.placements;
    let rows = memory.sram.used_rows();
    Ok((programs.into_iter().map(|p| Program { placements: placements.clone(), ..p }).collect(), rows))
}

/// Each KV cache's row width, from the kv_update that writes it.
pub fn kv_widths(plan: &Plan) -> HashMap<&str, usize> {
    let mut widths = HashMap::new();
    for d in &plan.dispatches {
        if let Some(KernelSpec::KvUpdate(s)) = plan.kernels.get(&d.kernel) {
            for cache in d.buffers.get(2..4).unwrap_or_default() {
                widths.insert(cache.as_str(), s.num_kv_heads * s.head_dim);
            }
        }
    }
    widths
}

/// How many of a dispatch's buffers (the last ones) it writes.
pub fn written_buffers(spec: Option<&KernelSpec>) -> usize {
    if matches!(spec, Some(KernelSpec::KvUpdate(_))) { 2 } else { 1 }
}

/// What the programs of one model share: SRAM, the weights placed in it,
/// the KV caches and the index vectors.
struct Memory {
    sram: Sram,
    placed: Placed,
    shared: HashMap<String, (usize, u32)>,
}

/// The program for `plan` on `config`, `tokens` tokens a run.
fn lower(config: &TspConfig, plan: &Plan, tokens: u32, memory: &mut Memory) -> Result<Program, String> {
    let Memory { sram, placed, shared } = memory;
    let lanes = config.lanes();
    if tokens == 0 || tokens as usize > lanes {
        return Err(format!("{tokens} tokens a run: a position vector holds 1 to {lanes}"));
    }
    let tiles = |width: usize| width.div_ceil(lanes) as u32;
    let kv_width = kv_widths(plan);
    let mut at: HashMap<String, (usize, u32)> = HashMap::new();
    let mut io = Vec::new();
    for b in &plan.buffers {
        let rows = match b.role.as_str() {
            "input" => 4,
            "activation" | "output" => 4 * tokens * tiles(b.width),
            "kv_cache" => {
                let width = *kv_width.get(b.name.as_str()).ok_or_else(|| format!("KV cache `{}` has no kv_update", b.name))?;
                4 * tiles(width) * (b.width / width) as u32
            }
            _ => continue,
        };
        // The caches and the index vectors (which hold up to a lane per
        // token at any token count) are the same for every program.
        let place = match (b.role.as_str(), shared.get(&b.name)) {
            ("kv_cache" | "input", Some(&shared)) => shared,
            // Token ids and positions are index vectors a gather or scatter
            // reads on the cycle it issues: a slice of their own, so no
            // table or cache shares the slice with them.
            ("input", _) => {
                let place = (sram.alloc_span(rows)?.0, 0);
                shared.insert(b.name.clone(), place);
                place
            }
            (role, _) => {
                let place = sram.alloc(rows)?;
                if role == "kv_cache" {
                    shared.insert(b.name.clone(), place);
                }
                place
            }
        };
        match b.role.as_str() {
            "input" => io.push(Io { name: b.name.clone(), slice: place.0 as u16, row: place.1, width: 1 }),
            "output" => io.push(Io { name: "logits".into(), slice: place.0 as u16, row: place.1, width: b.width as u32 }),
            _ => {}
        }
        // Every activation, so a run can be watched dispatch by dispatch.
        if matches!(b.role.as_str(), "activation" | "output") {
            io.push(Io { name: b.name.clone(), slice: place.0 as u16, row: place.1, width: b.width as u32 });
        }
        at.insert(b.name.clone(), place);
    }
    let find = |name: &str| at.get(name).copied().ok_or_else(|| format!("buffer `{name}` has no SRAM"));
    let mut reservations = Reservations::new(config);
    let mut instrs: Vec<Instr> = Vec::new();
    let mut planes = Planes::new(config);
    // Per buffer: when its last write ends (what reads it waits for), and
    // when its last use ends (what overwrites it waits for).
    let mut written: HashMap<&str, u64> = HashMap::new();
    let mut used: HashMap<&str, u64> = HashMap::new();
    let f32_rows = |slice: usize, addr: u32, len: u32| Source::Rows { slice, addr, stride: 0, elem: Elem::F32, len };
    let positions = find("positions")?;
    let position_source = Source::Rows { slice: positions.0, addr: positions.1, stride: 0, elem: Elem::I32, len: 1 };
    let mut dispatches = Vec::with_capacity(plan.dispatches.len());
    for d in &plan.dispatches {
        dispatches.push(instrs.len());
        // A dispatch starts when its inputs are written and what it
        // writes is no longer read: dispatches overlap where they can.
        let writes = written_buffers(plan.kernels.get(&d.kernel));
        let (reads, outs) = d.buffers.split_at(d.buffers.len().saturating_sub(writes));
        let start = reads.iter().filter_map(|b| written.get(b.as_str())).chain(outs.iter().filter_map(|b| used.get(b.as_str()))).copied().max().unwrap_or(0);
        let first = instrs.len();
        let mut end = start;
        let spec = plan.kernels.get(&d.kernel).ok_or_else(|| format!("dispatch of `{}`, which the plan does not describe", d.kernel))?;
        let buffer = |i: usize| -> Result<(usize, u32), String> { find(d.buffers.get(i).ok_or_else(|| format!("`{}` binds too few buffers", d.kernel))?) };
        let row_op = |op: Op, sources: &[Source], width: usize, sink: Sink, reservations: &mut Reservations, end: &mut u64, instrs: &mut Vec<Instr>| -> Result<(), String> {
            let placed = rows::place(config, reservations, op, sources, (Elem::F32, tokens * tiles(width)), sink, *end)?;
            *end = placed.iter().map(Instr::end).max().unwrap_or(*end).max(*end);
            instrs.extend(placed);
            Ok(())
        };
        let out_sink = |i: usize| -> Result<Sink, String> {
            let (slice, addr) = buffer(i)?;
            Ok(Sink::Rows { slice, addr, stride: 0 })
        };
        match *spec {
            KernelSpec::Matmul(shape) => {
                if shape.epilogue != Epilogue::None || shape.int8_activations {
                    return Err(format!("`{}`: the TSP target takes unfused f32-activation plans", d.kernel));
                }
                let matrix = Matrix { name: d.buffers[1].clone(), rows: shape.n, cols: shape.k, kind: shape.quant, group: shape.group };
                let activations = Activations { x: buffer(0)?, y: buffer(2)? };
                let (placed, done) = matmul::schedule(config, &matrix, tokens as usize, activations, sram, placed, &mut reservations, &mut planes, start)?;
                end = end.max(done);
                instrs.extend(placed);
            }
            KernelSpec::Embedding(shape) => {
                if !shape.quant.is_coded() {
                    return Err(format!("`{}` is {}: the TSP target reads coded embedding tables", d.buffers[1], shape.quant));
                }
                let per = tile::row_bytes(shape.quant, shape.group, shape.k).div_ceil(lanes) as u32;
                // Striped over whole slices (one cannot hold SmolLM2's).
                let table = placed
                    .get_or_place_span(sram, &d.buffers[1], Form::Rows { stride: per }, per * shape.n as u32)
                    .map_err(|e| format!("the embedding table `{}`: {e}", d.buffers[1]))?;
                let ids = buffer(0)?;
                let group = shape.group.fixed().unwrap_or(shape.k) as u16;
                row_op(
                    Op::RowDequant { kind: shape.quant, group, width: shape.k as u32, per: per as u16 },
                    &[Source::Gathered { index: ids, slice: table.0, slices: table.1 as u16, addr: 0, stride: per, per: per as u16, elem: Elem::I8, items: tokens }],
                    shape.k,
                    out_sink(2)?,
                    &mut reservations,
                    &mut end,
                    &mut instrs,
                )?;
            }
            KernelSpec::Row { op, width, linalg: false } => {
                let x = buffer(0)?;
                let rows_x = f32_rows(x.0, x.1, tokens * tiles(width));
                match op {
                    RowOp::RmsNorm { epsilon } => {
                        let gain = placed.get_or_place(sram, &d.buffers[1], Form::Vector, 4 * tiles(width))?;
                        row_op(Op::Norm { width: width as u32, eps: epsilon }, &[rows_x, f32_rows(gain.0, gain.1, tiles(width))], width, out_sink(2)?, &mut reservations, &mut end, &mut instrs)?;
                    }
                    RowOp::Silu => row_op(Op::Elementwise { function: RowFunction::Silu, width: width as u32 }, &[rows_x], width, out_sink(1)?, &mut reservations, &mut end, &mut instrs)?,
                    RowOp::Add | RowOp::Mul | RowOp::SwiGlu => {
                        let function = match op {
                            RowOp::Add => RowFunction::Add,
                            RowOp::Mul => RowFunction::Mul,
                            _ => RowFunction::SwiGlu,
                        };
                        let y = buffer(1)?;
                        row_op(Op::Elementwise { function, width: width as u32 }, &[rows_x, f32_rows(y.0, y.1, tokens * tiles(width))], width, out_sink(2)?, &mut reservations, &mut end, &mut instrs)?;
                    }
                }
            }
            KernelSpec::Rope { width, head_dim, theta, linalg: false } => {
                let x = buffer(0)?;
                row_op(
                    Op::Rope { width: width as u32, head_dim: head_dim as u32, theta },
                    &[f32_rows(x.0, x.1, tokens * tiles(width)), position_source],
                    width,
                    out_sink(2)?,
                    &mut reservations,
                    &mut end,
                    &mut instrs,
                )?;
            }
            KernelSpec::KvUpdate(s) => {
                let kv = s.num_kv_heads * s.head_dim;
                let per = tiles(kv);
                for (row, cache) in [(0, 2), (1, 3)] {
                    let x = buffer(row)?;
                    let c = buffer(cache)?;
                    row_op(
                        Op::Elementwise { function: RowFunction::Copy, width: kv as u32 },
                        &[f32_rows(x.0, x.1, tokens * per)],
                        kv,
                        Sink::Scattered { index: positions, slice: c.0, addr: c.1, stride: 4 * per, per: per as u16 },
                        &mut reservations,
                        &mut end,
                        &mut instrs,
                    )?;
                }
            }
            KernelSpec::Attention { shape: s, linalg: false } => {
                let (q, kc, vc) = (buffer(0)?, buffer(1)?, buffer(2)?);
                let (qw, kvw) = (s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim);
                let cached = s.context as u32 * tiles(kvw);
                row_op(
                    Op::Attention { heads: s.num_heads as u16, kv_heads: s.num_kv_heads as u16, head_dim: s.head_dim as u16, context: s.context as u32 },
                    &[f32_rows(q.0, q.1, tokens * tiles(qw)), f32_rows(kc.0, kc.1, cached), f32_rows(vc.0, vc.1, cached), position_source],
                    qw,
                    out_sink(3)?,
                    &mut reservations,
                    &mut end,
                    &mut instrs,
                )?;
            }
            _ => return Err(format!("`{}`: the TSP target has no lowering for it (linalg kernels and the CPU's integer path are CPU options)", d.kernel)),
        }
        let done = instrs[first..].iter().map(Instr::end).max().unwrap_or(start).max(end);
        for b in outs {
            written.insert(b.as_str(), done);
        }
        for b in d.buffers.iter() {
            let entry = used.entry(b.as_str()).or_insert(0);
            *entry = (*entry).max(done);
        }
    }
    Ok(Program {
        lanes,
        config: Some(config.to_json()),
        placements: Vec::new(),
        io,
        tokens,
        instrs,
        dispatches,
    })
}
