//! A wafer of PEs running the CSL program q35c emitted: the layout file
//! is run to place PE programs and routes, each PE's program is run with
//! its params, and a launch runs tasks and fabric transfers in cycle order
//! until the wafer is quiet.
//!
//! The fabric: a wavelet a PE sends on a colour leaves its ramp
//! (`ramp_cycles`), follows each router's `.tx` list for that colour, one
//! hop (`hop_cycles`) per link, and is copied to every PE whose route
//! sends it to `RAMP`; a PE sends one wavelet a cycle. It is an error, naming the PE and
//! the cycle, for a wavelet to reach a router whose route for its colour
//! does not take it from that side (or has none), to leave the rectangle,
//! for two PEs to send one colour to the same PE, for a PE to wait for
//! wavelets that never come (deadlock), for wavelets to arrive that no
//! operation reads, and for a PE's arrays and code to exceed its SRAM.
//! Links are not arbitrated: a colour's wavelets never wait for another's
//! (the emitted programs give each link one colour at a time).

use super::ast::{File, Pos};
use super::interp::{Costs, Effect, FabricOp, Interp, State};
use super::parse::parse_file;
use super::value::{Dir, Dsd, Value};
use q35_format::csl::CslConfig;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

/// What went wrong, with where: the file and line, the PE, the cycle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SimError(pub String);

/// One colour's route at one router.
#[derive(Clone, Debug, PartialEq)]
struct Route {
    rx: Vec<Dir>,
    tx: Vec<Dir>,
}

/// An operation waiting for wavelets.
#[derive(Clone, Debug)]
struct Waiting {
    color: u32,
    extent: usize,
    dest: Dsd,
    other: Option<Dsd>,
    op: FabricOp,
    cycle: u64,
    activate: Option<u32>,
    pos: Pos,
}

struct Pe {
    file: usize,
    state: State,
    busy_until: u64,
    done: bool,
    inbox: HashMap<u32, VecDeque<(u64, u32)>>,
    /// Who sent each colour to this PE in this launch.
    senders: HashMap<u32, (usize, usize)>,
    waiting: Vec<Waiting>,
}

/// What a launch counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// From the launch to the last PE's last operation.
    pub cycles: u64,
    /// Cycles PEs spent running tasks, summed over PEs.
    pub busy: u64,
    pub pes: u64,
    /// Wavelets delivered to ramps.
    pub wavelets: u64,
}

enum Action {
    Call(String),
    Task(u32),
}

/// The wafer with its programs loaded.
pub struct Wafer {
    config: CslConfig,
    files: std::sync::Arc<Vec<(String, File)>>,
    width: usize,
    height: usize,
    pes: Vec<Pe>,
    routes: HashMap<(usize, usize, u32), Route>,
    /// `@export_name`d symbols.
    exported: Vec<String>,
}

impl std::fmt::Debug for Wafer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wafer({} x {} PEs)", self.width, self.height)
    }
}

fn fault(file: &str, e: super::value::Fault) -> SimError {
    SimError(format!("{file}:{}: {}", e.pos, e.message))
}

impl Wafer {
    /// Runs `layout.csl` of `files` and loads the PE programs it places.
    pub fn load(config: &CslConfig, files: &[(String, String)]) -> Result<Wafer, SimError> {
        let mut parsed = Vec::new();
        for (name, text) in files {
            let file = parse_file(text).map_err(|e| SimError(format!("{name}:{e}")))?;
            parsed.push((name.clone(), file));
        }
        let layout = parsed.iter().position(|(n, _)| n == "layout.csl").ok_or_else(|| SimError("the program has no layout.csl".into()))?;
        let costs = Costs { scalar: config.scalar_op_cycles, dsd_element: config.dsd_cycles_per_element };
        let mut state = State::default();
        let mut interp = Interp::new(&parsed[layout].1, &mut state, costs, 0);
        interp.budget = 100_000_000;
        interp.declare(&[]).map_err(|e| fault("layout.csl", e))?;
        interp.run_blocks(true).map_err(|e| fault("layout.csl", e))?;
        let effects = std::mem::take(&mut interp.effects);
        let mut rectangle = None;
        let mut tiles: HashMap<(usize, usize), (usize, Vec<(String, Value)>)> = HashMap::new();
        let mut routes = HashMap::new();
        let mut exported = Vec::new();
        for effect in effects {
            match effect {
                Effect::Rectangle(w, h) => {
                    if w > config.program_width() || h > config.program_height() {
                        return Err(SimError(format!(
                            "layout.csl sets a {w} x {h} rectangle; the wafer has {} x {} PEs for programs",
                            config.program_width(),
                            config.program_height()
                        )));
                    }
                    rectangle = Some((w, h));
                }
                Effect::TileCode { x, y, file, params, pos } => {
                    let (w, h) = rectangle.ok_or_else(|| SimError(format!("layout.csl:{pos}: @set_tile_code before @set_rectangle")))?;
                    if x >= w || y >= h {
                        return Err(SimError(format!("layout.csl:{pos}: PE ({x}, {y}) is outside the {w} x {h} rectangle")));
                    }
                    let index = parsed.iter().position(|(n, _)| *n == file).ok_or_else(|| SimError(format!("layout.csl:{pos}: no file `{file}` in the program")))?;
                    if tiles.insert((x, y), (index, params)).is_some() {
                        return Err(SimError(format!("layout.csl:{pos}: PE ({x}, {y}) is given code twice")));
                    }
                }
                Effect::Route { x, y, color, rx, tx, pos } => {
                    if color as usize >= config.colors {
                        return Err(SimError(format!("layout.csl:{pos}: colour {color}: the fabric routes {} colours", config.colors)));
                    }
                    if routes.insert((x, y, color), Route { rx, tx }).is_some() {
                        return Err(SimError(format!("layout.csl:{pos}: PE ({x}, {y}) routes colour {color} twice")));
                    }
                }
                Effect::ExportName { name } => exported.push(name),
                _ => {}
            }
        }
        let (width, height) = rectangle.ok_or_else(|| SimError("layout.csl never calls @set_rectangle".into()))?;
        let mut pes = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                let (file, params) = tiles.remove(&(x, y)).ok_or_else(|| SimError(format!("layout.csl gives PE ({x}, {y}) no code")))?;
                let name = parsed[file].0.clone();
                let mut state = State::default();
                let mut interp = Interp::new(&parsed[file].1, &mut state, costs, 0);
                interp.budget = 10_000_000;
                let at_pe = |e| SimError(format!("PE ({x}, {y}): {}", fault(&name, e)));
                interp.declare(&params).map_err(at_pe)?;
                interp.run_blocks(false).map_err(at_pe)?;
                let arrays: usize = state.arrays.iter().map(|a| a.bytes()).sum();
                if arrays + config.code_bytes > config.pe_sram_bytes {
                    return Err(SimError(format!(
                        "PE ({x}, {y}) needs {} bytes of SRAM ({arrays} of arrays, {} assumed for code); a PE has {}",
                        arrays + config.code_bytes,
                        config.code_bytes,
                        config.pe_sram_bytes
                    )));
                }
                pes.push(Pe { file, state, busy_until: 0, done: false, inbox: HashMap::new(), senders: HashMap::new(), waiting: Vec::new() });
            }
        }
        Ok(Wafer { config: config.clone(), files: std::sync::Arc::new(parsed), width, height, pes, routes, exported })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    fn pe_index(&self, x: usize, y: usize) -> usize {
        y * self.width + x
    }

    fn symbol(&self, x: usize, y: usize, symbol: &str) -> Result<usize, SimError> {
        if x >= self.width || y >= self.height {
            return Err(SimError(format!("PE ({x}, {y}) is outside the {} x {} rectangle", self.width, self.height)));
        }
        if !self.exported.iter().any(|n| n == symbol) {
            return Err(SimError(format!("layout.csl exports no `{symbol}`")));
        }
        match self.pes[self.pe_index(x, y)].state.exports.get(symbol) {
            Some(Value::Array(a)) => Ok(*a),
            _ => Err(SimError(format!("PE ({x}, {y}) exports no array `{symbol}`"))),
        }
    }

    /// The host's memcpy into PE (x, y)'s exported array `symbol` (raw
    /// element bits), from its start.
    pub fn write(&mut self, x: usize, y: usize, symbol: &str, data: &[u32]) -> Result<(), SimError> {
        let a = self.symbol(x, y, symbol)?;
        let i = self.pe_index(x, y);
        let array = &mut self.pes[i].state.arrays[a];
        if data.len() > array.data.len() {
            return Err(SimError(format!("{} elements into `{symbol}` of PE ({x}, {y}), which has {}", data.len(), array.data.len())));
        }
        array.data[..data.len()].copy_from_slice(data);
        Ok(())
    }

    /// The f32 values of PE (x, y)'s exported array `symbol`.
    pub fn read_f32(&self, x: usize, y: usize, symbol: &str) -> Result<Vec<f32>, SimError> {
        let a = self.symbol(x, y, symbol)?;
        let array = &self.pes[self.pe_index(x, y)].state.arrays[a];
        Ok((0..array.data.len()).map(|i| array.get_f32(i)).collect())
    }

    /// Bytes of SRAM the most loaded PE's arrays take.
    pub fn max_array_bytes(&self) -> usize {
        self.pes.iter().map(|p| p.state.arrays.iter().map(|a| a.bytes()).sum::<usize>()).max().unwrap_or(0)
    }

    /// Calls the exported function `function` on every PE at cycle 0 (as
    /// memcpy's launch does) and runs until the wafer is quiet.
    pub fn launch(&mut self, function: &str) -> Result<Stats, SimError> {
        self.launch_region(function, 0, 0, self.width, self.height)
    }

    /// [`Wafer::launch`] on the PEs of one region (`width × height` at
    /// (x0, y0)); the rest of the wafer keeps its state.
    pub fn launch_region(&mut self, function: &str, x0: usize, y0: usize, width: usize, height: usize) -> Result<Stats, SimError> {
        let in_region = |i: usize, w: usize| {
            let (x, y) = (i % w, i / w);
            (x0..x0 + width).contains(&x) && (y0..y0 + height).contains(&y)
        };
        let mut queue: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
        let mut actions: HashMap<u64, Action> = HashMap::new();
        let mut seq = 0u64;
        let mut stats = Stats { pes: (width * height) as u64, ..Stats::default() };
        let w = self.width;
        for (i, pe) in self.pes.iter_mut().enumerate() {
            if !in_region(i, w) {
                continue;
            }
            if !matches!(pe.state.exports.get(function), Some(Value::Func(_))) {
                let (x, y) = (i % self.width, i / self.width);
                return Err(SimError(format!("PE ({x}, {y}) exports no function `{function}`")));
            }
            pe.busy_until = 0;
            pe.done = false;
            pe.senders.clear();
            queue.push(Reverse((0, seq, i)));
            actions.insert(seq, Action::Call(function.to_string()));
            seq += 1;
        }
        let costs = Costs { scalar: self.config.scalar_op_cycles, dsd_element: self.config.dsd_cycles_per_element };
        while let Some(Reverse((cycle, id, i))) = queue.pop() {
            let action = actions.remove(&id).expect("every queued action is recorded");
            let (x, y) = (i % self.width, i / self.width);
            let pe = &mut self.pes[i];
            let start = cycle.max(pe.busy_until) + self.config.task_switch_cycles;
            let files = std::sync::Arc::clone(&self.files);
            let (name, file) = (&files[pe.file].0, &files[pe.file].1);
            let routine = match action {
                Action::Call(f) => f,
                Action::Task(task) => pe.state.tasks.get(&task).cloned().ok_or_else(|| SimError(format!("PE ({x}, {y}) at cycle {cycle}: local task id {task} is activated but bound to no task")))?,
            };
            let mut interp = Interp::new(file, &mut pe.state, costs, start);
            interp.budget = 1_000_000_000;
            interp.call_named(&routine, Pos::default()).map_err(|e| SimError(format!("PE ({x}, {y}) at cycle {start}, in `{routine}`: {}", fault(name, e))))?;
            let (end, effects) = (interp.cycle, std::mem::take(&mut interp.effects));
            pe.busy_until = end;
            stats.busy += end - start;
            for effect in effects {
                match effect {
                    Effect::Activate { task, cycle } => {
                        queue.push(Reverse((cycle, seq, i)));
                        actions.insert(seq, Action::Task(task));
                        seq += 1;
                    }
                    Effect::Done { .. } => self.pes[i].done = true,
                    Effect::Send { color, values, cycle, activate, pos } => {
                        let sent = values.len() as u64;
                        let reached = self.deliver(x, y, color, &values, cycle).map_err(|e| SimError(format!("{name}:{pos}: {e}")))?;
                        stats.wavelets += sent * reached.len() as u64;
                        for d in reached {
                            for (cycle, task) in self.complete(d)? {
                                queue.push(Reverse((cycle, seq, d)));
                                actions.insert(seq, Action::Task(task));
                                seq += 1;
                            }
                        }
                        if let Some(task) = activate {
                            queue.push(Reverse((cycle + sent, seq, i)));
                            actions.insert(seq, Action::Task(task));
                            seq += 1;
                        }
                    }
                    Effect::Receive { color, extent, dest, other, op, cycle, activate, pos } => {
                        self.pes[i].waiting.push(Waiting { color, extent, dest, other, op, cycle, activate, pos });
                        for (cycle, task) in self.complete(i)? {
                            queue.push(Reverse((cycle, seq, i)));
                            actions.insert(seq, Action::Task(task));
                            seq += 1;
                        }
                    }
                    Effect::Rectangle(..) | Effect::TileCode { .. } | Effect::Route { .. } | Effect::ExportName { .. } => {
                        return Err(SimError(format!("PE ({x}, {y}): a layout builtin ran in a PE program")));
                    }
                }
            }
            stats.cycles = stats.cycles.max(end);
        }
        for (i, pe) in self.pes.iter().enumerate() {
            if !in_region(i, w) {
                continue;
            }
            let (x, y) = (i % self.width, i / self.width);
            let name = &self.files[pe.file].0;
            if let Some(w) = pe.waiting.first() {
                let arrived = pe.inbox.get(&w.color).map_or(0, |q| q.len());
                return Err(SimError(format!(
                    "deadlock: PE ({x}, {y}) waits from cycle {} for {} wavelets of colour {} ({arrived} arrived) ({name}:{})",
                    w.cycle, w.extent, w.color, w.pos
                )));
            }
            if let Some((color, q)) = pe.inbox.iter().find(|(_, q)| !q.is_empty()) {
                return Err(SimError(format!("PE ({x}, {y}) received {} wavelets of colour {color} that no operation read (the first at cycle {})", q.len(), q[0].0)));
            }
            if !pe.done {
                return Err(SimError(format!("PE ({x}, {y}) went quiet without finishing (unblock_cmd_stream) by cycle {}", stats.cycles)));
            }
        }
        Ok(stats)
    }

    /// Sends `values` from PE (x, y) on `color` from `cycle`; returns the
    /// PEs whose ramps received them.
    fn deliver(&mut self, x: usize, y: usize, color: u32, values: &[u32], cycle: u64) -> Result<Vec<usize>, String> {
        let mut reached = Vec::new();
        let mut stack = vec![(x, y, Dir::Ramp, 0u64)];
        let limit = (self.width + self.height) as u64 + 1;
        while let Some((px, py, from, hops)) = stack.pop() {
            if hops > limit {
                return Err(format!("colour {color} from PE ({x}, {y}) runs in a loop"));
            }
            let route = self.routes.get(&(px, py, color)).ok_or_else(|| format!("a wavelet of colour {color} from PE ({x}, {y}) reaches PE ({px}, {py}), which has no route for it (cycle {cycle})"))?;
            if !route.rx.contains(&from) {
                return Err(format!(
                    "route conflict at PE ({px}, {py}), cycle {}: a wavelet of colour {color} from {} arrives, its route takes {}",
                    cycle + hops * self.config.hop_cycles,
                    from.name(),
                    route.rx.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ")
                ));
            }
            for &d in &route.tx {
                let next = match d {
                    Dir::Ramp => {
                        reached.push((px, py, hops));
                        continue;
                    }
                    Dir::East => (px + 1 < self.width).then(|| (px + 1, py)),
                    Dir::West => px.checked_sub(1).map(|nx| (nx, py)),
                    Dir::South => (py + 1 < self.height).then(|| (px, py + 1)),
                    Dir::North => py.checked_sub(1).map(|ny| (px, ny)),
                };
                let (nx, ny) = next.ok_or_else(|| format!("colour {color} leaves the rectangle {} of PE ({px}, {py})", d.name().to_lowercase()))?;
                stack.push((nx, ny, d.opposite(), hops + 1));
            }
        }
        let mut out = Vec::with_capacity(reached.len());
        for (px, py, hops) in reached {
            let i = self.pe_index(px, py);
            let pe = &mut self.pes[i];
            if let Some(&(sx, sy)) = pe.senders.get(&color) {
                if (sx, sy) != (x, y) {
                    return Err(format!("route conflict at PE ({px}, {py}): PEs ({sx}, {sy}) and ({x}, {y}) both send it colour {color}"));
                }
            }
            pe.senders.insert(color, (x, y));
            let latency = 2 * self.config.ramp_cycles + hops * self.config.hop_cycles;
            let queue = pe.inbox.entry(color).or_default();
            queue.extend(values.iter().enumerate().map(|(k, &bits)| (cycle + k as u64 + latency, bits)));
            out.push(i);
        }
        Ok(out)
    }

    /// Completes PE i's waiting operations whose wavelets have all arrived;
    /// returns the tasks they activate, with the cycles.
    fn complete(&mut self, i: usize) -> Result<Vec<(u64, u32)>, SimError> {
        let per = self.config.dsd_cycles_per_element;
        let pe = &mut self.pes[i];
        let mut activations = Vec::new();
        let mut k = 0;
        while k < pe.waiting.len() {
            let w = &pe.waiting[k];
            let ready = pe.inbox.get(&w.color).map_or(0, |q| q.len());
            if ready < w.extent {
                k += 1;
                continue;
            }
            let w = pe.waiting.remove(k);
            let queue = pe.inbox.get_mut(&w.color).expect("checked");
            let mut t = w.cycle;
            let Dsd::Mem { array, offset, stride, .. } = w.dest else { unreachable!("a receive lands in memory") };
            for e in 0..w.extent {
                let (arrival, bits) = queue.pop_front().expect("counted");
                t = (t + per).max(arrival);
                let value = f32::from_bits(bits);
                let result = match (w.op, &w.other) {
                    (FabricOp::Move, _) => value,
                    (FabricOp::Add, Some(Dsd::Mem { array: a, offset: o, stride: s, .. })) => pe.state.arrays[*a].get_f32((o + s * e as i64) as usize) + value,
                    (FabricOp::Add, _) => pe.state.arrays[array].get_f32((offset + stride * e as i64) as usize) + value,
                };
                let at = (offset + stride * e as i64) as usize;
                pe.state.arrays[array].data[at] = result.to_bits();
            }
            pe.busy_until = pe.busy_until.max(t);
            if let Some(task) = w.activate {
                activations.push((t, task));
            }
        }
        Ok(activations)
    }
}

impl From<SimError> for String {
    fn from(e: SimError) -> String {
        e.0
    }
}
