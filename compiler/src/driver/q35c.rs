//! `q35c`: the compiler driver.
//!
//! `q35c MODEL` reads a model (safetensors + config.json, or GGUF), builds
//! its graph and runs the pipeline as far as `--emit` asks, printing that
//! stage; `--quant-report` quantizes every matrix and reports the error;
//! `q35c convert MODEL.gguf -o DIR` writes the Hugging Face layout.

use super::{init_logging, write_output};
use crate::{
    emit::{emit_module, EmitOptions, Group},
    front::{self, Model},
    graph::ModelGraph,
    quant_report,
};
use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use q35_dialect::Q35Context;
use q35_format::{GroupSize, QuantKind};
use std::{path::PathBuf, time::Instant};

/// Pipeline stages, in order; the driver stops at the one asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Stage {
    /// The model graph as Graphviz DOT.
    Graph,
    /// The verified q35 dialect module (weights referenced by name).
    Mlir,
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
    /// Print this stage and stop.
    #[arg(long, value_enum)]
    emit: Option<Stage>,
    /// How to store linear weights.
    #[arg(long, default_value = "q35", value_parser = parse_quant)]
    quant: QuantKind,
    /// Group size along K: 32, 64, 128, 256 or channel.
    #[arg(long, default_value = "128", value_parser = parse_group)]
    group: GroupSize,
    /// Quantize every matrix and report bits per weight and error against
    /// the source weights (with int4/int3 beside q35).
    #[arg(long)]
    quant_report: bool,
    /// KV cache rows, the longest sequence the compiled model can run
    /// (default: the model's context, at most 2048).
    #[arg(long)]
    context: Option<usize>,
    /// Output file for --emit (default stdout); written atomically.
    #[arg(short, long, default_value = "-")]
    output: String,
    /// Print the time spent in each step.
    #[arg(long)]
    timing: bool,
}

fn parse_quant(s: &str) -> Result<QuantKind, String> {
    s.parse().map_err(|e: q35_format::Error| e.to_string())
}

fn parse_group(s: &str) -> Result<GroupSize, String> {
    s.parse().map_err(|e: q35_format::Error| e.to_string())
}

/// Entry point of the `q35c` binary; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: {error:#}");
            1
        }
    }
}

fn run(cli: Cli) -> Result<()> {
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
        std::fs::create_dir_all(&output).with_context(|| format!("failed to create {}", output.display()))?;
        let path = front::testmodel::write_tiny_model(&output, spec)?;
        println!("{}", path.display());
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
    let mut timings = crate::pipeline::Timings::default();
    let started = Instant::now();
    let model: Model = front::load(path).with_context(|| format!("failed to load {}", path.display()))?;
    timings.record("load model", started.elapsed());

    let started = Instant::now();
    let graph = ModelGraph::llama(&model.config)?;
    timings.record("build graph", started.elapsed());

    if args.quant_report {
        let started = Instant::now();
        let report = quant_report::run(&model, &graph, args.quant, args.group)?;
        timings.record("quantize", started.elapsed());
        print!("{report}");
    }

    match args.emit {
        Some(Stage::Graph) => write_output(&args.output, graph.to_dot().as_bytes())?,
        Some(Stage::Mlir) => {
            let q35 = Q35Context::new()?;
            let context_length = args
                .context
                .unwrap_or_else(|| model.config.max_position_embeddings.min(2048));
            let options = EmitOptions {
                quant: args.quant,
                group: match args.group.fixed() {
                    Some(g) => Group::Size(g as u64),
                    None => Group::Channel,
                },
                context_length,
            };
            let started = Instant::now();
            let source = model.source.display().to_string();
            let module = emit_module(&q35, &graph, &model.config, &source, &options)?;
            timings.record("emit q35 MLIR", started.elapsed());
            write_output(&args.output, format!("{}\n", module.as_operation()).as_bytes())?;
        }
        None if !args.quant_report => {
            bail!("nothing to do: pass --emit graph|mlir or --quant-report (code generation comes with --target)")
        }
        None => {}
    }
    if args.timing {
        eprint!("{}", timings.render());
    }
    Ok(())
}
