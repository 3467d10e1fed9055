//! Calibration for importance-weighted quantization: the mean square of
//! every matrix's input features over a text, measured by running a
//! compiled artifact (normally an f16 or f32 build of the model), written
//! as the JSON file `q35c --quant-importance FILE` reads.
//!
//! Every dispatch whose kernel starts with `dequant_matmul` (plain, `_add`
//! and `_swiglu`) binds its input activation `x` (`[tokens, K]`) first; the
//! packed weights it multiplies follow (one, or two sharing `x` for
//! `_swiglu`; the residual of `_add` and the output are activations). A
//! [`Calibration`] observes the session's dispatches
//! ([`Session::forward_observed`]), reads `x` before the dispatch runs and
//! adds `x²` per column to every weight the dispatch names (on the integer
//! path, where matmuls bind their input's int8 codes, it reads `x` at the
//! dispatch that quantizes it); the result is that sum divided by the rows
//! seen, per weight:
//!
//! ```json
//! {"model.layers.0.self_attn.q_proj.weight": [0.012, 0.31, ...], ...}
//! ```
//!
//! The text is tokenized as `q35-rt perplexity` does (BOS first when the
//! model's tokenizer adds one), cut to the first `tokens` tokens, and run in
//! windows of `context` tokens, each from an empty KV cache, with its first
//! token replaced by BOS when the model adds one (as perplexity windows
//! are). A forward call longer than the artifact's `max_tokens` is prefilled
//! in chunks by the session.

use std::collections::BTreeMap;
use std::path::Path;

use q35_format::artifact::{DispatchSpec, Manifest};

use crate::artifact::PackedElement;
use crate::dispatch_check::QUANTIZE_PREFIX;
use crate::executor::{ForwardError, Session};
use crate::prompt::adds_bos;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Kernels whose first buffer is the input of the weights they bind.
pub const MATMUL_PREFIX: &str = "dequant_matmul";

/// Default number of calibration tokens.
pub const DEFAULT_TOKENS: usize = 512;

/// What can go wrong; each names the file or artifact.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("cannot read {path}: {source}")]
    ReadText {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the text is empty (no tokens to calibrate on)")]
    EmptyText { path: String },
    #[error(
        "{path}: the artifact has no tokenizer (the model was compiled without tokenizer.json)"
    )]
    NoTokenizer { path: String },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(
        "{path}: no `{MATMUL_PREFIX}*` dispatch binds a quantized weight, nothing to calibrate"
    )]
    NoMatmuls { path: String },
    #[error("{path}: dispatch {index} (`{kernel}`): {what}")]
    Plan {
        path: String,
        index: usize,
        kernel: String,
        what: String,
    },
    #[error("--tokens must be at least 1")]
    ZeroTokens,
    #[error("--context must be at least 1")]
    ZeroContext,
    #[error(
        "{path}: --context {context} is longer than the artifact's context of {artifact} positions"
    )]
    ContextTooLong {
        path: String,
        context: usize,
        artifact: usize,
    },
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("`{name}`: the mean square of column {column} is {value}, not a finite f32 (the activations overflow)")]
    NonFinite {
        name: String,
        column: usize,
        value: f64,
    },
    #[error("`{name}` saw no tokens")]
    Unobserved { name: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Calibration settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibrationOptions {
    /// Tokens of the text to use (from its start).
    pub tokens: usize,
    /// Tokens per window; `None`: 512, or the artifact's context if shorter.
    pub context: Option<usize>,
}

impl Default for CalibrationOptions {
    fn default() -> Self {
        Self {
            tokens: DEFAULT_TOKENS,
            context: None,
        }
    }
}

/// One weight's input statistics.
#[derive(Debug, Clone)]
struct Column {
    /// Σ x² per input column, in f64.
    sums: Vec<f64>,
    /// Rows (tokens) added.
    rows: usize,
}

/// Σx² per input column of every quantized matrix, accumulated over
/// observed forward calls.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// For each dispatch of the manifest: the weights it multiplies its
    /// first buffer with (indices into `weights`), empty for other kernels.
    plan: Vec<Vec<usize>>,
    names: Vec<String>,
    weights: Vec<Column>,
}

impl Calibration {
    /// The matmul dispatches of `manifest` and the weights they bind;
    /// `path` names the artifact in errors.
    pub fn new(path: &str, manifest: &Manifest) -> Result<Self, CalibrationError> {
        let buffers: BTreeMap<&str, _> = manifest
            .buffers
            .iter()
            .map(|b| (b.name.as_str(), b))
            .collect();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut names = Vec::new();
        let mut weights = Vec::new();
        let mut plan: Vec<Vec<usize>> = Vec::with_capacity(manifest.dispatches.len());
        for (i, d) in manifest.dispatches.iter().enumerate() {
            let mut bound = Vec::new();
            if d.kernel.starts_with(MATMUL_PREFIX) {
                let plan_err = |what: String| CalibrationError::Plan {
                    path: path.to_string(),
                    index: i,
                    kernel: d.kernel.clone(),
                    what,
                };
                let mut x = d
                    .buffers
                    .first()
                    .and_then(|name| buffers.get(name.as_str()))
                    .ok_or_else(|| plan_err("binds no input buffer".into()))?;
                // The integer path binds its input's codes: observe the f32
                // rows where the quantize dispatch that wrote them reads them.
                let mut at = i;
                if x.element == "i8" {
                    let writer = manifest.dispatches[..i].iter().rposition(|q| {
                        q.kernel.starts_with(QUANTIZE_PREFIX) && q.buffers.get(1) == Some(&x.name)
                    });
                    let source = writer.and_then(|j| {
                        let name = manifest.dispatches[j].buffers.first()?;
                        Some((j, buffers.get(name.as_str())?))
                    });
                    (at, x) = source.ok_or_else(|| {
                        plan_err(format!("no earlier dispatch quantizes its input `{}`", x.name))
                    })?;
                }
                if x.role != "activation" {
                    return Err(plan_err(format!(
                        "its first buffer `{}` has role `{}`, expected an activation",
                        x.name, x.role
                    )));
                }
                for name in &d.buffers[1..] {
                    let Some(spec) = buffers.get(name.as_str()) else {
                        return Err(plan_err(format!("buffer `{name}` is not declared")));
                    };
                    if spec.role != "weight" || spec.element == "f32" {
                        continue;
                    }
                    let packed = PackedElement::parse(&spec.element)
                        .map_err(|e| plan_err(format!("weight `{name}`: {e}")))?;
                    if packed.cols != x.width {
                        return Err(plan_err(format!(
                            "weight `{name}` has {} columns, its input `{}` has width {}",
                            packed.cols, x.name, x.width
                        )));
                    }
                    let w = *index.entry(name.clone()).or_insert_with(|| {
                        names.push(name.clone());
                        weights.push(Column {
                            sums: vec![0.0; packed.cols],
                            rows: 0,
                        });
                        names.len() - 1
                    });
                    bound.push(w);
                }
                if at < i {
                    plan[at].append(&mut bound);
                }
            }
            plan.push(bound);
        }
        if names.is_empty() {
            return Err(CalibrationError::NoMatmuls {
                path: path.to_string(),
            });
        }
        Ok(Self {
            plan,
            names,
            weights,
        })
    }

    /// The weights calibrated, in dispatch order.
    pub fn weight_names(&self) -> &[String] {
        &self.names
    }

    /// Adds one dispatch's input: what [`Session::forward_observed`] calls.
    pub fn observe(&mut self, index: usize, _spec: &DispatchSpec, buffers: &[Option<&[f32]>]) {
        let Some(bound) = self.plan.get(index).filter(|b| !b.is_empty()) else {
            return;
        };
        let Some(Some(x)) = buffers.first() else {
            return;
        };
        let cols = self.weights[bound[0]].sums.len();
        let rows = x.len() / cols;
        let mut squares = vec![0f64; cols];
        for row in x.chunks_exact(cols) {
            for (s, &v) in squares.iter_mut().zip(row) {
                *s += f64::from(v) * f64::from(v);
            }
        }
        // `_swiglu` binds two weights that share x.
        for &w in bound {
            let column = &mut self.weights[w];
            column
                .sums
                .iter_mut()
                .zip(&squares)
                .for_each(|(s, q)| *s += q);
            column.rows += rows;
        }
    }

    /// Runs `tokens` through `session` from an empty cache, observing it.
    pub fn run(&mut self, session: &mut Session, tokens: &[u32]) -> Result<(), CalibrationError> {
        session.reset();
        session.forward_observed(tokens, 0, &mut |i, spec, buffers| {
            self.observe(i, spec, buffers)
        })?;
        Ok(())
    }

    /// Mean x² per input column of every weight.
    pub fn importance(&self) -> Result<BTreeMap<String, Vec<f32>>, CalibrationError> {
        let mut out = BTreeMap::new();
        for (name, column) in self.names.iter().zip(&self.weights) {
            if column.rows == 0 {
                return Err(CalibrationError::Unobserved { name: name.clone() });
            }
            let mut means = Vec::with_capacity(column.sums.len());
            for (c, s) in column.sums.iter().enumerate() {
                let value = s / column.rows as f64;
                if !(value.is_finite() && value <= f64::from(f32::MAX)) {
                    return Err(CalibrationError::NonFinite {
                        name: name.clone(),
                        column: c,
                        value,
                    });
                }
                means.push(value as f32);
            }
            out.insert(name.clone(), means);
        }
        Ok(out)
    }
}

/// A text tokenized for a model, as `q35-rt perplexity` and `calibrate`
/// read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextTokens {
    /// BOS first when the model adds one, then the text's tokens.
    pub tokens: Vec<u32>,
    /// The BOS id when the model's tokenizer adds one.
    pub bos: Option<u32>,
}

/// The artifact's tokenizer, or an error saying it has none.
pub fn session_tokenizer(session: &Session) -> Result<Tokenizer, CalibrationError> {
    session
        .tokenizer()?
        .ok_or_else(|| CalibrationError::NoTokenizer {
            path: session.artifact().path().to_string(),
        })
}

/// Tokenizes `text` for `session`'s model (BOS first when its tokenizer
/// adds one; no other special tokens).
pub fn text_tokens(session: &Session, tokenizer: &Tokenizer, text: &str) -> TextTokens {
    let bos_id = session.manifest().model.bos_token_id;
    let bos = session
        .artifact()
        .tokenizer_json()
        .is_some_and(|json| adds_bos(json, tokenizer, bos_id))
        .then_some(bos_id)
        .flatten();
    let mut tokens = Vec::with_capacity(text.len() / 3 + 1);
    tokens.extend(bos);
    tokens.extend(tokenizer.encode(text));
    TextTokens { tokens, bos }
}

/// What [`calibrate_text`] did.
#[derive(Debug, Clone)]
pub struct CalibrationReport {
    pub importance: BTreeMap<String, Vec<f32>>,
    /// Tokens run (all windows).
    pub tokens: usize,
    /// Tokens the text has in all.
    pub text_tokens: usize,
    pub windows: usize,
    pub context: usize,
}

/// Calibrates `session` on the first `options.tokens` tokens of `text`
/// (`path` names it in errors), in windows of `options.context`.
/// `progress` is called after each window.
pub fn calibrate_text(
    session: &mut Session,
    text: &str,
    path: &str,
    options: &CalibrationOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<CalibrationReport, CalibrationError> {
    if options.tokens == 0 {
        return Err(CalibrationError::ZeroTokens);
    }
    let artifact_context = session.context_length();
    let context = options.context.unwrap_or(512.min(artifact_context));
    if context == 0 {
        return Err(CalibrationError::ZeroContext);
    }
    if context > artifact_context {
        return Err(CalibrationError::ContextTooLong {
            path: session.artifact().path().to_string(),
            context,
            artifact: artifact_context,
        });
    }
    let tokenizer = session_tokenizer(session)?;
    let TextTokens { tokens, bos } = text_tokens(session, &tokenizer, text);
    let text_tokens = tokens.len() - usize::from(bos.is_some());
    if text_tokens == 0 {
        return Err(CalibrationError::EmptyText {
            path: path.to_string(),
        });
    }
    let used = &tokens[..tokens.len().min(options.tokens)];
    let mut calibration = Calibration::new(session.artifact().path(), session.manifest())?;
    let windows = used.len().div_ceil(context);
    let mut window_tokens = Vec::with_capacity(context);
    for (w, window) in used.chunks(context).enumerate() {
        window_tokens.clear();
        window_tokens.extend_from_slice(window);
        if let Some(bos) = bos {
            window_tokens[0] = bos;
        }
        calibration.run(session, &window_tokens)?;
        progress(w + 1, windows);
    }
    Ok(CalibrationReport {
        importance: calibration.importance()?,
        tokens: used.len(),
        text_tokens,
        windows,
        context,
    })
}

/// Reads `text_path` and calibrates on it ([`calibrate_text`]).
pub fn calibrate_file(
    session: &mut Session,
    text_path: &Path,
    options: &CalibrationOptions,
    progress: impl FnMut(usize, usize),
) -> Result<CalibrationReport, CalibrationError> {
    let name = text_path.display().to_string();
    let text = std::fs::read_to_string(text_path).map_err(|source| CalibrationError::ReadText {
        path: name.clone(),
        source,
    })?;
    calibrate_text(session, &text, &name, options, progress)
}

/// Writes `importance` as JSON to `path` through [`q35_format::output`]
/// (atomically; nothing left behind on failure).
pub fn write_importance(
    path: &Path,
    importance: &BTreeMap<String, Vec<f32>>,
) -> Result<(), CalibrationError> {
    let write_err = |source| CalibrationError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut json = serde_json::to_vec(importance).map_err(|e| write_err(e.into()))?;
    json.push(b'\n');
    q35_format::output::write_output(path, &[], &json).map_err(|e| match e {
        q35_format::output::OutputError::Io { error, .. } => write_err(error),
        other => write_err(std::io::Error::other(other.to_string())),
    })
}
