//! `q35.rope` as a kernel: one workgroup per token. Angles are computed in
//! f64 (position × θ^(-2i/d) reaches thousands of radians, where f32
//! cos/sin lose digits) and rounded to f32 once.
//!
//! Signature: `(wg, tokens, start, x: memref<?xWxf32>, positions: memref<?xi32>, out: memref<?xWxf32>)`.

use q35_target::builder::{arg, Builder, Extent};
use q35_target::kernel::FIRST_BUFFER;
use q35_target::math::{angle, rotate_pair, Rotation};
use melior::ir::Block;

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
