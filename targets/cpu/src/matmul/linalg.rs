//! The linalg matmul and embedding kernels (`q35c --kernels linalg`,
//! `--emit linalg`): `linalg.generic` ops on strided views of the kernel's
//! buffers, which upstream `convert-linalg-to-loops` lowers.
//!
//! The packed weight is never copied or dequantized into memory: views
//! address it as arrays (`memref.reinterpret_cast`, docs/format.md §3) and
//! the generic's body decodes each code where it uses it. For a q35 row of
//! full groups of width G the matmul's reduction runs over (group g, pair
//! j):
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
//! at a time; f16 and f32 weights are a plain generic over (m, n, k). The
//! embedding decodes its token's row the same way, into the output row.

use super::*;
use q35_target::builder::Extent;
use q35_target::math::silu;

use q35_target::kernel::columns_per_step as per_step;

pub(super) fn build<'c>(b: &Builder<'c>, shape: &MatmulShape, body: &Block<'c>, args: &Args<'c, '_>) {
    let rows = b.subi(body, args.n_hi, args.n_lo);
    let out_of = |buffer: Value<'c, '_>| b.view(body, buffer, args.n_lo, &[Extent::Dynamic(args.tokens), Extent::Dynamic(rows)], &[shape.n, 1], "f32");
    let out = out_of(args.out);
    let parallel = ["parallel", "parallel"];
    let each = || vec!["(d0, d1) -> (d0, d1)".to_string(); 3];
    match shape.epilogue {
        Epilogue::None => dot(b, shape, body, args, args.weights[0], rows, out),
        Epilogue::AddResidual => {
            // The dot in scratch: the residual may be the output buffer.
            let sum = b.alloca(body, "memref<?x?xf32>", &[args.tokens, rows]);
            dot(b, shape, body, args, args.weights[0], rows, sum);
            let residual = out_of(args.residual.expect("residual buffer"));
            // out = residual + dot, the reference's order.
            b.generic(body, &[residual, sum], &[out], &each(), &parallel, |block| vec![b.addf(block, arg(block, 0), arg(block, 1))]);
        }
        Epilogue::SwiGlu => {
            let gate = b.alloca(body, "memref<?x?xf32>", &[args.tokens, rows]);
            dot(b, shape, body, args, args.weights[0], rows, gate);
            dot(b, shape, body, args, args.weights[1], rows, out);
            b.generic(body, &[gate, out], &[out], &each(), &parallel, |block| {
                let s = silu(b, block, arg(block, 0), Exp::Math);
                vec![b.mulf(block, s, arg(block, 1))]
            });
        }
    }
}

/// The embedding: token m's row of the table (dequantized), into row m
/// of the output. Arguments: ids, the table's buffers, out.
pub(super) fn build_embedding<'c>(b: &Builder<'c>, shape: &MatmulShape, body: &Block<'c>) {
    let k = shape.k;
    let m = arg(body, 0);
    let id = b.load(body, arg(body, FIRST_BUFFER), &[m]);
    let row = b.index_cast(body, id, b.index_type());
    let out = arg(body, body.argument_count() - 1);
    let table = FIRST_BUFFER + 1;
    if let Some(element) = float_element(shape.quant) {
        let at = b.muli(body, row, b.index(body, k as i64));
        let values = b.view(body, arg(body, table), at, &[Extent::Fixed(k)], &[1], element);
        let out_row = b.muli(body, m, b.index(body, k as i64));
        let out = b.view(body, out, out_row, &[Extent::Fixed(k)], &[1], "f32");
        let maps = vec!["(d0) -> (d0)".to_string(); 2];
        b.generic(body, &[values], &[out], &maps, &["parallel"], |block| vec![widen(b, block, element, arg(block, 0))]);
        return;
    }
    let coded = Coded::new(body, shape, table, row, Extent::Fixed(1));
    for part in coded.parts() {
        // Loops ([g,] j, e); the table view's row dimension is the one row.
        let loops = part.loops(&["d0", "d1", "d2"]);
        let views = coded.views(b, body, &part);
        let out = part.x_view(b, body, out, m, Extent::Fixed(1), shape.k);
        let mut maps = part.weight_maps(&loops, "0");
        let inputs = views.operands(&part);
        maps.push(format!("{} -> (0, {}{}, {})", loops.dims, loops.group, loops.step, loops.extra));
        let iterators = vec!["parallel"; loops.count];
        let step_dim = loops.count - 2;
        b.generic(body, &inputs, &[out], &maps, &iterators, |block| {
            let j = b.loop_index(block, step_dim);
            let e = b.loop_index(block, step_dim + 1);
            let weights = part.decode(b, block, j, 0);
            // Element e of the step: its plane's weight.
            let mut value = weights[0];
            for (i, &w) in weights.iter().enumerate().skip(1) {
                let is = b.cmpi(block, "eq", e, b.index(block, i as i64));
                value = b.select(block, is, w, value);
            }
            vec![value]
        });
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
    if let Some(element) = float_element(shape.quant) {
        let x = b.view(body, args.x, zero, &[tokens, Extent::Fixed(k)], &[k, 1], "f32");
        let offset = b.muli(body, args.n_lo, b.index(body, k as i64));
        let weight = b.view(body, arg(body, w), offset, &[n_rows, Extent::Fixed(k)], &[k, 1], element);
        let maps = ["(d0, d1, d2) -> (d0, d2)", "(d0, d1, d2) -> (d1, d2)", "(d0, d1, d2) -> (d0, d1)"].map(String::from);
        b.generic(body, &[x, weight], &[out], &maps, &["parallel", "parallel", "reduction"], |block| {
            let product = b.mulf(block, arg(block, 0), widen(b, block, element, arg(block, 1)));
            vec![b.addf(block, arg(block, 2), product)]
        });
        return;
    }
    let coded = Coded::new(body, shape, w, args.n_lo, n_rows);
    for part in coded.parts() {
        // Loops (m, n, [g,] j).
        let loops = part.loops(&["d0", "d1", "d2", "d3"]);
        let views = coded.views(b, body, &part);
        let x = part.x_view(b, body, args.x, zero, tokens, k);
        let per = part.per;
        let mut inputs = vec![x; per];
        let mut maps: Vec<String> = (0..per).map(|e| format!("{} -> (d0, {}{}, {e})", loops.dims, loops.group, loops.step)).collect();
        inputs.extend(views.operands(&part));
        maps.extend(part.weight_maps(&loops, "d1"));
        maps.push(format!("{} -> (d0, d1)", loops.dims));
        let mut iterators = vec!["parallel", "parallel"];
        iterators.resize(loops.count, "reduction");
        let step_dim = loops.count - 1;
        b.generic(body, &inputs, &[out], &maps, &iterators, |block| {
            let j = b.loop_index(block, step_dim);
            let weights = part.decode(b, block, j, per);
            let mut sum = arg(block, block.argument_count() - 1);
            for (e, &weight) in weights.iter().enumerate() {
                let product = b.mulf(block, arg(block, e), weight);
                sum = b.addf(block, sum, product);
            }
            vec![sum]
        });
    }
}

/// The element type of a float weight kind, `None` for coded kinds.
fn float_element(quant: QuantKind) -> Option<&'static str> {
    match quant {
        QuantKind::F16 => Some("f16"),
        QuantKind::F32 => Some("f32"),
        _ => None,
    }
}

/// `value` (of `element`) as f32.
fn widen<'c, 'b>(b: &Builder<'c>, block: &'b Block<'c>, element: &str, value: Value<'c, 'b>) -> Value<'c, 'b> {
    if element == "f16" {
        b.extf(block, value)
    } else {
        value
    }
}

/// A coded weight's rows `first_row ..` (`rows` of them) in the kernel's
/// buffers starting at argument `first` (codes, mins, range codes, range
/// scales).
struct Coded<'c, 'a> {
    quant: QuantKind,
    layout: Layout,
    buffers: [Value<'c, 'a>; 4],
    first_row: Value<'c, 'a>,
    rows: Extent<'c, 'a>,
}

/// The strided views of one [`Part`] of the rows.
struct Views<'c, 'a> {
    codes: Value<'c, 'a>,
    mins: Value<'c, 'a>,
    range_codes: Value<'c, 'a>,
    scales: Value<'c, 'a>,
}

impl<'c, 'a> Views<'c, 'a> {
    /// The inputs in the order of [`Part::weight_maps`]: the codes once per
    /// plane byte, then mins, range codes, range scales.
    fn operands(&self, part: &Part) -> Vec<Value<'c, 'a>> {
        let mut operands = vec![self.codes; part.plane_bytes()];
        operands.extend([self.mins, self.range_codes, self.scales]);
        operands
    }
}

impl<'c, 'a> Coded<'c, 'a> {
    fn new(body: &'a Block<'c>, shape: &MatmulShape, first: usize, first_row: Value<'c, 'a>, rows: Extent<'c, 'a>) -> Self {
        Self {
            quant: shape.quant,
            layout: Layout::new(shape.quant, shape.group, shape.k),
            buffers: [0, 1, 2, 3].map(|i| arg(body, first + i)),
            first_row,
            rows,
        }
    }

    /// The full groups, then the short last group if any.
    fn parts(&self) -> Vec<Part> {
        let (groups, width, k) = (self.layout.groups(), self.layout.group_width(), self.layout.cols());
        let full = if k % width == 0 { groups } else { groups - 1 };
        let part = |g0: usize, count: usize, cols: usize| {
            let (n4, n3) = self.quant.code_counts(cols).expect("coded kind");
            Part {
                quant: self.quant,
                grouped: g0 < full,
                g0,
                count,
                cols,
                per: per_step(self.quant),
                width,
                block_len: self.layout.block_len(g0),
                block_offset: self.layout.block_offset(g0),
                nib_len: n4.div_ceil(2),
                lo_len: n3.div_ceil(4),
            }
        };
        let mut parts = Vec::new();
        if full > 0 {
            parts.push(part(0, full, width));
        }
        if full < groups {
            parts.push(part(full, 1, k - full * width));
        }
        parts
    }

    fn views(&self, b: &Builder<'c>, body: &'a Block<'c>, part: &Part) -> Views<'c, 'a> {
        let groups = self.layout.groups();
        let row_bytes = self.layout.row_bytes();
        let index = |v: usize| b.index(body, v as i64);
        let codes_at = b.muli(body, self.first_row, index(row_bytes));
        let codes_at = b.addi(body, codes_at, index(part.block_offset));
        let params_at = b.muli(body, self.first_row, index(groups));
        let params_at = b.addi(body, params_at, index(part.g0));
        let [codes, mins, range_codes, scales] = self.buffers;
        let rows = self.rows;
        let (codes, mins, range_codes) = if part.grouped {
            let count = Extent::Fixed(part.count);
            (
                b.view(body, codes, codes_at, &[rows, count, Extent::Fixed(part.block_len)], &[row_bytes, part.block_len, 1], "i8"),
                b.view(body, mins, params_at, &[rows, count], &[groups, 1], "f16"),
                b.view(body, range_codes, params_at, &[rows, count], &[groups, 1], "i8"),
            )
        } else {
            (
                b.view(body, codes, codes_at, &[rows, Extent::Fixed(part.block_len)], &[row_bytes, 1], "i8"),
                b.view(body, mins, params_at, &[rows], &[groups], "f16"),
                b.view(body, range_codes, params_at, &[rows], &[groups], "i8"),
            )
        };
        let scales = b.view(body, scales, self.first_row, &[rows], &[1], "f16");
        Views { codes, mins, range_codes, scales }
    }
}

/// Groups g0 .. g0 + count of `cols` columns each (`count` 1 and not
/// `grouped` for the short last group, whose loops lack the group
/// dimension).
struct Part {
    quant: QuantKind,
    grouped: bool,
    g0: usize,
    count: usize,
    cols: usize,
    per: usize,
    width: usize,
    block_len: usize,
    block_offset: usize,
    nib_len: usize,
    lo_len: usize,
}

/// The loop dimensions of a generic over a [`Part`], as affine-map text.
struct Loops {
    /// `(d0, ...)`.
    dims: String,
    /// The group dimension and a comma (`"d2, "`), or nothing.
    group: String,
    /// The step dimension.
    step: String,
    /// The element-of-step dimension, where the loops have one.
    extra: String,
    count: usize,
}

impl Part {
    /// The code planes each step reads (docs/format.md §3).
    fn planes(&self) -> &'static [Plane] {
        match self.quant {
            QuantKind::Q35 => &[Plane::Nib, Plane::Three],
            QuantKind::Int4 => &[Plane::Nib],
            _ => &[Plane::Three],
        }
    }

    fn plane_bytes(&self) -> usize {
        self.planes().iter().map(|p| if *p == Plane::Nib { 1 } else { 2 }).sum()
    }

    /// Loops over `names` (leading ones first): the group (when grouped),
    /// then the step, then whatever follows.
    fn loops(&self, names: &[&str]) -> Loops {
        let used: Vec<&str> = if self.grouped { names.to_vec() } else { names[..names.len() - 1].to_vec() };
        let count = used.len();
        // Matmul (4 names): (m, n, [g,] j). Embedding (3 names): ([g,] j, e).
        let (group, step, extra) = if names.len() == 4 {
            (if self.grouped { "d2, ".to_string() } else { String::new() }, used[count - 1].to_string(), String::new())
        } else if self.grouped {
            ("d0, ".to_string(), "d1".to_string(), "d2".to_string())
        } else {
            (String::new(), "d0".to_string(), "d1".to_string())
        };
        Loops { dims: format!("({})", used.join(", ")), group, step, extra, count }
    }

    /// The maps of [`Views::operands`]: each plane byte, then the
    /// parameters, with `row` the row index expression.
    fn weight_maps(&self, loops: &Loops, row: &str) -> Vec<String> {
        let (dims, g, j) = (&loops.dims, &loops.group, &loops.step);
        let mut maps = Vec::new();
        for plane in self.planes() {
            let bytes = match plane {
                Plane::Nib => vec![format!("{j} floordiv 2")],
                Plane::Three => vec![format!("{} + {j} floordiv 4", self.nib_len), format!("{} + {j} floordiv 8", self.nib_len + self.lo_len)],
            };
            for byte in bytes {
                maps.push(format!("{dims} -> ({row}, {g}{byte})"));
            }
        }
        let group = g.trim_end_matches(", ");
        let params = if group.is_empty() { format!("{dims} -> ({row})") } else { format!("{dims} -> ({row}, {group})") };
        maps.extend([params.clone(), params, format!("{dims} -> ({row})")]);
        maps
    }

    /// The view of `buffer` (rows of `k` f32, row `first_row` on, `rows`
    /// of them) as this part's steps: [rows, [count,] steps, per].
    fn x_view<'c, 'a>(&self, b: &Builder<'c>, body: &'a Block<'c>, buffer: Value<'c, '_>, first_row: Value<'c, '_>, rows: Extent<'c, '_>, k: usize) -> Value<'c, 'a> {
        let steps = self.cols / self.per;
        let at = b.muli(body, first_row, b.index(body, k as i64));
        let at = b.addi(body, at, b.index(body, (self.g0 * self.width) as i64));
        if self.grouped {
            let sizes = [rows, Extent::Fixed(self.count), Extent::Fixed(steps), Extent::Fixed(self.per)];
            b.view(body, buffer, at, &sizes, &[k, self.width, self.per, 1], "f32")
        } else {
            b.view(body, buffer, at, &[rows, Extent::Fixed(steps), Extent::Fixed(self.per)], &[k, self.per, 1], "f32")
        }
    }

    /// In a generic's body whose operands start (after `skip` others) with
    /// [`Views::operands`]: the weights of step `j` (an index), one per
    /// plane, `fl(min + fl(q · fl(range / L)))`, never an fma.
    fn decode<'c, 'b>(&self, b: &Builder<'c>, block: &'b Block<'c>, j: Value<'c, 'b>, skip: usize) -> Vec<Value<'c, 'b>> {
        let j = b.index_cast(block, j, b.int_type(32));
        let byte = |i: usize| b.extui(block, arg(block, skip + i), 32);
        let at = skip + self.plane_bytes();
        let min = b.extf(block, arg(block, at));
        // range = range_scale · code, exact in f32.
        let range = b.mulf(block, b.extf(block, arg(block, at + 2)), b.uitofp(block, arg(block, at + 1)));
        let bits = |value: Value<'c, 'b>, shift: Value<'c, 'b>, mask: i64| {
            let shifted = b.shrui(block, value, shift);
            b.andi(block, shifted, b.int(block, 32, mask))
        };
        let modulo = |m: i64| b.remui(block, j, b.int(block, 32, m));
        let mut next = 0;
        self.planes()
            .iter()
            .map(|plane| {
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
                let step = b.divf(block, range, b.f32(block, levels));
                let scaled = b.mulf(block, b.uitofp(block, q), step);
                b.addf(block, min, scaled)
            })
            .collect()
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
