//! The fused dequant-GEMV kernel for NVPTX: one warp per output row.
//!
//! ```text
//! gpu.func @dequant_matmul_...(%tokens: index, %start: index, %x: memref<?xKxf32>,
//!     <weight buffers, as on the CPU>, [%residual: memref<?xNxf32>], %out: memref<?xNxf32>)
//!     kernel attributes {known_block_size = array<i32: 32·W, 1, 1>}
//! ```
//!
//! Block `b` has `W` warps; warp `w` computes output row `n = b·W + w` for
//! every token of the call (`n ≥ N`: the warp does nothing). Tokens go
//! [`TOKEN_TILE`] at a time, then the rest one by one: each weight is
//! decoded once per tile and multiplied by every token of it (a GEMM tiled
//! over rows and tokens, in registers), so prefill does not decode the
//! row again for every token, and decode (one token) does no extra work. For coded
//! weights (q35, int4, int3) the 32 lanes stride over the *pairs* of
//! columns of each group: lane `l` takes pairs `l, l + 32, ...`, so
//! neighbouring lanes read neighbouring plane bytes (coalesced) and
//! neighbouring activations, and every lane decodes two weights from the
//! packed bytes in registers with shifts and masks, with exactly the
//! reference arithmetic: `range = range_scale · range_code` (exact),
//! `s4 = range / 15`, `s3 = range / 7`, `w = min + q·s` as two rounded f32
//! operations (no fast-math on them, so neither LLVM nor ptxas may fuse
//! them: the PTX has `mul.rn`/`add.rn`). No dequantized weight is ever
//! stored. f16/f32 weights: lanes stride over K. The per-lane partial dots
//! (`contract`: the products may fuse into the sums) are summed across the
//! warp with five `gpu.shuffle xor` steps, and lane 0 applies the epilogue
//! (residual add, or SwiGLU of the gate and up rows) and stores.

use q35_target::builder::{arg, push, Builder};
use q35_target::math::{store_epilogue, Exp};
use q35_target::{Epilogue, MatmulShape};
use melior::{
    dialect::{arith, scf},
    ir::{attribute::Attribute, block::BlockLike, operation::OperationBuilder, Block, Identifier, Region, RegionLike, Value, ValueLike},
};
use q35_format::{Layout, QuantKind};

/// Threads per warp.
pub const WARP: usize = 32;

/// Tokens that share each decoded weight in prefill.
pub const TOKEN_TILE: usize = 4;

/// Blocks (of `warps` rows each) for `shape`.
pub fn workgroups(shape: &MatmulShape, warps: usize) -> usize {
    shape.n.div_ceil(warps)
}

fn contract<'c>(b: &Builder<'c>) -> Attribute<'c> {
    Attribute::parse(b.context, "#arith.fastmath<contract>").expect("valid fastmath attribute")
}

/// `a ⊕ b` with `contract` (dot products only).
fn dot_op<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, name: &str, x: Value<'c, '_>, y: Value<'c, '_>) -> Value<'c, 'b> {
    push(
        block,
        OperationBuilder::new(name, b.location)
            .add_operands(&[x, y])
            .add_results(&[x.r#type()])
            .add_attributes(&[(Identifier::new(b.context, "fastmath"), contract(b))])
            .build()
            .expect("valid arith op"),
    )
}

/// `gpu.thread_id x` / `gpu.block_id x`.
pub fn gpu_id<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, op: &str) -> Value<'c, 'b> {
    push(
        block,
        OperationBuilder::new(op, b.location)
            .add_attributes(&[(
                Identifier::new(b.context, "dimension"),
                Attribute::parse(b.context, "#gpu<dim x>").expect("gpu dim"),
            )])
            .add_results(&[b.index_type()])
            .build()
            .expect("valid gpu id op"),
    )
}

/// Σ over the warp of every lane's `value` (butterfly: every lane gets it).
pub fn warp_sum<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, value: Value<'c, 'b>) -> Value<'c, 'b> {
    let width = b.int(block, 32, WARP as i64);
    let mut acc = value;
    let mut offset = WARP / 2;
    while offset > 0 {
        let off = b.int(block, 32, offset as i64);
        let shuffled = push(
            block,
            OperationBuilder::new("gpu.shuffle", b.location)
                .add_operands(&[acc, off, width])
                .add_attributes(&[(
                    Identifier::new(b.context, "mode"),
                    Attribute::parse(b.context, "#gpu<shuffle_mode xor>").expect("shuffle mode"),
                )])
                .add_results(&[b.f32_type(), b.int_type(1)])
                .build()
                .expect("valid gpu.shuffle"),
        );
        acc = b.addf(block, acc, shuffled);
        offset /= 2;
    }
    acc
}

/// `scf.if cond { then }` with no results; `then` is filled by `fill`.
pub fn if_then<'c>(b: &Builder<'c>, block: &Block<'c>, cond: Value<'c, '_>, fill: impl FnOnce(&Block<'c>)) {
    let then = Block::new(&[]);
    fill(&then);
    then.append_operation(scf::r#yield(&[], b.location));
    let region = Region::new();
    region.append_block(then);
    block.append_operation(scf::r#if(cond, &[], region, Region::new(), b.location));
}

pub fn cmpi<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, predicate: arith::CmpiPredicate, x: Value<'c, '_>, y: Value<'c, '_>) -> Value<'c, 'b> {
    push(block, arith::cmpi(b.context, predicate, x, y, b.location))
}

/// Fills the kernel body: arguments `tokens, start, buffers...`.
pub fn build<'c>(b: &Builder<'c>, shape: &MatmulShape, warps: usize, body: &Block<'c>) {
    let per = match shape.quant {
        QuantKind::F16 | QuantKind::F32 => 1,
        _ => 4,
    };
    let first_buffer = 2;
    let weights: Vec<usize> = (0..shape.epilogue.weights()).map(|i| first_buffer + 1 + i * per).collect();
    let after = first_buffer + 1 + weights.len() * per;
    let tokens = arg(body, 0);
    let x = arg(body, first_buffer);
    let out = arg(body, body.argument_count() - 1);
    let residual = (shape.epilogue == Epilogue::AddResidual).then(|| arg(body, after));

    let tid = gpu_id(b, body, "gpu.thread_id");
    let bid = gpu_id(b, body, "gpu.block_id");
    let warp_size = b.index(body, WARP as i64);
    let warp = b.divui(body, tid, warp_size);
    let lane = b.remui(body, tid, warp_size);
    let per_block = b.index(body, warps as i64);
    let row0 = b.muli(body, bid, per_block);
    let n = b.addi(body, row0, warp);
    let n_total = b.index(body, shape.n as i64);
    let in_range = cmpi(b, body, arith::CmpiPredicate::Ult, n, n_total);
    if_then(b, body, in_range, |inside| {
        for_token_tiles(b, inside, tokens, |tile, ms| {
            let dots: Vec<Vec<Value>> = weights
                .iter()
                .map(|&w| {
                    let partials = match shape.quant {
                        QuantKind::F16 | QuantKind::F32 => float_dot(b, shape, tile, n, ms, lane, x, arg(body, w)),
                        _ => coded_dot(b, shape, tile, n, ms, lane, x, body, w),
                    };
                    partials.into_iter().map(|p| warp_sum(b, tile, p)).collect()
                })
                .collect();
            let zero_i = b.index(tile, 0);
            let lane0 = cmpi(b, tile, arith::CmpiPredicate::Eq, lane, zero_i);
            if_then(b, tile, lane0, |store| {
                for (t, &m) in ms.iter().enumerate() {
                    let token_dots: Vec<Value> = dots.iter().map(|d| d[t]).collect();
                    store_epilogue(b, store, shape.epilogue, &token_dots, residual, out, m, n, Exp::Math);
                }
            });
        });
    });
}

/// Calls `each(block, ms)` for tokens `0 .. tokens`: tiles of
/// [`TOKEN_TILE`] tokens `ms`, then the rest one at a time.
fn for_token_tiles<'c>(b: &Builder<'c>, block: &Block<'c>, tokens: Value<'c, '_>, each: impl Fn(&Block<'c>, &[Value<'c, '_>])) {
    let zero = b.index(block, 0);
    b.for_runs(block, zero, tokens, TOKEN_TILE, each);
}

/// The same kernel as a CPU function for tests, with the CPU kernel
/// signature `(wg, tokens, start, buffers...)`: workgroup n computes row n,
/// and its 32 lanes run one after another, their partial dots summed in
/// lane order where the GPU shuffles. The decode (pairs per lane, plane
/// bytes and bits, group tails, odd widths) is the GPU kernel's own code.
pub fn build_emulated<'c>(b: &Builder<'c>, shape: &MatmulShape, body: &Block<'c>) {
    let per = match shape.quant {
        QuantKind::F16 | QuantKind::F32 => 1,
        _ => 4,
    };
    let first_buffer = 3;
    let weights: Vec<usize> = (0..shape.epilogue.weights()).map(|i| first_buffer + 1 + i * per).collect();
    let after = first_buffer + 1 + weights.len() * per;
    let n = arg(body, 0);
    let tokens = arg(body, 1);
    let x = arg(body, first_buffer);
    let out = arg(body, body.argument_count() - 1);
    let residual = (shape.epilogue == Epilogue::AddResidual).then(|| arg(body, after));
    for_token_tiles(b, body, tokens, |tile, ms| {
        let dots: Vec<Vec<Value>> = weights
            .iter()
            .map(|&w| {
                let count = ms.len();
                let lanes = b.loop_body(&vec![b.f32_type(); count]);
                {
                    let lane = arg(&lanes, 0);
                    let partials = match shape.quant {
                        QuantKind::F16 | QuantKind::F32 => float_dot(b, shape, &lanes, n, ms, lane, x, arg(body, w)),
                        _ => coded_dot(b, shape, &lanes, n, ms, lane, x, body, w),
                    };
                    let sums: Vec<Value> = partials.iter().enumerate().map(|(t, &p)| b.addf(&lanes, arg(&lanes, t + 1), p)).collect();
                    b.yield_(&lanes, &sums);
                }
                let zero = b.index(tile, 0);
                let one = b.index(tile, 1);
                let warp = b.index(tile, WARP as i64);
                let fzero = b.f32(tile, 0.0);
                let summed = b.for_op(tile, zero, warp, one, &vec![fzero; count], lanes);
                (0..count).map(|t| summed.result(t).expect("one result per token").into()).collect()
            })
            .collect();
        for (t, &m) in ms.iter().enumerate() {
            let token_dots: Vec<Value> = dots.iter().map(|d| d[t]).collect();
            store_epilogue(b, tile, shape.epilogue, &token_dots, residual, out, m, n, Exp::Math);
        }
    });
}

/// This lane's part of Σ_k x[m, k] · w[n·K + k] (k = lane, lane + 32,
/// ...) for each token m of `ms`.
#[allow(clippy::too_many_arguments)]
fn float_dot<'c, 'b>(
    b: &Builder<'c>,
    shape: &MatmulShape,
    block: &'b Block<'c>,
    n: Value<'c, '_>,
    ms: &[Value<'c, '_>],
    lane: Value<'c, '_>,
    x: Value<'c, '_>,
    w: Value<'c, '_>,
) -> Vec<Value<'c, 'b>> {
    let k_total = b.index(block, shape.k as i64);
    let step = b.index(block, WARP as i64);
    let base = b.muli(block, n, k_total);
    let fzero = b.f32(block, 0.0);
    let dot = b.loop_body(&vec![b.f32_type(); ms.len()]);
    {
        let k = arg(&dot, 0);
        let idx = b.addi(&dot, base, k);
        let raw = b.load(&dot, w, &[idx]);
        let wi = if shape.quant == QuantKind::F16 { b.extf(&dot, raw) } else { raw };
        let sums: Vec<Value> = ms
            .iter()
            .enumerate()
            .map(|(t, &m)| {
                let xi = b.load(&dot, x, &[m, k]);
                let prod = dot_op(b, &dot, "arith.mulf", xi, wi);
                dot_op(b, &dot, "arith.addf", arg(&dot, t + 1), prod)
            })
            .collect();
        b.yield_(&dot, &sums);
    }
    let looped = b.for_op(block, lane, k_total, step, &vec![fzero; ms.len()], dot);
    (0..ms.len()).map(|t| looped.result(t).expect("one result per token").into()).collect()
}

/// What one coded row needs while its groups are walked.
struct Row<'c, 'a> {
    quant: QuantKind,
    codes: Value<'c, 'a>,
    mins: Value<'c, 'a>,
    range_codes: Value<'c, 'a>,
    rs: Value<'c, 'a>,
    row_base: Value<'c, 'a>,
    param_base: Value<'c, 'a>,
    /// The tokens of the tile.
    ms: Vec<Value<'c, 'a>>,
    lane: Value<'c, 'a>,
    x: Value<'c, 'a>,
}

/// This lane's part of the dot of row n of a coded weight (buffers from
/// `first`) with the activations of each token of `ms`.
#[allow(clippy::too_many_arguments)]
fn coded_dot<'c, 'b>(
    b: &Builder<'c>,
    shape: &MatmulShape,
    block: &'b Block<'c>,
    n: Value<'c, '_>,
    ms: &[Value<'c, '_>],
    lane: Value<'c, '_>,
    x: Value<'c, '_>,
    kernel: &Block<'c>,
    first: usize,
) -> Vec<Value<'c, 'b>> {
    let layout = Layout::new(shape.quant, shape.group, shape.k);
    let groups = layout.groups();
    let width = layout.group_width();
    let row_bytes = b.index(block, layout.row_bytes() as i64);
    let row_base = b.muli(block, n, row_bytes);
    let ng = b.index(block, groups as i64);
    let param_base = b.muli(block, n, ng);
    let rs_raw = b.load(block, arg(kernel, first + 3), &[n]);
    let rs = b.extf(block, rs_raw);
    let row = Row {
        quant: shape.quant,
        codes: arg(kernel, first),
        mins: arg(kernel, first + 1),
        range_codes: arg(kernel, first + 2),
        rs,
        row_base,
        param_base,
        ms: ms.to_vec(),
        lane,
        x,
    };
    let count = ms.len();
    let mut total = vec![b.f32(block, 0.0); count];
    let full_groups = if layout.cols() % width == 0 { groups } else { groups - 1 };
    if full_groups > 0 {
        let zero = b.index(block, 0);
        let one = b.index(block, 1);
        let upper = b.index(block, full_groups as i64);
        let body = b.loop_body(&vec![b.f32_type(); count]);
        {
            let g = arg(&body, 0);
            let block_bytes = b.index(&body, layout.block_len(0) as i64);
            let offset = b.muli(&body, g, block_bytes);
            let w = b.index(&body, width as i64);
            let k0 = b.muli(&body, g, w);
            let carried: Vec<Value> = (0..count).map(|t| arg(&body, t + 1)).collect();
            let sums = row.group(b, &body, g, offset, k0, width, &carried);
            b.yield_(&body, &sums);
        }
        let looped = b.for_op(block, zero, upper, one, &total, body);
        total = (0..count).map(|t| looped.result(t).expect("one result per token").into()).collect();
    }
    if full_groups < groups {
        let g = groups - 1;
        let gv = b.index(block, g as i64);
        let offset = b.index(block, layout.block_offset(g) as i64);
        let k0 = b.index(block, (g * width) as i64);
        total = row.group(b, block, gv, offset, k0, layout.cols() - g * width, &total);
    }
    total
}

impl<'c> Row<'c, '_> {
    /// `acc` (one per token of the tile) plus this lane's part of the
    /// group of `width` columns from k0 whose block starts `offset` bytes
    /// into the row; each weight is decoded once for all the tokens.
    #[allow(clippy::too_many_arguments)]
    fn group<'b>(
        &self,
        b: &Builder<'c>,
        block: &'b Block<'c>,
        g: Value<'c, '_>,
        offset: Value<'c, '_>,
        k0: Value<'c, '_>,
        width: usize,
        acc: &[Value<'c, '_>],
    ) -> Vec<Value<'c, 'b>> {
        let count = self.ms.len();
        let group = self.group_setup(b, block, g, offset, width);
        let pairs = width / 2;
        let mut acc: Vec<Value<'c, 'b>> = {
            let step = b.index(block, WARP as i64);
            let upper = b.index(block, pairs as i64);
            let body = b.loop_body(&vec![b.f32_type(); count]);
            {
                let pair = arg(&body, 0);
                let (w_even, w_odd) = self.pair_weights(b, &body, &group, pair);
                let two = b.index(&body, 2);
                let twice = b.muli(&body, pair, two);
                let k_even = b.addi(&body, k0, twice);
                let one = b.index(&body, 1);
                let k_odd = b.addi(&body, k_even, one);
                let sums: Vec<Value> = self
                    .ms
                    .iter()
                    .enumerate()
                    .map(|(t, &m)| {
                        let x_even = b.load(&body, self.x, &[m, k_even]);
                        let x_odd = b.load(&body, self.x, &[m, k_odd]);
                        let p_even = dot_op(b, &body, "arith.mulf", w_even, x_even);
                        let sum = dot_op(b, &body, "arith.addf", arg(&body, t + 1), p_even);
                        let p_odd = dot_op(b, &body, "arith.mulf", w_odd, x_odd);
                        dot_op(b, &body, "arith.addf", sum, p_odd)
                    })
                    .collect();
                b.yield_(&body, &sums);
            }
            let looped = b.for_op(block, self.lane, upper, step, acc, body);
            (0..count).map(|t| looped.result(t).expect("one result per token").into()).collect()
        };
        if width % 2 == 1 {
            // The last column (even) of an odd-width group: every lane
            // decodes it, the lane that owns pair `pairs` keeps it.
            let pair = b.index(block, pairs as i64);
            let (q, s) = self.even_code(b, block, &group, pair);
            let w = dequant(b, block, group.min, q, s);
            let k = b.index(block, (width - 1) as i64);
            let k = b.addi(block, k0, k);
            let owner = b.index(block, (pairs % WARP) as i64);
            let mine = cmpi(b, block, arith::CmpiPredicate::Eq, self.lane, owner);
            let zero = b.f32(block, 0.0);
            for (t, &m) in self.ms.iter().enumerate() {
                let xk = b.load(block, self.x, &[m, k]);
                let product = dot_op(b, block, "arith.mulf", w, xk);
                let part = push(block, arith::select(mine, product, zero, b.location));
                acc[t] = dot_op(b, block, "arith.addf", acc[t], part);
            }
        }
        acc
    }

    /// Stores this lane's weights of the group of `width` columns from k0
    /// (its block `offset` bytes into the row) to `out[m, k0 + ..]`.
    #[allow(clippy::too_many_arguments)]
    fn store_group(&self, b: &Builder<'c>, block: &Block<'c>, g: Value<'c, '_>, offset: Value<'c, '_>, k0: Value<'c, '_>, width: usize, out: Value<'c, '_>, m: Value<'c, '_>) {
        let group = self.group_setup(b, block, g, offset, width);
        let pairs = width / 2;
        let step = b.index(block, WARP as i64);
        let upper = b.index(block, pairs as i64);
        let body = b.loop_body(&[]);
        {
            let pair = arg(&body, 0);
            let (w_even, w_odd) = self.pair_weights(b, &body, &group, pair);
            let two = b.index(&body, 2);
            let twice = b.muli(&body, pair, two);
            let k_even = b.addi(&body, k0, twice);
            let one = b.index(&body, 1);
            let k_odd = b.addi(&body, k_even, one);
            b.store(&body, w_even, out, &[m, k_even]);
            b.store(&body, w_odd, out, &[m, k_odd]);
            b.yield_(&body, &[]);
        }
        b.for_op(block, self.lane, upper, step, &[], body);
        if width % 2 == 1 {
            // The last (even) column of an odd-width group: the lane that
            // owns pair `pairs` stores it.
            let owner = b.index(block, (pairs % WARP) as i64);
            let mine = cmpi(b, block, arith::CmpiPredicate::Eq, self.lane, owner);
            if_then(b, block, mine, |then| {
                let pair = b.index(then, pairs as i64);
                let (q, s) = self.even_code(b, then, &group, pair);
                let w = dequant(b, then, group.min, q, s);
                let k = b.index(then, (width - 1) as i64);
                let k = b.addi(then, k0, k);
                b.store(then, w, out, &[m, k]);
            });
        }
    }

    /// Group g's parameters and plane addresses (its block starts `offset`
    /// bytes into the row), with the reference's arithmetic: `range =
    /// range_scale · code` (exact in f32: 11 × 8 bits), `s4 = range / 15`,
    /// `s3 = range / 7`.
    fn group_setup<'b>(&self, b: &Builder<'c>, block: &'b Block<'c>, g: Value<'c, '_>, offset: Value<'c, '_>, width: usize) -> Group<'c, 'b> {
        let p = b.addi(block, self.param_base, g);
        let min_raw = b.load(block, self.mins, &[p]);
        let min = b.extf(block, min_raw);
        let code = b.load(block, self.range_codes, &[p]);
        let code_f = b.uitofp(block, code);
        let range = b.mulf(block, self.rs, code_f);
        let l4 = b.f32(block, 15.0);
        let s4 = b.divf(block, range, l4);
        let l3 = b.f32(block, 7.0);
        let s3 = b.divf(block, range, l3);
        let base = b.addi(block, self.row_base, offset);
        let (n4, n3) = self.quant.code_counts(width).expect("coded kind");
        // Plane starts: q35 nib | lo2 | hi1; int4 nib; int3 lo2 | hi1.
        let lo = b.index(block, n4.div_ceil(2) as i64);
        let lo = b.addi(block, base, lo);
        let hi = b.index(block, n3.div_ceil(4) as i64);
        let hi = b.addi(block, lo, hi);
        Group { min, s4, s3, base, lo, hi }
    }

    /// The weights of local columns 2·pair and 2·pair + 1, decoded in
    /// registers.
    fn pair_weights<'b>(&self, b: &Builder<'c>, block: &'b Block<'c>, group: &Group<'c, 'b>, pair: Value<'c, '_>) -> (Value<'c, 'b>, Value<'c, 'b>) {
        let (q_even, s_even) = self.even_code(b, block, group, pair);
        let (q_odd, s_odd) = self.odd_code(b, block, group, pair);
        (dequant(b, block, group.min, q_even, s_even), dequant(b, block, group.min, q_odd, s_odd))
    }

    /// The code and step of local column 2·pair.
    fn even_code<'b>(&self, b: &Builder<'c>, block: &'b Block<'c>, group: &Group<'c, 'b>, pair: Value<'c, '_>) -> (Value<'c, 'b>, Value<'c, 'b>) {
        let Group { base, lo, hi, s4, s3, .. } = *group;
        match self.quant {
            // q35: 4-bit code j = pair; int4: element 2·pair, the low nibble of byte `pair`.
            QuantKind::Q35 => (self.nibble(b, block, base, pair), s4),
            QuantKind::Int4 => {
                let two = b.index(block, 2);
                let j = b.muli(block, pair, two);
                (self.nibble(b, block, base, j), s4)
            }
            // int3: element 2·pair.
            _ => {
                let two = b.index(block, 2);
                let j = b.muli(block, pair, two);
                (self.three_bit(b, block, lo, hi, j), s3)
            }
        }
    }

    /// The code and step of local column 2·pair + 1.
    fn odd_code<'b>(&self, b: &Builder<'c>, block: &'b Block<'c>, group: &Group<'c, 'b>, pair: Value<'c, '_>) -> (Value<'c, 'b>, Value<'c, 'b>) {
        let Group { base, lo, hi, s4, s3, .. } = *group;
        match self.quant {
            // q35: 3-bit code j = pair.
            QuantKind::Q35 => (self.three_bit(b, block, lo, hi, pair), s3),
            _ => {
                let two = b.index(block, 2);
                let one = b.index(block, 1);
                let j = b.muli(block, pair, two);
                let j = b.addi(block, j, one);
                match self.quant {
                    QuantKind::Int4 => (self.nibble(b, block, base, j), s4),
                    _ => (self.three_bit(b, block, lo, hi, j), s3),
                }
            }
        }
    }

    /// 4-bit code j: nibble j%2 of byte j/2 of the plane at `plane`.
    fn nibble<'b>(&self, b: &Builder<'c>, block: &'b Block<'c>, plane: Value<'c, '_>, j: Value<'c, '_>) -> Value<'c, 'b> {
        let two = b.index(block, 2);
        let byte_index = b.divui(block, j, two);
        let at = b.addi(block, plane, byte_index);
        let byte = b.load(block, self.codes, &[at]);
        let wide = b.extui(block, byte, 32);
        let half = b.remui(block, j, two);
        let half32 = b.index_cast(block, half, b.int_type(32));
        let four = b.int(block, 32, 4);
        let shift = b.muli(block, half32, four);
        let shifted = b.shrui(block, wide, shift);
        let mask = b.int(block, 32, 15);
        b.andi(block, shifted, mask)
    }

    /// 3-bit code j: bits 2(j%4).. of lo2 byte j/4, bit j%8 of hi1 byte j/8.
    fn three_bit<'b>(&self, b: &Builder<'c>, block: &'b Block<'c>, lo: Value<'c, '_>, hi: Value<'c, '_>, j: Value<'c, '_>) -> Value<'c, 'b> {
        let four = b.index(block, 4);
        let eight = b.index(block, 8);
        let lo_at = b.divui(block, j, four);
        let lo_at = b.addi(block, lo, lo_at);
        let lo_byte = b.load(block, self.codes, &[lo_at]);
        let lo_wide = b.extui(block, lo_byte, 32);
        let lo_pos = b.remui(block, j, four);
        let lo_pos32 = b.index_cast(block, lo_pos, b.int_type(32));
        let two = b.int(block, 32, 2);
        let lo_shift = b.muli(block, lo_pos32, two);
        let lo_bits = b.shrui(block, lo_wide, lo_shift);
        let three = b.int(block, 32, 3);
        let lo_q = b.andi(block, lo_bits, three);
        let hi_at = b.divui(block, j, eight);
        let hi_at = b.addi(block, hi, hi_at);
        let hi_byte = b.load(block, self.codes, &[hi_at]);
        let hi_wide = b.extui(block, hi_byte, 32);
        let hi_pos = b.remui(block, j, eight);
        let hi_pos32 = b.index_cast(block, hi_pos, b.int_type(32));
        let hi_bits = b.shrui(block, hi_wide, hi_pos32);
        let one = b.int(block, 32, 1);
        let hi_q = b.andi(block, hi_bits, one);
        let hi_shifted = b.shli(block, hi_q, two);
        b.ori(block, lo_q, hi_shifted)
    }
}

/// The embedding lookup on a GPU: block m (one per token, as the CPU's
/// workgroups) is one warp that decodes row `ids[m]` of the table with the
/// GEMV's decode (lanes over column pairs of each group; f16/f32: over
/// columns) and stores it to `out[m, ..]`, so the row is read coalesced
/// and decoded 32 columns pairs at a time instead of by one thread.
/// `emulated`: the CPU form for tests, `(wg, tokens, start, buffers...)`,
/// block id = wg and the 32 lanes one after another.
pub fn build_embedding<'c>(b: &Builder<'c>, shape: &MatmulShape, body: &Block<'c>, emulated: bool) {
    let first_buffer = if emulated { 3 } else { 2 };
    let ids = arg(body, first_buffer);
    let out = arg(body, body.argument_count() - 1);
    let m = if emulated { arg(body, 0) } else { gpu_id(b, body, "gpu.block_id") };
    let id = b.load(body, ids, &[m]);
    let n = b.index_cast(body, id, b.index_type());
    let lane_body = |block: &Block<'c>, lane: Value<'c, '_>| {
        let w = first_buffer + 1;
        match shape.quant {
            QuantKind::F16 | QuantKind::F32 => {
                let k_total = b.index(block, shape.k as i64);
                let step = b.index(block, WARP as i64);
                let base = b.muli(block, n, k_total);
                let copy = b.loop_body(&[]);
                {
                    let k = arg(&copy, 0);
                    let idx = b.addi(&copy, base, k);
                    let raw = b.load(&copy, arg(body, w), &[idx]);
                    let value = if shape.quant == QuantKind::F16 { b.extf(&copy, raw) } else { raw };
                    b.store(&copy, value, out, &[m, k]);
                    b.yield_(&copy, &[]);
                }
                b.for_op(block, lane, k_total, step, &[], copy);
            }
            _ => {
                let layout = Layout::new(shape.quant, shape.group, shape.k);
                let (groups, width) = (layout.groups(), layout.group_width());
                let row_bytes = b.index(block, layout.row_bytes() as i64);
                let ng = b.index(block, groups as i64);
                let rs_raw = b.load(block, arg(body, w + 3), &[n]);
                let row = Row {
                    quant: shape.quant,
                    codes: arg(body, w),
                    mins: arg(body, w + 1),
                    range_codes: arg(body, w + 2),
                    rs: b.extf(block, rs_raw),
                    row_base: b.muli(block, n, row_bytes),
                    param_base: b.muli(block, n, ng),
                    ms: Vec::new(),
                    lane,
                    // Not read: the lookup stores weights instead of dotting them.
                    x: out,
                };
                let full_groups = if layout.cols() % width == 0 { groups } else { groups - 1 };
                if full_groups > 0 {
                    let zero = b.index(block, 0);
                    let one = b.index(block, 1);
                    let upper = b.index(block, full_groups as i64);
                    let each = b.loop_body(&[]);
                    {
                        let g = arg(&each, 0);
                        let block_bytes = b.index(&each, layout.block_len(0) as i64);
                        let offset = b.muli(&each, g, block_bytes);
                        let wv = b.index(&each, width as i64);
                        let k0 = b.muli(&each, g, wv);
                        row.store_group(b, &each, g, offset, k0, width, out, m);
                        b.yield_(&each, &[]);
                    }
                    b.for_op(block, zero, upper, one, &[], each);
                }
                if full_groups < groups {
                    let g = groups - 1;
                    let gv = b.index(block, g as i64);
                    let offset = b.index(block, layout.block_offset(g) as i64);
                    let k0 = b.index(block, (g * width) as i64);
                    row.store_group(b, block, gv, offset, k0, layout.cols() - g * width, out, m);
                }
            }
        }
    };
    if emulated {
        let zero = b.index(body, 0);
        let one = b.index(body, 1);
        let warp = b.index(body, WARP as i64);
        let lanes = b.loop_body(&[]);
        {
            let lane = arg(&lanes, 0);
            lane_body(&lanes, lane);
            b.yield_(&lanes, &[]);
        }
        b.for_op(body, zero, warp, one, &[], lanes);
    } else {
        let lane = gpu_id(b, body, "gpu.thread_id");
        lane_body(body, lane);
    }
}

/// One group's decoded parameters and plane addresses (byte indices).
#[derive(Clone, Copy)]
struct Group<'c, 'a> {
    min: Value<'c, 'a>,
    s4: Value<'c, 'a>,
    s3: Value<'c, 'a>,
    base: Value<'c, 'a>,
    lo: Value<'c, 'a>,
    hi: Value<'c, 'a>,
}

/// fl(min + fl(q·s)): the reference's dequantization, two roundings.
fn dequant<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, min: Value<'c, '_>, q: Value<'c, '_>, s: Value<'c, '_>) -> Value<'c, 'b> {
    let qf = b.uitofp(block, q);
    let scaled = b.mulf(block, qf, s);
    b.addf(block, min, scaled)
}

#[cfg(test)]
mod tests {
    //! The GEMV's decode, run on the CPU: [`build_emulated`] compiled like
    //! a CPU kernel and checked against f64 arithmetic on the reference
    //! dequantized weights (as the CPU matmul kernels are), for every kind,
    //! tail groups, odd widths and every epilogue. What only a GPU can run
    //! (thread ids, shuffles) is pinned by the lit test and the PTX snapshot.
    use super::*;
    use crate::pass::emulation;
    use q35_target_cpu::testing::check_compiled as check_compiled_matmul;
    use q35_format::GroupSize;

    /// The emulated kernel compiled for the host: a shared object.
    fn shared_object(shape: &MatmulShape) -> Vec<u8> {
        emulation::shared_object(&emulation::buffer_types(shape), |b, block| build_emulated(b, shape, block))
    }

    /// Every output within the bound of a reordered, fused f32 dot
    /// (γ_K·Σ|w'·x|, γ_K = K·u/(1 − K·u)) plus the epilogue's rounding: the
    /// CPU kernels' check, one workgroup per row.
    fn check(shape: MatmulShape, tokens: usize) {
        let label = format!("{} {}x{} g{} {:?}", shape.quant, shape.n, shape.k, shape.group, shape.epilogue);
        check_compiled_matmul(&shape, tokens, &shared_object(&shape), "_mlir_ciface_k", 0x51ed_2701, false, &label);
    }

    fn shape(n: usize, k: usize, quant: QuantKind, group: GroupSize, epilogue: Epilogue) -> MatmulShape {
        MatmulShape {
            n,
            k,
            quant,
            group,
            rows_per_workgroup: 1,
            epilogue,
            int8_activations: false,
            linalg: false,
        }
    }

    /// The embedding's CPU form compiled for the host: ids, the table's
    /// buffers, a row of K.
    fn embedding_object(shape: &MatmulShape) -> Vec<u8> {
        let types = emulation::buffer_types(shape);
        let mut buffers = vec!["memref<?xi32>".to_string()];
        buffers.extend_from_slice(&types[1..types.len() - 1]);
        buffers.push(format!("memref<?x{}xf32>", shape.k));
        emulation::shared_object(&buffers, |b, block| build_embedding(b, shape, block, true))
    }

    /// The warp-per-token lookup stores exactly the reference's dequantized
    /// rows (the decode is the reference arithmetic, and nothing is summed),
    /// for every kind, tail groups and odd widths.
    #[test]
    fn emulated_embedding_is_the_reference_row_bit_for_bit() {
        use q35_format::QuantizedTensor;
        use q35_rt::{code::CodeObject, memref::{MemRef1, MemRef2}};
        use std::ffi::c_void;
        for (quant, group, k) in [
            (QuantKind::Q35, GroupSize::G128, 576),
            (QuantKind::Q35, GroupSize::G64, 99),
            (QuantKind::Q35, GroupSize::Channel, 161),
            (QuantKind::Int4, GroupSize::G32, 45),
            (QuantKind::Int3, GroupSize::G32, 77),
            (QuantKind::F16, GroupSize::Channel, 40),
        ] {
            let n = 50;
            let shape = shape(n, k, quant, group, Epilogue::None);
            let values: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1013) as f32 / 506.5 - 1.0) * 0.3).collect();
            let table = QuantizedTensor::quantize("emb", n, k, &values, quant, group).unwrap();
            let dense = table.dequantize();
            let ids: Vec<i32> = vec![3, 49, 0, 17, 17];
            let mut out = vec![f32::NAN; ids.len() * k];
            let so = embedding_object(&shape);
            let code = CodeObject::load(&so).unwrap();
            let entry = code.symbol("_mlir_ciface_k").unwrap();
            let ptr = |p: *const c_void| p as *mut c_void;
            let mut descs: Vec<MemRef1> = vec![MemRef1::vector(ptr(ids.as_ptr().cast()), ids.len())];
            descs.extend(MemRef1::of_payload(table.payload()));
            let mut out_desc = MemRef2::matrix(out.as_mut_ptr().cast(), ids.len(), k);
            let mut args: Vec<*mut c_void> = descs.iter_mut().map(|d| (d as *mut MemRef1).cast::<c_void>()).collect();
            args.push((&mut out_desc as *mut MemRef2).cast());
            let call = q35_rt::kernel::trampoline(args.len()).unwrap();
            for m in 0..ids.len() {
                // SAFETY: the kernel takes exactly these descriptors.
                unsafe { call(entry, m as i64, ids.len() as i64, 0, &args) };
            }
            for (m, &id) in ids.iter().enumerate() {
                let want = &dense[id as usize * k..(id as usize + 1) * k];
                let got = &out[m * k..(m + 1) * k];
                let first = want.iter().zip(got).position(|(a, b)| a.to_bits() != b.to_bits());
                assert!(first.is_none(), "{quant} g{group} k={k}: row {id} differs first at column {first:?}: {:?}", first.map(|c| (want[c], got[c])));
            }
        }
    }

    #[test]
    fn emulated_gemv_matches_f64_for_every_kind_tail_and_epilogue() {
        for (quant, group, k) in [
            (QuantKind::Q35, GroupSize::G128, 576),
            (QuantKind::Q35, GroupSize::G32, 70),
            (QuantKind::Q35, GroupSize::G64, 99),
            (QuantKind::Q35, GroupSize::Channel, 99),
            (QuantKind::Q35, GroupSize::Channel, 161),
            (QuantKind::Int4, GroupSize::G64, 200),
            (QuantKind::Int4, GroupSize::G32, 45),
            (QuantKind::Int3, GroupSize::G256, 300),
            (QuantKind::Int3, GroupSize::G32, 77),
            (QuantKind::F16, GroupSize::Channel, 40),
            (QuantKind::F32, GroupSize::Channel, 33),
        ] {
            // Decode (one token), and a token tile plus the rest.
            check(shape(13, k, quant, group, Epilogue::None), 1);
            check(shape(13, k, quant, group, Epilogue::None), TOKEN_TILE + 2);
        }
        check(shape(9, 192, QuantKind::Q35, GroupSize::G128, Epilogue::AddResidual), 2 * TOKEN_TILE + 1);
        check(shape(7, 160, QuantKind::Q35, GroupSize::G64, Epilogue::SwiGlu), TOKEN_TILE + 1);
        check(shape(7, 48, QuantKind::F16, GroupSize::Channel, Epilogue::SwiGlu), TOKEN_TILE);
    }
}
