//! Scheduled matmuls run on q35-rt's simulator, from their program text,
//! against the integer path's arithmetic in f64.

use crate::matmul::{schedule, Activations, Sram, SramImage};
use crate::schedule::Reservations;
use q35_format::activations::dequantized_activations;
use q35_format::tsp::{Program, TspConfig};
use q35_format::{GroupSize, QuantKind, QuantizedTensor};
use q35_rt::targets::tsp::sim::{to_rows, Chip, RunStats, Vector};

/// xorshift values in [-1, 1).
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

/// Schedules `W·x` for `tokens` random rows, runs the program text on the
/// simulator and returns y (tokens × n), the stats and the program.
fn run(config: &TspConfig, weight: &QuantizedTensor, x: &[f32], tokens: usize) -> (Vec<f32>, RunStats, Program) {
    let lanes = config.lanes();
    let (n, k) = (weight.rows(), weight.cols());
    let (ktiles, ntiles) = (k.div_ceil(lanes), n.div_ceil(lanes));
    let mut sram = Sram::new(config);
    let xs = sram.alloc(4 * (tokens * ktiles) as u32).unwrap();
    let ys = sram.alloc(4 * (tokens * ntiles) as u32).unwrap();
    let mut image = SramImage::default();
    let mut reservations = Reservations::new(config);
    let activations = Activations { x: xs, y: ys };
    let (instrs, _) = schedule(config, weight, tokens, activations, &mut sram, &mut image, &mut reservations, 0).unwrap();
    let program = Program { lanes, instrs };
    // What runs is the text.
    let parsed: Program = program.to_string().parse().unwrap();
    assert_eq!(parsed, program);

    let mut chip = Chip::new(config.clone());
    for (slice, row, bytes) in &image.entries {
        chip.load(*slice, *row, bytes).unwrap();
    }
    let mut rows = Vec::new();
    for t in 0..tokens {
        let mut row = x[t * k..(t + 1) * k].to_vec();
        row.resize(ktiles * lanes, 0.0);
        for tile in row.chunks(lanes) {
            rows.extend(to_rows(&Vector::F32(tile.to_vec())));
        }
    }
    chip.load(xs.0, xs.1, &rows).unwrap();
    let stats = chip.run(&parsed).unwrap();
    let mut y = vec![0f32; tokens * n];
    for nt in 0..ntiles {
        for t in 0..tokens {
            let bytes = chip.rows(ys.0, ys.1 + 4 * (nt * tokens + t) as u32, 4);
            let Vector::F32(v) = q35_rt::targets::tsp::sim::from_rows(q35_format::tsp::Elem::F32, bytes, lanes) else { unreachable!() };
            for (j, &value) in v.iter().enumerate() {
                if nt * lanes + j < n {
                    y[t * n + nt * lanes + j] = value;
                }
            }
        }
    }
    (y, stats, program)
}

/// Every output against Σ_k w'_k·sx·x8_k in f64 (the reference forward
/// pass's integer-path product). The simulator's f32 steps per group
/// segment (a product of the range and the token's step, its product with
/// the exact int32 sum, the min term, the add) each round once; the
/// weights' common-step form differs from w' by at most three roundings;
/// over at most 2·groups + 2 rounded terms that is within
/// (2·groups + 8)·2⁻²⁴ of Σ|w'_k·x'_k|.
fn check(weight: &QuantizedTensor, x: &[f32], y: &[f32], tokens: usize) {
    let (n, k) = (weight.rows(), weight.cols());
    let w = weight.dequantize();
    let group = weight.layout().group_width();
    let bound = (2.0 * weight.layout().groups() as f64 + 8.0) * f64::powi(2.0, -24);
    let mut worst = 0f64;
    for t in 0..tokens {
        let xq = dequantized_activations(&x[t * k..(t + 1) * k], group);
        for r in 0..n {
            let (mut exact, mut magnitude) = (0f64, 0f64);
            for c in 0..k {
                let term = w[r * k + c] as f64 * xq[c];
                exact += term;
                magnitude += term.abs();
            }
            let error = (y[t * n + r] as f64 - exact).abs();
            assert!(error <= bound * magnitude + 1e-30, "token {t} row {r}: {} against {exact} (error {error}, bound {})", y[t * n + r], bound * magnitude);
            worst = worst.max(error / (bound * magnitude).max(1e-30));
        }
    }
    eprintln!("worst error: {worst:.3} of the bound");
}

#[test]
fn scheduled_matmuls_match_exact_arithmetic_for_every_kind_and_shape() {
    let config = TspConfig::default();
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    // Tails in N and K; groups that straddle K tiles (128 across 320).
    for (n, k, kind, group, tokens) in [
        (700, 576, QuantKind::Q35, GroupSize::G128, 1),
        (320, 640, QuantKind::Int4, GroupSize::G64, 3),
        (100, 200, QuantKind::Int3, GroupSize::G32, 2),
        (64, 96, QuantKind::Q35, GroupSize::Channel, 1),
    ] {
        let data = random(&mut seed, n * k);
        let weight = QuantizedTensor::quantize("w", n, k, &data, kind, group).unwrap();
        let x = random(&mut seed, tokens * k);
        let (y, stats, _) = run(&config, &weight, &x, tokens);
        check(&weight, &x, &y, tokens);
        let tiles = n.div_ceil(320) * k.div_ceil(320);
        assert!(stats.installed_vectors as usize >= tiles * k.min(320) / 2, "{stats:?}");
    }
}

/// A program the machine cannot run is refused, naming the cycle and the
/// instruction: here one operand moved a cycle late.
#[test]
fn an_operand_a_cycle_late_is_refused() {
    let config = TspConfig::default();
    let mut seed = 7;
    let weight = QuantizedTensor::quantize("w", 64, 64, &random(&mut seed, 64 * 64), QuantKind::Q35, GroupSize::G32).unwrap();
    let x = random(&mut seed, 64);
    let (_, _, program) = run(&config, &weight, &x, 1);
    let text = program.to_string();
    // The install's input, one cycle later than the dequant writes it.
    let line = text.lines().find(|l| l.contains(" install ")).unwrap();
    let (head, operand) = line.split_once(" in=").unwrap();
    let (stream, rest) = operand.split_once('@').unwrap();
    let (at, len) = rest.split_once('x').unwrap();
    let late = format!("{head} in={stream}@{}x{len}", at.parse::<u64>().unwrap() + 1);
    let broken: Program = text.replace(line, &late).parse().unwrap();
    let mut chip = Chip::new(config);
    let error = chip.run(&broken).unwrap_err().to_string();
    assert!(error.contains("no vector on stream") || error.contains("never read"), "{error}");
    assert!(error.contains("TSP program, cycle"), "{error}");
}

/// Decode (one token) of SmolLM2's MLP shapes: the schedule's cycles
/// against the install bound (every weight vector through the MXM planes'
/// install ports), printed for docs/targets.md. Checked: within 4× of it.
#[test]
fn decode_cycles_against_the_install_bound() {
    let config = TspConfig::default();
    let mut seed = 11;
    for (n, k) in [(1536, 576), (576, 1536)] {
        let weight = QuantizedTensor::quantize("w", n, k, &random(&mut seed, n * k), QuantKind::Q35, GroupSize::G128).unwrap();
        let x = random(&mut seed, k);
        let (_, stats, _) = run(&config, &weight, &x, 1);
        let bound = stats.installed_vectors / (config.mxm_planes * config.install_vectors_per_cycle) as u64;
        eprintln!("{n}x{k} decode: {} cycles, install bound {bound} ({:.0} % of the bound)", stats.cycles, 100.0 * bound as f64 / stats.cycles as f64);
        assert!(stats.cycles <= 4 * bound + 2000, "{} cycles against a bound of {bound}", stats.cycles);
    }
}
