//! The CSL target (a Cerebras CSL-style dataflow machine, docs/targets.md):
//! every dequant-matmul spread over a rectangle of PEs with its 3.5-bit
//! (or int4, int3) codes stationary in their memories, emitted as the
//! SDK's CSL ([`emit`]: `layout.csl` and `pe_program.csl`), for the wafer
//! a target description names (`--csl-config FILE`,
//! `q35_format::csl::CslConfig`). q35-rt's simulator parses the CSL text
//! and runs it on a PE grid. [`partition`] chooses each matrix's split,
//! [`capacity`] lays a whole model on the wafer from its shape alone
//! (`q35c plan --target csl`).
//!
//! A whole model ([`program`]) is one CSL program with a region of PEs
//! for every dispatch (norms, RoPE, attention and the KV cache on PEs of
//! their own, [`rows`]), which the host runs dispatch by dispatch.

pub mod capacity;
pub mod emit;
pub mod partition;
pub mod program;
pub mod rows;

#[cfg(test)]
mod tests;

use anyhow::{anyhow, bail};
use melior::ir::Module;
use q35_format::csl::CslConfig;
use q35_format::{artifact::TargetSpec, signature::CodeSignatures};
use q35_target::{kernel::DEFAULT_ROWS_PER_WORKGROUP, pipeline, target::read_plan, Backend, CodeObject, Common, Plan, Session, Stage, Target, TargetArg};

/// Payload name of the program (the CSL files and the regions, as JSON).
pub const PROGRAM_PAYLOAD: &str = "code/csl.program";

/// The Cerebras CSL-style wafer, run by q35-rt's CSL simulator.
pub struct CslTarget;

const STAGES: &[Stage] = &[Stage { name: "csl", help: "the CSL program: layout.csl and the pe_program*.csl files, each after a `// ==== file: NAME ====` line (CSL)" }];

impl Target for CslTarget {
    fn name(&self) -> &'static str {
        "csl"
    }

    fn about(&self) -> &'static str {
        "a Cerebras CSL-style wafer of PEs: the model as a CSL program, run by q35-rt's CSL simulator"
    }

    fn args(&self) -> Vec<TargetArg> {
        vec![TargetArg {
            arg: clap::Arg::new("csl_config")
                .long("csl-config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("CSL: the wafer description (JSON; absent fields take a CS-2's figures, docs/targets.md)"),
            elsewhere: "has no CSL description",
        }]
    }

    fn stages(&self) -> &'static [Stage] {
        STAGES
    }

    fn configure(&self, matches: &clap::ArgMatches, common: &Common) -> Result<Box<dyn Backend>, String> {
        let config = match matches.get_one::<std::path::PathBuf>("csl_config") {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("--csl-config {}: cannot read it: {e}", path.display()))?;
                CslConfig::from_json(&text).map_err(|e| format!("--csl-config {}: {e}", path.display()))?
            }
            None => CslConfig::default(),
        };
        if !common.quant.is_coded() {
            return Err(format!("the csl target keeps coded weights on its PEs (--quant q35, int4 or int3), not {}", common.quant));
        }
        Ok(Box::new(Csl { config, context_length: common.context_length, max_tokens: common.max_tokens }))
    }
}

/// The CSL target with its wafer description.
pub struct Csl {
    pub config: CslConfig,
    pub context_length: usize,
    pub max_tokens: usize,
}

/// `module` through the shared planning pass, and its plan.
fn planned(session: &mut Session, module: &mut Module) -> anyhow::Result<Plan> {
    pipeline::run(session.q35, module, session.passes, &pipeline::parse("q35-lower-to-kernels")?, session.run, session.timings)?;
    read_plan(module).map_err(|e| anyhow!("internal error: {e}"))
}

impl Backend for Csl {
    fn needs_coded_weights(&self) -> Option<&'static str> {
        Some("--target csl")
    }

    fn emit(&self, session: &mut Session, module: &mut Module, stage: &str) -> anyhow::Result<String> {
        if stage != "csl" {
            bail!("the csl target has no stage `{stage}`");
        }
        let plan = planned(session, module)?;
        let program = program::lower(&self.config, &plan).map_err(|e| anyhow!("the csl target: {e}"))?;
        Ok(program.files.iter().map(|f| format!("// ==== file: {} ====\n{}", f.name, f.text)).collect())
    }

    fn compile(&self, session: &mut Session, mut module: Module, check: &dyn Fn(&Plan) -> anyhow::Result<()>) -> anyhow::Result<CodeObject> {
        let plan = planned(session, &mut module)?;
        check(&plan)?;
        let started = std::time::Instant::now();
        let program = program::lower(&self.config, &plan).map_err(|e| anyhow!("the csl target: {e}"))?;
        session.timings.record("CSL layout", started.elapsed());
        let signatures = CodeSignatures::of_plan(&plan.buffers, &plan.dispatches, self.context_length, self.max_tokens).map_err(|e| anyhow!("internal error: {e}"))?;
        let text = signatures.ptx_comment() + &program.to_json() + "\n";
        Ok(CodeObject {
            payload: PROGRAM_PAYLOAD.to_string(),
            bytes: text.into_bytes(),
            target: TargetSpec { kind: "csl".to_string(), triple: "csl".to_string(), cpu: format!("wafer-{}x{}", program.width, program.height), features: String::new() },
            plan,
            launches: Vec::new(),
            rows_per_workgroup: DEFAULT_ROWS_PER_WORKGROUP,
            activations: "f32",
        })
    }

    fn capacity<'c>(&self, session: &mut Session<'c>, build: &mut dyn FnMut(usize) -> anyhow::Result<Module<'c>>, layers: usize, json: bool) -> anyhow::Result<String> {
        let mut plans = Vec::new();
        for n in [1, 2] {
            let mut module = build(n)?;
            plans.push(planned(session, &mut module)?);
        }
        let capacity = capacity::capacity(&self.config, &plans[0], &plans[1], layers, self.context_length).map_err(|e| anyhow!("the csl target: {e}"))?;
        Ok(if json { capacity.to_json() + "\n" } else { capacity.to_string() })
    }
}
