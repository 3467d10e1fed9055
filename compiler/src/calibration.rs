//! Calibration inside `q35c`: the statistics the quantizer weighs its error
//! with, collected by running the model itself over a text, by default and
//! without any step by the user.
//!
//! The model is compiled once more with f16 weights for this CPU (the
//! same pipeline and kernels as any artifact), loaded by the runtime, and
//! run over the first tokens of the calibration text while the runtime's
//! dispatch observer records, for every matrix, the mean square of each
//! input column (`q35_rt::calibrate`). The default text is the Apache
//! License 2.0, shipped in the repository (`compiler/calibration/`), so
//! every machine calibrates on the same tokens; it is a different document
//! from the GPL v3 that docs/quality.md evaluates on.

use crate::{
    codegen::{self, CompileOptions},
    emit::{emit_module, EmitOptions, Group},
    front::Model,
    graph::ModelGraph,
    importance::Importance,
    pipeline::{RunOptions, Timings},
};
use anyhow::{Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use q35_dialect::Q35Context;
use q35_format::{gptq::Compensation, GroupSize, QuantKind};
use q35_rt::calibrate::{calibrate_text, CalibrationOptions};
use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Instant};

/// The default calibration text (Apache License 2.0; its own terms allow
/// redistribution).
pub const DEFAULT_TEXT: &str = include_str!("../calibration/apache-2.0.txt");
/// Name of the default text in messages.
pub const DEFAULT_TEXT_NAME: &str = "the built-in calibration text (Apache License 2.0)";
/// Tokens of the text used by default: all of the built-in text (2,215
/// SmolLM2 tokens). GPTQ needs many more tokens than the importance
/// alone: a K×K Hessian from fewer than K tokens is singular, and on
/// SmolLM2 GPTQ calibrated on 512 tokens was worse than none
/// (docs/quality.md).
pub const DEFAULT_TOKENS: usize = 4096;

/// Where the calibration text comes from.
#[derive(Clone, Debug)]
pub enum CalibrationText {
    BuiltIn,
    File(PathBuf),
}

pub use q35_format::gptq::Compensations;

/// What calibration gives the quantizer.
#[derive(Debug, Default)]
pub struct Calibrated {
    /// Mean square of every matrix's input columns.
    pub importance: Importance,
    /// Empty unless asked for (`hessians`).
    pub compensation: Compensations,
}

/// Runs the model over the calibration text and returns every matrix's
/// per-column mean square input, and with `hessians` its GPTQ
/// compensation. `None`, with a warning, when the model has no tokenizer
/// to turn the text into tokens.
pub fn calibrate(
    q35: &Q35Context,
    model: &Model,
    graph: &ModelGraph,
    text: &CalibrationText,
    tokens: usize,
    hessians: bool,
    timings: &mut Timings,
) -> Result<Option<Calibrated>> {
    if model.tokenizer_json.is_none() {
        tracing::warn!("the model has no tokenizer.json: compiling without calibration");
        eprintln!("warning: {} has no tokenizer, so q35c cannot calibrate on a text; quantizing without calibration (--no-calibration silences this)", model.source.display());
        return Ok(None);
    }
    let (name, text) = match text {
        CalibrationText::BuiltIn => (DEFAULT_TEXT_NAME.to_string(), DEFAULT_TEXT.to_string()),
        CalibrationText::File(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).with_context(|| format!("cannot read the calibration text {}", path.display()))?,
        ),
    };

    // An f16 build for this CPU; its own steps are timed apart.
    let started = Instant::now();
    let context_length = 512.min(model.config.max_position_embeddings).max(1);
    let emit = EmitOptions {
        quant: QuantKind::F16,
        group: Group::Channel,
        context_length,
            overrides: Vec::new(),
    };
    let mut options = CompileOptions::new(emit.clone(), GroupSize::Channel);
    options.max_tokens = 128;
    let run = RunOptions {
        verify_each: false,
        print_ir_after_all: false,
    };
    let module = emit_module(q35, graph, &model.config, &model.source.display().to_string(), &emit)?;
    let mut inner = Timings::default();
    let bytes = codegen::compile_cpu(q35, module, model, graph, &options, &run, &mut inner)?;
    let file = tempfile::Builder::new()
        .prefix("q35c-calibration-")
        .suffix(".q35")
        .tempfile()
        .context("creating a temporary file for the calibration build")?;
    std::fs::write(file.path(), &bytes).context("writing the calibration build")?;
    let mut session = q35_rt::Session::load(file.path(), 0).context("loading the calibration build")?;
    drop(file);
    timings.record("calibration: f16 build", started.elapsed());

    let started = Instant::now();
    let progress = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("calibrating {bar:40} {pos}/{len} windows")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let options = CalibrationOptions { tokens, context: None, hessians };
    let report = calibrate_text(&mut session, &text, &name, &options, |done, total| {
        progress.set_length(total as u64);
        progress.set_position(done as u64);
    })?;
    progress.finish_and_clear();
    timings.record("calibration: run", started.elapsed());
    tracing::info!(
        tokens = report.tokens,
        windows = report.windows,
        matrices = report.importance.len(),
        "calibrated on {name}"
    );
    let started = Instant::now();
    let compensation = compensations(&report.hessians)?;
    if hessians {
        timings.record("calibration: GPTQ factors", started.elapsed());
    }
    Ok(Some(Calibrated {
        importance: report.importance,
        compensation,
    }))
}

/// One [`Compensation`] per distinct Hessian (shared by the weights that
/// read the same input), factored on every core.
fn compensations(hessians: &BTreeMap<String, Arc<Vec<f64>>>) -> Result<Compensations> {
    let mut distinct: Vec<Arc<Vec<f64>>> = Vec::new();
    for h in hessians.values() {
        if !distinct.iter().any(|d| Arc::ptr_eq(d, h)) {
            distinct.push(h.clone());
        }
    }
    // Largest first, so the two cores finish together.
    distinct.sort_by_key(|h| std::cmp::Reverse(h.len()));
    let factored = crate::parallel::map(&distinct, |h| {
        let k = (h.len() as f64).sqrt() as usize;
        Compensation::new(h, k).map(Arc::new)
    });
    let mut out = Compensations::new();
    for (name, h) in hessians {
        let i = distinct.iter().position(|d| Arc::ptr_eq(d, h)).expect("listed above");
        let compensation = factored[i]
            .clone()
            .map_err(|e| anyhow::anyhow!("calibration of {name}: {e}"))?;
        out.insert(name.clone(), compensation);
    }
    Ok(out)
}
