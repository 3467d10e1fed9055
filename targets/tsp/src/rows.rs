//! One VXM row instruction with its operands brought from SRAM and its
//! result put back: reads (or gathers by an index vector) → the VXM op →
//! a write (or a scatter). The chain is placed rigidly: every read is
//! timed so its vectors reach the VXM on the cycles the op takes them;
//! reads from the same MEM slice go one after another.

use crate::schedule::{Input, Reservations, Step};
use q35_format::tsp::{Elem, Instr, Op, TspConfig, Unit};

/// Where an operand comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// `len` vectors from `addr` of `slice` (`stride` rows apart, 0: back to back).
    Rows { slice: usize, addr: u32, stride: u32, elem: Elem, len: u32 },
    /// `items` items of `per` vectors, item j at `addr + index_j·stride`,
    /// the indices an i32 vector at `index`.
    /// The rows are addressed over `slices` slices from `slice` (a table
    /// striped over whole slices, row r of the stripe at slice + r / rows
    /// per slice).
    Gathered { index: (usize, u32), slice: usize, slices: u16, addr: u32, stride: u32, per: u16, elem: Elem, items: u32 },
}

/// Where the result goes.
#[derive(Clone, Copy, Debug)]
pub enum Sink {
    Rows { slice: usize, addr: u32, stride: u32 },
    Scattered { index: (usize, u32), slice: usize, addr: u32, stride: u32, per: u16 },
}

/// Places `op` reading `sources` and writing `len` vectors of `elem` to
/// `sink`, at the earliest cycle from `not_before`.
pub fn place(
    config: &TspConfig,
    reservations: &mut Reservations,
    op: Op,
    sources: &[Source],
    (elem, len): (Elem, u32),
    sink: Sink,
    not_before: u64,
) -> Result<Vec<Instr>, String> {
    let dm = config.delays.mem_read;
    let mut steps: Vec<Step> = Vec::new();
    // Per MEM slice, the first cycle (relative) it is free again: uses of
    // one slice within the chain never overlap.
    let mut free: Vec<(usize, u64)> = Vec::new();
    fn at_least(free: &[(usize, u64)], slice: usize, t: u64) -> u64 {
        free.iter().find(|(s, _)| *s == slice).map_or(t, |&(_, f)| f.max(t))
    }
    fn taken(free: &mut Vec<(usize, u64)>, slice: usize, end: u64) {
        match free.iter_mut().find(|(s, _)| *s == slice) {
            Some(entry) => entry.1 = entry.1.max(end),
            None => free.push((slice, end)),
        }
    }
    // (step producing the operand, when its vectors arrive, how many).
    let mut arrivals: Vec<(usize, u64, u32)> = Vec::new();
    for source in sources {
        match *source {
            Source::Rows { slice, addr, stride, elem, len } => {
                let at = at_least(&free, slice, 0);
                taken(&mut free, slice, at + dm + len as u64);
                steps.push(Step { unit: Unit::Mem(slice as u16), offset: at, op: Op::Read { addr, stride }, inputs: vec![], outputs: vec![(elem, dm, len)] });
                arrivals.push((steps.len() - 1, at + dm, len));
            }
            Source::Gathered { index, slice, slices, addr, stride, per, elem, items } => {
                let len = items * per as u32;
                // The gather takes the index vector on its issue cycle.
                let gather_at = at_least(&free, slice, at_least(&free, index.0, 0) + dm);
                let index_at = gather_at - dm;
                taken(&mut free, index.0, index_at + dm + 1);
                taken(&mut free, slice, gather_at + 1 + dm + len as u64);
                steps.push(Step { unit: Unit::Mem(index.0 as u16), offset: index_at, op: Op::Read { addr: index.1, stride: 0 }, inputs: vec![], outputs: vec![(Elem::I32, dm, 1)] });
                steps.push(Step {
                    unit: Unit::Mem(slice as u16),
                    offset: gather_at,
                    op: Op::Gather { addr, stride, per, slices },
                    inputs: vec![Input { from: (steps.len() - 1, 0), at: 0 }],
                    outputs: vec![(elem, 1 + dm, len)],
                });
                arrivals.push((steps.len() - 1, gather_at + 1 + dm, len));
            }
        }
    }
    let issue = arrivals.iter().map(|&(_, at, _)| at).min().unwrap_or(0);
    let last = arrivals.iter().map(|&(_, at, len)| at + len as u64).max().unwrap_or(issue);
    // The result leaves the VXM once its inputs are in and the sink is free.
    let mut done = last + config.delays.vxm;
    done = match sink {
        Sink::Rows { slice, .. } => at_least(&free, slice, done),
        Sink::Scattered { index, slice, .. } => at_least(&free, slice, at_least(&free, index.0, done - dm) + dm),
    };
    let vxm = steps.len();
    steps.push(Step {
        unit: Unit::Vxm(0),
        offset: issue,
        op,
        inputs: arrivals.iter().map(|&(step, at, _)| Input { from: (step, 0), at: at - issue }).collect(),
        outputs: vec![(elem, done - issue, len)],
    });
    match sink {
        Sink::Rows { slice, addr, stride } => {
            steps.push(Step { unit: Unit::Mem(slice as u16), offset: done, op: Op::Write { addr, stride }, inputs: vec![Input { from: (vxm, 0), at: 0 }], outputs: vec![] });
        }
        Sink::Scattered { index, slice, addr, stride, per } => {
            // The index vector arrives with the data's first vector.
            steps.push(Step { unit: Unit::Mem(index.0 as u16), offset: done - dm, op: Op::Read { addr: index.1, stride: 0 }, inputs: vec![], outputs: vec![(Elem::I32, dm, 1)] });
            steps.push(Step {
                unit: Unit::Mem(slice as u16),
                offset: done,
                op: Op::Scatter { addr, stride, per },
                inputs: vec![Input { from: (steps.len() - 1, 0), at: 0 }, Input { from: (vxm, 0), at: 0 }],
                outputs: vec![],
            });
        }
    }
    reservations.place(&steps, not_before)
}
