//! The static schedule: every instruction gets its issue cycle, unit and
//! streams at compile time, so that each operand is on its stream on
//! exactly the cycle its reader takes it, no stream carries two vectors in
//! one cycle, and no unit runs two instructions at once. [`Reservations`]
//! holds what is taken; a chain of instructions whose operands pass from
//! one to the next on streams is placed rigidly, at the earliest cycle
//! where all of it fits.

use q35_format::tsp::{Elem, Instr, Op, Operand, TspConfig, Unit};
use std::collections::HashMap;

/// How far past its earliest cycle a chain is searched for.
const SEARCH_LIMIT: u64 = 1 << 24;

/// Busy intervals `[start, end)`, kept sorted by start.
#[derive(Default, Clone)]
struct Intervals(Vec<(u64, u64)>);

impl Intervals {
    fn free(&self, start: u64, end: u64) -> bool {
        // The first interval ending after `start` must begin at or after `end`.
        let i = self.0.partition_point(|&(_, e)| e <= start);
        self.0.get(i).is_none_or(|&(s, _)| s >= end)
    }

    fn take(&mut self, start: u64, end: u64) {
        let i = self.0.partition_point(|&(s, _)| s < start);
        self.0.insert(i, (start, end));
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
    matches!(op, Op::Install { .. }) as u8
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

    fn unit_free(&self, unit: Unit, port: u8, start: u64, end: u64) -> bool {
        self.units.get(&(unit, port)).is_none_or(|i| i.free(start, end))
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
    /// instructions (not yet reserved).
    fn try_place(&self, chain: &[Step], t: u64) -> Option<Vec<Instr>> {
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
                let stream = self.free_stream(elem, start, end, &taken)?;
                taken.push((stream, elem.streams(), start, end));
                outputs.push(Operand { stream, elem, at, len });
            }
            let mut instr = Instr { cycle: issue, unit: step.unit, op: step.op.clone(), inputs, outputs };
            let (start, end) = (issue, instr.end());
            let p = port(&step.op);
            let clash = |unit: Unit| units_taken.iter().any(|&(u, q, a, e)| u == unit && q == p && a < end && start < e);
            instr.unit = match step.unit {
                Unit::Vxm(_) => Unit::Vxm((0..self.vxm_alus).find(|&a| self.unit_free(Unit::Vxm(a), p, start, end) && !clash(Unit::Vxm(a)))?),
                unit if self.unit_free(unit, p, start, end) && !clash(unit) => unit,
                _ => return None,
            };
            units_taken.push((instr.unit, p, start, end));
            placed.push(instr);
        }
        Some(placed)
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
            if let Some(instrs) = self.try_place(chain, t) {
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
            t += 1;
        }
    }
}
