//! `q35-rt run`: prefill a prompt, then generate, streaming text to stdout.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use q35_rt::chat::{Chat, Message};
use q35_rt::prompt::{adds_bos, prompt_ids};
use q35_rt::sampling::{Sampler, SamplingParams};
use q35_rt::tokenizer::StreamDecoder;

use super::{tokenizer, ModelArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to continue (or, with --chat, the user's message)
    #[arg(long)]
    prompt: String,
    /// Most tokens to generate
    #[arg(short = 'n', long = "tokens", default_value_t = 128)]
    tokens: usize,
    /// Sampling temperature; 0 is greedy
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep only the k most likely tokens (0: all)
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Keep the most likely tokens up to this probability mass
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Seed of the sampler
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Send the prompt as a user's message through the model's chat
    /// template (ChatML if the artifact has none), and stop at the end of
    /// the assistant's turn
    #[arg(long)]
    chat: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    let mut sampler = Sampler::new(params).context("invalid sampling options")?;
    let mut session = args.model.load()?;
    let tokenizer = tokenizer(&session)?;
    let path = session.artifact().path().to_string();
    let config = session.manifest().model.clone();
    let context = session.context_length();

    let chat = match args.chat {
        true => Chat::new(session.artifact().chat_template(), &tokenizer).map_err(|e| anyhow::anyhow!("{path}: {e}"))?,
        false => None,
    };
    if args.chat && chat.is_none() {
        tracing::warn!("--chat: the artifact has no chat template and its tokenizer no ChatML tokens; using the prompt as it is");
    }
    let text = match &chat {
        Some(chat) => chat.prompt(&[Message::new("user", &args.prompt)]).map_err(|e| anyhow::anyhow!("{path}: {e}"))?,
        None => args.prompt.clone(),
    };
    tracing::info!(prompt = %text, "chat prompt");
    // A template that writes the BOS text itself takes no second BOS.
    let template_bos = chat.as_ref().and_then(|c| c.bos_text()).is_some_and(|bos| text.starts_with(bos));
    let add_bos = !template_bos
        && session
            .artifact()
            .tokenizer_json()
            .is_some_and(|json| adds_bos(json, &tokenizer, config.bos_token_id));
    let prompt = prompt_ids(&tokenizer, &text, config.bos_token_id, add_bos);
    if prompt.is_empty() {
        bail!("the prompt is empty (it encodes to no tokens)");
    }
    if prompt.len() > context {
        bail!(
            "{path}: the prompt has {} tokens, but the artifact's context is {context} positions",
            prompt.len()
        );
    }
    let stops: Vec<u32> = config
        .eos_token_id
        .into_iter()
        .chain(chat.iter().flat_map(|c| c.end_of_turn().iter().copied()))
        .collect();
    tracing::info!(tokens = prompt.len(), bos = add_bos, "prompt");

    let started = Instant::now();
    let mut last = session.forward(&prompt, 0)?.to_vec();
    let prefill = started.elapsed();
    last.drain(..last.len() - session.vocab_size());

    let mut stdout = std::io::stdout().lock();
    let mut stream = StreamDecoder::new();
    let (mut decode_time, mut decoded) = (Duration::ZERO, 0usize);
    for generated in 0..args.tokens {
        let position = prompt.len() + decoded;
        let token = sampler.sample(&last).context("choosing the next token")?;
        if stops.contains(&token) {
            break;
        }
        let piece = stream.push(&tokenizer, token)?;
        if !write_piece(&mut stdout, &piece)? {
            break;
        }
        if generated + 1 == args.tokens {
            break;
        }
        if position >= context {
            eprintln!();
            tracing::warn!("stopped at the artifact's context length ({context} positions)");
            break;
        }
        let step = Instant::now();
        last = session.forward(&[token], position)?.to_vec();
        decode_time += step.elapsed();
        decoded += 1;
    }
    let rest = stream.finish();
    write_piece(&mut stdout, &rest)?;
    write_piece(&mut stdout, "\n")?;
    drop(stdout);

    let rate = |tokens: usize, time: Duration| match time.as_secs_f64() {
        t if tokens > 0 && t > 0.0 => format!("{:.1} tok/s", tokens as f64 / t),
        _ => "n/a".to_string(),
    };
    eprintln!(
        "prefill: {} ({} tokens), decode: {} ({} tokens)",
        rate(prompt.len(), prefill),
        prompt.len(),
        rate(decoded, decode_time),
        decoded
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes and flushes; `false` when stdout was closed (`| head`), which
/// ends generation quietly.
fn write_piece(out: &mut impl Write, piece: &str) -> Result<bool> {
    match out.write_all(piece.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}
