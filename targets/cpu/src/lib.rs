//! The CPU target: the planned module's kernels become `func.func`s with
//! loop (and, on AVX-512, vector) bodies ([`kernels`]), upstream MLIR
//! lowers them to the LLVM dialect ([`TO_LLVM`]), and LLVM optimizes them
//! for the host at -O3 and links a shared object the runtime loads
//! (`code/cpu.so`, with the kernels' signatures exported beside them).

mod attention;
mod elementwise;
mod function;
pub mod kernels;
pub mod matmul;
mod rope;
mod rotate;
pub mod testing;

use anyhow::{anyhow, bail, Context as _};
use melior::ir::Module;
use q35_format::{
    artifact::TargetSpec,
    signature::{CodeSignatures, SIGNATURES_SYMBOL},
};
use q35_target::{
    kernel::{DEFAULT_ROWS_PER_WORKGROUP, DEFAULT_ROWS_PER_WORKGROUP_INT8},
    pipeline,
    target::{erase_plan, read_plan},
    Backend, CodeObject, Common, Plan, Session, Stage, Target, TargetArg,
};
use std::time::Instant;

pub use matmul::{fast_path_available, int8_path_available};

/// The upstream conversions from kernels (func/scf/arith/math/memref, and
/// linalg for `kernels=linalg`) to the LLVM dialect, in order.
pub const TO_LLVM: &str = "builtin.module(convert-linalg-to-loops,lower-affine,convert-scf-to-cf,convert-math-to-llvm,expand-strided-metadata,finalize-memref-to-llvm,convert-arith-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,reconcile-unrealized-casts)";

/// Payload name of the shared object.
pub const SO_PAYLOAD: &str = "code/cpu.so";

/// The host CPU through LLVM.
pub struct CpuTarget;

const STAGES: &[Stage] = &[
    Stage { name: "kernels", help: "after q35-lower-to-kernels: kernels in func/scf/arith/math/memref and the q35.plan (CPU)" },
    Stage { name: "linalg", help: "the kernels stage with linalg kernels (as --kernels linalg): linalg.generic ops on views of their buffers (CPU)" },
    Stage { name: "llvm-mlir", help: "the kernels in the LLVM dialect (CPU)" },
    Stage { name: "llvm-ir", help: "LLVM IR, before LLVM's optimizations (CPU)" },
    Stage { name: "asm", help: "host assembly after -O3 (CPU)" },
];

impl Target for CpuTarget {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn about(&self) -> &'static str {
        "the host CPU through LLVM: a shared object the runtime loads"
    }

    fn args(&self) -> Vec<TargetArg> {
        use clap::Arg;
        vec![
            TargetArg {
                arg: Arg::new("activations")
                    .long("activations")
                    .value_name("ACTIVATIONS")
                    .value_parser(["f32", "int8"])
                    .default_value("f32")
                    .help("Activations of coded matmuls on the CPU: `f32`, or `int8` (the integer path: per-group int8 activations, integer dot products; needs AVX-512 VNNI and VBMI; docs/format.md §8)"),
                elsewhere: "runs f32 activations",
            },
            TargetArg {
                arg: Arg::new("kernels")
                    .long("kernels")
                    .value_name("KERNELS")
                    .value_parser(["native", "linalg"])
                    .default_value("native")
                    .help("How CPU kernels are written: `native` loops and vectors, or `linalg` ops lowered by upstream MLIR (f32 activations only)"),
                elsewhere: "has its own GPU kernels",
            },
            TargetArg {
                arg: Arg::new("rows_per_workgroup")
                    .long("rows-per-workgroup")
                    .value_name("ROWS_PER_WORKGROUP")
                    .value_parser(clap::value_parser!(usize))
                    .help("Output rows per matmul workgroup on the CPU (default 64, or 128 with --activations int8, whose rows go twice as fast)"),
                elsewhere: "has its own launch shapes",
            },
        ]
    }

    fn stages(&self) -> &'static [Stage] {
        STAGES
    }

    fn configure(&self, matches: &clap::ArgMatches, common: &Common) -> Result<Box<dyn Backend>, String> {
        let int8 = matches.get_one::<String>("activations").is_some_and(|a| a == "int8");
        let linalg = matches.get_one::<String>("kernels").is_some_and(|k| k == "linalg") || common.stage.as_deref() == Some("linalg");
        if linalg && int8 {
            return Err("--kernels linalg writes f32-activation matmuls; the integer path (--activations int8) has only native kernels".into());
        }
        if int8 {
            if !common.quant.is_coded() {
                return Err(format!("--activations int8 needs coded weights (--quant q35, int4 or int3), not {}", common.quant));
            }
            if !int8_path_available() {
                return Err("--activations int8 needs a CPU with AVX-512 VNNI and VBMI (avx512vnni, avx512vbmi), and this host lacks them: use --activations f32".into());
            }
        }
        let rows_per_workgroup = match matches.get_one::<usize>("rows_per_workgroup") {
            Some(0) => return Err("--rows-per-workgroup 0: a workgroup must compute at least one row".into()),
            Some(&rows) => rows,
            None if int8 => DEFAULT_ROWS_PER_WORKGROUP_INT8,
            None => DEFAULT_ROWS_PER_WORKGROUP,
        };
        Ok(Box::new(Cpu {
            fuse: common.fuse,
            rows_per_workgroup,
            int8,
            linalg,
            context_length: common.context_length,
            max_tokens: common.max_tokens,
            llvm: q35_target_llvm::Options::default(),
        }))
    }
}

/// The CPU target with its options.
pub struct Cpu {
    /// Run q35-fuse (epilogues into matmuls) before lowering.
    pub fuse: bool,
    pub rows_per_workgroup: usize,
    /// Coded matmuls take the integer path (int8 activations).
    pub int8: bool,
    /// Kernels are linalg ops (`q35-lower-to-kernels{kernels=linalg}`).
    pub linalg: bool,
    pub context_length: usize,
    pub max_tokens: usize,
    pub llvm: q35_target_llvm::Options,
}

impl Cpu {
    /// The planning step with this target's options (only those that
    /// differ from the pass's defaults, so timings read as before).
    fn lower_step(&self) -> String {
        let mut options = Vec::new();
        if self.rows_per_workgroup != DEFAULT_ROWS_PER_WORKGROUP {
            options.push(format!("rows={}", self.rows_per_workgroup));
        }
        if self.int8 {
            options.push("activations=int8".to_string());
        }
        if self.linalg {
            options.push("kernels=linalg".to_string());
        }
        if options.is_empty() {
            "q35-lower-to-kernels".to_string()
        } else {
            format!("q35-lower-to-kernels{{{}}}", options.join(" "))
        }
    }

    /// Lowers the emitted module in place to kernels (after `q35-fuse`)
    /// and returns the plan.
    pub fn lower_to_kernels(&self, session: &mut Session, module: &mut Module) -> anyhow::Result<Plan> {
        if self.fuse {
            pipeline::run(session.q35, module, session.passes, &pipeline::parse("q35-fuse")?, session.run, session.timings)?;
        }
        pipeline::run(session.q35, module, session.passes, &pipeline::parse(&self.lower_step())?, session.run, session.timings)?;
        read_plan(module).map_err(|e| anyhow!("internal error: {e}"))
    }

    /// [`Self::lower_to_kernels`], then upstream conversions to the LLVM
    /// dialect (the plan op, which the manifest carries, erased).
    pub fn lower_to_llvm(&self, session: &mut Session, module: &mut Module) -> anyhow::Result<Plan> {
        let plan = self.lower_to_kernels(session, module)?;
        pipeline::run_upstream(session.q35, module, TO_LLVM, session.run, session.timings)?;
        erase_plan(session.q35, module);
        Ok(plan)
    }
}

impl Backend for Cpu {
    fn runs_rotations(&self) -> bool {
        true
    }

    fn needs_coded_weights(&self) -> Option<&'static str> {
        self.int8.then_some("--activations int8")
    }

    fn emit(&self, session: &mut Session, module: &mut Module, stage: &str) -> anyhow::Result<String> {
        match stage {
            "kernels" | "linalg" => {
                self.lower_to_kernels(session, module)?;
                Ok(format!("{}\n", module.as_operation()))
            }
            "llvm-mlir" => {
                self.lower_to_llvm(session, module)?;
                Ok(format!("{}\n", module.as_operation()))
            }
            "llvm-ir" | "asm" => {
                self.lower_to_llvm(session, module)?;
                let llvm = q35_target_llvm::llvm_context();
                let ir = q35_target_llvm::translate(module, &llvm)?;
                if stage == "llvm-ir" {
                    return Ok(ir.print_to_string().to_string());
                }
                Ok(q35_target_llvm::cpu_assembly(&ir, &self.llvm)?)
            }
            other => bail!("the cpu target has no stage `{other}`"),
        }
    }

    fn compile(&self, session: &mut Session, mut module: Module, check: &dyn Fn(&Plan) -> anyhow::Result<()>) -> anyhow::Result<CodeObject> {
        let plan = self.lower_to_llvm(session, &mut module)?;
        // Refused before LLVM runs: a plan no machine could allocate.
        check(&plan)?;

        let started = Instant::now();
        let llvm = q35_target_llvm::llvm_context();
        let ir = q35_target_llvm::translate(&module, &llvm)?;
        let signatures = CodeSignatures::of_plan(&plan.buffers, &plan.dispatches, self.context_length, self.max_tokens)
            .map_err(|e| anyhow!("internal error: {e}"))?;
        q35_target_llvm::add_exported_bytes(&ir, SIGNATURES_SYMBOL, signatures.to_json().as_bytes());
        session.timings.record("translate to LLVM IR", started.elapsed());
        let started = Instant::now();
        let object = q35_target_llvm::compile_cpu(&ir, &self.llvm)?;
        session.timings.record("LLVM -O3 + object code", started.elapsed());
        let started = Instant::now();
        let dir = tempfile::tempdir().context("creating a temporary directory for linking")?;
        let so_path = dir.path().join("kernels.so");
        q35_target_llvm::link_shared_object(&object, &so_path)?;
        let bytes = std::fs::read(&so_path).with_context(|| format!("reading {}", so_path.display()))?;
        session.timings.record("link shared object", started.elapsed());

        let (triple, host_cpu, host_features) = q35_target_llvm::host();
        Ok(CodeObject {
            payload: SO_PAYLOAD.to_string(),
            bytes,
            target: TargetSpec {
                kind: "cpu".to_string(),
                triple,
                cpu: self.llvm.cpu.clone().unwrap_or(host_cpu),
                features: self.llvm.features.clone().unwrap_or(host_features),
            },
            plan,
            launches: Vec::new(),
            rows_per_workgroup: self.rows_per_workgroup,
            activations: if self.int8 { "int8" } else { "f32" },
        })
    }
}

/// A module of kernels compiled like a model's (the CPU pipeline to the
/// LLVM dialect, LLVM -O3 for the host, linked): the bytes of a shared
/// object, for benchmarks and tests that call kernels one by one.
pub fn shared_object(q35: &q35_dialect::Q35Context, mut module: Module<'_>) -> anyhow::Result<Vec<u8>> {
    pipeline::run_upstream(q35, &mut module, TO_LLVM, &Default::default(), &mut Default::default())?;
    let llvm = q35_target_llvm::llvm_context();
    let ir = q35_target_llvm::translate(&module, &llvm)?;
    let object = q35_target_llvm::compile_cpu(&ir, &q35_target_llvm::Options::default())?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kernel.so");
    q35_target_llvm::link_shared_object(&object, &path)?;
    Ok(std::fs::read(&path)?)
}
