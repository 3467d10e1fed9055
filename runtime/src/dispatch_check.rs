//! The compiled matmuls one by one, each on the compiled model's own
//! inputs: what `q35-rt check` relies on where the end-to-end comparison
//! cannot be tight.
//!
//! With int8 activations (the integer path), an activation that lands on
//! a rounding tie of its group's int8 grid in one model and a hair past it
//! in the other gets codes one apart: a step of `sx·|w|` in that matmul's
//! output, as large as the quantization noise itself, which then moves
//! other codes downstream. The compiled model and the reference therefore
//! part by quantization noise over 30 layers even when every kernel is
//! right. Checking each matmul dispatch on the activations the compiled
//! model actually fed it (observed before it runs, so both sides quantize
//! the same values to the same codes; an integer-path matmul binds its
//! input's int8 codes, so its f32 input is the one the quantize dispatch
//! that wrote them read) keeps the check tight: each output
//! must lie within the rounding bound of a reordered f32 dot,
//!
//! ```text
//! |y − y*| <= γ_K·Σ_k |w'_k·x_k|            (f32 activations)
//! |y − y*| <= (γ_K + 8u)·Σ_k (|min| + |w'_k − min|)·|sx·x8_k|   (int8)
//! ```
//!
//! with `γ_K = K·u/(1 − K·u)`, `u = 2^-24`, plus the epilogue's roundings
//! (the same bounds the kernels' unit tests use). The integer path's
//! extra `8u` covers `min + q·range/L` standing in for `w'` (three
//! roundings), the group scale `fl(range·fl(sx/105))` (two) and
//! `fl(sx·Σx8)` (one).

use std::collections::HashMap;

use q35_format::activations::dequantized_activations;
use q35_format::QuantizedTensor;

use crate::check::CheckError;
use crate::executor::Session;
use crate::sampling::greedy;

/// Kernels that quantize an input for the integer path (binding the f32
/// rows, then the codes).
pub const QUANTIZE_PREFIX: &str = "quantize_activations";

/// How close the compiled matmuls came to their bounds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DispatchReport {
    /// Matmul dispatch runs checked (dispatches × forward calls).
    pub checked: usize,
    /// Output values checked.
    pub values: usize,
    /// Largest |error| / bound over all values (`<= 1` passes).
    pub worst_fraction: f64,
    /// Where the worst value is: dispatch index and kernel.
    pub worst: Option<(usize, String)>,
    /// Values outside their bound, or not finite.
    pub failures: usize,
}

impl DispatchReport {
    pub fn passed(&self) -> bool {
        self.failures == 0
    }
}

/// A matmul's expected outputs, waiting for the dispatch that next binds
/// its output buffer (it runs after the matmul, so it sees the result).
struct Pending {
    dispatch: usize,
    kernel: String,
    out: String,
    /// Per output value: the exact result and its bound.
    expected: Vec<(f64, f64)>,
}

/// A weight's rows dequantized once, with each (row, group)'s min.
struct Dense {
    cols: usize,
    width: usize,
    groups: usize,
    values: Vec<f32>,
    mins: Vec<f32>,
}

impl Dense {
    fn new(tensor: &QuantizedTensor) -> Self {
        let layout = tensor.layout();
        let (rows, cols, groups) = (tensor.rows(), tensor.cols(), layout.groups());
        let mins = (0..rows)
            .flat_map(|r| (0..groups).map(move |g| (r, g)))
            .map(|(r, g)| tensor.group_params(r, g).map_or(0.0, |p| p.min))
            .collect();
        Dense {
            cols,
            width: layout.group_width(),
            groups,
            values: tensor.dequantize(),
            mins,
        }
    }

    /// Row r·x (exact, f64) and the bound of its compiled f32 value.
    fn dot(&self, r: usize, x: &[f64], int8: bool) -> (f64, f64) {
        let u = 2f64.powi(-24);
        let k = self.cols as f64;
        let gamma = k * u / (1.0 - k * u);
        let row = &self.values[r * self.cols..(r + 1) * self.cols];
        let (mut sum, mut size) = (0.0, 0.0);
        for (c, (&w, &x)) in row.iter().zip(x).enumerate() {
            let w = f64::from(w);
            sum += w * x;
            size += if int8 {
                let min = f64::from(self.mins[r * self.groups + c / self.width]);
                (min.abs() + (w - min).abs()) * x.abs()
            } else {
                (w * x).abs()
            };
        }
        let extra = if int8 { 8.0 * u } else { 0.0 };
        (sum, (gamma + extra) * size + 1e-30)
    }
}

/// Runs `prompt` from an empty cache, then `decode_steps` greedy tokens,
/// and checks every matmul dispatch of every call against exact
/// arithmetic on its observed inputs. `int8`: the integer path, each
/// matmul's input in its weight's groups
/// (`crate::check::int8_activation_group`).
pub fn check_matmuls(
    session: &mut Session,
    weights: &HashMap<String, QuantizedTensor>,
    int8: bool,
    prompt: &[u32],
    decode_steps: usize,
) -> Result<DispatchReport, CheckError> {
    let mut report = DispatchReport::default();
    let mut dense: HashMap<String, Dense> = HashMap::new();
    let output = session
        .manifest()
        .buffers
        .iter()
        .find(|b| b.role == "output")
        .map(|b| b.name.clone())
        .unwrap_or_default();
    session.reset();
    // Prompts longer than the artifact's max_tokens run in chunks, as
    // `Session::forward` runs them; each chunk is checked on its own rows.
    // A simulated one-token program shows its dispatches a token a call.
    let max_tokens = if session.simulated().is_some() { 1 } else { session.manifest().max_tokens.max(1) };
    let mut tokens = prompt.to_vec();
    let mut start = 0;
    for step in 0..=decode_steps {
        let mut logits = Vec::new();
        for (c, chunk) in tokens.chunks(max_tokens).enumerate() {
            logits = check_call(session, &mut report, &mut dense, weights, int8, &output, chunk, start + c * max_tokens)?;
        }
        if step == decode_steps {
            break;
        }
        start += tokens.len();
        let vocab = session.vocab_size();
        tokens = vec![greedy(&logits[logits.len() - vocab..])?];
    }
    Ok(report)
}

/// One `forward_observed` call of at most max_tokens tokens: every matmul
/// dispatch of it checked; returns its logits.
#[allow(clippy::too_many_arguments)]
fn check_call(
    session: &mut Session,
    report: &mut DispatchReport,
    dense: &mut HashMap<String, Dense>,
    weights: &HashMap<String, QuantizedTensor>,
    int8: bool,
    output: &str,
    tokens: &[u32],
    start: usize,
) -> Result<Vec<f32>, CheckError> {
    let n = tokens.len();
    let mut pending: Vec<Pending> = Vec::new();
    // The integer path's quantized inputs: the f32 rows each was
    // quantized from, seen as the quantize kernel ran.
    let mut sources: HashMap<String, Vec<f32>> = HashMap::new();
    let logits = session
        .forward_observed(tokens, start, &mut |index, spec, views| {
            // Outputs of earlier matmuls this dispatch reads.
            pending.retain(|p| {
                let Some(view) = spec.buffers.iter().position(|b| *b == p.out).and_then(|i| views[i]) else {
                    return true;
                };
                compare(report, p, view);
                false
            });
            if spec.kernel.starts_with(QUANTIZE_PREFIX) {
                if let (Some(x), Some(codes)) = (views.first().copied().flatten(), spec.buffers.get(1)) {
                    sources.insert(codes.clone(), x.to_vec());
                }
                return;
            }
            if !spec.kernel.starts_with("dequant_matmul") {
                return;
            }
            let x = views.first().copied().flatten().or_else(|| sources.get(spec.buffers.first()?).map(Vec::as_slice));
            match x.and_then(|x| expect(spec.kernel.as_str(), index, &spec.buffers, x, views, n, weights, dense, int8)) {
                Some(p) => pending.push(p),
                // Nothing may go unchecked.
                None => {
                    report.failures += 1;
                    report.worst.get_or_insert((index, spec.kernel.clone()));
                }
            }
        })?
        .to_vec();
    for p in pending.iter().filter(|p| p.out == output) {
        compare(report, p, &logits);
    }
    Ok(logits)
}

/// The expected outputs of matmul dispatch `index` from its input rows
/// `x` and the views of its buffers (`None` if a buffer it needs is not
/// visible).
#[allow(clippy::too_many_arguments)]
fn expect(
    kernel: &str,
    index: usize,
    buffers: &[String],
    x: &[f32],
    views: &[Option<&[f32]>],
    tokens: usize,
    weights: &HashMap<String, QuantizedTensor>,
    dense: &mut HashMap<String, Dense>,
    int8: bool,
) -> Option<Pending> {
    let swiglu = kernel.ends_with("_swiglu");
    let add = kernel.ends_with("_add");
    let out = buffers.last()?.clone();
    let weight_names: &[String] = if swiglu { &buffers[1..3] } else { &buffers[1..2] };
    for name in weight_names {
        if !dense.contains_key(name) {
            dense.insert(name.clone(), Dense::new(weights.get(name)?));
        }
    }
    let first = &dense[&weight_names[0]];
    let (rows, cols) = (first.values.len() / first.cols, first.cols);
    let residual = if add { views.get(2).copied().flatten() } else { None };
    // The integer path applies to coded weights only (`_i8_` kernels),
    // in the groups of the weight (fused SwiGLU weights share theirs).
    // (Every coded matmul: the CPU names its integer-path kernels `_i8_`,
    // the TSP's are all integer-path.)
    let int8 = weights
        .get(&weight_names[0])
        .filter(|w| int8 && w.kind().is_coded())
        .map(crate::check::int8_activation_group);
    let u = 2f64.powi(-24);
    let mut expected = Vec::with_capacity(tokens * rows);
    for m in 0..tokens {
        let row = &x[m * cols..(m + 1) * cols];
        let xs: Vec<f64> = match int8 {
            Some(group) => dequantized_activations(row, group),
            None => row.iter().map(|&v| f64::from(v)).collect(),
        };
        for r in 0..rows {
            let (d0, e0) = first.dot(r, &xs, int8.is_some());
            let value = if swiglu {
                let (d1, e1) = dense[&weight_names[1]].dot(r, &xs, int8.is_some());
                let silu = |g: f64| g / (1.0 + (-g).exp());
                let v = silu(d0) * d1;
                // |silu'| < 1.1; exp, +, /, × in f32: a few ulps of each.
                (v, 1.1 * e0 * d1.abs() + silu(d0).abs() * e1 + 16.0 * u * (v.abs() + silu(d0).abs() * d1.abs()))
            } else if let Some(residual) = residual {
                let v = f64::from(residual[m * rows + r]) + d0;
                (v, e0 + 2.0 * u * v.abs())
            } else {
                (d0, e0)
            };
            expected.push(value);
        }
    }
    Some(Pending {
        dispatch: index,
        kernel: kernel.to_string(),
        out,
        expected,
    })
}

fn compare(report: &mut DispatchReport, pending: &Pending, got: &[f32]) {
    report.checked += 1;
    for (&(value, bound), &g) in pending.expected.iter().zip(got) {
        report.values += 1;
        let fraction = (f64::from(g) - value).abs() / bound;
        let fraction = if fraction.is_nan() { f64::INFINITY } else { fraction };
        if fraction > 1.0 {
            report.failures += 1;
        }
        if fraction > report.worst_fraction || report.worst.is_none() {
            report.worst_fraction = fraction;
            report.worst = Some((pending.dispatch, pending.kernel.clone()));
        }
    }
}
