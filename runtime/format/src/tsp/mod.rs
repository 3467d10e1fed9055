//! The TSP target's code object: the machine description a program is
//! scheduled for ([`config`]), the program itself ([`program`]: every
//! instruction with its issue cycle, unit and stream operands, as text),
//! and how coded weights sit in its SRAM ([`tile`]). Shared by the
//! compiler, which writes them, and q35-rt's simulator, which runs them.

pub mod config;
pub mod image;
pub mod program;
pub mod tile;

pub use config::{Delays, TspConfig};
pub use program::{scalar_vectors, Elem, Form, Instr, Io, Op, Operand, ParseError, Placement, Program, RowFunction, Segment, Unit};
