//! The CPU path end to end on the tiny model: q35c compiles it, q35-rt runs
//! it, and the reference forward pass on the artifact's own dequantized
//! weights is the oracle.
//!
//! Tolerance: the compiled code and the reference use the same weights, so
//! they differ only in f32 rounding. The reference accumulates in f64; the
//! kernels sum in f32 in a reassociated (vectorized) order and use their own
//! exp/rsqrt. A dot product of length K in f32 is off by at most about
//! K·2⁻²⁴·Σ|xᵢwᵢ| (K ≤ 128 here: ~1e-5 relative), and two layers of
//! norms and softmax keep that order of magnitude. The bound,
//! 1e-3 × max |logit|, leaves two orders of magnitude of margin over what
//! this argument allows, and would still catch any wrong index, stride or
//! dropped term (those give errors of the order of the logits).

use q35_format::{GroupSize, QuantKind};
use q35_rt::{
    check::{compare, reference_for, ArtifactWeights},
    dispatch_check::check_matmuls,
    executor::Session,
};
use q35_tests::TinyModel;

const BOUND: f64 = 1e-3;
const PROMPT: [u32; 7] = [1, 17, 42, 99, 3, 250, 8];

fn check(quant: QuantKind, group: GroupSize, threads: usize, decode_steps: usize) {
    check_model(&TinyModel::new().unwrap(), quant, group, threads, decode_steps);
}

fn check_model(tiny: &TinyModel, quant: QuantKind, group: GroupSize, threads: usize, decode_steps: usize) {
    let artifact = tiny.compile(quant, group, 16).unwrap();
    let mut session = Session::load(&artifact, threads).unwrap();
    let mut reference = reference_for(&artifact).unwrap();
    let report = compare(&mut session, &mut reference, &PROMPT, decode_steps).unwrap();
    assert_eq!(report.rows, PROMPT.len() + decode_steps, "{quant} g{group}: rows compared");
    assert!(!report.non_finite, "{quant} g{group}: non-finite logits");
    assert!(
        report.relative_error() <= BOUND,
        "{quant} g{group}: max |error| {} is {:.3e} of max |logit| {} (bound {BOUND})",
        report.max_abs_error,
        report.relative_error(),
        report.max_abs_logit
    );
    assert_eq!(report.top1_agreement, report.rows, "{quant} g{group}: greedy tokens differ");
}

#[test]
fn f32_prefill_and_decode_match_the_reference() {
    check(QuantKind::F32, GroupSize::Channel, 2, 8);
}

#[test]
fn q35_prefill_and_decode_match_the_reference() {
    // 32 decode steps: greedy tokens must be identical over 32 tokens.
    check(QuantKind::Q35, GroupSize::G32, 2, 32);
}

#[test]
fn a_head_size_off_the_vector_width_matches_the_reference() {
    // head_dim 18: attention's weighted sum keeps one 16-lane accumulator
    // and two scalar ones per head.
    let spec = q35c::front::testmodel::TinySpec {
        hidden_size: 72,
        ..Default::default()
    };
    check_model(&TinyModel::with(spec).unwrap(), QuantKind::F32, GroupSize::Channel, 2, 8);
}

#[test]
fn q35_per_channel_one_thread_matches_the_reference() {
    check(QuantKind::Q35, GroupSize::Channel, 1, 8);
}

#[test]
fn int4_int3_and_f16_match_the_reference() {
    check(QuantKind::Int4, GroupSize::G64, 2, 4);
    check(QuantKind::Int3, GroupSize::G32, 2, 4);
    check(QuantKind::F16, GroupSize::Channel, 2, 4);
}

/// Linalg kernels (`q35c --kernels linalg`: every kernel but the KV
/// cache update, fused or not): the same end-to-end bound as the native kernels (their dots
/// are sequential f32 sums, inside the same γ_K argument), and every
/// matmul within its rounding bound on its own inputs.
#[test]
fn linalg_kernels_match_the_reference() {
    let tiny = TinyModel::new().unwrap();
    for (quant, group, fuse) in [
        (QuantKind::Q35, GroupSize::G32, true),
        (QuantKind::Q35, GroupSize::G64, false),
        (QuantKind::Int4, GroupSize::G64, true),
        (QuantKind::Int3, GroupSize::G32, true),
        (QuantKind::F16, GroupSize::Channel, true),
        (QuantKind::F32, GroupSize::Channel, true),
    ] {
        let artifact = tiny.compile_linalg(quant, group, 16, fuse).unwrap();
        let mut session = Session::load(&artifact, 2).unwrap();
        let dispatches = &session.manifest().dispatches;
        let linalg = dispatches.iter().filter(|d| d.kernel.contains("_linalg")).count();
        let matmuls = dispatches.iter().filter(|d| d.kernel.starts_with("dequant_matmul")).count();
        let row_ops = ["rms_norm_", "add_", "swiglu_"];
        let rows = dispatches.iter().filter(|d| row_ops.iter().any(|op| d.kernel.starts_with(op))).count();
        assert!(rows > 0, "{quant} g{group}: no row kernels");
        // Every kernel but the KV cache update (a copy).
        let others = dispatches.iter().filter(|d| !d.kernel.starts_with("kv_update_")).count();
        assert_eq!(linalg, others, "{quant} g{group}: every compute kernel is linalg");
        assert!(matmuls + rows < others);
        let mut reference = reference_for(&artifact).unwrap();
        let report = compare(&mut session, &mut reference, &PROMPT, 8).unwrap();
        assert!(report.relative_error() <= BOUND && !report.non_finite, "{quant} g{group}: {report:?}");
        assert_eq!(report.top1_agreement, report.rows, "{quant} g{group}: greedy tokens differ");
        let ArtifactWeights { tensors: weights, .. } = ArtifactWeights::load(&artifact).unwrap();
        let matmuls_report = check_matmuls(&mut session, &weights, false, &PROMPT, 4).unwrap();
        assert_eq!(matmuls_report.checked, 5 * matmuls, "{quant} g{group}: one prefill and 4 decode calls");
        assert!(matmuls_report.passed(), "{quant} g{group}: {matmuls_report:?}");
    }
}

/// The integer path: every matmul dispatch of every call, on the inputs
/// the compiled model gave it, lies within the f32 rounding bound of exact
/// arithmetic on its int8 activations (q35_rt::dispatch_check); the
/// end-to-end logits differ by quantization noise where an activation sits
/// on a rounding tie, so they are not compared exactly.
#[test]
fn integer_path_matmuls_match_the_reference_on_their_inputs() {
    if !q35_tests::int8_path_or_skip() {
        return;
    }
    let tiny = TinyModel::new().unwrap();
    for (quant, group, width) in [
        (QuantKind::Q35, GroupSize::G32, 32),
        (QuantKind::Q35, GroupSize::Channel, usize::MAX),
        (QuantKind::Int4, GroupSize::G64, 64),
    ] {
        let artifact = tiny.compile_int8(quant, group, 16).unwrap();
        let mut session = Session::load(&artifact, 2).unwrap();
        let matmuls = session.manifest().dispatches.iter().filter(|d| d.kernel.starts_with("dequant_matmul_i8_")).count();
        assert!(matmuls > 0, "{quant} g{group}: no integer-path kernels");
        // Each integer-path matmul carries its int32 accumulator obligation.
        let bytes = std::fs::read(&artifact).unwrap();
        let parsed = q35_format::artifact::Artifact::parse("tiny", &bytes).unwrap();
        let obligations = std::str::from_utf8(parsed.payload(q35_format::artifact::OBLIGATIONS_PAYLOAD).unwrap()).unwrap();
        let weights_read: usize = session
            .manifest()
            .dispatches
            .iter()
            .filter(|d| d.kernel.starts_with("dequant_matmul_i8_"))
            .map(|d| if d.kernel.ends_with("_swiglu") { 2 } else { 1 })
            .sum();
        assert_eq!(obligations.matches("\"accumulator\"").count(), weights_read, "{quant} g{group}: accumulator obligations");
        let ArtifactWeights { tensors: weights, int8, .. } = ArtifactWeights::load(&artifact).unwrap();
        assert!(int8, "{quant} g{group}: the artifact says int8 activations");
        for (name, t) in &weights {
            if t.rows() > 1 {
                assert_eq!(q35_rt::check::int8_activation_group(t), width, "{quant} g{group}: {name}'s activation group");
            }
        }
        let report = check_matmuls(&mut session, &weights, int8, &PROMPT, 8).unwrap();
        assert_eq!(report.checked, 9 * matmuls, "{quant} g{group}: one prefill and 8 decode calls");
        assert!(report.passed(), "{quant} g{group}: {report:?}");
        // The same outputs judged as f32-activation matmuls are far off:
        // the check sees what the activations' quantization does.
        let wrong = check_matmuls(&mut session, &weights, false, &PROMPT, 0).unwrap();
        assert!(wrong.failures > 0, "{quant} g{group}: {wrong:?}");
    }
}

/// Prefill in chunks (as a long prompt is run, max_tokens at a time) gives
/// the same last logits as one call, and the cache carries over.
#[test]
fn chunked_prefill_equals_one_call() {
    let tiny = TinyModel::new().unwrap();
    let artifact = tiny.compile(QuantKind::Q35, GroupSize::G64, 16).unwrap();
    let mut session = Session::load(&artifact, 2).unwrap();
    let whole = session.forward(&PROMPT, 0).unwrap().to_vec();
    let vocab = session.vocab_size();
    session.reset();
    session.forward(&PROMPT[..3], 0).unwrap();
    let chunked = session.forward(&PROMPT[3..], 3).unwrap().to_vec();
    let last = |v: &[f32]| v[v.len() - vocab..].to_vec();
    let (a, b) = (last(&whole), last(&chunked));
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    // Same kernels, same sums: only attention's softmax sees rows in a
    // different grouping, so the results agree to f32 rounding.
    assert!(worst <= 1e-5 * scale, "chunked prefill differs by {worst} (max |logit| {scale})");
}

#[test]
fn more_tokens_than_the_context_are_refused() {
    let tiny = TinyModel::new().unwrap();
    let artifact = tiny.compile(QuantKind::Q35, GroupSize::G64, 16).unwrap();
    let mut session = Session::load(&artifact, 1).unwrap();
    let context = session.context_length();
    // Fill the cache 16 tokens at a time, then ask for one more position.
    for start in (0..context).step_by(16) {
        session.forward(&[5; 16], start).unwrap();
    }
    let error = session.forward(&[1], context).unwrap_err().to_string();
    assert!(error.contains("context is 128 positions"), "{error}");
    let error = session.forward(&[9999], 0).unwrap_err().to_string();
    assert!(error.contains("outside the vocabulary"), "{error}");
}

/// q35-fuse changes the kernels, not the function: the fused artifact has
/// no separate add or SwiGLU dispatch, and its logits equal the unfused
/// artifact's bit for bit (the same dots, then the same f32 add / SwiGLU).
#[test]
fn fused_and_unfused_artifacts_agree_exactly() {
    let tiny = TinyModel::new().unwrap();
    let fused = tiny.compile_with(QuantKind::Q35, GroupSize::G64, 16, true).unwrap();
    let unfused = tiny.compile_with(QuantKind::Q35, GroupSize::G64, 16, false).unwrap();
    let mut a = Session::load(&fused, 2).unwrap();
    let mut b = Session::load(&unfused, 2).unwrap();
    let kernels = |s: &Session| s.manifest().dispatches.iter().map(|d| d.kernel.clone()).collect::<Vec<_>>();
    let (ka, kb) = (kernels(&a), kernels(&b));
    assert!(ka.iter().any(|k| k.ends_with("_swiglu")) && ka.iter().any(|k| k.ends_with("_add")), "{ka:?}");
    assert!(!ka.iter().any(|k| k.starts_with("add_") || k.starts_with("swiglu_")), "{ka:?}");
    // Per layer: two adds and one SwiGLU fold away, and the up projection
    // joins the gate's dispatch.
    let layers = 2;
    assert_eq!(kb.len() - ka.len(), layers * 4, "fused {ka:?}\nunfused {kb:?}");
    let x = a.forward(&PROMPT, 0).unwrap().to_vec();
    let y = b.forward(&PROMPT, 0).unwrap().to_vec();
    assert_eq!(x, y);
    let x = a.forward(&[5], PROMPT.len()).unwrap().to_vec();
    let y = b.forward(&[5], PROMPT.len()).unwrap().to_vec();
    assert_eq!(x, y);
}

/// Rotated matrix inputs (`q35.rotate`): the compiled model against the
/// reference on its own (rotated) weights, which runs the same transforms
/// in f64, within the same bound as every other build.
#[test]
fn rotated_inputs_match_the_reference() {
    let tiny = TinyModel::new().unwrap();
    let artifact = tiny.compile_rotated(QuantKind::Q35, GroupSize::G32, 16).unwrap();
    let mut session = Session::load(&artifact, 2).unwrap();
    let kernels: Vec<String> = session.manifest().dispatches.iter().map(|d| d.kernel.clone()).collect();
    // Per layer after the two norms, attention and SwiGLU; the final norm;
    // the inverse after the embedding.
    assert_eq!(kernels.iter().filter(|k| k.starts_with("rotate_")).count(), 2 * 4 + 2, "{kernels:?}");
    assert!(session.manifest().rotated_inputs);
    q35_tests::assert_matches_reference(&mut session, &artifact, &PROMPT, 16, BOUND);
}

/// The integer path with rotated inputs: int8 activations are quantized
/// after the transform, and every matmul's output lies within its bound
/// on the inputs the compiled model gave it (as the unrotated integer path).
#[test]
fn rotated_integer_path_matmuls_match_the_reference_on_their_inputs() {
    if !q35_tests::int8_path_or_skip() {
        return;
    }
    let tiny = TinyModel::new().unwrap();
    let artifact = tiny.compile_rotated_with(QuantKind::Q35, GroupSize::G32, 16, true).unwrap();
    let mut session = Session::load(&artifact, 2).unwrap();
    assert!(session.manifest().rotated_inputs);
    let matmuls = session.manifest().dispatches.iter().filter(|d| d.kernel.starts_with("dequant_matmul_i8_")).count();
    assert!(matmuls > 0);
    let ArtifactWeights { tensors: weights, int8, .. } = ArtifactWeights::load(&artifact).unwrap();
    let report = check_matmuls(&mut session, &weights, int8, &PROMPT, 8).unwrap();
    assert_eq!(report.checked, 9 * matmuls);
    assert!(report.passed(), "{report:?}");
    // End to end, against the reference with the same rotations and int8
    // activations: the greedy tokens agree (the logits differ by
    // activation rounding noise, which `integer_path_...` explains).
    let mut reference = reference_for(&artifact).unwrap();
    let e2e = compare(&mut session, &mut reference, &PROMPT, 0).unwrap();
    assert!(e2e.top1_agreement + 1 >= e2e.rows, "{e2e:?}");
}

/// The rotation changes the stored weights, not the function: the f32
/// build with rotated inputs against the reference on the unrotated source
/// weights. Each weight is rotated in f64 and rounded once to f32 (2⁻²⁴
/// relative), each transform in the kernels adds a few f32 roundings per
/// element (log₂ n butterfly levels, 12-term sums), so through two layers
/// the logits stay within ~1e-6 of max |logit|; 1e-4 (the bound)
/// is far above that and far below any misplaced sign or index.
#[test]
fn rotated_f32_model_computes_the_source_function() {
    let tiny = TinyModel::new().unwrap();
    let artifact = tiny.compile_rotated(QuantKind::F32, GroupSize::Channel, 16).unwrap();
    let mut session = Session::load(&artifact, 2).unwrap();
    let model = q35c::front::load(&tiny.model).unwrap();
    let weights = q35_rt::reference::SafetensorsWeights::open(&tiny.model).unwrap();
    let mut unrotated = q35_rt::reference::Reference::new(model.config.clone(), &weights).unwrap();
    let report = compare(&mut session, &mut unrotated, &PROMPT, 8).unwrap();
    assert!(report.relative_error() <= 1e-4, "{:.3e}", report.relative_error());
    assert_eq!(report.top1_agreement, report.rows);
}
