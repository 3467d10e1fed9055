//! The online incoherence transform (`q35.rotate`): `Q x = H (s ∘ x) / √n`
//! with `H` a Hadamard matrix of order `n` and `s` fixed random signs, and
//! its inverse `Qᵀ y = s ∘ (Hᵀ y) / √n`.
//!
//! A matrix `W` whose input is rotated is stored as `W Qᵀ` (each row `w`
//! becomes `Q w`): `(W Qᵀ)(Q x) = W x`, so the model computes the same
//! function, but the stored rows are spread evenly over their columns and
//! a group's range is no longer set by one outlier column (QuIP#'s
//! incoherence processing; QuaRot's online Hadamard transforms). It is
//! applied to the activations after the norms (with their scales, not
//! folded into the weights: SmolLM2's residual stream has channels that
//! are huge where the norm's scale is nearly zero, and rotating that
//! stream instead, with the scales folded, made rounding worse, see
//! docs/quality.md), after attention and after SwiGLU; the embedding's
//! gathered row takes the inverse, so a tied table is stored once, rotated
//! for the LM head.
//!
//! `H` is the Kronecker product `H₁₂^{⊗a} ⊗ H_{2^b}` for `n = 12^a · 2^b`
//! (`a ≤ 2`): Sylvester's construction for the power of two and Paley's
//! for 12 (from the quadratic residues mod 11). That covers 576 = 12²·4,
//! 1536 = 12·128 and every power of two; other widths are left unrotated.
//! Applied factor by factor it costs `n · (12a + log₂ 2^b)` additions,
//! never a dense matrix.

/// Widths this transform is defined for: `12^a · 2^b` with `a ≤ 2`, at
/// least 16 (below that there is nothing to spread).
pub fn supported(n: usize) -> bool {
    n >= 16 && factor_12s(n).is_some()
}

/// `a` in `n = 12^a · 2^b`, if `n` has that form.
pub fn factor_12s(n: usize) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let mut m = n;
    let mut a = 0;
    while !m.is_power_of_two() && m % 12 == 0 && a < 2 {
        m /= 12;
        a += 1;
    }
    m.is_power_of_two().then_some(a)
}

/// Paley's Hadamard matrix of order 12, row-major: first row all +1, first
/// column −1 below it, and `χ(i − j) + δᵢⱼ` elsewhere (`χ` the Legendre
/// symbol mod 11).
pub const H12: [[i8; 12]; 12] = paley12();

const fn paley12() -> [[i8; 12]; 12] {
    // Quadratic residues mod 11: 1, 3, 4, 5, 9.
    const fn chi(a: i32) -> i8 {
        match a.rem_euclid(11) {
            0 => 0,
            1 | 3 | 4 | 5 | 9 => 1,
            _ => -1,
        }
    }
    let mut h = [[0i8; 12]; 12];
    let mut i = 0;
    while i < 12 {
        let mut j = 0;
        while j < 12 {
            h[i][j] = if i == 0 {
                1
            } else if j == 0 {
                -1
            } else {
                chi(i as i32 - j as i32) + if i == j { 1 } else { 0 }
            };
            j += 1;
        }
        i += 1;
    }
    h
}

/// The sign of column `i`: a fixed hash of the index, so kernels compute
/// it instead of reading a table (the same function everywhere).
pub fn sign(i: usize) -> f64 {
    if sign_bit(i as u32) == 0 {
        1.0
    } else {
        -1.0
    }
}

/// Bit 0 of a murmur-style mix of `i`: `h = i · 0x9E3779B1; h ^= h >> 16;
/// h *= 0x85EBCA6B; h ^= h >> 13` (wrapping 32-bit arithmetic).
pub fn sign_bit(i: u32) -> u32 {
    let mut h = i.wrapping_mul(0x9E37_79B1);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h & 1
}

/// `x ← Q x` (`inverse`: `x ← Qᵀ x`). Panics unless [`supported`].
pub fn apply(x: &mut [f64], inverse: bool) {
    let n = x.len();
    let twelves = factor_12s(n).filter(|_| supported(n)).expect("a width the rotation supports");
    let scale = 1.0 / (n as f64).sqrt();
    if !inverse {
        for (i, v) in x.iter_mut().enumerate() {
            *v *= sign(i) * scale;
        }
    }
    let mut stride = n;
    for _ in 0..twelves {
        let inner = stride / 12;
        for block in (0..n).step_by(stride) {
            for i in 0..inner {
                let mut out = [0f64; 12];
                for (a, o) in out.iter_mut().enumerate() {
                    for b in 0..12 {
                        let h = if inverse { H12[b][a] } else { H12[a][b] };
                        *o += f64::from(h) * x[block + b * inner + i];
                    }
                }
                for (a, o) in out.into_iter().enumerate() {
                    x[block + a * inner + i] = o;
                }
            }
        }
        stride = inner;
    }
    // Sylvester's H over the innermost `stride` (a power of two): butterflies.
    let mut half = 1;
    while half < stride {
        for start in (0..n).step_by(2 * half) {
            for i in start..start + half {
                let (u, v) = (x[i], x[i + half]);
                x[i] = u + v;
                x[i + half] = u - v;
            }
        }
        half *= 2;
    }
    if inverse {
        for (i, v) in x.iter_mut().enumerate() {
            *v *= sign(i) * scale;
        }
    }
}

/// Each `cols`-wide row of a row-major matrix becomes `Q row`: what a
/// matrix whose input is rotated stores (`W Qᵀ`).
pub fn rotate_rows(data: &mut [f32], cols: usize) {
    let mut row = vec![0f64; cols];
    for r in data.chunks_mut(cols) {
        for (a, &b) in row.iter_mut().zip(r.iter()) {
            *a = f64::from(b);
        }
        apply(&mut row, false);
        for (a, &b) in r.iter_mut().zip(&row) {
            *a = b as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paley_12_is_hadamard() {
        for i in 0..12 {
            for j in 0..12 {
                let dot: i32 = (0..12).map(|k| i32::from(H12[i][k]) * i32::from(H12[j][k])).sum();
                assert_eq!(dot, if i == j { 12 } else { 0 }, "rows {i} and {j}");
            }
        }
    }

    #[test]
    fn widths() {
        for n in [16, 64, 576, 1536, 2048, 4096, 12 * 16, 144 * 2] {
            assert!(supported(n), "{n}");
        }
        // 1728 = 12³ (a ≤ 2), 5632 = 11 · 512, 896 = 7 · 128, below 16.
        for n in [0, 8, 12, 1728, 5632, 896, 100] {
            assert!(!supported(n), "{n}");
        }
    }

    /// Q is orthogonal: Qᵀ Q x = x, ‖Q x‖ = ‖x‖; and it is the dense
    /// `H · diag(s) / √n` built from the Kronecker definition.
    #[test]
    fn orthogonal_and_the_kronecker_product() {
        for n in [16, 48, 576, 1536] {
            let x: Vec<f64> = (0..n).map(|i| ((i * 7919) % 101) as f64 - 50.0 + 0.25).collect();
            let mut y = x.clone();
            apply(&mut y, false);
            let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>();
            assert!((norm(&x) - norm(&y)).abs() <= 1e-9 * norm(&x), "{n}");
            let mut back = y.clone();
            apply(&mut back, true);
            for (a, b) in x.iter().zip(&back) {
                assert!((a - b).abs() < 1e-9, "{n}");
            }
            // Dense H as the Kronecker product, outermost factor first.
            let twelves = factor_12s(n).unwrap();
            let mut h = vec![vec![1f64]];
            for _ in 0..twelves {
                h = kron(&h, &H12.map(|r| r.map(f64::from)).iter().map(|r| r.to_vec()).collect::<Vec<_>>());
            }
            let mut m = n / 12usize.pow(twelves as u32);
            while m > 1 {
                h = kron(&h, &[vec![1.0, 1.0], vec![1.0, -1.0]]);
                m /= 2;
            }
            for (r, &got) in y.iter().enumerate() {
                let want: f64 = (0..n).map(|c| h[r][c] * sign(c) * x[c]).sum::<f64>() / (n as f64).sqrt();
                assert!((want - got).abs() < 1e-9, "{n} row {r}");
            }
        }
    }

    fn kron(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let (p, q) = (a.len(), b.len());
        (0..p * q).map(|i| (0..p * q).map(|j| a[i / q][j / q] * b[i % q][j % q]).collect()).collect()
    }

    #[test]
    fn signs_are_balanced() {
        let minus = (0..1536).filter(|&i| sign(i) < 0.0).count();
        assert!((700..=836).contains(&minus), "{minus} of 1536 negative");
    }

    /// A rotated row times a rotated input is the original dot product.
    #[test]
    fn rotated_rows_keep_dot_products() {
        let n = 576;
        let w: Vec<f32> = (0..2 * n).map(|i| ((i * 31) % 17) as f32 - 8.0).collect();
        let x: Vec<f64> = (0..n).map(|i| ((i * 13) % 7) as f64 - 3.0).collect();
        let mut rw = w.clone();
        rotate_rows(&mut rw, n);
        let mut rx = x.clone();
        apply(&mut rx, false);
        for r in 0..2 {
            let plain: f64 = (0..n).map(|c| f64::from(w[r * n + c]) * x[c]).sum();
            let rotated: f64 = (0..n).map(|c| f64::from(rw[r * n + c]) * rx[c]).sum();
            assert!((plain - rotated).abs() < 1e-3, "{plain} vs {rotated}");
        }
    }
}
