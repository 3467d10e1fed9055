//! `q35-rt calibrate`: the mean square of every matrix's input features on
//! a text, written as the importance file `q35c --quant-importance` reads
//! (see `q35_rt::calibrate`). Run it on an f16 or f32 build of the model.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use q35_rt::calibrate::{calibrate_file, write_importance, CalibrationOptions, DEFAULT_TOKENS};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The calibration text (UTF-8); use a different document from the one you evaluate on
    #[arg(long)]
    text: PathBuf,
    /// The importance file to write (JSON, written atomically)
    #[arg(short, long)]
    output: PathBuf,
    /// Tokens of the text to run, from its start
    #[arg(long, default_value_t = DEFAULT_TOKENS)]
    tokens: usize,
    /// Tokens per window, each from an empty cache (default: 512, or the artifact's context if shorter)
    #[arg(long, alias = "ctx")]
    context: Option<usize>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    // Read the text before loading the model: a wrong path fails at once.
    std::fs::metadata(&args.text)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.text.display()))?;
    // And an output that cannot be written fails before the run.
    let dir = match args.output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        anyhow::bail!(
            "cannot write {}: {} is not a directory",
            args.output.display(),
            dir.display()
        );
    }
    q35_format::output::check_output(&args.output, &[args.model.model.as_path(), &args.text])?;
    let mut session = args.model.load()?;
    let options = CalibrationOptions {
        tokens: args.tokens,
        context: args.context,
        hessians: false,
    };
    let started = Instant::now();
    let report = calibrate_file(&mut session, &args.text, &options, |_, _| {
        eprint!(".");
        let _ = std::io::stderr().flush();
    })?;
    eprintln!();
    write_importance(&args.output, &report.importance)?;
    let note = if report.tokens < args.tokens {
        format!(" (the text has only {} tokens)", report.text_tokens)
    } else {
        String::new()
    };
    println!(
        "calibrated {} matrices on {} tokens of {}{note} in {} window(s) of {} with {}, {:.1} s; wrote {}",
        report.importance.len(),
        report.tokens,
        args.text.display(),
        report.windows,
        report.context,
        session.artifact().path(),
        started.elapsed().as_secs_f64(),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
