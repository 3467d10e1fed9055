//! `q35-rt calibrate` on the tiny model: the per-column mean squares the
//! executor hook collects from the compiled code equal those of the
//! reference forward pass on the artifact's own weights, cover every
//! matrix a matmul kernel multiplies, and the written file is what
//! `q35c --quant-importance` reads.
//!
//! Tolerance: the compiled code and the reference differ only in f32
//! rounding (see cpu.rs), so the mean squares agree to well under 1e-3 of
//! each matrix's largest column.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use q35_format::artifact::Manifest;
use q35_format::{GroupSize, QuantKind, QuantSearch};
use q35_rt::calibrate::{
    calibrate_file, calibrate_text, session_tokenizer, text_tokens, write_importance,
    CalibrationError, CalibrationOptions, CalibrationReport, MATMUL_PREFIX,
};
use q35_rt::check::reference_for;
use q35_rt::executor::Session;
use q35_tests::TinyModel;
use q35c::front::testmodel::TinySpec;

const TEXT: &str = "The quick brown fox jumps over the lazy dog. Calibration text, \
                    with numbers 0123456789 and punctuation!? Then a second sentence.";
const BOUND: f64 = 1e-3;

/// Mean x² per column of every matrix input, from the reference forward
/// pass on `path`'s weights, over the same windows as `calibrate_text`.
fn reference_importance(
    path: &Path,
    session: &Session,
    options: &CalibrationOptions,
) -> BTreeMap<String, Vec<f64>> {
    let mut reference = reference_for(path).unwrap();
    let tokenizer = session_tokenizer(session).unwrap();
    let text = text_tokens(session, &tokenizer, TEXT);
    let used = &text.tokens[..text.tokens.len().min(options.tokens)];
    let mut sums: BTreeMap<String, (Vec<f64>, usize)> = BTreeMap::new();
    for window in used.chunks(options.context.unwrap()) {
        let mut window = window.to_vec();
        if let Some(bos) = text.bos {
            window[0] = bos;
        }
        reference.reset();
        reference
            .forward_observed(&window, 0, &mut |name, x| {
                let entry = sums
                    .entry(name.to_string())
                    .or_insert_with(|| (vec![0.0; x.len()], 0));
                entry
                    .0
                    .iter_mut()
                    .zip(x)
                    .for_each(|(s, &v)| *s += f64::from(v) * f64::from(v));
                entry.1 += 1;
            })
            .unwrap();
    }
    sums.into_iter()
        .map(|(name, (s, rows))| (name, s.into_iter().map(|v| v / rows as f64).collect()))
        .collect()
}

/// Packed weights some `dequant_matmul*` dispatch multiplies, with their K.
fn matmul_weights(manifest: &Manifest) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for d in manifest
        .dispatches
        .iter()
        .filter(|d| d.kernel.starts_with(MATMUL_PREFIX))
    {
        for name in &d.buffers[1..] {
            if let Some(w) = manifest
                .weights
                .iter()
                .find(|w| &w.name == name && w.rows > 1)
            {
                out.insert(name.clone(), w.cols);
            }
        }
    }
    out
}

fn check_against_reference(
    path: &Path,
    report: &CalibrationReport,
    session: &Session,
    options: &CalibrationOptions,
) {
    let manifest = session.manifest();
    let expected = matmul_weights(manifest);
    assert_eq!(
        report.importance.keys().collect::<BTreeSet<_>>(),
        expected.keys().collect::<BTreeSet<_>>(),
        "one entry per matrix a matmul multiplies"
    );
    let oracle = reference_importance(path, session, options);
    for (name, values) in &report.importance {
        assert_eq!(
            values.len(),
            expected[name],
            "`{name}`: one value per input column"
        );
        assert!(
            values.iter().all(|v| v.is_finite() && *v >= 0.0),
            "`{name}`: {values:?}"
        );
        let want = &oracle[name];
        let scale = want.iter().copied().fold(0f64, f64::max);
        assert!(scale > 0.0, "`{name}`: all-zero inputs");
        for (c, (&got, &want)) in values.iter().zip(want).enumerate() {
            assert!(
                (f64::from(got) - want).abs() <= BOUND * scale,
                "`{name}` column {c}: compiled {got}, reference {want} (max {scale})"
            );
        }
    }
}

#[test]
fn calibration_matches_the_reference_and_round_trips() {
    let tiny = TinyModel::new().unwrap();
    // max_tokens 8 < the window: each window is prefilled in chunks.
    let options = CalibrationOptions {
        tokens: 40,
        context: Some(24),
        hessians: false,
    };
    // The default tiny model is untied: its embedding table is only looked
    // up (no entry), its LM head is multiplied.
    for (quant, group, fuse) in [
        (QuantKind::F32, GroupSize::Channel, true),
        (QuantKind::Q35, GroupSize::G32, true),
        (QuantKind::F16, GroupSize::Channel, false),
    ] {
        let artifact = tiny.compile_with(quant, group, 8, fuse).unwrap();
        let mut session = Session::load(&artifact, 2).unwrap();
        let report = calibrate_text(&mut session, TEXT, "text", &options, |_, _| {}).unwrap();
        assert_eq!(
            (report.tokens, report.windows, report.context),
            (40, 2, 24),
            "{quant}"
        );
        check_against_reference(&artifact, &report, &session, &options);
        assert!(report.importance.contains_key("lm_head.weight"));
        assert!(!report.importance.contains_key("model.embed_tokens.weight"));

        // The file is what q35c reads, and every entry fits its matrix.
        let out = tiny.dir.path().join(format!("imp-{quant}.json"));
        write_importance(&out, &report.importance).unwrap();
        let loaded = q35c::importance::load(&out).unwrap();
        assert_eq!(loaded, report.importance, "{quant}: JSON round trip");
        for w in &session.manifest().weights {
            if let Some(values) = loaded.get(&w.name) {
                let data = vec![0.25f32; w.rows * w.cols];
                q35c::importance::quantize(
                    &w.name,
                    w.rows,
                    w.cols,
                    &data,
                    QuantKind::Q35,
                    GroupSize::G32,
                    QuantSearch::None,
                    Some(&loaded),
                )
                .unwrap_or_else(|e| panic!("`{}` ({} values): {e}", w.name, values.len()));
            }
        }
    }
}

#[test]
fn tied_head_is_calibrated_under_the_embedding_name() {
    let tiny = TinyModel::with(TinySpec {
        tie_word_embeddings: true,
        ..TinySpec::default()
    })
    .unwrap();
    let artifact = tiny
        .compile(QuantKind::F32, GroupSize::Channel, 16)
        .unwrap();
    let mut session = Session::load(&artifact, 1).unwrap();
    let options = CalibrationOptions {
        tokens: 1000,
        context: Some(32),
        hessians: false,
    };
    let report = calibrate_text(&mut session, TEXT, "text", &options, |_, _| {}).unwrap();
    // The whole text, fewer tokens than asked for.
    assert!(
        report.tokens < 1000 && report.tokens >= report.text_tokens,
        "{report:?}"
    );
    assert_eq!(report.windows, report.tokens.div_ceil(32));
    assert!(!report.importance.contains_key("lm_head.weight"));
    assert_eq!(report.importance["model.embed_tokens.weight"].len(), 64);
    check_against_reference(&artifact, &report, &session, &options);
}

#[test]
fn one_token_gives_the_normed_embedding_row_squared() {
    let tiny = TinyModel::new().unwrap();
    let artifact = tiny
        .compile(QuantKind::F32, GroupSize::Channel, 16)
        .unwrap();
    check_one_token(&artifact);
}

#[test]
fn the_integer_path_is_calibrated_where_its_inputs_are_quantized() {
    // Its matmuls bind int8 codes; calibration reads the f32 rows at the
    // quantize dispatch. The first layer's input does not depend on the
    // activation mode, so the check is the same.
    if !q35_tests::int8_path_or_skip() {
        return;
    }
    let tiny = TinyModel::new().unwrap();
    let artifact = tiny.compile_int8(QuantKind::Q35, GroupSize::G32, 16).unwrap();
    check_one_token(&artifact);
}

/// Independent of the reference's forward pass: with one token, the first
/// layer's q/k/v input is rms_norm(embedding row) · gain.
fn check_one_token(artifact: &Path) {
    let mut session = Session::load(artifact, 2).unwrap();
    let options = CalibrationOptions {
        tokens: 1,
        context: None,
        hessians: false,
    };
    let report = calibrate_text(&mut session, "Q", "text", &options, |_, _| {}).unwrap();
    assert_eq!((report.tokens, report.windows), (1, 1));
    let tokenizer = session_tokenizer(&session).unwrap();
    let token = text_tokens(&session, &tokenizer, "Q").tokens[0] as usize;
    let weights = q35_rt::check::ArtifactWeights::load(artifact).unwrap().tensors;
    let hidden = session.manifest().model.hidden_size;
    let eps = session.manifest().model.rms_norm_eps;
    let embed = &weights["model.embed_tokens.weight"].dequantize();
    let gain = &weights["model.layers.0.input_layernorm.weight"].dequantize();
    let h = q35_rt::reference::rms_norm(&embed[token * hidden..(token + 1) * hidden], gain, eps);
    for proj in ["q_proj", "k_proj", "v_proj"] {
        let got = &report.importance[&format!("model.layers.0.self_attn.{proj}.weight")];
        for (c, (&g, &x)) in got.iter().zip(&h).enumerate() {
            let want = f64::from(x) * f64::from(x);
            assert!(
                (f64::from(g) - want).abs() <= 1e-4 * want.max(1e-3),
                "{proj}[{c}]: {g} vs {want}"
            );
        }
    }
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let tiny = TinyModel::new().unwrap();
    let artifact = tiny
        .compile(QuantKind::F32, GroupSize::Channel, 16)
        .unwrap();
    let mut session = Session::load(&artifact, 1).unwrap();
    let dir = tiny.dir.path();
    let out = dir.join("imp.json");
    let run = |session: &mut Session, text: &Path, options: &CalibrationOptions| {
        calibrate_file(session, text, options, |_, _| {})
            .and_then(|r| write_importance(&out, &r.importance))
    };
    let options = CalibrationOptions::default();

    let missing = dir.join("no-such-text.txt");
    let err = run(&mut session, &missing, &options).unwrap_err();
    assert!(matches!(err, CalibrationError::ReadText { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read {}", missing.display())),
        "{err}"
    );

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let err = run(&mut session, &empty, &options).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the text is empty (no tokens to calibrate on)",
            empty.display()
        )
    );

    let text = dir.join("text.txt");
    std::fs::write(&text, TEXT).unwrap();
    let err = run(
        &mut session,
        &text,
        &CalibrationOptions {
            tokens: 0,
            context: None,
            hessians: false,
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("--tokens must be at least 1"),
        "{err}"
    );
    let err = run(
        &mut session,
        &text,
        &CalibrationOptions {
            tokens: 8,
            context: Some(10_000),
            hessians: false,
        },
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("--context 10000 is longer than the artifact's context of 128"),
        "{err}"
    );
    assert!(!out.exists(), "no output after a failure");

    // A directory that does not exist: an error naming the file, and no
    // temporary file left behind.
    let report = calibrate_file(&mut session, &text, &options, |_, _| {}).unwrap();
    let nowhere = dir.join("missing-dir").join("imp.json");
    let err = write_importance(&nowhere, &report.importance).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot write {}", nowhere.display())),
        "{err}"
    );

    // Success replaces an existing file and leaves only it.
    std::fs::write(&out, "old").unwrap();
    write_importance(&out, &report.importance).unwrap();
    assert_eq!(q35c::importance::load(&out).unwrap(), report.importance);
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("imp"))
        .collect();
    assert_eq!(names, ["imp.json"]);

    // A model without a tokenizer.
    let bare = TinyModel::with(TinySpec {
        tokenizer: false,
        ..TinySpec::default()
    })
    .unwrap();
    let artifact = bare
        .compile(QuantKind::F32, GroupSize::Channel, 16)
        .unwrap();
    let mut session = Session::load(&artifact, 1).unwrap();
    let err = calibrate_file(&mut session, &text, &options, |_, _| {}).unwrap_err();
    assert!(
        err.to_string().contains("the artifact has no tokenizer"),
        "{err}"
    );
}
