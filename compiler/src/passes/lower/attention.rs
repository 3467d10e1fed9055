//! `q35.attention` as two kernels:
//!
//! - `kv_update`, one workgroup per new token: writes its k and v rows into
//!   the caches at `start + m` (the caches are persistent buffers updated
//!   in place; the runtime aliases the op's cache results to its inputs);
//! - `attention`, one workgroup per query head: causal softmax attention of
//!   every new token over cache rows `[0, start + m]`, with query head h
//!   reading KV head `h / (num_heads / num_kv_heads)`.
//!
//! Signatures: `kv_update(wg, tokens, start, k, v: memref<?xDkvxf32>,
//! k_cache, v_cache: memref<CxDkvxf32>)`; `attention(wg, tokens, start,
//! q: memref<?xDqxf32>, k_cache, v_cache: memref<CxDkvxf32>, out: memref<?xDqxf32>)`.

use super::{builder::{arg, Builder}, FIRST_BUFFER};
use melior::ir::{Block, Value};

/// Heads of one attention layer and its cache length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub context: usize,
}

pub fn build_kv_update(b: &Builder<'_>, shape: &AttentionShape, body: &Block<'_>) {
    let m = arg(body, 0);
    let start = arg(body, 2);
    let (k, v, k_cache, v_cache) = (
        arg(body, FIRST_BUFFER),
        arg(body, FIRST_BUFFER + 1),
        arg(body, FIRST_BUFFER + 2),
        arg(body, FIRST_BUFFER + 3),
    );
    let row = b.addi(body, start, m);
    let zero = b.index(body, 0);
    let one = b.index(body, 1);
    let width = b.index(body, (shape.num_kv_heads * shape.head_dim) as i64);
    let copy = b.loop_body(&[]);
    {
        let i = arg(&copy, 0);
        let kv = b.load(&copy, k, &[m, i]);
        b.store(&copy, kv, k_cache, &[row, i]);
        let vv = b.load(&copy, v, &[m, i]);
        b.store(&copy, vv, v_cache, &[row, i]);
        b.yield_(&copy, &[]);
    }
    b.for_op(body, zero, width, one, &[], copy);
}

pub fn build_attention(b: &Builder<'_>, shape: &AttentionShape, body: &Block<'_>) {
    let h = arg(body, 0);
    let tokens = arg(body, 1);
    let start = arg(body, 2);
    let (q, k_cache, v_cache, out) = (
        arg(body, FIRST_BUFFER),
        arg(body, FIRST_BUFFER + 1),
        arg(body, FIRST_BUFFER + 2),
        arg(body, FIRST_BUFFER + 3),
    );
    let zero = b.index(body, 0);
    let one = b.index(body, 1);
    let hd = b.index(body, shape.head_dim as i64);
    let group = b.index(body, (shape.num_heads / shape.num_kv_heads) as i64);
    let kv_head = b.divui(body, h, group);
    let q_base = b.muli(body, h, hd);
    let kv_base = b.muli(body, kv_head, hd);
    let scale = b.f32(body, 1.0 / (shape.head_dim as f64).sqrt());
    let scores = b.alloca_f32(body, shape.context);

    let tok = b.loop_body(&[]);
    {
        let m = arg(&tok, 0);
        let pos = b.addi(&tok, start, m);
        let visible = b.addi(&tok, pos, one);
        // scores[t] = (q · k_t) / sqrt(d), and their max.
        let neg_inf = b.f32(&tok, f64::NEG_INFINITY);
        let score_loop = b.loop_body(&[b.f32_type()]);
        {
            let t = arg(&score_loop, 0);
            let running = arg(&score_loop, 1);
            let fzero = b.f32(&score_loop, 0.0);
            let dot = b.loop_body(&[b.f32_type()]);
            {
                let d = arg(&dot, 0);
                let acc = arg(&dot, 1);
                let qi = b.addi(&dot, q_base, d);
                let ki = b.addi(&dot, kv_base, d);
                let qv = b.load(&dot, q, &[m, qi]);
                let kv = b.load(&dot, k_cache, &[t, ki]);
                // A dot product: reassociated so that it vectorizes.
                let prod = b.dot_op(&dot, "arith.mulf", qv, kv);
                let sum = b.dot_op(&dot, "arith.addf", acc, prod);
                b.yield_(&dot, &[sum]);
            }
            let raw: Value = b.for_op(&score_loop, zero, hd, one, &[fzero], dot).result(0).expect("one result").into();
            let s = b.mulf(&score_loop, raw, scale);
            b.store(&score_loop, s, scores, &[t]);
            let next = b.maxf(&score_loop, running, s);
            b.yield_(&score_loop, &[next]);
        }
        let max: Value = b.for_op(&tok, zero, visible, one, &[neg_inf], score_loop).result(0).expect("one result").into();

        // p_t = exp(s_t − max), and their sum.
        let fzero = b.f32(&tok, 0.0);
        let exp_loop = b.loop_body(&[b.f32_type()]);
        {
            let t = arg(&exp_loop, 0);
            let acc = arg(&exp_loop, 1);
            let s = b.load(&exp_loop, scores, &[t]);
            let shifted = b.subf(&exp_loop, s, max);
            // Inline and reassociated, the loop vectorizes.
            let p = b.exp_f32(&exp_loop, shifted);
            b.store(&exp_loop, p, scores, &[t]);
            let sum = b.dot_op(&exp_loop, "arith.addf", acc, p);
            b.yield_(&exp_loop, &[sum]);
        }
        let total: Value = b.for_op(&tok, zero, visible, one, &[fzero], exp_loop).result(0).expect("one result").into();
        let onef = b.f32(&tok, 1.0);
        let inv_total = b.divf(&tok, onef, total);

        // out[m, h·d + i] = Σ_t p_t · v_t[i] / Σ p, accumulated in place.
        let clear = b.loop_body(&[]);
        {
            let d = arg(&clear, 0);
            let oi = b.addi(&clear, q_base, d);
            let z = b.f32(&clear, 0.0);
            b.store(&clear, z, out, &[m, oi]);
            b.yield_(&clear, &[]);
        }
        b.for_op(&tok, zero, hd, one, &[], clear);
        let mix = b.loop_body(&[]);
        {
            let t = arg(&mix, 0);
            let p = b.load(&mix, scores, &[t]);
            let w = b.mulf(&mix, p, inv_total);
            let lane = b.loop_body(&[]);
            {
                let d = arg(&lane, 0);
                let oi = b.addi(&lane, q_base, d);
                let vi = b.addi(&lane, kv_base, d);
                let vv = b.load(&lane, v_cache, &[t, vi]);
                let old = b.load(&lane, out, &[m, oi]);
                let new = b.fma(&lane, w, vv, old);
                b.store(&lane, new, out, &[m, oi]);
                b.yield_(&lane, &[]);
            }
            b.for_op(&mix, zero, hd, one, &[], lane);
            b.yield_(&mix, &[]);
        }
        b.for_op(&tok, zero, visible, one, &[], mix);
        b.yield_(&tok, &[]);
    }
    b.for_op(body, zero, tokens, one, &[], tok);
}
