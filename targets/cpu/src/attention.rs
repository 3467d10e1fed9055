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

use q35_target::builder::{arg, Builder, Extent};
use q35_target::kernel::{AttentionShape, FIRST_BUFFER};
use melior::ir::{Block, Value};

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

        // out[m, h·d + i] = Σ_t p_t · v_t[i] / Σ p.
        weighted_sum(b, &tok, shape, &WeightedSum { m, visible, q_base, kv_base, scores, inv_total, v_cache, out });
        b.yield_(&tok, &[]);
    }
    b.for_op(body, zero, tokens, one, &[], tok);
}

/// [`build_attention`] from `linalg.generic` ops (`q35-lower-to-kernels
/// {kernels=linalg}`): for each new token, on views of the visible cache
/// rows of the head's KV head, the scores (a dot per row), their scale,
/// max, exponentials and sum (reductions into rank-0 scratch), then the
/// weighted sum of V rows into the output row.
pub fn build_attention_linalg(b: &Builder<'_>, shape: &AttentionShape, body: &Block<'_>) {
    let h = arg(body, 0);
    let (tokens, start) = (arg(body, 1), arg(body, 2));
    let (q, k_cache, v_cache, out) = (arg(body, FIRST_BUFFER), arg(body, FIRST_BUFFER + 1), arg(body, FIRST_BUFFER + 2), arg(body, FIRST_BUFFER + 3));
    let hd = shape.head_dim;
    let (q_width, kv_width) = (shape.num_heads * hd, shape.num_kv_heads * hd);
    let kv_head = b.divui(body, h, b.index(body, (shape.num_heads / shape.num_kv_heads) as i64));
    let kv_base = b.muli(body, kv_head, b.index(body, hd as i64));
    let q_base = b.muli(body, h, b.index(body, hd as i64));
    let scale = b.f32(body, 1.0 / (hd as f64).sqrt());
    let scores_buffer = b.alloca_f32(body, shape.context);
    let (best, total) = (b.alloca(body, "memref<f32>", &[]), b.alloca(body, "memref<f32>", &[]));
    let one = b.index(body, 1);
    let tok = b.loop_body(&[]);
    {
        let m = arg(&tok, 0);
        let visible = b.addi(&tok, b.addi(&tok, start, m), one);
        let zero = b.index(&tok, 0);
        // Token m's columns of head h in q and out.
        let head_at = b.addi(&tok, b.muli(&tok, m, b.index(&tok, q_width as i64)), q_base);
        let q_row = b.view(&tok, q, head_at, &[Extent::Fixed(hd)], &[1], "f32");
        let out_row = b.view(&tok, out, head_at, &[Extent::Fixed(hd)], &[1], "f32");
        let rows = |cache| b.view(&tok, cache, kv_base, &[Extent::Dynamic(visible), Extent::Fixed(hd)], &[kv_width, 1], "f32");
        let (keys, values) = (rows(k_cache), rows(v_cache));
        let scores = b.view(&tok, scores_buffer, zero, &[Extent::Dynamic(visible)], &[1], "f32");
        let each = |n: usize| vec!["(d0) -> (d0)".to_string(); n];
        let set = |acc: Value, init: f64| b.store(&tok, b.f32(&tok, init), acc, &[]);
        let fill = |view| b.generic(&tok, &[], &[view], &each(1), &["parallel"], |block| vec![b.f32(block, 0.0)]);
        // scores[t] = (q · k_t) / sqrt(d).
        fill(scores);
        let dot_maps = ["(d0, d1) -> (d1)", "(d0, d1) -> (d0, d1)", "(d0, d1) -> (d0)"].map(String::from);
        b.generic(&tok, &[q_row, keys], &[scores], &dot_maps, &["parallel", "reduction"], |block| {
            let product = b.mulf(block, arg(block, 0), arg(block, 1));
            vec![b.addf(block, arg(block, 2), product)]
        });
        b.generic(&tok, &[scores], &[scores], &each(2), &["parallel"], |block| vec![b.mulf(block, arg(block, 0), scale)]);
        // The max (`largest`) or the sum of the scores, through `acc`.
        let reduce = |acc, largest: bool| {
            set(acc, if largest { f64::NEG_INFINITY } else { 0.0 });
            let maps = vec!["(d0) -> (d0)".to_string(), "(d0) -> ()".to_string()];
            b.generic(&tok, &[scores], &[acc], &maps, &["reduction"], |block| {
                let (s, acc) = (arg(block, 0), arg(block, 1));
                vec![if largest { b.maxf(block, acc, s) } else { b.addf(block, acc, s) }]
            });
            b.load(&tok, acc, &[])
        };
        // p_t = exp(s_t − max), and their sum.
        let max = reduce(best, true);
        b.generic(&tok, &[scores], &[scores], &each(2), &["parallel"], |block| {
            let shifted = b.subf(block, arg(block, 0), max);
            vec![b.math1(block, "exp", shifted)]
        });
        let sum = reduce(total, false);
        let inv_total = b.divf(&tok, b.f32(&tok, 1.0), sum);
        // out[m, h·d + i] = Σ_t (p_t / Σ p) · v_t[i].
        fill(out_row);
        let mix_maps = ["(d0, d1) -> (d1)", "(d0, d1) -> (d1, d0)", "(d0, d1) -> (d0)"].map(String::from);
        b.generic(&tok, &[scores, values], &[out_row], &mix_maps, &["parallel", "reduction"], |block| {
            let weight = b.mulf(block, arg(block, 0), inv_total);
            let term = b.mulf(block, weight, arg(block, 1));
            vec![b.addf(block, arg(block, 2), term)]
        });
        b.yield_(&tok, &[]);
    }
    let zero = b.index(body, 0);
    b.for_op(body, zero, tokens, one, &[], tok);
}

/// Lanes of the weighted sum's accumulators.
const LANES: usize = 16;

/// What the weighted sum of V rows reads and writes, for token `m` of one
/// head.
#[derive(Clone, Copy)]
struct WeightedSum<'c, 'a> {
    m: Value<'c, 'a>,
    visible: Value<'c, 'a>,
    q_base: Value<'c, 'a>,
    kv_base: Value<'c, 'a>,
    scores: Value<'c, 'a>,
    inv_total: Value<'c, 'a>,
    v_cache: Value<'c, 'a>,
    out: Value<'c, 'a>,
}

/// The weighted sum with the head's accumulators (vectors of 16, then one
/// f32 for each column left over) carried in registers across positions
/// and stored once: accumulated in place in `out`, each position's fma
/// waited on the previous one's store. The same fmas in the same order,
/// so the same values.
fn weighted_sum<'c>(b: &Builder<'c>, block: &Block<'c>, shape: &AttentionShape, w: &WeightedSum<'c, '_>) {
    let vectors = shape.head_dim / LANES;
    let rest = shape.head_dim % LANES;
    let vec_f32 = b.vector_type(LANES, "f32");
    // Accumulator i covers columns from `column(i)`, 16 or one of them.
    let column = |i: usize| if i < vectors { i * LANES } else { vectors * LANES + (i - vectors) };
    let types: Vec<_> = (0..vectors + rest).map(|i| if i < vectors { vec_f32 } else { b.f32_type() }).collect();
    let kv_width = (shape.num_kv_heads * shape.head_dim) as i64;
    let q_width = (shape.num_heads * shape.head_dim) as i64;
    let zero = b.index(block, 0);
    let one = b.index(block, 1);
    let zeros: Vec<Value> = (0..vectors + rest)
        .map(|i| if i < vectors { b.dense(block, "f32", &vec!["0.0"; LANES]) } else { b.f32(block, 0.0) })
        .collect();
    let v_base = b.address(block, w.v_cache);
    let kv_base = b.index_cast(block, w.kv_base, b.int_type(64));
    let mix = b.loop_body(&types);
    {
        let t = arg(&mix, 0);
        let p = b.load(&mix, w.scores, &[t]);
        let weight = b.mulf(&mix, p, w.inv_total);
        let splat = b.splat(&mix, weight, LANES);
        let t64 = b.index_cast(&mix, t, b.int_type(64));
        let row = b.int(&mix, 64, kv_width);
        let first = b.muli(&mix, t64, row);
        let first = b.addi(&mix, first, kv_base);
        let next: Vec<Value> = (0..vectors + rest)
            .map(|i| {
                let offset = b.int(&mix, 64, column(i) as i64);
                let element = b.addi(&mix, first, offset);
                let four = b.int(&mix, 64, 4);
                let bytes = b.muli(&mix, element, four);
                let at = b.addi(&mix, v_base, bytes);
                let (ty, weight) = if i < vectors { (vec_f32, splat) } else { (b.f32_type(), weight) };
                let v = b.load_at(&mix, at, ty, 4);
                b.fma(&mix, weight, v, arg(&mix, i + 1))
            })
            .collect();
        b.yield_(&mix, &next);
    }
    let sums = b.for_op(block, zero, w.visible, one, &zeros, mix);
    let out_base = b.address(block, w.out);
    let m64 = b.index_cast(block, w.m, b.int_type(64));
    let row = b.int(block, 64, q_width);
    let first = b.muli(block, m64, row);
    let q_base = b.index_cast(block, w.q_base, b.int_type(64));
    let first = b.addi(block, first, q_base);
    for i in 0..vectors + rest {
        let sum: Value = sums.result(i).expect("one result per accumulator").into();
        let offset = b.int(block, 64, column(i) as i64);
        let element = b.addi(block, first, offset);
        let four = b.int(block, 64, 4);
        let bytes = b.muli(block, element, four);
        let at = b.addi(block, out_base, bytes);
        b.store_at(block, sum, at, 4);
    }
}
