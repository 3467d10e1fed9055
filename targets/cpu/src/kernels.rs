//! CPU kernel functions from the plan's kernel specs: a `func.func` on
//! memrefs with the C interface per kernel, its body the loops (and, on
//! AVX-512, the vector code) of this crate's builders, run once per
//! workgroup by the runtime:
//!
//! ```mlir
//! func.func @rms_norm_576_eps1e-5(%wg: index, %tokens: index, %start: index,
//!     %x: memref<?x576xf32>, %gamma: memref<?xf32>, %out: memref<?x576xf32>)
//!     attributes {llvm.emit_c_interface} { scf.for ... }
//! ```

use crate::{attention, elementwise, matmul, rope};
use melior::ir::{Block, Type};
use q35_target::{builder::Builder, kernel::FIRST_BUFFER, KernelSpec, RowOp};

/// Builds the kernel function `name`.
pub fn build_kernel<'c>(b: &Builder<'c>, name: &str, spec: &KernelSpec) -> melior::ir::Operation<'c> {
    let t = |text: &str| b.memref_type(text);
    let buffers: Vec<Type> = match spec {
        KernelSpec::Matmul(shape) => shape.buffer_types(b),
        KernelSpec::QuantizeActivations(codes) => codes.buffer_types(b),
        KernelSpec::Embedding(shape) => {
            // Token ids in, one hidden-width row (k) per token out; the
            // table has `n` (vocabulary) rows of width `k`.
            let mut types = shape.buffer_types(b);
            types[0] = t("memref<?xi32>");
            *types.last_mut().expect("output buffer") = t(&format!("memref<?x{}xf32>", shape.k));
            types
        }
        KernelSpec::Row { op, width, .. } => {
            let row = t(&format!("memref<?x{width}xf32>"));
            match op {
                RowOp::Silu | RowOp::Rotate { .. } => vec![row, row],
                RowOp::RmsNorm { .. } => vec![row, t("memref<?xf32>"), row],
                _ => vec![row, row, row],
            }
        }
        KernelSpec::Rope { width, .. } => {
            let row = t(&format!("memref<?x{width}xf32>"));
            vec![row, t("memref<?xi32>"), row]
        }
        KernelSpec::KvUpdate(s) | KernelSpec::Attention { shape: s, .. } => {
            let kv = s.num_kv_heads * s.head_dim;
            let q = s.num_heads * s.head_dim;
            let cache = t(&format!("memref<{}x{kv}xf32>", s.context));
            match spec {
                KernelSpec::KvUpdate(_) => {
                    let row = t(&format!("memref<?x{kv}xf32>"));
                    vec![row, row, cache, cache]
                }
                _ => {
                    let row = t(&format!("memref<?x{q}xf32>"));
                    vec![row, cache, cache, row]
                }
            }
        }
    };
    let mut arg_types = vec![b.index_type(); FIRST_BUFFER];
    arg_types.extend(buffers);
    let block = Block::new(&arg_types.iter().map(|&t| (t, b.location)).collect::<Vec<_>>());
    match spec {
        KernelSpec::Matmul(shape) => matmul::build(b, shape, &block),
        KernelSpec::Embedding(shape) => matmul::build_embedding(b, shape, &block),
        KernelSpec::Row { op, width, linalg: false } => elementwise::build(b, *op, *width, &block),
        KernelSpec::Row { op, width, linalg: true } => elementwise::build_linalg(b, *op, *width, &block),
        KernelSpec::Rope { width, head_dim, theta, linalg: false } => rope::build(b, *width, *head_dim, *theta, &block),
        KernelSpec::Rope { width, head_dim, theta, linalg: true } => rope::build_linalg(b, *width, *head_dim, *theta, &block),
        KernelSpec::KvUpdate(shape) => attention::build_kv_update(b, shape, &block),
        KernelSpec::Attention { shape, linalg: false } => attention::build_attention(b, shape, &block),
        KernelSpec::Attention { shape, linalg: true } => attention::build_attention_linalg(b, shape, &block),
        KernelSpec::QuantizeActivations(codes) => matmul::build_quantize(b, codes, &block),
    }
    crate::function::kernel_function(b, name, &arg_types, block)
}
