//! Command-line drivers: argument parsing, logging, reading input and
//! writing output files. The binaries in `src/bin/` only call these.

pub mod diagnostics;
pub mod opt;
pub mod q35c;

use anyhow::{Context as _, Result};
use std::{io::Write, path::Path};

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

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, then a rename, so a failure never leaves a partial file.
/// `-` writes to stdout.
pub fn write_output(path: &str, bytes: &[u8]) -> Result<()> {
    if path == "-" {
        let mut stdout = std::io::stdout().lock();
        return stdout.write_all(bytes).and_then(|_| stdout.flush()).context("failed to write stdout");
    }
    let target = Path::new(path);
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = target
        .file_name()
        .with_context(|| format!("output path {path} names no file"))?;
    let tmp = dir.join(format!(".{}.tmp{}", file_name.to_string_lossy(), std::process::id()));
    let result = std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, target))
        .with_context(|| format!("failed to write {path}"));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
