//! The `q35-rt` command line: one module per subcommand, each a thin layer
//! over the library that adds what a person needs to read (context naming
//! the file, figures on stdout, progress on stderr).

mod bench;
mod calibrate;
mod check;
mod info;
mod perplexity;
mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use q35_rt::tokenizer::Tokenizer;
use q35_rt::Session;

/// Run compiled q35 models: generate text, benchmark, measure perplexity.
#[derive(Parser, Debug)]
#[command(name = "q35-rt", version, about)]
struct Cli {
    /// More logging (-v info, -vv debug, -vvv a trace span per dispatch); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate text from a prompt
    Run(run::Args),
    /// Prefill and decode speed, and decode against the memory-bandwidth roofline
    Bench(bench::Args),
    /// Perplexity over a text file (llama.cpp's method)
    Perplexity(perplexity::Args),
    /// Mean square of every matrix's input features on a text: the importance file for `q35c --quant-importance`
    Calibrate(calibrate::Args),
    /// Describe an artifact: target, model, quantization, plan, toolchain
    Info(info::Args),
    /// Compare the compiled code with the reference forward pass on the artifact's own weights
    Check(check::Args),
}

/// Options every command that runs a model takes.
#[derive(clap::Args, Debug)]
struct ModelArgs {
    /// The compiled model (`q35c ... --target cpu -o model.q35`; `--target nvptx` with the `cuda` feature)
    model: PathBuf,
    /// Threads per dispatch of a cpu artifact (default: one per core; at most
    /// four per core)
    #[arg(long, default_value_t = 0, value_parser = parse_threads)]
    threads: usize,
}

impl ModelArgs {
    fn load(&self) -> Result<Session> {
        load_session(&self.model, self.threads)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Info(args) => info::run(args),
        Command::Check(args) => check::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", report(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Library errors already quote
/// their source in their own message; a cause that adds nothing is skipped.
fn report(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // At -vvv every span (one per dispatch) is printed when it closes,
    // with the time spent in it.
    let spans = match verbose {
        0..=2 => tracing_subscriber::fmt::format::FmtSpan::NONE,
        _ => tracing_subscriber::fmt::format::FmtSpan::CLOSE,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(spans)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Loads a session; errors already name the file.
/// `--threads`: more than four threads per core only adds contention (and
/// a hundred thousand cannot be started at all), so it is refused.
fn parse_threads(text: &str) -> Result<usize, String> {
    let threads: usize = text.parse().map_err(|e| format!("{e}"))?;
    let cores = q35_rt::thread_pool::available_threads();
    if threads > 4 * cores {
        return Err(format!(
            "{threads} threads on {cores} cores: at most {} (four per core); 0 means one per core",
            4 * cores
        ));
    }
    Ok(threads)
}

fn load_session(path: &Path, threads: usize) -> Result<Session> {
    let started = std::time::Instant::now();
    let session = Session::load(path, threads)?;
    tracing::info!(
        "loaded {} in {:.2} s ({})",
        path.display(),
        started.elapsed().as_secs_f64(),
        session.backend()
    );
    Ok(session)
}

/// The artifact's tokenizer, or an error saying it has none.
fn tokenizer(session: &Session) -> Result<Tokenizer> {
    session.tokenizer()?.with_context(|| {
        format!(
            "{}: the artifact has no tokenizer (the model was compiled without tokenizer.json)",
            session.artifact().path()
        )
    })
}

/// `bytes` in MiB.
fn mib(bytes: f64) -> f64 {
    bytes / (1u64 << 20) as f64
}
