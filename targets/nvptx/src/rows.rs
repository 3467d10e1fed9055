//! Warp-parallel GPU kernels for the ops around the matmuls: RMSNorm and
//! the elementwise row ops, RoPE and the KV-cache update (one warp per
//! token: lanes stride over the row, so loads and stores are coalesced),
//! and attention (one warp per (token, head)).
//!
//! Arithmetic follows the CPU kernels of `q35-lower-to-kernels`
//! (`passes/lower/{elementwise,rope,attention}.rs`) op for op, except where
//! a sum is split over lanes (RMSNorm's Σx², the attention dot products and
//! softmax sum), whose order differs — the latitude the CPU's reassociated
//! dot products already take. Attention is one pass with an online softmax
//! (running max `μ`, rescaling by `exp(μ_old − μ_new)`), so no score buffer
//! is needed; lane `l` owns output dimensions `l, l + 32, ...` of its head.

use q35_target::builder::{arg, Builder};
use crate::gemv::{cmpi, gpu_id, if_then, warp_sum, WARP};
use q35_target::math::{rms_scale, rotate_pair, silu, Exp, Rotation};
use q35_target::{AttentionShape, RowOp};
use melior::{
    dialect::arith,
    ir::{Block, Value},
};

/// Threads per block of these kernels: one warp.
pub const THREADS: u32 = WARP as u32;

/// Where a kernel runs: on the GPU (`(tokens, start, buffers...)`, block
/// and thread ids, warp shuffles), or emulated on the CPU for tests with
/// the CPU kernel signature `(wg, tokens, start, buffers...)` and a warp of
/// one lane (lane 0; sums across the warp are the lane's own value).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Gpu,
    Emulated,
}

struct Ids<'c, 'a> {
    block: Value<'c, 'a>,
    lane: Value<'c, 'a>,
    warp: usize,
    first: usize,
    mode: Mode,
}

fn ids<'c, 'a>(b: &Builder<'c>, body: &'a Block<'c>, mode: Mode) -> Ids<'c, 'a> {
    match mode {
        Mode::Gpu => Ids {
            block: gpu_id(b, body, "gpu.block_id"),
            lane: gpu_id(b, body, "gpu.thread_id"),
            warp: WARP,
            first: 2,
            mode,
        },
        Mode::Emulated => Ids {
            block: arg(body, 0),
            lane: b.index(body, 0),
            warp: 1,
            first: 3,
            mode,
        },
    }
}

impl<'c> Ids<'c, '_> {
    /// Σ over the warp of every lane's `value`.
    fn sum<'b>(&self, b: &Builder<'c>, block: &'b Block<'c>, value: Value<'c, 'b>) -> Value<'c, 'b> {
        match self.mode {
            Mode::Gpu => warp_sum(b, block, value),
            Mode::Emulated => value,
        }
    }

    /// `for i = lane; i < upper; i += warp { fill(block, i) }`.
    fn lanes(&self, b: &Builder<'c>, block: &Block<'c>, upper: usize, fill: impl FnOnce(&Block<'c>, Value<'c, '_>)) {
        let step = b.index(block, self.warp as i64);
        let end = b.index(block, upper as i64);
        let body = b.loop_body(&[]);
        fill(&body, arg(&body, 0));
        b.yield_(&body, &[]);
        b.for_op(block, self.lane, end, step, &[], body);
    }
}



/// Row op kernel `(tokens, start, a, [b | gamma], out)`, block m = token m.
pub fn build_row<'c>(b: &Builder<'c>, op: RowOp, width: usize, body: &Block<'c>, mode: Mode) {
    let ids = ids(b, body, mode);
    let (m, lane) = (ids.block, ids.lane);
    let a = arg(body, ids.first);
    let other = arg(body, ids.first + 1);
    let out = arg(body, ids.first + op.inputs());
    let scale = if let RowOp::RmsNorm { epsilon } = op {
        let step = b.index(body, ids.warp as i64);
        let end = b.index(body, width as i64);
        let fzero = b.f32(body, 0.0);
        let sum = b.loop_body(&[b.f32_type()]);
        {
            let i = arg(&sum, 0);
            let x = b.load(&sum, a, &[m, i]);
            let sq = b.mulf(&sum, x, x);
            let next = b.addf(&sum, arg(&sum, 1), sq);
            b.yield_(&sum, &[next]);
        }
        let partial: Value = b.for_op(body, lane, end, step, &[fzero], sum).result(0).expect("one result").into();
        let total = ids.sum(b, body, partial);
        Some(rms_scale(b, body, total, width, epsilon))
    } else {
        None
    };
    ids.lanes(b, body, width, |row, i| {
        let x = b.load(row, a, &[m, i]);
        let y = match op {
            RowOp::Add => {
                let y = b.load(row, other, &[m, i]);
                b.addf(row, x, y)
            }
            RowOp::Mul => {
                let y = b.load(row, other, &[m, i]);
                b.mulf(row, x, y)
            }
            RowOp::Silu => silu(b, row, x, Exp::Math),
            RowOp::SwiGlu => {
                let up = b.load(row, other, &[m, i]);
                let s = silu(b, row, x, Exp::Math);
                b.mulf(row, s, up)
            }
            RowOp::Rotate { .. } => unreachable!("built from the CPU's loop nest (pass.rs)"),
            RowOp::RmsNorm { .. } => {
                let g = b.load(row, other, &[i]);
                let normed = b.mulf(row, x, scale.expect("computed above"));
                b.mulf(row, normed, g)
            }
        };
        b.store(row, y, out, &[m, i]);
    });
}

/// RoPE kernel `(tokens, start, x, positions, out)`: lanes stride over the
/// rotation pairs `i < head_dim / 2` (angles in f64, as on the CPU), each
/// rotating pair `i` of every head.
pub fn build_rope<'c>(b: &Builder<'c>, width: usize, head_dim: usize, theta: f64, body: &Block<'c>, mode: Mode) {
    let ids = ids(b, body, mode);
    let m = ids.block;
    let (x, positions, out) = (arg(body, ids.first), arg(body, ids.first + 1), arg(body, ids.first + 2));
    let half = head_dim / 2;
    let pos_raw = b.load(body, positions, &[m]);
    let pos = b.sitofp_to(body, pos_raw, b.f64_type());
    let factor = b.f64(body, -2.0 * theta.ln() / head_dim as f64);
    ids.lanes(b, body, half, |pairs, i| {
        rotate_pair(b, pairs, Rotation { x, out, m, i, pos, factor, width, head_dim });
    });
}

/// KV update kernel `(tokens, start, k, v, k_cache, v_cache)`: token m's
/// rows into cache row `start + m`.
pub fn build_kv_update<'c>(b: &Builder<'c>, shape: &AttentionShape, body: &Block<'c>, mode: Mode) {
    let ids = ids(b, body, mode);
    let m = ids.block;
    let start = arg(body, ids.first - 1);
    let f = ids.first;
    let (k, v, k_cache, v_cache) = (arg(body, f), arg(body, f + 1), arg(body, f + 2), arg(body, f + 3));
    let row = b.addi(body, start, m);
    ids.lanes(b, body, shape.num_kv_heads * shape.head_dim, |copy, i| {
        let kv = b.load(copy, k, &[m, i]);
        b.store(copy, kv, k_cache, &[row, i]);
        let vv = b.load(copy, v, &[m, i]);
        b.store(copy, vv, v_cache, &[row, i]);
    });
}

/// Attention kernel `(tokens, start, q, k_cache, v_cache, out)`: block
/// `m · num_heads + h` is token m, query head h; grid `num_heads · tokens`.
pub fn build_attention<'c>(b: &Builder<'c>, shape: &AttentionShape, body: &Block<'c>, mode: Mode) {
    let ids = ids(b, body, mode);
    let (bid, lane, warp) = (ids.block, ids.lane, ids.warp);
    let start = arg(body, ids.first - 1);
    let f = ids.first;
    let (q, k_cache, v_cache, out) = (arg(body, f), arg(body, f + 1), arg(body, f + 2), arg(body, f + 3));
    let heads = b.index(body, shape.num_heads as i64);
    let m = b.divui(body, bid, heads);
    let h = b.remui(body, bid, heads);
    let hd = b.index(body, shape.head_dim as i64);
    let group = b.index(body, (shape.num_heads / shape.num_kv_heads) as i64);
    let kv_head = b.divui(body, h, group);
    let q_base = b.muli(body, h, hd);
    let kv_base = b.muli(body, kv_head, hd);
    let scale = b.f32(body, 1.0 / (shape.head_dim as f64).sqrt());
    let fzero = b.f32(body, 0.0);
    let zero = b.index(body, 0);
    let one = b.index(body, 1);
    // Lane l owns dimensions l + 32·r; `valid` is false past head_dim (its
    // q is 0 and it reads dimension 0, so it adds nothing and stores nothing).
    let slots = shape.head_dim.div_ceil(warp);
    let mut dims = Vec::new();
    let mut valid = Vec::new();
    let mut qs = Vec::new();
    for r in 0..slots {
        let offset = b.index(body, (r * warp) as i64);
        let d = b.addi(body, lane, offset);
        let (d, ok) = if (r + 1) * warp > shape.head_dim {
            let ok = cmpi(b, body, arith::CmpiPredicate::Ult, d, hd);
            let safe = q35_target::builder::push(body, arith::select(ok, d, zero, b.location));
            (safe, Some(ok))
        } else {
            (d, None)
        };
        let qi = b.addi(body, q_base, d);
        let qv = b.load(body, q, &[m, qi]);
        let qv = match ok {
            Some(ok) => q35_target::builder::push(body, arith::select(ok, qv, fzero, b.location)),
            None => qv,
        };
        let vi = b.addi(body, kv_base, d);
        let oi = b.addi(body, q_base, d);
        dims.push((vi, oi));
        valid.push(ok);
        qs.push(qv);
    }
    let pos = b.addi(body, start, m);
    let visible = b.addi(body, pos, one);
    let neg_inf = b.f32(body, f64::NEG_INFINITY);
    let carried = vec![b.f32_type(); 2 + slots];
    let mut init = vec![neg_inf, fzero];
    init.extend(std::iter::repeat_n(fzero, slots));
    let step = b.loop_body(&carried);
    {
        let t = arg(&step, 0);
        let running = arg(&step, 1);
        let total = arg(&step, 2);
        let mut partial = b.f32(&step, 0.0);
        for (r, &(vi, _)) in dims.iter().enumerate() {
            let kv = b.load(&step, k_cache, &[t, vi]);
            let prod = b.mulf(&step, qs[r], kv);
            partial = b.addf(&step, partial, prod);
        }
        let raw = ids.sum(b, &step, partial);
        let s = b.mulf(&step, raw, scale);
        let next = b.maxf(&step, running, s);
        let drop = b.subf(&step, running, next);
        let c = b.math1(&step, "exp", drop);
        let shifted = b.subf(&step, s, next);
        let p = b.math1(&step, "exp", shifted);
        let kept = b.mulf(&step, total, c);
        let new_total = b.addf(&step, kept, p);
        let mut yielded = vec![next, new_total];
        for (r, &(vi, _)) in dims.iter().enumerate() {
            let vv = b.load(&step, v_cache, &[t, vi]);
            let acc = arg(&step, 3 + r);
            let acc_kept = b.mulf(&step, acc, c);
            let pv = b.mulf(&step, p, vv);
            yielded.push(b.addf(&step, acc_kept, pv));
        }
        b.yield_(&step, &yielded);
    }
    let looped = b.for_op(body, zero, visible, one, &init, step);
    let total: Value = looped.result(1).expect("softmax sum").into();
    let accs: Vec<Value> = (0..slots).map(|r| looped.result(2 + r).expect("accumulator").into()).collect();
    let onef = b.f32(body, 1.0);
    let inv_total = b.divf(body, onef, total);
    for r in 0..slots {
        let value = b.mulf(body, accs[r], inv_total);
        let oi = dims[r].1;
        match valid[r] {
            Some(ok) => if_then(b, body, ok, |store| b.store(store, value, out, &[m, oi])),
            None => b.store(body, value, out, &[m, oi]),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The kernels' arithmetic on the CPU ([`Mode::Emulated`]: one lane per
    //! warp, so the online softmax, GQA mapping, RMSNorm and RoPE run as the
    //! GPU code builds them) against f64 references. Lane striding and the
    //! shuffles are what the lit test and ptxas check.
    use super::*;
    use q35_rt::code::CodeObject;
    use q35_rt::memref::{MemRef1, MemRef2};
    use std::ffi::c_void;

    fn random(seed: &mut u64, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// One emulated kernel `(wg, tokens, start, buffers...)` for the host.
    fn kernel(buffers: &[&str], fill: impl FnOnce(&Builder, &Block)) -> CodeObject {
        let buffers: Vec<String> = buffers.iter().map(|t| t.to_string()).collect();
        CodeObject::load(&crate::pass::emulation::shared_object(&buffers, fill)).unwrap()
    }

    fn run(code: &CodeObject, workgroups: usize, tokens: usize, start: usize, args: &mut [*mut c_void]) {
        let entry = code.symbol("_mlir_ciface_k").expect("kernel symbol");
        let call = q35_rt::kernel::trampoline(args.len()).unwrap();
        for wg in 0..workgroups {
            // SAFETY: arity and buffer shapes are the kernel's.
            unsafe { call(entry, wg as i64, tokens as i64, start as i64, args) };
        }
    }

    fn m2(v: &[f32], rows: usize, cols: usize) -> MemRef2 {
        MemRef2::matrix(v.as_ptr() as *mut c_void, rows, cols)
    }

    fn m2_out(v: &mut [f32], rows: usize, cols: usize) -> MemRef2 {
        MemRef2::matrix(v.as_mut_ptr().cast(), rows, cols)
    }

    fn close(got: f32, expected: f64, tolerance: f64, what: &str) {
        assert!(
            (f64::from(got) - expected).abs() <= tolerance * (1.0 + expected.abs()),
            "{what}: got {got}, expected {expected}"
        );
    }

    /// Causal attention with GQA over a cache that continues a previous
    /// call (start > 0), one block per (token, head).
    #[test]
    fn emulated_attention_matches_f64() {
        let shape = AttentionShape {
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 20,
            context: 12,
        };
        let (h, kvh, d, c) = (shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.context);
        let (tokens, start) = (3, 5);
        let mut seed = 77;
        let q: Vec<f32> = random(&mut seed, tokens * h * d).iter().map(|v| v * 3.0).collect();
        let kc: Vec<f32> = random(&mut seed, c * kvh * d).iter().map(|v| v * 3.0).collect();
        let vc = random(&mut seed, c * kvh * d);
        let mut out = vec![f32::NAN; tokens * h * d];
        let row = format!("memref<?x{}xf32>", h * d);
        let cache = format!("memref<{c}x{}xf32>", kvh * d);
        let code = kernel(&[&row, &cache, &cache, &row], |b, block| build_attention(b, &shape, block, Mode::Emulated));
        let (mut dq, mut dk, mut dv, mut dout) = (m2(&q, tokens, h * d), m2(&kc, c, kvh * d), m2(&vc, c, kvh * d), m2_out(&mut out, tokens, h * d));
        let mut args: Vec<*mut c_void> = [&mut dq, &mut dk, &mut dv, &mut dout].into_iter().map(|x| (x as *mut MemRef2).cast()).collect();
        run(&code, h * tokens, tokens, start, &mut args);
        for m in 0..tokens {
            for head in 0..h {
                let kv = head / (h / kvh);
                let visible = start + m + 1;
                let scores: Vec<f64> = (0..visible)
                    .map(|t| (0..d).map(|i| f64::from(q[m * h * d + head * d + i]) * f64::from(kc[t * kvh * d + kv * d + i])).sum::<f64>() / (d as f64).sqrt())
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = p.iter().sum();
                for i in 0..d {
                    let expected = (0..visible).map(|t| p[t] * f64::from(vc[t * kvh * d + kv * d + i])).sum::<f64>() / total;
                    close(out[m * h * d + head * d + i], expected, 1e-5, &format!("attention m={m} h={head} i={i}"));
                }
            }
        }
    }

    #[test]
    fn emulated_rms_norm_swiglu_and_rope_match_f64() {
        let (tokens, width) = (3, 40);
        let mut seed = 5;
        let x = random(&mut seed, tokens * width);
        let y = random(&mut seed, tokens * width);
        let gamma = random(&mut seed, width);
        let row = format!("memref<?x{width}xf32>");

        let eps = 1e-5f32;
        let mut out = vec![f32::NAN; tokens * width];
        let code = kernel(&[&row, "memref<?xf32>", &row], |b, block| build_row(b, RowOp::RmsNorm { epsilon: f64::from(eps) }, width, block, Mode::Emulated));
        let (mut dx, mut dg, mut dout) = (m2(&x, tokens, width), MemRef1::vector(gamma.as_ptr() as *mut c_void, width), m2_out(&mut out, tokens, width));
        let mut args: Vec<*mut c_void> = vec![(&mut dx as *mut MemRef2).cast(), (&mut dg as *mut MemRef1).cast(), (&mut dout as *mut MemRef2).cast()];
        run(&code, tokens, tokens, 0, &mut args);
        for m in 0..tokens {
            let ms = (0..width).map(|i| f64::from(x[m * width + i]).powi(2)).sum::<f64>() / width as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            for i in 0..width {
                close(out[m * width + i], f64::from(x[m * width + i]) * inv * f64::from(gamma[i]), 1e-6, "rms_norm");
            }
        }

        let mut out = vec![f32::NAN; tokens * width];
        let code = kernel(&[&row, &row, &row], |b, block| build_row(b, RowOp::SwiGlu, width, block, Mode::Emulated));
        let (mut da, mut db, mut dout) = (m2(&x, tokens, width), m2(&y, tokens, width), m2_out(&mut out, tokens, width));
        let mut args: Vec<*mut c_void> = [&mut da, &mut db, &mut dout].into_iter().map(|x| (x as *mut MemRef2).cast()).collect();
        run(&code, tokens, tokens, 0, &mut args);
        for i in 0..tokens * width {
            let g = f64::from(x[i]);
            close(out[i], g / (1.0 + (-g).exp()) * f64::from(y[i]), 1e-6, "swiglu");
        }

        let (head_dim, theta) = (8, 10000.0f64);
        let positions: Vec<i32> = vec![0, 7, 2047];
        let mut out = vec![f32::NAN; tokens * width];
        let code = kernel(&[&row, "memref<?xi32>", &row], |b, block| build_rope(b, width, head_dim, theta, block, Mode::Emulated));
        let (mut dx, mut dp, mut dout) = (m2(&x, tokens, width), MemRef1::vector(positions.as_ptr() as *mut c_void, tokens), m2_out(&mut out, tokens, width));
        let mut args: Vec<*mut c_void> = vec![(&mut dx as *mut MemRef2).cast(), (&mut dp as *mut MemRef1).cast(), (&mut dout as *mut MemRef2).cast()];
        run(&code, tokens, tokens, 0, &mut args);
        let half = head_dim / 2;
        for (m, &position) in positions.iter().enumerate() {
            for head in 0..width / head_dim {
                for i in 0..half {
                    let angle = f64::from(position) * theta.powf(-2.0 * i as f64 / head_dim as f64);
                    let (lo, hi) = (m * width + head * head_dim + i, m * width + head * head_dim + i + half);
                    let (a, c) = (f64::from(x[lo]), f64::from(x[hi]));
                    close(out[lo], a * angle.cos() - c * angle.sin(), 1e-6, "rope lo");
                    close(out[hi], c * angle.cos() + a * angle.sin(), 1e-6, "rope hi");
                }
            }
        }
    }
}
