//! `q35-rt perplexity`: perplexity of a text file, computed as llama.cpp's
//! `llama-perplexity` does (see `q35_rt::perplexity`), so the figures can
//! be put beside llama.cpp's.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use q35_rt::calibrate::{text_tokens, TextTokens};
use q35_rt::perplexity::{perplexity, PerplexityOptions};

use super::{tokenizer, ModelArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to score (UTF-8)
    #[arg(long)]
    text: PathBuf,
    /// Tokens per window (default: 512, or the artifact's context if shorter)
    #[arg(long)]
    ctx: Option<usize>,
    /// Distance between window starts (default: --ctx, non-overlapping windows)
    #[arg(long)]
    stride: Option<usize>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.text)
        .with_context(|| format!("cannot read {}", args.text.display()))?;
    let mut session = args.model.load()?;
    let tokenizer = tokenizer(&session)?;
    let path = session.artifact().path().to_string();
    let context = session.context_length();
    let n_ctx = args.ctx.unwrap_or(512.min(context));
    if n_ctx > context {
        bail!("{path}: --ctx {n_ctx} is longer than the artifact's context of {context} positions");
    }
    let TextTokens { tokens, bos } = text_tokens(&session, &tokenizer, &text);
    let options = PerplexityOptions {
        n_ctx,
        stride: args.stride,
        bos,
    };
    eprintln!(
        "perplexity of {} ({} tokens) with {path}: windows of {n_ctx}, stride {}",
        args.text.display(),
        tokens.len(),
        args.stride.unwrap_or(n_ctx)
    );
    let started = Instant::now();
    let vocab = session.vocab_size();
    let report = perplexity(&tokens, vocab, &options, |window_tokens| {
        eprint!(".");
        let _ = std::io::stderr().flush();
        session.reset();
        session.forward(window_tokens, 0).map(<[f32]>::to_vec)
    })
    .with_context(|| format!("perplexity of {}", args.text.display()))?;
    eprintln!();
    let running: Vec<String> = report
        .running_ppl
        .iter()
        .enumerate()
        .map(|(i, p)| format!("[{}]{p:.4}", i + 1))
        .collect();
    eprintln!("{}", running.join(","));
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "perplexity: {:.4} ({} tokens scored in {} windows, {:.1} s, {:.1} tok/s)",
        report.ppl,
        report.scored_tokens,
        report.windows,
        seconds,
        (report.windows * n_ctx) as f64 / seconds.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}
