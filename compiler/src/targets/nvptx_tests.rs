//! Offline validation of the NVPTX target through the compiler's pipeline:
//! every PTX module the tiny model compiles to is assembled by NVIDIA's
//! `ptxas` for sm_80 and sm_90 (no GPU needed), so invalid PTX fails here.
//! ptxas comes from the `nvidia-cuda-nvcc-cu12` wheel that
//! scripts/setup.sh installs; without it these tests fail and say so (they
//! never pass silently).

use crate::{
    codegen::{compile_nvptx, CompileOptions},
    emit::{emit_module, EmitOptions, Group},
    front::{self, testmodel::TinySpec},
    graph::ModelGraph,
    passes::Registry,
    pipeline::{RunOptions, Timings},
};
use q35_dialect::Q35Context;
use q35_target::Session;
use q35_target_nvptx::{ptx, Nvptx, PTX_PAYLOAD};
use q35_format::{artifact::Artifact, GroupSize, QuantKind};
use std::path::PathBuf;

fn ptxas() -> PathBuf {
    q35_target_llvm::find_ptxas().unwrap_or_else(|| {
        panic!(
            "ptxas not found: run scripts/setup.sh (it installs the nvidia-cuda-nvcc-cu12 wheel into \
             ~/.cache/q35/cuda), or point Q35_PTXAS at a ptxas"
        )
    })
}

/// Assembles `ptx` for `arch` with ptxas; panics with ptxas's messages.
fn assemble(ptx: &str, arch: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("kernels.ptx");
    std::fs::write(&input, ptx).unwrap();
    let out = std::process::Command::new(ptxas())
        .arg(format!("-arch={arch}"))
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("kernels.cubin"))
        .output()
        .expect("running ptxas");
    assert!(
        out.status.success(),
        "ptxas -arch={arch} rejected the PTX of {what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The NVPTX target with 4 warps per GEMV block.
fn nvptx(fuse: bool) -> Nvptx {
    Nvptx { arch: "sm_80".into(), warps: 4, fuse, context_length: 32, max_tokens: 64 }
}

fn run_options() -> RunOptions {
    RunOptions {
        verify_each: true,
        print_ir_after_all: false,
    }
}

fn emit_options(quant: QuantKind, group: GroupSize, context_length: usize) -> EmitOptions {
    EmitOptions {
        quant,
        group: match group.fixed() {
            Some(g) => Group::Size(g as u64),
            None => Group::Channel,
        },
        context_length,
        overrides: Vec::new(),
    }
}

/// The PTX of the tiny model `spec` for `arch`.
fn tiny_ptx(spec: TinySpec, quant: QuantKind, group: GroupSize, fuse: bool, arch: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = front::testmodel::write_tiny_model(dir.path(), spec).unwrap();
    let model = front::load(&path).unwrap();
    let graph = ModelGraph::llama(&model.config).unwrap();
    let q35 = Q35Context::new().unwrap();
    let mut module = emit_module(&q35, &graph, &model.config, "tiny", &emit_options(quant, group, 32)).unwrap();
    let mut timings = Timings::default();
    let launched = nvptx(fuse).lower_to_nvvm(&mut Session { q35: &q35, passes: &Registry, run: &run_options(), timings: &mut timings }, &mut module).unwrap();
    assert_eq!(launched.plan.dispatches.len(), launched.launches.len());
    ptx(&module, arch, &mut timings).unwrap()
}

#[test]
fn ptxas_accepts_every_weight_kind_fused_and_not_for_sm80_and_sm90() {
    for quant in [QuantKind::Q35, QuantKind::Int4, QuantKind::Int3, QuantKind::F16, QuantKind::F32] {
        for fuse in [true, false] {
            for arch in ["sm_80", "sm_90"] {
                let ptx = tiny_ptx(TinySpec::default(), quant, GroupSize::G32, fuse, arch);
                assert!(ptx.contains(&format!(".target {arch}")));
                assemble(&ptx, arch, &format!("the tiny model ({quant}, fuse {fuse})"));
            }
        }
    }
}

/// Groups with a tail (K = 80 with G = 32 and 64) and per-channel groups,
/// an untied head and no GQA.
#[test]
fn ptxas_accepts_tail_groups_and_other_shapes() {
    let spec = TinySpec {
        num_hidden_layers: 1,
        hidden_size: 80,
        num_attention_heads: 5,
        num_key_value_heads: 5,
        intermediate_size: 176,
        tie_word_embeddings: true,
        ..Default::default()
    };
    for group in [GroupSize::G32, GroupSize::G64, GroupSize::Channel] {
        for quant in [QuantKind::Q35, QuantKind::Int4, QuantKind::Int3] {
            let ptx = tiny_ptx(spec.clone(), quant, group, true, "sm_80");
            assemble(&ptx, "sm_80", &format!("a tiny model with K = 80 ({quant}, group {group})"));
        }
    }
}

/// `--target nvptx`: the artifact holds PTX that ptxas accepts, one
/// launch per dispatch, and the manifest says nvptx.
#[test]
fn nvptx_artifact_has_ptx_and_launches() {
    let dir = tempfile::tempdir().unwrap();
    let path = front::testmodel::write_tiny_model(dir.path(), TinySpec::default()).unwrap();
    let model = front::load(&path).unwrap();
    let graph = ModelGraph::llama(&model.config).unwrap();
    let q35 = Q35Context::new().unwrap();
    let emit = emit_options(QuantKind::Q35, GroupSize::G64, 64);
    let module = emit_module(&q35, &graph, &model.config, "tiny", &emit).unwrap();
    let options = CompileOptions::new(emit, GroupSize::G64);
    let bytes = compile_nvptx(&q35, module, &model, &graph, &options, "sm_80", &run_options(), &mut Timings::default()).unwrap();
    let artifact = Artifact::parse("tiny.q35", &bytes).unwrap();
    let manifest = &artifact.manifest;
    assert_eq!(manifest.target.kind, "nvptx");
    assert_eq!(manifest.target.cpu, "sm_80");
    assert_eq!(manifest.code, PTX_PAYLOAD);
    assert_eq!(manifest.launches.len(), manifest.dispatches.len());
    for (dispatch, launch) in manifest.dispatches.iter().zip(&manifest.launches) {
        if dispatch.kernel.starts_with("dequant_matmul_") {
            assert_eq!(launch.block, [128, 1, 1], "{}", dispatch.kernel);
            assert!(dispatch.workgroups > 0 && dispatch.workgroups_per_token == 0);
        } else {
            // One warp per token (the embedding too), or per (token,
            // head) for attention.
            assert_eq!(launch.block, [32, 1, 1], "{}", dispatch.kernel);
            let per_token = if dispatch.kernel.starts_with("attention_") { 4 } else { 1 };
            assert_eq!((dispatch.workgroups, dispatch.workgroups_per_token), (0, per_token), "{}", dispatch.kernel);
        }
    }
    let ptx = std::str::from_utf8(artifact.payload(PTX_PAYLOAD).unwrap()).unwrap();
    for dispatch in &manifest.dispatches {
        assert!(ptx.contains(&format!(".visible .entry {}(", dispatch.kernel)), "no entry {}", dispatch.kernel);
    }
    assemble(ptx, "sm_80", "the nvptx artifact");
}

/// The PTX of one small fused dequant-GEMV kernel (q35, N = 8, K = 64,
/// G = 32), pinned: decode with shifts and masks, `.rn` dequantization,
/// warp shuffles, lane 0 stores.
#[test]
fn gemv_kernel_ptx() {
    let q35 = Q35Context::new().unwrap();
    let text = r#"
func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>, %start: index, %x: tensor<?x64xf32>) -> tensor<?x8xf32> {
  %w = "q35.weight"() {name = "w"} : () -> !q35.packed<8 : i64, 64 : i64, 32 : i64, "q35", "planar">
  %y = "q35.dequant_matmul"(%x, %w) : (tensor<?x64xf32>, !q35.packed<8 : i64, 64 : i64, 32 : i64, "q35", "planar">) -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}"#;
    let mut module = melior::ir::Module::parse(q35.context(), text).expect("valid module");
    let mut timings = Timings::default();
    nvptx(false).lower_to_nvvm(&mut Session { q35: &q35, passes: &Registry, run: &run_options(), timings: &mut timings }, &mut module).unwrap();
    let ptx = ptx(&module, "sm_80", &mut timings).unwrap();
    assemble(&ptx, "sm_80", "the GEMV kernel");
    assemble(&ptx, "sm_90", "the GEMV kernel");
    insta::assert_snapshot!(ptx);
}
