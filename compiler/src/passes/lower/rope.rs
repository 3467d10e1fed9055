//! `q35.rope` as a kernel: one workgroup per token. Angles are computed in
//! f64 (position × θ^(-2i/d) reaches thousands of radians, where f32
//! cos/sin lose digits) and rounded to f32 once.
//!
//! Signature: `(wg, tokens, start, x: memref<?xWxf32>, positions: memref<?xi32>, out: memref<?xWxf32>)`.

use super::{builder::{arg, Builder, Extent}, FIRST_BUFFER};
use melior::ir::{Block, Value};

pub fn build(b: &Builder<'_>, width: usize, head_dim: usize, theta: f64, body: &Block<'_>) {
    let m = arg(body, 0);
    let x = arg(body, FIRST_BUFFER);
    let positions = arg(body, FIRST_BUFFER + 1);
    let out = arg(body, FIRST_BUFFER + 2);
    let zero = b.index(body, 0);
    let one = b.index(body, 1);
    let half = head_dim / 2;
    let pos_raw = b.load(body, positions, &[m]);
    let pos = b.sitofp_to(body, pos_raw, b.f64_type());
    // inv_freq(i) = θ^(-2i/d) = exp(i · (-2 ln θ / d)).
    let factor = b.f64(body, -2.0 * theta.ln() / head_dim as f64);
    let upper = b.index(body, half as i64);
    let pairs = b.loop_body(&[]);
    {
        let i = arg(&pairs, 0);
        rotate_pair(b, &pairs, Rotation { x, out, m, i, pos, factor, width, head_dim });
        b.yield_(&pairs, &[]);
    }
    b.for_op(body, zero, upper, one, &[], pairs);
}

/// [`build`] as one `linalg.generic` over (head, pair) (`q35-lower-to-kernels
/// {kernels=linalg}`): the token's row viewed as each head's first and
/// second halves, both read and both written by one iteration (so an
/// output aliasing the input is safe), the angle as in [`rotate_pair`].
pub fn build_linalg(b: &Builder<'_>, width: usize, head_dim: usize, theta: f64, body: &Block<'_>) {
    let m = arg(body, 0);
    let (heads, half) = (width / head_dim, head_dim / 2);
    let row = b.muli(body, m, b.index(body, width as i64));
    let second = b.addi(body, row, b.index(body, half as i64));
    let halves = |buffer| [row, second].map(|at| b.view(body, buffer, at, &[Extent::Fixed(heads), Extent::Fixed(half)], &[head_dim, 1], "f32"));
    let [a, c] = halves(arg(body, FIRST_BUFFER));
    let [first, last] = halves(arg(body, FIRST_BUFFER + 2));
    let pos_raw = b.load(body, arg(body, FIRST_BUFFER + 1), &[m]);
    let pos = b.sitofp_to(body, pos_raw, b.f64_type());
    let factor = b.f64(body, -2.0 * theta.ln() / head_dim as f64);
    let maps = vec!["(d0, d1) -> (d0, d1)".to_string(); 4];
    b.generic(body, &[a, c], &[first, last], &maps, &["parallel", "parallel"], |block| {
        let i = b.loop_index(block, 1);
        let (cos, sin) = angle(b, block, i, pos, factor);
        let (a, c) = (arg(block, 0), arg(block, 1));
        let rotated = b.subf(block, b.mulf(block, a, cos), b.mulf(block, c, sin));
        let other = b.addf(block, b.mulf(block, c, cos), b.mulf(block, a, sin));
        vec![rotated, other]
    });
}

/// cos and sin (f32) of pair `i`'s angle at position `pos` (f64):
/// `pos · exp(i · factor)` in f64, each rounded to f32 once.
fn angle<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, i: Value<'c, '_>, pos: Value<'c, '_>, factor: Value<'c, '_>) -> (Value<'c, 'b>, Value<'c, 'b>) {
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
pub(crate) struct Rotation<'c, 'a> {
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
pub(crate) fn rotate_pair<'c>(b: &Builder<'c>, block: &Block<'c>, r: Rotation<'c, '_>) {
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
