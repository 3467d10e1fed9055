//! Row-wise kernels: `q35.add`, `q35.mul`, `q35.silu`, `q35.swiglu` and
//! `q35.rms_norm`. One workgroup per token row.
//!
//! Signatures: `(wg, tokens, start, a: memref<?xWxf32>, [b: memref<?xWxf32>
//! | gamma: memref<?xf32>], out: memref<?xWxf32>)`.

use q35_target::builder::{arg, Builder, Extent};
use q35_target::kernel::{RowOp, FIRST_BUFFER};
use q35_target::math::{rms_scale, silu, Exp};
use melior::ir::{Block, Value};

/// Fills the body of a row kernel of `width` columns.
pub fn build(b: &Builder<'_>, op: RowOp, width: usize, body: &Block<'_>) {
    if let RowOp::Rotate { inverse } = op {
        return crate::rotate::build(b, width, inverse, body);
    }
    let m = arg(body, 0);
    let a = arg(body, FIRST_BUFFER);
    let other = arg(body, FIRST_BUFFER + 1);
    let out = arg(body, FIRST_BUFFER + op.inputs());
    let zero = b.index(body, 0);
    let one = b.index(body, 1);
    let w = b.index(body, width as i64);

    // RMSNorm needs 1 / sqrt(mean(x²) + eps) first.
    let scale = if let RowOp::RmsNorm { epsilon } = op {
        let fzero = b.f32(body, 0.0);
        let sum = b.loop_body(&[b.f32_type()]);
        {
            let i = arg(&sum, 0);
            let acc = arg(&sum, 1);
            let x = b.load(&sum, a, &[m, i]);
            // A sum of squares: reassociated so that it vectorizes (in
            // order, 576 dependent adds took most of a decode step's norm).
            let sq = b.dot_op(&sum, "arith.mulf", x, x);
            let next = b.dot_op(&sum, "arith.addf", acc, sq);
            b.yield_(&sum, &[next]);
        }
        let total: Value = b.for_op(body, zero, w, one, &[fzero], sum).result(0).expect("one result").into();
        Some(rms_scale(b, body, total, width, epsilon))
    } else {
        None
    };

    let row = b.loop_body(&[]);
    {
        let i = arg(&row, 0);
        let x = b.load(&row, a, &[m, i]);
        let y = match op {
            RowOp::Add => {
                let y = b.load(&row, other, &[m, i]);
                b.addf(&row, x, y)
            }
            RowOp::Mul => {
                let y = b.load(&row, other, &[m, i]);
                b.mulf(&row, x, y)
            }
            RowOp::Silu => silu(b, &row, x, Exp::Inline),
            RowOp::SwiGlu => {
                let up = b.load(&row, other, &[m, i]);
                let s = silu(b, &row, x, Exp::Inline);
                b.mulf(&row, s, up)
            }
            RowOp::Rotate { .. } => unreachable!("built above"),
            RowOp::RmsNorm { .. } => {
                let g = b.load(&row, other, &[i]);
                let normed = b.mulf(&row, x, scale.expect("computed above"));
                b.mulf(&row, normed, g)
            }
        };
        b.store(&row, y, out, &[m, i]);
        b.yield_(&row, &[]);
    }
    b.for_op(body, zero, w, one, &[], row);
}

/// [`build`] as linalg ops on the token's rows (`q35-lower-to-kernels
/// {kernels=linalg}`): one elementwise `linalg.generic`, after (RMSNorm) a
/// reduction generic into a rank-0 scratch for the sum of squares.
pub fn build_linalg(b: &Builder<'_>, op: RowOp, width: usize, body: &Block<'_>) {
    if let RowOp::Rotate { inverse } = op {
        return crate::rotate::build(b, width, inverse, body);
    }
    let m = arg(body, 0);
    let at = b.muli(body, m, b.index(body, width as i64));
    let row = |buffer| b.view(body, buffer, at, &[Extent::Fixed(width)], &[1], "f32");
    let a = row(arg(body, FIRST_BUFFER));
    let out = row(arg(body, FIRST_BUFFER + op.inputs()));
    let each = "(d0) -> (d0)".to_string();
    let maps = |operands: usize| vec![each.clone(); operands];
    match op {
        RowOp::RmsNorm { epsilon } => {
            let total = b.alloca(body, "memref<f32>", &[]);
            b.store(body, b.f32(body, 0.0), total, &[]);
            b.generic(body, &[a], &[total], &[each.clone(), "(d0) -> ()".to_string()], &["reduction"], |block| {
                let square = b.mulf(block, arg(block, 0), arg(block, 0));
                vec![b.addf(block, arg(block, 1), square)]
            });
            let sum = b.load(body, total, &[]);
            let scale = rms_scale(b, body, sum, width, epsilon);
            let gamma = b.view(body, arg(body, FIRST_BUFFER + 1), b.index(body, 0), &[Extent::Fixed(width)], &[1], "f32");
            b.generic(body, &[a, gamma], &[out], &maps(3), &["parallel"], |block| {
                let normed = b.mulf(block, arg(block, 0), scale);
                vec![b.mulf(block, normed, arg(block, 1))]
            });
        }
        RowOp::Silu => b.generic(body, &[a], &[out], &maps(2), &["parallel"], |block| vec![silu(b, block, arg(block, 0), Exp::Math)]),
        RowOp::Rotate { .. } => unreachable!("built above"),
        RowOp::Add | RowOp::Mul | RowOp::SwiGlu => {
            let other = row(arg(body, FIRST_BUFFER + 1));
            b.generic(body, &[a, other], &[out], &maps(3), &["parallel"], |block| {
                let (x, y) = (arg(block, 0), arg(block, 1));
                vec![match op {
                    RowOp::Add => b.addf(block, x, y),
                    RowOp::Mul => b.mulf(block, x, y),
                    _ => {
                        let s = silu(b, block, x, Exp::Math);
                        b.mulf(block, s, y)
                    }
                }]
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU silu row kernel (so the inline exp) against f64 on values
    /// across exp's whole range, its cut-offs, infinities and NaN: within
    /// 5 ulp (2 for exp, one each for 1 + e, the division and slack), or
    /// 3e-37 absolute: below x = −88.72, e^−x overflows f32 (as libm's
    /// expf does) and silu is −0 where the exact value is `x·e^x`, at most
    /// 88.8·e^−88.7 < 3e-37 in magnitude.
    #[test]
    fn silu_with_inline_exp_is_within_a_few_ulp_everywhere() {
        let width = 1024;
        let mut x: Vec<f32> = (0..width - 12).map(|i| -110.0 + 220.0 * i as f32 / (width - 13) as f32).collect();
        x.extend([0.0, -0.0, 1e-30, -1e-30, 88.72, -88.72, 87.34, -87.34, 104.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
        let out = crate::testing::run_row_kernel(width, &x, |b, block| build(b, RowOp::Silu, width, block));

        let u = 2f64.powi(-24);
        for (&x, &got) in x.iter().zip(&out) {
            let xf = f64::from(x);
            // At −inf the form is −inf/inf: NaN, as with libm's exp.
            let exact = xf / (1.0 + (-xf).exp());
            if exact.is_nan() {
                assert!(got.is_nan(), "silu({x}) = {got}, expected NaN");
                continue;
            }
            let error = (f64::from(got) - exact).abs();
            assert!(f64::from(got) == exact || error <= 5.0 * u * exact.abs() || error <= 3e-37, "silu({x}) = {got}, expected {exact}");
        }
    }
}
