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
    /// Also collect each matrix's input Hessian `E[x xᵀ]` (for GPTQ's
    /// error-compensating rounding in `q35c`; costs K² per token and input).
    pub hessians: bool,
}

impl Default for CalibrationOptions {
    fn default() -> Self {
        Self {
            tokens: DEFAULT_TOKENS,
            context: None,
            hessians: false,
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

/// Σ x xᵀ of one distinct matrix input, shared by the weights that read
/// the same `x` (q, k and v; gate and up).
#[derive(Debug, Clone)]
struct Gram {
    /// Row-major K×K; only the upper triangle is accumulated.
    sums: Vec<f64>,
    rows: usize,
    /// The forward chunk that last added to it.
    chunk: usize,
}

/// Which weights share an input, found on the first chunk (the plan is
/// the same for every chunk), and the sums.
#[derive(Debug, Clone, Default)]
struct Grams {
    of_weight: Vec<Option<usize>>,
    grams: Vec<Gram>,
    /// (length, content hash) of the inputs seen in the first chunk.
    first_chunk: BTreeMap<(usize, u64), usize>,
    chunk: usize,
    last_dispatch: Option<usize>,
}

/// Σx² per input column of every quantized matrix (and, when asked, Σ x xᵀ
/// of every distinct input), accumulated over observed forward calls.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// For each dispatch of the manifest: the weights it multiplies its
    /// first buffer with (indices into `weights`), empty for other kernels.
    plan: Vec<Vec<usize>>,
    names: Vec<String>,
    weights: Vec<Column>,
    grams: Option<Grams>,
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
            grams: None,
        })
    }

    /// Also accumulates Σ x xᵀ of every distinct matrix input.
    pub fn with_hessians(mut self) -> Self {
        self.grams = Some(Grams {
            of_weight: vec![None; self.names.len()],
            ..Grams::default()
        });
        self
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
        if let Some(grams) = &mut self.grams {
            grams.observe(index, bound, x, cols);
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

    /// `E[x xᵀ]` (K×K, row-major, symmetric) of every weight's input, when
    /// [`Calibration::with_hessians`] asked for them; weights that read the
    /// same input share one matrix.
    pub fn hessians(&self) -> BTreeMap<String, std::sync::Arc<Vec<f64>>> {
        let Some(grams) = &self.grams else {
            return BTreeMap::new();
        };
        let means: Vec<std::sync::Arc<Vec<f64>>> = grams
            .grams
            .iter()
            .map(|g| {
                let k = (g.sums.len() as f64).sqrt() as usize;
                let mut h = g.sums.clone();
                let n = g.rows.max(1) as f64;
                for i in 0..k {
                    for j in i..k {
                        let v = h[i * k + j] / n;
                        h[i * k + j] = v;
                        h[j * k + i] = v;
                    }
                }
                std::sync::Arc::new(h)
            })
            .collect();
        self.names
            .iter()
            .zip(&grams.of_weight)
            .filter_map(|(name, slot)| Some((name.clone(), means[(*slot)?].clone())))
            .collect()
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

impl Grams {
    fn observe(&mut self, index: usize, bound: &[usize], x: &[f32], cols: usize) {
        if self.last_dispatch.is_some_and(|last| index <= last) {
            self.chunk += 1;
        }
        self.last_dispatch = Some(index);
        let key = (x.len(), content_hash(x));
        for &w in bound {
            let slot = match self.of_weight[w] {
                Some(slot) => slot,
                None => {
                    let shared = (self.chunk == 0).then(|| self.first_chunk.get(&key).copied()).flatten();
                    let slot = shared.unwrap_or_else(|| {
                        self.grams.push(Gram {
                            sums: vec![0.0; cols * cols],
                            rows: 0,
                            chunk: usize::MAX,
                        });
                        self.grams.len() - 1
                    });
                    if self.chunk == 0 {
                        self.first_chunk.insert(key, slot);
                    }
                    self.of_weight[w] = Some(slot);
                    slot
                }
            };
            let gram = &mut self.grams[slot];
            if gram.chunk == self.chunk {
                continue;
            }
            gram.chunk = self.chunk;
            add_gram(&mut gram.sums, x, cols);
            gram.rows += x.len() / cols;
        }
    }
}

/// Adds the upper triangle of `xᵀx` (`x` is `[rows, cols]`) to `sums`, as
/// a blocked rank-k update: each tile of `sums` is accumulated over every
/// row of `x` in registers and added once, so `sums` (9 MB for K = 1536)
/// is read and written once per call, not once per few rows (which bounded
/// the earlier row-blocked loop: SmolLM2's calibration spent 25 of its 39 s
/// there). The tile is as large as the CPU's vector registers hold
/// ([`gram_rows`]). The rows of `sums` are split over the cores in shares
/// of equal work.
fn add_gram(sums: &mut [f64], x: &[f32], cols: usize) {
    let xf: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(cols.div_ceil(64));
    // Row i of the triangle costs cols - i: share t ends where a fraction
    // (t + 1) / threads of the area lies above it (in whole tiles).
    let bounds: Vec<usize> = (0..=threads)
        .map(|t| {
            let f = t as f64 / threads as f64;
            let at = ((cols as f64) * (1.0 - (1.0 - f).sqrt())).round() as usize;
            if t == threads { cols } else { at / 8 * 8 }
        })
        .collect();
    let xf = &xf;
    std::thread::scope(|scope| {
        let mut rest = &mut sums[..];
        for t in 0..threads {
            let (mine, tail) = rest.split_at_mut((bounds[t + 1] - bounds[t]) * cols);
            rest = tail;
            let first = bounds[t];
            if t + 1 == threads {
                gram_rows(xf, cols, first, mine);
            } else {
                scope.spawn(move || gram_rows(xf, cols, first, mine));
            }
        }
    });
}

/// Rows `first..` of the upper triangle of `xᵀx` added to `out`, with the
/// widest vectors the CPU has: 4×24 tiles in 12 AVX-512 registers, 3×8 in
/// 6 AVX2 ones, 2×4 otherwise (one thread, 128×1536: 10.8, 13.1 and 60 ms;
/// the row-blocked loop before was slower still).
fn gram_rows(x: &[f64], cols: usize, first: usize, out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { gram_rows_avx512(x, cols, first, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { gram_rows_avx2(x, cols, first, out) };
        }
    }
    gram_tiles::<2, 4>(x, cols, first, out, |a, b, c| a * b + c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn gram_rows_avx512(x: &[f64], cols: usize, first: usize, out: &mut [f64]) {
    gram_tiles::<4, 24>(x, cols, first, out, |a, b, c| a * b + c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gram_rows_avx2(x: &[f64], cols: usize, first: usize, out: &mut [f64]) {
    gram_tiles::<3, 8>(x, cols, first, out, |a, b, c| a * b + c)
}

/// The tiled loop; inlined into each instruction set's function, so
/// `madd` (a fused multiply-add where the CPU has one) and the tile's
/// accumulators become that set's vector instructions and registers.
/// `x` is first copied into panels of `JB` columns, each `[rows][JB]`
/// contiguous (zero-padded past `cols`), so a tile streams through memory
/// in order instead of touching every row of `x` at a stride of `cols`.
#[inline(always)]
fn gram_tiles<const IB: usize, const JB: usize>(
    x: &[f64],
    cols: usize,
    first: usize,
    out: &mut [f64],
    madd: impl Fn(f64, f64, f64) -> f64 + Copy,
) {
    let rows = x.len() / cols;
    let n_i = out.len() / cols;
    if rows == 0 || n_i == 0 {
        return;
    }
    let first_panel = first / JB;
    let panels = cols.div_ceil(JB) - first_panel;
    let mut packed = vec![0f64; panels * rows * JB];
    for (p, panel) in packed.chunks_exact_mut(rows * JB).enumerate() {
        let c0 = (first_panel + p) * JB;
        let width = JB.min(cols - c0);
        for (r, dst) in panel.chunks_exact_mut(JB).enumerate() {
            dst[..width].copy_from_slice(&x[r * cols + c0..r * cols + c0 + width]);
        }
    }
    let mut left = vec![0f64; rows * IB];
    let mut i0 = 0;
    while i0 < n_i {
        let ib = IB.min(n_i - i0);
        let gi = first + i0;
        for (r, dst) in left.chunks_exact_mut(IB).enumerate() {
            dst[..ib].copy_from_slice(&x[r * cols + gi..r * cols + gi + ib]);
            dst[ib..].iter_mut().for_each(|v| *v = 0.0);
        }
        for p in gi / JB - first_panel..panels {
            let panel = &packed[p * rows * JB..(p + 1) * rows * JB];
            let mut acc = [[0f64; JB]; IB];
            for (a, b) in left.chunks_exact(IB).zip(panel.chunks_exact(JB)) {
                let b: &[f64; JB] = b.try_into().expect("JB wide");
                for (acc, &a) in acc.iter_mut().zip(a) {
                    for (s, &b) in acc.iter_mut().zip(b) {
                        *s = madd(a, b, *s);
                    }
                }
            }
            let j0 = (first_panel + p) * JB;
            for (ii, acc) in acc.iter().enumerate().take(ib) {
                let i = gi + ii;
                let row = &mut out[(i0 + ii) * cols..(i0 + ii + 1) * cols];
                for (jj, &v) in acc.iter().enumerate() {
                    let j = j0 + jj;
                    if j >= i && j < cols {
                        row[j] += v;
                    }
                }
            }
        }
        i0 += ib;
    }
}

/// FNV-1a of the bits of `x`: tells the inputs of a chunk apart.
fn content_hash(x: &[f32]) -> u64 {
    x.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| (h ^ u64::from(v.to_bits())).wrapping_mul(0x0000_0100_0000_01b3))
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
    /// `E[x xᵀ]` of every weight's input, when the options asked for them.
    pub hessians: BTreeMap<String, std::sync::Arc<Vec<f64>>>,
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
    if options.hessians {
        calibration = calibration.with_hessians();
    }
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
        hessians: calibration.hessians(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blocked_gram_equals_the_plain_sum() {
        // One share, and (on two or more cores) several.
        for (rows, cols) in [(13, 5), (9, 130), (40, 101)] {
            gram_case(rows, cols);
        }
    }

    fn gram_case(rows: usize, cols: usize) {
        let x: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 23) as f32 - 11.0) / 7.0).collect();
        let mut sums = vec![0f64; cols * cols];
        add_gram(&mut sums, &x, cols);
        for i in 0..cols {
            for j in 0..cols {
                let want: f64 = if j < i {
                    0.0 // only the upper triangle is accumulated
                } else {
                    (0..rows).map(|r| f64::from(x[r * cols + i]) * f64::from(x[r * cols + j])).sum()
                };
                assert!((sums[i * cols + j] - want).abs() < 1e-12, "({i},{j}) {} vs {want}", sums[i * cols + j]);
            }
        }
    }

    #[test]
    fn weights_that_read_one_input_share_its_hessian() {
        let mut grams = Grams {
            of_weight: vec![None; 3],
            ..Grams::default()
        };
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let y = [0.5f32, -1.0, 2.0, 0.0];
        for _ in 0..2 {
            // Dispatch 0 and 1 read the same x (q and k), 2 another input.
            grams.observe(0, &[0], &x, 2);
            grams.observe(1, &[1], &x, 2);
            grams.observe(2, &[2], &y, 2);
        }
        assert_eq!(grams.grams.len(), 2);
        assert_eq!(grams.of_weight, [Some(0), Some(0), Some(1)]);
        // Two chunks of two rows each, added once per chunk.
        assert_eq!(grams.grams[0].rows, 4);
        assert_eq!(grams.grams[0].sums, [2.0 * (1.0 + 9.0), 2.0 * (2.0 + 12.0), 0.0, 2.0 * (4.0 + 16.0)]);
    }
}
