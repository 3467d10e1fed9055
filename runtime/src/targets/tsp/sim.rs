//! The cycle-exact TSP simulator: runs a [`Program`] as parsed from its
//! text, instruction by instruction, on SRAM, stream registers and MXM
//! weight buffers, and refuses the first thing a real chip could not do:
//! an operand not on its stream on the cycle its instruction reads it, two
//! vectors on one stream in one cycle, a unit given two instructions at
//! once, an SRAM row outside its slice or read before the write it
//! depends on lands, a multiply on weights not fully installed.
//!
//! Instructions execute in the order their inputs are complete (an
//! instruction with none, a MEM read, at its issue cycle); every output
//! then lands on its stream at the cycles the instruction declares, and
//! the simulator checks each declared output starts after the last input
//! and the unit's delay. Integer arithmetic (dequantization, the MXM's
//! int8 products and int32 sums) is exact; the VXM's float steps are f32
//! in the order written here.

use q35_format::activations::quantize_activations;
use q35_format::tsp::{scalar_vectors, tile::dequant_tile, Elem, Instr, Op, Operand, Program, Segment, TspConfig, Unit};
use std::collections::HashMap;

use super::vxm;

/// A vector on a stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Vector {
    I8(Vec<i8>),
    I32(Vec<i32>),
    F32(Vec<f32>),
}

impl Vector {
    fn elem(&self) -> Elem {
        match self {
            Vector::I8(_) => Elem::I8,
            Vector::I32(_) => Elem::I32,
            Vector::F32(_) => Elem::F32,
        }
    }
}

/// A refusal: what the program asked that the machine cannot do, naming
/// the instruction (its cycle, unit and text).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("TSP program, cycle {cycle}, {unit}: {message}\n  in `{instr}`")]
pub struct SimError {
    pub cycle: u64,
    pub unit: String,
    pub instr: String,
    pub message: String,
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunStats {
    /// First issue to last stream use.
    pub cycles: u64,
    /// Cycles the MXM planes spent multiplying, summed over planes.
    pub mxm_busy: u64,
    /// Weight vectors installed.
    pub installed_vectors: u64,
}

/// An MXM weight buffer: its column vectors and the cycle the install
/// completes.
type Installed = (Vec<Vec<i8>>, u64);

/// One chip's state.
pub struct Chip {
    config: TspConfig,
    /// Per MEM slice: its rows, `lanes` bytes each.
    sram: Vec<Vec<u8>>,
    /// Per slice and row: the latest cycle a read of it was executed for.
    last_read: Vec<HashMap<u32, u64>>,
    /// Per MXM plane: two weight buffers of column vectors, each with the
    /// cycle its install completes.
    weights: Vec<[Option<Installed>; 2]>,
    /// Per MXM plane and buffer: the last cycle a multiply read it.
    weights_read: Vec<[u64; 2]>,
    /// Vectors the previous chip of a pipeline sent this run, in order,
    /// with the cycle each arrives.
    inbox: std::collections::VecDeque<(u64, Vector)>,
    /// Vectors sent to the next chip this run, with their arrival cycles;
    /// and the cycle the link is through with the last one.
    outbox: Vec<(u64, Vector)>,
    link_free: u64,
}

impl Chip {
    pub fn new(config: TspConfig) -> Self {
        let rows = config.rows_per_slice() as usize;
        let lanes = config.lanes();
        Chip {
            sram: (0..config.mem_slices).map(|_| vec![0u8; rows * lanes]).collect(),
            last_read: vec![HashMap::new(); config.mem_slices],
            weights: vec![[None, None]; config.mxm_planes],
            weights_read: vec![[0, 0]; config.mxm_planes],
            inbox: Default::default(),
            outbox: Vec::new(),
            link_free: 0,
            config,
        }
    }

    /// What the previous chip sent in the run before this chip's (every
    /// chip of a pipeline counts cycles from the same start).
    pub fn receive(&mut self, sent: Vec<(u64, Vector)>) {
        self.inbox = sent.into();
    }

    /// What the last run sent to the next chip.
    pub fn take_sent(&mut self) -> Vec<(u64, Vector)> {
        std::mem::take(&mut self.outbox)
    }

    pub fn config(&self) -> &TspConfig {
        &self.config
    }

    /// Stores `bytes` (whole rows) into slice `slice` from row `row`,
    /// going on into the next slices from their row 0 (a table striped
    /// over whole slices) if it runs past the slice's end.
    pub fn load(&mut self, slice: usize, row: u32, bytes: &[u8]) -> Result<(), String> {
        let lanes = self.config.lanes();
        let (mut slice, mut at, mut rest) = (slice, row as usize * lanes, bytes);
        while !rest.is_empty() {
            let memory = self.sram.get_mut(slice).ok_or_else(|| format!("{} bytes from row {row} run past the last MEM slice", bytes.len()))?;
            if at >= memory.len() {
                return Err(format!("row {row} is outside MEM slice {slice} ({} rows)", memory.len() / lanes));
            }
            let take = rest.len().min(memory.len() - at);
            memory[at..at + take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            (slice, at) = (slice + 1, 0);
        }
        Ok(())
    }

    /// The bytes of `count` rows of slice `slice` from `row`.
    pub fn rows(&self, slice: usize, row: u32, count: usize) -> &[u8] {
        let lanes = self.config.lanes();
        &self.sram[slice][row as usize * lanes..(row as usize + count) * lanes]
    }

    /// Runs `program` once.
    pub fn run(&mut self, program: &Program) -> Result<RunStats, SimError> {
        self.run_observed(program, &mut |_, _| {})
    }

    /// [`Self::run`], calling `observer(d, chip)` before dispatch `d`'s
    /// instructions run (a program's dispatches take cycles of their own,
    /// one after another, so the SRAM then holds what dispatch d reads).
    pub fn run_observed(&mut self, program: &Program, observer: &mut dyn FnMut(usize, &Chip)) -> Result<RunStats, SimError> {
        let lanes = self.config.lanes();
        if program.lanes != lanes {
            return Err(SimError {
                cycle: 0,
                unit: "-".into(),
                instr: String::new(),
                message: format!("the program was scheduled for {} lanes, this chip has {lanes}", program.lanes),
            });
        }
        // Cycles count from 0 in every run: hazards and weight buffers do
        // not carry over (SRAM contents do: the KV cache).
        self.last_read.iter_mut().for_each(HashMap::clear);
        self.weights.iter_mut().for_each(|w| *w = [None, None]);
        self.weights_read.iter_mut().for_each(|w| *w = [0, 0]);
        self.outbox.clear();
        self.link_free = 0;
        let ready = |i: &Instr| i.inputs.iter().map(|o| o.cycles(i.cycle).1).max().unwrap_or(i.cycle);
        // (dispatch, its instructions); what precedes the first, unmarked.
        let mut starts: Vec<(Option<usize>, usize)> = vec![(None, 0)];
        starts.extend(program.dispatches.iter().enumerate().map(|(d, &at)| (Some(program.first_dispatch + d), at.min(program.instrs.len()))));
        let mut segments: Vec<(Option<usize>, Vec<&Instr>)> = Vec::new();
        for (i, &(dispatch, at)) in starts.iter().enumerate() {
            let end = starts.get(i + 1).map_or(program.instrs.len(), |&(_, e)| e);
            let mut order: Vec<&Instr> = program.instrs[at.min(end)..end].iter().collect();
            order.sort_by_key(|i| (ready(i), i.cycle));
            segments.push((dispatch, order));
        }
        let mut streams: HashMap<(u16, u64), Vector> = HashMap::new();
        // Byte-stream and cycle -> the instruction that put a vector there.
        let mut occupied: HashMap<(u16, u64), u64> = HashMap::new();
        // (unit, port) -> busy intervals.
        let mut busy: HashMap<(Unit, u8), Vec<(u64, u64)>> = HashMap::new();
        let mut stats = RunStats { cycles: program.cycles(), ..Default::default() };
        for (dispatch, order) in segments {
            if let Some(d) = dispatch {
                observer(d, self);
            }
            for instr in order {
                let fail = |message: String| SimError {
                    cycle: instr.cycle,
                    unit: instr.unit.to_string(),
                    instr: instr.to_string(),
                    message,
                };
                // One instruction at a time per unit (an MXM plane's install
                // and multiply ports are separate: installs overlap compute;
                // so are a link's receive and send sides).
                let port = matches!(instr.op, Op::Install { .. } | Op::Recv) as u8;
                let span = (instr.cycle, instr.end());
                let intervals = busy.entry((instr.unit, port)).or_default();
                if let Some(&(a, b)) = intervals.iter().find(|&&(a, b)| a < span.1 && span.0 < b) {
                    return Err(fail(format!("{} is busy from cycle {a} to {b} with another instruction", instr.unit)));
                }
                intervals.push(span);
                let mut inputs = Vec::with_capacity(instr.inputs.len());
                for operand in &instr.inputs {
                    let (first, _) = operand.cycles(instr.cycle);
                    let mut vectors = Vec::with_capacity(operand.len as usize);
                    for c in first..first + operand.len as u64 {
                        let vector = streams.remove(&(operand.stream, c)).ok_or_else(|| {
                            fail(format!("no vector on stream S{} at cycle {c} for input {operand}", operand.stream))
                        })?;
                        if vector.elem() != operand.elem {
                            return Err(fail(format!("stream S{} carries {:?} at cycle {c}, the input reads {:?}", operand.stream, vector.elem(), operand.elem)));
                        }
                        vectors.push(vector);
                    }
                    inputs.push(vectors);
                }
                let last_input = instr.inputs.iter().map(|o| o.cycles(instr.cycle).1).max();
                let outputs = self.execute(instr, inputs, &mut stats).map_err(fail)?;
                for (operand, vectors) in instr.outputs.iter().zip(outputs) {
                    let (first, _) = operand.cycles(instr.cycle);
                    let delay = self.delay(&instr.op);
                    let earliest = last_input.unwrap_or(instr.cycle) + delay;
                    if first < earliest {
                        return Err(fail(format!("output {operand} starts at cycle {first}, before its inputs are in and the {delay}-cycle delay passed (cycle {earliest})")));
                    }
                    if vectors.len() != operand.len as usize {
                        return Err(fail(format!("the operation makes {} vectors, the output {operand} declares {}", vectors.len(), operand.len)));
                    }
                    for (i, vector) in vectors.into_iter().enumerate() {
                        let c = first + i as u64;
                        if vector.elem() != operand.elem {
                            return Err(fail(format!("the operation makes {:?} vectors, the output {operand} declares {:?}", vector.elem(), operand.elem)));
                        }
                        for s in operand.stream..operand.stream + operand.elem.streams() {
                            if s as usize >= self.config.streams() {
                                return Err(fail(format!("stream S{s} does not exist ({} streams)", self.config.streams())));
                            }
                            if let Some(other) = occupied.insert((s, c), instr.cycle) {
                                return Err(fail(format!("stream S{s} already carries a vector at cycle {c} (from the instruction issued at cycle {other})")));
                            }
                        }
                        streams.insert((operand.stream, c), vector);
                    }
                }
            }
        }
        if let Some((arrival, _)) = self.inbox.front() {
            return Err(SimError {
                cycle: *arrival,
                unit: "-".into(),
                instr: String::new(),
                message: format!("{} vectors the previous chip sent are never received", self.inbox.len()),
            });
        }
        if let Some(((stream, cycle), _)) = streams.iter().min_by_key(|((_, c), _)| *c) {
            return Err(SimError {
                cycle: *cycle,
                unit: "-".into(),
                instr: String::new(),
                message: format!("the vector on stream S{stream} at cycle {cycle} is never read"),
            });
        }
        Ok(stats)
    }

    fn delay(&self, op: &Op) -> u64 {
        let d = &self.config.delays;
        match op {
            Op::Read { .. } | Op::Gather { .. } => d.mem_read,
            Op::Multiply { .. } => d.mxm_multiply,
            Op::Write { .. } | Op::Scatter { .. } | Op::Install { .. } | Op::Send | Op::Recv => 0,
            _ => d.vxm,
        }
    }

    /// The MEM slice of `instr`, checking rows `addr..addr + rows` are in it.
    fn slice_rows(&self, instr: &Instr, addr: u64, rows: u64) -> Result<usize, String> {
        let Unit::Mem(slice) = instr.unit else {
            return Err(format!("{} is not a MEM slice", instr.unit));
        };
        let capacity = self.config.rows_per_slice();
        if slice as usize >= self.config.mem_slices || addr + rows > capacity {
            return Err(format!("rows {addr}..{} of MEM slice {slice} are outside it ({} slices of {capacity} rows)", addr + rows, self.config.mem_slices));
        }
        Ok(slice as usize)
    }

    /// Reads the vector of `elem` at `row` of `slice` for cycle `cycle`.
    fn read_vector(&mut self, slice: usize, row: u32, elem: Elem, cycle: u64) -> Vector {
        for r in row..row + elem.rows() {
            let seen = self.last_read[slice].entry(r).or_insert(0);
            *seen = (*seen).max(cycle);
        }
        let lanes = self.config.lanes();
        from_rows(elem, self.rows(slice, row, elem.rows() as usize), lanes)
    }

    /// Writes `vector` at `row` of `slice` on cycle `cycle`, refusing a
    /// read of the row that was served for a later cycle.
    fn write_vector(&mut self, slice: usize, row: u32, vector: &Vector, cycle: u64) -> Result<(), String> {
        let rows = vector.elem().rows();
        for r in row..row + rows {
            if let Some(&read) = self.last_read[slice].get(&r) {
                if read > cycle {
                    return Err(format!("row {r} of MEM slice {slice} is written at cycle {cycle}, but a read at cycle {read} was served before this write was complete"));
                }
            }
        }
        let bytes = to_rows(vector);
        let at = row as usize * self.config.lanes();
        self.sram[slice][at..at + bytes.len()].copy_from_slice(&bytes);
        Ok(())
    }

    /// The operation's outputs, one vector list per output operand.
    fn execute(&mut self, instr: &Instr, inputs: Vec<Vec<Vector>>, stats: &mut RunStats) -> Result<Vec<Vec<Vector>>, String> {
        let lanes = self.config.lanes();
        let want = |n: usize| -> Result<(), String> {
            if instr.inputs.len() != n {
                return Err(format!("{} input operands, the operation takes {n}", instr.inputs.len()));
            }
            Ok(())
        };
        match &instr.op {
            Op::Read { addr, stride } | Op::Write { addr, stride } => {
                let writing = matches!(instr.op, Op::Write { .. });
                want(usize::from(writing))?;
                let operand = if writing { &instr.inputs[0] } else { single(&instr.outputs)? };
                let step = if *stride == 0 { operand.elem.rows() } else { *stride };
                let span = (operand.len.saturating_sub(1) as u64) * step as u64 + operand.elem.rows() as u64;
                let slice = self.slice_rows(instr, *addr as u64, span)?;
                let mut vectors = Vec::new();
                for v in 0..operand.len {
                    let row = addr + v * step;
                    let cycle = instr.cycle + operand.at + v as u64;
                    if writing {
                        self.write_vector(slice, row, &inputs[0][v as usize], cycle)?;
                    } else {
                        vectors.push(self.read_vector(slice, row, operand.elem, cycle));
                    }
                }
                if writing && !instr.outputs.is_empty() {
                    return Err("a write has no output".into());
                }
                Ok(if writing { Vec::new() } else { vec![vectors] })
            }
            Op::Gather { .. } | Op::Scatter { .. } => {
                let (addr, stride, per, span) = match &instr.op {
                    Op::Gather { addr, stride, per, slices } => (addr, stride, per, (*slices).max(1) as u64),
                    Op::Scatter { addr, stride, per } => (addr, stride, per, 1),
                    _ => unreachable!("matched above"),
                };
                let scattering = matches!(instr.op, Op::Scatter { .. });
                want(if scattering { 2 } else { 1 })?;
                let indices = i32s(&inputs[0].first().ok_or("no index vector")?.clone())?.to_vec();
                let operand = if scattering { &instr.inputs[1] } else { single(&instr.outputs)? };
                let per = *per as u32;
                if per == 0 || operand.len % per != 0 {
                    return Err(format!("{} vectors are not whole items of {per}", operand.len));
                }
                let items = (operand.len / per) as usize;
                let mut vectors = Vec::new();
                for item in 0..items {
                    let index = *indices.get(item).ok_or_else(|| format!("item {item} has no index lane"))?;
                    let first = *addr as i64 + index as i64 * *stride as i64;
                    if index < 0 || first < 0 {
                        return Err(format!("index {index} of item {item} is negative"));
                    }
                    // Row `first` of the stripe of `span` slices.
                    let capacity = self.config.rows_per_slice();
                    let (offset, first) = (first as u64 / capacity, first as u64 % capacity);
                    if offset >= span {
                        return Err(format!("index {index} of item {item} reaches past the {span} slice(s) the instruction addresses"));
                    }
                    let rows = per as u64 * operand.elem.rows() as u64;
                    let base = self.slice_rows(instr, 0, 0)?;
                    let slice = base + offset as usize;
                    if slice >= self.config.mem_slices || first + rows > capacity {
                        return Err(format!("item {item}'s rows {first}..{} of MEM slice {slice} are outside it", first + rows));
                    }
                    for i in 0..per {
                        let row = first as u32 + i * operand.elem.rows();
                        let v = item as u32 * per + i;
                        let cycle = instr.cycle + operand.at + v as u64;
                        if scattering {
                            self.write_vector(slice, row, &inputs[1][v as usize], cycle)?;
                        } else {
                            vectors.push(self.read_vector(slice, row, operand.elem, cycle));
                        }
                    }
                }
                Ok(if scattering { Vec::new() } else { vec![vectors] })
            }
            Op::RowDequant { kind, group, width, per } => {
                want(1)?;
                let group = q35_format::GroupSize::ALL.into_iter().find(|g| g.fixed() == Some(*group as usize)).unwrap_or(q35_format::GroupSize::Channel);
                let mut rows = Vec::new();
                for item in inputs[0].chunks(*per as usize) {
                    let bytes: Vec<u8> = item.iter().map(|v| i8s(v).map(|v| v.iter().map(|&b| b as u8).collect::<Vec<u8>>())).collect::<Result<Vec<_>, _>>()?.concat();
                    rows.push(q35_format::tsp::tile::dequant_row(*kind, group, *width as usize, &bytes)?);
                }
                Ok(vec![vxm::vectors(&rows, lanes).into_iter().map(Vector::F32).collect()])
            }
            Op::Norm { width, eps } => {
                want(2)?;
                let x = vxm::rows(&f32_list(&inputs[0])?, *width as usize, lanes)?;
                let gain = vxm::rows(&f32_list(&inputs[1])?, *width as usize, lanes)?;
                let [gain] = &gain[..] else { return Err("the gain is one row".into()) };
                let out: Vec<Vec<f32>> = x.iter().map(|r| vxm::norm(r, gain, *eps)).collect();
                Ok(vec![vxm::vectors(&out, lanes).into_iter().map(Vector::F32).collect()])
            }
            Op::Rope { width, head_dim, theta } => {
                want(2)?;
                let mut x = vxm::rows(&f32_list(&inputs[0])?, *width as usize, lanes)?;
                let positions = i32s(&inputs[1][0])?;
                for (t, row) in x.iter_mut().enumerate() {
                    vxm::rope(row, *head_dim as usize, positions[t].max(0) as usize, *theta);
                }
                Ok(vec![vxm::vectors(&x, lanes).into_iter().map(Vector::F32).collect()])
            }
            Op::Elementwise { function, width } => {
                want(function.inputs())?;
                let a = vxm::rows(&f32_list(&inputs[0])?, *width as usize, lanes)?;
                let b = if function.inputs() == 2 { Some(vxm::rows(&f32_list(&inputs[1])?, *width as usize, lanes)?) } else { None };
                if b.as_ref().is_some_and(|b| b.len() != a.len()) {
                    return Err("the two inputs have different token counts".into());
                }
                let out: Vec<Vec<f32>> = a.iter().enumerate().map(|(t, r)| vxm::elementwise(*function, r, b.as_ref().map(|b| &b[t][..]))).collect();
                Ok(vec![vxm::vectors(&out, lanes).into_iter().map(Vector::F32).collect()])
            }
            Op::Attention { heads, kv_heads, head_dim, context } => {
                want(4)?;
                let (heads, kv_heads, head_dim, context) = (*heads as usize, *kv_heads as usize, *head_dim as usize, *context as usize);
                if kv_heads == 0 || heads % kv_heads != 0 {
                    return Err(format!("{heads} heads do not share {kv_heads} key/value heads evenly"));
                }
                let q = vxm::rows(&f32_list(&inputs[0])?, heads * head_dim, lanes)?;
                let k = vxm::rows(&f32_list(&inputs[1])?, kv_heads * head_dim, lanes)?;
                let v = vxm::rows(&f32_list(&inputs[2])?, kv_heads * head_dim, lanes)?;
                if k.len() != context || v.len() != context {
                    return Err(format!("{} key and {} value rows for a context of {context}", k.len(), v.len()));
                }
                let positions = i32s(&inputs[3][0])?;
                let mut out = Vec::with_capacity(q.len());
                for (t, q) in q.iter().enumerate() {
                    let pos = positions[t];
                    if pos < 0 || pos as usize >= context {
                        return Err(format!("position {pos} is outside the cache of {context}"));
                    }
                    out.push(vxm::attention(q, &k, &v, pos as usize, heads, kv_heads, head_dim));
                }
                Ok(vec![vxm::vectors(&out, lanes).into_iter().map(Vector::F32).collect()])
            }
            Op::Dequant { kind, cols } => {
                want(1)?;
                let packed: Vec<Vec<u8>> = inputs[0].iter().map(|v| i8s(v).map(|v| v.iter().map(|&b| b as u8).collect())).collect::<Result<_, _>>()?;
                // The tile's first column only decides q35's plane order:
                // tiles start at a multiple of the lanes, an even column.
                let columns = dequant_tile(*kind, &packed, 0, *cols as usize)?;
                Ok(vec![columns.into_iter().map(Vector::I8).collect()])
            }
            Op::Send | Op::Recv => {
                if !matches!(instr.unit, Unit::Link(0)) {
                    return Err(format!("{} is not the link to the next chip (LINK0)", instr.unit));
                }
                if matches!(instr.op, Op::Send) {
                    want(1)?;
                    let (taken, _) = instr.inputs[0].cycles(instr.cycle);
                    let c = &self.config;
                    for (v, vector) in inputs.into_iter().next().unwrap_or_default().into_iter().enumerate() {
                        let bytes = vector.elem().rows() as u64 * lanes as u64;
                        let start = (taken + v as u64).max(self.link_free);
                        self.link_free = start + c.link_cycles(bytes);
                        self.outbox.push((self.link_free + c.link_latency, vector));
                    }
                    return Ok(Vec::new());
                }
                want(0)?;
                let out = instr.outputs.first().ok_or("a recv needs an output")?;
                let (first, _) = out.cycles(instr.cycle);
                let mut vectors = Vec::with_capacity(out.len as usize);
                for v in 0..out.len as u64 {
                    let (arrival, vector) = self.inbox.pop_front().ok_or_else(|| format!("the previous chip sent {v} vectors, this recv takes {}", out.len))?;
                    if arrival > first + v {
                        return Err(format!("vector {v} arrives at cycle {arrival}, after cycle {} that puts it on the stream", first + v));
                    }
                    vectors.push(vector);
                }
                Ok(vec![vectors])
            }
            Op::Install { buffer } => {
                want(1)?;
                let Unit::Mxm(plane) = instr.unit else { return Err(format!("{} is not an MXM plane", instr.unit)) };
                let columns: Vec<Vec<i8>> = inputs[0].iter().map(|v| i8s(v).map(<[i8]>::to_vec)).collect::<Result<_, _>>()?;
                if columns.len() > lanes {
                    return Err(format!("{} weight vectors do not fit a {lanes}-row plane", columns.len()));
                }
                stats.installed_vectors += columns.len() as u64;
                let read = self.weights_read.get(plane as usize).map_or(0, |r| r[*buffer as usize % 2]);
                if read > instr.cycle {
                    return Err(format!("MXM plane {plane} buffer {buffer} is overwritten from cycle {} while a multiply reads it until cycle {read}", instr.cycle));
                }
                let done = instr.inputs[0].cycles(instr.cycle).1;
                let slot = self.weights.get_mut(plane as usize).ok_or_else(|| format!("MXM plane {plane} does not exist"))?;
                slot[*buffer as usize % 2] = Some((columns, done));
                Ok(Vec::new())
            }
            Op::Multiply { buffer, segments } => {
                want(1)?;
                let Unit::Mxm(plane) = instr.unit else { return Err(format!("{} is not an MXM plane", instr.unit)) };
                let (weights, done) = self.weights.get(plane as usize).and_then(|s| s[*buffer as usize % 2].as_ref()).ok_or_else(|| format!("MXM plane {plane} buffer {buffer} has no weights installed"))?;
                if *done > instr.cycle {
                    return Err(format!("MXM plane {plane} buffer {buffer} is still being installed until cycle {done}"));
                }
                stats.mxm_busy += instr.end() - instr.cycle;
                let read = &mut self.weights_read[plane as usize][*buffer as usize % 2];
                *read = (*read).max(instr.end());
                let mut out = Vec::new();
                for x in &inputs[0] {
                    let x = i8s(x)?;
                    for segment in segments {
                        out.push(Vector::I32(multiply(weights, x, segment, lanes)?));
                    }
                }
                Ok(vec![out])
            }
            Op::Quantize { group, width } => {
                want(1)?;
                let (group, width) = (*group as usize, *width as usize);
                let tiles = width.div_ceil(lanes);
                let groups = width.div_ceil(group);
                let (half, vectors) = (lanes / 2, scalar_vectors(lanes, groups));
                if inputs[0].len() % tiles != 0 {
                    return Err(format!("{} input vectors are not whole rows of {tiles}", inputs[0].len()));
                }
                let (mut codes_out, mut scalars_out) = (Vec::new(), Vec::new());
                for row in inputs[0].chunks(tiles) {
                    let mut x = Vec::with_capacity(tiles * lanes);
                    for v in row {
                        x.extend_from_slice(f32s(v)?);
                    }
                    x.truncate(width);
                    let mut codes = vec![0i8; tiles * lanes];
                    let mut scalars = vec![vec![0f32; lanes]; vectors];
                    for (g, chunk) in x.chunks(group).enumerate() {
                        let at = g * group;
                        let sx = quantize_activations(chunk, &mut codes[at..at + chunk.len()]);
                        let sum: i32 = codes[at..at + chunk.len()].iter().map(|&c| c as i32).sum();
                        scalars[g / half][g % half] = sx / 105.0;
                        scalars[g / half][half + g % half] = sx * sum as f32;
                    }
                    codes_out.push(codes);
                    scalars_out.extend(scalars.into_iter().map(Vector::F32));
                }
                // Codes tile by tile, each tile's tokens in order: one
                // contiguous run per K tile for the matmuls that read it.
                let tokens = codes_out.len();
                let codes_out = (0..tiles * tokens).map(|i| Vector::I8(codes_out[i % tokens][(i / tokens) * lanes..(i / tokens + 1) * lanes].to_vec())).collect();
                Ok(vec![codes_out, scalars_out])
            }
            Op::Accumulate { segments, groups, first } => {
                want(if *first { 3 } else { 4 })?;
                let nseg = segments.len();
                let tokens = inputs[2].len();
                if inputs[0].len() != tokens * nseg || inputs[1].len() != 2 * nseg {
                    return Err(format!("{} dot vectors and {} parameter vectors for {tokens} tokens of {nseg} segments", inputs[0].len(), inputs[1].len()));
                }
                let half = lanes / 2;
                let vector = segments.first().map_or(0, |s| s.group as usize / half);
                if segments.iter().any(|s| s.group as usize / half != vector) {
                    return Err("the segments' groups lie in different scalar vectors".into());
                }
                let mut out = Vec::with_capacity(tokens);
                for t in 0..tokens {
                    let scalars = f32s(&inputs[2][t])?;
                    let mut acc = if *first { vec![0f32; lanes] } else { f32s(&inputs[3][t])?.to_vec() };
                    for (s, segment) in segments.iter().enumerate() {
                        let d = i32s(&inputs[0][t * nseg + s])?;
                        let (range, min) = (f32s(&inputs[1][2 * s])?, f32s(&inputs[1][2 * s + 1])?);
                        let g = segment.group as usize;
                        if g >= *groups as usize {
                            return Err(format!("segment group {g} of {groups}"));
                        }
                        let (step, offset) = (scalars[g % half], scalars[half + g % half]);
                        for n in 0..lanes {
                            acc[n] = acc[n] + (range[n] * step) * d[n] as f32 + min[n] * offset;
                        }
                    }
                    out.push(Vector::F32(acc));
                }
                Ok(vec![out])
            }
        }
    }
}

fn single(operands: &[Operand]) -> Result<&Operand, String> {
    match operands {
        [one] => Ok(one),
        _ => Err(format!("{} output operands, the operation makes one", operands.len())),
    }
}

fn f32_list(vectors: &[Vector]) -> Result<Vec<&[f32]>, String> {
    vectors.iter().map(f32s).collect()
}

fn i8s(v: &Vector) -> Result<&[i8], String> {
    match v {
        Vector::I8(v) => Ok(v),
        other => Err(format!("expected an i8 vector, got {:?}", other.elem())),
    }
}

fn i32s(v: &Vector) -> Result<&[i32], String> {
    match v {
        Vector::I32(v) => Ok(v),
        other => Err(format!("expected an i32 vector, got {:?}", other.elem())),
    }
}

fn f32s(v: &Vector) -> Result<&[f32], String> {
    match v {
        Vector::F32(v) => Ok(v),
        other => Err(format!("expected an f32 vector, got {:?}", other.elem())),
    }
}

/// Lane n of the product: Σ_{k in segment} W[k][n]·x[k], exact in i32
/// (|W| ≤ 105, |x| ≤ 127, at most 320 terms).
fn multiply(weights: &[Vec<i8>], x: &[i8], segment: &Segment, lanes: usize) -> Result<Vec<i32>, String> {
    let (lo, hi) = (segment.lo as usize, segment.hi as usize);
    if hi > weights.len() || hi > x.len() {
        return Err(format!("segment {lo}..{hi} is past the {} installed weight vectors", weights.len()));
    }
    let mut out = vec![0i32; lanes];
    for k in lo..hi {
        let xk = x[k] as i32;
        if xk != 0 {
            for (o, &w) in out.iter_mut().zip(&weights[k]) {
                *o += w as i32 * xk;
            }
        }
    }
    Ok(out)
}

/// A vector from SRAM rows: i8 from one row; 32-bit values from four
/// rows, row b holding byte b of every lane (little-endian byte planes).
pub fn from_rows(elem: Elem, bytes: &[u8], lanes: usize) -> Vector {
    match elem {
        Elem::I8 => Vector::I8(bytes.iter().map(|&b| b as i8).collect()),
        Elem::I32 | Elem::F32 => {
            let word = |l: usize| u32::from_le_bytes([bytes[l], bytes[lanes + l], bytes[2 * lanes + l], bytes[3 * lanes + l]]);
            if elem == Elem::I32 {
                Vector::I32((0..lanes).map(|l| word(l) as i32).collect())
            } else {
                Vector::F32((0..lanes).map(|l| f32::from_bits(word(l))).collect())
            }
        }
    }
}

/// The SRAM rows of a vector ([`from_rows`]'s inverse).
pub fn to_rows(vector: &Vector) -> Vec<u8> {
    let words: Vec<u32> = match vector {
        Vector::I8(v) => return v.iter().map(|&b| b as u8).collect(),
        Vector::I32(v) => v.iter().map(|&x| x as u32).collect(),
        Vector::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
    };
    let lanes = words.len();
    let mut out = vec![0u8; 4 * lanes];
    for (l, w) in words.iter().enumerate() {
        for (b, byte) in w.to_le_bytes().into_iter().enumerate() {
            out[b * lanes + l] = byte;
        }
    }
    out
}
