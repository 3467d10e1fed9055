//! The TSP target end to end on the tiny model: q35c schedules it, q35-rt's
//! cycle-exact simulator runs the program text, and two oracles judge it:
//! the reference forward pass on the artifact's weights with int8
//! activations (the TSP's matmuls quantize activations per group exactly
//! as the reference defines), and the CPU integer path, whose greedy
//! tokens the simulator must reproduce.
//!
//! Tolerance: the int8 codes are the reference's own; what differs is f32
//! rounding in the VXM's scaling (a few roundings per group segment) and
//! the norms, so logits agree to ~1e-6 of their size; codes one step apart
//! at a rounding tie would cost more, and 1e-3 of max |logit| still
//! catches any wrong tile, group, position or stream.

use q35_format::{GroupSize, QuantKind};
use q35_rt::{
    check::{compare, reference_for},
    executor::Session,
};
use q35_tests::{int8_path_or_skip, TinyModel};

const BOUND: f64 = 1e-3;
const PROMPT: [u32; 7] = [1, 17, 42, 99, 3, 250, 8];

/// Greedy tokens after `PROMPT`.
fn greedy(session: &mut Session, steps: usize) -> Vec<u32> {
    let argmax = |l: &[f32]| l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap();
    let vocab = session.vocab_size();
    let logits = session.forward(&PROMPT, 0).unwrap().to_vec();
    let mut token = argmax(&logits[logits.len() - vocab..]);
    let mut out = vec![token];
    for i in 0..steps - 1 {
        let logits = session.forward(&[token], PROMPT.len() + i).unwrap().to_vec();
        token = argmax(&logits);
        out.push(token);
    }
    out
}

#[test]
fn the_simulated_program_matches_the_reference_and_the_cpu_integer_path() {
    let tiny = TinyModel::new().unwrap();
    for (quant, group) in [(QuantKind::Q35, GroupSize::G32), (QuantKind::Int4, GroupSize::G64), (QuantKind::Int3, GroupSize::Channel)] {
        let artifact = tiny.compile_tsp(quant, group, 16).unwrap();
        let mut session = Session::load(&artifact, 1).unwrap();
        assert!(session.backend().starts_with("TSP simulator"), "{}", session.backend());
        let mut reference = reference_for(&artifact).unwrap();
        let report = compare(&mut session, &mut reference, &PROMPT, 8).unwrap();
        assert!(!report.non_finite, "{quant} g{group}: non-finite logits");
        assert!(report.relative_error() <= BOUND, "{quant} g{group}: {:.3e} of max |logit| (bound {BOUND})", report.relative_error());
        assert_eq!(report.top1_agreement, report.rows, "{quant} g{group}: greedy tokens differ from the reference's");
        let counted = session.simulated().unwrap();
        assert!(counted.runs as usize >= PROMPT.len() + 8 && counted.cycles > 0, "{counted:?}");

        if int8_path_or_skip() {
            let cpu = tiny.compile_int8(quant, group, 16).unwrap();
            let mut cpu = Session::load(&cpu, 1).unwrap();
            session.reset();
            assert_eq!(greedy(&mut session, 16), greedy(&mut cpu, 16), "{quant} g{group}: TSP and CPU integer-path tokens");
        }
    }
}

/// A machine too small for the model: q35c lays it over a pipeline of
/// chips, each passing the activations live at its cut to the next over
/// the link, and the simulated chips give the one chip's logits bit for
/// bit (the arithmetic is the same; only where it runs differs).
#[test]
fn a_model_too_big_for_a_chip_runs_on_a_pipeline_with_the_same_logits() {
    let tiny = TinyModel::new().unwrap();
    let one = tiny.compile_tsp(QuantKind::Q35, GroupSize::G32, 16).unwrap();
    let small = q35_format::tsp::TspConfig { mem_slices: 16, sram_bytes: 16 * 320 * 512, ..Default::default() };
    let pipeline = tiny.compile_tsp_for(QuantKind::Q35, GroupSize::G32, 16, &small).unwrap();
    let mut one = Session::load(&one, 1).unwrap();
    let mut pipeline = Session::load(&pipeline, 1).unwrap();
    let chips = pipeline.simulated().unwrap().chips;
    assert!(chips >= 2 && pipeline.backend().contains(&format!("{chips} chips in a pipeline")), "{}", pipeline.backend());
    // A prefill chunk (16 tokens a run), then single tokens.
    let prompt: Vec<u32> = (0..20).map(|i| (i * 37 + 5) % 264).collect();
    let a = one.forward(&prompt, 0).unwrap().to_vec();
    let b = pipeline.forward(&prompt, 0).unwrap().to_vec();
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "the pipeline's logits differ from one chip's");
    assert_eq!(greedy(&mut one, 8), greedy(&mut pipeline, 8));
    let mut reference = reference_for(&tiny.compile_tsp_for(QuantKind::Q35, GroupSize::G32, 16, &small).unwrap()).unwrap();
    pipeline.reset();
    let report = compare(&mut pipeline, &mut reference, &PROMPT, 4).unwrap();
    assert!(report.relative_error() <= BOUND && report.top1_agreement == report.rows, "{report:?}");
}

/// The program is the artifact's text: a corrupted instruction is refused
/// when the artifact loads, naming the line.
#[test]
fn a_corrupted_program_is_refused_with_its_line() {
    let tiny = TinyModel::new().unwrap();
    let artifact = tiny.compile_tsp(QuantKind::Q35, GroupSize::G32, 16).unwrap();
    let bytes = std::fs::read(&artifact).unwrap();
    let needle = b" dequant kind=q35";
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("a dequant in the program");
    let mut broken = bytes.clone();
    // `dequant` -> `dequent`: same length, so the container stays valid but
    // for its checksum, which the loader then names.
    broken[at + 5] = b'e';
    let path = artifact.with_extension("broken.q35");
    std::fs::write(&path, &broken).unwrap();
    let error = Session::load(&path, 1).unwrap_err().to_string();
    assert!(error.contains("checksum") || error.contains("unknown operation `dequent`"), "{error}");
}

/// A full chunk runs as one run of the prefill program (every matmul over
/// all its tokens at once); its logits equal running the one-token program
/// token by token, bit for bit (the same codes, sums and VXM steps per
/// token), and it takes fewer cycles a token.
#[test]
fn the_prefill_program_equals_token_by_token() {
    let tiny = TinyModel::new().unwrap();
    let artifact = tiny.compile_tsp(QuantKind::Q35, GroupSize::G32, PROMPT.len()).unwrap();
    let mut session = Session::load(&artifact, 1).unwrap();
    let whole = session.forward(&PROMPT, 0).unwrap().to_vec();
    let counted = session.simulated().unwrap();
    assert_eq!((counted.runs, counted.tokens), (1, PROMPT.len() as u64), "one prefill run");
    session.reset();
    let vocab = session.vocab_size();
    for (i, &token) in PROMPT.iter().enumerate() {
        let logits = session.forward(&[token], i).unwrap().to_vec();
        assert_eq!(logits, whole[i * vocab..(i + 1) * vocab], "token {i}");
    }
    let after = session.simulated().unwrap();
    let by_token = (after.cycles - counted.cycles) as f64 / PROMPT.len() as f64;
    let prefill = counted.cycles as f64 / PROMPT.len() as f64;
    assert!(prefill < by_token, "prefill {prefill} cycles a token, token by token {by_token}");
}
