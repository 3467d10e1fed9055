//! `q35c plan`: what a model needs of a target and how fast it would
//! decode, from its `config.json` alone. The model's q35 module is emitted
//! as for a compile (every matrix stored alike, since there are no weights
//! to choose by) and the target plans from that
//! ([`q35_target::Backend::capacity`]).

use crate::{
    emit::{emit_module, EmitOptions, Group},
    front::config::{HfConfig, ModelConfig},
    graph::ModelGraph,
};
use anyhow::{bail, Context as _, Result};
use q35_dialect::Q35Context;
use q35_format::{GroupSize, QuantKind};
use std::path::{Path, PathBuf};

/// `q35c plan`'s options.
pub struct PlanArgs<'a> {
    pub config: &'a PathBuf,
    pub target: &'a str,
    pub context: Option<usize>,
    pub quant: QuantKind,
    pub group: GroupSize,
    pub json: bool,
}

/// Reads `config.json`. A `rope_scaling` setting changes RoPE's angles,
/// not any shape, so the planner reads past it (compiling such a model
/// still refuses it); returns a note saying so.
fn read_config(path: &Path) -> Result<(ModelConfig, Option<String>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut value: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let mut note = None;
    if let Some(map) = value.as_object_mut() {
        if let Some(scaling) = map.remove("rope_scaling").filter(|v| !v.is_null()) {
            let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(|t| t.as_str()).unwrap_or("unnamed").to_string();
            note = Some(format!("rope_scaling ({kind}) does not change the plan; compiling this model needs it, which q35c does not implement yet"));
        }
    }
    let config = ModelConfig::from_hf_json(&value.to_string(), path)?;
    Ok((config, note))
}

/// The report of `q35c plan`.
pub fn plan(args: &PlanArgs, matches: &clap::ArgMatches) -> Result<String> {
    let target = crate::targets::find(args.target).ok_or_else(|| anyhow::anyhow!("internal error: unknown target {}", args.target))?;
    crate::targets::check_foreign_options(matches, target)?;
    let (config, note) = read_config(args.config)?;
    let context_length = args.context.unwrap_or_else(|| config.max_position_embeddings.min(2048));
    crate::limits::check_context(context_length)?;
    if context_length > config.max_position_embeddings {
        bail!("--context {context_length} is longer than the model's {} positions", config.max_position_embeddings);
    }
    let common = q35_target::Common { quant: args.quant, context_length, max_tokens: 1, fuse: false, stage: None };
    let backend = target.configure(matches, &common).map_err(anyhow::Error::msg)?;
    let options = EmitOptions {
        quant: args.quant,
        group: args.group.fixed().map_or(Group::Channel, |g| Group::Size(g as u64)),
        overrides: Vec::new(),
        context_length,
    };
    let q35 = Q35Context::new()?;
    let source = args.config.display().to_string();
    let mut build = |layers: usize| {
        let cut = ModelConfig { num_hidden_layers: layers, ..config.clone() };
        let graph = ModelGraph::llama(&cut)?;
        Ok(emit_module(&q35, &graph, &cut, &source, &options)?)
    };
    let run = crate::pipeline::RunOptions { verify_each: true, print_ir_after_all: false };
    let mut timings = crate::pipeline::Timings::default();
    let mut session = q35_target::Session { q35: &q35, passes: &crate::passes::Registry, run: &run, timings: &mut timings };
    let report = backend.capacity(&mut session, &mut build, config.num_hidden_layers, args.json)?;
    if args.json {
        return Ok(report);
    }
    let c = &config;
    let mut out = format!(
        "model: {}: {} layers, hidden {}, ffn {}, {} heads ({} kv), vocab {}; every matrix {} g{}, context {context_length}\n",
        args.config.display(),
        c.num_hidden_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.vocab_size,
        args.quant,
        args.group
    );
    if let Some(note) = note {
        out += &format!("note: {note}\n");
    }
    Ok(out + &report)
}
