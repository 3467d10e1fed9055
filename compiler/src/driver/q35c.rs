//! `q35c`: the compiler driver.
//!
//! `q35c MODEL` reads a model (safetensors + config.json, or GGUF), builds
//! its graph and runs the pipeline as far as `--emit` asks, printing that
//! stage; `--quant-report` quantizes every matrix and reports the error;
//! `q35c convert MODEL.gguf -o DIR` writes the Hugging Face layout.

use super::{init_logging, write_output};
use crate::{
    codegen,
    emit::{emit_module, EmitOptions, Group},
    front::{self, Model},
    graph::ModelGraph,
    quant_report,
};
use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use q35_dialect::Q35Context;
use q35_format::{GroupSize, QuantKind, QuantSearch};
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

/// The stages every target shares, in order (targets add theirs after
/// `tiled`: [`q35_target::Target::stages`]).
const SHARED_STAGES: &[q35_target::Stage] = &[
    q35_target::Stage { name: "graph", help: "the model graph as Graphviz DOT" },
    q35_target::Stage { name: "mlir", help: "the verified q35 dialect module (weights referenced by name)" },
    q35_target::Stage { name: "tiled", help: "after q35-tile: dequant_matmul split into 320x320 (or --tile) tiles" },
];

/// `--emit`'s values: the shared stages, then each target's.
fn stage_parser() -> clap::builder::PossibleValuesParser {
    let stages = SHARED_STAGES.iter().chain(crate::targets::REGISTRY.iter().flat_map(|t| t.stages()));
    clap::builder::PossibleValuesParser::new(stages.map(|s| clap::builder::PossibleValue::new(s.name).help(s.help)))
}

/// `--target`'s values: the registered targets.
fn target_parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(crate::targets::REGISTRY.iter().map(|t| clap::builder::PossibleValue::new(t.name()).help(t.about())))
}

/// How the quantizer picks each weight's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Rounding {
    /// Each weight to its nearest level.
    Nearest,
    /// GPTQ: column by column, each rounding error moved onto the columns
    /// not yet rounded through the input's inverse Hessian.
    Gptq,
}

/// Whether matrix inputs are rotated (`q35.rotate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Rotation {
    /// For coded weights on a target that runs the transform (cpu).
    Auto,
    On,
    Off,
}

#[derive(Parser, Debug)]
#[command(name = "q35c", version, about = "Compile transformer language models with 3.5-bit weights")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    compile: CompileArgs,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert a GGUF model to the Hugging Face layout (model.safetensors,
    /// config.json, tokenizer.json) in DIR.
    Convert {
        /// The .gguf file.
        model: PathBuf,
        /// Output directory (created if missing).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Re-check a compiled artifact's proof obligations: re-derive them from
    /// its manifest and weights, compare with the stored ones, prove each
    /// with z3 (docs/proofs.md); exit 0 only if all hold.
    Verify {
        /// The .q35 artifact.
        artifact: PathBuf,
    },
    /// What a model needs of a target and how fast it would decode, from
    /// its config.json alone (no weights): chips, SRAM per chip, cycles
    /// and tokens a second (targets with a planner: tsp).
    Plan {
        /// The model's Hugging Face config.json.
        #[arg(long)]
        config: PathBuf,
        /// The target to plan for.
        #[arg(long, value_parser = target_parser())]
        target: String,
        /// KV cache rows (default: the model's context, at most 2048).
        #[arg(long)]
        context: Option<usize>,
        /// How the matrices are stored (every matrix alike: the planner
        /// has no weights to choose per matrix by).
        #[arg(long, default_value = "q35", value_parser = parse_quant)]
        quant: QuantKind,
        #[arg(long, default_value = "128", value_parser = parse_group)]
        group: GroupSize,
        /// The figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write a tiny deterministic random Llama model (model.safetensors,
    /// config.json, tokenizer.json) to DIR, for tests and quick trials.
    TinyModel {
        /// Output directory (created if missing).
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value_t = 2)]
        layers: usize,
        #[arg(long, default_value_t = 64)]
        hidden: usize,
        #[arg(long, default_value_t = 4)]
        heads: usize,
        #[arg(long, default_value_t = 2)]
        kv_heads: usize,
        #[arg(long, default_value_t = 128)]
        ffn: usize,
        /// Untied LM head (default: tied to the embedding).
        #[arg(long)]
        untied: bool,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(clap::Args, Debug)]
struct CompileArgs {
    /// model.safetensors (or its directory, or a sharded index) or a .gguf file.
    model: Option<PathBuf>,
    /// Print this stage and stop (a target's stages imply that target).
    #[arg(long, value_parser = stage_parser())]
    emit: Option<String>,
    /// How to store linear weights.
    #[arg(long, default_value = "q35", value_parser = parse_quant)]
    quant: QuantKind,
    /// Group size along K: 32, 64, 128, 256 or channel.
    #[arg(long, default_value = "128", value_parser = parse_group)]
    group: GroupSize,
    /// How group parameters are chosen: `none` is plain min/max, `mse`
    /// searches clipped ranges for the smallest weight error (same decode;
    /// lower RMSE but higher perplexity on SmolLM2, docs/quality.md).
    #[arg(long, default_value = "none", value_parser = parse_search)]
    quant_search: QuantSearch,
    /// Per-input-column importances, a JSON object of weight name to
    /// `cols` numbers (mean x² on calibration text, as `q35-rt calibrate`
    /// writes): the matrices it names are quantized minimizing the
    /// importance-weighted error.
    #[arg(long)]
    quant_importance: Option<PathBuf>,
    /// The text q35c calibrates the quantizer on (default: the built-in
    /// Apache License 2.0 text). Calibration runs by default for coded
    /// weights: an f16 build of the model runs over the text and every
    /// matrix's input statistics weigh its quantization error.
    #[arg(long, conflicts_with_all = ["no_calibration", "quant_importance"])]
    calibration_text: Option<PathBuf>,
    /// Per-matrix kinds and groups: lines `PATTERN KIND GROUP` (first
    /// match wins, `*` matches any text); other matrices take --quant and
    /// --group. `uniform`: every matrix alike. Default for q35 g128: each
    /// matrix's kind and group chosen by sensitivity (--bpw-budget).
    #[arg(long)]
    quant_policy: Option<PathBuf>,
    /// Bits per weight over all matrices (embedding and group parameters
    /// included) within which q35c chooses each matrix's kind and group by
    /// its measured sensitivity. The default q35 g128 build does this
    /// with 3.76.
    #[arg(long, conflicts_with = "quant_policy", value_parser = parse_budget)]
    bpw_budget: Option<f64>,
    /// Tokens of the calibration text to run.
    #[arg(long, default_value_t = crate::calibration::DEFAULT_TOKENS as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    calibration_tokens: u64,
    /// Quantize without calibration (plain min/max, or --quant-search).
    #[arg(long)]
    no_calibration: bool,
    /// How codes are chosen once group parameters are set: `gptq`, GPTQ's
    /// error-compensating rounding with the input statistics calibration
    /// collects (the default when calibrating), or `nearest`.
    #[arg(long, value_enum)]
    rounding: Option<Rounding>,
    /// Rotate every matrix input by a randomized Hadamard transform
    /// (`q35.rotate` after each norm, attention and SwiGLU; the matrices
    /// stored rotated), so a group's range is not set by one outlier
    /// column. `auto`: for coded weights on a target that runs it (cpu).
    #[arg(long, value_enum, default_value_t = Rotation::Auto)]
    rotation: Rotation,
    /// Quantize every matrix and report bits per weight and error against
    /// the source weights (with int4/int3 beside q35).
    #[arg(long)]
    quant_report: bool,
    /// KV cache rows, the longest sequence the compiled model can run
    /// (default: the model's context, at most 2048).
    #[arg(long)]
    context: Option<usize>,
    /// Output file: the artifact for --target, or the --emit stage
    /// (default stdout); written atomically.
    #[arg(short, long, default_value = "-")]
    output: String,
    /// Compile for this target into an artifact (-o model.q35).
    #[arg(long, value_parser = target_parser())]
    target: Option<String>,
    /// Tile sizes NxK for --emit tiled.
    #[arg(long, default_value = "320x320")]
    tile: String,
    /// Most tokens one runtime call takes (prefill chunk).
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Do not run q35-fuse: residual adds and SwiGLU stay separate kernels.
    #[arg(long)]
    no_fuse: bool,
    /// Print the IR after every pass to stderr.
    #[arg(long = "mlir-print-ir-after-all")]
    print_ir_after_all: bool,
    /// Print the time spent in each step.
    #[arg(long)]
    timing: bool,
}

/// The target an artifact or `--emit` stage is for: `--target`, or the
/// target whose stage `--emit` names; `None` for the shared stages.
fn chosen_target(args: &CompileArgs) -> Result<Option<&'static dyn q35_target::Target>> {
    let named = args.target.as_deref().and_then(crate::targets::find);
    let by_stage = args.emit.as_deref().and_then(crate::targets::owner_of_stage);
    match (named, by_stage) {
        (Some(named), Some(owner)) if named.name() != owner.name() => {
            bail!("--emit {} is a stage of --target {}, not of --target {}", args.emit.as_deref().unwrap_or_default(), owner.name(), named.name())
        }
        (named, by_stage) => Ok(named.or(by_stage)),
    }
}

/// The option combinations compile() refuses, checked before any slow
/// step (calibration) runs, and the chosen target configured.
fn check_compile_args(
    args: &CompileArgs,
    matches: &clap::ArgMatches,
    model: &Model,
) -> Result<Option<Box<dyn q35_target::Backend>>> {
    if args.max_tokens == 0 {
        bail!("--max-tokens 0: a call must take at least one token");
    }
    let target = chosen_target(args)?;
    if args.emit.is_none() {
        let Some(target) = target else {
            bail!("--target is required to write an artifact");
        };
        if args.output == "-" {
            bail!("--target {} writes a binary artifact: give a file with -o model.q35", target.name());
        }
    }
    let Some(target) = target else { return Ok(None) };
    crate::targets::check_foreign_options(matches, target)?;
    let common = q35_target::Common {
        quant: args.quant,
        context_length: context_length(args, model),
        max_tokens: args.max_tokens,
        fuse: !args.no_fuse,
        stage: args.emit.clone(),
    };
    target.configure(matches, &common).map(Some).map_err(anyhow::Error::msg)
}

/// Whether `--rotation` (auto: coded weights, and a target that runs
/// `q35.rotate` or none) rotates matrix inputs.
fn rotates(args: &CompileArgs, backend: Option<&dyn q35_target::Backend>) -> Result<bool> {
    let runs = backend.is_none_or(|b| b.runs_rotations());
    match args.rotation {
        Rotation::Off => Ok(false),
        Rotation::Auto => Ok(backend.is_none_or(|b| b.rotates_by_default()) && args.quant.is_coded()),
        Rotation::On if !runs => bail!(
            "--rotation on: the {} target does not run q35.rotate (the online rotation of matrix inputs); use --rotation off",
            args.target.as_deref().unwrap_or("chosen")
        ),
        Rotation::On => Ok(true),
    }
}

/// KV cache rows: `--context`, or the model's context, at most 2048.
fn context_length(args: &CompileArgs, model: &Model) -> usize {
    args.context.unwrap_or_else(|| model.config.max_position_embeddings.min(2048))
}

/// Runs the pipeline from emission as far as --emit asks, or to the
/// artifact for --target.
#[allow(clippy::too_many_arguments)]
fn compile(
    args: &CompileArgs,
    backend: Option<&dyn q35_target::Backend>,
    q35: &Q35Context,
    model: &Model,
    graph: &ModelGraph,
    inputs: &[&Path],
    policy: &crate::policy::QuantPolicy,
    calibrated: Option<crate::calibration::Calibrated>,
    timings: &mut crate::pipeline::Timings,
) -> Result<()> {
    let context_length = context_length(args, model);
    crate::limits::check_context(context_length)?;
    let emit_options = EmitOptions {
        quant: args.quant,
        group: match args.group.fixed() {
            Some(g) => Group::Size(g as u64),
            None => Group::Channel,
        },
        context_length,
        overrides: policy.rules.clone(),
    };
    let run_options = crate::pipeline::RunOptions {
        verify_each: true,
        print_ir_after_all: args.print_ir_after_all,
    };
    let started = Instant::now();
    let source = model.source.display().to_string();
    let mut module = emit_module(q35, graph, &model.config, &source, &emit_options)?;
    timings.record("emit q35 MLIR", started.elapsed());
    let print = |text: String| write_output(&args.output, inputs, text.as_bytes());
    let mut options = codegen::CompileOptions::new(emit_options, args.group);
    options.search = args.quant_search;
    options.max_tokens = args.max_tokens;
    options.fuse = !args.no_fuse;
    match args.emit.as_deref() {
        Some("mlir") => return print(format!("{}\n", module.as_operation())),
        Some("tiled") => {
            let steps = crate::pipeline::parse(&format!("q35-tile{{tile={}}}", args.tile))?;
            crate::pipeline::run(q35, &mut module, &crate::passes::Registry, &steps, &run_options, timings)?;
            return print(format!("{}\n", module.as_operation()));
        }
        Some(stage) => {
            let backend = backend.ok_or_else(|| anyhow::anyhow!("internal error: no target for --emit {stage}"))?;
            let mut session = q35_target::Session { q35, passes: &crate::passes::Registry, run: &run_options, timings };
            let text = backend.emit(&mut session, &mut module, stage)?;
            if names_directory(&args.output) {
                return write_files(stage, Path::new(&args.output), inputs, &text);
            }
            return print(text);
        }
        None => {}
    }
    let backend = backend.ok_or_else(|| anyhow::anyhow!("internal error: an artifact without a target"))?;
    if let Some(calibrated) = calibrated {
        options.importance = Some(calibrated.importance);
        options.compensation = calibrated.compensation;
    }
    let bytes = codegen::compile(q35, module, model, graph, &options, backend, &run_options, timings)?;
    let started = Instant::now();
    write_output(&args.output, inputs, &bytes)?;
    timings.record("write artifact", started.elapsed());
    eprintln!("wrote {} ({:.1} MiB)", args.output, bytes.len() as f64 / (1024.0 * 1024.0));
    Ok(())
}

/// Whether `-o` names a directory (an existing one, or a path ending in
/// `/`): a stage printed as several files goes there file by file.
fn names_directory(output: &str) -> bool {
    output.ends_with('/') || Path::new(output).is_dir()
}

/// The line that starts each file of a stage printed as several files
/// (`--emit csl`: layout.csl and the PE programs).
const FILE_MARKER: (&str, &str) = ("// ==== file: ", " ====");

/// `--emit STAGE -o DIR/`: a stage printed as several files, each after a
/// [`FILE_MARKER`] line, written into `dir` (created if missing), one file
/// each, every file written to a temporary name first and renamed only
/// once all of them are written.
fn write_files(stage: &str, dir: &Path, inputs: &[&Path], text: &str) -> Result<()> {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if let Some(name) = bare.strip_prefix(FILE_MARKER.0).and_then(|r| r.strip_suffix(FILE_MARKER.1)) {
            files.push((name.to_string(), String::new()));
        } else if let Some((_, body)) = files.last_mut() {
            body.push_str(line);
        } else {
            bail!("--emit {stage} prints one text, not files: -o {} names a directory; give a file, or `-` for stdout", dir.display());
        }
    }
    if files.is_empty() {
        bail!("--emit {stage} prints one text, not files: -o {} names a directory; give a file, or `-` for stdout", dir.display());
    }
    if let Some((name, _)) = files.iter().find(|(name, _)| name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.')) {
        bail!("internal error: --emit {stage} names a file `{name}` outside its directory");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let mut outputs = Vec::with_capacity(files.len());
    for (name, body) in &files {
        let mut out = q35_format::output::Output::create(&dir.join(name), inputs)?;
        std::io::Write::write_all(&mut out, body.as_bytes()).with_context(|| format!("writing {}", dir.join(name).display()))?;
        outputs.push(out);
    }
    for out in outputs {
        out.commit()?;
    }
    eprintln!("wrote {} files to {}: {}", files.len(), dir.display(), files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "));
    Ok(())
}

/// What the quantizer weighs its error with: `--quant-importance`, else
/// calibration (by default, for coded weights; with GPTQ's compensation
/// unless `--rounding nearest`), else nothing.
fn calibrated(
    args: &CompileArgs,
    q35: &Q35Context,
    model: &Model,
    graph: &ModelGraph,
    timings: &mut crate::pipeline::Timings,
) -> Result<Option<crate::calibration::Calibrated>> {
    if let Some(path) = &args.quant_importance {
        if args.rounding == Some(Rounding::Gptq) {
            bail!("--rounding gptq needs q35c's own calibration (its input Hessians), not --quant-importance");
        }
        return Ok(Some(crate::calibration::Calibrated {
            importance: crate::importance::load_for(path, graph)?,
            ..Default::default()
        }));
    }
    if args.no_calibration || !args.quant.is_coded() {
        if args.rounding == Some(Rounding::Gptq) {
            bail!("--rounding gptq needs calibration and coded weights (--quant q35, int4 or int3)");
        }
        return Ok(None);
    }
    let text = match &args.calibration_text {
        Some(path) => crate::calibration::CalibrationText::File(path.clone()),
        None => crate::calibration::CalibrationText::BuiltIn,
    };
    let gptq = args.rounding != Some(Rounding::Nearest);
    crate::calibration::calibrate(q35, model, graph, &text, args.calibration_tokens as usize, gptq, timings)
}

/// How each matrix's kind and group is decided.
enum PolicyChoice {
    /// `--quant-policy FILE` or `uniform`, or an uncoded --quant; with a
    /// phrase naming it for the report.
    Fixed(crate::policy::QuantPolicy, String),
    /// Chosen by sensitivity within a budget, once calibration has run;
    /// `explicit` when --bpw-budget asked for it.
    Allocate { budget: f64, explicit: bool },
}

/// `--quant-policy` (checked against the model's matrices and options) or
/// `--bpw-budget`: the default q35 g128 build allocates within
/// [`q35_format::allocate::DEFAULT_BUDGET`].
fn quant_policy(args: &CompileArgs, graph: &ModelGraph, backend: Option<&dyn q35_target::Backend>) -> Result<PolicyChoice> {
    let default = (args.quant, args.group);
    let uniform = || PolicyChoice::Fixed(crate::policy::QuantPolicy::uniform(args.quant, args.group), format!("uniform {} g{}", args.quant, args.group));
    let path = match args.quant_policy.as_deref() {
        Some(p) if p == Path::new("uniform") => return Ok(uniform()),
        Some(p) => p,
        None => {
            return Ok(match args.bpw_budget {
                Some(_) if !args.quant.is_coded() => bail!("--bpw-budget chooses among coded kinds; it does not apply to --quant {}", args.quant),
                Some(budget) => PolicyChoice::Allocate { budget, explicit: true },
                None if default == (QuantKind::Q35, GroupSize::G128) => PolicyChoice::Allocate {
                    budget: q35_format::allocate::DEFAULT_BUDGET,
                    explicit: false,
                },
                None => uniform(),
            })
        }
    };
    let policy = crate::policy::QuantPolicy::load(path, default)?;
    let weights = graph.weights();
    let names = weights.iter().filter(|w| w.is_matrix).map(|w| w.name.as_str());
    let origin = path.display().to_string();
    policy.check_against(names, &origin)?;
    if let Some(why) = backend.and_then(|b| b.needs_coded_weights()) {
        if let Some(rule) = policy.rules.iter().find(|r| !r.kind.is_coded()) {
            bail!("{origin}: the rule for {} stores it as {}, but {why} needs coded weights (q35, int4 or int3)", q35_format::quote::quote(&rule.pattern), rule.kind);
        }
    }
    Ok(PolicyChoice::Fixed(policy, format!("--quant-policy {origin}")))
}

/// The policy itself, and a phrase saying how it was chosen.
fn decide_policy(
    choice: PolicyChoice,
    model: &Model,
    graph: &ModelGraph,
    calibrated: Option<&crate::calibration::Calibrated>,
    timings: &mut crate::pipeline::Timings,
) -> Result<(crate::policy::QuantPolicy, String)> {
    match choice {
        PolicyChoice::Fixed(policy, origin) => Ok((policy, origin)),
        PolicyChoice::Allocate { budget, explicit } => {
            let importance = calibrated.map(|c| &c.importance);
            // Without activation statistics the estimate sees only the
            // weights, and on SmolLM2 its choice was worse than uniform
            // q35 g128 (349 against 259, docs/quality.md): the default
            // allocates only when calibrated.
            if importance.is_none() && !explicit {
                let (kind, group) = (QuantKind::Q35, GroupSize::G128);
                return Ok((crate::policy::QuantPolicy::uniform(kind, group), format!("uniform {kind} g{group} (not calibrated: --bpw-budget chooses from the weights alone)")));
            }
            let started = Instant::now();
            let policy = crate::policy::allocate(model, graph, importance, budget)?;
            timings.record("choose precisions", started.elapsed());
            let weighed = if importance.is_some() { "calibrated" } else { "weights alone, no calibration" };
            Ok((policy, format!("chosen by sensitivity within {budget} bits per weight ({weighed})")))
        }
    }
}

fn parse_budget(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(b) if b.is_finite() && b > 0.0 => Ok(b),
        _ => Err(format!("expected a positive number of bits per weight, such as 3.76, not {}", q35_format::quote::quote(s))),
    }
}

fn parse_quant(s: &str) -> Result<QuantKind, String> {
    s.parse().map_err(|e: q35_format::Error| e.to_string())
}

fn parse_search(s: &str) -> Result<QuantSearch, String> {
    s.parse().map_err(|e: q35_format::Error| e.to_string())
}

fn parse_group(s: &str) -> Result<GroupSize, String> {
    s.parse().map_err(|e: q35_format::Error| e.to_string())
}

/// Entry point of the `q35c` binary; returns the process exit code.
pub fn main() -> i32 {
    use clap::{CommandFactory, FromArgMatches};
    // The targets' own options join the driver's, and `plan`'s.
    let mut command = Cli::command();
    for target in crate::targets::REGISTRY {
        for option in target.args() {
            command = command.mut_subcommand("plan", |plan| plan.arg(option.arg.clone())).arg(option.arg);
        }
    }
    let matches = command.get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    init_logging(cli.verbose);
    match run(cli, &matches) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: {error:#}");
            1
        }
    }
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<()> {
    if let Some(Command::TinyModel {
        output,
        layers,
        hidden,
        heads,
        kv_heads,
        ffn,
        untied,
        seed,
    }) = cli.command
    {
        let spec = front::testmodel::TinySpec {
            num_hidden_layers: layers,
            hidden_size: hidden,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            intermediate_size: ffn,
            tie_word_embeddings: !untied,
            seed,
            ..Default::default()
        };
        let path = front::testmodel::create_tiny_model(&output, spec)?;
        println!("{}", path.display());
        return Ok(());
    }
    if let Some(Command::Plan { config, target, context, quant, group, json }) = &cli.command {
        let matches = matches.subcommand_matches("plan").ok_or_else(|| anyhow::anyhow!("internal error: no `plan` arguments"))?;
        let args = crate::capacity::PlanArgs { config, target, context: *context, quant: *quant, group: *group, json: *json };
        print!("{}", crate::capacity::plan(&args, matches)?);
        return Ok(());
    }
    if let Some(Command::Verify { artifact }) = &cli.command {
        let path = artifact.display().to_string();
        let bytes = std::fs::read(artifact).with_context(|| format!("{path}: cannot read"))?;
        let summary = crate::obligations::verify_artifact(&path, &bytes).map_err(anyhow::Error::msg)?;
        println!("{path}: {summary}");
        return Ok(());
    }
    if let Some(Command::Convert { model, output }) = cli.command {
        let started = Instant::now();
        front::convert::convert_gguf(&model, &output)?;
        eprintln!(
            "converted {} -> {} in {:.1} s",
            model.display(),
            output.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let args = cli.compile;
    let Some(path) = args.model.as_deref() else {
        bail!("no model given: q35c MODEL [--emit graph|mlir] [--quant-report] (see --help)");
    };
    // Refuse an output that would overwrite an input before any work.
    let input_files: Vec<PathBuf> =
        front::input_files(path).into_iter().chain(args.quant_importance.iter().cloned()).chain(args.calibration_text.iter().cloned())
        .chain(args.quant_policy.iter().cloned())
        .collect();
    let inputs: Vec<&Path> = input_files.iter().map(PathBuf::as_path).collect();
    // A directory takes a stage's files (write_files checks each one).
    let to_directory = args.emit.is_some() && names_directory(&args.output);
    if !to_directory {
        q35_format::output::check_output(Path::new(&args.output), &inputs)?;
    }
    let mut timings = crate::pipeline::Timings::default();
    let started = Instant::now();
    let model: Model = front::load(path).with_context(|| format!("failed to load {}", path.display()))?;
    timings.record("load model", started.elapsed());

    let started = Instant::now();
    let mut graph = ModelGraph::llama(&model.config)?;
    timings.record("build graph", started.elapsed());

    let graph_only = args.emit.as_deref() == Some("graph");
    let needs_mlir = (args.emit.is_some() && !graph_only) || args.target.is_some();
    if !needs_mlir && !args.quant_report && !graph_only {
        bail!("nothing to do: pass --target cpu -o model.q35, --emit STAGE or --quant-report (see --help)");
    }
    let backend = if needs_mlir { check_compile_args(&args, matches, &model)? } else { None };
    if rotates(&args, backend.as_deref())? {
        graph.rotate_inputs();
    }
    let choice = quant_policy(&args, &graph, backend.as_deref())?;
    if graph_only {
        write_output(&args.output, &inputs, graph.to_dot().as_bytes())?;
        if !args.quant_report {
            return Ok(());
        }
    }
    let q35 = Q35Context::new()?;
    // Calibration only for what quantizes: an artifact or the report.
    let artifact = needs_mlir && args.emit.is_none();
    let calibrated = if artifact || args.quant_report {
        calibrated(&args, &q35, &model, &graph, &mut timings)?
    } else {
        None
    };
    let (policy, origin) = decide_policy(choice, &model, &graph, calibrated.as_ref(), &mut timings)?;

    if args.quant_report {
        let started = Instant::now();
        let report = quant_report::run(&model, &graph, &policy, &origin, args.quant_search, calibrated.as_ref())?;
        timings.record("quantize (report)", started.elapsed());
        print!("{report}");
    }
    if needs_mlir && !graph_only {
        compile(&args, backend.as_deref(), &q35, &model, &graph, &inputs, &policy, calibrated, &mut timings)?;
    }
    if args.timing {
        eprint!("{}", timings.render());
    }
    Ok(())
}
