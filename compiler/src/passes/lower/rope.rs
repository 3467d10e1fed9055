//! `q35.rope` as a kernel: one workgroup per token. Angles are computed in
//! f64 (position × θ^(-2i/d) reaches thousands of radians, where f32
//! cos/sin lose digits) and rounded to f32 once.
//!
//! Signature: `(wg, tokens, start, x: memref<?xWxf32>, positions: memref<?xi32>, out: memref<?xWxf32>)`.

use super::{builder::{arg, Builder}, FIRST_BUFFER};
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
        let i64_type = b.int_type(64);
        let i_int = b.index_cast(&pairs, i, i64_type);
        let i_f = b.sitofp_to(&pairs, i_int, b.f64_type());
        let exponent = b.mulf(&pairs, i_f, factor);
        let inv_freq = b.math1(&pairs, "exp", exponent);
        let angle = b.mulf(&pairs, pos, inv_freq);
        let cos64 = b.math1(&pairs, "cos", angle);
        let sin64 = b.math1(&pairs, "sin", angle);
        let cos = b.truncf(&pairs, cos64);
        let sin = b.truncf(&pairs, sin64);
        let heads = b.index(&pairs, (width / head_dim) as i64);
        let hd = b.index(&pairs, head_dim as i64);
        let half_v = b.index(&pairs, half as i64);
        let head_loop = b.loop_body(&[]);
        {
            let h = arg(&head_loop, 0);
            let base = b.muli(&head_loop, h, hd);
            let lo = b.addi(&head_loop, base, i);
            let hi = b.addi(&head_loop, lo, half_v);
            let a = b.load(&head_loop, x, &[m, lo]);
            let c = b.load(&head_loop, x, &[m, hi]);
            // (a, c) rotated: a·cos − c·sin, c·cos + a·sin.
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
        b.for_op(&pairs, zero, heads, one, &[], head_loop);
        b.yield_(&pairs, &[]);
    }
    b.for_op(body, zero, upper, one, &[], pairs);
}
