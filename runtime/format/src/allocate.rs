//! Per-matrix precision chosen by sensitivity under a bit budget
//! (`q35c --bpw-budget`, default [`DEFAULT_BUDGET`]).
//!
//! Every matrix may be stored in any of [`CANDIDATES`]; the allocator picks
//! one per matrix so that the whole model's bits per weight (every matrix,
//! the embedding and the group parameters included) stay within the budget
//! and the estimated loss is smallest. The loss model is additive over
//! matrices: `Σ_m c(role m) · e_m(format m)`, where
//!
//! - `e_m(f)` is matrix `m`'s relative output error in format `f`,
//!   estimated from its own weights and calibration statistics: each
//!   weight's rounding error is uniform over its group's step
//!   (`range / levels`, variance `step² / 12`), weighted by its input
//!   column's mean square (the importance calibration collects), over the
//!   matrix's output energy `Σ w² · importance`. Without calibration every
//!   column weighs the same;
//! - `c(role)` is how much a unit of relative error in one role (q, k, v, o,
//!   gate, up, down, embedding) costs in log-perplexity, measured on
//!   SmolLM2 by quantizing one role at a time ([`ROLE_SENSITIVITY`],
//!   docs/quality.md): the estimate says where in the model a role's error
//!   sits, the measurement how much that role's error matters.
//!
//! With the candidates' error–size curves made convex, spending bits
//! greedily on the best error reduction per bit is optimal for this
//! model up to the last upgrade that does not fit.

use crate::{GroupSize, Layout, QuantKind};

/// The default budget, bits per weight over all matrices.
pub const DEFAULT_BUDGET: f64 = 3.76;

/// The formats a matrix may get.
pub const CANDIDATES: [(QuantKind, GroupSize); 12] = [
    (QuantKind::Int3, GroupSize::G256),
    (QuantKind::Int3, GroupSize::G128),
    (QuantKind::Int3, GroupSize::G64),
    (QuantKind::Int3, GroupSize::G32),
    (QuantKind::Q35, GroupSize::G256),
    (QuantKind::Q35, GroupSize::G128),
    (QuantKind::Q35, GroupSize::G64),
    (QuantKind::Q35, GroupSize::G32),
    (QuantKind::Int4, GroupSize::G256),
    (QuantKind::Int4, GroupSize::G128),
    (QuantKind::Int4, GroupSize::G64),
    (QuantKind::Int4, GroupSize::G32),
];

/// Log-perplexity per unit of summed relative error, per role (the
/// matrix name's last two parts), measured on SmolLM2-135M-Instruct:
/// each role alone quantized to q35 g128 with calibrated GPTQ, the rest
/// f16, perplexity on the calibration text (docs/quality.md, "Sensitivity
/// by role"). A role not listed gets the mean of these.
pub const ROLE_SENSITIVITY: [(&str, f64); 8] = [
    // Δ ln(ppl) of the role alone / its summed relative error estimate.
    ("embed_tokens.weight", 0.063_93 / 0.015_58),
    ("self_attn.q_proj.weight", 0.000_46 / 1.449),
    ("self_attn.k_proj.weight", 0.018_61 / 0.996_3),
    ("self_attn.v_proj.weight", 0.001_21 / 3.535),
    ("self_attn.o_proj.weight", 0.003_34 / 0.971_3),
    ("mlp.gate_proj.weight", 0.003_23 / 0.921_4),
    ("mlp.up_proj.weight", 0.043_80 / 1.197),
    ("mlp.down_proj.weight", 0.026_68 / 0.965_7),
];

/// The role coefficient of matrix `name` (an untied LM head counts as the
/// embedding it replaces).
pub fn role_sensitivity(name: &str) -> f64 {
    let name = if name == "lm_head.weight" { "embed_tokens.weight" } else { name };
    ROLE_SENSITIVITY
        .iter()
        .find(|(role, _)| name.ends_with(role))
        .map_or_else(
            || ROLE_SENSITIVITY.iter().map(|(_, c)| c).sum::<f64>() / ROLE_SENSITIVITY.len() as f64,
            |(_, c)| *c,
        )
}

/// One matrix as the allocator sees it.
pub struct Matrix<'a> {
    pub name: &'a str,
    pub rows: usize,
    pub cols: usize,
    /// Row-major weights.
    pub data: &'a [f32],
    /// Mean square of each input column, when calibrated.
    pub importance: Option<&'a [f32]>,
}

/// What one matrix would cost and lose in each candidate format.
#[derive(Clone, Debug)]
pub struct Options {
    pub name: String,
    /// `(format, bits, weighted error)`, the error already multiplied by
    /// the role coefficient; in [`CANDIDATES`] order.
    pub formats: Vec<((QuantKind, GroupSize), f64, f64)>,
}

/// Bits of a `rows × cols` matrix in `format`, parameters included.
pub fn matrix_bits(rows: usize, cols: usize, (kind, group): (QuantKind, GroupSize)) -> f64 {
    let layout = Layout::new(kind, group, cols);
    8.0 * (layout.row_bytes() + layout.param_bytes_per_row()) as f64 * rows as f64
}

/// Estimates matrix `m`'s relative output error in every candidate.
pub fn estimate(m: &Matrix<'_>) -> Options {
    let (rows, cols) = (m.rows, m.cols);
    let importance = |c: usize| m.importance.map_or(1.0, |i| f64::from(i[c]));
    let energy: f64 = (0..rows)
        .map(|r| {
            m.data[r * cols..(r + 1) * cols]
                .iter()
                .enumerate()
                .map(|(c, &w)| f64::from(w) * f64::from(w) * importance(c))
                .sum::<f64>()
        })
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let coefficient = role_sensitivity(m.name);
    let formats = CANDIDATES
        .iter()
        .map(|&(kind, group)| {
            let width = group.width(cols);
            // Per group: Σ importance / levels² over its columns, the same
            // for every row.
            let weights: Vec<f64> = (0..cols.div_ceil(width))
                .map(|g| {
                    (g * width..((g + 1) * width).min(cols))
                        .map(|c| {
                            let levels = f64::from(kind.levels(c).expect("coded candidates"));
                            importance(c) / (levels * levels)
                        })
                        .sum()
                })
                .collect();
            let mut error = 0.0;
            for r in 0..rows {
                let row = &m.data[r * cols..(r + 1) * cols];
                for (g, chunk) in row.chunks(width).enumerate() {
                    let (lo, hi) = chunk
                        .iter()
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &w| (lo.min(w), hi.max(w)));
                    let range = f64::from(hi - lo);
                    error += range * range / 12.0 * weights[g];
                }
            }
            ((kind, group), matrix_bits(rows, cols, (kind, group)), coefficient * error / energy)
        })
        .collect();
    Options {
        name: m.name.to_string(),
        formats,
    }
}

/// The chosen format of every matrix (in `options` order), within
/// `budget` bits per weight over all of them.
pub fn allocate(options: &[Options], weights: usize, budget: f64) -> Result<Vec<(QuantKind, GroupSize)>, String> {
    // Each matrix's lower convex hull of (bits, error), cheapest first:
    // the formats worth upgrading through.
    let hulls: Vec<Vec<usize>> = options.iter().map(|o| hull(&o.formats)).collect();
    let mut at: Vec<usize> = vec![0; options.len()];
    let bits_of = |m: usize, step: usize| options[m].formats[hulls[m][step]].1;
    let error_of = |m: usize, step: usize| options[m].formats[hulls[m][step]].2;
    let allowed = budget * weights as f64;
    let mut spent: f64 = (0..options.len()).map(|m| bits_of(m, 0)).sum();
    if spent > allowed {
        return Err(format!(
            "a budget of {budget} bits per weight is below the smallest this model can be stored in ({:.3}, every matrix {} g{})",
            spent / weights as f64,
            CANDIDATES[0].0,
            CANDIDATES[0].1
        ));
    }
    loop {
        // The upgrade with the most error removed per bit that still fits.
        let best = (0..options.len())
            .filter(|&m| at[m] + 1 < hulls[m].len())
            .filter(|&m| spent - bits_of(m, at[m]) + bits_of(m, at[m] + 1) <= allowed)
            .map(|m| {
                let gain = (error_of(m, at[m]) - error_of(m, at[m] + 1)) / (bits_of(m, at[m] + 1) - bits_of(m, at[m]));
                (m, gain)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        let Some((m, _)) = best else { break };
        spent += bits_of(m, at[m] + 1) - bits_of(m, at[m]);
        at[m] += 1;
    }
    Ok((0..options.len()).map(|m| options[m].formats[hulls[m][at[m]]].0).collect())
}

/// Indices of the lower convex hull of `(bits, error)` points, by
/// increasing bits, with error strictly decreasing.
fn hull(formats: &[((QuantKind, GroupSize), f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..formats.len()).collect();
    order.sort_by(|&a, &b| formats[a].1.total_cmp(&formats[b].1).then(formats[a].2.total_cmp(&formats[b].2)));
    let mut out: Vec<usize> = Vec::new();
    for i in order {
        let (x, y) = (formats[i].1, formats[i].2);
        if let Some(&last) = out.last() {
            // Same size or no better: not worth its bits.
            if x <= formats[last].1 || y >= formats[last].2 {
                continue;
            }
        }
        // Drop points that lie above the segment to this one.
        while out.len() >= 2 {
            let (a, b) = (out[out.len() - 2], out[out.len() - 1]);
            let (xa, ya, xb, yb) = (formats[a].1, formats[a].2, formats[b].1, formats[b].2);
            if (yb - ya) * (x - xa) >= (y - ya) * (xb - xa) {
                out.pop();
            } else {
                break;
            }
        }
        out.push(i);
    }
    out
}

/// Bits per weight of `formats` over `matrices` (`(rows, cols)` each).
pub fn bits_per_weight(matrices: &[(usize, usize)], formats: &[(QuantKind, GroupSize)]) -> f64 {
    let weights: usize = matrices.iter().map(|(r, c)| r * c).sum();
    let bits: f64 = matrices.iter().zip(formats).map(|(&(r, c), &f)| matrix_bits(r, c, f)).sum();
    bits / weights.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: u32, spread: f32) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503));
                ((x >> 8) as f32 / (1 << 24) as f32 - 0.5) * spread
            })
            .collect()
    }

    #[test]
    fn error_falls_with_finer_formats() {
        let data = matrix(16, 256, 1, 1.0);
        let o = estimate(&Matrix {
            name: "x.mlp.down_proj.weight",
            rows: 16,
            cols: 256,
            data: &data,
            importance: None,
        });
        let c = role_sensitivity("x.mlp.down_proj.weight");
        let error = |k, g| o.formats.iter().find(|f| f.0 == (k, g)).unwrap().2 / c;
        assert!(error(QuantKind::Int4, GroupSize::G128) < error(QuantKind::Q35, GroupSize::G128));
        assert!(error(QuantKind::Q35, GroupSize::G128) < error(QuantKind::Int3, GroupSize::G128));
        // Uniform weights: ranges barely shrink with the group, so the
        // per-weight error of q35 is (1/15² + 1/7²)/2 of range²/12.
        let expected = (1.0 / 225.0 + 1.0 / 49.0) / 2.0 / 12.0 / (1.0 / 12.0);
        let got = error(QuantKind::Q35, GroupSize::G256);
        assert!((got / expected - 1.0).abs() < 0.05, "{got} vs {expected}");
    }

    #[test]
    fn the_budget_is_kept_and_spent_where_it_helps() {
        // Two matrices alike but for their outliers: the one with wide
        // ranges gains more from finer groups and gets the bits.
        let calm = matrix(64, 256, 2, 1.0);
        let mut wild = matrix(64, 256, 3, 1.0);
        for (i, w) in wild.iter_mut().enumerate() {
            if i % 97 == 0 {
                *w *= 12.0;
            }
        }
        let options: Vec<Options> = [("a.mlp.up_proj.weight", &calm), ("b.mlp.up_proj.weight", &wild)]
            .iter()
            .map(|(name, data)| estimate(&Matrix { name, rows: 64, cols: 256, data, importance: None }))
            .collect();
        let shapes = [(64, 256), (64, 256)];
        for budget in [3.3, 3.6, 3.76, 4.2, 5.0] {
            let chosen = allocate(&options, 2 * 64 * 256, budget).unwrap();
            assert!(bits_per_weight(&shapes, &chosen) <= budget + 1e-9, "{budget}: {chosen:?}");
        }
        let chosen = allocate(&options, 2 * 64 * 256, 3.76).unwrap();
        assert!(matrix_bits(64, 256, chosen[1]) > matrix_bits(64, 256, chosen[0]), "{chosen:?}");
        let e = allocate(&options, 2 * 64 * 256, 2.0).unwrap_err();
        assert!(e.contains("a budget of 2 bits per weight is below the smallest"), "{e}");
    }

    #[test]
    fn the_hull_is_convex_and_decreasing() {
        let data = matrix(8, 512, 4, 1.0);
        let o = estimate(&Matrix { name: "m", rows: 8, cols: 512, data: &data, importance: None });
        let h = hull(&o.formats);
        for w in h.windows(2) {
            assert!(o.formats[w[1]].1 > o.formats[w[0]].1 && o.formats[w[1]].2 < o.formats[w[0]].2);
        }
        for w in h.windows(3) {
            let s = |a: usize, b: usize| (o.formats[b].2 - o.formats[a].2) / (o.formats[b].1 - o.formats[a].1);
            assert!(s(w[0], w[1]) <= s(w[1], w[2]), "slopes must rise (less gain per bit)");
        }
    }
}
