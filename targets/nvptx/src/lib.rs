//! The NVPTX target: the planned module's kernels become GPU kernels with
//! a launch configuration per dispatch (`q35-lower-to-gpu`, [`GpuPass`]),
//! upstream passes take the `gpu.module` to the LLVM and NVVM dialects
//! ([`GPU_TO_NVVM`]), and LLVM's NVPTX back end turns it, linked with
//! libdevice, into PTX for one SM (`q35_target_llvm`). The artifact is the
//! CPU one with `target.kind = "nvptx"`, the PTX as its code object and
//! `launches` in the manifest (docs/artifact.md, docs/targets.md).

pub mod gemv;
mod pass;
pub mod rows;

pub use pass::{GpuPass, LaunchHandle, Launches, DEFAULT_WARPS, GPU_MODULE};

use anyhow::{anyhow, bail};
use melior::ir::Module;
use q35_format::{artifact::TargetSpec, signature::CodeSignatures};
use q35_target::{
    pipeline,
    target::read_plan,
    Backend, CodeObject, Common, Plan, Session, Stage, Target, TargetArg,
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

/// NVIDIA GPUs: PTX for `--gpu-arch`, run through the CUDA driver.
pub struct NvptxTarget;

const STAGES: &[Stage] = &[
    Stage { name: "gpu", help: "after q35-lower-to-gpu: GPU kernels in a gpu.module and the q35.plan with launches (NVPTX)" },
    Stage { name: "ptx", help: "PTX for --gpu-arch: one module with every kernel (NVPTX)" },
];

fn parse_gpu_arch(s: &str) -> Result<String, String> {
    if q35_target_llvm::GPU_ARCHS.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!("unsupported GPU architecture `{s}` (known: {})", q35_target_llvm::GPU_ARCHS.join(", ")))
    }
}

impl Target for NvptxTarget {
    fn name(&self) -> &'static str {
        "nvptx"
    }

    fn about(&self) -> &'static str {
        "NVIDIA GPUs: PTX for --gpu-arch, run through the CUDA driver"
    }

    fn args(&self) -> Vec<TargetArg> {
        vec![TargetArg {
            arg: clap::Arg::new("gpu_arch")
                .long("gpu-arch")
                .value_name("GPU_ARCH")
                .value_parser(parse_gpu_arch)
                .default_value(DEFAULT_GPU_ARCH)
                .help("NVPTX: the SM to compile PTX for (sm_80, sm_86, sm_89, sm_90)"),
            elsewhere: "compiles for its own machine",
        }]
    }

    fn stages(&self) -> &'static [Stage] {
        STAGES
    }

    fn configure(&self, matches: &clap::ArgMatches, common: &Common) -> Result<Box<dyn Backend>, String> {
        Ok(Box::new(Nvptx {
            arch: matches.get_one::<String>("gpu_arch").cloned().unwrap_or_else(|| DEFAULT_GPU_ARCH.to_string()),
            warps: DEFAULT_WARPS,
            fuse: common.fuse,
            context_length: common.context_length,
            max_tokens: common.max_tokens,
        }))
    }
}

/// The NVPTX target with its options.
pub struct Nvptx {
    /// `sm_80`, `sm_86`, `sm_89` or `sm_90`.
    pub arch: String,
    /// Warps (output rows) per GEMV block.
    pub warps: usize,
    pub fuse: bool,
    pub context_length: usize,
    pub max_tokens: usize,
}

impl Nvptx {
    /// Lowers `module` (the emitted q35 module) in place to GPU kernels
    /// (`gpu.module`, gpu/scf/arith/math/memref); returns the plan with GPU
    /// workgroup counts, and one launch per dispatch.
    pub fn lower_to_gpu(&self, session: &mut Session, module: &mut Module) -> anyhow::Result<Launched> {
        if self.fuse {
            pipeline::run(session.q35, module, session.passes, &pipeline::parse("q35-fuse")?, session.run, session.timings)?;
        }
        // The CPU kernels' row blocks do not matter: matmuls are rebuilt.
        pipeline::run(session.q35, module, session.passes, &pipeline::parse("q35-lower-to-kernels")?, session.run, session.timings)?;
        let mut plan = read_plan(module).map_err(|e| anyhow!("internal error: {e}"))?;
        let gpu = GpuPass::new(session.q35.context(), self.warps);
        let (launches, findings) = (gpu.launches(), gpu.findings());
        pipeline::run_pass(session.q35, module, "q35-lower-to-gpu", gpu.into_pass(), &findings, session.run, session.timings)?;
        let (dispatches, launches) = launches.take().ok_or_else(|| anyhow!("q35-lower-to-gpu produced no launches"))?;
        plan.dispatches = dispatches;
        Ok(Launched { plan, launches })
    }

    /// [`Self::lower_to_gpu`], then the upstream conversions to LLVM + NVVM.
    pub fn lower_to_nvvm(&self, session: &mut Session, module: &mut Module) -> anyhow::Result<Launched> {
        let launched = self.lower_to_gpu(session, module)?;
        pipeline::run_upstream(session.q35, module, GPU_TO_NVVM, session.run, session.timings)?;
        Ok(launched)
    }
}

/// A plan as the GPU runs it, and one launch per dispatch.
pub struct Launched {
    pub plan: Plan,
    pub launches: Vec<q35_format::artifact::LaunchSpec>,
}

/// The PTX of a module after [`Nvptx::lower_to_nvvm`]: one module with
/// every kernel.
pub fn ptx(module: &Module, arch: &str, timings: &mut q35_target::pipeline::Timings) -> anyhow::Result<String> {
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

impl Backend for Nvptx {
    fn runs_rotations(&self) -> bool {
        true
    }

    /// Not yet: the transform runs as the CPU's loop nest on one thread
    /// per token, unmeasured on a GPU (docs/quality.md).
    fn rotates_by_default(&self) -> bool {
        false
    }

    fn emit(&self, session: &mut Session, module: &mut Module, stage: &str) -> anyhow::Result<String> {
        match stage {
            "gpu" => {
                self.lower_to_gpu(session, module)?;
                Ok(format!("{}\n", module.as_operation()))
            }
            "ptx" => {
                self.lower_to_nvvm(session, module)?;
                ptx(module, &self.arch, session.timings)
            }
            other => bail!("the nvptx target has no stage `{other}`"),
        }
    }

    fn compile(&self, session: &mut Session, mut module: Module, check: &dyn Fn(&Plan) -> anyhow::Result<()>) -> anyhow::Result<CodeObject> {
        let Launched { plan, launches } = self.lower_to_nvvm(session, &mut module)?;
        check(&plan)?;
        let signatures = CodeSignatures::of_plan(&plan.buffers, &plan.dispatches, self.context_length, self.max_tokens)
            .map_err(|e| anyhow!("internal error: {e}"))?;
        // The PTX module declares its kernels' signatures in a comment line.
        let code = signatures.ptx_comment() + &ptx(&module, &self.arch, session.timings)?;
        Ok(CodeObject {
            payload: PTX_PAYLOAD.to_string(),
            bytes: code.into_bytes(),
            target: TargetSpec {
                kind: "nvptx".to_string(),
                triple: q35_target_llvm::NVPTX_TRIPLE.to_string(),
                cpu: self.arch.clone(),
                features: String::new(),
            },
            plan,
            launches,
            // Rows per GEMV block: one warp per row.
            rows_per_workgroup: self.warps,
            activations: "f32",
        })
    }
}
