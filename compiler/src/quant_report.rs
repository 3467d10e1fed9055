//! `q35c --quant-report`: quantize every weight matrix and report, per
//! tensor and in total, the true bits per weight (group parameters
//! included), RMSE and max error against the source weights, with int4
//! and int3 at the same grouping beside q35 for comparison.

use crate::{front::Model, graph::ModelGraph};
use anyhow::{Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use crate::importance::Importance;
use q35_format::{GroupSize, QuantKind, QuantSearch, QuantizedTensor};
use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

/// One matrix's figures.
#[derive(Clone, Debug)]
struct Row {
    name: String,
    rows: usize,
    cols: usize,
    bytes: usize,
    bpw: f64,
    rmse: f64,
    max_err: f64,
    /// Sum of squared errors, for the total RMSE.
    sse: f64,
    /// RMSE of int4 and int3 at the same grouping (only for q35).
    compare: Option<(f64, f64)>,
}

#[allow(clippy::too_many_arguments)]
fn quantize_one(name: &str, data: &[f32], rows: usize, cols: usize, kind: QuantKind, group: GroupSize, search: QuantSearch, importance: Option<&Importance>) -> Result<(QuantizedTensor, q35_format::QuantStats)> {
    let q = crate::importance::quantize(name, rows, cols, data, kind, group, search, importance)?;
    let stats = q.stats(data)?;
    Ok((q, stats))
}

/// Quantizes every matrix of the graph (in parallel over tensors) and
/// renders the report.
pub fn run(model: &Model, graph: &ModelGraph, kind: QuantKind, group: GroupSize, search: QuantSearch, importance: Option<&Importance>) -> Result<String> {
    let matrices: Vec<_> = graph.weights().into_iter().filter(|w| w.is_matrix).collect();
    let vectors: Vec<_> = graph.weights().into_iter().filter(|w| !w.is_matrix).collect();
    let progress = ProgressBar::new(matrices.len() as u64).with_style(
        ProgressStyle::with_template("quantizing {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Row>>>> = Mutex::new((0..matrices.len()).map(|_| None).collect());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(weight) = matrices.get(i) else { break };
                let row = (|| -> Result<Row> {
                    let (rows, cols) = (weight.shape[0], weight.shape[1]);
                    let data = model
                        .tensor_f32(&weight.name)
                        .with_context(|| format!("reading `{}`", weight.name))?;
                    let (q, stats) = quantize_one(&weight.name, &data, rows, cols, kind, group, search, importance)?;
                    let compare = if kind == QuantKind::Q35 {
                        let (_, int4) = quantize_one(&weight.name, &data, rows, cols, QuantKind::Int4, group, search, importance)?;
                        let (_, int3) = quantize_one(&weight.name, &data, rows, cols, QuantKind::Int3, group, search, importance)?;
                        Some((int4.rmse, int3.rmse))
                    } else {
                        None
                    };
                    Ok(Row {
                        name: weight.name.clone(),
                        rows,
                        cols,
                        bytes: q.byte_len(),
                        bpw: stats.bpw,
                        rmse: stats.rmse,
                        max_err: stats.max_abs_err,
                        sse: stats.rmse * stats.rmse * (rows * cols) as f64,
                        compare,
                    })
                })();
                progress.set_message(weight.name.clone());
                progress.inc(1);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(row);
            });
        }
    });
    progress.finish_and_clear();
    let rows: Vec<Row> = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every index is processed once"))
        .collect::<Result<_>>()?;
    let vector_bytes: usize = vectors.iter().map(|v| v.shape.iter().product::<usize>() * 4).sum();
    Ok(render(&rows, vector_bytes, kind, group, search, &model.source.display().to_string()))
}

fn render(rows: &[Row], vector_bytes: usize, kind: QuantKind, group: GroupSize, search: QuantSearch, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "quantization report: {source}, --quant {kind} --group {group} --quant-search {search}");
    let compare = rows.iter().any(|r| r.compare.is_some());
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
    let _ = write!(out, "{:<width$}  {:>11}  {:>6}  {:>10}  {:>10}", "tensor", "shape", "bpw", "rmse", "max err");
    if compare {
        let _ = write!(out, "  {:>10}  {:>10}", "int4 rmse", "int3 rmse");
    }
    out.push('\n');
    for r in rows {
        let _ = write!(
            out,
            "{:<width$}  {:>11}  {:>6.3}  {:>10.3e}  {:>10.3e}",
            r.name,
            format!("{}x{}", r.rows, r.cols),
            r.bpw,
            r.rmse,
            r.max_err
        );
        if let Some((int4, int3)) = r.compare {
            let _ = write!(out, "  {int4:>10.3e}  {int3:>10.3e}");
        }
        out.push('\n');
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
