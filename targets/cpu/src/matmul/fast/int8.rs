//! The integer-path kernel (`q35c --activations int8`, x86-64 with AVX-512
//! VNNI and VBMI): codes times int8 activations in integers.
//!
//! The quantize kernel ([`build_quantize`], one workgroup per token, once
//! per input however many matmuls read it) quantizes activations group by
//! group exactly as `q35_format::activations::quantize_activations`
//! defines (scale `sx_g`, codes `x8_k`) into [`ActivationCodes`]; the
//! matmul then computes, for each row and group,
//!
//! ```text
//! D_g = Σ_even 7·q4_k·x8_k + Σ_odd 15·q3_k·x8_k                 (int32, exact)
//! y   = Σ_g fl32(range_g·fl32(sx_g/105))·D_g + Σ_g min_g·fl(sx_g·Σ_k x8_k)
//! ```
//!
//! which is `Σ_g sx_g Σ_k x8_k·(min_g + q_k·range_g/L_k)`: the reference's
//! `Σ_k w'_k·sx_g·x8_k` up to f32 rounding (`min + q·range/L` differs from
//! `w' = fl(min + fl(q·fl(range/L)))` by three roundings at most; the
//! group's scale takes two, `fl32(sx/105)` once per token in the quantize
//! kernel and its product with `range`, exact in f32, per row). Scaling
//! the codes to the common step `range/105` (`7·q4`, `15·q3`, both at most
//! 105) lets a group's two planes share one accumulator, converted and
//! scaled once. The products are `vpdpbusd` (64 u8·i8 products per
//! instruction, four summed into each i32 lane). `|x8| <= 127`, scaled
//! codes `<= 105`, and an accumulator sums at most K terms, so it is the
//! one `Accum.accum_no_overflow_C105` covers (the artifact's `accumulator`
//! obligations).
//!
//! **Decode.** Per group and row, codes become one byte each, 64 to a
//! vector. 4-bit plane: the 32 plane bytes in both halves of a vector and
//! one 16-bit shift (0 or 4). 3-bit plane: one byte permute puts the two
//! `lo2` bytes and the `hi1` byte of codes 8h .. 8h+7 in quadword h; two
//! `vpmultishiftqb` pick each code's two low bits (at bit 2i) and its high
//! bit (bit 16+i) into byte i; one bit select merges them. In both, the
//! bits above the code are left as they are: one `vpermb` lookup in a
//! table that repeats every 16 (4-bit) or 8 (3-bit) entries scales the code
//! and drops them. The quantize kernel permutes the activation codes into
//! the same byte order.

use super::*;
use q35_target::activation_rows::{plan, Chunk, BYTES};

/// `vpdpbusd zmm`: per i32 lane, adds the four products of the lane's u8
/// bytes of the second operand and i8 bytes of the third.
const DOT_U8_I8: &str = "llvm.x86.avx512.vpdpbusd.512";
/// `vpmultishiftqb zmm`: byte i of each quadword of the result is the 8
/// bits of the data's quadword (second operand) from bit `control[i]`.
const MULTISHIFT: &str = "llvm.x86.avx512.pmultishift.qb.512";
/// `vpermb zmm`: byte i of the result is `table[index[i] mod 64]`.
const BYTE_LOOKUP: &str = "llvm.x86.avx512.permvar.qi.512";
/// `vpternlogq zmm`: each bit of the result is the fourth operand's truth
/// table (bit `4a + 2b + c`) at the operands' bits a, b, c.
const TERNARY_LOGIC: &str = "llvm.x86.avx512.pternlog.q.512";
/// The truth table of `c ? a : b`.
const SELECT_FIRST_WHERE_THIRD: i64 = 0b1110_0100;
/// The common step of a group's scaled codes is `range / STEPS`: 4-bit
/// codes are scaled by `STEPS / 15 = 7`, 3-bit codes by `STEPS / 7 = 15`.
const STEPS: usize = 105;
/// Columns per quantization vector of activations.
const COLS: usize = 64;

/// Whether this host has what the kernel needs (kernels are compiled for
/// the host CPU).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The group walk shared by the quantize kernel and the matmul.
struct Form {
    layout: Layout,
    full_groups: usize,
    full_plan: Vec<Chunk>,
    tail_plan: Option<Vec<Chunk>>,
    per_group: usize,
    /// Bytes of a row's codes.
    codes_bytes: usize,
}

impl Form {
    fn new(codes: &ActivationCodes) -> Self {
        let layout = Layout::new(codes.quant, codes.group, codes.k);
        let (full_groups, full_plan, tail_plan) = group_plans(&layout, |n| plan(codes.quant, n));
        let per_group = full_plan.len();
        let slots = full_groups * per_group + tail_plan.as_ref().map_or(0, Vec::len);
        Self {
            layout,
            full_groups,
            full_plan,
            tail_plan,
            per_group,
            codes_bytes: slots * BYTES,
        }
    }

    fn stride(&self) -> usize {
        param_stride(self.layout.groups())
    }

    fn row_bytes(&self) -> usize {
        (self.codes_bytes + 2 * self.stride() * 4).next_multiple_of(64)
    }

    /// Byte address (i64) of token t's `fl(sx/105)` (`which` 0) or `fl(sx·Σx8)`
    /// (`which` 1) of group g (an i64), token 0's row at `rows`.
    fn param_at<'c, 'b>(&self, b: &Builder<'c>, block: &'b Block<'c>, rows: Value<'c, '_>, t: usize, which: usize, g: Value<'c, '_>) -> Value<'c, 'b> {
        let first = i64c(b, block, t * self.row_bytes() + self.codes_bytes + which * self.stride() * 4);
        let four = i64c(b, block, 4);
        let index = b.muli(block, g, four);
        let at = b.addi(block, rows, first);
        b.addi(block, at, index)
    }

    /// Calls `each(block, at, plan)` for every group.
    fn for_groups<'c>(&self, b: &Builder<'c>, block: &Block<'c>, each: impl for<'b> Fn(&'b Block<'c>, &GroupAt<'c, 'b>, &Vec<Chunk>)) {
        let (full, tail) = (&self.full_plan, self.tail_plan.as_ref());
        for_groups(b, block, &self.layout, self.full_groups, full, tail, self.per_group * BYTES, Vec::new(), |body, at, plan, _| {
            each(body, at, plan);
            Vec::new()
        });
    }
}

/// The quantize kernel (arguments: wg, tokens, start, x, codes): workgroup
/// m quantizes token m's row of x into its row of codes.
pub(crate) fn build_quantize<'c>(b: &Builder<'c>, codes: &ActivationCodes, body: &Block<'c>) {
    let form = Form::new(codes);
    let m = arg(body, 0);
    let x = b.address(body, arg(body, FIRST_BUFFER));
    let x_row = x_row(b, body, x, codes.k, m);
    let m64 = to_i64(b, body, m);
    let row_bytes = i64c(b, body, form.row_bytes());
    let offset = b.muli(body, m64, row_bytes);
    let rows = b.address(body, arg(body, FIRST_BUFFER + 1));
    let row = b.addi(body, rows, offset);
    form.for_groups(b, body, |block, at, plan| {
        let x_group = b.addi(block, x_row, at.x_off);
        let codes = b.addi(block, row, at.slots_off);
        quantize_group(b, block, &form, plan, at.width, x_group, codes, row, at.g);
    });
}

/// One group of `n` activations at `x_group`: its codes, permuted into
/// `plan`'s chunks at `codes`, and `sx`, `fl(sx·Σx8)` (group `g`, an i64)
/// in the parameters of the row at `row`.
#[allow(clippy::too_many_arguments)]
fn quantize_group<'c>(b: &Builder<'c>, block: &Block<'c>, form: &Form, plan: &[Chunk], n: usize, x_group: Value<'c, '_>, codes: Value<'c, '_>, row: Value<'c, '_>, g: Value<'c, '_>) {
    let vec_f32 = b.vector_type(COLS, "f32");
    let vec_i32 = b.vector_type(COLS, "i32");
    let vec_i8 = b.vector_type(COLS, "i8");
    // The group's activations, 64 columns a vector, zero past n.
    let xs: Vec<Value> = (0..n.div_ceil(COLS))
        .map(|c| {
            let off = i64c(b, block, c * COLS * 4);
            let at = b.addi(block, x_group, off);
            let valid = (n - c * COLS).min(COLS);
            if valid == COLS {
                b.load_at(block, at, vec_f32, 4)
            } else {
                let lanes: Vec<&str> = (0..COLS).map(|i| if i < valid { "true" } else { "false" }).collect();
                let mask = b.dense(block, "i1", &lanes);
                b.masked_load(block, at, mask, vec_f32, 4)
            }
        })
        .collect();
    // a = max(max |x|, 2^-100); inv = fl(127/a); sx = fl(a/127).
    let mut peak = b.math1(block, "absf", xs[0]);
    for &x in &xs[1..] {
        let abs = b.math1(block, "absf", x);
        peak = b.maxf(block, peak, abs);
    }
    let a = b.reduce(block, "fmax", peak, b.f32_type());
    let floor = b.f32(block, f64::from(q35_format::activations::ACT_FLOOR));
    let a = b.maxf(block, a, floor);
    let levels = b.f32(block, f64::from(q35_format::activations::ACT_LEVELS));
    let inv = b.divf(block, levels, a);
    let sx = b.divf(block, a, levels);
    let inv_v = b.splat(block, inv, COLS);
    let mut sum = b.int(block, 32, 0);
    let q8: Vec<Value> = xs
        .iter()
        .map(|&x| {
            let scaled = b.mulf(block, x, inv_v);
            let rounded = b.math1(block, "roundeven", scaled);
            let q = b.fptosi_to(block, rounded, vec_i32);
            let part = b.reduce(block, "add", q, b.int_type(32));
            sum = b.addi(block, sum, part);
            b.trunci_to(block, q, vec_i8)
        })
        .collect();
    let sum = b.sitofp(block, sum);
    let ms = b.mulf(block, sx, sum);
    // The matmul scales a group by range·sx/105: sx/105 once here, so the
    // rows only multiply.
    let steps = b.f32(block, STEPS as f64);
    let step = b.divf(block, sx, steps);
    for (which, value) in [step, ms].into_iter().enumerate() {
        let at = form.param_at(b, block, row, 0, which, g);
        b.store_at(block, value, at, 4);
    }
    // Each chunk's lanes from (at most) two consecutive vectors of
    // codes; a lane with no column reads a zero lane.
    let zeros = zeros(b, block, COLS, "i8");
    for (s, chunk) in plan.iter().enumerate() {
        let first = chunk.cols.iter().flatten().min().map_or(0, |c| c / COLS);
        let low = q8.get(first).copied().unwrap_or(zeros);
        let high = q8.get(first + 1).copied().unwrap_or(zeros);
        // (`plan`'s test checks one exists wherever a lane has no code.)
        let zero_lane = (0..2 * COLS).find(|&l| (first * COLS + l) >= n).unwrap_or(0) as i32;
        let mask: Vec<i32> = chunk
            .cols
            .iter()
            .map(|c| match c {
                Some(c) => {
                    debug_assert!(c / COLS <= first + 1, "a chunk spans at most two vectors");
                    (c - first * COLS) as i32
                }
                None => zero_lane,
            })
            .collect();
        let v = b.shuffle(block, low, high, &mask, vec_i8);
        let off = i64c(b, block, s * BYTES);
        let at = b.addi(block, codes, off);
        b.store_at(block, v, at, 64);
    }
}

pub(crate) fn build<'c>(b: &Builder<'c>, shape: &MatmulShape, body: &Block<'c>, args: &Args<'c, '_>) {
    let form = Form::new(&shape.activation_codes());
    let sets = shape.epilogue.weights() * ROW_BLOCK.max(TOKEN_BLOCK);
    let params = b.alloca_f32_aligned(body, sets * form.stride(), 64);
    let geo = Geometry {
        shape,
        form,
        params: b.address(body, params),
        codes: b.address(body, args.x),
    };
    for_token_blocks(b, body, args, |block, count, m0| geo.pass(b, block, body, args, count, m0));
}

struct Geometry<'s, 'c, 'a> {
    shape: &'s MatmulShape,
    form: Form,
    /// Byte addresses (i64): the rows' `fl(range·fl(sx/105))` per group (a
    /// scratch), and the tokens' [`ActivationCodes`].
    params: Value<'c, 'a>,
    codes: Value<'c, 'a>,
}

/// One (row, weight matrix) of a row block.
struct Row<'c, 'a> {
    /// Byte address of the row's codes (i64).
    row_addr: Value<'c, 'a>,
    /// Per token: the terms `min_g·fl(sx_g·Σx8)`, summed into
    /// [`LANES`] lanes: the row's accumulator starts from them, so that one
    /// reduction gives the dot.
    bias: Vec<Value<'c, 'a>>,
}

impl<'c> Geometry<'_, 'c, '_> {
    /// Byte address of f32 g (an i64) of row parameter set `unit` in the
    /// parameter scratch.
    fn param_at<'b>(&self, b: &Builder<'c>, block: &'b Block<'c>, unit: usize, g: Value<'c, '_>) -> Value<'c, 'b> {
        let first = i64c(b, block, unit * self.form.stride() * 4);
        let four = i64c(b, block, 4);
        let index = b.muli(block, g, four);
        let at = b.addi(block, self.params, first);
        b.addi(block, at, index)
    }

    fn pass(&self, b: &Builder<'c>, block: &Block<'c>, kernel: &Block<'c>, args: &Args<'c, '_>, count: usize, m0: Value<'c, '_>) {
        let m0_64 = to_i64(b, block, m0);
        let row_bytes = i64c(b, block, self.form.row_bytes());
        let offset = b.muli(block, m0_64, row_bytes);
        let rows = b.addi(block, self.codes, offset);
        for_row_blocks(b, block, args, count, |block, ns| self.row(b, block, kernel, args, count, m0, rows, ns));
    }

    /// Rows `ns` for tokens m0 .. m0 + count (their codes' rows at `rows`).
    #[allow(clippy::too_many_arguments)]
    fn row(&self, b: &Builder<'c>, block: &Block<'c>, kernel: &Block<'c>, args: &Args<'c, '_>, count: usize, m0: Value<'c, '_>, rows: Value<'c, '_>, ns: &[Value<'c, '_>]) {
        let form = &self.form;
        let layout = &form.layout;
        let weights = args.weights.len();
        let sets: Vec<Row> = row_sets(b, block, kernel, args, layout, ns, |set, n, w, row_addr, rs| Row {
            row_addr,
            bias: self.row_params(b, block, set, count, n, rs, rows, arg(kernel, w + 1), arg(kernel, w + 2)),
        });
        let acc_count = sets.len() * count;
        let init: Vec<Value> = sets.iter().flat_map(|set| set.bias.iter().copied()).collect();
        debug_assert_eq!(init.len(), acc_count);
        let (full, tail) = (&form.full_plan, form.tail_plan.as_ref());
        let accs = for_groups(b, block, layout, form.full_groups, full, tail, form.per_group * BYTES, init, |body, at, plan, carried| {
            let s_group = b.addi(body, rows, at.slots_off);
            self.group(b, body, plan, &sets, at.g, at.block_off, s_group, count, carried)
        });
        let sums = b.reduce_add_each(block, &accs);
        for (r, &n) in ns.iter().enumerate() {
            for t in 0..count {
                let tv = b.index(block, t as i64);
                let m = b.addi(block, m0, tv);
                let dots: Vec<Value> = (r * weights..(r + 1) * weights).map(|set| sums[set * count + t]).collect();
                finish(b, block, self.shape, args, &dots, m, n);
            }
        }
    }

    /// Writes `fl32(range·fl32(sx/105))` of every group of row n (weight `set`)
    /// for each of the `count` tokens (codes' rows at `rows`), and returns
    /// each token's terms `min_g·fl(sx_g·Σx8)` summed into [`LANES`] lanes.
    #[allow(clippy::too_many_arguments)]
    fn row_params<'b>(
        &self,
        b: &Builder<'c>,
        block: &'b Block<'c>,
        set: usize,
        count: usize,
        n: Value<'c, '_>,
        rs: Value<'c, '_>,
        rows: Value<'c, '_>,
        mins: Value<'c, '_>,
        range_codes: Value<'c, '_>,
    ) -> Vec<Value<'c, 'b>> {
        let layout = &self.form.layout;
        let groups = layout.groups();
        let (mins_at, codes_at) = row_param_streams(b, block, layout, n, mins, range_codes);
        let mut bias: Vec<Option<Value>> = vec![None; count];
        let mut g0 = 0;
        while g0 < groups {
            // The f32 path's steps are not needed (LLVM drops them).
            let GroupSteps { count: lanes, range, min, .. } = group_steps(b, block, groups, g0, rs, mins_at, codes_at);
            let v = lanes.next_power_of_two();
            let mask = group_mask(b, block, lanes);
            let g = i64c(b, block, g0);
            for (t, bias) in bias.iter_mut().enumerate() {
                let load = |which| {
                    let at = self.form.param_at(b, block, rows, t, which, g);
                    b.masked_load(block, at, mask, b.vector_type(v, "f32"), 4)
                };
                let (step, ms) = (load(0), load(1));
                let unit = set * count + t;
                let scaled = b.mulf(block, range, step);
                let at = self.param_at(b, block, unit, g);
                b.store_at(block, scaled, at, 4);
                let terms = b.mulf(block, min, ms);
                // Masked lanes loaded zeros: their terms are zero.
                let terms = if v < LANES {
                    let zero = zeros(b, block, v, "f32");
                    let lanes: Vec<i32> = (0..LANES as i32).map(|i| if (i as usize) < v { i } else { v as i32 }).collect();
                    b.shuffle(block, terms, zero, &lanes, b.vector_type(LANES, "f32"))
                } else {
                    terms
                };
                *bias = Some(match *bias {
                    Some(sum) => b.addf(block, sum, terms),
                    None => terms,
                });
            }
            g0 += lanes;
        }
        bias.into_iter().map(|b| b.expect("a row has a group")).collect()
    }

    /// Adds group g (an i64; its block `block_off` bytes into each row,
    /// activation codes at `s_group`) to the accumulators, ordered (set,
    /// token).
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
        mut accs: Vec<Value<'c, 'b>>,
    ) -> Vec<Value<'c, 'b>>
    where
        'c: 'b,
    {
        let vec_i8 = b.vector_type(BYTES, "i8");
        let vec_i32 = b.vector_type(LANES, "i32");
        let vec_f32 = b.vector_type(LANES, "f32");
        let zero_i32 = zeros(b, block, LANES, "i32");
        for (set, row) in sets.iter().enumerate() {
            let base = b.addi(block, row.row_addr, block_off);
            let ahead = i64c(b, block, prefetch_bytes(&self.form.layout));
            let ahead = b.addi(block, base, ahead);
            b.prefetch(block, ahead);
            let decoded: Vec<Value> = plan.iter().map(|chunk| decode(b, block, base, chunk)).collect();
            for t in 0..count {
                let unit = set * count + t;
                let mut sum = zero_i32;
                for (s, &codes) in decoded.iter().enumerate() {
                    let off = i64c(b, block, t * self.form.row_bytes() + s * BYTES);
                    let at = b.addi(block, s_group, off);
                    let xs = b.load_at(block, at, vec_i8, 64);
                    sum = b.intrinsic(block, DOT_U8_I8, &[sum, codes, xs], vec_i32);
                }
                let at = self.param_at(b, block, unit, g);
                let c = b.load_at(block, at, b.f32_type(), 4);
                let c = b.splat(block, c, LANES);
                let sum = b.sitofp_to(block, sum, vec_f32);
                accs[unit] = b.fma(block, sum, c, accs[unit]);
            }
        }
        accs
    }
}

/// The chunk's codes at the group block `base` (i64), scaled to the step
/// `range/105`: one byte per lane, in `chunk.cols` order (zero where the
/// chunk has no code).
fn decode<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, base: Value<'c, '_>, chunk: &Chunk) -> Value<'c, 'b> {
    let vec_i8 = b.vector_type(BYTES, "i8");
    let load = |at: usize, len: usize| {
        let off = i64c(b, block, at);
        let addr = b.addi(block, base, off);
        b.load_at(block, addr, b.vector_type(len, "i8"), 1)
    };
    // `len` loaded bytes as the first lanes of `to` lanes, zeros after.
    let widen = |v: Value<'c, 'b>, len: usize, to: usize| {
        if len == to {
            return v;
        }
        let z = zeros(b, block, len, "i8");
        let mask: Vec<i32> = (0..to).map(|i| if i < len { i as i32 } else { len as i32 }).collect();
        b.shuffle(block, v, z, &mask, b.vector_type(to, "i8"))
    };
    match chunk.plane {
        Plane::Nib => {
            let raw = widen(load(chunk.at, chunk.len), chunk.len, 32);
            let both: Vec<i32> = (0..BYTES as i32).map(|i| i % 32).collect();
            let both = b.shuffle(block, raw, raw, &both, vec_i8);
            let words = b.bitcast(block, both, b.vector_type(BYTES / 2, "i16"));
            let shifts: Vec<i32> = (0..BYTES / 2).map(|i| if i < BYTES / 4 { 0 } else { 4 }).collect();
            let shifts = b.dense(block, "i16", &shifts);
            let shifted = b.shrui(block, words, shifts);
            let bytes = b.bitcast(block, shifted, vec_i8);
            // Bits 4.. hold the other code: the table repeats every 16.
            let table: Vec<usize> = (0..BYTES).map(|i| (STEPS / 15) * (i % 16)).collect();
            let table = b.dense(block, "i8", &table);
            b.intrinsic(block, BYTE_LOOKUP, &[table, bytes], vec_i8)
        }
        Plane::Three => {
            // 32 bytes: lo2 at 0.., hi1 at `hi` .., lane 31 zero.
            let (raw, hi) = if chunk.hi_at == chunk.at + chunk.len {
                // One masked 32-byte load (never reads past the chunk).
                let both = chunk.len + chunk.hi_len;
                let lanes: Vec<&str> = (0..32).map(|i| if i < both { "true" } else { "false" }).collect();
                let mask = b.dense(block, "i1", &lanes);
                let off = i64c(b, block, chunk.at);
                let addr = b.addi(block, base, off);
                (b.masked_load(block, addr, mask, b.vector_type(32, "i8"), 1), chunk.len)
            } else {
                let lo = widen(load(chunk.at, chunk.len), chunk.len, 16);
                let hi = widen(load(chunk.hi_at, chunk.hi_len), chunk.hi_len, 16);
                let all: Vec<i32> = (0..32).collect();
                (b.shuffle(block, lo, hi, &all, b.vector_type(32, "i8")), 16)
            };
            // Quadword h: lo2 bytes 2h, 2h+1, then hi1 byte h, then zeros.
            let mask: Vec<i32> = (0..BYTES)
                .map(|i| {
                    let (h, byte) = (i / 8, i % 8);
                    match byte {
                        0 | 1 if 2 * h + byte < chunk.len => (2 * h + byte) as i32,
                        2 if h < chunk.hi_len => (hi + h) as i32,
                        _ => 31,
                    }
                })
                .collect();
            let gathered = b.shuffle(block, raw, raw, &mask, vec_i8);
            // Code 8h+i: low bits at bit 2i, high bit at bit 16+i.
            let low_at: Vec<i32> = (0..BYTES as i32).map(|i| 2 * (i % 8)).collect();
            let high_at: Vec<i32> = (0..BYTES as i32).map(|i| 14 + i % 8).collect();
            let low_at = b.dense(block, "i8", &low_at);
            let high_at = b.dense(block, "i8", &high_at);
            let low = b.intrinsic(block, MULTISHIFT, &[low_at, gathered], vec_i8);
            let high = b.intrinsic(block, MULTISHIFT, &[high_at, gathered], vec_i8);
            // Bits 0-1 from `low`, the rest from `high` (bit 2 is the
            // code's; bits 3.. are not, and the table repeats every 8):
            // one bit select. (Written as and/or, LLVM narrows the masks
            // to the bits the lookup reads and emits two instructions.)
            let three = b.dense(block, "i8", &[3; BYTES]);
            let vec_i64 = b.vector_type(BYTES / 8, "i64");
            let [low, high, three] = [low, high, three].map(|v| b.bitcast(block, v, vec_i64));
            let select = b.int(block, 32, SELECT_FIRST_WHERE_THIRD);
            let code = b.intrinsic(block, TERNARY_LOGIC, &[low, high, three, select], vec_i64);
            let code = b.bitcast(block, code, vec_i8);
            let table: Vec<usize> = (0..BYTES).map(|i| (STEPS / 7) * (i % 8)).collect();
            let table = b.dense(block, "i8", &table);
            b.intrinsic(block, BYTE_LOOKUP, &[table, code], vec_i8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cover_every_code_once_within_two_activation_vectors() {
        for quant in [QuantKind::Q35, QuantKind::Int4, QuantKind::Int3] {
            for n in [1, 2, 7, 32, 64, 70, 99, 128, 200, 256, 576] {
                let chunks = plan(quant, n);
                let mut seen = vec![0; n];
                for chunk in &chunks {
                    let cols: Vec<usize> = chunk.cols.iter().flatten().copied().collect();
                    for &c in &cols {
                        seen[c] += 1;
                    }
                    if let (Some(lo), Some(hi)) = (cols.iter().min(), cols.iter().max()) {
                        assert!(hi / COLS <= lo / COLS + 1, "{quant} n={n}: chunk spans {lo}..={hi}");
                        // Lanes without a code need a zero activation lane.
                        if cols.len() < BYTES {
                            assert!((lo / COLS + 2) * COLS > n, "{quant} n={n}: no zero lane");
                        }
                    }
                }
                assert!(seen.iter().all(|&s| s == 1), "{quant} n={n}: {seen:?}");
            }
        }
    }
}
