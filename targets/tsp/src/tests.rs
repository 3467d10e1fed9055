//! Scheduled matmuls run on q35-rt's simulator, from their program text,
//! against the integer path's arithmetic in f64.

use crate::matmul::{schedule, Activations, Matrix, Placed, Planes, Sram};
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
    run_striped(config, weight, x, tokens, 0)
}

/// [`run`], with y tile by tile over whole slices, `striped` tiles a
/// slice (as a chunk's logits), if not 0.
fn run_striped(config: &TspConfig, weight: &QuantizedTensor, x: &[f32], tokens: usize, striped: u32) -> (Vec<f32>, RunStats, Program) {
    let lanes = config.lanes();
    let (n, k) = (weight.rows(), weight.cols());
    let (ktiles, ntiles) = (k.div_ceil(lanes), n.div_ceil(lanes));
    let mut sram = Sram::new(config);
    let xs = sram.alloc(4 * (tokens * ktiles) as u32).unwrap();
    let ys = match striped {
        0 => sram.alloc(4 * (tokens * ntiles) as u32).unwrap(),
        per => (sram.alloc_span(ntiles.div_ceil(per as usize) as u32 * config.rows_per_slice() as u32).unwrap().0, 0),
    };
    let mut placed = Placed::default();
    let mut reservations = Reservations::new(config);
    let activations = Activations { x: xs, y: ys, y_striped: striped };
    let matrix = Matrix { name: "w".into(), rows: n, cols: k, kind: weight.kind(), group: weight.group() };
    let (instrs, _) = schedule(config, &matrix, tokens, activations, &mut sram, &mut placed, &mut reservations, &mut Planes::new(config), 0).unwrap();
    let program = Program { lanes, config: None, placements: placed.placements, io: Vec::new(), tokens: tokens as u32, instrs, dispatches: Vec::new(), chip: 0, chips: 1, first_dispatch: 0 };
    // What runs is the text.
    let parsed: Program = program.to_string().parse().unwrap();
    assert_eq!(parsed, program);

    let mut chip = Chip::new(config.clone());
    for placement in &parsed.placements {
        let bytes = q35_format::tsp::image::placement_bytes(placement, weight, lanes).unwrap();
        chip.load(placement.slice as usize, placement.row, &bytes).unwrap();
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
            let io = q35_format::tsp::Io { name: "y".into(), slice: ys.0 as u16, row: ys.1, width: n as u32, striped };
            let (slice, row) = io.vector_at(t, nt, tokens, lanes);
            let bytes = chip.rows(slice, row, 4);
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
        // 162 groups: a token's scalars take two vectors (160 groups each).
        (40, 5184, QuantKind::Q35, GroupSize::G32, 2),
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

/// Logits too wide for one MEM slice go tile by tile over whole slices:
/// the same values, where `Io::vector_at` says.
#[test]
fn a_striped_output_holds_the_same_values() {
    let config = TspConfig::default();
    let mut seed = 3;
    let (n, k, tokens) = (1000, 320, 3);
    let weight = QuantizedTensor::quantize("w", n, k, &random(&mut seed, n * k), QuantKind::Q35, GroupSize::G64).unwrap();
    let x = random(&mut seed, tokens * k);
    let (plain, _, _) = run(&config, &weight, &x, tokens);
    // 4 tiles, 3 a slice: two slices.
    let (striped, _, _) = run_striped(&config, &weight, &x, tokens, 3);
    assert_eq!(plain, striped);
    check(&weight, &x, &striped, tokens);
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

/// The VXM row ops, each brought its operands from SRAM and its result
/// put back by `rows::place`, run as one program text: an embedding
/// gather, RMSNorm, RoPE into a key cache by position, attention over it,
/// SwiGLU. Each result against the same arithmetic done here in f64.
#[test]
fn row_ops_through_sram_match_plain_arithmetic() {
    use crate::rows::{place, Sink, Source};
    use q35_format::tsp::{tile, Elem, Op, RowFunction};
    let config = TspConfig::default();
    let lanes = config.lanes();
    let mut seed = 5;
    let (vocab, width, head_dim, context) = (40usize, 96usize, 32usize, 8usize);
    let table = QuantizedTensor::quantize("emb", vocab, width, &random(&mut seed, vocab * width), QuantKind::Q35, GroupSize::G32).unwrap();
    let ids = [5i32, 17, 3];
    let positions = [0i32, 1, 2];
    let t = ids.len() as u32;
    let f32_row = |v: &[f32]| {
        let mut v = v.to_vec();
        v.resize(lanes, 0.0);
        to_rows(&Vector::F32(v))
    };
    let i32_row = |v: &[i32]| {
        let mut v = v.to_vec();
        v.resize(lanes, 0);
        to_rows(&Vector::I32(v))
    };
    let gain: Vec<f32> = random(&mut seed, width).iter().map(|g| 1.0 + g / 4.0).collect();
    let mut chip = Chip::new(config.clone());
    // Slices: 0 table, 1 ids, 2 positions, 3 gain, 4.. activations.
    for n in 0..vocab {
        chip.load(0, n as u32, &tile::pack_row(&table, n)).unwrap();
    }
    chip.load(1, 0, &i32_row(&ids)).unwrap();
    chip.load(2, 0, &i32_row(&positions)).unwrap();
    chip.load(3, 0, &f32_row(&gain)).unwrap();
    let rows = |slice: usize, len: u32| Source::Rows { slice, addr: 0, stride: 0, elem: Elem::F32, len };
    let at = |slice: usize| Sink::Rows { slice, addr: 0, stride: 0 };
    let mut reservations = Reservations::new(&config);
    let mut instrs = Vec::new();
    let mut step = |op: Op, sources: &[Source], out: (Elem, u32), sink: Sink| {
        let not_before = instrs.iter().map(q35_format::tsp::Instr::end).max().unwrap_or(0);
        instrs.extend(place(&config, &mut reservations, op, sources, out, sink, not_before).unwrap());
    };
    let per = 1;
    step(
        Op::RowDequant { kind: QuantKind::Q35, group: 32, width: width as u32, per },
        &[Source::Gathered { index: (1, 0), slice: 0, slices: 1, addr: 0, stride: 1, per, elem: Elem::I8, items: t }],
        (Elem::F32, t),
        at(4),
    );
    step(Op::Norm { width: width as u32, eps: 1e-5 }, &[rows(4, t), rows(3, 1)], (Elem::F32, t), at(5));
    // Keys: RoPE of the normed rows' first head, scattered by position
    // into a cache of `context` rows (slice 7); the queries: all heads.
    step(Op::Rope { width: width as u32, head_dim: head_dim as u32, theta: 10000.0 }, &[rows(5, t), Source::Rows { slice: 2, addr: 0, stride: 0, elem: Elem::I32, len: 1 }], (Elem::F32, t), Sink::Scattered { index: (2, 0), slice: 7, addr: 0, stride: 4, per: 1 });
    step(Op::Rope { width: width as u32, head_dim: head_dim as u32, theta: 10000.0 }, &[rows(5, t), Source::Rows { slice: 2, addr: 0, stride: 0, elem: Elem::I32, len: 1 }], (Elem::F32, t), at(6));
    step(
        Op::Attention { heads: 3, kv_heads: 1, head_dim: head_dim as u16, context: context as u32 },
        &[rows(6, t), rows(7, context as u32), rows(7, context as u32), Source::Rows { slice: 2, addr: 0, stride: 0, elem: Elem::I32, len: 1 }],
        (Elem::F32, t),
        at(8),
    );
    step(Op::Elementwise { function: RowFunction::SwiGlu, width: width as u32 }, &[rows(8, t), rows(4, t)], (Elem::F32, t), at(9));
    let program: Program = Program { lanes, config: None, placements: Vec::new(), io: Vec::new(), tokens: t, instrs, dispatches: Vec::new(), chip: 0, chips: 1, first_dispatch: 0 }.to_string().parse().unwrap();
    chip.run(&program).unwrap();

    let read = |slice: usize, count: usize| -> Vec<Vec<f32>> {
        (0..count)
            .map(|i| match q35_rt::targets::tsp::sim::from_rows(Elem::F32, chip.rows(slice, 4 * i as u32, 4), lanes) {
                Vector::F32(v) => v[..width].to_vec(),
                _ => unreachable!(),
            })
            .collect()
    };
    let w = table.dequantize();
    let x: Vec<Vec<f32>> = ids.iter().map(|&id| w[id as usize * width..(id as usize + 1) * width].to_vec()).collect();
    assert_eq!(read(4, 3), x, "embedding rows");
    let normed: Vec<Vec<f32>> = x
        .iter()
        .map(|r| {
            let inv = 1.0 / (r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / width as f64 + 1e-5).sqrt();
            r.iter().zip(&gain).map(|(&v, &g)| (v as f64 * inv * g as f64) as f32).collect()
        })
        .collect();
    assert_eq!(read(5, 3), normed, "RMSNorm");
    let roped: Vec<Vec<f32>> = normed
        .iter()
        .zip(positions)
        .map(|(r, p)| {
            let mut r = r.clone();
            for h in r.chunks_mut(head_dim) {
                for i in 0..head_dim / 2 {
                    let angle = p as f64 * 10000f64.powf(-2.0 * i as f64 / head_dim as f64);
                    let (a, b) = (h[i] as f64, h[i + head_dim / 2] as f64);
                    h[i] = (a * angle.cos() - b * angle.sin()) as f32;
                    h[i + head_dim / 2] = (b * angle.cos() + a * angle.sin()) as f32;
                }
            }
            r
        })
        .collect();
    assert_eq!(read(6, 3), roped, "RoPE");
    // Attention: the cache holds each position's roped first head.
    for (tok, q) in roped.iter().enumerate() {
        let out = &read(8, 3)[tok];
        for h in 0..3 {
            let scores: Vec<f64> = (0..=tok).map(|p| (0..head_dim).map(|d| q[h * head_dim + d] as f64 * roped[p][d] as f64).sum::<f64>() / (head_dim as f64).sqrt()).collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            for d in 0..head_dim {
                let want = (0..=tok).map(|p| e[p] * roped[p][d] as f64).sum::<f64>() / e.iter().sum::<f64>();
                assert!((out[h * head_dim + d] as f64 - want).abs() <= 1e-6 * want.abs().max(1.0), "attention token {tok} head {h} dim {d}");
            }
        }
    }
    let swiglu = read(9, 3);
    for (tok, row) in swiglu.iter().enumerate() {
        for (i, &v) in row.iter().enumerate() {
            let (a, b) = (read(8, 3)[tok][i], x[tok][i]);
            assert_eq!(v, a / (1.0 + (-a).exp()) * b, "SwiGLU");
        }
    }
}

/// The listing of one small matmul (32 × 96 q35, groups of 32, one
/// token), pinned: quantize once, then per tile the install chain
/// (read → dequant → install) and the multiply chain (read codes →
/// multiply per group segment → accumulate → write).
#[test]
fn small_matmul_listing() {
    let config = TspConfig::default();
    let mut seed = 3;
    let weight = QuantizedTensor::quantize("w", 32, 96, &random(&mut seed, 32 * 96), QuantKind::Q35, GroupSize::G32).unwrap();
    let x = random(&mut seed, 96);
    let (_, _, program) = run(&config, &weight, &x, 1);
    insta::assert_snapshot!(program.to_string());
}

/// A vector crosses the link to the next chip: it arrives
/// `link_latency` cycles after the link is through with its bytes (an f32
/// vector is 4 × 320 bytes, 4 cycles at 320 bytes a cycle), and a recv
/// that puts it on its stream a cycle before that is refused.
#[test]
fn a_vector_on_the_link_arrives_when_the_link_model_says() {
    let config = TspConfig::default();
    let sender: Program = "q35-tsp-program 2 lanes=320\nchip 0 of 2 first-dispatch 0\n0 MEM0 read addr=0 out=S0:f32@5x1\n5 LINK0 send in=S0:f32@0x1\n".parse().unwrap();
    let receiver = |cycle: u64| -> Program { format!("q35-tsp-program 2 lanes=320\nchip 1 of 2 first-dispatch 0\n{cycle} LINK0 recv out=S0:f32@0x1\n{cycle} MEM3 write addr=8 in=S0:f32@0x1\n").parse().unwrap() };
    let mut first = Chip::new(config.clone());
    let values: Vec<f32> = (0..320).map(|i| i as f32 - 7.5).collect();
    first.load(0, 0, &to_rows(&Vector::F32(values.clone()))).unwrap();
    first.run(&sender).unwrap();
    let sent = first.take_sent();
    let arrival = 5 + 4 + config.link_latency;
    assert_eq!(sent.iter().map(|(a, _)| *a).collect::<Vec<_>>(), vec![arrival]);

    let mut second = Chip::new(config.clone());
    second.receive(sent.clone());
    second.run(&receiver(arrival)).unwrap();
    let got = q35_rt::targets::tsp::sim::from_rows(q35_format::tsp::Elem::F32, second.rows(3, 8, 4), 320);
    assert_eq!(got, Vector::F32(values));

    let mut early = Chip::new(config);
    early.receive(sent);
    let error = early.run(&receiver(arrival - 1)).unwrap_err().to_string();
    assert!(error.contains(&format!("arrives at cycle {arrival}")), "{error}");
}
