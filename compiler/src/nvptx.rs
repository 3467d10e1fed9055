//! NVPTX code generation and the artifact: the q35 module is lowered to
//! kernels (`q35-lower-to-kernels`), then to GPU kernels with a launch
//! configuration per dispatch (`q35-lower-to-gpu`), then with upstream
//! passes to the LLVM and NVVM dialects (`convert-gpu-to-nvvm`); the
//! `gpu.module` is translated to LLVM IR, linked with libdevice and turned
//! into PTX for one SM by LLVM's NVPTX back end (`q35_target_llvm`). The
//! artifact is the CPU one with `target.kind = "nvptx"`, the PTX as its code
//! object and `launches` in the manifest (docs/artifact.md, docs/targets.md).

use crate::{
    codegen::{assemble_artifact, CpuOptions, Plan},
    front::Model,
    graph::ModelGraph,
    passes::{gpu::GpuPass, lower::LowerPass},
    pipeline::{self, RunOptions, Timings},
};
use anyhow::{anyhow, Result};
use melior::ir::Module;
use q35_dialect::Q35Context;
use q35_format::{
    artifact::{BufferSpec, DispatchSpec, LaunchSpec, TargetSpec},
    signature::CodeSignatures,
};
use std::time::Instant;

/// The upstream conversions of the `gpu.module` to the LLVM and NVVM
/// dialects (math becomes libdevice calls), in order.
pub const GPU_TO_NVVM: &str =
    "builtin.module(gpu.module(convert-scf-to-cf,convert-gpu-to-nvvm{index-bitwidth=64}),reconcile-unrealized-casts)";

/// Payload name of the PTX code object.
pub const PTX_PAYLOAD: &str = "code/kernels.ptx";

/// The default SM (A100); `--gpu-arch` picks another.
pub const DEFAULT_GPU_ARCH: &str = "sm_80";

/// NVPTX options beyond the CPU's (which supply quantization, context,
/// max tokens and fusion).
#[derive(Clone, Debug)]
pub struct NvptxOptions {
    /// `sm_80`, `sm_86`, `sm_89` or `sm_90`.
    pub arch: String,
    /// Warps (output rows) per GEMV block.
    pub warps: usize,
}

impl Default for NvptxOptions {
    fn default() -> Self {
        Self {
            arch: DEFAULT_GPU_ARCH.to_string(),
            warps: crate::passes::gpu::DEFAULT_WARPS,
        }
    }
}

/// Lowers `module` (the emitted q35 module) in place to GPU kernels
/// (`gpu.module`, gpu/scf/arith/math/memref); returns the plan and launches.
pub fn lower_to_gpu(
    q35: &Q35Context,
    module: &mut Module,
    fuse: bool,
    warps: usize,
    run: &RunOptions,
    timings: &mut Timings,
) -> Result<(Vec<BufferSpec>, Vec<DispatchSpec>, Vec<LaunchSpec>)> {
    if fuse {
        pipeline::run(q35, module, &pipeline::parse("q35-fuse")?, run, timings)?;
    }
    // The CPU kernels' row blocks do not matter: matmuls are rebuilt.
    let lower = LowerPass::new(q35.context(), crate::passes::lower::DEFAULT_ROWS_PER_WORKGROUP);
    let (plan, findings) = (lower.plan(), lower.findings());
    pipeline::run_pass(q35, module, "q35-lower-to-kernels", lower.into_pass(), &findings, run, timings)?;
    let (buffers, _) = plan.take().ok_or_else(|| anyhow!("q35-lower-to-kernels produced no plan"))?;
    let gpu = GpuPass::new(q35.context(), warps);
    let (launches, findings) = (gpu.launches(), gpu.findings());
    pipeline::run_pass(q35, module, "q35-lower-to-gpu", gpu.into_pass(), &findings, run, timings)?;
    let (dispatches, launches) = launches.take().ok_or_else(|| anyhow!("q35-lower-to-gpu produced no launches"))?;
    Ok((buffers, dispatches, launches))
}

/// [`lower_to_gpu`], then the upstream conversions to LLVM + NVVM.
pub fn lower_to_nvvm(
    q35: &Q35Context,
    module: &mut Module,
    fuse: bool,
    warps: usize,
    run: &RunOptions,
    timings: &mut Timings,
) -> Result<(Vec<BufferSpec>, Vec<DispatchSpec>, Vec<LaunchSpec>)> {
    let plan = lower_to_gpu(q35, module, fuse, warps, run, timings)?;
    pipeline::run(q35, module, &pipeline::parse(GPU_TO_NVVM)?, run, timings)?;
    Ok(plan)
}

/// The PTX of a module after [`lower_to_nvvm`]: one module with every kernel.
pub fn ptx(module: &Module, arch: &str, timings: &mut Timings) -> Result<String> {
    let started = Instant::now();
    let llvm = q35_target_llvm::llvm_context();
    let ir = q35_target_llvm::translate_gpu_module(module, &llvm)?;
    timings.record("translate gpu.module to LLVM IR", started.elapsed());
    let started = Instant::now();
    let libdevice = q35_target_llvm::find_libdevice();
    let text = q35_target_llvm::compile_ptx(&ir, arch, libdevice.as_deref())?;
    timings.record("libdevice + LLVM -O3 + PTX", started.elapsed());
    Ok(text)
}

/// Compiles the model for NVIDIA GPUs into artifact bytes.
#[allow(clippy::too_many_arguments)]
pub fn compile_nvptx(
    q35: &Q35Context,
    mut module: Module,
    model: &Model,
    graph: &ModelGraph,
    options: &CpuOptions,
    nvptx: &NvptxOptions,
    run: &RunOptions,
    timings: &mut Timings,
) -> Result<Vec<u8>> {
    crate::obligations::check_integer_ops(&module).map_err(|e| anyhow!("refusing to compile:\n{e}"))?;
    let (buffers, dispatches, launches) = lower_to_nvvm(q35, &mut module, options.fuse, nvptx.warps, run, timings)?;
    crate::limits::check_plan_memory(&buffers, options.emit.context_length, options.max_tokens)?;
    let signatures = CodeSignatures::of_plan(&buffers, &dispatches, options.emit.context_length, options.max_tokens)
        .map_err(|e| anyhow!("internal error: {e}"))?;
    // The PTX module declares its kernels' signatures in a comment line.
    let code = signatures.ptx_comment() + &ptx(&module, &nvptx.arch, timings)?;

    let target = TargetSpec {
        kind: "nvptx".to_string(),
        triple: q35_target_llvm::NVPTX_TRIPLE.to_string(),
        cpu: nvptx.arch.clone(),
        features: String::new(),
    };
    let plan = Plan {
        buffers,
        dispatches,
        launches,
        // Rows per GEMV block: one warp per row.
        rows_per_workgroup: nvptx.warps,
    };
    assemble_artifact(model, graph, options, target, plan, (PTX_PAYLOAD, code.into_bytes()), timings)
}

#[cfg(test)]
mod tests {
    //! Offline validation: every PTX module the tiny model compiles to is
    //! assembled by NVIDIA's `ptxas` for sm_80 and sm_90 (no GPU needed), so
    //! invalid PTX fails here. ptxas comes from the `nvidia-cuda-nvcc-cu12`
    //! wheel that scripts/setup.sh installs; without it these tests fail
    //! and say so (they never pass silently).

    use super::*;
    use crate::{
        emit::{emit_module, EmitOptions, Group},
        front::{self, testmodel::TinySpec},
    };
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
        let (_, dispatches, launches) = lower_to_nvvm(&q35, &mut module, fuse, 4, &run_options(), &mut timings).unwrap();
        assert_eq!(dispatches.len(), launches.len());
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
        let options = CpuOptions::new(emit, GroupSize::G64);
        let bytes = compile_nvptx(&q35, module, &model, &graph, &options, &NvptxOptions::default(), &run_options(), &mut Timings::default()).unwrap();
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
        lower_to_nvvm(&q35, &mut module, false, 4, &run_options(), &mut timings).unwrap();
        let ptx = ptx(&module, "sm_80", &mut timings).unwrap();
        assemble(&ptx, "sm_80", "the GEMV kernel");
        assemble(&ptx, "sm_90", "the GEMV kernel");
        insta::assert_snapshot!(ptx);
    }
}
