//! `q35.dequant_matmul` as a kernel: each workgroup computes a block of
//! output rows (channels) for every token, optionally followed by an
//! epilogue (a residual add, or SwiGLU of two matmuls). The dequantized
//! matrix is never materialized.
//!
//! Kernel signature (buffers as memrefs, C interface):
//!
//! ```text
//! (wg: index, tokens: index, start: index, x: memref<?xKxf32>,
//!  codes: memref<?xi8>, mins: memref<?xf16>, range_codes: memref<?xi8>, range_scale: memref<?xf16>,
//!  [up weight: the same four buffers, SwiGlu only],
//!  [residual: memref<?xNxf32>, AddResidual only],
//!  out: memref<?xNxf32>)
//! ```
//!
//! for q35/int4/int3 weights, or `w: memref<?xf16>` / `memref<?xf32>` (row
//! major, N·K elements) in place of each set of four weight buffers for
//! f16/f32. Epilogues: `None` writes `out[m, n] = dot`; `AddResidual`
//! writes `out[m, n] = residual[m, n] + dot` (out may be the residual
//! buffer: each element is read once, then written once); `SwiGlu` writes
//! `out[m, n] = silu(g)·u` with `g`, `u` the gate and up dots and
//! `silu(g) = g / (1 + exp(-g))` in f32, like the `swiglu` row kernel.
//!
//! **Coded weights on x86-64 with AVX-512 (the fast path).** Decode is
//! memory-bound, so the kernel must turn 3.5 bits into a multiply-add in a
//! handful of vector instructions. Per (row, group) it builds two 16-lane
//! tables with exactly the reference arithmetic, `T4[q] = fl(min + fl(q·s4))`
//! (q < 16) and `T3[q] = fl(min + fl((q mod 8)·s3))`, so a table entry *is*
//! the reference weight `w'` bit for bit. Codes are loaded 16 plane bytes at
//! a time (fewer for short planes) into 16 i32 lanes so that one shift puts
//! a code in each lane's low 4 bits (3-bit codes: one shift for the `lo2`
//! field, one for the `hi1` bit and one `vpternlogd` bit select); one
//! `vpermps` per 16 lanes turns codes into weights, and one FMA adds them
//! times the activations into one of several accumulators. The lane order
//! is the plane order, not the column order, so each token's activations
//! are first permuted once per workgroup into a stack scratch laid out slot
//! by slot (16 floats per permute, zeros in unused lanes). Each row's `s4`,
//! `s3` and `min` are decoded for all its groups at once in a short vector
//! prologue (`s = fl32(range·fl64(1/L))` in f64, which equals the
//! reference's `fl32(range/L)` for every range scale and code: a unit test
//! checks all of them), and the code and parameter streams are prefetched
//! a few KiB ahead. Decode computes four rows at a time (independent
//! dependency chains, shared activation loads); prefill computes one row
//! for four tokens at a time, sharing each decoded weight vector.
//!
//! *Numerics.* The weights are exactly the reference's `w'`; only the order
//! of the f32 sum `Σ_k w'_k·x_k` differs from the reference's, and products
//! are fused (`fma`): the same latitude the dot products have always had
//! (`reassoc,contract` below), so the error argument of the numerical tests
//! is unchanged: a reordered, fused f32 dot of length K is within
//! `γ_K·Σ|w'_k·x_k|` (γ_K = K·u/(1 − K·u), u = 2^-24) of the exact one. The
//! per-group identity `Σ(min + q·s)·x = min·Σx + s·Σq·x` is deliberately not
//! used: it would change the weights' rounding, not just the sum's order.
//!
//! **Elsewhere (the portable path)**, and for the embedding, each group of
//! each row is decoded into a small stack buffer with the same reference
//! arithmetic and dotted with the token's activations; LLVM vectorizes the
//! dot. f16/f32 weights are dotted directly.

use q35_target::builder::{arg, push, Builder};
use q35_target::kernel::FIRST_BUFFER;
use q35_target::math::{store_epilogue, Exp};
use q35_target::{ActivationCodes, Epilogue, MatmulShape};
use melior::dialect::arith;
use melior::ir::{
    attribute::Attribute,
    block::BlockLike,
    Block, Type, Value,
};
use q35_format::{block_bytes, Layout, QuantKind};

/// `name` (an arith binary op) for the dot products: see
/// [`Builder::dot_op`].
fn with_flags<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, name: &str, x: Value<'c, '_>, y: Value<'c, '_>) -> Value<'c, 'b> {
    b.dot_op(block, name, x, y)
}

/// Whether the host has AVX-512 (the fast path's `vpermps` on 16 lanes).
/// Kernels are compiled for the host CPU.
pub fn fast_path_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the host can run the integer path (`int8_activations`):
/// AVX-512 with VNNI (`vpdpbusd`) and VBMI (byte permutes and
/// `vpmultishiftqb`). Kernels are compiled for the host CPU.
pub fn int8_path_available() -> bool {
    fast::int8::available()
}

/// A module holding only `shape`'s kernel, named its `kernel_name` (and
/// on the integer path its quantize kernel, named
/// [`ActivationCodes::kernel_name`]), for benchmarks and tests that call
/// kernels through the C interface.
pub fn standalone_module<'c>(shape: &MatmulShape, context: &'c melior::Context) -> melior::ir::Module<'c> {
    standalone_module_with(shape, context, fast_path_available())
}

fn standalone_module_with<'c>(shape: &MatmulShape, context: &'c melior::Context, fast: bool) -> melior::ir::Module<'c> {
    use melior::ir::Location;
    let location = Location::unknown(context);
    let b = Builder { context, location };
    let module = melior::ir::Module::new(location);
    let types = shape.argument_types(&b);
    let block = Block::new(&types.iter().map(|&t| (t, location)).collect::<Vec<_>>());
    build_with(&b, shape, &block, fast);
    module.body().append_operation(crate::function::kernel_function(&b, &shape.kernel_name(), &types, block));
    if shape.int8_activations {
        let codes = shape.activation_codes();
        let types = codes.argument_types(&b);
        let block = Block::new(&types.iter().map(|&t| (t, location)).collect::<Vec<_>>());
        build_quantize(&b, &codes, &block);
        module.body().append_operation(crate::function::kernel_function(&b, &codes.kernel_name(), &types, block));
    }
    module
}

/// [`standalone_module`] compiled like a model's kernels (the CPU pipeline
/// to the LLVM dialect, LLVM -O3 for the host, linked): the bytes of a
/// shared object exporting `_mlir_ciface_<kernel_name>`.
pub fn standalone_shared_object(shape: &MatmulShape, fast: bool) -> anyhow::Result<Vec<u8>> {
    let q35 = q35_dialect::Q35Context::new()?;
    let module = standalone_module_with(shape, q35.context(), fast && fast_path_available());
    crate::shared_object(&q35, module)
}

/// Fills the quantize kernel's body (arguments: wg, tokens, start, x, codes).
pub fn build_quantize(b: &Builder<'_>, codes: &ActivationCodes, body: &Block<'_>) {
    assert!(int8_path_available(), "the integer path needs AVX-512 VNNI and VBMI (checked by the driver)");
    fast::int8::build_quantize(b, codes, body)
}

/// The kernel's arguments, by role.
struct Args<'c, 'a> {
    tokens: Value<'c, 'a>,
    x: Value<'c, 'a>,
    /// First buffer of each weight matrix (1, or 2 for SwiGlu).
    weights: Vec<usize>,
    residual: Option<Value<'c, 'a>>,
    out: Value<'c, 'a>,
    n_lo: Value<'c, 'a>,
    n_hi: Value<'c, 'a>,
}

/// Fills the kernel body `body` (arguments: wg, tokens, start, buffers...).
pub fn build(b: &Builder<'_>, shape: &MatmulShape, body: &Block<'_>) {
    build_with(b, shape, body, fast_path_available())
}

/// [`build`], choosing the fast path (`fast`, AVX-512 only) or the portable one.
pub fn build_with(b: &Builder<'_>, shape: &MatmulShape, body: &Block<'_>, fast: bool) {
    let b = *b;
    let per = shape.weight_buffers();
    let weights: Vec<usize> = (0..shape.epilogue.weights()).map(|i| FIRST_BUFFER + 1 + i * per).collect();
    let after = FIRST_BUFFER + 1 + weights.len() * per;
    let rows = b.index(body, shape.rows_per_workgroup as i64);
    let n_lo = b.muli(body, arg(body, 0), rows);
    let n_end = b.addi(body, n_lo, rows);
    let n_total = b.index(body, shape.n as i64);
    let n_hi = b.minui(body, n_end, n_total);
    let args = Args {
        tokens: arg(body, 1),
        x: arg(body, FIRST_BUFFER),
        weights,
        residual: (shape.epilogue == Epilogue::AddResidual).then(|| arg(body, after)),
        out: arg(body, body.argument_count() - 1),
        n_lo,
        n_hi,
    };
    match shape.quant {
        _ if shape.linalg_body() => linalg::build(&b, shape, body, &args),
        QuantKind::F16 | QuantKind::F32 => portable(&b, shape, body, &args),
        _ if shape.int8_activations => {
            assert!(int8_path_available(), "the integer path needs AVX-512 VNNI and VBMI (checked by the driver)");
            fast::int8::build(&b, shape, body, &args)
        }
        _ if fast => fast::build(&b, shape, body, &args),
        _ => portable(&b, shape, body, &args),
    }
}

/// Applies the epilogue to the dots of (m, n) and stores the result.
fn finish<'c>(b: &Builder<'c>, block: &Block<'c>, shape: &MatmulShape, args: &Args<'c, '_>, dots: &[Value<'c, '_>], m: Value<'c, '_>, n: Value<'c, '_>) {
    store_epilogue(b, block, shape.epilogue, dots, args.residual, args.out, m, n, Exp::Inline);
}

/// The portable kernel: for each row and token, one dot per weight matrix
/// (coded groups decoded into a stack buffer first), then the epilogue.
fn portable<'c>(b: &Builder<'c>, shape: &MatmulShape, body: &Block<'c>, args: &Args<'c, '_>) {
    let one = b.index(body, 1);
    let zero = b.index(body, 0);
    let layout = Layout::new(shape.quant, shape.group, shape.k);
    let wbuf = match shape.quant {
        QuantKind::F16 | QuantKind::F32 => None,
        _ => Some(b.alloca_f32(body, layout.group_width().max(1))),
    };
    let row_loop = b.loop_body(&[]);
    {
        let n = arg(&row_loop, 0);
        let tok = b.loop_body(&[]);
        {
            let m = arg(&tok, 0);
            let dots: Vec<Value> = args
                .weights
                .iter()
                .map(|&w| match wbuf {
                    None => float_dot(b, shape, &tok, n, m, args.x, arg(body, w)),
                    Some(wbuf) => coded_row(b, shape, &layout, &tok, n, RowUse::Dot { m, x: args.x }, body, w, wbuf, args.out)
                        .expect("a dot returns its value"),
                })
                .collect();
            finish(b, &tok, shape, args, &dots, m, n);
            b.yield_(&tok, &[]);
        }
        b.for_op(&row_loop, zero, args.tokens, one, &[], tok);
        b.yield_(&row_loop, &[]);
    }
    b.for_op(body, args.n_lo, args.n_hi, one, &[], row_loop);
}

/// Σ_k x[m, k] · w[n·K + k] for pass-through weights.
fn float_dot<'c, 'b>(
    b: &Builder<'c>,
    shape: &MatmulShape,
    block: &'b Block<'c>,
    n: Value<'c, '_>,
    m: Value<'c, '_>,
    x: Value<'c, '_>,
    w: Value<'c, '_>,
) -> Value<'c, 'b> {
    let zero = b.index(block, 0);
    let one = b.index(block, 1);
    let k_total = b.index(block, shape.k as i64);
    let base = b.muli(block, n, k_total);
    let fzero = b.f32(block, 0.0);
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
    let looped = b.for_op(block, zero, k_total, one, &[fzero], dot);
    looped.result(0).expect("one result").into()
}

/// One row of a coded weight (buffers from `first`): for a dot, decode each
/// group into `wbuf` and return Σ over groups of its dot with token m's
/// activations; for a copy, write the decoded row to out[m, :].
#[allow(clippy::too_many_arguments)]
fn coded_row<'c, 'b>(
    b: &Builder<'c>,
    shape: &MatmulShape,
    layout: &Layout,
    block: &'b Block<'c>,
    n: Value<'c, '_>,
    use_: RowUse<'c, '_>,
    kernel: &Block<'c>,
    first: usize,
    wbuf: Value<'c, '_>,
    out: Value<'c, '_>,
) -> Option<Value<'c, 'b>> {
    let w = first;
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
    };
    let dot = matches!(use_, RowUse::Dot { .. });
    let carried: Vec<Type> = if dot { vec![b.f32_type()] } else { vec![] };
    let mut total: Option<Value<'c, 'b>> = if dot { Some(b.f32(block, 0.0)) } else { None };
    let width = layout.group_width();
    let full_groups = if layout.cols() % width == 0 { groups } else { groups - 1 };
    if full_groups > 0 {
        let zero = b.index(block, 0);
        let one = b.index(block, 1);
        let upper = b.index(block, full_groups as i64);
        let body = b.loop_body(&carried);
        {
            let g = arg(&body, 0);
            let block_bytes = b.index(&body, layout.block_len(0) as i64);
            let offset = b.muli(&body, g, block_bytes);
            let w = b.index(&body, width as i64);
            let k0 = b.muli(&body, g, w);
            let partial = ctx.group(b, &body, g, offset, k0, width);
            match partial {
                Some(p) => {
                    let sum = with_flags(b, &body, "arith.addf", arg(&body, 1), p);
                    b.yield_(&body, &[sum]);
                }
                None => b.yield_(&body, &[]),
            }
        }
        let init: Vec<Value> = total.into_iter().collect();
        let looped = b.for_op(block, zero, upper, one, &init, body);
        total = if dot { Some(looped.result(0).expect("one result").into()) } else { None };
    }
    if full_groups < groups {
        let g = groups - 1;
        let gv = b.index(block, g as i64);
        let offset = b.index(block, layout.block_offset(g) as i64);
        let k0 = b.index(block, (g * width) as i64);
        if let Some(p) = ctx.group(b, block, gv, offset, k0, layout.cols() - g * width) {
            total = Some(with_flags(b, block, "arith.addf", total.expect("dot total"), p));
        }
    }
    total
}

/// What a decoded row is for.
#[derive(Clone, Copy)]
enum RowUse<'c, 'a> {
    /// x[m, :] · row for token m (a matmul).
    Dot { m: Value<'c, 'a>, x: Value<'c, 'a> },
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
}

impl<'c> GroupCtx<'c, '_> {
    /// Decodes the group of `width` weights whose block starts `offset`
    /// bytes into the row, then returns its dot product from column k0 (a
    /// dot) or copies it (an embedding).
    fn group<'b>(&self, b: &Builder<'c>, block: &'b Block<'c>, g: Value<'c, '_>, offset: Value<'c, '_>, k0: Value<'c, '_>, width: usize) -> Option<Value<'c, 'b>> {
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
            RowUse::Dot { m, x } => Some(self.dot(b, block, k0, width, m, x)),
            RowUse::Copy { m } => {
                self.copy(b, block, k0, width, m);
                None
            }
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

    /// Σ_i x[m, k0 + i] · wbuf[i].
    fn dot<'b>(&self, b: &Builder<'c>, block: &'b Block<'c>, k0: Value<'c, '_>, width: usize, m: Value<'c, '_>, x: Value<'c, '_>) -> Value<'c, 'b> {
        let zero = b.index(block, 0);
        let one = b.index(block, 1);
        let upper = b.index(block, width as i64);
        let fzero = b.f32(block, 0.0);
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
        let looped = b.for_op(block, zero, upper, one, &[fzero], dot);
        looped.result(0).expect("one result").into()
    }
}

/// The embedding lookup kernel for a table of `shape.n` rows of `shape.k`
/// (`rows_per_workgroup` unused): one workgroup per token,
/// `(wg, tokens, start, ids: memref<?xi32>, table..., out: memref<?xKxf32>)`.
/// Token ids are checked against the vocabulary by the runtime before any
/// dispatch runs.
pub fn build_embedding(b: &Builder<'_>, shape: &MatmulShape, body: &Block<'_>) {
    let b = *b;
    if shape.linalg_body() {
        return linalg::build_embedding(&b, shape, body);
    }
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
            coded_row(&b, shape, &layout, body, n, RowUse::Copy { m }, body, FIRST_BUFFER + 1, wbuf, out);
        }
    }
}

mod linalg;

mod fast;

