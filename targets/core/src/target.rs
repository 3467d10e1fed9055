//! The `Target` trait: everything the driver and the artifact writer know
//! of a backend. A target declares its name, its command-line options and
//! the `--emit` stages it adds; configured from the parsed command line,
//! it lowers the emitted (and fused) q35 module through the shared
//! planning pass to its own code object. Targets reach the shared q35
//! passes by name through a [`PassSource`], so a target crate depends on
//! this crate only, never on the compiler or another target.

use crate::pass::PassSource;
use crate::pipeline::{RunOptions, Timings};
use crate::plan::Plan;
use melior::ir::Module;
use q35_dialect::Q35Context;
use q35_format::{artifact::{LaunchSpec, TargetSpec}, QuantKind};

/// One `--emit` stage a target adds, in pipeline order.
#[derive(Clone, Copy, Debug)]
pub struct Stage {
    /// The value of `--emit`.
    pub name: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
}

/// A command-line option a target adds.
pub struct TargetArg {
    pub arg: clap::Arg,
    /// How a chosen other target does without it: "runs f32 activations"
    /// in "--activations int8 is a CPU option; the nvptx target runs f32
    /// activations".
    pub elsewhere: &'static str,
}

/// What every target is configured with, from the shared options.
#[derive(Clone, Debug)]
pub struct Common {
    /// `--quant`: the kind of matrices no policy rule names.
    pub quant: QuantKind,
    /// KV cache rows.
    pub context_length: usize,
    /// Most tokens one runtime call takes.
    pub max_tokens: usize,
    /// Run `q35-fuse` (epilogues into matmuls) before lowering.
    pub fuse: bool,
    /// The `--emit` stage, if one was asked for (a target may have options
    /// only some of its stages take).
    pub stage: Option<String>,
}

/// A backend, as registered with the driver.
pub trait Target: Sync {
    /// `--target NAME`, and the `target.kind` of its artifacts.
    fn name(&self) -> &'static str;
    /// One line for `--help`.
    fn about(&self) -> &'static str;
    /// Its command-line options (ids must not clash with the driver's or
    /// another target's).
    fn args(&self) -> Vec<TargetArg>;
    /// The `--emit` stages it adds.
    fn stages(&self) -> &'static [Stage];
    /// The target with its options read from `matches`, or a message
    /// naming the option that is wrong.
    fn configure(&self, matches: &clap::ArgMatches, common: &Common) -> Result<Box<dyn Backend>, String>;
}

/// The code a target made, with what the artifact records about it.
pub struct CodeObject {
    /// Payload name in the artifact, e.g. `code/cpu.so`.
    pub payload: String,
    pub bytes: Vec<u8>,
    /// `target` in the manifest: kind, triple, cpu/SM, features.
    pub target: TargetSpec,
    /// The plan, as the target's launches see it (GPU workgroup counts).
    pub plan: Plan,
    /// One launch per dispatch (GPU targets; empty otherwise).
    pub launches: Vec<LaunchSpec>,
    /// `rows_per_workgroup` in the manifest.
    pub rows_per_workgroup: usize,
    /// `activations` in the manifest: `f32` or `int8`.
    pub activations: &'static str,
}

/// The shared things a lowering runs with.
pub struct Session<'a> {
    pub q35: &'a Q35Context,
    /// The q35 passes, for the shared ones a target runs by name
    /// (`q35-fuse`, `q35-lower-to-kernels`).
    pub passes: &'a dyn PassSource,
    pub run: &'a RunOptions,
    pub timings: &'a mut Timings,
}

/// A configured target.
pub trait Backend {
    /// The option that makes every matrix need coded weights (q35, int4 or
    /// int3), if one was given, e.g. `--activations int8`.
    fn needs_coded_weights(&self) -> Option<&'static str> {
        None
    }

    /// Whether the target's kernels run `q35.rotate` (the online rotation
    /// of matrix inputs): `--rotation on` is refused otherwise.
    fn runs_rotations(&self) -> bool {
        false
    }

    /// Whether q35c rotates by default (`--rotation auto`) for this target.
    fn rotates_by_default(&self) -> bool {
        self.runs_rotations()
    }

    /// Lowers `module` (the emitted q35 module) in place to `stage` (one of
    /// the target's) and returns its text.
    fn emit(&self, session: &mut Session, module: &mut Module, stage: &str) -> anyhow::Result<String>;

    /// Lowers `module` to the target's code object; `check` sees the plan
    /// before any code is generated and may refuse it.
    fn compile(
        &self,
        session: &mut Session,
        module: Module,
        check: &dyn Fn(&Plan) -> anyhow::Result<()>,
    ) -> anyhow::Result<CodeObject>;

    /// What the model needs of the target and how fast it would run, from
    /// its shape alone (`q35c plan`): `build(n)` emits the q35 module of
    /// the model cut to n decoder layers (no weights); the model has
    /// `layers`. A report, as JSON if `json`.
    fn capacity<'c>(
        &self,
        _session: &mut Session<'c>,
        _build: &mut dyn FnMut(usize) -> anyhow::Result<Module<'c>>,
        _layers: usize,
        _json: bool,
    ) -> anyhow::Result<String> {
        anyhow::bail!("this target has no capacity planner (q35c plan): compile the model and run it")
    }
}

/// The `q35.plan` op of `module` (after `q35-lower-to-kernels`), read.
pub fn read_plan(module: &Module) -> Result<Plan, String> {
    use melior::ir::{block::BlockLike, operation::OperationLike};
    let body = module.body();
    let mut op = body.first_operation();
    while let Some(current) = op {
        if current.name().as_string_ref().as_str() == Ok("q35.plan") {
            return Plan::from_op(current);
        }
        op = current.next_in_block();
    }
    Err("the module has no q35.plan (q35-lower-to-kernels makes it)".into())
}

/// Erases the `q35.plan` op of `module`: the manifest carries the plan, and
/// it is not LLVM.
pub fn erase_plan(q35: &Q35Context, module: &Module) {
    use melior::ir::{block::BlockLike, operation::OperationLike};
    let body = module.body();
    let mut op = body.first_operation();
    while let Some(current) = op {
        op = current.next_in_block();
        if current.name().as_string_ref().as_str() == Ok("q35.plan") {
            melior::IrRewriter::new(q35.context()).as_rewriter_base().erase_op(current);
        }
    }
}
