use crate::emit;
use q35_format::csl::BlockShape;
use q35_format::{GroupSize, QuantKind};

#[test]
fn a_small_matmul_program_is_pinned() {
    let shape = BlockShape::new(40, 200, QuantKind::Q35, GroupSize::G64, 16, 128).unwrap();
    let files = emit::matmul("blk.0.attn_q", &shape);
    insta::assert_snapshot!("matmul_layout", files.get("layout.csl").unwrap());
    insta::assert_snapshot!("matmul_pe_program", files.get("pe_program_matmul.csl").unwrap());
}

use q35_format::csl::{Block, CslConfig};
use q35_format::QuantizedTensor;
use q35_rt::targets::csl::wafer::Wafer;

/// Runs `tensor · x` as the emitted program on the simulated wafer; the
/// outputs and the launch's cycles.
fn run_matmul(config: &CslConfig, tensor: &QuantizedTensor, shape: &BlockShape, x: &[f32]) -> (Vec<f32>, u64, Wafer) {
    let files = emit::matmul(tensor.name(), shape);
    let mut wafer = Wafer::load(config, &files.files).unwrap_or_else(|e| panic!("{e}"));
    let bits = |v: &[u16]| v.iter().map(|&b| u32::from(b)).collect::<Vec<u32>>();
    for px in 0..shape.width() {
        for py in 0..shape.height() {
            let block = Block::pack(tensor, shape, px, py).unwrap();
            wafer.write(px, py, "codes", &bits(&block.codes)).unwrap();
            wafer.write(px, py, "mins", &bits(&block.mins)).unwrap();
            wafer.write(px, py, "range_codes", &bits(&block.range_codes)).unwrap();
            wafer.write(px, py, "range_scales", &bits(&block.range_scales)).unwrap();
        }
    }
    for py in 0..shape.height() {
        let chunk: Vec<u32> = x[shape.span(py)].iter().map(|v| v.to_bits()).collect();
        wafer.write(0, py, "x", &chunk).unwrap();
    }
    let stats = wafer.launch("compute").unwrap_or_else(|e| panic!("{e}"));
    let mut y = Vec::new();
    for px in 0..shape.width() {
        let out = wafer.read_f32(px, shape.height() - 1, "y").unwrap();
        y.extend_from_slice(&out[..shape.row_span(px).len()]);
    }
    (y, stats.cycles, wafer)
}

fn sample(n: usize, k: usize, kind: QuantKind, group: GroupSize) -> (QuantizedTensor, Vec<f32>) {
    let weights: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * (1.0 + (i % 17) as f32 / 8.0)).collect();
    let x: Vec<f32> = (0..k).map(|i| ((i * 104729 % 211) as f32 / 211.0 - 0.4) * 2.0).collect();
    (QuantizedTensor::quantize("w", n, k, &weights, kind, group).unwrap(), x)
}

/// Each output within the f32 bound of its sum: the PE sums a column at a
/// time in f32 and the PE column adds its partial sums, at most K + height
/// roundings of a sum whose terms total Σ|w·x|; the weights themselves
/// decode exactly (the block test).
#[test]
fn the_simulated_matmul_matches_exact_arithmetic() {
    let config = CslConfig::default();
    for (kind, group, n, k, rows, cols) in [
        (QuantKind::Q35, GroupSize::G64, 40, 200, 16, 128),
        (QuantKind::Int4, GroupSize::G32, 48, 96, 32, 32),
        (QuantKind::Int3, GroupSize::G128, 20, 256, 16, 256),
        (QuantKind::Q35, GroupSize::Channel, 33, 100, 16, 40),
    ] {
        let (tensor, x) = sample(n, k, kind, group);
        let shape = BlockShape::new(n, k, kind, group, rows, cols).unwrap();
        let (y, cycles, _) = run_matmul(&config, &tensor, &shape, &x);
        let w = tensor.dequantize();
        for r in 0..n {
            let exact: f64 = (0..k).map(|c| f64::from(w[r * k + c]) * f64::from(x[c])).sum();
            let magnitude: f64 = (0..k).map(|c| (f64::from(w[r * k + c]) * f64::from(x[c])).abs()).sum();
            let bound = (k + shape.height()) as f64 * f64::from(f32::EPSILON) / 2.0 * magnitude * 1.01;
            assert!((f64::from(y[r]) - exact).abs() <= bound, "{kind} g{group} row {r}: {} against {exact} (bound {bound})", y[r]);
        }
        // The planner's count is the simulator's, within the fabric's
        // overlap (a few percent).
        let planned = crate::partition::matmul_cycles(&config, &shape);
        let ratio = planned as f64 / cycles as f64;
        assert!((0.9..1.1).contains(&ratio), "{kind} g{group}: planned {planned} cycles, simulated {cycles}");
    }
}

/// Loads and launches edited program text; the simulator's message.
fn failure(shape: &BlockShape, edit: impl Fn(&mut Vec<(String, String)>)) -> String {
    let mut files = emit::matmul("w", shape).files;
    edit(&mut files);
    let config = CslConfig::default();
    match Wafer::load(&config, &files) {
        Err(e) => e.to_string(),
        Ok(mut wafer) => wafer.launch("compute").expect_err("the edited program must fail").to_string(),
    }
}

fn replace(files: &mut [(String, String)], file: &str, from: &str, to: &str) {
    let text = &mut files.iter_mut().find(|(n, _)| n == file).unwrap().1;
    assert!(text.contains(from), "{from}");
    *text = text.replacen(from, to, 1);
}

#[test]
fn broken_programs_are_refused_naming_the_pe_and_cycle() {
    let shape = BlockShape::new(48, 256, QuantKind::Q35, GroupSize::G64, 16, 128).unwrap();
    // A route that takes activations from the wrong side.
    let e = failure(&shape, |f| replace(f, "layout.csl", ".rx = .{WEST}, .tx = .{RAMP} }", ".rx = .{NORTH}, .tx = .{RAMP} }"));
    assert!(e.contains("route conflict at PE (2, 0)") && e.contains("from WEST"), "{e}");
    // Partial sums never sent: the PE below waits forever.
    let e = failure(&shape, |f| replace(f, "pe_program_matmul.csl", "@fmovs(sum_out, y_dsd, .{ .async = true, .activate = done_id });", "@activate(done_id);"));
    assert!(e.starts_with("deadlock: PE (0, 1) waits from cycle") && e.contains("16 wavelets of colour"), "{e}");
    // A PE whose arrays outgrow its SRAM.
    let e = failure(&shape, |f| replace(f, "pe_program_matmul.csl", "var w = @zeros([rows]f32);", "var w = @zeros([12000]f32);"));
    assert!(e.contains("PE (0, 0) needs") && e.contains("a PE has 49152"), "{e}");
    // An index past an array, with the file and line.
    let e = failure(&shape, |f| replace(f, "pe_program_matmul.csl", "@fmacs(y_dsd, y_dsd, w_dsd, x[c]);", "@fmacs(y_dsd, y_dsd, w_dsd, x[c + 1]);"));
    assert!(e.contains("pe_program_matmul.csl:") && e.contains("index 128 is outside `x` (128 elements)"), "{e}");
    // Text that is not CSL.
    let e = failure(&shape, |f| replace(f, "pe_program_matmul.csl", "task done() void {", "task done() void"));
    assert!(e.starts_with("pe_program_matmul.csl:"), "{e}");
}

/// Cycles of one launch, for the record (`cargo test -p q35-target-csl
/// -- --nocapture`): a SmolLM2 q_proj-sized matmul.
#[test]
fn a_smollm2_sized_matmul_runs_and_counts_its_cycles() {
    let config = CslConfig::default();
    let (tensor, x) = sample(576, 576, QuantKind::Q35, GroupSize::G128);
    let shape = crate::partition::BlockSize { rows: 64, groups: 1 }.shape(576, 576, QuantKind::Q35, GroupSize::G128).unwrap();
    let started = std::time::Instant::now();
    let (y, cycles, wafer) = run_matmul(&config, &tensor, &shape, &x);
    let seconds = started.elapsed().as_secs_f64();
    let w = tensor.dequantize();
    let worst = (0..576).map(|r| ((0..576).map(|c| f64::from(w[r * 576 + c]) * f64::from(x[c])).sum::<f64>() - f64::from(y[r])).abs()).fold(0.0, f64::max);
    let pes = (wafer.width() * wafer.height()) as f64;
    println!(
        "576x576 q35 g128 on {} x {} PEs: {cycles} cycles ({:.2} us at 850 MHz), planned {}; worst |error| {worst:.2e}; simulated in {seconds:.2} s ({:.3e} PE-cycles/s); most loaded PE {} bytes",
        wafer.width(),
        wafer.height(),
        cycles as f64 / 850.0,
        crate::partition::matmul_cycles(&config, &shape),
        pes * cycles as f64 / seconds,
        wafer.max_array_bytes()
    );
    assert!(worst < 1e-3);
}
