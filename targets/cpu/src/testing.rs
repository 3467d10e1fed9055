//! Compiled kernels against plain Rust on random weights: every
//! epilogue, both paths, prefill and decode token counts, tails.

use q35_target::{Epilogue, MatmulShape};
use q35_format::QuantizedTensor;
use q35_rt::code::CodeObject;
use q35_rt::memref::{MemRef1, MemRef2};
use std::ffi::c_void;

/// xorshift: reproducible values in [-1, 1).
pub fn random(seed: &mut u64, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
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
pub fn check_compiled(shape: &MatmulShape, tokens: usize, so: &[u8], symbol: &str, seed: u64, alias: bool, label: &str) {
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
        let codes = shape.activation_codes();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8_path_available;
    use crate::matmul::standalone_shared_object;
    use q35_format::{GroupSize, QuantKind};

    /// Runs `shape`'s kernel on `tokens` random tokens and checks every
    /// output against f64 arithmetic on the dequantized weights.
    fn check(shape: MatmulShape, tokens: usize, fast: bool, alias: bool) {
        let so = standalone_shared_object(&shape, fast).unwrap();
        let symbol = format!("_mlir_ciface_{}", shape.kernel_name());
        let label = format!("{} fast={fast}", shape.kernel_name());
        check_compiled(&shape, tokens, &so, &symbol, 0x9e3779b97f4a7c15, alias, &label);
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

/// Compiles one row kernel `(wg, tokens, start, x: memref<?xWxf32>, out:
/// memref<?xWxf32>)` whose body `fill` builds, runs it once per row of
/// `x` (`width` columns each; workgroup m is row m) and returns `out`.
pub fn run_row_kernel(width: usize, x: &[f32], fill: impl for<'c> FnOnce(&q35_target::builder::Builder<'c>, &melior::ir::Block<'c>)) -> Vec<f32> {
    use melior::ir::{block::BlockLike, Block, Location, Module};
    let q35 = q35_dialect::Q35Context::new().unwrap();
    let context = q35.context();
    let location = Location::unknown(context);
    let b = q35_target::builder::Builder { context, location };
    let module = Module::new(location);
    let row = b.memref_type(&format!("memref<?x{width}xf32>"));
    let mut types = vec![b.index_type(); q35_target::kernel::FIRST_BUFFER];
    types.extend([row, row]);
    let block = Block::new(&types.iter().map(|&t| (t, location)).collect::<Vec<_>>());
    fill(&b, &block);
    module.body().append_operation(crate::function::kernel_function(&b, "row_kernel", &types, block));
    let so = crate::shared_object(&q35, module).unwrap();
    let code = CodeObject::load(&so).unwrap();
    let entry = code.symbol("_mlir_ciface_row_kernel").unwrap();
    let rows = x.len() / width;
    let mut out = vec![0f32; x.len()];
    let mut x_desc = MemRef2::matrix(x.as_ptr() as *mut c_void, rows, width);
    let mut out_desc = MemRef2::matrix(out.as_mut_ptr().cast(), rows, width);
    let args: Vec<*mut c_void> = vec![(&mut x_desc as *mut MemRef2).cast(), (&mut out_desc as *mut MemRef2).cast()];
    let call = q35_rt::kernel::trampoline(2).unwrap();
    for m in 0..rows {
        // SAFETY: the kernel takes two [rows, width] f32 memrefs and
        // workgroup m touches row m only.
        unsafe { call(entry, m as i64, rows as i64, 0, &args) };
    }
    out
}
