//! The kernels a plan names, as typed descriptions every backend builds
//! from: matmul shapes (kind, group, epilogue), row ops, RoPE, attention,
//! and the integer path's activation rows. Names and buffer layouts are
//! decided here, once; bodies are each target's.

use crate::activation_rows::ActivationCodes;
use crate::builder::Builder;
use melior::ir::Type;
use q35_format::{GroupSize, Layout, QuantKind};

pub use crate::builder::FIRST_BUFFER;

/// Output rows per matmul workgroup by default: small enough that 2 to 16
/// cores get balanced work on every layer, large enough to amortize a call.
pub const DEFAULT_ROWS_PER_WORKGROUP: usize = 64;

/// The same for the integer path (`--activations int8`), whose rows take
/// about half the time: twice the rows keep each thread's share of a
/// matrix in longer runs (SmolLM2 decode, 2 threads: 435 and 419 tok/s
/// against 352 and 373 at 64 rows).
pub const DEFAULT_ROWS_PER_WORKGROUP_INT8: usize = 128;

/// Columns per step of a linalg reduction over coded rows: one code of
/// each plane.
pub fn columns_per_step(quant: QuantKind) -> usize {
    match quant {
        QuantKind::Q35 => 2,
        _ => 1,
    }
}

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
        self.linalg && !self.int8_activations && self.has_linalg_form()
    }

    /// Whether the shape has a linalg form: coded rows must split into
    /// whole steps (a q35 step is a pair of columns, so K and the group
    /// width must be even); every float matrix has one.
    pub fn has_linalg_form(&self) -> bool {
        let per = columns_per_step(self.quant);
        let layout = Layout::new(self.quant, self.group, self.k);
        self.k % per == 0 && layout.group_width() % per == 0
    }

    /// The integer path's activation rows this matmul reads.
    pub fn activation_codes(&self) -> ActivationCodes {
        ActivationCodes {
            quant: self.quant,
            group: self.group,
            k: self.k,
        }
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
            self.activation_codes().memref_type()
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
}

/// Which row-wise function a kernel computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RowOp {
    Add,
    Mul,
    Silu,
    SwiGlu,
    RmsNorm { epsilon: f64 },
    /// `q35_format::rotation`'s `Q x` (`inverse`: `Qᵀ x`).
    Rotate { inverse: bool },
}

impl RowOp {
    pub fn name(&self) -> &'static str {
        match self {
            RowOp::Add => "add",
            RowOp::Mul => "mul",
            RowOp::Silu => "silu",
            RowOp::SwiGlu => "swiglu",
            RowOp::RmsNorm { .. } => "rms_norm",
            RowOp::Rotate { inverse: false } => "rotate",
            RowOp::Rotate { inverse: true } => "rotate_inverse",
        }
    }

    pub fn inputs(&self) -> usize {
        match self {
            RowOp::Silu | RowOp::Rotate { .. } => 1,
            _ => 2,
        }
    }
}

/// Heads of one attention layer and its cache length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub context: usize,
}
