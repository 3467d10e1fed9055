//! `q35-opt`: an `mlir-opt`-style driver for q35 IR.
//!
//! Reads MLIR text (a file or stdin), loads the upstream dialects and `q35`,
//! verifies it (MLIR's verifier, which applies the IRDL definition, and the
//! q35 verifier), runs the passes given as flags and/or `--pass-pipeline` in
//! command-line order, and prints the result. Diagnostics go to stderr with
//! `file:line:col` and the exit code is non-zero on any error.

use super::{diagnostics, init_logging, read_input, write_output};
use crate::{
    passes::PASSES,
    pipeline::{self, RunOptions, Step, Timings},
};
use anyhow::{bail, Result};
use clap::{Arg, ArgAction, ArgMatches, Command};
use q35_dialect::{verify::verify_module, Q35Context};

const SPLIT_MARKER: &str = "// -----";

fn command() -> Command {
    let mut command = Command::new("q35-opt")
        .about("Parse, verify, transform and print q35 MLIR (an mlir-opt for the q35 dialect)")
        .arg(Arg::new("input").default_value("-").help("input .mlir file, or - for stdin"))
        .arg(Arg::new("output").short('o').long("output").default_value("-").help("output file (written atomically), or - for stdout"))
        .arg(
            Arg::new("pass-pipeline")
                .long("pass-pipeline")
                .action(ArgAction::Append)
                .help("a textual pipeline, e.g. 'builtin.module(q35-verify,canonicalize)'; q35 and upstream passes may be mixed"),
        )
        .arg(
            Arg::new("pass")
                .short('p')
                .long("pass")
                .action(ArgAction::Append)
                .help("run one pass by name (upstream or q35), e.g. -p cse -p 'q35-verify'"),
        )
        .arg(Arg::new("split-input-file").long("split-input-file").action(ArgAction::SetTrue).help("process each `// -----` chunk separately"))
        .arg(Arg::new("verify-diagnostics").long("verify-diagnostics").action(ArgAction::SetTrue).help("check diagnostics against `expected-error` annotations in the input"))
        .arg(Arg::new("print-ir-after-all").long("mlir-print-ir-after-all").action(ArgAction::SetTrue).help("print the IR to stderr after every pass"))
        .arg(Arg::new("timing").long("timing").action(ArgAction::SetTrue).help("print the time spent in each pass to stderr"))
        .arg(
            Arg::new("verify-each")
                .long("verify-each")
                .value_parser(clap::value_parser!(bool))
                .default_value("true")
                .help("run the q35 verifier on the input and after every pass (MLIR's verifier always runs)"),
        )
        .arg(Arg::new("list-passes").long("list-passes").action(ArgAction::SetTrue).help("list the q35 passes and exit"))
        .arg(Arg::new("verbose").short('v').long("verbose").action(ArgAction::Count).help("more logging (-v info, -vv debug); RUST_LOG overrides"));
    for pass in PASSES {
        command = command.arg(
            Arg::new(pass.name)
                .long(pass.name)
                .action(ArgAction::Append)
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("")
                .help(pass.summary),
        );
    }
    command
}

/// The passes asked for, in command-line order.
fn requested_steps(matches: &ArgMatches) -> Result<Vec<Step>> {
    let mut ordered: Vec<(usize, Vec<Step>)> = Vec::new();
    let mut collect = |id: &str, to_steps: &dyn Fn(&str) -> Result<Vec<Step>>| -> Result<()> {
        if let (Some(values), Some(indices)) = (matches.get_many::<String>(id), matches.indices_of(id)) {
            for (value, index) in values.zip(indices) {
                ordered.push((index, to_steps(value)?));
            }
        }
        Ok(())
    };
    collect("pass-pipeline", &|text| Ok(pipeline::parse(text)?))?;
    collect("pass", &|text| Ok(pipeline::parse(text)?))?;
    for pass in PASSES {
        collect(pass.name, &|value| {
            let text = match (value.is_empty(), pass.flag_option) {
                (true, _) => pass.name.to_string(),
                (false, Some(key)) => format!("{}{{{key}={value}}}", pass.name),
                (false, None) => bail!("--{} takes no value (got `{value}`)", pass.name),
            };
            Ok(pipeline::parse(&text)?)
        })?;
    }
    ordered.sort_by_key(|(index, _)| *index);
    Ok(ordered.into_iter().flat_map(|(_, steps)| steps).collect())
}

/// Entry point of the `q35-opt` binary; returns the process exit code.
pub fn main() -> i32 {
    let matches = command().get_matches();
    init_logging(matches.get_count("verbose"));
    match run(&matches) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("{error:#}");
            1
        }
    }
}

fn run(matches: &ArgMatches) -> Result<()> {
    if matches.get_flag("list-passes") {
        for pass in PASSES {
            println!("{:<16} {}", pass.name, pass.summary);
        }
        return Ok(());
    }
    let input = matches.get_one::<String>("input").expect("has default");
    let output = matches.get_one::<String>("output").expect("has default");
    let steps = requested_steps(matches)?;
    let options = RunOptions {
        verify_each: *matches.get_one::<bool>("verify-each").expect("has default"),
        print_ir_after_all: matches.get_flag("print-ir-after-all"),
    };
    let source = read_input(input)?;
    let path = if input == "-" { "<stdin>" } else { input.as_str() };
    let input_path = std::path::Path::new(input.as_str());
    let inputs: Vec<&std::path::Path> = if input == "-" { Vec::new() } else { vec![input_path] };
    let context = Q35Context::new()?;

    let chunks = if matches.get_flag("split-input-file") {
        split_chunks(&source)
    } else {
        vec![source.clone()]
    };
    let mut printed = Vec::new();
    let mut errors = Vec::new();
    let mut timings = Timings::default();
    for chunk in &chunks {
        match process(&context, chunk, path, &steps, &options, &mut timings) {
            Ok(text) => printed.push(text),
            Err(error) => errors.push(format!("{error:#}")),
        }
    }
    if matches.get_flag("timing") {
        eprint!("{}", timings.render());
    }

    if matches.get_flag("verify-diagnostics") {
        let expected = diagnostics::expectations(&source).map_err(anyhow::Error::msg)?;
        let reported = diagnostics::reported(&errors.join("\n"));
        let problems = diagnostics::check(&expected, &reported);
        if !problems.is_empty() {
            bail!("{path}: diagnostics did not match expectations:\n{}", problems.join("\n"));
        }
        return write_output(output, &inputs, printed.join(&format!("{SPLIT_MARKER}\n")).as_bytes());
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    write_output(output, &inputs, printed.join(&format!("{SPLIT_MARKER}\n")).as_bytes())
}

/// Splits on `// -----` lines, padding each chunk with blank lines so MLIR
/// reports line numbers of the whole file.
fn split_chunks(source: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut line_offset = 0;
    for (index, line) in source.lines().enumerate() {
        if line.trim_end() == SPLIT_MARKER {
            chunks.push(std::mem::take(&mut current));
            line_offset = index + 1;
            current = "\n".repeat(line_offset);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    let _ = line_offset;
    chunks.push(current);
    chunks
}

fn process(
    context: &Q35Context,
    source: &str,
    path: &str,
    steps: &[Step],
    options: &RunOptions,
    timings: &mut Timings,
) -> Result<String> {
    let mut module = {
        let _span = tracing::info_span!("parse", path).entered();
        context.parse(source, path)?
    };
    if options.verify_each {
        verify_module(&module).map_err(|e| e.in_file(path))?;
    }
    pipeline::run(context, &mut module, &crate::passes::Registry, steps, options, timings).map_err(|e| rename(e, path))?;
    Ok(format!("{}\n", module.as_operation()))
}

/// Pass failures carry MLIR's `-` buffer name; say which file it was.
fn rename(error: pipeline::Error, path: &str) -> anyhow::Error {
    anyhow::anyhow!("{}", error.to_string().replace("\n-:", &format!("\n{path}:")))
}
