//! Perplexity as llama.cpp's `llama-perplexity` computes it, so numbers can
//! be put side by side with published llama.cpp results.
//!
//! The text is tokenized once (by the caller, with BOS at the start if the
//! model's tokenizer adds one). Windows of `n_ctx` tokens start every
//! `stride` tokens (by default `n_ctx`: llama.cpp's non-overlapping chunks)
//! and a trailing partial window is dropped. Each window is evaluated from an
//! empty KV cache, with its first token replaced by BOS when
//! [`PerplexityOptions::bos`] is set (llama.cpp does this for models that add
//! BOS). Only the second half of each window is scored: the logits at
//! positions `n_ctx/2 .. n_ctx-2` predict tokens `n_ctx/2+1 .. n_ctx-1`, so
//! every scored token sees at least `n_ctx/2` tokens of context. PPL is
//! `exp(mean NLL)` with the log-softmax computed in f64.
//!
//! The evaluator is a closure, so the reference model and every compiled
//! backend share this code.

/// Window settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerplexityOptions {
    /// Tokens per window.
    pub n_ctx: usize,
    /// Distance between window starts; `None` means `n_ctx`.
    pub stride: Option<usize>,
    /// Written over the first token of every window.
    pub bos: Option<u32>,
}

impl PerplexityOptions {
    pub fn new(n_ctx: usize) -> Self {
        Self {
            n_ctx,
            stride: None,
            bos: None,
        }
    }
}

/// What can go wrong; `E` is the evaluator's own error.
#[derive(Debug, thiserror::Error)]
pub enum PerplexityError<E: std::error::Error + 'static> {
    #[error("n_ctx {n_ctx} is too small: a window needs at least 3 tokens to score one")]
    ContextTooSmall { n_ctx: usize },
    #[error("stride must be at least 1")]
    ZeroStride,
    #[error("the text has {tokens} tokens, fewer than one window of {n_ctx}")]
    TooFewTokens { tokens: usize, n_ctx: usize },
    #[error("window {window}: the evaluator returned {found} logits, expected {expected} ({n_ctx} tokens x {vocab_size})")]
    LogitsLength {
        window: usize,
        n_ctx: usize,
        vocab_size: usize,
        expected: usize,
        found: usize,
    },
    #[error("window {window}, position {position}: token {token} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange {
        window: usize,
        position: usize,
        token: u32,
        vocab_size: usize,
    },
    #[error("window {window}, position {position}: logits are not finite")]
    NonFinite { window: usize, position: usize },
    #[error("window {window}: {source}")]
    Eval {
        window: usize,
        #[source]
        source: E,
    },
}

/// The result, with llama.cpp's running estimate after each window.
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityReport {
    /// `exp(mean NLL)` over all scored tokens.
    pub ppl: f64,
    /// Mean negative log-likelihood in nats.
    pub mean_nll: f64,
    pub scored_tokens: usize,
    pub windows: usize,
    /// PPL over the windows so far, after each window (what llama.cpp prints).
    pub running_ppl: Vec<f64>,
}

/// Computes perplexity of `tokens` with `eval`, which must return the
/// logits of a window (`[n_ctx × vocab_size]`, row-major) evaluated from an
/// empty cache.
pub fn perplexity<E, F>(
    tokens: &[u32],
    vocab_size: usize,
    options: &PerplexityOptions,
    mut eval: F,
) -> Result<PerplexityReport, PerplexityError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut(&[u32]) -> Result<Vec<f32>, E>,
{
    let n_ctx = options.n_ctx;
    if n_ctx < 3 {
        return Err(PerplexityError::ContextTooSmall { n_ctx });
    }
    let stride = options.stride.unwrap_or(n_ctx);
    if stride == 0 {
        return Err(PerplexityError::ZeroStride);
    }
    if tokens.len() < n_ctx {
        return Err(PerplexityError::TooFewTokens {
            tokens: tokens.len(),
            n_ctx,
        });
    }
    let first = n_ctx / 2;
    let mut nll_sum = 0f64;
    let mut scored = 0usize;
    let mut running_ppl = Vec::new();
    let mut window_tokens = Vec::with_capacity(n_ctx);
    for (window, start) in (0..=tokens.len() - n_ctx).step_by(stride).enumerate() {
        window_tokens.clear();
        window_tokens.extend_from_slice(&tokens[start..start + n_ctx]);
        if let Some(bos) = options.bos {
            window_tokens[0] = bos;
        }
        let _span = tracing::debug_span!("perplexity_window", window, start).entered();
        let logits =
            eval(&window_tokens).map_err(|source| PerplexityError::Eval { window, source })?;
        let expected = n_ctx * vocab_size;
        if logits.len() != expected {
            return Err(PerplexityError::LogitsLength {
                window,
                n_ctx,
                vocab_size,
                expected,
                found: logits.len(),
            });
        }
        for position in first..n_ctx - 1 {
            let target = window_tokens[position + 1];
            if target as usize >= vocab_size {
                return Err(PerplexityError::TokenOutOfRange {
                    window,
                    position: position + 1,
                    token: target,
                    vocab_size,
                });
            }
            let row = &logits[position * vocab_size..(position + 1) * vocab_size];
            let logp = log_softmax_at(row, target as usize)
                .ok_or(PerplexityError::NonFinite { window, position })?;
            nll_sum -= logp;
            scored += 1;
        }
        running_ppl.push((nll_sum / scored as f64).exp());
    }
    let mean_nll = nll_sum / scored as f64;
    Ok(PerplexityReport {
        ppl: mean_nll.exp(),
        mean_nll,
        scored_tokens: scored,
        windows: running_ppl.len(),
        running_ppl,
    })
}

/// `log softmax(row)[index]` in f64; `None` if the row has a NaN or +inf,
/// or the target's logit is -inf.
fn log_softmax_at(row: &[f32], index: usize) -> Option<f64> {
    if row.iter().any(|x| x.is_nan() || *x == f32::INFINITY) {
        return None;
    }
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let sum: f64 = row.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    let logp = f64::from(row[index]) - max - sum.ln();
    logp.is_finite().then_some(logp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("backend failed")]
    struct Failed;

    fn uniform(vocab: usize) -> impl FnMut(&[u32]) -> Result<Vec<f32>, Failed> {
        move |w| Ok(vec![0.25; w.len() * vocab])
    }

    #[test]
    fn uniform_logits_give_the_vocabulary_size() {
        let tokens: Vec<u32> = (0..100).map(|i| i % 50).collect();
        let r = perplexity(&tokens, 50, &PerplexityOptions::new(16), uniform(50)).unwrap();
        assert!((r.ppl - 50.0).abs() < 1e-9, "{r:?}");
        // 100 / 16 = 6 full windows, each scoring 16 - 1 - 8 = 7 tokens.
        assert_eq!((r.windows, r.scored_tokens), (6, 42));
        assert_eq!(r.running_ppl.len(), 6);
    }

    #[test]
    fn known_probability_gives_its_inverse() {
        // The evaluator puts logit `a` on the true next token (0 elsewhere):
        // p = e^a / (e^a + V - 1), PPL = 1/p.
        let tokens: Vec<u32> = (0..64).map(|i| (i * 7 % 10) as u32).collect();
        let (vocab, a) = (10usize, 2.0f32);
        let eval = |w: &[u32]| -> Result<Vec<f32>, Failed> {
            // The next token follows from the current one: t -> t + 7 mod 10.
            let mut logits = vec![0.0; w.len() * vocab];
            for (i, &t) in w.iter().enumerate() {
                logits[i * vocab + (t as usize + 7) % 10] = a;
            }
            Ok(logits)
        };
        let r = perplexity(&tokens, vocab, &PerplexityOptions::new(8), eval).unwrap();
        let p = f64::from(a).exp() / (f64::from(a).exp() + 9.0);
        assert!((r.ppl - 1.0 / p).abs() < 1e-9, "{} vs {}", r.ppl, 1.0 / p);
    }

    #[test]
    fn only_the_second_half_is_scored_and_bos_replaces_the_first_token() {
        // First-half rows are garbage; the second half knows the answer with
        // probability 1 - tiny. BOS must appear at the start of each window.
        let tokens: Vec<u32> = (0..40).map(|i| (i % 5) as u32 + 1).collect();
        let vocab = 6;
        let mut starts = Vec::new();
        let eval = |w: &[u32]| -> Result<Vec<f32>, Failed> {
            starts.push(w[0]);
            let mut logits = vec![0.0; w.len() * vocab];
            for i in w.len() / 2..w.len() - 1 {
                logits[i * vocab + w[i + 1] as usize] = 100.0;
            }
            Ok(logits)
        };
        let options = PerplexityOptions {
            n_ctx: 10,
            stride: Some(5),
            bos: Some(0),
        };
        let r = perplexity(&tokens, vocab, &options, eval).unwrap();
        assert!((r.ppl - 1.0).abs() < 1e-12);
        // Windows at 0, 5, ..., 30: seven, each scoring 10 - 1 - 5 = 4.
        assert_eq!((r.windows, r.scored_tokens), (7, 28));
        assert_eq!(starts, [0; 7]);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let opts = PerplexityOptions::new(8);
        let e = perplexity(&[1; 7], 4, &opts, uniform(4)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the text has 7 tokens, fewer than one window of 8"
        );
        let e = perplexity(&[1; 8], 4, &opts, uniform(3)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "window 0: the evaluator returned 24 logits, expected 32 (8 tokens x 4)"
        );
        let e = perplexity(&[1; 8], 4, &opts, |_: &[u32]| Err::<Vec<f32>, _>(Failed)).unwrap_err();
        assert_eq!(e.to_string(), "window 0: backend failed");
        let e = perplexity(&[1; 8], 4, &opts, |w: &[u32]| {
            Ok::<_, Failed>(vec![f32::NAN; w.len() * 4])
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "window 0, position 4: logits are not finite");
        let e = perplexity(&[9; 8], 4, &opts, uniform(4)).unwrap_err();
        assert!(e
            .to_string()
            .contains("token 9 is outside the vocabulary of 4"));
        let e = perplexity(&[1; 8], 4, &PerplexityOptions::new(2), uniform(4)).unwrap_err();
        assert!(matches!(e, PerplexityError::ContextTooSmall { n_ctx: 2 }));
    }
}
