//! `q35.rotate`: the online incoherence transform of
//! `q35_format::rotation`, `Q x = H (s ∘ x) / √n` (inverse: `s ∘ (Hᵀ x) /
//! √n`), one workgroup per token row.
//!
//! The signs are computed from the column index (the format's hash), the
//! Hadamard matrix is applied factor by factor: each Paley H₁₂ as twelve
//! unrolled signed sums over elements `stride` apart, then Sylvester's
//! power of two as butterfly stages; all in place in the output row.
//!
//! Signature: `(wg, tokens, start, x: memref<?xWxf32>, out: memref<?xWxf32>)`.

use melior::ir::{Block, Value};
use q35_format::rotation::{factor_12s, H12};
use q35_target::builder::{arg, Builder};
use q35_target::kernel::FIRST_BUFFER;

/// Fills the body of the rotate kernel of `width` columns.
pub fn build(b: &Builder<'_>, width: usize, inverse: bool, body: &Block<'_>) {
    let twelves = factor_12s(width).expect("q35-lower-to-kernels plans supported widths only");
    let m = arg(body, 0);
    let x = arg(body, FIRST_BUFFER);
    let out = arg(body, FIRST_BUFFER + 1);
    let scale = 1.0 / (width as f64).sqrt();

    // out = x (forward: times the signs and the scale).
    signs_pass(b, body, width, x, out, m, (!inverse).then_some(scale));

    let mut stride = width;
    for _ in 0..twelves {
        let inner = stride / 12;
        let blocks = b.loop_body(&[]);
        {
            let base = arg(&blocks, 0);
            let each = b.loop_body(&[]);
            {
                let i = arg(&each, 0);
                let start = b.addi(&each, base, i);
                let at: Vec<Value> = (0..12).map(|k| b.addi(&each, start, b.index(&each, (k * inner) as i64))).collect();
                let v: Vec<Value> = at.iter().map(|&a| b.load(&each, out, &[m, a])).collect();
                for (r, &a) in at.iter().enumerate() {
                    let mut acc = None;
                    for (c, &value) in v.iter().enumerate() {
                        let h = if inverse { H12[c][r] } else { H12[r][c] };
                        acc = Some(match (acc, h) {
                            (None, 1) => value,
                            (None, _) => b.negf(&each, value),
                            (Some(s), 1) => b.addf(&each, s, value),
                            (Some(s), _) => b.subf(&each, s, value),
                        });
                    }
                    b.store(&each, acc.expect("twelve terms"), out, &[m, a]);
                }
                b.yield_(&each, &[]);
            }
            b.for_op(&blocks, b.index(&blocks, 0), b.index(&blocks, inner as i64), b.index(&blocks, 1), &[], each);
            b.yield_(&blocks, &[]);
        }
        b.for_op(body, b.index(body, 0), b.index(body, width as i64), b.index(body, stride as i64), &[], blocks);
        stride = inner;
    }

    // Sylvester's H over each run of `stride` (a power of two).
    let mut half = 1;
    while half < stride {
        let pairs = b.loop_body(&[]);
        {
            let p = arg(&pairs, 0);
            let h = b.index(&pairs, half as i64);
            let lo = b.addi(&pairs, b.muli(&pairs, b.divui(&pairs, p, h), b.index(&pairs, 2 * half as i64)), b.remui(&pairs, p, h));
            let hi = b.addi(&pairs, lo, h);
            let u = b.load(&pairs, out, &[m, lo]);
            let v = b.load(&pairs, out, &[m, hi]);
            b.store(&pairs, b.addf(&pairs, u, v), out, &[m, lo]);
            b.store(&pairs, b.subf(&pairs, u, v), out, &[m, hi]);
            b.yield_(&pairs, &[]);
        }
        b.for_op(body, b.index(body, 0), b.index(body, (width / 2) as i64), b.index(body, 1), &[], pairs);
        half *= 2;
    }

    if inverse {
        signs_pass(b, body, width, out, out, m, Some(scale));
    }
}

/// `out[m, i] = source[m, i] · s_i · scale` for every column (a copy
/// when `signed_scale` is `None`), `s_i` from
/// `q35_format::rotation::sign_bit` in 32-bit integers.
fn signs_pass<'c>(b: &Builder<'c>, body: &Block<'c>, width: usize, source: Value<'c, '_>, out: Value<'c, '_>, m: Value<'c, '_>, signed_scale: Option<f64>) {
    let row = b.loop_body(&[]);
    {
        let i = arg(&row, 0);
        let v = b.load(&row, source, &[m, i]);
        let y = match signed_scale {
            Some(scale) => {
                let i32_type = b.int_type(32);
                let k = b.index_cast(&row, i, i32_type);
                let mut h = b.muli(&row, k, b.int(&row, 32, 0x9E37_79B1_u32 as i32 as i64));
                h = b.xori(&row, h, b.shrui(&row, h, b.int(&row, 32, 16)));
                h = b.muli(&row, h, b.int(&row, 32, 0x85EB_CA6B_u32 as i32 as i64));
                h = b.xori(&row, h, b.shrui(&row, h, b.int(&row, 32, 13)));
                let bit = b.andi(&row, h, b.int(&row, 32, 1));
                let plus = b.cmpi(&row, "eq", bit, b.int(&row, 32, 0));
                let factor = b.select(&row, plus, b.f32(&row, scale), b.f32(&row, -scale));
                b.mulf(&row, v, factor)
            }
            None => v,
        };
        b.store(&row, y, out, &[m, i]);
        b.yield_(&row, &[]);
    }
    b.for_op(body, b.index(body, 0), b.index(body, width as i64), b.index(body, 1), &[], row);
}

#[cfg(test)]
mod tests {
    /// The kernel against `q35_format::rotation::apply` (f64), both
    /// directions, for 576 (two H₁₂ stages and a 4-point butterfly), 1536
    /// and 768 (one H₁₂, seven and six butterfly stages) and 64
    /// (butterflies only), on two rows: within 1e-5 of the row's norm (f32
    /// sums of at most 12 terms per stage, a few stages: ~10 roundings of
    /// 2⁻²⁴ relative each).
    #[test]
    fn rotate_kernels_match_the_format() {
        for width in [64usize, 576, 1536, 768] {
            for inverse in [false, true] {
                let x: Vec<f32> = (0..2 * width).map(|i| ((i * 7919) % 1013) as f32 / 101.0 - 5.0).collect();
                let out = crate::testing::run_row_kernel(width, &x, |b, block| super::build(b, width, inverse, block));
                for m in 0..2 {
                    let mut want: Vec<f64> = x[m * width..(m + 1) * width].iter().map(|&v| f64::from(v)).collect();
                    let norm = want.iter().map(|v| v * v).sum::<f64>().sqrt();
                    q35_format::rotation::apply(&mut want, inverse);
                    for (i, (&got, &want)) in out[m * width..(m + 1) * width].iter().zip(&want).enumerate() {
                        assert!((f64::from(got) - want).abs() <= 1e-5 * norm, "width {width} inverse {inverse} row {m} col {i}: {got} vs {want}");
                    }
                }
            }
        }
    }
}
