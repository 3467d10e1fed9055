//! `q35.dequant_matmul` as a kernel: each workgroup computes a block of
//! output rows (channels); for each row, every group of the packed weight
//! is decoded into a small stack buffer with exactly the reference
//! arithmetic, `w = fl(min + fl(q·s))`, then dotted with every token's
//! activations. The dequantized matrix is never materialized: only one
//! group of one row exists at a time, in registers or L1.
//!
//! Kernel signature (buffers as memrefs, C interface):
//!
//! ```text
//! (wg: index, tokens: index, start: index, x: memref<?xKxf32>,
//!  codes: memref<?xi8>, mins: memref<?xf16>, range_codes: memref<?xi8>, range_scale: memref<?xf16>,
//!  out: memref<?xNxf32>)
//! ```
//!
//! for q35/int4/int3 weights, or `w: memref<?xf16>` / `memref<?xf32>` (row
//! major, N·K elements) in place of the four weight buffers for f16/f32.

use super::builder::{arg, push, Builder};
use super::FIRST_BUFFER;
use melior::ir::{
    attribute::Attribute,
    block::BlockLike,
    operation::OperationBuilder,
    Block, Type, Value,
};
use q35_format::{GroupSize, Layout, QuantKind};

/// The static shape of one matmul kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatmulShape {
    pub n: usize,
    pub k: usize,
    pub quant: QuantKind,
    pub group: GroupSize,
    /// Output rows per workgroup.
    pub rows_per_workgroup: usize,
    /// What the kernel does with each dot product before storing it.
    pub epilogue: Epilogue,
}

/// An elementwise step fused into the matmul kernel (q35-fuse).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// out = x · wᵀ
    None,
    /// out = residual + x · wᵀ; buffers `[x, w.., residual, out]`.
    AddResidual,
    /// out = silu(x · gateᵀ) · (x · upᵀ); buffers `[x, gate.., up.., out]`.
    SwiGlu,
}

impl MatmulShape {
    pub fn workgroups(&self) -> usize {
        self.n.div_ceil(self.rows_per_workgroup)
    }

    /// Kernel name, unique per shape.
    pub fn kernel_name(&self) -> String {
        let suffix = match self.epilogue {
            Epilogue::None => "",
            Epilogue::AddResidual => "_add",
            Epilogue::SwiGlu => "_swiglu",
        };
        format!(
            "dequant_matmul_{}_{}x{}_g{}_r{}{suffix}",
            self.quant, self.n, self.k, self.group, self.rows_per_workgroup
        )
    }

    /// Buffer argument types (after the scalars).
    pub fn buffer_types<'c>(&self, b: &Builder<'c>) -> Vec<Type<'c>> {
        let parse = |t: &str| Type::parse(b.context, t).expect("valid memref type");
        let mut types = vec![parse(&format!("memref<?x{}xf32>", self.k))];
        let weights = if self.epilogue == Epilogue::SwiGlu { 2 } else { 1 };
        for _ in 0..weights {
            match self.quant {
                QuantKind::F16 => types.push(parse("memref<?xf16>")),
                QuantKind::F32 => types.push(parse("memref<?xf32>")),
                _ => types.extend(["memref<?xi8>", "memref<?xf16>", "memref<?xi8>", "memref<?xf16>"].map(parse)),
            }
        }
        let row = parse(&format!("memref<?x{}xf32>", self.n));
        if self.epilogue == Epilogue::AddResidual {
            types.push(row);
        }
        types.push(row);
        types
    }
}

/// Fast-math flags for the dot products only: reassociation lets LLVM
/// vectorize the reduction (the order of f32 additions then differs from
/// the reference's, which the numerical tests bound); dequantization keeps
/// the exact reference arithmetic.
fn dot_flags<'c>(b: &Builder<'c>) -> Attribute<'c> {
    Attribute::parse(b.context, "#arith.fastmath<reassoc,contract>").expect("valid fastmath attribute")
}

fn with_flags<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, name: &str, x: Value<'c, '_>, y: Value<'c, '_>) -> Value<'c, 'b> {
    push(
        block,
        OperationBuilder::new(name, b.location)
            .add_operands(&[x, y])
            .add_results(&[b.f32_type()])
            .add_attributes(&[(melior::ir::Identifier::new(b.context, "fastmath"), dot_flags(b))])
            .build()
            .expect("valid arith op"),
    )
}

/// Fills the kernel body `body` (arguments: wg, tokens, buffers...).
pub fn build(b: &Builder<'_>, shape: &MatmulShape, body: &Block<'_>) {
    let b = *b;
    let wg = arg(body, 0);
    let tokens = arg(body, 1);
    let x = arg(body, FIRST_BUFFER);
    let out = arg(body, body.argument_count() - 1);
    let rows = b.index(body, shape.rows_per_workgroup as i64);
    let n_lo = b.muli(body, wg, rows);
    let n_end = b.addi(body, n_lo, rows);
    let n_total = b.index(body, shape.n as i64);
    let n_hi = b.minui(body, n_end, n_total);
    let one = b.index(body, 1);
    let zero = b.index(body, 0);
    let layout = Layout::new(shape.quant, shape.group, shape.k);
    let width = layout.group_width().max(1);
    let wbuf = b.alloca_f32(body, width);

    // for n in [n_lo, n_hi)
    let row_loop = b.loop_body(&[]);
    {
        let n = arg(&row_loop, 0);
        let fzero = b.f32(&row_loop, 0.0);
        // out[m, n] = 0 for every token.
        let init = b.loop_body(&[]);
        let m = arg(&init, 0);
        b.store(&init, fzero, out, &[m, n]);
        b.yield_(&init, &[]);
        b.for_op(&row_loop, zero, tokens, one, &[], init);

        match shape.quant {
            QuantKind::F16 | QuantKind::F32 => float_row(&b, shape, &row_loop, n, tokens, x, arg(body, FIRST_BUFFER + 1), out),
            _ => coded_row(&b, shape, &layout, &row_loop, n, RowUse::Dot { tokens, x }, body, wbuf, out),
        }
        b.yield_(&row_loop, &[]);
    }
    b.for_op(body, n_lo, n_hi, one, &[], row_loop);
}

/// out[m, n] = Σ_k x[m, k] · w[n·K + k] for pass-through weights.
#[allow(clippy::too_many_arguments)]
fn float_row<'c>(
    b: &Builder<'c>,
    shape: &MatmulShape,
    block: &Block<'c>,
    n: Value<'c, '_>,
    tokens: Value<'c, '_>,
    x: Value<'c, '_>,
    w: Value<'c, '_>,
    out: Value<'c, '_>,
) {
    let zero = b.index(block, 0);
    let one = b.index(block, 1);
    let k_total = b.index(block, shape.k as i64);
    let base = b.muli(block, n, k_total);
    let tok = b.loop_body(&[]);
    {
        let m = arg(&tok, 0);
        let fzero = b.f32(&tok, 0.0);
        let dot = b.loop_body(&[b.f32_type()]);
        {
            let k = arg(&dot, 0);
            let acc = arg(&dot, 1);
            let xi = b.load(&dot, x, &[m, k]);
            let idx = b.addi(&dot, base, k);
            let raw = b.load(&dot, w, &[idx]);
            let wi = if shape.quant == QuantKind::F16 { b.extf(&dot, raw) } else { raw };
            let prod = with_flags(b, &dot, "arith.mulf", xi, wi);
            let sum = with_flags(b, &dot, "arith.addf", acc, prod);
            b.yield_(&dot, &[sum]);
        }
        let looped = b.for_op(&tok, zero, k_total, one, &[fzero], dot);
        let total: Value = looped.result(0).expect("one result").into();
        b.store(&tok, total, out, &[m, n]);
        b.yield_(&tok, &[]);
    }
    b.for_op(block, zero, tokens, one, &[], tok);
}

/// One row of a coded weight: decode each group into `wbuf`, then add its
/// dot product with every token into out[m, n].
#[allow(clippy::too_many_arguments)]
fn coded_row<'c>(
    b: &Builder<'c>,
    shape: &MatmulShape,
    layout: &Layout,
    block: &Block<'c>,
    n: Value<'c, '_>,
    use_: RowUse<'c, '_>,
    kernel: &Block<'c>,
    wbuf: Value<'c, '_>,
    out: Value<'c, '_>,
) {
    let w = FIRST_BUFFER + 1;
    let (codes, mins, range_codes, range_scale) = (arg(kernel, w), arg(kernel, w + 1), arg(kernel, w + 2), arg(kernel, w + 3));
    let groups = layout.groups();
    let row_bytes = b.index(block, layout.row_bytes() as i64);
    let row_base = b.muli(block, n, row_bytes);
    let ng = b.index(block, groups as i64);
    let param_base = b.muli(block, n, ng);
    let rs_raw = b.load(block, range_scale, &[n]);
    let rs = b.extf(block, rs_raw);
    let ctx = GroupCtx {
        shape,
        codes,
        mins,
        range_codes,
        rs,
        row_base,
        param_base,
        use_,
        wbuf,
        out,
        n,
    };
    let width = layout.group_width();
    let full_groups = if layout.cols() % width == 0 { groups } else { groups - 1 };
    if full_groups > 0 {
        let zero = b.index(block, 0);
        let one = b.index(block, 1);
        let upper = b.index(block, full_groups as i64);
        let body = b.loop_body(&[]);
        {
            let g = arg(&body, 0);
            let block_bytes = b.index(&body, layout.block_len(0) as i64);
            let offset = b.muli(&body, g, block_bytes);
            let w = b.index(&body, width as i64);
            let k0 = b.muli(&body, g, w);
            ctx.group(b, &body, g, offset, k0, width);
            b.yield_(&body, &[]);
        }
        b.for_op(block, zero, upper, one, &[], body);
    }
    if full_groups < groups {
        let g = groups - 1;
        let gv = b.index(block, g as i64);
        let offset = b.index(block, layout.block_offset(g) as i64);
        let k0 = b.index(block, (g * width) as i64);
        ctx.group(b, block, gv, offset, k0, layout.cols() - g * width);
    }
}

/// What a decoded row is for.
#[derive(Clone, Copy)]
enum RowUse<'c, 'a> {
    /// out[m, n] += x[m, :] · row, for every token m (a matmul).
    Dot { tokens: Value<'c, 'a>, x: Value<'c, 'a> },
    /// out[m, :] = row (an embedding lookup for token m).
    Copy { m: Value<'c, 'a> },
}

/// What decoding one group of one row needs.
struct GroupCtx<'c, 'a> {
    shape: &'a MatmulShape,
    codes: Value<'c, 'a>,
    mins: Value<'c, 'a>,
    range_codes: Value<'c, 'a>,
    rs: Value<'c, 'a>,
    row_base: Value<'c, 'a>,
    param_base: Value<'c, 'a>,
    use_: RowUse<'c, 'a>,
    wbuf: Value<'c, 'a>,
    out: Value<'c, 'a>,
    n: Value<'c, 'a>,
}

impl<'c> GroupCtx<'c, '_> {
    /// Decodes the group of `width` weights whose block starts `offset`
    /// bytes into the row, then accumulates its dot products from column k0.
    fn group(&self, b: &Builder<'c>, block: &Block<'c>, g: Value<'c, '_>, offset: Value<'c, '_>, k0: Value<'c, '_>, width: usize) {
        let p = b.addi(block, self.param_base, g);
        let min_raw = b.load(block, self.mins, &[p]);
        let min = b.extf(block, min_raw);
        let code = b.load(block, self.range_codes, &[p]);
        let code_f = b.uitofp(block, code);
        // range = range_scale · code is exact in f32 (11 × 8 bits).
        let range = b.mulf(block, self.rs, code_f);
        let base = b.addi(block, self.row_base, offset);
        let (n4, n3) = self.shape.quant.code_counts(width).expect("coded kind");
        // q35: 4-bit codes are the even elements, 3-bit the odd ones;
        // int4: all 4-bit; int3: all 3-bit. (stride, first element)
        let (stride4, stride3, first3) = match self.shape.quant {
            QuantKind::Q35 => (2, 2, 1),
            _ => (1, 1, 0),
        };
        if n4 > 0 {
            let l4 = b.f32(block, 15.0);
            let s4 = b.divf(block, range, l4);
            self.decode_nibbles(b, block, base, n4, stride4, min, s4);
        }
        if n3 > 0 {
            let l3 = b.f32(block, 7.0);
            let s3 = b.divf(block, range, l3);
            let lo_base = b.index(block, n4.div_ceil(2) as i64);
            let lo = b.addi(block, base, lo_base);
            let hi_off = b.index(block, n3.div_ceil(4) as i64);
            let hi = b.addi(block, lo, hi_off);
            self.decode_3bit(b, block, lo, hi, n3, stride3, first3, min, s3);
        }
        match self.use_ {
            RowUse::Dot { tokens, x } => self.accumulate(b, block, k0, width, tokens, x),
            RowUse::Copy { m } => self.copy(b, block, k0, width, m),
        }
    }

    /// out[m, k0 + i] = wbuf[i].
    fn copy(&self, b: &Builder<'c>, block: &Block<'c>, k0: Value<'c, '_>, width: usize, m: Value<'c, '_>) {
        let zero = b.index(block, 0);
        let one = b.index(block, 1);
        let upper = b.index(block, width as i64);
        let body = b.loop_body(&[]);
        {
            let i = arg(&body, 0);
            let k = b.addi(&body, k0, i);
            let w = b.load(&body, self.wbuf, &[i]);
            b.store(&body, w, self.out, &[m, k]);
            b.yield_(&body, &[]);
        }
        b.for_op(block, zero, upper, one, &[], body);
    }

    /// wbuf[stride·j] = min + q4[j]·s for j < n4 (q4[j] = nibble j%2 of byte j/2).
    #[allow(clippy::too_many_arguments)]
    fn decode_nibbles(&self, b: &Builder<'c>, block: &Block<'c>, base: Value<'c, '_>, n4: usize, stride: i64, min: Value<'c, '_>, s: Value<'c, '_>) {
        let zero = b.index(block, 0);
        let one = b.index(block, 1);
        let upper = b.index(block, n4 as i64);
        let body = b.loop_body(&[]);
        {
            let j = arg(&body, 0);
            let two = b.index(&body, 2);
            let byte_index = b.divui(&body, j, two);
            let at = b.addi(&body, base, byte_index);
            let byte = b.load(&body, self.codes, &[at]);
            let wide = b.extui(&body, byte, 32);
            let half = b.remui(&body, j, two);
            let half32 = b.index_cast(&body, half, b.int_type(32));
            let four = b.int(&body, 32, 4);
            let shift = b.muli(&body, half32, four);
            let shifted = b.shrui(&body, wide, shift);
            let mask = b.int(&body, 32, 15);
            let q = b.andi(&body, shifted, mask);
            self.store_weight(b, &body, j, stride, 0, q, min, s);
            b.yield_(&body, &[]);
        }
        b.for_op(block, zero, upper, one, &[], body);
    }

    /// wbuf[stride·j + first] = min + q3[j]·s, q3[j] = lo2 bits | hi bit << 2.
    #[allow(clippy::too_many_arguments)]
    fn decode_3bit(&self, b: &Builder<'c>, block: &Block<'c>, lo: Value<'c, '_>, hi: Value<'c, '_>, n3: usize, stride: i64, first: i64, min: Value<'c, '_>, s: Value<'c, '_>) {
        let zero = b.index(block, 0);
        let one = b.index(block, 1);
        let upper = b.index(block, n3 as i64);
        let body = b.loop_body(&[]);
        {
            let j = arg(&body, 0);
            let four = b.index(&body, 4);
            let eight = b.index(&body, 8);
            let lo_byte_index = b.divui(&body, j, four);
            let lo_at = b.addi(&body, lo, lo_byte_index);
            let lo_byte = b.load(&body, self.codes, &[lo_at]);
            let lo_wide = b.extui(&body, lo_byte, 32);
            let lo_pos = b.remui(&body, j, four);
            let lo_pos32 = b.index_cast(&body, lo_pos, b.int_type(32));
            let two = b.int(&body, 32, 2);
            let lo_shift = b.muli(&body, lo_pos32, two);
            let lo_bits = b.shrui(&body, lo_wide, lo_shift);
            let three = b.int(&body, 32, 3);
            let lo_q = b.andi(&body, lo_bits, three);
            let hi_byte_index = b.divui(&body, j, eight);
            let hi_at = b.addi(&body, hi, hi_byte_index);
            let hi_byte = b.load(&body, self.codes, &[hi_at]);
            let hi_wide = b.extui(&body, hi_byte, 32);
            let hi_pos = b.remui(&body, j, eight);
            let hi_pos32 = b.index_cast(&body, hi_pos, b.int_type(32));
            let hi_bits = b.shrui(&body, hi_wide, hi_pos32);
            let one32 = b.int(&body, 32, 1);
            let hi_q = b.andi(&body, hi_bits, one32);
            let hi_shifted = b.shli(&body, hi_q, two);
            let q = b.ori(&body, lo_q, hi_shifted);
            self.store_weight(b, &body, j, stride, first, q, min, s);
            b.yield_(&body, &[]);
        }
        b.for_op(block, zero, upper, one, &[], body);
    }

    /// wbuf[stride·j + first] = fl(min + fl(q·s)): the reference's dequant.
    #[allow(clippy::too_many_arguments)]
    fn store_weight(&self, b: &Builder<'c>, block: &Block<'c>, j: Value<'c, '_>, stride: i64, first: i64, q: Value<'c, '_>, min: Value<'c, '_>, s: Value<'c, '_>) {
        let qf = b.uitofp(block, q);
        let scaled = b.mulf(block, qf, s);
        let w = b.addf(block, min, scaled);
        let stride_v = b.index(block, stride);
        let first_v = b.index(block, first);
        let pos = b.muli(block, j, stride_v);
        let at = b.addi(block, pos, first_v);
        b.store(block, w, self.wbuf, &[at]);
    }

    /// out[m, n] += Σ_i x[m, k0 + i] · wbuf[i] for every token m.
    fn accumulate(&self, b: &Builder<'c>, block: &Block<'c>, k0: Value<'c, '_>, width: usize, tokens: Value<'c, '_>, x: Value<'c, '_>) {
        let zero = b.index(block, 0);
        let one = b.index(block, 1);
        let upper = b.index(block, width as i64);
        let tok = b.loop_body(&[]);
        {
            let m = arg(&tok, 0);
            let fzero = b.f32(&tok, 0.0);
            let dot = b.loop_body(&[b.f32_type()]);
            {
                let i = arg(&dot, 0);
                let acc = arg(&dot, 1);
                let k = b.addi(&dot, k0, i);
                let xi = b.load(&dot, x, &[m, k]);
                let wi = b.load(&dot, self.wbuf, &[i]);
                let prod = with_flags(b, &dot, "arith.mulf", xi, wi);
                let sum = with_flags(b, &dot, "arith.addf", acc, prod);
                b.yield_(&dot, &[sum]);
            }
            let looped = b.for_op(&tok, zero, upper, one, &[fzero], dot);
            let partial: Value = looped.result(0).expect("one result").into();
            let old = b.load(&tok, self.out, &[m, self.n]);
            let new = b.addf(&tok, old, partial);
            b.store(&tok, new, self.out, &[m, self.n]);
            b.yield_(&tok, &[]);
        }
        b.for_op(block, zero, tokens, one, &[], tok);
    }
}

/// The embedding lookup kernel for a table of `shape.n` rows of `shape.k`
/// (`rows_per_workgroup` unused): one workgroup per token,
/// `(wg, tokens, start, ids: memref<?xi32>, table..., out: memref<?xKxf32>)`.
/// Token ids are checked against the vocabulary by the runtime before any
/// dispatch runs.
pub fn build_embedding(b: &Builder<'_>, shape: &MatmulShape, body: &Block<'_>) {
    let b = *b;
    let m = arg(body, 0);
    let ids = arg(body, FIRST_BUFFER);
    let out = arg(body, body.argument_count() - 1);
    let id = b.load(body, ids, &[m]);
    let n = b.index_cast(body, id, b.index_type());
    let layout = Layout::new(shape.quant, shape.group, shape.k);
    match shape.quant {
        QuantKind::F16 | QuantKind::F32 => {
            let table = arg(body, FIRST_BUFFER + 1);
            let zero = b.index(body, 0);
            let one = b.index(body, 1);
            let k_total = b.index(body, shape.k as i64);
            let base = b.muli(body, n, k_total);
            let copy = b.loop_body(&[]);
            {
                let k = arg(&copy, 0);
                let at = b.addi(&copy, base, k);
                let raw = b.load(&copy, table, &[at]);
                let w = if shape.quant == QuantKind::F16 { b.extf(&copy, raw) } else { raw };
                b.store(&copy, w, out, &[m, k]);
                b.yield_(&copy, &[]);
            }
            b.for_op(body, zero, k_total, one, &[], copy);
        }
        _ => {
            let wbuf = b.alloca_f32(body, layout.group_width().max(1));
            coded_row(&b, shape, &layout, body, n, RowUse::Copy { m }, body, wbuf, out);
        }
    }
}
