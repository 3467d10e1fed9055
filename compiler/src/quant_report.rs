//! `q35c --quant-report`: the policy (each matrix's kind and group, and
//! how it was chosen), then every matrix quantized exactly as the artifact
//! stores it (calibrated GPTQ by default) with its true bits per weight
//! (group parameters included), RMSE and max error against the source
//! weights, and the totals.

use crate::{calibration::Calibrated, front::Model, graph::ModelGraph, policy::QuantPolicy};
use anyhow::{Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use q35_format::{GroupSize, QuantKind, QuantSearch};
use std::fmt::Write as _;

/// One matrix's figures.
#[derive(Clone, Debug)]
struct Row {
    name: String,
    rows: usize,
    cols: usize,
    format: (QuantKind, GroupSize),
    bytes: usize,
    bpw: f64,
    rmse: f64,
    max_err: f64,
    /// Sum of squared errors, for the total RMSE.
    sse: f64,
}

/// Quantizes every matrix of the graph as `policy` says (in parallel over
/// tensors) and renders the report; `origin` says how the policy was
/// chosen.
pub fn run(model: &Model, graph: &ModelGraph, policy: &QuantPolicy, origin: &str, search: QuantSearch, calibrated: Option<&Calibrated>) -> Result<String> {
    let matrices: Vec<_> = graph.weights().into_iter().filter(|w| w.is_matrix).collect();
    let vectors: Vec<_> = graph.weights().into_iter().filter(|w| !w.is_matrix).collect();
    let progress = ProgressBar::new(matrices.len() as u64).with_style(
        ProgressStyle::with_template("quantizing {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let rows = crate::parallel::map(&matrices, |weight| {
        let row = (|| -> Result<Row> {
            let (rows, cols) = (weight.shape[0], weight.shape[1]);
            let data = graph
                .weight_f32(model, &weight.name)
                .with_context(|| format!("reading `{}`", weight.name))?;
            let format = policy.format_of(&weight.name);
            let q = crate::codegen::quantize_matrix(
                &weight.name,
                rows,
                cols,
                &data,
                format,
                search,
                calibrated.map(|c| &c.importance),
                calibrated.and_then(|c| c.compensation.get(&weight.name)).map(|c| &**c),
            )?;
            let stats = q.stats(&data)?;
            Ok(Row {
                name: weight.name.clone(),
                rows,
                cols,
                format,
                bytes: q.byte_len(),
                bpw: stats.bpw,
                rmse: stats.rmse,
                max_err: stats.max_abs_err,
                sse: stats.rmse * stats.rmse * (rows * cols) as f64,
            })
        })();
        progress.set_message(weight.name.clone());
        progress.inc(1);
        row
    });
    progress.finish_and_clear();
    let rows: Vec<Row> = rows.into_iter().collect::<Result<_>>()?;
    let vector_bytes: usize = vectors.iter().map(|v| v.shape.iter().product::<usize>() * 4).sum();
    let mut out = String::new();
    let rounding = match calibrated {
        Some(c) if !c.compensation.is_empty() => "calibrated, GPTQ rounding",
        Some(_) => "calibrated importance, nearest rounding",
        None => "not calibrated",
    };
    let _ = writeln!(out, "quantization report: {} ({rounding}, --quant-search {search})", model.source.display());
    let _ = writeln!(out, "policy: {origin}");
    for line in crate::policy::summary(policy, graph).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out.push_str(&render(&rows, vector_bytes));
    Ok(out)
}

fn render(rows: &[Row], vector_bytes: usize) -> String {
    let mut out = String::new();
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
    let _ = writeln!(out, "{:<width$}  {:>11}  {:>12}  {:>6}  {:>10}  {:>10}", "tensor", "shape", "format", "bpw", "rmse", "max err");
    for r in rows {
        let _ = writeln!(
            out,
            "{:<width$}  {:>11}  {:>12}  {:>6.3}  {:>10.3e}  {:>10.3e}",
            r.name,
            format!("{}x{}", r.rows, r.cols),
            format!("{} g{}", r.format.0, r.format.1),
            r.bpw,
            r.rmse,
            r.max_err
        );
    }
    let weights: usize = rows.iter().map(|r| r.rows * r.cols).sum();
    let bytes: usize = rows.iter().map(|r| r.bytes).sum();
    let sse: f64 = rows.iter().map(|r| r.sse).sum();
    let max_err = rows.iter().map(|r| r.max_err).fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "total: {} matrices, {} weights, {:.4} bits per weight (group parameters included), rmse {:.3e}, max err {:.3e}",
        rows.len(),
        weights,
        if weights == 0 { 0.0 } else { 8.0 * bytes as f64 / weights as f64 },
        if weights == 0 { 0.0 } else { (sse / weights as f64).sqrt() },
        max_err
    );
    let _ = writeln!(
        out,
        "model bytes: {} ({:.2} MiB): matrices {} + f32 norm weights {}",
        bytes + vector_bytes,
        (bytes + vector_bytes) as f64 / (1024.0 * 1024.0),
        bytes,
        vector_bytes
    );
    out
}
