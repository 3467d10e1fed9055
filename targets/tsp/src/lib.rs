//! The TSP target (a Groq TSP-shaped machine, docs/targets.md): programs
//! in which every instruction has its cycle, functional slice and stream
//! operands fixed at compile time, for the machine a target description
//! names (`q35_format::tsp::TspConfig`). q35-rt's simulator runs the
//! program text cycle by cycle and refuses any operand that is not on its
//! stream on the cycle it is read.
//!
//! Built so far: the coded matmul ([`matmul`]), the work that bounds
//! decode, scheduled with double-buffered weight installs
//! ([`schedule`]). Not yet: the other ops on the VXM, the `Target` trait
//! and artifact, multi-chip partitioning (issue #15).

pub mod matmul;
pub mod rows;
pub mod schedule;

#[cfg(test)]
mod tests;
