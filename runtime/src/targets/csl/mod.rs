//! The CSL target: a simulator of a wafer of PEs that runs the CSL text
//! q35c emitted ([`ast`] and [`parse`]: the language subset; [`interp`]:
//! one PE's statements, expressions and DSD operations; [`wafer`]: the
//! layout, the fabric's colours and routes, tasks in cycle order).

pub mod ast;
pub mod interp;
pub mod parse;
pub mod value;
pub mod wafer;
