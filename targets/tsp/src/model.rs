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
//!
//! A plan too big for one chip is cut into runs of dispatches, one a chip
//! of a pipeline (balanced by the SRAM each places; the fewest chips that
//! hold it): each chip allocates only what its dispatches use, receives
//! the activations live at its cut from the previous chip's link and
//! sends those live at the next. All chips count cycles from the run's
//! start, so a chip's weight installs overlap the chips before it.

use crate::matmul::{self, Activations, Matrix, Placed, Planes, Sram};
use crate::rows::{self, Sink, Source};
use crate::schedule::{Input, Reservations, Step};
use q35_format::tsp::{tile, Elem, Form, Instr, Io, Op, Program, RowFunction, TspConfig, Unit};
use q35_target::{Epilogue, KernelSpec, Plan, RowOp};
use std::collections::HashMap;

/// The programs for `plan` on `config`, one per entry of `tokens` (tokens
/// a run), sharing the weights and the KV caches in SRAM; each has its own
/// activations. A plan one chip cannot hold runs on a pipeline of chips
/// (`chip c of n` in each program), each chip's programs in turn.
pub fn lower_all(config: &TspConfig, plan: &Plan, tokens: &[u32]) -> Result<Vec<Program>, String> {
    match lower_measured(config, plan, tokens) {
        Err(why) if is_shortfall(&why) => lower_pipeline(config, plan, tokens, why),
        other => other.map(|(programs, _)| programs),
    }
}

/// Most chips of a pipeline q35c lays a model over.
pub const MAX_CHIPS: usize = 64;

/// Whether `error` says the SRAM is full (every shortfall names "SRAM rows").
pub fn is_shortfall(error: &str) -> bool {
    error.contains("SRAM rows")
}

/// [`lower_all`] on one chip, and the SRAM rows the programs take, all
/// slices together.
pub fn lower_measured(config: &TspConfig, plan: &Plan, tokens: &[u32]) -> Result<(Vec<Program>, u64), String> {
    let mut memory = Memory::new(config);
    let whole = Part::whole(plan);
    let programs = tokens.iter().map(|&t| lower(config, plan, t, &mut memory, &whole).map(|(p, _)| p)).collect::<Result<Vec<_>, _>>()?;
    // Every program lists every placement (the loader puts each once).
    let placements = memory.placed.placements;
    let rows = memory.sram.used_rows();
    Ok((programs.into_iter().map(|p| Program { placements: placements.clone(), ..p }).collect(), rows))
}

/// `lower` on `config`'s chip, or on one with as many times its MEM
/// slices (and as many times longer ones) as it takes to hold the plan.
pub fn on_roomy_chip<T>(config: &TspConfig, lower: impl Fn(&TspConfig) -> Result<T, String>) -> Result<T, String> {
    let mut grow = 1;
    loop {
        let roomy = TspConfig { mem_slices: config.mem_slices * grow, sram_bytes: config.sram_bytes * (grow * grow) as u64, ..config.clone() };
        match lower(&roomy) {
            Err(e) if is_shortfall(&e) && grow < 1 << 12 => grow *= 2,
            other => return other,
        }
    }
}

/// The plan over the fewest chips that hold it (at most [`MAX_CHIPS`]),
/// in contiguous runs of dispatches balanced by the SRAM each places.
fn lower_pipeline(config: &TspConfig, plan: &Plan, tokens: &[u32], why: String) -> Result<Vec<Program>, String> {
    // Each dispatch's SRAM as one roomy chip places it.
    let marks = on_roomy_chip(config, |roomy| {
        let mut memory = Memory::new(roomy);
        lower(roomy, plan, tokens[0], &mut memory, &Part::whole(plan))?;
        Ok(memory.marks)
    })?;
    let costs: Vec<u64> = marks.windows(2).map(|w| w[1] - w[0]).collect();
    let chip_rows = config.rows_per_slice() * config.mem_slices as u64;
    let mut last = why;
    for chips in (marks.last().copied().unwrap_or(0).div_ceil(chip_rows) as usize).max(2)..=MAX_CHIPS.min(plan.dispatches.len()) {
        match lower_chips(config, plan, tokens, &balanced(&costs, chips)) {
            Err(e) if is_shortfall(&e) => last = e,
            other => return other,
        }
    }
    Err(format!("{last} (over up to {MAX_CHIPS} chips in a pipeline too)"))
}

/// `chips` contiguous runs of dispatches, each about as costly.
fn balanced(costs: &[u64], chips: usize) -> Vec<std::ops::Range<usize>> {
    let total: u64 = costs.iter().sum::<u64>().max(1);
    let mut ranges = Vec::with_capacity(chips);
    let (mut start, mut sum) = (0, 0);
    for (i, &cost) in costs.iter().enumerate() {
        sum += cost;
        let left = costs.len() - i - 1;
        let wanted = chips - ranges.len() - 1;
        // Cut where the running share is reached, keeping a dispatch for
        // every chip still to come.
        if wanted > 0 && left >= wanted && (sum * chips as u64 >= total * (ranges.len() as u64 + 1) || left == wanted) {
            ranges.push(start..i + 1);
            start = i + 1;
        }
    }
    ranges.push(start..costs.len());
    ranges
}

/// The programs of each chip of a pipeline running `ranges` of the plan's
/// dispatches, chip by chip; each token count's programs pass the
/// activations live at each cut to the next chip.
fn lower_chips(config: &TspConfig, plan: &Plan, tokens: &[u32], ranges: &[std::ops::Range<usize>]) -> Result<Vec<Program>, String> {
    let chips = ranges.len();
    let mut memories: Vec<Memory> = (0..chips).map(|_| Memory::new(config)).collect();
    let mut programs: Vec<Vec<Program>> = (0..chips).map(|_| Vec::new()).collect();
    for &t in tokens {
        let mut incoming = Vec::new();
        for (c, range) in ranges.iter().enumerate() {
            let outgoing = if c + 1 < chips { live_across(plan, range.end) } else { Vec::new() };
            let part = Part { chip: c as u32, chips: chips as u32, dispatches: range.clone(), incoming, outgoing: outgoing.clone() };
            let (program, arrivals) = lower(config, plan, t, &mut memories[c], &part).map_err(|e| format!("chip {c} of {chips}: {e}"))?;
            programs[c].push(program);
            incoming = outgoing.into_iter().zip(arrivals).collect();
        }
    }
    Ok(programs
        .into_iter()
        .zip(memories)
        .flat_map(|(chip, memory)| {
            let placements = memory.placed.placements;
            chip.into_iter().map(move |p| Program { placements: placements.clone(), ..p })
        })
        .collect())
}

/// The activations live across the cut before dispatch `at`: written
/// before it and read after it before they are written again; in the
/// plan's buffer order.
pub fn live_across(plan: &Plan, at: usize) -> Vec<&str> {
    let mut accesses: HashMap<&str, Vec<(usize, bool)>> = HashMap::new();
    for (i, d) in plan.dispatches.iter().enumerate() {
        let split = d.buffers.len().saturating_sub(written_buffers(plan.kernels.get(&d.kernel)));
        for (j, b) in d.buffers.iter().enumerate() {
            accesses.entry(b.as_str()).or_default().push((i, j >= split));
        }
    }
    plan.buffers
        .iter()
        .filter(|b| matches!(b.role.as_str(), "activation" | "output"))
        .map(|b| b.name.as_str())
        .filter(|name| accesses.get(name).is_some_and(|a| a.iter().any(|&(i, w)| w && i < at) && a.iter().find(|&&(i, _)| i >= at).is_some_and(|&(_, w)| !w)))
        .collect()
}

/// The share of a plan one chip runs: its dispatches, and the activations
/// it receives from the previous chip (in the order sent, with each
/// vector's arrival cycle) and sends to the next.
struct Part<'p> {
    chip: u32,
    chips: u32,
    dispatches: std::ops::Range<usize>,
    incoming: Vec<(&'p str, Vec<u64>)>,
    outgoing: Vec<&'p str>,
}

impl<'p> Part<'p> {
    fn whole(plan: &Plan) -> Self {
        Part { chip: 0, chips: 1, dispatches: 0..plan.dispatches.len(), incoming: Vec::new(), outgoing: Vec::new() }
    }
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

/// SRAM rows of a KV cache `cache_width` wide in all (rows of `kv_width`
/// f32 values, one a position), on a chip of `lanes` lanes.
pub fn kv_cache_rows(lanes: usize, kv_width: usize, cache_width: usize) -> u64 {
    4 * kv_width.div_ceil(lanes) as u64 * (cache_width / kv_width) as u64
}

/// How many of a dispatch's buffers (the last ones) it writes.
pub fn written_buffers(spec: Option<&KernelSpec>) -> usize {
    if matches!(spec, Some(KernelSpec::KvUpdate(_))) { 2 } else { 1 }
}

/// What the programs of one chip share: SRAM, the weights placed in it,
/// the KV caches and the index vectors; and the SRAM rows in use before
/// the first dispatch and after each.
struct Memory {
    sram: Sram,
    placed: Placed,
    shared: HashMap<String, (usize, u32)>,
    marks: Vec<u64>,
}

impl Memory {
    fn new(config: &TspConfig) -> Self {
        Memory { sram: Sram::new(config), placed: Placed::default(), shared: HashMap::new(), marks: Vec::new() }
    }
}

/// The program for `part` of `plan` on `config`, `tokens` tokens a run,
/// and the arrival cycles of the vectors of each activation it sends.
fn lower(config: &TspConfig, plan: &Plan, tokens: u32, memory: &mut Memory, part: &Part) -> Result<(Program, Vec<Vec<u64>>), String> {
    let Memory { sram, placed, shared, marks } = memory;
    let lanes = config.lanes();
    if tokens == 0 || tokens as usize > lanes {
        return Err(format!("{tokens} tokens a run: a position vector holds 1 to {lanes}"));
    }
    let tiles = |width: usize| width.div_ceil(lanes) as u32;
    let kv_width = kv_widths(plan);
    let mut at: HashMap<String, (usize, u32)> = HashMap::new();
    let mut striped: HashMap<&str, u32> = HashMap::new();
    let mut io = Vec::new();
    let own = &plan.dispatches[part.dispatches.clone()];
    let needed = |name: &str| part.chips == 1 || own.iter().any(|d| d.buffers.iter().any(|b| b == name)) || part.incoming.iter().any(|(b, _)| *b == name) || part.outgoing.contains(&name);
    for b in plan.buffers.iter().filter(|b| needed(&b.name)) {
        let rows = match b.role.as_str() {
            "input" => 4,
            "activation" | "output" => 4 * tokens * tiles(b.width),
            "kv_cache" => {
                let width = *kv_width.get(b.name.as_str()).ok_or_else(|| format!("KV cache `{}` has no kv_update", b.name))?;
                kv_cache_rows(lanes, width, b.width) as u32
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
            // A chunk's logits, too wide for one slice: tile by tile over
            // whole slices, each tile's tokens in a row.
            ("output", _) if rows as u64 > config.rows_per_slice() => {
                let per = (config.rows_per_slice() / (4 * tokens as u64)) as u32;
                let slices = tiles(b.width).div_ceil(per.max(1));
                let place = (sram.alloc_span(slices * config.rows_per_slice() as u32)?.0, 0);
                striped.insert(b.name.as_str(), per);
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
        let stripes = striped.get(b.name.as_str()).copied().unwrap_or(0);
        match b.role.as_str() {
            "input" => io.push(Io { name: b.name.clone(), slice: place.0 as u16, row: place.1, width: 1, striped: 0 }),
            "output" => io.push(Io { name: "logits".into(), slice: place.0 as u16, row: place.1, width: b.width as u32, striped: stripes }),
            _ => {}
        }
        // Every activation, so a run can be watched dispatch by dispatch.
        if matches!(b.role.as_str(), "activation" | "output") {
            io.push(Io { name: b.name.clone(), slice: place.0 as u16, row: place.1, width: b.width as u32, striped: stripes });
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
    let positions = find("positions");
    let position_source = positions.clone().map(|p| Source::Rows { slice: p.0, addr: p.1, stride: 0, elem: Elem::I32, len: 1 });
    // What the previous chip sends: each activation from the link into its
    // SRAM, in the order sent, once its vectors have arrived.
    let f32_vectors = |name: &str| plan.buffers.iter().find(|b| b.name == name).map_or(0, |b| tokens * tiles(b.width));
    let mut link = 0;
    for (name, arrivals) in &part.incoming {
        let place = find(name)?;
        let len = f32_vectors(name);
        if arrivals.len() != len as usize {
            return Err(format!("internal error: {} vectors of `{name}` sent, {len} expected", arrivals.len()));
        }
        let not_before = arrivals.iter().enumerate().map(|(v, &a)| a.saturating_sub(v as u64)).max().unwrap_or(0).max(link);
        let chain = [
            Step { unit: Unit::Link(0), offset: 0, op: Op::Recv, inputs: vec![], outputs: vec![(Elem::F32, 0, len)] },
            Step { unit: Unit::Mem(place.0 as u16), offset: 0, op: Op::Write { addr: place.1, stride: 0 }, inputs: vec![Input { from: (0, 0), at: 0 }], outputs: vec![] },
        ];
        let chain = reservations.place(&chain, not_before)?;
        link = chain[0].end();
        written.insert(name, chain.iter().map(Instr::end).max().unwrap_or(link));
        instrs.extend(chain);
    }
    marks.push(sram.used_rows());
    let mut dispatches = Vec::with_capacity(part.dispatches.len());
    for d in own {
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
                if striped.contains_key(d.buffers[0].as_str()) {
                    return Err(format!("`{}` reads the striped logits", d.kernel));
                }
                let y_striped = striped.get(d.buffers[2].as_str()).copied().unwrap_or(0);
                let activations = Activations { x: buffer(0)?, y: buffer(2)?, y_striped };
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
                    RowOp::Rotate { .. } => return Err(format!("`{}`: the tsp target does not run q35.rotate (the online rotation); compile with --rotation off", d.kernel)),
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
                    &[f32_rows(x.0, x.1, tokens * tiles(width)), position_source.clone()?],
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
                        Sink::Scattered { index: positions.clone()?, slice: c.0, addr: c.1, stride: 4 * per, per: per as u16 },
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
                    &[f32_rows(q.0, q.1, tokens * tiles(qw)), f32_rows(kc.0, kc.1, cached), f32_rows(vc.0, vc.1, cached), position_source.clone()?],
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
        marks.push(sram.used_rows());
    }
    // What the next chip needs: each live activation from SRAM onto the
    // link once written, one after another, with the cycle each vector
    // arrives there (the link's model: `Op::Send`).
    let per_vector = config.link_cycles(4 * lanes as u64);
    let (mut after, mut link_free) = (0, 0);
    let mut arrivals = Vec::with_capacity(part.outgoing.len());
    for &name in &part.outgoing {
        let place = find(name)?;
        let len = f32_vectors(name);
        let chain = [
            Step { unit: Unit::Mem(place.0 as u16), offset: 0, op: Op::Read { addr: place.1, stride: 0 }, inputs: vec![], outputs: vec![(Elem::F32, config.delays.mem_read, len)] },
            Step { unit: Unit::Link(0), offset: config.delays.mem_read, op: Op::Send, inputs: vec![Input { from: (0, 0), at: 0 }], outputs: vec![] },
        ];
        let chain = reservations.place(&chain, written.get(name).copied().unwrap_or(0).max(after))?;
        let taken = chain[1].cycle;
        after = taken + len as u64;
        arrivals.push(
            (0..len as u64)
                .map(|v| {
                    link_free = (taken + v).max(link_free) + per_vector;
                    link_free + config.link_latency
                })
                .collect(),
        );
        instrs.extend(chain);
    }
    let program = Program {
        lanes,
        config: Some(config.to_json()),
        placements: Vec::new(),
        io,
        tokens,
        instrs,
        dispatches,
        chip: part.chip,
        chips: part.chips,
        first_dispatch: part.dispatches.start,
    };
    Ok((program, arrivals))
}
