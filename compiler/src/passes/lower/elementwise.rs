//! Row-wise kernels: `q35.add`, `q35.mul`, `q35.silu`, `q35.swiglu` and
//! `q35.rms_norm`. One workgroup per token row.
//!
//! Signatures: `(wg, tokens, start, a: memref<?xWxf32>, [b: memref<?xWxf32>
//! | gamma: memref<?xf32>], out: memref<?xWxf32>)`.

use super::{builder::{arg, Builder}, FIRST_BUFFER};
use melior::ir::{Block, Value};

/// Which row-wise function a kernel computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RowOp {
    Add,
    Mul,
    Silu,
    SwiGlu,
    RmsNorm { epsilon: f64 },
}

impl RowOp {
    pub fn name(&self) -> &'static str {
        match self {
            RowOp::Add => "add",
            RowOp::Mul => "mul",
            RowOp::Silu => "silu",
            RowOp::SwiGlu => "swiglu",
            RowOp::RmsNorm { .. } => "rms_norm",
        }
    }

    pub fn inputs(&self) -> usize {
        match self {
            RowOp::Silu => 1,
            _ => 2,
        }
    }
}

/// x · sigmoid(x) = x / (1 + exp(-x)), in f32: the one form every CPU
/// and GPU kernel (row ops and fused SwiGLU epilogues) uses.
pub(crate) fn silu<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, x: Value<'c, '_>) -> Value<'c, 'b> {
    let neg = b.negf(block, x);
    let e = b.math1(block, "exp", neg);
    let one = b.f32(block, 1.0);
    let den = b.addf(block, one, e);
    b.divf(block, x, den)
}

/// RMSNorm's `1 / sqrt(Σx² / width + eps)` from the sum of squares `total`,
/// on the CPU and the GPU alike.
pub(crate) fn rms_scale<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, total: Value<'c, '_>, width: usize, epsilon: f64) -> Value<'c, 'b> {
    let wf = b.f32(block, width as f64);
    let mean = b.divf(block, total, wf);
    let eps = b.f32(block, epsilon);
    let var = b.addf(block, mean, eps);
    let root = b.math1(block, "sqrt", var);
    let one = b.f32(block, 1.0);
    b.divf(block, one, root)
}

/// Fills the body of a row kernel of `width` columns.
pub fn build(b: &Builder<'_>, op: RowOp, width: usize, body: &Block<'_>) {
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
            let sq = b.mulf(&sum, x, x);
            let next = b.addf(&sum, acc, sq);
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
            RowOp::Silu => silu(b, &row, x),
            RowOp::SwiGlu => {
                let up = b.load(&row, other, &[m, i]);
                let s = silu(b, &row, x);
                b.mulf(&row, s, up)
            }
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
