//! `q35-rt info`: what an artifact holds, without running it.
//!
//! The container is fully validated (checksums included) but the code is
//! not loaded, so this works for any target on any machine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use q35_format::artifact::{Artifact, Manifest};
use q35_format::{QuantKind, HEADER_BYTES};
use q35_rt::artifact::{check_plan, with_artifact, BufferClass};

use super::mib;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The compiled model
    model: PathBuf,
    /// List every buffer and every dispatch
    #[arg(long)]
    all: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let file_bytes = std::fs::metadata(&args.model).map(|m| m.len()).unwrap_or(0);
    let text = with_artifact(&args.model, |artifact| {
        Ok(describe(artifact, file_bytes, args.all))
    })?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn describe(artifact: &Artifact<'_>, file_bytes: u64, all: bool) -> String {
    let m = &artifact.manifest;
    let c = &m.model;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "format: {} version {} ({:.1} MiB)",
        m.format,
        m.version,
        mib(file_bytes as f64)
    ));
    line(format!(
        "target: {} {} (cpu {}, {} features)",
        m.target.kind,
        m.target.triple,
        m.target.cpu,
        m.target
            .features
            .split(',')
            .filter(|f| f.starts_with('+'))
            .count()
    ));
    line(format!(
        "model: {}, vocab {}, hidden {}, ffn {}, {} layers, {} heads ({} kv, head_dim {}), rope theta {}, rms eps {:e}, {} embeddings",
        c.architecture,
        c.vocab_size,
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.rope_theta,
        c.rms_norm_eps,
        if c.tie_word_embeddings { "tied" } else { "untied" }
    ));
    line(format!(
        "tokens: bos {}, eos {}, tokenizer {}",
        c.bos_token_id.map_or("none".into(), |b| b.to_string()),
        c.eos_token_id.map_or("none".into(), |e| e.to_string()),
        if m.tokenizer.is_some() {
            "included"
        } else {
            "absent"
        }
    ));
    line(chat(artifact));
    line(quantization(artifact));
    line(format!(
        "rotated inputs: {}",
        if m.rotated_inputs { "yes (q35.rotate: randomized Hadamard transforms of matrix inputs)" } else { "no" }
    ));
    line(format!(
        "context: {} positions; up to {} tokens per call; {} output rows per matmul workgroup",
        m.context_length, m.max_tokens, m.rows_per_workgroup
    ));
    line(plan_summary(m));
    let mut kernels: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &m.dispatches {
        *kernels.entry(&d.kernel).or_default() += 1;
    }
    line(format!(
        "dispatches: {} per call, {} kernels",
        m.dispatches.len(),
        kernels.len()
    ));
    for (kernel, uses) in &kernels {
        line(format!("  {kernel} x{uses}"));
    }
    let toolchain: Vec<String> = m
        .toolchain
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    line(format!("toolchain: {}", toolchain.join(", ")));
    let payload = |name: &str| artifact.payload(name).map_or(0, <[u8]>::len);
    let weights: usize = m.weights.iter().map(|w| payload(&w.tensor)).sum();
    line(format!(
        "sizes: weights {:.2} MiB, code {:.1} KiB, tokenizer {:.1} KiB",
        mib(weights as f64),
        payload(&m.code) as f64 / 1024.0,
        m.tokenizer.as_deref().map_or(0, payload) as f64 / 1024.0
    ));
    if all {
        line("buffers:".into());
        for b in &m.buffers {
            line(format!(
                "  {} {} {} x{}",
                b.role, b.name, b.element, b.width
            ));
        }
        line("dispatch list:".into());
        for (i, d) in m.dispatches.iter().enumerate() {
            line(format!(
                "  {i}: {} [{} + {}/token] ({})",
                d.kernel,
                d.workgroups,
                d.workgroups_per_token,
                d.buffers.join(", ")
            ));
        }
    }
    out
}

/// Kind, group and true bits per weight (codes and parameters) over the
/// quantized matrices, and over all weights.
fn quantization(artifact: &Artifact<'_>) -> String {
    let m = &artifact.manifest;
    let (mut coded_bytes, mut coded_params, mut all_bytes, mut all_params) =
        (0usize, 0usize, 0usize, 0usize);
    for w in &m.weights {
        let data = artifact
            .payload(&w.tensor)
            .map_or(0, |p| p.len().saturating_sub(HEADER_BYTES));
        let params = w.rows * w.cols;
        all_bytes += data;
        all_params += params;
        if w.kind.parse::<QuantKind>().is_ok_and(QuantKind::is_coded) {
            coded_bytes += data;
            coded_params += params;
        }
    }
    let bpw = |bytes: usize, params: usize| 8.0 * bytes as f64 / params.max(1) as f64;
    // Each matrix's kind and group, as its buffer type says (the kinds
    // that store no groups, f16 and f32, by kind alone).
    let mut formats: BTreeMap<String, usize> = BTreeMap::new();
    for b in m.buffers.iter().filter(|b| b.role == "weight") {
        if let Ok(p) = q35_rt::artifact::PackedElement::parse(&b.element) {
            let format = if p.kind.is_coded() { format!("{} g{}", p.kind, p.group) } else { p.kind.to_string() };
            *formats.entry(format).or_default() += 1;
        }
    }
    // One format, or the mix (the default build chooses per matrix).
    let stored = if formats.len() > 1 {
        let list: Vec<String> = formats.iter().map(|(f, n)| format!("{n} {f}")).collect();
        format!("per matrix: {}", list.join(", "))
    } else if m.quant.parse::<QuantKind>().is_ok_and(QuantKind::is_coded) {
        format!("{}, group {}", m.quant, m.group)
    } else {
        m.quant.clone()
    };
    let all = bpw(all_bytes, all_params);
    let size = if coded_params > 0 {
        format!(
            "{:.3} bits per weight over {coded_params} quantized parameters ({all:.3} over all {all_params} weights)",
            bpw(coded_bytes, coded_params)
        )
    } else {
        format!("{all:.3} bits per weight over all {all_params} weights")
    };
    let activations = if m.activations == "int8" {
        "; int8 activations (integer path)"
    } else {
        ""
    };
    format!("quantization: {stored}; {size}{activations}")
}

/// Buffers by role, with the memory they take at run time.
fn plan_summary(m: &Manifest) -> String {
    let Ok(classes) = check_plan(m) else {
        return format!(
            "buffers: {} (the plan is inconsistent; `q35-rt check` or `run` will say why)",
            m.buffers.len()
        );
    };
    let mut roles: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (b, class) in m.buffers.iter().zip(&classes) {
        let bytes = match class {
            BufferClass::Tokens | BufferClass::Positions => 4 * m.max_tokens,
            BufferClass::Activation { width } | BufferClass::Output { width } => {
                4 * m.max_tokens * width
            }
            BufferClass::ActivationCodes { width } => m.max_tokens * width,
            BufferClass::KvCache { rows, cols } => 4 * rows * cols,
            // Weights: the payloads' size is reported under `sizes`.
            BufferClass::PackedWeight(_) | BufferClass::VectorWeight { .. } => 0,
        };
        let entry = roles.entry(b.role.as_str()).or_default();
        entry.0 += 1;
        entry.1 += bytes;
    }
    let parts: Vec<String> = roles
        .iter()
        .map(|(role, (count, bytes))| match *bytes {
            0 => format!("{count} {role}"),
            bytes => format!("{count} {role} ({:.2} MiB)", mib(bytes as f64)),
        })
        .collect();
    format!("buffers: {} ({})", m.buffers.len(), parts.join(", "))
}

/// The chat template line: the model's own (its size, and the tokens that
/// end an assistant's turn), or what `--chat` does without one.
fn chat(artifact: &Artifact<'_>) -> String {
    let m = &artifact.manifest;
    let tokenizer = m
        .tokenizer
        .as_ref()
        .and_then(|t| artifact.payload(t))
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|json| q35_rt::tokenizer::Tokenizer::from_json_str(json, "tokenizer.json").ok());
    let spec = match &m.chat_template {
        Some(name) => match artifact.payload(name).map(serde_json::from_slice::<q35_rt::chat::TemplateSpec>) {
            Some(Ok(spec)) => Some(spec),
            _ => return format!("chat: the template payload `{name}` is unreadable"),
        },
        None => None,
    };
    let Some(tokenizer) = tokenizer else {
        return format!("chat: {}, no tokenizer", if spec.is_some() { "the model's template" } else { "no template" });
    };
    let what = match &spec {
        Some(spec) => format!("the model's template ({} characters)", spec.template.chars().count()),
        None => "no template of its own: ChatML".to_string(),
    };
    match q35_rt::chat::Chat::new(spec.as_ref(), &tokenizer) {
        Ok(Some(chat)) => {
            let ends: Vec<String> = chat.end_of_turn().iter().map(|&id| tokenizer.id_to_token(id).unwrap_or("?").to_string()).collect();
            format!("chat: {what}; an assistant turn ends with {}", if ends.is_empty() { "EOS".to_string() } else { ends.join(", ") })
        }
        Ok(None) => "chat: none (no template, and no ChatML tokens)".to_string(),
        Err(e) => format!("chat: {what}, which does not render: {e}"),
    }
}
