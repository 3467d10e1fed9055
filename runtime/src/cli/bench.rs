//! `q35-rt bench`: prefill (pp) and decode (tg) speed, and how close decode
//! comes to the memory-bandwidth roofline of the memory the weights are in.
//!
//! Decode reads every weight once per token, so its ceiling is
//! `bandwidth / weight bytes per token`. The bandwidth is measured in the
//! same run: on the CPU with the same threads, by a streaming read (see
//! `q35_rt::bandwidth`); on a GPU by timed device-to-device copies,
//! counting the bytes read and written (`CudaArtifact::measure_bandwidth`),
//! so the fraction compares like with like.
//!
//! Token ids are pseudo-random (fixed seed) and decode feeds them without
//! sampling: only forward passes are timed, as llama-bench does.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use q35_rt::bandwidth::{median, MeasuredBandwidth};
use q35_rt::sampling::Rng;
use q35_rt::Session;

use super::{mib, ModelArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt tokens for the prefill test
    #[arg(short = 'p', long = "prompt-tokens", default_value_t = 64)]
    prompt_tokens: usize,
    /// Tokens for the decode test
    #[arg(short = 'n', long = "decode-tokens", default_value_t = 32)]
    decode_tokens: usize,
    /// Timed repetitions; figures are medians
    #[arg(short = 'r', long, default_value_t = 5)]
    repetitions: usize,
    /// One JSON object on stdout instead of text
    #[arg(long)]
    json: bool,
}

/// The figures of one bench run.
#[derive(serde::Serialize, Debug)]
struct Report {
    model: String,
    /// What ran the model: `cpu, N threads` or the GPU.
    backend: String,
    /// CPU threads per dispatch (0 on a GPU).
    threads: usize,
    prompt_tokens: usize,
    decode_tokens: usize,
    repetitions: usize,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    prefill_runs_tok_s: Vec<f64>,
    decode_runs_tok_s: Vec<f64>,
    weight_bytes_per_token: usize,
    bandwidth_gb_s: f64,
    bandwidth_runs_gb_s: Vec<f64>,
    bandwidth_buffer_bytes: usize,
    /// How the bandwidth was measured.
    bandwidth_method: String,
    /// decode_tok_s × weight_bytes_per_token / bandwidth, in percent.
    roofline_percent: f64,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.repetitions == 0 {
        bail!("--repetitions must be at least 1");
    }
    if args.prompt_tokens == 0 {
        bail!("--prompt-tokens must be at least 1");
    }
    let mut session = args.model.load()?;
    let context = session.context_length();
    let path = session.artifact().path().to_string();
    let needed = args.prompt_tokens + args.decode_tokens;
    if needed > context {
        bail!(
            "{path}: {} prompt + {} decode tokens need {needed} positions, but the artifact's context is {context}",
            args.prompt_tokens,
            args.decode_tokens
        );
    }
    let vocab = session.vocab_size() as u64;
    let mut rng = Rng::new(0x5135);
    let mut ids =
        |n: usize| -> Vec<u32> { (0..n).map(|_| (rng.next_u64() % vocab) as u32).collect() };
    let prompt = ids(args.prompt_tokens);
    let decode = ids(args.decode_tokens);
    if !args.json {
        eprintln!(
            "bench {path}: {}, pp{} tg{}, median of {}",
            session.backend(),
            args.prompt_tokens,
            args.decode_tokens,
            args.repetitions
        );
    }

    // Warm-up: page in weights, wake the pool, fill caches.
    one_repetition(&mut session, &prompt, &decode[..decode.len().min(4)])?;
    if session.simulated().is_some() {
        return simulated(&mut session, &prompt, &decode, args.json);
    }
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..args.repetitions {
        let (prefill, decode) = one_repetition(&mut session, &prompt, &decode)?;
        pp.push(prefill);
        if let Some(decode) = decode {
            tg.push(decode);
        }
    }
    let measured = measure_bandwidth(&mut session)?;
    let weight_bytes = session.artifact().weight_bytes_per_token();
    let decode_tok_s = median(&tg);
    let roofline = 100.0 * decode_tok_s * weight_bytes as f64 / measured.bytes_per_second;
    let report = Report {
        model: path,
        backend: session.backend(),
        threads: session.threads(),
        prompt_tokens: args.prompt_tokens,
        decode_tokens: args.decode_tokens,
        repetitions: args.repetitions,
        prefill_tok_s: median(&pp),
        decode_tok_s,
        prefill_runs_tok_s: pp,
        decode_runs_tok_s: tg,
        weight_bytes_per_token: weight_bytes,
        bandwidth_gb_s: measured.bytes_per_second / 1e9,
        bandwidth_runs_gb_s: measured.runs.iter().map(|b| b / 1e9).collect(),
        bandwidth_buffer_bytes: measured.buffer_bytes,
        bandwidth_method: measured.method,
        roofline_percent: roofline,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("prefill: {:.1} tok/s", report.prefill_tok_s);
        println!("decode: {:.1} tok/s", report.decode_tok_s);
        println!(
            "weights: {:.1} MiB read per token",
            mib(weight_bytes as f64)
        );
        println!("bandwidth: {:.1} GB/s", report.bandwidth_gb_s);
        println!("roofline: {:.1} %", report.roofline_percent);
        eprintln!("(bandwidth: {})", report.bandwidth_method);
    }
    Ok(ExitCode::SUCCESS)
}

/// A simulated machine's figures come from its counted cycles, not from
/// wall time: one prefill and the decode steps, then cycles per token, the
/// tokens per second they make at its clock, against the decode bound
/// (every weight vector through the MXM planes' install ports), and the
/// wall time the simulation itself took per token.
fn simulated(session: &mut q35_rt::Session, prompt: &[u32], decode: &[u32], json: bool) -> Result<ExitCode> {
    session.reset();
    let before = session.simulated().unwrap_or_default();
    let started = std::time::Instant::now();
    session.forward(prompt, 0)?;
    let mid = session.simulated().unwrap_or_default();
    for (i, &token) in decode.iter().enumerate() {
        session.forward(&[token], prompt.len() + i)?;
    }
    let wall = started.elapsed().as_secs_f64();
    let after = session.simulated().unwrap_or_default();
    let runs = (after.runs - mid.runs).max(1) as f64;
    let cycles = (after.cycles - mid.cycles) as f64 / runs;
    let bound = (after.installed_vectors - mid.installed_vectors) as f64 / runs * after.install_cycles_per_vector;
    let mxm = (after.mxm_busy - mid.mxm_busy) as f64 / runs / (cycles * after.mxm_planes as f64);
    let prefill_cycles = (mid.cycles - before.cycles) as f64;
    let prefill_mxm = (mid.mxm_busy - before.mxm_busy) as f64 / (prefill_cycles * after.mxm_planes as f64);
    let prefill_runs = mid.runs - before.runs;
    let report = serde_json::json!({
        "model": session.artifact().path(),
        "backend": session.backend(),
        "prompt_tokens": prompt.len(),
        "decode_tokens": decode.len(),
        "prefill_cycles_per_token": prefill_cycles / prompt.len() as f64,
        "prefill_tok_s": after.clock_hz * prompt.len() as f64 / prefill_cycles,
        "prefill_runs": prefill_runs,
        "prefill_mxm_busy_percent": 100.0 * prefill_mxm,
        "decode_cycles_per_token": cycles,
        "decode_tok_s": after.clock_hz / cycles,
        "install_bound_cycles_per_token": bound,
        "percent_of_install_bound": 100.0 * bound / cycles,
        "mxm_busy_percent": 100.0 * mxm,
        "simulation_seconds_per_token": wall / (prompt.len() + decode.len()) as f64,
        "chips": after.chips,
        "pes": after.pes,
        "pe_utilization_percent": 100.0 * (after.pe_busy - mid.pe_busy) as f64 / runs / (cycles * after.pes as f64),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if after.chips > 1 {
            println!("chips: {} in a pipeline (a run's cycles: from its start on the first chip to the last chip's end; install bound and MXM share over all chips)", after.chips);
        }
        println!("decode: {cycles:.0} cycles per token, {:.1} tok/s at {:.0} MHz", after.clock_hz / cycles, after.clock_hz / 1e6);
        if after.mxm_planes > 0 {
            println!("install bound: {bound:.0} cycles per token ({:.1} % of it reached)", 100.0 * bound / cycles);
            println!("MXM busy: {:.1} %", 100.0 * mxm);
            println!(
                "prefill: {:.0} cycles per token, {:.1} tok/s, MXM busy {:.1} % ({} run(s) for {} tokens)",
                prefill_cycles / prompt.len() as f64,
                after.clock_hz * prompt.len() as f64 / prefill_cycles,
                100.0 * prefill_mxm,
                prefill_runs,
                prompt.len()
            );
        }
        if after.pes > 0 {
            // Busy PE-cycles over all the program's PEs for the token's cycles.
            let busy = (after.pe_busy - mid.pe_busy) as f64 / runs;
            println!("PEs: {}, utilization {:.2} % (busy PE-cycles over PEs x cycles)", after.pes, 100.0 * busy / (cycles * after.pes as f64));
            println!("prefill: {:.0} cycles per token, {:.1} tok/s ({} tokens, one at a time)", prefill_cycles / prompt.len() as f64, after.clock_hz * prompt.len() as f64 / prefill_cycles, prompt.len());
        }
        println!("simulation: {:.3} s per token on this machine", wall / (prompt.len() + decode.len()) as f64);
    }
    Ok(ExitCode::SUCCESS)
}

/// The bandwidth of the memory the session's weights are in: the GPU's
/// for a CUDA session, else this machine's with the session's threads.
fn measure_bandwidth(session: &mut Session) -> Result<MeasuredBandwidth> {
    const RUNS: usize = 5;
    session.measure_bandwidth(RUNS).map_err(anyhow::Error::msg)
}

/// Prefill `prompt` from an empty cache, then decode `decode` one token at
/// a time; returns (prefill tok/s, decode tok/s if any were decoded).
fn one_repetition(
    session: &mut Session,
    prompt: &[u32],
    decode: &[u32],
) -> Result<(f64, Option<f64>)> {
    session.reset();
    let started = Instant::now();
    session.forward(prompt, 0)?;
    let prefill = prompt.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    if decode.is_empty() {
        return Ok((prefill, None));
    }
    let started = Instant::now();
    for (i, &token) in decode.iter().enumerate() {
        session.forward(&[token], prompt.len() + i)?;
    }
    let decode_rate = decode.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok((prefill, Some(decode_rate)))
}
