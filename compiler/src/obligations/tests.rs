use super::*;
use crate::{
    codegen,
    emit::{emit_module, EmitOptions, Group},
    front::{self, testmodel},
    graph::ModelGraph,
    pipeline::{RunOptions, Timings},
};
use q35_dialect::Q35Context;
use q35_format::artifact::{write_artifact, Artifact, DispatchSpec};
use std::sync::OnceLock;

#[test]
fn k_max_matches_the_coq_constants() {
    assert_eq!(k_max(15), K_MAX_15);
    assert_eq!(k_max(7), K_MAX_7);
    assert_eq!(k_max(SCALED_CODE_BOUND), K_MAX_105);
    const { assert!(1920 * K_MAX_15 <= I32_MAX && 1920 * (K_MAX_15 + 1) > I32_MAX) };
}

#[test]
fn pow2_and_reals_are_exact() {
    assert_eq!(pow2_decimal(0), "1");
    assert_eq!(pow2_decimal(10), "1024");
    assert_eq!(pow2_decimal(126), "85070591730234615865843651857942052864");
    assert_eq!(smt_real(0.0), "0.0");
    assert_eq!(smt_real(0.5), "(/ 1.0 2.0)");
    assert_eq!(smt_real(-3.0), "(- 3.0)");
    assert_eq!(smt_real(2f64.powi(60)), "(* 4503599627370496.0 256.0)");
    assert_eq!(smt_real(65504.0), "65504.0");
    assert_eq!(smt_real(0.1f32 as f64), "(/ 13421773.0 134217728.0)");
}

/// Reals must survive the JSON round trip bit for bit (serde_json's
/// `float_roundtrip`), or stored and re-derived obligations differ.
#[test]
fn reals_round_trip_through_json() {
    let awkward = [0.11466264724731445, 7.5692097557650715e-3, 1.0 / 3.0, 5e-324, 1.7976931348623157e308];
    let set = ObligationSet::new(vec![Obligation {
        id: "x".into(),
        kind: Kind::Dequant,
        theorem: "t".into(),
        params: awkward.iter().enumerate().map(|(i, &v)| (format!("p{i}"), Param::Real(v))).collect(),
    }]);
    assert_eq!(ObligationSet::from_json(&set.to_json()).unwrap(), set);
}

#[test]
fn integer_path_is_refused_above_k_max() {
    let at_limit = integer_matmul("synthetic", 8, K_MAX_15 as u64, QuantKind::Q35).unwrap();
    assert_eq!(at_limit.params["k_max"], Param::Int(1_118_481));
    prove_all(&[at_limit]).unwrap();
    let e = integer_matmul("synthetic", 8, K_MAX_15 as u64 + 1, QuantKind::Q35).unwrap_err();
    assert!(e.contains("K = 1118482") && e.contains("K_max = 1118481") && e.contains("Accum.accum_no_overflow_C15"), "{e}");
    // int3 codes: |code - zero point| <= 7 gives the larger bound.
    integer_matmul("synthetic", 8, K_MAX_7 as u64, QuantKind::Int3).unwrap();
    let e = integer_matmul("synthetic", 8, K_MAX_7 as u64 + 1, QuantKind::Int3).unwrap_err();
    assert!(e.contains("K_max = 2396745"), "{e}");
    let e = integer_matmul("synthetic", 8, 64, QuantKind::F16).unwrap_err();
    assert!(e.contains("needs integer codes"), "{e}");
    // The CPU integer path's scaled codes (at most 7·15 = 15·7 = 105).
    let at_limit = scaled_integer_matmul("synthetic", 8, K_MAX_105 as u64, QuantKind::Q35).unwrap();
    assert_eq!(at_limit.params["code_bound"], Param::Int(105));
    prove_all(&[at_limit]).unwrap();
    let e = scaled_integer_matmul("synthetic", 8, K_MAX_105 as u64 + 1, QuantKind::Int4).unwrap_err();
    assert!(e.contains("K_max = 159783") && e.contains("Accum.accum_no_overflow_C105"), "{e}");
}

/// A stored accumulator obligation with K above the bound is not proved.
#[test]
fn z3_rejects_an_accumulator_above_the_bound() {
    let mut o = integer_matmul("synthetic", 8, 4096, QuantKind::Q35).unwrap();
    o.params.insert("k".into(), Param::Int(K_MAX_15 + 1));
    let e = prove_all(&[o.clone()]).unwrap_err();
    assert!(e.contains("obligation `accumulator/synthetic` is not proved (z3: sat)"), "{e}");
    o.params.insert("k_max".into(), Param::Int(K_MAX_15 + 1));
    assert!(prove_all(&[o]).is_err(), "k_max is checked against 2^31 - 1, not trusted");
}

fn i8_module(k: u64) -> String {
    format!(
        r#"func.func @f(%x: tensor<4x{k}xi8>, %s: tensor<4xf32>) -> tensor<4x8xf32> {{
  %w = "q35.weight"() {{name = "model.layers.0.mlp.down_proj.weight"}} : () -> !q35.packed<8 : i64, {k} : i64, 128 : i64, "q35", "planar">
  %y = "q35.dequant_matmul_i8"(%x, %s, %w) {{acc_len = 128 : i64}} : (tensor<4x{k}xi8>, tensor<4xf32>, !q35.packed<8 : i64, {k} : i64, 128 : i64, "q35", "planar">) -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}}"#
    )
}

#[test]
fn integer_ops_in_the_ir_are_checked() {
    let q35 = Q35Context::new().unwrap();
    let ok = q35.parse(&i8_module(K_MAX_15 as u64), "ok.mlir").unwrap();
    let found = check_integer_ops(&ok).unwrap();
    assert_eq!(found.len(), 1);
    assert!(found[0].id.starts_with("accumulator/model.layers.0.mlp.down_proj.weight at "), "{}", found[0].id);
    let bad = q35.parse(&i8_module(K_MAX_15 as u64 + 1), "bad.mlir").unwrap();
    let e = check_integer_ops(&bad).unwrap_err();
    assert!(e.starts_with("`model.layers.0.mlp.down_proj.weight at ") && e.contains(":3:8` (8x1118482 q35)"), "{e}");
    assert!(e.contains("above the proven limit K_max = 1118481"), "{e}");
}

/// A 3x80 q35 weight in groups of 32: two full groups and a tail of 16.
fn small_weight() -> (QuantizedTensor, PackedType) {
    let data: Vec<f32> = (0..240).map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0).collect();
    let tensor = QuantizedTensor::quantize("w", 3, 80, &data, QuantKind::Q35, GroupSize::G32).unwrap();
    let packed = PackedType::from_str(r#"!q35.packed<3 : i64, 80 : i64, 32 : i64, "q35", "planar">"#).unwrap();
    (tensor, packed)
}

fn small_obligations() -> Vec<Obligation> {
    let (tensor, packed) = small_weight();
    let Payload::Coded { codes, .. } = tensor.payload() else { unreachable!() };
    let mut out = vec![layout_obligation("w", &tensor, &packed, codes.len())];
    out.extend(dequant_obligations("w", &tensor).unwrap());
    let dispatch = DispatchSpec {
        kernel: "dequant_matmul_q35_3x80_g32_r2".into(),
        workgroups: 2,
        workgroups_per_token: 0,
        buffers: vec!["x".into(), "w".into(), "y".into()],
        concurrent: false,
    };
    out.push(tiling_obligation(4, &dispatch, "w", &packed, 2));
    out.push(integer_matmul("w", 3, 80, QuantKind::Q35).unwrap());
    out
}

#[test]
fn obligations_of_a_small_weight() {
    let obligations = small_obligations();
    let layout = &obligations[0];
    assert_eq!(layout.id, "layout/w");
    for (name, value) in [("groups", 3), ("tail", 16), ("g", 32), ("full_block", 14), ("tail_block", 7), ("row_bytes", 35), ("code_bytes", 105)] {
        assert_eq!(layout.params[name], Param::Int(value), "{name}");
    }
    let tiling = obligations.iter().find(|o| o.kind == Kind::Tiling).unwrap();
    assert_eq!(tiling.id, "tiling/dispatch 4/w");
    assert_eq!(tiling.params["full_tiles_k"], Param::Int(2));
    assert_eq!(tiling.params["rem_k"], Param::Int(16));
    let levels: Vec<_> = obligations.iter().filter(|o| o.kind == Kind::Dequant).map(|o| o.params["l"].clone()).collect();
    assert_eq!(levels, [Param::Int(15), Param::Int(7)]);
    prove_all(&obligations).unwrap();
}

#[test]
fn smt_text_of_each_kind() {
    let obligations = small_obligations();
    let mut text = String::from(SMT_PRELUDE);
    for kind in Kind::ALL {
        text.push_str(&smt_text(obligations.iter().find(|o| o.kind == kind).unwrap()).unwrap());
    }
    insta::assert_snapshot!(text);
}

/// Each side condition is really checked: breaking one constant makes z3
/// find the condition false.
#[test]
fn z3_rejects_broken_constants() {
    let obligations = small_obligations();
    let broken = |kind: Kind, name: &str, value: Param| {
        let mut o = obligations.iter().find(|o| o.kind == kind).unwrap().clone();
        o.params.insert(name.into(), value);
        o
    };
    let cases = [
        broken(Kind::Layout, "tail", Param::Int(17)),
        broken(Kind::Layout, "row_bytes", Param::Int(36)),
        broken(Kind::Layout, "kernel_g", Param::Int(64)),
        broken(Kind::Tiling, "workgroups", Param::Int(1)),
        broken(Kind::Tiling, "rem_k", Param::Int(32)),
        broken(Kind::Tiling, "tile_k", Param::Int(0)),
        broken(Kind::Dequant, "delta", Param::Real(1e-3)),
        broken(Kind::Dequant, "step", Param::Real(1.0)),
        broken(Kind::Dequant, "range_min_nonzero", Param::Real(1e-40)),
        broken(Kind::Dequant, "abs_min_max", Param::Real(70000.0)),
        broken(Kind::Accumulator, "code_bound", Param::Int(2_000_000)),
    ];
    let verdicts = discharge(&cases).unwrap();
    for (o, v) in cases.iter().zip(verdicts) {
        assert_eq!(v, Verdict::NotProved("sat".into()), "{} {:?}", o.id, o.params);
    }
}

#[test]
fn missing_z3_fails_clearly() {
    let e = z3_missing("/no/such/z3", &std::io::Error::from(std::io::ErrorKind::NotFound));
    assert!(e.contains("cannot run z3") && e.contains("Q35_Z3"), "{e}");
}

/// A tiny model compiled for the CPU (hidden 64, FFN 96, groups of 64: the
/// down projection has a tail group of 32), once per test binary.
fn tiny_artifact() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let spec = testmodel::TinySpec {
            num_hidden_layers: 1,
            intermediate_size: 96,
            ..Default::default()
        };
        let path = testmodel::write_tiny_model(dir.path(), spec).unwrap();
        let model = front::load(&path).unwrap();
        let graph = ModelGraph::llama(&model.config).unwrap();
        let q35 = Q35Context::new().unwrap();
        let emit = EmitOptions {
            quant: QuantKind::Q35,
            group: Group::Size(64),
            context_length: 32,
            overrides: Vec::new(),
        };
        let module = emit_module(&q35, &graph, &model.config, "tiny", &emit).unwrap();
        let options = codegen::CompileOptions::new(emit, GroupSize::G64);
        let run = RunOptions {
            verify_each: true,
            print_ir_after_all: false,
        };
        codegen::compile_cpu(&q35, module, &model, &graph, &options, &run, &mut Timings::default()).unwrap()
    })
}

/// Rewrites an artifact with its obligations changed by `edit` (checksums
/// recomputed, so only the obligation check can notice).
fn with_obligations(bytes: &[u8], edit: impl FnOnce(&mut Vec<Obligation>)) -> Vec<u8> {
    let artifact = Artifact::parse("t.q35", bytes).unwrap();
    let mut names: Vec<String> = artifact.manifest.weights.iter().map(|w| w.tensor.clone()).collect();
    names.push(artifact.manifest.code.clone());
    names.extend(artifact.manifest.tokenizer.clone());
    let mut payloads: Vec<(String, Vec<u8>)> =
        names.into_iter().map(|n| (n.clone(), artifact.payload(&n).unwrap().to_vec())).collect();
    let mut set = ObligationSet::from_json(artifact.payload(OBLIGATIONS_PAYLOAD).unwrap()).unwrap();
    edit(&mut set.obligations);
    if !set.obligations.is_empty() {
        payloads.push((OBLIGATIONS_PAYLOAD.to_string(), set.to_json()));
    }
    write_artifact(&artifact.manifest, &payloads)
}

#[test]
fn verify_accepts_the_compiled_artifact() {
    let summary = verify_artifact("t.q35", tiny_artifact()).unwrap();
    // 1 layer: 7 projections, the embedding and the (untied) LM head; the
    // embedding is a lookup, not a matmul dispatch.
    assert_eq!(summary.counts[&Kind::Layout], 9);
    assert_eq!(summary.counts[&Kind::Tiling], 8);
    assert_eq!(summary.counts[&Kind::Dequant], 18);
    assert_eq!(summary.total, 35);
    let text = summary.to_string();
    assert!(text.starts_with("plan of "), "{text}");
    assert!(text.contains(" kernel signatures; verified 35 obligations (z3 "), "{text}");
    assert!(summary.kernels > 0 && summary.dispatches >= summary.kernels, "{text}");
    assert!(text.ends_with("9 layout, 8 tiling, 18 dequant, 0 accumulator"), "{text}");
    let artifact = Artifact::parse("t.q35", tiny_artifact()).unwrap();
    let set = ObligationSet::from_json(artifact.payload(OBLIGATIONS_PAYLOAD).unwrap()).unwrap();
    let down = set.obligations.iter().find(|o| o.id == "layout/model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!((down.params["groups"].clone(), down.params["tail"].clone()), (Param::Int(2), Param::Int(32)));
}

#[test]
fn verify_rejects_a_corrupted_obligation() {
    let corrupted = with_obligations(tiny_artifact(), |obligations| {
        let o = obligations.iter_mut().find(|o| o.kind == Kind::Tiling).unwrap();
        o.params.insert("k".into(), Param::Int(65));
    });
    let e = verify_artifact("t.q35", &corrupted).unwrap_err();
    assert!(e.contains("obligation `tiling/dispatch 2/model.layers.0.self_attn.v_proj.weight`: stored k = 65, the artifact gives k = 64"), "{e}");
    assert!(e.contains("obligation `tiling/dispatch 2/model.layers.0.self_attn.v_proj.weight` is not proved (z3: sat)"), "{e}");
}

#[test]
fn verify_rejects_a_weakened_bound() {
    let corrupted = with_obligations(tiny_artifact(), |obligations| {
        let o = obligations.iter_mut().find(|o| o.kind == Kind::Dequant).unwrap();
        let Param::Real(delta) = o.params["delta"] else { panic!() };
        o.params.insert("delta".into(), Param::Real(delta / 2.0));
    });
    let e = verify_artifact("t.q35", &corrupted).unwrap_err();
    assert!(e.contains("obligation `dequant/model.embed_tokens.weight/L15` is not proved (z3: sat)"), "{e}");
    assert!(e.contains("stored delta = "), "{e}");
}

#[test]
fn verify_rejects_missing_and_extra_obligations() {
    let corrupted = with_obligations(tiny_artifact(), |obligations| {
        let mut extra = obligations.remove(0);
        extra.id = "layout/invented".into();
        obligations.push(extra);
    });
    let e = verify_artifact("t.q35", &corrupted).unwrap_err();
    assert!(e.contains("obligation `layout/model.embed_tokens.weight` is missing from the artifact"), "{e}");
    assert!(e.contains("obligation `layout/invented` is stored, but the artifact gives no such obligation"), "{e}");
    let none = with_obligations(tiny_artifact(), |obligations| obligations.clear());
    let e = verify_artifact("t.q35", &none).unwrap_err();
    assert!(e.contains("the artifact has no proof obligations"), "{e}");
}

#[test]
fn a_corrupted_obligation_payload_fails_its_checksum() {
    let mut bytes = tiny_artifact().to_vec();
    let needle = b"\"tail\": 32";
    let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap();
    bytes[at + needle.len() - 2] = b'4';
    let e = verify_artifact("t.q35", &bytes).unwrap_err();
    assert!(e.contains("checksum mismatch in `proofs/obligations.json`"), "{e}");
}
