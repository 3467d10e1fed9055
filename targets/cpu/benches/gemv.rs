//! The fused 3.5-bit GEMV against the machine's read bandwidth.
//!
//! Builds one `dequant_matmul` kernel for a 4096×4096 q35 g128 weight (random
//! values), compiles it exactly like a model's kernels (CPU pipeline, LLVM
//! -O3 for the host), and times one token (a GEMV) on 1 and 2 threads,
//! workgroups spread over the runtime's thread pool as in a model. The
//! effective bandwidth counts every weight byte read (packed codes and
//! group parameters), the figure a memory-bound decode is limited by; it
//! is printed beside a streaming read bandwidth measured in the same run
//! with the same threads (`q35_rt::bandwidth`).
//!
//! `cargo bench -p q35c --bench gemv` (options after `--`: `--n N --k K
//! --quant q35|int4|int3|f16|f32 --group 32|64|128|256|channel --rows R
//! --runs RUNS --copies C --so kernel.so --portable`; `--rows` defaults to
//! the compiler's rows per workgroup, 64, or 128 on the integer path). Coded weights are
//! also timed on the integer path (int8 activations) where the host has
//! AVX-512 VNNI and VBMI, with the ratio to the f32-activation kernel.

use q35_format::{GroupSize, Payload, QuantKind, QuantizedTensor};
use q35_rt::{
    bandwidth,
    code::CodeObject,
    memref::{AlignedBuffer, MemRef1, MemRef2},
    thread_pool::ThreadPool,
};
use q35_target::kernel::{DEFAULT_ROWS_PER_WORKGROUP, DEFAULT_ROWS_PER_WORKGROUP_INT8};
use q35_target::MatmulShape;
use q35_target_cpu::{int8_path_available, matmul::standalone_shared_object};
use std::{ffi::c_void, time::Instant};

struct Options {
    n: usize,
    k: usize,
    quant: QuantKind,
    group: GroupSize,
    /// Rows per workgroup; default: the compiler's for each path.
    rows: Option<usize>,
    runs: usize,
    /// Where to write the kernel's shared object (for objdump).
    so: Option<String>,
    /// Weight copies in rotation (default: enough to cover twice the last-level cache).
    copies: Option<usize>,
    /// The portable kernel instead of the AVX-512 one.
    portable: bool,
}

fn options() -> Options {
    let mut o = Options {
        n: 4096,
        k: 4096,
        quant: QuantKind::Q35,
        group: GroupSize::G128,
        rows: None,
        runs: 200,
        so: None,
        copies: None,
        portable: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--n" => o.n = value.parse().expect("--n N"),
            "--k" => o.k = value.parse().expect("--k K"),
            "--quant" => o.quant = value.parse().expect("--quant KIND"),
            "--group" => o.group = value.parse().expect("--group G"),
            "--rows" => o.rows = Some(value.parse().expect("--rows R")),
            "--runs" => o.runs = value.parse().expect("--runs RUNS"),
            "--so" => o.so = Some(value),
            "--portable" => {
                o.portable = true;
                i += 1;
                continue;
            }
            "--copies" => o.copies = Some(value.parse().expect("--copies C")),
            _ => {
                i += 1; // cargo's own flags (--bench)
                continue;
            }
        }
        i += 2;
    }
    o
}

fn random(len: usize) -> Vec<f32> {
    let mut seed = 0x2545f4914f6cdd1du64;
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let o = options();
    let weights = QuantizedTensor::quantize("w", o.n, o.k, &random(o.n * o.k), o.quant, o.group)?;
    let rows = o.rows.unwrap_or(DEFAULT_ROWS_PER_WORKGROUP);
    let plain = MatmulShape::new(o.n, o.k, o.quant, o.group, rows);
    let mut shapes = vec![plain];
    let coded = !matches!(o.quant, QuantKind::F16 | QuantKind::F32);
    if coded && !o.portable && int8_path_available() {
        let rows = o.rows.unwrap_or(DEFAULT_ROWS_PER_WORKGROUP_INT8);
        shapes.push(MatmulShape { int8_activations: true, rows_per_workgroup: rows, ..plain });
    }
    let mut medians = Vec::new();
    for shape in &shapes {
        medians.push(measure(&o, shape, &weights)?);
    }
    if let [f32_path, int8_path] = &medians[..] {
        for (threads, (a, b)) in f32_path.iter().zip(int8_path).enumerate() {
            println!("gemv int8 activations vs f32, {} thread{}: {:.2}x", threads + 1, if threads == 0 { "" } else { "s" }, a / b);
        }
    }
    Ok(())
}

/// Times `shape`'s kernel on `weights` on 1 and 2 threads, prints the
/// figures, and returns the median seconds per GEMV for each.
fn measure(o: &Options, shape: &MatmulShape, weights: &QuantizedTensor) -> anyhow::Result<Vec<f64>> {
    let activations = if shape.int8_activations { "int8" } else { "f32" };
    let started = Instant::now();
    let so = standalone_shared_object(shape, !o.portable)?;
    let compile = started.elapsed();
    if let Some(path) = &o.so {
        let path = if shape.int8_activations { format!("{path}.int8") } else { path.clone() };
        std::fs::write(path, &so)?;
    }
    let code = CodeObject::load(&so).map_err(anyhow::Error::msg)?;
    let entry = code
        .symbol(&format!("_mlir_ciface_{}", shape.kernel_name()))
        .ok_or_else(|| anyhow::anyhow!("kernel symbol missing"))?;

    let bytes = weights.byte_len();
    let x = random(o.k);
    let mut out = vec![0f32; o.n];
    // Weights must come from memory, not the last-level cache: rotate over
    // enough copies to cover twice its size.
    let llc = bandwidth::last_level_cache_bytes().unwrap_or(32 << 20);
    let copies: Vec<Payload> = (0..o.copies.unwrap_or((2 * llc).div_ceil(bytes)).max(1))
        .map(|_| weights.payload().clone())
        .collect();
    let ptr = |p: *const c_void| p as *mut c_void;
    let mut descs: Vec<Vec<MemRef1>> = copies.iter().map(MemRef1::of_payload).collect();
    let mut x_desc = MemRef2::matrix(ptr(x.as_ptr().cast()), 1, o.k);
    let mut out_desc = MemRef2::matrix(out.as_mut_ptr().cast(), 1, o.n);
    let x_arg = &mut x_desc as *mut MemRef2 as usize;
    // The integer path's matmul reads x quantized once per GEMV by its own
    // kernel (as in a model, where q, k and v share it): timed with it.
    let codes = shape.activation_codes();
    let mut rows = AlignedBuffer::zeroed(codes.row_bytes());
    let mut codes_desc = MemRef2::matrix(rows.as_mut_ptr(), 1, codes.row_bytes());
    let codes_arg = &mut codes_desc as *mut MemRef2 as usize;
    let input_arg = if shape.int8_activations { codes_arg } else { x_arg };
    let out_arg = &mut out_desc as *mut MemRef2 as usize;
    let args: Vec<Vec<usize>> = descs
        .iter_mut()
        .map(|set| {
            let mut args = vec![input_arg];
            args.extend(set.iter_mut().map(|d| d as *mut MemRef1 as usize));
            args.push(out_arg);
            args
        })
        .collect();
    let call = q35_rt::kernel::trampoline(args[0].len()).expect("arity");
    let entry = entry as usize;
    let quantize = if shape.int8_activations {
        let symbol = code
            .symbol(&format!("_mlir_ciface_{}", codes.kernel_name()))
            .ok_or_else(|| anyhow::anyhow!("quantize kernel symbol missing"))?;
        let args: Vec<*mut c_void> = vec![x_arg as *mut c_void, codes_arg as *mut c_void];
        Some((symbol, args))
    } else {
        None
    };
    let quantize_call = q35_rt::kernel::trampoline(2).expect("arity");

    println!(
        "gemv {}x{} {} g{}, {activations} activations: {:.2} MiB of weights ({:.3} bits/weight, {} copies in rotation), kernel compiled in {:.1} s, {} rows/workgroup",
        o.n,
        o.k,
        o.quant,
        o.group,
        bytes as f64 / (1 << 20) as f64,
        weights.bits_per_weight(),
        copies.len(),
        compile.as_secs_f64(),
        shape.rows_per_workgroup
    );
    let mut medians = Vec::new();
    let mut single_thread_read = 0.0;
    for threads in [1, 2] {
        let mut pool = ThreadPool::new(threads);
        let mut turn = 0;
        let mut gemv = |pool: &mut ThreadPool| {
            let args = &args[turn % args.len()];
            turn += 1;
            let run = |wg: usize| {
                let args: Vec<*mut c_void> = args.iter().map(|&a| a as *mut c_void).collect();
                // SAFETY: the kernel takes exactly these descriptors, which
                // live until the end of main; workgroups write disjoint rows.
                unsafe { call(entry as *const c_void, wg as i64, 1, 0, &args) };
            };
            let t = Instant::now();
            if let Some((symbol, args)) = &quantize {
                // SAFETY: the quantize kernel takes x and the codes' rows.
                unsafe { quantize_call(*symbol, 0, 1, 0, args) };
            }
            pool.run(shape.workgroups(), &run);
            t.elapsed().as_secs_f64()
        };
        for _ in 0..copies.len() {
            gemv(&mut pool);
        }
        let times: Vec<f64> = (0..o.runs).map(|_| gemv(&mut pool)).collect();
        let time = bandwidth::median(&times);
        let gbps = bytes as f64 / time / 1e9;
        let read = bandwidth::measure(&mut pool, 5).gb_per_second();
        if threads == 1 {
            single_thread_read = read;
        }
        println!(
            "gemv {}x{} {} g{}, {activations} activations, {} thread{}: {:.1} µs, {:.1} GB/s ({:.2} of read bandwidth {:.1} GB/s; per thread {:.2} of one thread's)",
            o.n,
            o.k,
            o.quant,
            o.group,
            threads,
            if threads == 1 { "" } else { "s" },
            time * 1e6,
            gbps,
            gbps / read,
            read,
            gbps / threads as f64 / single_thread_read
        );
        medians.push(time);
    }
    std::hint::black_box(&out);
    Ok(medians)
}
