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

use super::builder::{arg, push, Builder};
use super::FIRST_BUFFER;
use melior::dialect::arith;
use melior::ir::{
    attribute::Attribute,
    block::BlockLike,
    Block, Type, Value,
};
use q35_format::{block_bytes, GroupSize, Layout, QuantKind};

/// What a matmul kernel does with its dot products before storing them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// `out = x·Wᵀ`.
    None,
    /// `out = residual + x·Wᵀ`.
    AddResidual,
    /// `out = silu(x·Wgateᵀ) · (x·Wupᵀ)`.
    SwiGlu,
}

impl Epilogue {
    /// Suffix of the kernel name.
    pub fn suffix(&self) -> &'static str {
        match self {
            Epilogue::None => "",
            Epilogue::AddResidual => "_add",
            Epilogue::SwiGlu => "_swiglu",
        }
    }

    /// Weight matrices the kernel reads.
    pub fn weights(&self) -> usize {
        if *self == Epilogue::SwiGlu {
            2
        } else {
            1
        }
    }
}

/// The static shape of one matmul kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatmulShape {
    pub n: usize,
    pub k: usize,
    pub quant: QuantKind,
    pub group: GroupSize,
    /// Output rows per workgroup.
    pub rows_per_workgroup: usize,
    pub epilogue: Epilogue,
    /// The integer path (coded weights only): activations quantized to
    /// int8 per group (`q35_format::activations`), codes times codes in
    /// int32.
    pub int8_activations: bool,
    /// The kernel is `linalg.generic` ops ([`linalg`]) where the shape has
    /// a linalg form, instead of loops and vectors written here.
    pub linalg: bool,
}

impl MatmulShape {
    /// A plain matmul (no epilogue).
    pub fn new(n: usize, k: usize, quant: QuantKind, group: GroupSize, rows_per_workgroup: usize) -> Self {
        Self {
            n,
            k,
            quant,
            group,
            rows_per_workgroup,
            epilogue: Epilogue::None,
            int8_activations: false,
            linalg: false,
        }
    }

    /// Whether the kernel is built from linalg ops.
    pub fn linalg_body(&self) -> bool {
        self.linalg && !self.int8_activations && linalg::supports(self)
    }

    pub fn workgroups(&self) -> usize {
        self.n.div_ceil(self.rows_per_workgroup)
    }

    /// Kernel name, unique per shape.
    pub fn kernel_name(&self) -> String {
        format!(
            "dequant_matmul_{}{}_{}x{}_g{}_r{}{}{}",
            if self.int8_activations { "i8_" } else { "" },
            self.quant,
            self.n,
            self.k,
            self.group,
            self.rows_per_workgroup,
            // Before the epilogue, which tools read from the end.
            if self.linalg_body() { "_linalg" } else { "" },
            self.epilogue.suffix()
        )
    }

    /// Memref arguments per weight matrix.
    pub fn weight_buffers(&self) -> usize {
        match self.quant {
            QuantKind::F16 | QuantKind::F32 => 1,
            _ => 4,
        }
    }

    /// Buffer argument types (after the scalars).
    pub fn buffer_types<'c>(&self, b: &Builder<'c>) -> Vec<Type<'c>> {
        let parse = |t: &str| Type::parse(b.context, t).expect("valid memref type");
        let input = if self.int8_activations {
            ActivationCodes::of(self).memref_type()
        } else {
            format!("memref<?x{}xf32>", self.k)
        };
        let mut types = vec![parse(&input)];
        for _ in 0..self.epilogue.weights() {
            match self.quant {
                QuantKind::F16 => types.push(parse("memref<?xf16>")),
                QuantKind::F32 => types.push(parse("memref<?xf32>")),
                _ => types.extend(["memref<?xi8>", "memref<?xf16>", "memref<?xi8>", "memref<?xf16>"].map(parse)),
            }
        }
        if self.epilogue == Epilogue::AddResidual {
            types.push(parse(&format!("memref<?x{}xf32>", self.n)));
        }
        types.push(parse(&format!("memref<?x{}xf32>", self.n)));
        types
    }

    /// The kernel's function argument types, scalars included.
    pub fn argument_types<'c>(&self, b: &Builder<'c>) -> Vec<Type<'c>> {
        let mut types = vec![b.index_type(); FIRST_BUFFER];
        types.extend(self.buffer_types(b));
        types
    }

    /// A module holding only this kernel, named [`Self::kernel_name`] (and
    /// on the integer path its quantize kernel, named
    /// [`ActivationCodes::kernel_name`]), for benchmarks and tests that
    /// call kernels through the C interface.
    pub fn standalone_module<'c>(&self, context: &'c melior::Context) -> melior::ir::Module<'c> {
        self.standalone_module_with(context, fast_path_available())
    }

    fn standalone_module_with<'c>(&self, context: &'c melior::Context, fast: bool) -> melior::ir::Module<'c> {
        use melior::ir::Location;
        let location = Location::unknown(context);
        let b = Builder { context, location };
        let module = melior::ir::Module::new(location);
        let types = self.argument_types(&b);
        let block = Block::new(&types.iter().map(|&t| (t, location)).collect::<Vec<_>>());
        build_with(&b, self, &block, fast);
        module.body().append_operation(super::kernel_function(&b, &self.kernel_name(), &types, block));
        if self.int8_activations {
            let codes = ActivationCodes::of(self);
            let types = codes.argument_types(&b);
            let block = Block::new(&types.iter().map(|&t| (t, location)).collect::<Vec<_>>());
            build_quantize(&b, &codes, &block);
            module.body().append_operation(super::kernel_function(&b, &codes.kernel_name(), &types, block));
        }
        module
    }

    /// [`Self::standalone_module`] compiled like a model's kernels (the CPU
    /// pipeline to the LLVM dialect, LLVM -O3 for the host, linked): the
    /// bytes of a shared object exporting `_mlir_ciface_<kernel_name>`.
    pub fn standalone_shared_object(&self, fast: bool) -> anyhow::Result<Vec<u8>> {
        let q35 = q35_dialect::Q35Context::new()?;
        let module = self.standalone_module_with(q35.context(), fast && fast_path_available());
        super::shared_object(&q35, module)
    }
}

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

pub use fast::int8::ActivationCodes;

impl ActivationCodes {
    /// Buffer argument types (after the scalars): x, then the codes.
    pub fn buffer_types<'c>(&self, b: &Builder<'c>) -> Vec<Type<'c>> {
        let parse = |t: &str| Type::parse(b.context, t).expect("valid memref type");
        vec![parse(&format!("memref<?x{}xf32>", self.k)), parse(&self.memref_type())]
    }

    /// The quantize kernel's function argument types, scalars included.
    pub fn argument_types<'c>(&self, b: &Builder<'c>) -> Vec<Type<'c>> {
        let mut types = vec![b.index_type(); FIRST_BUFFER];
        types.extend(self.buffer_types(b));
        types
    }
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
    store_epilogue(b, block, shape.epilogue, dots, args.residual, args.out, m, n, super::elementwise::Exp::Inline);
}

/// `out[m, n]` from the dots of (m, n) (one per weight) after `epilogue`:
/// the dot, `residual[m, n]` plus it, or `silu(gate)·up`. The CPU and GPU
/// matmul kernels share it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_epilogue<'c>(
    b: &Builder<'c>,
    block: &Block<'c>,
    epilogue: Epilogue,
    dots: &[Value<'c, '_>],
    residual: Option<Value<'c, '_>>,
    out: Value<'c, '_>,
    m: Value<'c, '_>,
    n: Value<'c, '_>,
    exp: super::elementwise::Exp,
) {
    let value = match epilogue {
        Epilogue::None => dots[0],
        Epilogue::AddResidual => {
            let residual = b.load(block, residual.expect("residual buffer"), &[m, n]);
            b.addf(block, residual, dots[0])
        }
        Epilogue::SwiGlu => {
            let silu = super::elementwise::silu(b, block, dots[0], exp);
            b.mulf(block, silu, dots[1])
        }
    };
    b.store(block, value, out, &[m, n]);
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

/// The AVX-512 kernel for coded weights (see the module doc).
mod fast {
    use super::*;

    /// Lanes of every decode vector (one `vpermps` on a zmm register).
    const LANES: usize = 16;
    /// How far ahead of the group being decoded its row's code stream is
    /// prefetched (rows of a workgroup are back to back), in rows: enough
    /// bytes in flight to cover memory latency at the decode rate, few
    /// enough rows that little of it spills past the workgroup into rows
    /// another thread reads. Measured on Zen 5 (GEMV benchmark, int8
    /// path, one thread): 4096x4096 (1888-byte rows) runs 330 us at 4 KiB
    /// ahead, 195-200 us at 16-32 KiB; 16384x576 (266-byte rows, 128 rows
    /// a workgroup) is best at ~4 KiB and, at 16 KiB, runs slower on two
    /// threads than on one.
    const PREFETCH_ROWS: usize = 16;

    /// [`PREFETCH_ROWS`] rows of `layout`, in bytes, at least 4 KiB.
    fn prefetch_bytes(layout: &Layout) -> usize {
        (PREFETCH_ROWS * layout.row_bytes()).clamp(4096, 32768)
    }

    /// f32s per parameter array in the parameter scratch: the groups,
    /// rounded up to whole vectors.
    fn param_stride(groups: usize) -> usize {
        groups.div_ceil(LANES) * LANES
    }

    pub(super) mod int8;

    /// Rows computed together in decode.
    const ROW_BLOCK: usize = 4;

    /// Tokens that share each decoded vector in prefill.
    const TOKEN_BLOCK: usize = 4;
    /// `vpermps zmm`: lane i of the result is table[index[i] mod 16].
    const PERMUTE: &str = "llvm.x86.avx512.permvar.sf.512";
    /// `vpternlogd zmm`: any bitwise function of three vectors.
    const TERNARY_LOGIC: &str = "llvm.x86.avx512.pternlog.d.512";
    /// The `vpternlogd` truth table of `c ? a : b` (bit a·4 + b·2 + c).
    const SELECT_LOW_BITS: i64 = 0xE4;

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Plane {
        /// 4-bit codes, two per byte.
        Nib,
        /// 3-bit codes: four `lo2` fields per byte plus one `hi1` bit each.
        Three,
    }

    /// One permute: which code each lane decodes and which column it
    /// multiplies.
    #[derive(Debug)]
    struct Slot {
        /// Right shift of the lane's code byte that brings its field to bit 0.
        shift: [i32; LANES],
        /// 3-bit codes: right shift of (hi byte << 2) that brings the hi bit to bit 2.
        hi_shift: [i32; LANES],
        /// Column within the group, or `None` for a lane with no code.
        cols: [Option<usize>; LANES],
    }

    /// One load of plane bytes, widened to 16 lanes.
    #[derive(Debug)]
    struct Chunk {
        plane: Plane,
        /// Offset in the group's block of the first byte loaded, and the count.
        at: usize,
        len: usize,
        /// Widening shuffle: lane -> loaded byte.
        lanes: [i32; LANES],
        /// 3-bit codes: the `hi1` bytes loaded and their widening shuffle.
        hi_at: usize,
        hi_len: usize,
        hi_lanes: [i32; LANES],
        slots: Vec<Slot>,
    }

    /// `len` bytes as loads of 16, then 8, 4, 2, 1 bytes: (offset, length).
    /// Each offset is a multiple of its length.
    fn pieces(len: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        for size in [16, 8, 4, 2, 1] {
            while len - at >= size && (size == 16 || len - at < 2 * size) {
                out.push((at, size));
                at += size;
            }
        }
        debug_assert_eq!(at, len);
        out
    }

    /// The decode plan of a group of `n` columns.
    fn plan(quant: QuantKind, n: usize) -> Vec<Chunk> {
        let (n4, n3) = quant.code_counts(n).expect("coded kind");
        type Column = fn(usize) -> usize;
        let (elem4, elem3): (Column, Column) = match quant {
            QuantKind::Q35 => (|j| 2 * j, |j| 2 * j + 1),
            _ => (|j| j, |j| j),
        };
        let nib_len = n4.div_ceil(2);
        let lo_len = n3.div_ceil(4);
        let hi_plane = nib_len + lo_len;
        debug_assert!(quant != QuantKind::Q35 || nib_len + lo_len + n3.div_ceil(8) == block_bytes(n));
        let mut chunks = Vec::new();
        for (b0, v) in pieces(nib_len) {
            let replicas = LANES / v;
            let mut slots = Vec::new();
            for s in 0..2usize.div_ceil(replicas) {
                let mut slot = Slot { shift: [0; LANES], hi_shift: [0; LANES], cols: [None; LANES] };
                for l in 0..LANES {
                    let f = s * replicas + l / v;
                    let j = 2 * (b0 + l % v) + f;
                    if f < 2 && j < n4 {
                        slot.shift[l] = 4 * f as i32;
                        slot.cols[l] = Some(elem4(j));
                    }
                }
                slots.push(slot);
            }
            chunks.push(Chunk {
                plane: Plane::Nib,
                at: b0,
                len: v,
                lanes: std::array::from_fn(|l| (l % v) as i32),
                hi_at: 0,
                hi_len: 0,
                hi_lanes: [0; LANES],
                slots,
            });
        }
        for (b0, v) in pieces(lo_len) {
            let replicas = LANES / v;
            let hb0 = b0 / 2;
            let hi_len = (b0 + v - 1) / 2 - hb0 + 1;
            let mut slots = Vec::new();
            for s in 0..4usize.div_ceil(replicas) {
                let mut slot = Slot { shift: [0; LANES], hi_shift: [0; LANES], cols: [None; LANES] };
                for l in 0..LANES {
                    let t = s * replicas + l / v;
                    let byte = b0 + l % v;
                    let j = 4 * byte + t;
                    if t < 4 && j < n3 {
                        slot.shift[l] = 2 * t as i32;
                        slot.hi_shift[l] = (4 * (byte % 2) + t) as i32;
                        slot.cols[l] = Some(elem3(j));
                    }
                }
                slots.push(slot);
            }
            chunks.push(Chunk {
                plane: Plane::Three,
                at: nib_len + b0,
                len: v,
                lanes: std::array::from_fn(|l| (l % v) as i32),
                hi_at: hi_plane + hb0,
                hi_len,
                hi_lanes: std::array::from_fn(|l| ((b0 + l % v) / 2 - hb0) as i32),
                slots,
            });
        }
        chunks
    }

    fn slot_count(plan: &[Chunk]) -> usize {
        plan.iter().map(|c| c.slots.len()).sum()
    }

    /// One weight matrix's per-row values.
    struct Row<'c, 'a> {
        /// Byte address of the row's codes (i64).
        row_addr: Value<'c, 'a>,
        /// Byte address (i64) of the row's decoded group parameters in
        /// the parameter scratch: s4, then s3, then min, `groups` f32 each.
        params: Value<'c, 'a>,
    }

    /// The coded weight rows a row block reads, (row, weight) in order:
    /// `row(set, n, weight, row_addr, range_scale)` for each, with the byte
    /// address (i64) of row n's codes in the weight whose first buffer is
    /// argument `weight` of the kernel, and its range scale (f32).
    fn row_sets<'c, 'b, R>(
        b: &Builder<'c>,
        block: &'b Block<'c>,
        kernel: &Block<'c>,
        args: &Args<'c, '_>,
        layout: &Layout,
        ns: &[Value<'c, '_>],
        row: impl Fn(usize, Value<'c, '_>, usize, Value<'c, 'b>, Value<'c, 'b>) -> R,
    ) -> Vec<R> {
        ns.iter()
            .flat_map(|&n| args.weights.iter().map(move |&w| (n, w)))
            .enumerate()
            .map(|(set, (n, w))| {
                let rs_raw = b.load(block, arg(kernel, w + 3), &[n]);
                let rs = b.extf(block, rs_raw);
                let base = b.address(block, arg(kernel, w));
                let n64 = to_i64(b, block, n);
                let row_bytes = i64c(b, block, layout.row_bytes());
                let off = b.muli(block, n64, row_bytes);
                let row_addr = b.addi(block, base, off);
                row(set, n, w, row_addr, rs)
            })
            .collect()
    }

    fn i64c<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, v: usize) -> Value<'c, 'b> {
        b.int(block, 64, v as i64)
    }

    fn to_i64<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, v: Value<'c, '_>) -> Value<'c, 'b> {
        b.index_cast(block, v, b.int_type(64))
    }

    fn zeros<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, lanes: usize, elem: &str) -> Value<'c, 'b> {
        let zero = if elem.starts_with('f') { "0.0" } else { "0" };
        let attr = Attribute::parse(b.context, &format!("dense<{zero}> : vector<{lanes}x{elem}>")).expect("valid splat");
        push(block, arith::constant(b.context, attr, b.location))
    }

    /// A layout's count of full groups, and `plan(columns)` of a full group
    /// and of the partial last group, if there is one.
    fn group_plans<T>(layout: &Layout, plan: impl Fn(usize) -> T) -> (usize, T, Option<T>) {
        let width = layout.group_width();
        let groups = layout.groups();
        let full_groups = if layout.cols() % width == 0 { groups } else { groups - 1 };
        let tail = (full_groups < groups).then(|| plan(layout.cols() - full_groups * width));
        (full_groups, plan(width), tail)
    }

    pub(super) fn build<'c>(b: &Builder<'c>, shape: &MatmulShape, body: &Block<'c>, args: &Args<'c, '_>) {
        let layout = Layout::new(shape.quant, shape.group, shape.k);
        let groups = layout.groups();
        let (full_groups, full_plan, tail_plan) = group_plans(&layout, |n| plan(shape.quant, n));
        let per_group = slot_count(&full_plan);
        let slots = full_groups * per_group + tail_plan.as_deref().map_or(0, slot_count);
        let scratch = b.alloca_f32_aligned(body, TOKEN_BLOCK * slots * LANES, 64);
        let params = b.alloca_f32_aligned(body, 3 * param_stride(groups) * shape.epilogue.weights() * ROW_BLOCK, 64);
        let geo = Geometry {
            shape,
            layout,
            full_groups,
            full_plan,
            tail_plan,
            per_group,
            token_bytes: slots * LANES * 4,
            scratch: b.address(body, scratch),
            params: b.address(body, params),
            x: b.address(body, args.x),
        };
        for_token_blocks(b, body, args, |block, count, m0| geo.pass(b, block, body, args, count, m0));
    }

    /// Calls `pass(block, count, m0)` for tokens m0 .. m0 + count: blocks of
    /// [`TOKEN_BLOCK`] tokens (prefill), then the rest one at a time.
    fn for_token_blocks<'c>(b: &Builder<'c>, body: &Block<'c>, args: &Args<'c, '_>, pass: impl Fn(&Block<'c>, usize, Value<'c, '_>)) {
        let zero = b.index(body, 0);
        b.for_runs(body, zero, args.tokens, TOKEN_BLOCK, |block, ms| pass(block, ms.len(), ms[0]));
    }

    /// Calls `row(block, ns)` for the workgroup's rows: decode (`count ==
    /// 1`) takes [`ROW_BLOCK`] rows at a time (independent dependency
    /// chains for the out-of-order core, shared activation loads), then the
    /// rest one by one; prefill takes one row at a time for `count` tokens.
    fn for_row_blocks<'c>(b: &Builder<'c>, block: &Block<'c>, args: &Args<'c, '_>, count: usize, row: impl Fn(&Block<'c>, &[Value<'c, '_>])) {
        let rows = if count == 1 { ROW_BLOCK } else { 1 };
        b.for_runs(block, args.n_lo, args.n_hi, rows, row);
    }

    /// Where group g of a row is, as i64 values: its index, the byte
    /// offset of its code block in a row, of its first column in an
    /// activation row (f32), and of its slots in a token's scratch; and its
    /// columns.
    struct GroupAt<'c, 'a> {
        width: usize,
        g: Value<'c, 'a>,
        block_off: Value<'c, 'a>,
        x_off: Value<'c, 'a>,
        slots_off: Value<'c, 'a>,
    }

    /// Calls `each(block, at, plan, carried)` for every group of `layout`:
    /// the `full_groups` full groups (plan `full`) in an `scf.for` whose
    /// iterations carry `init` (`each` returns the next values), then the
    /// tail group (plan `tail`) on the loop's results. A group's slots take
    /// `slot_bytes` of a token's scratch. Returns the final values.
    #[allow(clippy::too_many_arguments)]
    fn for_groups<'c, 'a, T>(
        b: &Builder<'c>,
        block: &'a Block<'c>,
        layout: &Layout,
        full_groups: usize,
        full: &T,
        tail: Option<&T>,
        slot_bytes: usize,
        init: Vec<Value<'c, 'a>>,
        each: impl for<'b> Fn(&'b Block<'c>, &GroupAt<'c, 'b>, &T, Vec<Value<'c, 'b>>) -> Vec<Value<'c, 'b>>,
    ) -> Vec<Value<'c, 'a>> {
        let mut values = init;
        let types: Vec<Type<'c>> = values.iter().map(melior::ir::ValueLike::r#type).collect();
        if full_groups > 0 {
            let zero = b.index(block, 0);
            let one = b.index(block, 1);
            let upper = b.index(block, full_groups as i64);
            let body = b.loop_body(&types);
            {
                let g = to_i64(b, &body, arg(&body, 0));
                let carried: Vec<Value> = (0..types.len()).map(|i| arg(&body, i + 1)).collect();
                let at = |per: usize| {
                    let per = i64c(b, &body, per);
                    b.muli(&body, g, per)
                };
                let group = GroupAt {
                    width: layout.group_width(),
                    g,
                    block_off: at(layout.block_len(0)),
                    x_off: at(layout.group_width() * 4),
                    slots_off: at(slot_bytes),
                };
                let next = each(&body, &group, full, carried);
                b.yield_(&body, &next);
            }
            let looped = b.for_op(block, zero, upper, one, &values, body);
            values = (0..types.len()).map(|i| looped.result(i).expect("carried").into()).collect();
        }
        if let Some(tail) = tail {
            let group = GroupAt {
                width: layout.cols() - full_groups * layout.group_width(),
                g: i64c(b, block, full_groups),
                block_off: i64c(b, block, layout.block_offset(full_groups)),
                x_off: i64c(b, block, full_groups * layout.group_width() * 4),
                slots_off: i64c(b, block, full_groups * slot_bytes),
            };
            values = each(block, &group, tail, values);
        }
        values
    }

    /// Byte address (i64) of token m's row of the activations at `x` (K
    /// f32s per row).
    fn x_row<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, x: Value<'c, '_>, k: usize, m: Value<'c, '_>) -> Value<'c, 'b> {
        let row = b.index(block, k as i64);
        let mk = b.muli(block, m, row);
        let mk = to_i64(b, block, mk);
        let four = i64c(b, block, 4);
        let offset = b.muli(block, mk, four);
        b.addi(block, x, offset)
    }

    struct Geometry<'s, 'c, 'a> {
        shape: &'s MatmulShape,
        layout: Layout,
        full_groups: usize,
        full_plan: Vec<Chunk>,
        tail_plan: Option<Vec<Chunk>>,
        per_group: usize,
        token_bytes: usize,
        /// Byte addresses (i64) of the scratch and of x.
        scratch: Value<'c, 'a>,
        params: Value<'c, 'a>,
        x: Value<'c, 'a>,
    }

    impl<'c> Geometry<'_, 'c, '_> {
        /// Tokens m0 .. m0 + count: permute their activations into the
        /// scratch, then compute every row of the workgroup.
        fn pass(&self, b: &Builder<'c>, block: &Block<'c>, kernel: &Block<'c>, args: &Args<'c, '_>, count: usize, m0: Value<'c, '_>) {
            for t in 0..count {
                let tv = b.index(block, t as i64);
                let m = b.addi(block, m0, tv);
                self.prepare(b, block, m, t);
            }
            for_row_blocks(b, block, args, count, |block, ns| self.row(b, block, kernel, args, count, m0, ns));
        }

        /// Scratch slot s of token t: x[m, k0 + cols[l]] in lane l (0 where none).
        fn prepare(&self, b: &Builder<'c>, block: &Block<'c>, m: Value<'c, '_>, t: usize) {
            let x_row = x_row(b, block, self.x, self.layout.cols(), m);
            let token_base = i64c(b, block, t * self.token_bytes);
            let scratch = b.addi(block, self.scratch, token_base);
            let slot_bytes = self.per_group * LANES * 4;
            for_groups(b, block, &self.layout, self.full_groups, &self.full_plan, self.tail_plan.as_ref(), slot_bytes, Vec::new(), |body, at, plan, _| {
                let x_group = b.addi(body, x_row, at.x_off);
                let s_group = b.addi(body, scratch, at.slots_off);
                prepare_group(b, body, plan, x_group, s_group);
                Vec::new()
            });
        }

        /// Decodes row n's group parameters of weight `set` into the
        /// parameter scratch, vectorized over groups: s4 = fl(range/15),
        /// s3 = fl(range/7), min, with range = range_scale·code (exact).
        /// Returns the row's address there.
        #[allow(clippy::too_many_arguments)]
        fn row_params<'b>(
            &self,
            b: &Builder<'c>,
            block: &'b Block<'c>,
            set: usize,
            n: Value<'c, '_>,
            rs: Value<'c, '_>,
            mins: Value<'c, '_>,
            range_codes: Value<'c, '_>,
        ) -> Value<'c, 'b> {
            let groups = self.layout.groups();
            let stride = param_stride(groups);
            let base = i64c(b, block, set * 3 * stride * 4);
            let out = b.addi(block, self.params, base);
            let (mins_at, codes_at) = row_param_streams(b, block, &self.layout, n, mins, range_codes);
            let mut g0 = 0;
            while g0 < groups {
                // 16 groups at a time; the last vector's extra lanes are
                // masked off the loads (never read past the row's
                // parameters) and land in the scratch's padding.
                let GroupSteps { count, s4, s3, min, .. } = group_steps(b, block, groups, g0, rs, mins_at, codes_at);
                for (which, value) in [s4, s3, min].into_iter().enumerate() {
                    let at = i64c(b, block, (which * stride + g0) * 4);
                    let at = b.addi(block, out, at);
                    b.store_at(block, value, at, 4);
                }
                g0 += count;
            }
            out
        }

        /// Row n for tokens m0 .. m0 + count.
        #[allow(clippy::too_many_arguments)]
        fn row(&self, b: &Builder<'c>, block: &Block<'c>, kernel: &Block<'c>, args: &Args<'c, '_>, count: usize, m0: Value<'c, '_>, ns: &[Value<'c, '_>]) {
            let layout = &self.layout;
            let weights = args.weights.len();
            let sets: Vec<Row> = row_sets(b, block, kernel, args, layout, ns, |set, n, w, row_addr, rs| Row {
                row_addr,
                params: self.row_params(b, block, set, n, rs, arg(kernel, w + 1), arg(kernel, w + 2)),
            });
            let per_token = if count == 1 { 2 } else { 1 };
            let acc_count = sets.len() * count * per_token;
            let zero_acc = zeros(b, block, LANES, "f32");
            let slot_bytes = self.per_group * LANES * 4;
            let accs = for_groups(b, block, layout, self.full_groups, &self.full_plan, self.tail_plan.as_ref(), slot_bytes, vec![zero_acc; acc_count], |body, at, plan, carried| {
                let s_group = b.addi(body, self.scratch, at.slots_off);
                self.group(b, body, plan, &sets, at.g, at.block_off, s_group, count, per_token, carried)
            });
            // One vector per (set, token): its chains added.
            let chained: Vec<Value> = accs
                .chunks(per_token)
                .map(|chains| chains[1..].iter().fold(chains[0], |sum, &a| with_flags(b, block, "arith.addf", sum, a)))
                .collect();
            let sums = b.reduce_add_each(block, &chained);
            for (r, &n) in ns.iter().enumerate() {
                for t in 0..count {
                    let tv = b.index(block, t as i64);
                    let m = b.addi(block, m0, tv);
                    let dots: Vec<Value> = (r * weights..(r + 1) * weights).map(|set| sums[set * count + t]).collect();
                    finish(b, block, self.shape, args, &dots, m, n);
                }
            }
        }

        /// Adds group g (an i64; its block `block_off` bytes into each row, scratch at
        /// `s_group`) to the accumulators, ordered (set, token, chain).
        #[allow(clippy::too_many_arguments)]
        fn group<'b>(
            &self,
            b: &Builder<'c>,
            block: &'b Block<'c>,
            plan: &[Chunk],
            sets: &[Row<'c, '_>],
            g: Value<'c, '_>,
            block_off: Value<'c, '_>,
            s_group: Value<'c, '_>,
            count: usize,
            per_token: usize,
            mut accs: Vec<Value<'c, 'b>>,
        ) -> Vec<Value<'c, 'b>>
        where
            'c: 'b,
        {
            let vec_f32 = b.vector_type(LANES, "f32");
            let vec_i8 = b.vector_type(LANES, "i8");
            let vec_i32 = b.vector_type(LANES, "i32");
            let has_nib = plan.iter().any(|c| c.plane == Plane::Nib);
            let has_three = plan.iter().any(|c| c.plane == Plane::Three);
            // x·w for every slot: the scratch vectors, loaded once per slot
            // and token (LLVM folds them into the FMAs).
            for (set, row) in sets.iter().enumerate() {
                // s4, s3 and min of group g, from the row's prologue.
                let four = i64c(b, block, 4);
                let g_off = b.muli(block, g, four);
                let at = b.addi(block, row.params, g_off);
                let param = |which: usize| {
                    let off = i64c(b, block, which * param_stride(self.layout.groups()) * 4);
                    let at = b.addi(block, at, off);
                    let scalar = b.load_at(block, at, b.f32_type(), 4);
                    b.splat(block, scalar, LANES)
                };
                let min_v = param(2);
                let table = |which: usize, iota: Vec<f32>| {
                    let s_v = param(which);
                    let q = b.dense(block, "f32", &iota.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>());
                    // fl(min + fl(q·s)): two roundings, as the reference.
                    let scaled = b.mulf(block, q, s_v);
                    b.addf(block, min_v, scaled)
                };
                let t4 = has_nib.then(|| table(0, (0..16).map(|q| q as f32).collect()));
                let t3 = has_three.then(|| table(1, (0..16).map(|q| (q % 8) as f32).collect()));
                let base = b.addi(block, row.row_addr, block_off);
                // One cache line ahead per group (56 bytes of codes at g128).
                let ahead = i64c(b, block, prefetch_bytes(&self.layout));
                let ahead = b.addi(block, base, ahead);
                b.prefetch(block, ahead);
                let mut slot_index = 0;
                let mut chain = 0;
                for chunk in plan {
                    let at = i64c(b, block, chunk.at);
                    let addr = b.addi(block, base, at);
                    // Nib: lane l holds its code byte (zero-extended).
                    // Three: lane l holds its lo2 byte in bits 0..8 and its
                    // hi1 byte in bits 8..16 (bits above: don't care).
                    let lanes = match chunk.plane {
                        Plane::Nib => {
                            let bytes = load_bytes(b, block, addr, chunk.len, &chunk.lanes, vec_i8);
                            push(block, arith::extui(bytes, vec_i32, b.location))
                        }
                        Plane::Three => {
                            let lo = b.load_at(block, addr, b.vector_type(chunk.len, "i8"), 1);
                            let at = i64c(b, block, chunk.hi_at);
                            let addr = b.addi(block, base, at);
                            let hi = b.load_at(block, addr, b.vector_type(chunk.hi_len, "i8"), 1);
                            let hi = if chunk.hi_len < chunk.len {
                                let widen: Vec<i32> = (0..chunk.len as i32).map(|i| if i < chunk.hi_len as i32 { i } else { -1 }).collect();
                                b.shuffle(block, hi, hi, &widen, b.vector_type(chunk.len, "i8"))
                            } else {
                                hi
                            };
                            let mask: Vec<i32> = (0..4 * LANES)
                                .map(|i| match i % 4 {
                                    0 => chunk.lanes[i / 4],
                                    1 => chunk.len as i32 + chunk.hi_lanes[i / 4],
                                    _ => -1,
                                })
                                .collect();
                            let bytes = b.shuffle(block, lo, hi, &mask, b.vector_type(4 * LANES, "i8"));
                            b.bitcast(block, bytes, vec_i32)
                        }
                    };
                    for slot in &chunk.slots {
                        let shifted = if slot.shift.iter().all(|&s| s == 0) {
                            lanes
                        } else {
                            let sh = b.dense(block, "i32", &slot.shift);
                            b.shrui(block, lanes, sh)
                        };
                        let (table, index) = match chunk.plane {
                            Plane::Nib => (t4.expect("4-bit table"), shifted),
                            Plane::Three => {
                                // index = (lo & 3) | (hi & ~3), one bit
                                // select: hi's bit 2 is the code's top bit,
                                // its bit 3 is ignored by the duplicated
                                // 3-bit table, higher bits by vpermps.
                                let sh: Vec<i32> = slot.hi_shift.iter().map(|s| s + 6).collect();
                                let sh = b.dense(block, "i32", &sh);
                                let hi = b.shrui(block, lanes, sh);
                                let three = b.dense(block, "i32", &[3; LANES]);
                                let select = b.int(block, 32, SELECT_LOW_BITS);
                                (t3.expect("3-bit table"), b.intrinsic(block, TERNARY_LOGIC, &[shifted, hi, three, select], vec_i32))
                            }
                        };
                        let w = b.intrinsic(block, PERMUTE, &[table, index], vec_f32);
                        for t in 0..count {
                            let off = i64c(b, block, t * self.token_bytes + slot_index * LANES * 4);
                            let at = b.addi(block, s_group, off);
                            let xs = b.load_at(block, at, vec_f32, 64);
                            let i = (set * count + t) * per_token + chain % per_token;
                            accs[i] = b.fma(block, w, xs, accs[i]);
                        }
                        chain += 1;
                        slot_index += 1;
                    }
                }
            }
            accs
        }
    }

    /// Byte addresses (i64) of row n's f16 mins and u8 range codes, after
    /// prefetching both streams as far ahead (in rows) as the codes.
    fn row_param_streams<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, layout: &Layout, n: Value<'c, '_>, mins: Value<'c, '_>, range_codes: Value<'c, '_>) -> (Value<'c, 'b>, Value<'c, 'b>) {
        let groups = layout.groups();
        let n64 = to_i64(b, block, n);
        let ng = i64c(b, block, groups);
        let first = b.muli(block, n64, ng);
        let mins_at = b.address(block, mins);
        let two = i64c(b, block, 2);
        let off = b.muli(block, first, two);
        let mins_at = b.addi(block, mins_at, off);
        let codes_at = b.address(block, range_codes);
        let codes_at = b.addi(block, codes_at, first);
        // The parameter streams are prefetched as far ahead (in rows) as
        // the codes.
        let rows_ahead = (prefetch_bytes(layout) / layout.row_bytes()).max(1);
        for (at, bytes) in [(mins_at, 2), (codes_at, 1)] {
            let ahead = i64c(b, block, rows_ahead * groups * bytes);
            let ahead = b.addi(block, at, ahead);
            b.prefetch(block, ahead);
        }
        (mins_at, codes_at)
    }

    /// The lane mask of groups g0 .. g0 + count (`count <= LANES`) in a
    /// vector of `count.next_power_of_two()` lanes.
    fn group_mask<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, count: usize) -> Value<'c, 'b> {
        let v = count.next_power_of_two();
        let lanes: Vec<&str> = (0..v).map(|i| if i < count { "true" } else { "false" }).collect();
        b.dense(block, "i1", &lanes)
    }

    /// What [`group_steps`] decodes for up to [`LANES`] groups.
    struct GroupSteps<'c, 'a> {
        /// Groups decoded (the vectors' first lanes).
        count: usize,
        /// `range_scale · range_code`, exact in f32.
        range: Value<'c, 'a>,
        s4: Value<'c, 'a>,
        s3: Value<'c, 'a>,
        min: Value<'c, 'a>,
    }

    /// s4 = fl(range/15), s3 = fl(range/7) and min of a row's groups g0 ..
    /// g0 + count (at most [`LANES`], returned with the vectors), with range
    /// = range_scale·code (exact); lanes past `count` are zero, and nothing
    /// past the row's parameters is read. `mins_at`, `codes_at`: byte
    /// addresses of the row's f16 mins and u8 range codes.
    #[allow(clippy::too_many_arguments)]
    fn group_steps<'c, 'b>(
        b: &Builder<'c>,
        block: &'b Block<'c>,
        groups: usize,
        g0: usize,
        rs: Value<'c, '_>,
        mins_at: Value<'c, '_>,
        codes_at: Value<'c, '_>,
    ) -> GroupSteps<'c, 'b> {
        let count = (groups - g0).min(LANES);
        let v = count.next_power_of_two();
        let mask = group_mask(b, block, count);
        let code_at = i64c(b, block, g0);
        let code_at = b.addi(block, codes_at, code_at);
        let codes = b.masked_load(block, code_at, mask, b.vector_type(v, "i8"), 1);
        let min_at = i64c(b, block, 2 * g0);
        let min_at = b.addi(block, mins_at, min_at);
        let min = b.masked_load(block, min_at, mask, b.vector_type(v, "f16"), 2);
        let min = push(block, arith::extf(min, b.vector_type(v, "f32"), b.location));
        // range = range_scale · code is exact (11 × 8 bits), and
        // so is its f64 product with fl64(1/L) up to 2^-52
        // relative, far inside the distance (> 2^-30 relative) from
        // range/L, which has at most 19 significant bits over a
        // divisor of 15 or 7, to any f32 rounding boundary: so
        // fl32(range · fl64(1/L)) = fl32(range / L), the
        // reference's s4 and s3, without a division.
        let codes = push(block, arith::uitofp(codes, b.vector_type(v, "f32"), b.location));
        let rs_v = b.splat(block, rs, v);
        let range = b.mulf(block, rs_v, codes);
        let range64 = push(block, arith::extf(range, b.vector_type(v, "f64"), b.location));
        let step = |levels: f64| {
            let inverse = b.dense(block, "f64", &vec![format!("{:e}", 1.0 / levels); v]);
            let s = b.mulf(block, range64, inverse);
            push(block, arith::truncf(s, b.vector_type(v, "f32"), b.location))
        };
        let (s4, s3) = (step(15.0), step(7.0));
        GroupSteps { count, range, s4, s3, min }
    }

    /// Loads `len` bytes at `addr` as 16 lanes (lane l = byte lanes[l]).
    fn load_bytes<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, addr: Value<'c, '_>, len: usize, lanes: &[i32; LANES], vec_i8: Type<'c>) -> Value<'c, 'b> {
        let loaded = b.load_at(block, addr, b.vector_type(len, "i8"), 1);
        if len == LANES && lanes.iter().enumerate().all(|(i, &l)| l == i as i32) {
            loaded
        } else {
            b.shuffle(block, loaded, loaded, lanes, vec_i8)
        }
    }

    /// Writes one group's scratch slots from its activations at `x_group`.
    fn prepare_group<'c>(b: &Builder<'c>, block: &Block<'c>, plan: &[Chunk], x_group: Value<'c, '_>, s_group: Value<'c, '_>) {
        let vec_f32 = b.vector_type(LANES, "f32");
        let mut slot_index = 0;
        for chunk in plan {
            let cols: Vec<usize> = chunk.slots.iter().flat_map(|s| s.cols.iter().flatten().copied()).collect();
            let (lo, hi) = match (cols.iter().min(), cols.iter().max()) {
                (Some(&lo), Some(&hi)) => (lo, hi),
                _ => {
                    for _ in &chunk.slots {
                        let off = i64c(b, block, slot_index * LANES * 4);
                        let at = b.addi(block, s_group, off);
                        let z = zeros(b, block, LANES, "f32");
                        b.store_at(block, z, at, 64);
                        slot_index += 1;
                    }
                    continue;
                }
            };
            let w = hi - lo + 1;
            let off = i64c(b, block, lo * 4);
            let at = b.addi(block, x_group, off);
            let window = b.load_at(block, at, b.vector_type(w, "f32"), 4);
            let zero = zeros(b, block, w, "f32");
            for slot in &chunk.slots {
                let mask: Vec<i32> = slot.cols.iter().map(|c| c.map_or(w as i32, |c| (c - lo) as i32)).collect();
                let v = b.shuffle(block, window, zero, &mask, vec_f32);
                let off = i64c(b, block, slot_index * LANES * 4);
                let at = b.addi(block, s_group, off);
                b.store_at(block, v, at, 64);
                slot_index += 1;
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// s4 and s3 through f64 multiplication equal the reference's f32
        /// division for every range scale (every finite f16 ≥ 0) and code.
        #[test]
        fn steps_without_division_are_the_reference_steps() {
            for bits in 0u16..0x7c00 {
                let rs = half::f16::from_bits(bits).to_f32();
                for code in 0..=255u8 {
                    let range = rs * f32::from(code);
                    let wide = f64::from(rs) * f64::from(code);
                    for levels in [15.0f32, 7.0] {
                        let fast = (wide * (1.0 / f64::from(levels))) as f32;
                        assert_eq!(fast.to_bits(), (range / levels).to_bits(), "rs {rs} code {code} L {levels}");
                    }
                }
            }
        }

        /// Every code of every group shape is decoded by exactly one lane,
        /// and every load stays inside the group's block.
        #[test]
        fn plans_cover_every_column_once() {
            for quant in [QuantKind::Q35, QuantKind::Int4, QuantKind::Int3] {
                for n in [1, 2, 3, 7, 8, 31, 32, 64, 100, 128, 256, 576, 1536] {
                    let plan = plan(quant, n);
                    let mut seen = vec![0; n];
                    let block_len = Layout::new(quant, GroupSize::Channel, n).block_len(0);
                    for chunk in &plan {
                        assert!(chunk.at + chunk.len <= block_len, "{quant} {n}: {chunk:?}");
                        assert!(chunk.hi_len == 0 || chunk.hi_at + chunk.hi_len <= block_len, "{quant} {n}: {chunk:?}");
                        for slot in &chunk.slots {
                            for col in slot.cols.iter().flatten() {
                                seen[*col] += 1;
                            }
                        }
                    }
                    assert!(seen.iter().all(|&s| s == 1), "{quant} {n}: {seen:?}");
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod kernel_tests {
    //! Compiled kernels against plain Rust on random weights: every
    //! epilogue, both paths, prefill and decode token counts, tails.
    use super::*;
    use q35_format::QuantizedTensor;
    use q35_rt::code::CodeObject;
    use q35_rt::memref::{MemRef1, MemRef2};
    use std::ffi::c_void;

    /// xorshift: reproducible values in [-1, 1).
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

    /// The memrefs of one weight matrix, in kernel argument order.
    /// Runs `shape`'s kernel on `tokens` random tokens and checks every
    /// output against f64 arithmetic on the dequantized weights.
    fn check(shape: MatmulShape, tokens: usize, fast: bool, alias: bool) {
        let so = shape.standalone_shared_object(fast).unwrap();
        let symbol = format!("_mlir_ciface_{}", shape.kernel_name());
        let label = format!("{} fast={fast}", shape.kernel_name());
        check_compiled(&shape, tokens, &so, &symbol, 0x9e3779b97f4a7c15, alias, &label);
    }

    /// Loads the kernel `symbol` (with `shape`'s buffer convention) from
    /// the shared object `so`, runs every workgroup on `tokens` random
    /// tokens (weights and activations drawn from `seed`), and checks every
    /// output against f64 arithmetic on the dequantized weights. The bound
    /// is that of a reordered, fused f32 dot: γ_K·Σ|w'·x| with
    /// γ_K = K·u/(1 − K·u), u = 2^-24, plus rounding of the epilogue.
    /// `alias` binds the residual and the output to one buffer. Shared with
    /// the GPU GEMV's CPU emulation.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check_compiled(shape: &MatmulShape, tokens: usize, so: &[u8], symbol: &str, seed: u64, alias: bool, label: &str) {
        let (n, k) = (shape.n, shape.k);
        let mut seed = seed ^ (n * 31 + k) as u64;
        let weights: Vec<QuantizedTensor> = (0..shape.epilogue.weights())
            .map(|i| {
                let w = random(&mut seed, n * k);
                QuantizedTensor::quantize(format!("w{i}"), n, k, &w, shape.quant, shape.group).unwrap()
            })
            .collect();
        let dense: Vec<Vec<f32>> = weights.iter().map(|q| q.dequantize()).collect();
        let x = random(&mut seed, tokens * k);
        let residual = random(&mut seed, tokens * n);
        let mut out = if alias { residual.clone() } else { vec![f32::NAN; tokens * n] };

        let code = CodeObject::load(so).unwrap();
        let entry = code.symbol(symbol).expect("kernel symbol");
        let mut x_desc = MemRef2::matrix(x.as_ptr() as *mut c_void, tokens, k);
        let mut descs: Vec<MemRef1> = weights.iter().flat_map(|q| MemRef1::of_payload(q.payload())).collect();
        let mut residual_desc = MemRef2::matrix(residual.as_ptr() as *mut c_void, tokens, n);
        let mut out_desc = MemRef2::matrix(out.as_mut_ptr().cast(), tokens, n);
        if alias {
            residual_desc = out_desc;
        }
        // The integer path reads x quantized by its quantize kernel.
        let mut rows = None;
        if shape.int8_activations {
            let codes = ActivationCodes::of(shape);
            let rows = rows.insert(q35_rt::memref::AlignedBuffer::zeroed(tokens * codes.row_bytes()));
            let mut codes_desc = MemRef2::matrix(rows.as_mut_ptr(), tokens, codes.row_bytes());
            let quantize = code.symbol(&format!("_mlir_ciface_{}", codes.kernel_name())).expect("quantize kernel symbol");
            let args: Vec<*mut c_void> = vec![(&mut x_desc as *mut MemRef2).cast(), (&mut codes_desc as *mut MemRef2).cast()];
            let call = q35_rt::kernel::trampoline(args.len()).unwrap();
            for m in 0..tokens {
                // SAFETY: the quantize kernel takes x and the codes, as built above.
                unsafe { call(quantize, m as i64, tokens as i64, 0, &args) };
            }
            x_desc = codes_desc;
        }
        let mut args: Vec<*mut c_void> = vec![(&mut x_desc as *mut MemRef2).cast()];
        args.extend(descs.iter_mut().map(|d| (d as *mut MemRef1).cast::<c_void>()));
        if shape.epilogue == Epilogue::AddResidual {
            args.push((&mut residual_desc as *mut MemRef2).cast());
        }
        args.push((&mut out_desc as *mut MemRef2).cast());
        let call = q35_rt::kernel::trampoline(args.len()).unwrap();
        for wg in 0..shape.workgroups() {
            // SAFETY: the kernel's arity and buffer shapes are the ones built above.
            unsafe { call(entry, wg as i64, tokens as i64, 0, &args) };
        }

        let u = 2f64.powi(-24);
        let gamma = k as f64 * u / (1.0 - k as f64 * u);
        // The integer path multiplies by what the int8 codes stand for
        // (`sx·x8`, exact in f64), and by `min + q·range/L` instead of `w'`
        // (three f32 roundings per weight), with two roundings for the
        // group scale `fl(range·fl(sx/105))` and one for `fl(sx·Σx8)`: six,
        // within 8u more, on terms bounded through |min| + |q·s|.
        let width = q35_format::Layout::new(shape.quant, shape.group, k).group_width();
        let xs: Vec<f64> = if shape.int8_activations {
            x.chunks(k).flat_map(|row| q35_format::activations::dequantized_activations(row, width)).collect()
        } else {
            x.iter().map(|&v| f64::from(v)).collect()
        };
        for m in 0..tokens {
            for r in 0..n {
                let dot = |i: usize| {
                    let w = &dense[i];
                    let terms = (0..k).map(|c| {
                        let (w, x) = (f64::from(w[r * k + c]), xs[m * k + c]);
                        let size = if shape.int8_activations {
                            let min = f64::from(weights[i].group_params(r, c / width).expect("coded").min);
                            (min.abs() + (w - min).abs()) * x.abs() * (1.0 + 8.0 * u / gamma)
                        } else {
                            (w * x).abs()
                        };
                        (w * x, size)
                    });
                    let (sum, abs) = terms.fold((0.0, 0.0), |(s, a), (t, size)| (s + t, a + size));
                    (sum, gamma * abs + 1e-30)
                };
                let (d0, e0) = dot(0);
                let (expected, bound) = match shape.epilogue {
                    Epilogue::None => (d0, e0),
                    Epilogue::AddResidual => {
                        let v = f64::from(residual[m * n + r]) + d0;
                        (v, e0 + 2.0 * u * v.abs())
                    }
                    Epilogue::SwiGlu => {
                        let (d1, e1) = dot(1);
                        let silu = |g: f64| g / (1.0 + (-g).exp());
                        let v = silu(d0) * d1;
                        // |silu'| < 1.1; exp, +, /, × in f32: a few ulps of each.
                        (v, 1.1 * e0 * d1.abs() + silu(d0).abs() * e1 + 16.0 * u * (v.abs() + silu(d0).abs() * d1.abs()))
                    }
                };
                let got = f64::from(out[m * n + r]);
                assert!(
                    (got - expected).abs() <= bound,
                    "{label} tokens={tokens} m={m} n={r}: got {got}, expected {expected} ± {bound}"
                );
            }
        }
    }

    fn shape(n: usize, k: usize, quant: QuantKind, group: GroupSize, epilogue: Epilogue) -> MatmulShape {
        MatmulShape { epilogue, ..MatmulShape::new(n, k, quant, group, 8) }
    }

    #[test]
    fn plain_matmul_matches_f64_for_every_kind_and_tail() {
        for fast in [true, false] {
            for (quant, group, k) in [
                (QuantKind::Q35, GroupSize::G128, 576),
                (QuantKind::Q35, GroupSize::G32, 70),
                (QuantKind::Q35, GroupSize::Channel, 99),
                (QuantKind::Int4, GroupSize::G64, 200),
                (QuantKind::Int3, GroupSize::G256, 300),
                (QuantKind::F16, GroupSize::Channel, 40),
            ] {
                check(shape(21, k, quant, group, Epilogue::None), 6, fast, false);
            }
        }
    }

    #[test]
    fn add_residual_epilogue_matches_f64_in_place_too() {
        for fast in [true, false] {
            for (quant, group, k) in [(QuantKind::Q35, GroupSize::G128, 192), (QuantKind::F32, GroupSize::Channel, 33)] {
                check(shape(20, k, quant, group, Epilogue::AddResidual), 5, fast, false);
                check(shape(19, k, quant, group, Epilogue::AddResidual), 1, fast, true);
            }
        }
    }

    #[test]
    fn integer_path_matches_f64_on_its_int8_activations() {
        if !int8_path_available() {
            eprintln!("skipped: this host lacks AVX-512 VNNI/VBMI, which the integer path needs");
            return;
        }
        let int8 = |shape: MatmulShape| MatmulShape { int8_activations: true, ..shape };
        for (quant, group, k) in [
            (QuantKind::Q35, GroupSize::G128, 576),
            (QuantKind::Q35, GroupSize::G32, 70),
            (QuantKind::Q35, GroupSize::G256, 600),
            (QuantKind::Q35, GroupSize::Channel, 99),
            (QuantKind::Int4, GroupSize::G64, 200),
            (QuantKind::Int3, GroupSize::G256, 300),
        ] {
            for tokens in [1, 6] {
                check(int8(shape(21, k, quant, group, Epilogue::None)), tokens, true, false);
            }
        }
        for (n, k) in [(130, 1536), (70, 576)] {
            let big = |e| MatmulShape { int8_activations: true, epilogue: e, ..MatmulShape::new(n, k, QuantKind::Q35, GroupSize::G128, 64) };
            for tokens in [1, 2, 8] {
                check(big(Epilogue::None), tokens, true, false);
                check(big(Epilogue::AddResidual), tokens, true, true);
                check(big(Epilogue::SwiGlu), tokens, true, false);
            }
        }
        check(int8(shape(20, 192, QuantKind::Q35, GroupSize::G128, Epilogue::AddResidual)), 5, true, false);
        check(int8(shape(19, 192, QuantKind::Q35, GroupSize::G128, Epilogue::AddResidual)), 1, true, true);
        check(int8(shape(11, 160, QuantKind::Q35, GroupSize::G64, Epilogue::SwiGlu)), 5, true, false);
        check(int8(shape(11, 160, QuantKind::Q35, GroupSize::G64, Epilogue::SwiGlu)), 1, true, false);
    }

    #[test]
    fn linalg_kernels_match_f64_for_every_kind_epilogue_and_tail() {
        let linalg = |shape: MatmulShape| MatmulShape { linalg: true, ..shape };
        for (quant, group, k) in [
            (QuantKind::Q35, GroupSize::G128, 576),
            (QuantKind::Q35, GroupSize::G32, 70),
            (QuantKind::Q35, GroupSize::Channel, 98),
            (QuantKind::Int4, GroupSize::G64, 200),
            (QuantKind::Int3, GroupSize::G256, 300),
            (QuantKind::F16, GroupSize::Channel, 40),
            (QuantKind::F32, GroupSize::Channel, 33),
        ] {
            for tokens in [1, 6] {
                let plain = linalg(shape(21, k, quant, group, Epilogue::None));
                assert!(plain.kernel_name().contains("_linalg"), "{}", plain.kernel_name());
                check(plain, tokens, false, false);
                check(linalg(shape(20, k, quant, group, Epilogue::AddResidual)), tokens, false, false);
                check(linalg(shape(19, k, quant, group, Epilogue::AddResidual)), tokens, false, true);
                check(linalg(shape(11, k, quant, group, Epilogue::SwiGlu)), tokens, false, false);
            }
        }
        // An odd q35 row has no whole pairs: the loop kernel, named as such.
        let odd = linalg(shape(21, 99, QuantKind::Q35, GroupSize::Channel, Epilogue::None));
        assert!(!odd.kernel_name().contains("_linalg"));
        check(odd, 2, false, false);
    }

    #[test]
    fn swiglu_epilogue_matches_f64() {
        for fast in [true, false] {
            for (quant, group, k) in [(QuantKind::Q35, GroupSize::G64, 160), (QuantKind::F16, GroupSize::Channel, 48)] {
                check(shape(11, k, quant, group, Epilogue::SwiGlu), 5, fast, false);
                check(shape(11, k, quant, group, Epilogue::SwiGlu), 1, fast, false);
            }
        }
    }
}
