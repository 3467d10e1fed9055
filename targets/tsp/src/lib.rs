//! The TSP target (a Groq TSP-shaped machine, docs/targets.md): programs
//! in which every instruction has its cycle, functional slice and stream
//! operands fixed at compile time, for the machine a target description
//! names (`--tsp-config FILE`, `q35_format::tsp::TspConfig`). q35-rt's
//! simulator runs the program text cycle by cycle and refuses any operand
//! that is not on its stream on the cycle it is read.
//!
//! [`model`] lowers the whole plan; [`matmul`] (coded matmuls with
//! double-buffered weight installs) and [`rows`] (the VXM's row ops) build
//! its chains; [`schedule`] places them; a plan one chip cannot hold runs
//! on a pipeline of chips passing activations over their links;
//! [`capacity`] says how many chips a model takes and how fast it
//! decodes, from its shape alone.

pub mod capacity;
pub mod matmul;
pub mod model;
pub mod rows;
pub mod schedule;

#[cfg(test)]
mod tests;

use anyhow::{anyhow, bail};
use melior::ir::Module;
use q35_format::{
    artifact::TargetSpec,
    signature::CodeSignatures,
    tsp::TspConfig,
};
use q35_target::{
    kernel::DEFAULT_ROWS_PER_WORKGROUP, pipeline, target::read_plan, Backend, CodeObject, Common, Plan, Session, Stage, Target, TargetArg,
};

/// Payload name of the program text.
pub const PROGRAM_PAYLOAD: &str = "code/tsp.program";

/// The Groq TSP-shaped machine, run by q35-rt's cycle-exact simulator.
pub struct TspTarget;

const STAGES: &[Stage] = &[Stage { name: "tsp", help: "the TSP program: every instruction with its cycle, unit and stream operands (TSP)" }];

impl Target for TspTarget {
    fn name(&self) -> &'static str {
        "tsp"
    }

    fn about(&self) -> &'static str {
        "a Groq TSP-shaped machine: a static schedule run by q35-rt's cycle-exact simulator"
    }

    fn args(&self) -> Vec<TargetArg> {
        vec![TargetArg {
            arg: clap::Arg::new("tsp_config")
                .long("tsp-config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("TSP: the machine description (JSON; absent fields take the published TSP's figures, docs/targets.md)"),
            elsewhere: "has no TSP description",
        }]
    }

    fn stages(&self) -> &'static [Stage] {
        STAGES
    }

    fn configure(&self, matches: &clap::ArgMatches, common: &Common) -> Result<Box<dyn Backend>, String> {
        let config = match matches.get_one::<std::path::PathBuf>("tsp_config") {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("--tsp-config {}: cannot read it: {e}", path.display()))?;
                TspConfig::from_json(&text).map_err(|e| format!("--tsp-config {}: {e}", path.display()))?
            }
            None => TspConfig::default(),
        };
        if !common.quant.is_coded() {
            return Err(format!("the tsp target multiplies coded weights (--quant q35, int4 or int3), not {}", common.quant));
        }
        Ok(Box::new(Tsp { config, context_length: common.context_length, max_tokens: common.max_tokens }))
    }
}

/// The TSP target with its machine description.
pub struct Tsp {
    pub config: TspConfig,
    pub context_length: usize,
    pub max_tokens: usize,
}

impl Tsp {
    /// The emitted module planned (unfused: the TSP runs epilogues as VXM
    /// row ops) and lowered to its programs: one token a run (decode), and
    /// `max_tokens` a run (prefill of a full chunk), one after the other
    /// in the text.
    fn program(&self, session: &mut Session, module: &mut Module) -> anyhow::Result<(Plan, String)> {
        let plan = planned(session, module)?;
        let started = std::time::Instant::now();
        // A chunk's widest activation must fit one MEM slice (the logits
        // are striped over several).
        let lanes = self.config.lanes() as u64;
        let widest = plan.buffers.iter().filter(|b| b.role == "activation").map(|b| (b.width as u64).div_ceil(lanes)).max().unwrap_or(1);
        let fits = (self.config.rows_per_slice() / (4 * widest)).max(1);
        let chunk = (self.max_tokens as u64).min(lanes).min(fits) as u32;
        // The prefill program first: its wide activations take SRAM before
        // the weights fill the slices.
        let counts: &[u32] = if chunk > 1 { &[chunk, 1] } else { &[1] };
        let programs = model::lower_all(&self.config, &plan, counts).map_err(|e| anyhow!("the tsp target: {e}"))?;
        let text: String = programs.iter().map(ToString::to_string).collect();
        session.timings.record("TSP schedule", started.elapsed());
        Ok((plan, text))
    }
}

/// `module` through the shared planning pass (unfused: the TSP runs
/// epilogues as VXM row ops), and its plan.
fn planned(session: &mut Session, module: &mut Module) -> anyhow::Result<Plan> {
    pipeline::run(session.q35, module, session.passes, &pipeline::parse("q35-lower-to-kernels")?, session.run, session.timings)?;
    read_plan(module).map_err(|e| anyhow!("internal error: {e}"))
}

impl Backend for Tsp {
    fn needs_coded_weights(&self) -> Option<&'static str> {
        Some("--target tsp")
    }

    fn emit(&self, session: &mut Session, module: &mut Module, stage: &str) -> anyhow::Result<String> {
        match stage {
            "tsp" => Ok(self.program(session, module)?.1),
            other => bail!("the tsp target has no stage `{other}`"),
        }
    }

    fn compile(&self, session: &mut Session, mut module: Module, check: &dyn Fn(&Plan) -> anyhow::Result<()>) -> anyhow::Result<CodeObject> {
        let (plan, program) = self.program(session, &mut module)?;
        check(&plan)?;
        let signatures = CodeSignatures::of_plan(&plan.buffers, &plan.dispatches, self.context_length, self.max_tokens)
            .map_err(|e| anyhow!("internal error: {e}"))?;
        // The program declares the plan's kernel signatures in a comment.
        let text = signatures.ptx_comment() + &program;
        Ok(CodeObject {
            payload: PROGRAM_PAYLOAD.to_string(),
            bytes: text.into_bytes(),
            target: TargetSpec {
                kind: "tsp".to_string(),
                triple: "tsp".to_string(),
                cpu: format!("tsp-{}", self.config.lanes()),
                features: String::new(),
            },
            plan,
            launches: Vec::new(),
            rows_per_workgroup: DEFAULT_ROWS_PER_WORKGROUP,
            // Matmuls take int8 activations per group, as the CPU's integer path.
            activations: "int8",
        })
    }

    fn capacity<'c>(&self, session: &mut Session<'c>, build: &mut dyn FnMut(usize) -> anyhow::Result<Module<'c>>, layers: usize, json: bool) -> anyhow::Result<String> {
        let mut plans = Vec::new();
        for n in [1, 2] {
            let mut module = build(n)?;
            plans.push(planned(session, &mut module)?);
        }
        let started = std::time::Instant::now();
        let capacity = capacity::capacity(&self.config, &plans[0], &plans[1], layers).map_err(|e| anyhow!("the tsp target: {e}"))?;
        session.timings.record("TSP schedule (1 and 2 layers)", started.elapsed());
        Ok(if json { capacity.to_json() + "\n" } else { capacity.to_string() })
    }
}

