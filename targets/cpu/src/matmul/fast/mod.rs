//! The AVX-512 kernel for coded weights (see the module doc).

use super::*;
use q35_target::activation_rows::{group_plans, param_stride, Plane, LANES};

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
                let block_len = Layout::new(quant, q35_format::GroupSize::Channel, n).block_len(0);
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
