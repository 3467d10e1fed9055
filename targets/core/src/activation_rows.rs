//! The integer path's activation rows (`--activations int8` on the CPU):
//! their byte layout is part of the plan (buffer widths), so it is decided
//! here; the kernels that write and read them are the CPU target's.

use crate::builder::Builder;
use crate::builder::FIRST_BUFFER;
use melior::ir::Type;
use q35_format::{GroupSize, Layout, QuantKind};

/// Lanes of every decode vector (one `vpermps` on a zmm register).
pub const LANES: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Plane {
    /// 4-bit codes, two per byte.
    Nib,
    /// 3-bit codes: four `lo2` fields per byte plus one `hi1` bit each.
    Three,
}

/// A layout's count of full groups, and `plan(columns)` of a full group
/// and of the partial last group, if there is one.
pub fn group_plans<T>(layout: &Layout, plan: impl Fn(usize) -> T) -> (usize, T, Option<T>) {
    let width = layout.group_width();
    let groups = layout.groups();
    let full_groups = if layout.cols() % width == 0 { groups } else { groups - 1 };
    let tail = (full_groups < groups).then(|| plan(layout.cols() - full_groups * width));
    (full_groups, plan(width), tail)
}

/// f32s per parameter array in the parameter scratch: the groups,
/// rounded up to whole vectors.
pub fn param_stride(groups: usize) -> usize {
    groups.div_ceil(LANES) * LANES
}

/// Codes per decode vector (bytes of a zmm register).
pub const BYTES: usize = 64;

/// Up to 64 codes of one plane, decoded into one vector of bytes.
#[derive(Debug)]
pub struct Chunk {
    pub plane: Plane,
    /// Offset in the group's block of the chunk's 4-bit bytes (`Nib`) or
    /// `lo2` bytes (`Three`), and their count.
    pub at: usize,
    pub len: usize,
    /// `Three`: the chunk's `hi1` bytes.
    pub hi_at: usize,
    pub hi_len: usize,
    /// The column (within the group) each byte lane multiplies, `None`
    /// where the lane holds no code.
    pub cols: [Option<usize>; BYTES],
}

/// The decode plan of a group of `n` columns: 4-bit chunks, then 3-bit.
pub fn plan(quant: QuantKind, n: usize) -> Vec<Chunk> {
    let (n4, n3) = quant.code_counts(n).expect("coded kind");
    type Column = fn(usize) -> usize;
    let (elem4, elem3): (Column, Column) = match quant {
        QuantKind::Q35 => (|j| 2 * j, |j| 2 * j + 1),
        _ => (|j| j, |j| j),
    };
    let nib_len = n4.div_ceil(2);
    let lo_len = n3.div_ceil(4);
    let hi_total = n3.div_ceil(8);
    let mut chunks = Vec::new();
    // Lane p < 32: the low code of byte p; lane 32 + p: its high code.
    for c in 0..nib_len.div_ceil(BYTES / 2) {
        let at = c * BYTES / 2;
        let len = (nib_len - at).min(BYTES / 2);
        let cols = std::array::from_fn(|lane| {
            let (p, high) = (lane % 32, lane / 32);
            let j = 2 * (at + p) + high;
            (p < len && j < n4).then(|| elem4(j))
        });
        chunks.push(Chunk { plane: Plane::Nib, at, len, hi_at: 0, hi_len: 0, cols });
    }
    // Lane i: code 64c + i.
    for c in 0..n3.div_ceil(BYTES) {
        let cols = std::array::from_fn(|i| {
            let j = c * BYTES + i;
            (j < n3).then(|| elem3(j))
        });
        chunks.push(Chunk {
            plane: Plane::Three,
            at: nib_len + 16 * c,
            len: (lo_len - 16 * c).min(16),
            hi_at: nib_len + lo_len + 8 * c,
            hi_len: (hi_total - 8 * c).min(8),
            cols,
        });
    }
    chunks
}

/// The integer path's form of a matmul's input rows: written once per
/// dispatch of an input by the quantize kernel ([`build_quantize`]) and
/// read by every integer-path matmul of that input with the same code
/// layout (the q, k and v projections share one).
///
/// Row m (token m) takes [`Self::row_bytes`] bytes, a multiple of 64: the
/// int8 codes of each group permuted into the lane order of its decode
/// plan's chunks (64 a chunk, zero in lanes without a column), then
/// `fl(sx_g/105)` of every group and then `fl(sx_g·Σ_k x8_k)`, each array
/// `param_stride(groups)` f32s long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ActivationCodes {
    pub quant: QuantKind,
    pub group: GroupSize,
    pub k: usize,
}

impl ActivationCodes {
    /// The quantize kernel's name, unique per code layout.
    pub fn kernel_name(&self) -> String {
        format!("quantize_activations_{}_{}_g{}", self.quant, self.k, self.group)
    }

    pub fn row_bytes(&self) -> usize {
        (self.codes_bytes() + 2 * param_stride(Layout::new(self.quant, self.group, self.k).groups()) * 4).next_multiple_of(64)
    }

    /// Bytes of a row's codes: one decode vector per chunk of every group.
    pub fn codes_bytes(&self) -> usize {
        let layout = Layout::new(self.quant, self.group, self.k);
        let (full_groups, full_plan, tail_plan) = group_plans(&layout, |n| plan(self.quant, n));
        (full_groups * full_plan.len() + tail_plan.as_ref().map_or(0, Vec::len)) * BYTES
    }

    /// The rows' memref type.
    pub fn memref_type(&self) -> String {
        format!("memref<?x{}xi8>", self.row_bytes())
    }
}

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
