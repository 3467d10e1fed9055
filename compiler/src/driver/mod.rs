//! Command-line drivers: argument parsing, logging, reading input and
//! writing output files. The binaries in `src/bin/` only call these.

pub mod diagnostics;
pub mod opt;
pub mod q35c;

use anyhow::{Context as _, Result};
use std::path::Path;

/// Sets up `tracing`: `-v` gives info, `-vv` debug, `-vvv` trace; `RUST_LOG`
/// overrides. Logs go to stderr so they never mix with emitted IR.
pub fn init_logging(verbosity: u8) {
    let default = match verbosity {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Reads a whole input file, or stdin for `-`.
pub fn read_input(path: &str) -> Result<String> {
    if path == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("failed to read stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("failed to read {path}"))
    }
}

/// Writes `bytes` to `path` (`-`: stdout) through
/// [`q35_format::output`]: atomically for a regular file, in place for a
/// device or FIFO, never over one of `inputs`, never through a planted
/// symlink, and nothing left behind on an error or a signal.
pub fn write_output(path: &str, inputs: &[&Path], bytes: &[u8]) -> Result<()> {
    q35_format::output::write_output(Path::new(path), inputs, bytes)?;
    Ok(())
}
