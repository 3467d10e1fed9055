//! Pass pipelines mixing q35 passes and upstream MLIR passes.
//!
//! Upstream passes are parsed by MLIR's own pipeline parser; q35 passes are
//! Rust passes that MLIR's registry cannot name. A pipeline is therefore a
//! list of steps, each run by its own pass manager on the same module, so
//! every step gets a timing entry, optional IR printing after it, and the
//! q35 verifier between steps (`--verify-each`).

use crate::pass::{self, Findings, PassSource};
use melior::{
    ir::Module,
    pass::PassManager,
    utility::parse_pass_pipeline,
};
use q35_dialect::{verify::verify_module, Q35Context};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid pass pipeline `{text}`: {reason}")]
    Syntax { text: String, reason: String },
    #[error(transparent)]
    Pass(#[from] pass::Error),
    #[error("invalid upstream pass `{step}`: {reason}")]
    Upstream { step: String, reason: String },
    #[error("pass `{step}` failed:\n{diagnostics}")]
    Failed { step: String, diagnostics: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One element of a pipeline: `name` or `name{key=value ...}`, or an
/// upstream nesting such as `func.func(canonicalize)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The element as written, for messages and IR dumps.
    pub text: String,
    pub name: String,
    pub options: Vec<(String, String)>,
}

impl Step {
    pub fn is_q35(&self) -> bool {
        self.name.starts_with("q35-")
    }
}

/// Parses `builtin.module(a, b{k=v}, func.func(c))` or a bare `a,b` list.
pub fn parse(text: &str) -> Result<Vec<Step>> {
    let syntax = |reason: &str| Error::Syntax {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = text.trim();
    let body = match trimmed.strip_prefix("builtin.module(") {
        Some(rest) => rest
            .strip_suffix(')')
            .ok_or_else(|| syntax("missing `)` closing builtin.module("))?,
        None => trimmed,
    };
    split_top_level(body)
        .map_err(|reason| syntax(&reason))?
        .into_iter()
        .filter(|element| !element.is_empty())
        .map(|element| parse_step(&element).map_err(|reason| syntax(&reason)))
        .collect()
}

/// Splits on commas that are not inside `()` or `{}`.
fn split_top_level(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut elements = vec![String::new()];
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' | '{' => depth += 1,
            ')' | '}' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced `{c}`"))?
            }
            ',' if depth == 0 => {
                elements.push(String::new());
                continue;
            }
            _ => {}
        }
        elements.last_mut().expect("never empty").push(c);
    }
    if depth != 0 {
        return Err("unbalanced brackets".into());
    }
    Ok(elements.into_iter().map(|e| e.trim().to_string()).collect())
}

fn parse_step(element: &str) -> std::result::Result<Step, String> {
    let name_end = element.find(['{', '(']).unwrap_or(element.len());
    let name = element[..name_end].trim().to_string();
    if name.is_empty() {
        return Err(format!("element `{element}` has no pass name"));
    }
    let mut options = Vec::new();
    let rest = &element[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let inner = inner
            .strip_suffix('}')
            .ok_or_else(|| format!("options of `{name}` must end with `}}`"))?;
        for option in inner.split_whitespace() {
            let (key, value) = option.split_once('=').unwrap_or((option, "true"));
            options.push((key.to_string(), value.to_string()));
        }
    }
    Ok(Step {
        text: element.to_string(),
        name,
        options,
    })
}

/// How a pipeline runs.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Run the q35 verifier after every step (MLIR's verifier always runs).
    pub verify_each: bool,
    /// Print the module to stderr after every step.
    pub print_ir_after_all: bool,
}

/// Time spent in each step, printed by `--timing`.
#[derive(Clone, Debug, Default)]
pub struct Timings(pub Vec<(String, Duration)>);

impl Timings {
    pub fn record(&mut self, name: &str, elapsed: Duration) {
        self.0.push((name.to_string(), elapsed));
    }

    /// A table in the spirit of MLIR's `--mlir-timing`.
    pub fn render(&self) -> String {
        let total: Duration = self.0.iter().map(|(_, d)| *d).sum();
        let mut out = String::from("===-------------------------------------------------------------===\n");
        out += "                    ... q35 execution timing report ...\n";
        out += "===-------------------------------------------------------------===\n";
        out += "  Wall Time (ms)   (%)  Name\n";
        for (name, elapsed) in &self.0 {
            let pct = if total.is_zero() {
                0.0
            } else {
                100.0 * elapsed.as_secs_f64() / total.as_secs_f64()
            };
            out += &format!("  {:>13.3}  {:>5.1}  {}\n", elapsed.as_secs_f64() * 1e3, pct, name);
        }
        out += &format!("  {:>13.3}  100.0  Total\n", total.as_secs_f64() * 1e3);
        out
    }
}

/// Runs `steps` in order on `module`; q35 steps are created by `passes`.
pub fn run(
    context: &Q35Context,
    module: &mut Module,
    passes: &dyn PassSource,
    steps: &[Step],
    options: &RunOptions,
    timings: &mut Timings,
) -> Result<()> {
    for step in steps {
        let span = tracing::info_span!("pass", name = %step.name);
        let _guard = span.enter();
        let started = Instant::now();
        run_step(context, module, passes, step)?;
        if options.verify_each {
            verify_module(module).map_err(|error| Error::Failed {
                step: step.text.clone(),
                diagnostics: format!("the q35 verifier failed after it:\n{error}"),
            })?;
        }
        timings.record(&step.text, started.elapsed());
        tracing::debug!(elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "pass done");
        if options.print_ir_after_all {
            eprintln!("// -----// IR Dump After {} //----- //", step.text);
            eprintln!("{}", module.as_operation());
        }
    }
    Ok(())
}

/// Runs an upstream pipeline `text` (no q35 passes), as a target's
/// conversions to its code: each element timed like a step of [`run`].
pub fn run_upstream(context: &Q35Context, module: &mut Module, text: &str, options: &RunOptions, timings: &mut Timings) -> Result<()> {
    run(context, module, &pass::NoPasses, &parse(text)?, options, timings)
}

/// Runs one already built pass (one whose handles the caller keeps, as
/// the lowering passes' plans) like a step of [`run`]: the same error,
/// timing and IR dump, under `name`.
pub fn run_pass(
    context: &Q35Context,
    module: &mut Module,
    name: &str,
    pass: melior::pass::Pass,
    findings: &Findings,
    options: &RunOptions,
    timings: &mut Timings,
) -> Result<()> {
    let started = Instant::now();
    let manager = PassManager::new(context.context());
    manager.add_pass(pass);
    run_manager(context, module, &manager, name, Some(findings.clone()))?;
    timings.record(name, started.elapsed());
    if options.print_ir_after_all {
        eprintln!("// -----// IR Dump After {name} //----- //");
        eprintln!("{}", module.as_operation());
    }
    Ok(())
}

/// Runs `manager` on `module`; a failure reports what the pass found and
/// what MLIR said, under `step`.
fn run_manager(context: &Q35Context, module: &mut Module, manager: &PassManager, step: &str, findings: Option<Findings>) -> Result<()> {
    context.diagnostics().take();
    manager.run(module).map_err(|_| {
        let mut lines: Vec<String> = findings.map(|f| f.take()).unwrap_or_default();
        let mlir = context.diagnostics().take();
        lines.extend(mlir.into_iter().map(|d| d.to_string()));
        Error::Failed {
            step: step.to_string(),
            diagnostics: if lines.is_empty() {
                "no diagnostic was reported".into()
            } else {
                lines.join("\n")
            },
        }
    })
}

fn run_step(context: &Q35Context, module: &mut Module, passes: &dyn PassSource, step: &Step) -> Result<()> {
    let manager = PassManager::new(context.context());
    let mut findings: Option<Findings> = None;
    if step.is_q35() {
        let (pass, handle) = passes.create(context.context(), &step.name, &step.options)?;
        manager.add_pass(pass);
        findings = Some(handle);
    } else {
        let text = format!("builtin.module({})", step.text);
        parse_pass_pipeline(manager.as_operation_pass_manager(), &text).map_err(|e| {
            Error::Upstream {
                step: step.text.clone(),
                reason: e.to_string(),
            }
        })?;
    }
    run_manager(context, module, &manager, &step.text, findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_and_options() {
        let steps = parse("builtin.module(q35-verify, func.func(canonicalize,cse), q35-tile{tile=320x320})")
            .unwrap();
        let names: Vec<_> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["q35-verify", "func.func", "q35-tile"]);
        assert_eq!(steps[1].text, "func.func(canonicalize,cse)");
        assert_eq!(steps[2].options, [("tile".to_string(), "320x320".to_string())]);
    }

    #[test]
    fn rejects_unbalanced() {
        let err = parse("builtin.module(canonicalize").unwrap_err();
        assert!(err.to_string().contains("missing `)`"), "{err}");
        let err = parse("func.func(cse").unwrap_err();
        assert!(err.to_string().contains("unbalanced"), "{err}");
    }
}
