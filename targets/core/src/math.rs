//! Kernel arithmetic every target writes the same way (SiLU, RMSNorm's
//! scale, RoPE's rotation, matmul epilogues), so CPU and GPU kernels agree
//! to the rounding.

use crate::builder::{arg, Builder};
use crate::kernel::Epilogue;
use melior::ir::{Block, Value};

/// How a kernel computes `e^x` (f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exp {
    /// `math.exp`: on the GPU, libdevice's.
    Math,
    /// [`Builder::exp_f32`]: inline arithmetic, for CPU kernels (a libm
    /// call in a loop spills every vector register and cannot vectorize).
    Inline,
}

impl Exp {
    pub fn emit<'c, 'b>(self, b: &Builder<'c>, block: &'b Block<'c>, x: Value<'c, '_>) -> Value<'c, 'b> {
        match self {
            Exp::Math => b.math1(block, "exp", x),
            Exp::Inline => b.exp_f32(block, x),
        }
    }
}

/// x · sigmoid(x) = x / (1 + exp(-x)), in f32: the one form every CPU
/// and GPU kernel (row ops and fused SwiGLU epilogues) uses.
pub fn silu<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, x: Value<'c, '_>, exp: Exp) -> Value<'c, 'b> {
    let neg = b.negf(block, x);
    let e = exp.emit(b, block, neg);
    let one = b.f32(block, 1.0);
    let den = b.addf(block, one, e);
    b.divf(block, x, den)
}

/// RMSNorm's `1 / sqrt(Σx² / width + eps)` from the sum of squares `total`,
/// on the CPU and the GPU alike.
pub fn rms_scale<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, total: Value<'c, '_>, width: usize, epsilon: f64) -> Value<'c, 'b> {
    let wf = b.f32(block, width as f64);
    let mean = b.divf(block, total, wf);
    let eps = b.f32(block, epsilon);
    let var = b.addf(block, mean, eps);
    let root = b.math1(block, "sqrt", var);
    let one = b.f32(block, 1.0);
    b.divf(block, one, root)
}

/// cos and sin (f32) of pair `i`'s angle at position `pos` (f64):
/// `pos · exp(i · factor)` in f64, each rounded to f32 once.
pub fn angle<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, i: Value<'c, '_>, pos: Value<'c, '_>, factor: Value<'c, '_>) -> (Value<'c, 'b>, Value<'c, 'b>) {
    let i_int = b.index_cast(block, i, b.int_type(64));
    let i_f = b.sitofp_to(block, i_int, b.f64_type());
    let exponent = b.mulf(block, i_f, factor);
    let inv_freq = b.math1(block, "exp", exponent);
    let angle = b.mulf(block, pos, inv_freq);
    let cos64 = b.math1(block, "cos", angle);
    let sin64 = b.math1(block, "sin", angle);
    (b.truncf(block, cos64), b.truncf(block, sin64))
}

/// Rotation pair `i` of token `m` in every head.
pub struct Rotation<'c, 'a> {
    pub x: Value<'c, 'a>,
    pub out: Value<'c, 'a>,
    pub m: Value<'c, 'a>,
    pub i: Value<'c, 'a>,
    /// The token's position, f64.
    pub pos: Value<'c, 'a>,
    /// `-2 ln θ / d`, f64: inv_freq(i) = exp(i · factor) = θ^(-2i/d).
    pub factor: Value<'c, 'a>,
    pub width: usize,
    pub head_dim: usize,
}

/// Emits into `block` the angle of pair `i` (in f64, rounded to f32 once)
/// and the rotation of elements (i, i + d/2) of every head:
/// (a, c) → (a·cos − c·sin, c·cos + a·sin). Shared with the GPU kernel.
pub fn rotate_pair<'c>(b: &Builder<'c>, block: &Block<'c>, r: Rotation<'c, '_>) {
    let Rotation { x, out, m, i, pos, factor, width, head_dim } = r;
    let (cos, sin) = angle(b, block, i, pos, factor);
    let zero = b.index(block, 0);
    let one = b.index(block, 1);
    let heads = b.index(block, (width / head_dim) as i64);
    let hd = b.index(block, head_dim as i64);
    let half_v = b.index(block, (head_dim / 2) as i64);
    let head_loop = b.loop_body(&[]);
    {
        let h = arg(&head_loop, 0);
        let base = b.muli(&head_loop, h, hd);
        let lo = b.addi(&head_loop, base, i);
        let hi = b.addi(&head_loop, lo, half_v);
        let a = b.load(&head_loop, x, &[m, lo]);
        let c = b.load(&head_loop, x, &[m, hi]);
        let a_cos = b.mulf(&head_loop, a, cos);
        let c_sin = b.mulf(&head_loop, c, sin);
        let first = b.subf(&head_loop, a_cos, c_sin);
        let c_cos = b.mulf(&head_loop, c, cos);
        let a_sin = b.mulf(&head_loop, a, sin);
        let second = b.addf(&head_loop, c_cos, a_sin);
        b.store(&head_loop, first, out, &[m, lo]);
        b.store(&head_loop, second, out, &[m, hi]);
        b.yield_(&head_loop, &[]);
    }
    b.for_op(block, zero, heads, one, &[], head_loop);
}

/// `out[m, n]` from the dots of (m, n) (one per weight) after `epilogue`:
/// the dot, `residual[m, n]` plus it, or `silu(gate)·up`. The CPU and GPU
/// matmul kernels share it.
#[allow(clippy::too_many_arguments)]
pub fn store_epilogue<'c>(
    b: &Builder<'c>,
    block: &Block<'c>,
    epilogue: Epilogue,
    dots: &[Value<'c, '_>],
    residual: Option<Value<'c, '_>>,
    out: Value<'c, '_>,
    m: Value<'c, '_>,
    n: Value<'c, '_>,
    exp: Exp,
) {
    let value = match epilogue {
        Epilogue::None => dots[0],
        Epilogue::AddResidual => {
            let residual = b.load(block, residual.expect("residual buffer"), &[m, n]);
            b.addf(block, residual, dots[0])
        }
        Epilogue::SwiGlu => {
            let silu = silu(b, block, dots[0], exp);
            b.mulf(block, silu, dots[1])
        }
    };
    b.store(block, value, out, &[m, n]);
}
