//! GPTQ's error-compensating rounding (Frantar et al., 2023) for one
//! matrix's rows.
//!
//! With `H = E[x xᵀ]` of the matrix's input (from calibration), the error
//! a row adds to its output for a weight error `δ` is `δᵀ H δ`. Rounding
//! the columns one at a time and moving each column's rounding error onto
//! the columns not yet rounded, through `U` with `Uᵀ U = H⁻¹` (upper
//! triangular), minimizes that error greedily; the stored format and its
//! decode do not change, only which code each weight gets.
//!
//! Choices, as GPTQ's reference implementation makes them except the
//! damping:
//! - damping: `H + 0.1 · mean(diag H) · I` (GPTQ uses 0.01), so `H` is
//!   invertible even for inputs that never vary; a column whose input is
//!   always zero gets a diagonal of 1 (its error costs nothing, so none is
//!   moved). Calibrated on thousands of tokens rather than GPTQ's ~260k,
//!   `H` is a noisy estimate and 0.01 fitted the calibration text: on
//!   SmolLM2, 0.1 took perplexity from 24.7 to 23.8 on GPL-3 and from 10.3
//!   to 9.1 on a second text (docs/quality.md);
//! - act-order: columns are rounded in decreasing `diag H` (the most
//!   important first, while the most columns remain to absorb its error).
//!   The group parameters are fixed before rounding (by the caller), so any
//!   order is valid for the grouped format.
//!
//! Rows are independent given `U`, so a caller rounds them in parallel;
//! `U` is computed once per distinct input (q, k and v share one).

/// Per weight name: GPTQ's error compensation from its input's Hessian
/// (weights that read the same input share one).
pub type Compensations = std::collections::BTreeMap<String, std::sync::Arc<Compensation>>;

/// `U` (upper triangular, `Uᵀ U = H⁻¹`) of one input, in rounding order.
#[derive(Debug, Clone)]
pub struct Compensation {
    k: usize,
    /// Rounding order: column `order[t]` is rounded at step `t`.
    order: Vec<usize>,
    /// Row-major K×K, upper triangle in rounding order.
    u: Vec<f64>,
}

/// Relative damping of the Hessian's diagonal.
pub const DAMPING: f64 = 0.1;

impl Compensation {
    /// From `hessian`, `E[x xᵀ]` as a row-major `k × k` symmetric matrix.
    /// Errors if it has the wrong size, a non-finite value, or is not
    /// positive definite even after damping.
    pub fn new(hessian: &[f64], k: usize) -> Result<Self, String> {
        if k == 0 || hessian.len() != k * k {
            return Err(format!("a Hessian of {} values is not {k}×{k}", hessian.len()));
        }
        if hessian.iter().any(|v| !v.is_finite()) {
            return Err("the Hessian has a non-finite value".into());
        }
        let mut diag: Vec<f64> = (0..k).map(|i| hessian[i * k + i]).collect();
        for d in &mut diag {
            if *d <= 0.0 {
                *d = 1.0;
            }
        }
        let damp = DAMPING * diag.iter().sum::<f64>() / k as f64;
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]).then(a.cmp(&b)));
        // H in rounding order, damped.
        let mut h = vec![0f64; k * k];
        for (a, &i) in order.iter().enumerate() {
            for (b, &j) in order.iter().enumerate() {
                h[a * k + b] = if a == b { diag[i] + damp } else { hessian[i * k + j] };
            }
        }
        let r = reverse_cholesky(&h, k)?;
        let u = upper_inverse(&r, k);
        Ok(Self { k, order, u })
    }

    /// Columns per row.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// Rounds one row: `round(col, value)` returns the value the stored
    /// code of column `col` decodes to for the (error-updated) `value`,
    /// recording the code; each rounding error is moved onto the columns
    /// not yet rounded.
    pub fn round_row(&self, row: &[f32], mut round: impl FnMut(usize, f64) -> f64) {
        self.round_rows(&[row], |_, col, value| round(col, value));
    }

    /// [`Compensation::round_row`] for several rows at once (`round(b,
    /// col, value)` for row `b`): each row of `U` is read once for all of
    /// them, not once per row (for K = 1536, `U` is 19 MB, and reading it
    /// per row bounded GPTQ by memory).
    pub fn round_rows(&self, rows: &[&[f32]], mut round: impl FnMut(usize, usize, f64) -> f64) {
        let k = self.k;
        debug_assert!(rows.iter().all(|r| r.len() == k));
        let mut w: Vec<Vec<f64>> = rows
            .iter()
            .map(|row| self.order.iter().map(|&c| f64::from(row[c])).collect())
            .collect();
        let mut e = vec![0f64; rows.len()];
        for t in 0..k {
            let u = &self.u[t * k..(t + 1) * k];
            for (b, w) in w.iter_mut().enumerate() {
                let q = round(b, self.order[t], w[t]);
                e[b] = (w[t] - q) / u[t];
            }
            for (w, &e) in w.iter_mut().zip(&e) {
                subtract_scaled(&mut w[t + 1..], e, &u[t + 1..]);
            }
        }
    }
}

/// `y -= a·x`, with the widest vectors the CPU has (the crate is built for
/// the baseline x86-64, SSE2).
fn subtract_scaled(y: &mut [f64], a: f64, x: &[f64]) {
    #[inline(always)]
    fn body(y: &mut [f64], a: f64, x: &[f64]) {
        y.iter_mut().zip(x).for_each(|(y, &x)| *y -= a * x);
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(y: &mut [f64], a: f64, x: &[f64]) {
            body(y, a, x)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(y: &mut [f64], a: f64, x: &[f64]) {
            body(y, a, x)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512(y, a, x) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { avx2(y, a, x) };
        }
    }
    body(y, a, x)
}

/// `Σ a·b` in eight independent partial sums, which the compiler turns
/// into vector FMAs (a single running sum would be one add at a time:
/// the factorizations spend all their time here).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `R`, upper triangular with `R Rᵀ = h` (row-major `k × k`, symmetric
/// positive definite): Cholesky from the last row up.
fn reverse_cholesky(h: &[f64], k: usize) -> Result<Vec<f64>, String> {
    let mut r = vec![0f64; k * k];
    for j in (0..k).rev() {
        let rj: Vec<f64> = r[j * k + j + 1..(j + 1) * k].to_vec();
        let d = h[j * k + j] - dot(&rj, &rj);
        if !(d > 0.0) || !d.is_finite() {
            return Err(format!("the Hessian is not positive definite (pivot {j}: {d:e})"));
        }
        let d = d.sqrt();
        r[j * k + j] = d;
        for i in 0..j {
            let ri = &r[i * k + j + 1..(i + 1) * k];
            r[i * k + j] = (h[i * k + j] - dot(ri, &rj)) / d;
        }
    }
    Ok(r)
}

/// `R⁻¹` of an upper triangular `R` (row-major), itself upper triangular.
fn upper_inverse(r: &[f64], k: usize) -> Vec<f64> {
    // Column j of R⁻¹ by back substitution, kept as row j of `t` (so both
    // operands of every dot product are contiguous), then transposed.
    let mut t = vec![0f64; k * k];
    for j in 0..k {
        for i in (0..=j).rev() {
            let delta = if i == j { 1.0 } else { 0.0 };
            let sum = dot(&r[i * k + i + 1..i * k + j + 1], &t[j * k + i + 1..j * k + j + 1]);
            t[j * k + i] = (delta - sum) / r[i * k + i];
        }
    }
    let mut u = vec![0f64; k * k];
    for i in 0..k {
        for j in i..k {
            u[i * k + j] = t[j * k + i];
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matmul_t(a: &[f64], b: &[f64], k: usize) -> Vec<f64> {
        // a · bᵀ
        let mut out = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                out[i * k + j] = (0..k).map(|l| a[i * k + l] * b[j * k + l]).sum();
            }
        }
        out
    }

    fn spd(k: usize, seed: u64) -> Vec<f64> {
        // X Xᵀ / n for a pseudo-random X whose k features share one latent
        // factor (as a model's input features are correlated).
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let n = 3 * k;
        let latent: Vec<f64> = (0..n).map(|_| next()).collect();
        let x: Vec<f64> = (0..k * n).map(|i| latent[i % n] + 0.3 * next()).collect();
        let mut h = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                h[i * k + j] = (0..n).map(|l| x[i * n + l] * x[j * n + l]).sum::<f64>() / n as f64;
            }
        }
        h
    }

    #[test]
    fn the_factors_invert_the_hessian() {
        let k = 9;
        let h = spd(k, 7);
        let r = reverse_cholesky(&h, k).unwrap();
        let rrt = matmul_t(&r, &r, k);
        for (a, b) in rrt.iter().zip(&h) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        let u = upper_inverse(&r, k);
        // R U = I
        for i in 0..k {
            for j in 0..k {
                let v: f64 = (0..k).map(|l| r[i * k + l] * u[l * k + j]).sum();
                assert!((v - f64::from(u8::from(i == j))).abs() < 1e-10, "({i},{j}) {v}");
            }
            for j in 0..i {
                assert_eq!(u[i * k + j], 0.0);
            }
        }
    }

    /// The defining property: with U from H, the rounded row's output error
    /// δᵀ H δ is smaller than plain rounding's; on correlated features (the
    /// case GPTQ is for) by a wide margin, as errors of opposite sign cancel.
    #[test]
    fn compensation_lowers_the_output_error() {
        let k = 32;
        let h = spd(k, 3);
        let comp = Compensation::new(&h, k).unwrap();
        let step = 0.1;
        let quant = |v: f64| (v / step).round() * step;
        let cost = |q: &[f64], row: &[f32]| {
            let d: Vec<f64> = q.iter().zip(row).map(|(a, &b)| a - f64::from(b)).collect();
            (0..k).map(|i| (0..k).map(|j| d[i] * h[i * k + j] * d[j]).sum::<f64>()).sum::<f64>()
        };
        let (mut with, mut without) = (0.0, 0.0);
        for r in 0..64 {
            let row: Vec<f32> = (0..k).map(|i| (((i * 37 + r * 101) % 23) as f32 - 11.0) * 0.0137).collect();
            let mut gptq = vec![0f64; k];
            comp.round_row(&row, |c, v| {
                gptq[c] = quant(v);
                gptq[c]
            });
            let plain: Vec<f64> = row.iter().map(|&v| quant(f64::from(v))).collect();
            with += cost(&gptq, &row);
            without += cost(&plain, &row);
        }
        // 0.54 here; plain rounding would give 1.
        assert!(with < 0.7 * without, "{with} vs {without}");
    }

    #[test]
    fn bad_hessians_are_refused() {
        assert!(Compensation::new(&[1.0; 5], 2).is_err());
        assert!(Compensation::new(&[f64::NAN, 0.0, 0.0, 1.0], 2).is_err());
        // An input that is always zero is damped into an identity.
        assert!(Compensation::new(&[0.0; 4], 2).is_ok());
    }
}
