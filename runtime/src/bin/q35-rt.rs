//! `q35-rt`: run, benchmark, evaluate and inspect compiled `.q35` models.
//!
//! The command-line code lives in `src/cli/` and is compiled into this
//! binary only, so the library keeps typed errors and no CLI dependencies
//! in its API.

#[path = "../cli/mod.rs"]
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
