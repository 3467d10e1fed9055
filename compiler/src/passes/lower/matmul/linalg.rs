//! The linalg matmul kernel (`q35c --kernels linalg`, `--emit linalg`):
//! the workgroup's rows as `linalg.generic` ops on strided views of the
//! kernel's buffers, which upstream `convert-linalg-to-loops` lowers.
//!
//! The packed weight is never copied or dequantized into memory: views
//! address it as arrays (`memref.reinterpret_cast`, docs/format.md §3) and
//! the generic's body decodes each code where it multiplies it. For a q35
//! row of full groups of width G the reduction runs over (group g, pair j):
//!
//! ```text
//! x      [m, g, j, e]  at (m, g·G + 2j + e)        e = 0: 4-bit, 1: 3-bit code j
//! codes  [n, g, byte]  nib (j floordiv 2), lo2 (G/4 + j floordiv 4), hi1 (3G/8 + j floordiv 8)
//! mins, range codes [n, g];  range scale [n]
//! out[m, n] += x_e · fl(min + fl(q_e · fl(range / L_e)))
//! ```
//!
//! a short last group is a second generic over its own views, and each
//! epilogue a final elementwise generic, in the reference's order (dot,
//! then residual or `silu(gate)·up`). int4 and int3 rows step one element
//! at a time; f16 and f32 weights are a plain generic over (m, n, k).

use super::*;
use crate::passes::lower::builder::Extent;
use crate::passes::lower::elementwise::{silu, Exp};

/// Whether the shape has a linalg form: coded rows must split into whole
/// steps (a q35 step is a pair of columns, so K and the group width must be
/// even); every float matrix has one.
pub fn supports(shape: &MatmulShape) -> bool {
    let per = per_step(shape.quant);
    let layout = Layout::new(shape.quant, shape.group, shape.k);
    shape.k % per == 0 && layout.group_width() % per == 0
}

/// Columns per step of the reduction: one code of each plane.
fn per_step(quant: QuantKind) -> usize {
    match quant {
        QuantKind::Q35 => 2,
        _ => 1,
    }
}

pub(super) fn build<'c>(b: &Builder<'c>, shape: &MatmulShape, body: &Block<'c>, args: &Args<'c, '_>) {
    let rows = b.subi(body, args.n_hi, args.n_lo);
    let out_of = |buffer: Value<'c, '_>| b.view(body, buffer, args.n_lo, &[Extent::Dynamic(args.tokens), Extent::Dynamic(rows)], &[shape.n, 1], "f32");
    let out = out_of(args.out);
    let parallel = ["parallel", "parallel"];
    let pair = || vec!["(d0, d1) -> (d0, d1)".to_string(); 2];
    match shape.epilogue {
        Epilogue::None => dot(b, shape, body, args, args.weights[0], rows, out),
        Epilogue::AddResidual => {
            // The dot in scratch: the residual may be the output buffer.
            let sum = b.alloca(body, "memref<?x?xf32>", &[args.tokens, rows]);
            dot(b, shape, body, args, args.weights[0], rows, sum);
            let residual = out_of(args.residual.expect("residual buffer"));
            let mut maps = pair();
            maps.push(maps[0].clone());
            // out = residual + dot, the reference's order.
            b.generic(body, &[residual, sum], &[out], &maps, &parallel, |block| vec![b.addf(block, arg(block, 0), arg(block, 1))]);
        }
        Epilogue::SwiGlu => {
            let gate = b.alloca(body, "memref<?x?xf32>", &[args.tokens, rows]);
            dot(b, shape, body, args, args.weights[0], rows, gate);
            dot(b, shape, body, args, args.weights[1], rows, out);
            let mut maps = pair();
            maps.push(maps[0].clone());
            b.generic(body, &[gate, out], &[out], &maps, &parallel, |block| {
                let s = silu(b, block, arg(block, 0), Exp::Math);
                vec![b.mulf(block, s, arg(block, 1))]
            });
        }
    }
}

/// `out[m, n] = Σ_k x[m, k]·w[n, k]` for the workgroup's `rows` rows of the
/// weight whose first buffer is kernel argument `w`.
fn dot<'c>(b: &Builder<'c>, shape: &MatmulShape, body: &Block<'c>, args: &Args<'c, '_>, w: usize, rows: Value<'c, '_>, out: Value<'c, '_>) {
    b.generic(body, &[], &[out], &["(d0, d1) -> (d0, d1)".to_string()], &["parallel", "parallel"], |block| vec![b.f32(block, 0.0)]);
    let k = shape.k;
    let zero = b.index(body, 0);
    let tokens = Extent::Dynamic(args.tokens);
    let n_rows = Extent::Dynamic(rows);
    if matches!(shape.quant, QuantKind::F16 | QuantKind::F32) {
        let element = if shape.quant == QuantKind::F16 { "f16" } else { "f32" };
        let x = b.view(body, args.x, zero, &[tokens, Extent::Fixed(k)], &[k, 1], "f32");
        let offset = b.muli(body, args.n_lo, b.index(body, k as i64));
        let weight = b.view(body, arg(body, w), offset, &[n_rows, Extent::Fixed(k)], &[k, 1], element);
        let maps = ["(d0, d1, d2) -> (d0, d2)", "(d0, d1, d2) -> (d1, d2)", "(d0, d1, d2) -> (d0, d1)"].map(String::from);
        b.generic(body, &[x, weight], &[out], &maps, &["parallel", "parallel", "reduction"], |block| {
            let weight = if element == "f16" { b.extf(block, arg(block, 1)) } else { arg(block, 1) };
            let product = b.mulf(block, arg(block, 0), weight);
            vec![b.addf(block, arg(block, 2), product)]
        });
        return;
    }
    let layout = Layout::new(shape.quant, shape.group, k);
    let (groups, width) = (layout.groups(), layout.group_width());
    let full = if k % width == 0 { groups } else { groups - 1 };
    let per = per_step(shape.quant);
    let (codes, mins, range_codes, range_scale) = (arg(body, w), arg(body, w + 1), arg(body, w + 2), arg(body, w + 3));
    let index = |v: usize| b.index(body, v as i64);
    let row_bytes = layout.row_bytes();
    let codes_at = b.muli(body, args.n_lo, index(row_bytes));
    let params_at = b.muli(body, args.n_lo, index(groups));
    let scales = b.view(body, range_scale, args.n_lo, &[n_rows], &[1], "f16");
    // Groups g0 .. g0 + count of `cols` columns each: `count` is 1 for the
    // short last group, whose loops then lack the group dimension.
    let part = |g0: usize, count: usize, cols: usize| {
        let grouped = g0 < full;
        let block_len = layout.block_len(g0);
        let steps = cols / per;
        let x_at = index(g0 * width);
        let codes_off = b.addi(body, codes_at, index(layout.block_offset(g0)));
        let params_off = b.addi(body, params_at, index(g0));
        let (x, codes, mins, range_codes) = if grouped {
            (
                b.view(body, args.x, x_at, &[tokens, Extent::Fixed(count), Extent::Fixed(steps), Extent::Fixed(per)], &[k, width, per, 1], "f32"),
                b.view(body, codes, codes_off, &[n_rows, Extent::Fixed(count), Extent::Fixed(block_len)], &[row_bytes, block_len, 1], "i8"),
                b.view(body, mins, params_off, &[n_rows, Extent::Fixed(count)], &[groups, 1], "f16"),
                b.view(body, range_codes, params_off, &[n_rows, Extent::Fixed(count)], &[groups, 1], "i8"),
            )
        } else {
            (
                b.view(body, args.x, x_at, &[tokens, Extent::Fixed(steps), Extent::Fixed(per)], &[k, per, 1], "f32"),
                b.view(body, codes, codes_off, &[n_rows, Extent::Fixed(block_len)], &[row_bytes, 1], "i8"),
                b.view(body, mins, params_off, &[n_rows], &[groups], "f16"),
                b.view(body, range_codes, params_off, &[n_rows], &[groups], "i8"),
            )
        };
        // Loops (m, n, [g,] j); `g` below is the group index expression.
        let (dims, g, j, iterators): (&str, &str, &str, Vec<&str>) = if grouped {
            ("(d0, d1, d2, d3)", "d2, ", "d3", vec!["parallel", "parallel", "reduction", "reduction"])
        } else {
            ("(d0, d1, d2)", "", "d2", vec!["parallel", "parallel", "reduction"])
        };
        let (n4, n3) = shape.quant.code_counts(cols).expect("coded kind");
        let (nib_len, lo_len) = (n4.div_ceil(2), n3.div_ceil(4));
        let mut inputs = Vec::new();
        let mut maps = Vec::new();
        for e in 0..per {
            inputs.push(x);
            maps.push(format!("{dims} -> (d0, {g}{j}, {e})"));
        }
        // The plane bytes each step reads (docs/format.md §3).
        let planes: Vec<Plane> = match shape.quant {
            QuantKind::Q35 => vec![Plane::Nib, Plane::Three],
            QuantKind::Int4 => vec![Plane::Nib],
            _ => vec![Plane::Three],
        };
        for plane in &planes {
            let bytes = match plane {
                Plane::Nib => vec![format!("{j} floordiv 2")],
                Plane::Three => vec![format!("{nib_len} + {j} floordiv 4"), format!("{} + {j} floordiv 8", nib_len + lo_len)],
            };
            for byte in bytes {
                inputs.push(codes);
                maps.push(format!("{dims} -> (d1, {g}{byte})"));
            }
        }
        for params in [mins, range_codes] {
            inputs.push(params);
            maps.push(format!("{dims} -> (d1{})", if grouped { ", d2" } else { "" }));
        }
        inputs.push(scales);
        maps.push(format!("{dims} -> (d1)"));
        maps.push(format!("{dims} -> (d0, d1)"));
        let j_dim = if grouped { 3 } else { 2 };
        b.generic(body, &inputs, &[out], &maps, &iterators, |block| {
            let j = b.loop_index(block, j_dim);
            let j = b.index_cast(block, j, b.int_type(32));
            let byte = |i: usize| b.extui(block, arg(block, per + i), 32);
            let at = per + planes.iter().map(|p| if *p == Plane::Nib { 1 } else { 2 }).sum::<usize>();
            let (min, range_code, scale, acc) = (arg(block, at), arg(block, at + 1), arg(block, at + 2), arg(block, at + 3));
            let min = b.extf(block, min);
            // range = range_scale · code, exact in f32.
            let range = b.mulf(block, b.extf(block, scale), b.uitofp(block, range_code));
            let bits = |value: Value<'c, '_>, shift: Value<'c, '_>, mask: i64| {
                let shifted = b.shrui(block, value, shift);
                b.andi(block, shifted, b.int(block, 32, mask))
            };
            let modulo = |m: i64| b.remui(block, j, b.int(block, 32, m));
            let mut next = 0;
            let mut sum = acc;
            for (e, plane) in planes.iter().enumerate() {
                let (q, levels) = match plane {
                    Plane::Nib => {
                        let shift = b.muli(block, modulo(2), b.int(block, 32, 4));
                        next += 1;
                        (bits(byte(next - 1), shift, 15), 15.0)
                    }
                    Plane::Three => {
                        let shift = b.muli(block, modulo(4), b.int(block, 32, 2));
                        let low = bits(byte(next), shift, 3);
                        let high = bits(byte(next + 1), modulo(8), 1);
                        next += 2;
                        let high = b.shli(block, high, b.int(block, 32, 2));
                        (b.ori(block, low, high), 7.0)
                    }
                };
                // w' = fl(min + fl(q · fl(range / L))): never an fma.
                let step = b.divf(block, range, b.f32(block, levels));
                let scaled = b.mulf(block, b.uitofp(block, q), step);
                let weight = b.addf(block, min, scaled);
                let product = b.mulf(block, arg(block, e), weight);
                sum = b.addf(block, sum, product);
            }
            vec![sum]
        });
    };
    if full > 0 {
        part(0, full, width);
    }
    if full < groups {
        part(full, 1, k - full * width);
    }
}

/// A code plane set of docs/format.md §3.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plane {
    /// 4-bit codes, two to a byte.
    Nib,
    /// 3-bit codes: two low bits in `lo2`, the high bit in `hi1`.
    Three,
}
