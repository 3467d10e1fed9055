//! The static schedule: every instruction gets its issue cycle, unit and
//! streams at compile time, so that each operand is on its stream on
//! exactly the cycle its reader takes it, no stream carries two vectors in
//! one cycle, and no unit runs two instructions at once. [`Reservations`]
//! holds what is taken; a chain of instructions whose operands pass from
//! one to the next on streams is placed rigidly, at the earliest cycle
//! where all of it fits.

use q35_format::tsp::{Elem, Instr, Op, Operand, TspConfig, Unit};
use std::collections::{BTreeMap, HashMap};

/// How far past its earliest cycle a chain is searched for.
const SEARCH_LIMIT: u64 = 1 << 24;

/// Busy intervals `[start, end)`, disjoint, by start (a tree: a big
/// model's unit holds hundreds of thousands, taken out of order).
#[derive(Default, Clone)]
struct Intervals(BTreeMap<u64, u64>);

impl Intervals {
    fn free(&self, start: u64, end: u64) -> bool {
        self.blocked_until(start, end).is_none()
    }

    /// If `[start, end)` overlaps a busy interval, the end of one that it
    /// overlaps: no window starting before that is free either. Disjoint,
    /// so the last interval starting before `end` ends last among those.
    fn blocked_until(&self, start: u64, end: u64) -> Option<u64> {
        self.0.range(..end).next_back().map(|(_, &e)| e).filter(|&e| e > start)
    }

    fn take(&mut self, start: u64, end: u64) {
        self.0.insert(start, end);
    }
}

/// What is taken: units (an MXM plane's install and multiply ports apart)
/// and byte-streams, over cycles.
pub struct Reservations {
    streams: usize,
    vxm_alus: u16,
    units: HashMap<(Unit, u8), Intervals>,
    stream_use: Vec<Intervals>,
}

/// An instruction of a chain before placement: its unit (a VXM instruction
/// takes whichever ALU is free), its offset from the chain's start, its
/// operation, and operands whose streams are chosen at placement. An
/// input with `from = Some((i, o))` is output `o` of the chain's
/// instruction `i` (the same stream and cycles).
pub struct Step {
    pub unit: Unit,
    pub offset: u64,
    pub op: Op,
    pub inputs: Vec<Input>,
    pub outputs: Vec<(Elem, u64, u32)>,
}

/// An input operand: a chain-internal one names its producer.
pub struct Input {
    pub from: (usize, usize),
    pub at: u64,
}

fn port(op: &Op) -> u8 {
    matches!(op, Op::Install { .. } | Op::Recv) as u8
}

impl Reservations {
    pub fn new(config: &TspConfig) -> Self {
        Reservations {
            streams: config.streams(),
            vxm_alus: config.vxm_alus as u16,
            units: HashMap::new(),
            stream_use: vec![Intervals::default(); config.streams()],
        }
    }

    /// When `unit`'s `port` is busy over `[start, end)`: the end of a
    /// reservation in the way.
    fn unit_blocked(&self, unit: Unit, port: u8, start: u64, end: u64) -> Option<u64> {
        self.units.get(&(unit, port)).and_then(|i| i.blocked_until(start, end))
    }

    /// A stream group (`elem.streams()` byte-streams from a multiple of
    /// their count) free over `[start, end)`, not among `taken`.
    fn free_stream(&self, elem: Elem, start: u64, end: u64, taken: &[(u16, u16, u64, u64)]) -> Option<u16> {
        let width = elem.streams();
        (0..self.streams as u16).step_by(width as usize).find(|&s| {
            (s..s + width).all(|b| {
                self.stream_use[b as usize].free(start, end)
                    && !taken.iter().any(|&(ts, tw, a, e)| b >= ts && b < ts + tw && a < end && start < e)
            })
        })
    }

    /// Places `chain` at cycle `t` if everything fits; returns the
    /// instructions (not yet reserved), or the next cycle worth trying
    /// (past a unit's reservation that no cycle before can avoid).
    fn try_place(&self, chain: &[Step], t: u64) -> Result<Vec<Instr>, u64> {
        let mut placed: Vec<Instr> = Vec::with_capacity(chain.len());
        // Streams chosen so far in this chain: (first byte-stream, width, start, end).
        let mut taken: Vec<(u16, u16, u64, u64)> = Vec::new();
        let mut units_taken: Vec<(Unit, u8, u64, u64)> = Vec::new();
        for step in chain {
            let issue = t + step.offset;
            let mut inputs = Vec::with_capacity(step.inputs.len());
            for input in &step.inputs {
                let (i, o) = input.from;
                let produced: &Operand = &placed[i].outputs[o];
                let first = placed[i].cycle + produced.at;
                // A rigid chain: the reader takes the vectors when they come.
                if first != issue + input.at {
                    panic!("chain inputs must meet their producers' outputs (internal schedule error)");
                }
                inputs.push(Operand { at: input.at, ..*produced });
            }
            let mut outputs = Vec::with_capacity(step.outputs.len());
            for &(elem, at, len) in &step.outputs {
                let (start, end) = (issue + at, issue + at + len as u64);
                let stream = self.free_stream(elem, start, end, &taken).ok_or(t + 1)?;
                taken.push((stream, elem.streams(), start, end));
                outputs.push(Operand { stream, elem, at, len });
            }
            let mut instr = Instr { cycle: issue, unit: step.unit, op: step.op.clone(), inputs, outputs };
            let (start, end) = (issue, instr.end());
            let p = port(&step.op);
            let clash = |unit: Unit| units_taken.iter().any(|&(u, q, a, e)| u == unit && q == p && a < end && start < e);
            // The chain moves rigidly: a unit busy until e frees it for
            // this step from t + (e - start) on.
            let past = |e: u64| t + (e - start);
            instr.unit = match step.unit {
                Unit::Vxm(_) => {
                    let mut next = u64::MAX;
                    let free = (0..self.vxm_alus).find(|&a| match self.unit_blocked(Unit::Vxm(a), p, start, end) {
                        Some(e) => {
                            next = next.min(past(e));
                            false
                        }
                        None if clash(Unit::Vxm(a)) => {
                            next = t + 1;
                            false
                        }
                        None => true,
                    });
                    Unit::Vxm(free.ok_or(next)?)
                }
                unit => match self.unit_blocked(unit, p, start, end) {
                    Some(e) => return Err(past(e)),
                    None if clash(unit) => return Err(t + 1),
                    None => unit,
                },
            };
            units_taken.push((instr.unit, p, start, end));
            placed.push(instr);
        }
        Ok(placed)
    }

    /// Places `chain` at the earliest cycle from `not_before` where it
    /// fits, reserves it and returns its instructions.
    pub fn place(&mut self, chain: &[Step], not_before: u64) -> Result<Vec<Instr>, String> {
        let mut t = not_before;
        loop {
            if t > not_before + SEARCH_LIMIT {
                let ops: Vec<String> = chain.iter().map(|s| format!("{} {:?}", s.unit, s.op)).collect();
                return Err(format!("no cycle within {SEARCH_LIMIT} of {not_before} fits the chain [{}]", ops.join("; ")));
            }
            let instrs = match self.try_place(chain, t) {
                Ok(instrs) => instrs,
                Err(next) => {
                    t = next.max(t + 1);
                    continue;
                }
            };
            for instr in &instrs {
                self.units.entry((instr.unit, port(&instr.op))).or_default().take(instr.cycle, instr.end());
                for o in &instr.outputs {
                    let (start, end) = o.cycles(instr.cycle);
                    for b in o.stream..o.stream + o.elem.streams() {
                        self.stream_use[b as usize].take(start, end);
                    }
                }
            }
            return Ok(instrs);
        }
    }
}
