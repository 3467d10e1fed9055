//! The reference forward pass: a plain Llama decoder that every backend and
//! every compiler pass is compared with.
//!
//! It favours being obviously right over being fast: one token at a time per
//! layer, no threads, no SIMD, weights as f32 in Hugging Face layout and
//! names. Storage is f32 (as the checkpoints are), but every dot product,
//! norm and softmax accumulates in f64. Backends sum in different orders
//! (tiles, SIMD lanes, trees) and an f32 oracle would itself be off from the
//! exact result by about as much as a correct backend, so its differences
//! would say nothing; in f64 the sum's own error is far below f32 resolution
//! whatever the order, each result is essentially the exact value rounded
//! once to f32, and a measured difference belongs to the backend.
//!
//! The model (Hugging Face's `LlamaForCausalLM`):
//!
//! ```text
//! x = embed_tokens[token]
//! for each layer:
//!     h = rms_norm(x, input_layernorm)
//!     q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ;  rope(q), rope(k);  append k, v to the cache
//!     x += causal_gqa_attention(q, cache)·Woᵀ
//!     h = rms_norm(x, post_attention_layernorm)
//!     x += (silu(h·Wgateᵀ) * h·Wupᵀ)·Wdownᵀ
//! logits = rms_norm(x, norm)·lm_headᵀ        (lm_head = embed_tokens when tied)
//! ```
//!
//! RoPE angles are computed in f64 (`pos · θ^(-2i/d)`); Hugging Face computes
//! them in f32, which drifts by up to about `pos · 2⁻²⁴` radians at long
//! positions. Rope scaling variants (Llama 3's `rope_scaling`) and attention
//! biases are not part of [`ModelConfig`] and not supported here.

mod math;
#[cfg(test)]
mod tests;
mod weights;

use q35_format::ModelConfig;

use math::{add_assign, attention, matvec, silu};
pub use math::{rms_norm, rope};
pub use weights::{SafetensorsWeights, WeightTensor, Weights};


/// Everything that can go wrong when loading weights or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("{0}")]
    Config(String),
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a valid safetensors file: {what}")]
    Safetensors { file: String, what: String },
    #[error("{origin}: tensor `{name}` is missing")]
    MissingTensor { origin: String, name: String },
    #[error("{origin}: tensor `{name}` has dtype {dtype}; the reference reads F32, F16 and BF16")]
    UnsupportedDtype {
        origin: String,
        name: String,
        dtype: String,
    },
    #[error("tensor `{name}`: shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}`: {found} values for shape {shape:?}")]
    DataLength {
        name: String,
        shape: Vec<usize>,
        found: usize,
    },
    #[error(
        "{tokens} tokens from position {start} need {} positions, but the context is {context}",
        start + tokens
    )]
    ContextOverflow {
        start: usize,
        tokens: usize,
        context: usize,
    },
    #[error("token {token} at index {index} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange {
        token: u32,
        index: usize,
        vocab_size: usize,
    },
    #[error("cannot start at position {start}: the cache holds only {cached} positions")]
    StartBeyondCache { start: usize, cached: usize },
}

type Result<T, E = ReferenceError> = std::result::Result<T, E>;

/// One decoder layer's weights, `[rows, cols]` row-major.
struct Layer {
    attn_norm: Vec<f32>,
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    wo: Vec<f32>,
    mlp_norm: Vec<f32>,
    w_gate: Vec<f32>,
    w_up: Vec<f32>,
    w_down: Vec<f32>,
}

/// Keys and values of every cached position, `[position][kv_dim]` flattened.
#[derive(Default, Clone)]
struct LayerCache {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// What [`Reference::forward_observed`] calls: weight name, input vector.
pub type MatvecObserver<'a> = dyn FnMut(&str, &[f32]) + 'a;

/// The reference model with its KV cache.
pub struct Reference {
    config: ModelConfig,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// `None` when the LM head is tied to `embed`.
    lm_head: Option<Vec<f32>>,
    cache: Vec<LayerCache>,
    cached: usize,
    /// The integer path's activation group (columns) of each weight, by
    /// name, when the compiled model quantizes matmul inputs to int8
    /// (`usize::MAX`, or a weight not listed: one group per row).
    int8_activations: Option<std::collections::HashMap<String, usize>>,
    /// The compiled model rotates matrix inputs (`q35.rotate`): its
    /// weights are stored rotated, so the same transforms run here.
    rotated_inputs: bool,
}

impl Reference {
    /// Reads and shape-checks every weight the config calls for.
    pub fn new(config: ModelConfig, weights: &impl Weights) -> Result<Self> {
        config.validate().map_err(ReferenceError::Config)?;
        let c = &config;
        let (hidden, ffn, vocab) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let load = |name: String, shape: &[usize]| -> Result<Vec<f32>> {
            let t = weights.get(&name)?;
            if t.shape != shape {
                return Err(ReferenceError::Shape {
                    name,
                    expected: shape.to_vec(),
                    found: t.shape,
                });
            }
            if t.data.len() != shape.iter().product::<usize>() {
                return Err(ReferenceError::DataLength {
                    name,
                    shape: t.shape,
                    found: t.data.len(),
                });
            }
            Ok(t.data)
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(Layer {
                    attn_norm: load(format!("{p}.input_layernorm.weight"), &[hidden])?,
                    wq: load(format!("{p}.self_attn.q_proj.weight"), &[c.q_dim(), hidden])?,
                    wk: load(
                        format!("{p}.self_attn.k_proj.weight"),
                        &[c.kv_dim(), hidden],
                    )?,
                    wv: load(
                        format!("{p}.self_attn.v_proj.weight"),
                        &[c.kv_dim(), hidden],
                    )?,
                    wo: load(format!("{p}.self_attn.o_proj.weight"), &[hidden, c.q_dim()])?,
                    mlp_norm: load(format!("{p}.post_attention_layernorm.weight"), &[hidden])?,
                    w_gate: load(format!("{p}.mlp.gate_proj.weight"), &[ffn, hidden])?,
                    w_up: load(format!("{p}.mlp.up_proj.weight"), &[ffn, hidden])?,
                    w_down: load(format!("{p}.mlp.down_proj.weight"), &[hidden, ffn])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = load("model.embed_tokens.weight".into(), &[vocab, hidden])?;
        let norm = load("model.norm.weight".into(), &[hidden])?;
        let lm_head = match c.tie_word_embeddings {
            true => None,
            false => Some(load("lm_head.weight".into(), &[vocab, hidden])?),
        };
        Ok(Self {
            cache: vec![LayerCache::default(); layers.len()],
            config,
            embed,
            layers,
            norm,
            lm_head,
            cached: 0,
            int8_activations: None,
            rotated_inputs: false,
        })
    }

    /// Every matmul input is quantized to int8 per group of its weight's
    /// `groups[name]` columns first and stands for `sx·x8`
    /// (`q35_format::activations`), as the integer path computes.
    pub fn with_int8_activations(mut self, groups: std::collections::HashMap<String, usize>) -> Self {
        self.int8_activations = Some(groups);
        self
    }

    /// The model's matrices are stored for rotated inputs (the artifact's
    /// `rotated_inputs`): the embedding's row takes `Qᵀ`, and every
    /// matrix input whose width `q35_format::rotation` supports takes `Q`
    /// (after each norm, after attention, after SwiGLU), where q35c puts
    /// `q35.rotate`. Each transform runs in f64 and rounds once to f32.
    pub fn with_rotated_inputs(mut self, rotated: bool) -> Self {
        self.rotated_inputs = rotated;
        self
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Number of positions in the KV cache.
    pub fn cached(&self) -> usize {
        self.cached
    }

    /// Empties the KV cache.
    pub fn reset(&mut self) {
        self.cache
            .iter_mut()
            .for_each(|c| *c = LayerCache::default());
        self.cached = 0;
    }

    /// Runs `tokens` at positions `start..start + tokens.len()` and returns
    /// their logits, `[tokens.len() × vocab_size]` row-major.
    ///
    /// The KV cache must hold at least `start` positions; positions from
    /// `start` on are dropped first (so `start < cached()` rewinds), and the
    /// new tokens' keys and values are appended.
    pub fn forward(&mut self, tokens: &[u32], start: usize) -> Result<Vec<f32>> {
        self.forward_with(tokens, start, None)
    }

    /// [`Reference::forward`], calling `observe(weight name, x)` with the
    /// input vector of every matrix-vector product (one call per token and
    /// matrix; the LM head is `lm_head.weight`, or `model.embed_tokens.weight`
    /// when tied): an oracle for calibration.
    pub fn forward_observed(
        &mut self,
        tokens: &[u32],
        start: usize,
        observe: &mut MatvecObserver<'_>,
    ) -> Result<Vec<f32>> {
        self.forward_with(tokens, start, Some(observe))
    }

    fn forward_with(
        &mut self,
        tokens: &[u32],
        start: usize,
        mut observe: Option<&mut MatvecObserver<'_>>,
    ) -> Result<Vec<f32>> {
        let mut seen = |layer: Option<usize>, name: &str, x: &[f32]| {
            if let Some(observe) = observe.as_deref_mut() {
                match layer {
                    Some(l) => observe(&format!("model.layers.{l}.{name}.weight"), x),
                    None => observe(name, x),
                }
            }
        };
        let _span =
            tracing::debug_span!("reference_forward", tokens = tokens.len(), start).entered();
        let context = self.config.max_position_embeddings;
        if start > self.cached {
            return Err(ReferenceError::StartBeyondCache {
                start,
                cached: self.cached,
            });
        }
        if start + tokens.len() > context {
            return Err(ReferenceError::ContextOverflow {
                start,
                tokens: tokens.len(),
                context,
            });
        }
        let (hidden, vocab) = (self.config.hidden_size, self.config.vocab_size);
        if let Some((index, &token)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= vocab)
        {
            return Err(ReferenceError::TokenOutOfRange {
                token,
                index,
                vocab_size: vocab,
            });
        }
        let kv_dim = self.config.kv_dim();
        let rotated = self.rotated_inputs;
        let groups = self.int8_activations.as_ref();
        let int8 = |name: &str| groups.map(|g| g.get(name).copied().unwrap_or(usize::MAX));
        let layer_int8 = |l: usize, name: &str| int8(&format!("model.layers.{l}.{name}.weight"));
        for cache in &mut self.cache {
            cache.k.truncate(start * kv_dim);
            cache.v.truncate(start * kv_dim);
        }
        self.cached = start;

        let mut xs: Vec<Vec<f32>> = tokens
            .iter()
            .map(|&t| {
                let mut row = self.embed[t as usize * hidden..(t as usize + 1) * hidden].to_vec();
                rotate(rotated, &mut row, true);
                row
            })
            .collect();
        for (l, (layer, cache)) in self.layers.iter().zip(&mut self.cache).enumerate() {
            // Keys and values of all new positions first: with the causal
            // mask each query then reads only the positions up to its own.
            let mut queries = Vec::with_capacity(xs.len());
            for (i, x) in xs.iter().enumerate() {
                let mut h = rms_norm(x, &layer.attn_norm, self.config.rms_norm_eps);
                rotate(rotated, &mut h, false);
                for name in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"] {
                    seen(Some(l), name, &h);
                }
                let mut q = matvec(&layer.wq, &h, layer_int8(l, "self_attn.q_proj"));
                let mut k = matvec(&layer.wk, &h, layer_int8(l, "self_attn.k_proj"));
                let v = matvec(&layer.wv, &h, layer_int8(l, "self_attn.v_proj"));
                let pos = start + i;
                for head in q.chunks_exact_mut(self.config.head_dim) {
                    rope(head, pos, self.config.rope_theta);
                }
                for head in k.chunks_exact_mut(self.config.head_dim) {
                    rope(head, pos, self.config.rope_theta);
                }
                cache.k.extend_from_slice(&k);
                cache.v.extend_from_slice(&v);
                queries.push(q);
            }
            for (i, (x, q)) in xs.iter_mut().zip(&queries).enumerate() {
                let mut attn = attention(&self.config, q, cache, start + i + 1);
                rotate(rotated, &mut attn, false);
                seen(Some(l), "self_attn.o_proj", &attn);
                add_assign(x, &matvec(&layer.wo, &attn, layer_int8(l, "self_attn.o_proj")));
                let mut h = rms_norm(x, &layer.mlp_norm, self.config.rms_norm_eps);
                rotate(rotated, &mut h, false);
                seen(Some(l), "mlp.gate_proj", &h);
                seen(Some(l), "mlp.up_proj", &h);
                let gate = matvec(&layer.w_gate, &h, layer_int8(l, "mlp.gate_proj"));
                let up = matvec(&layer.w_up, &h, layer_int8(l, "mlp.up_proj"));
                let mut act: Vec<f32> = gate
                    .iter()
                    .zip(&up)
                    .map(|(&g, &u)| (silu(f64::from(g)) * f64::from(u)) as f32)
                    .collect();
                rotate(rotated, &mut act, false);
                seen(Some(l), "mlp.down_proj", &act);
                add_assign(x, &matvec(&layer.w_down, &act, layer_int8(l, "mlp.down_proj")));
            }
        }
        self.cached = start + tokens.len();

        let head = self.lm_head.as_deref().unwrap_or(&self.embed);
        let head_name = match self.lm_head {
            Some(_) => "lm_head.weight",
            None => "model.embed_tokens.weight",
        };
        let mut logits = Vec::with_capacity(tokens.len() * vocab);
        for x in &xs {
            let mut h = rms_norm(x, &self.norm, self.config.rms_norm_eps);
            rotate(rotated, &mut h, false);
            seen(None, head_name, &h);
            logits.extend(matvec(head, &h, int8(head_name)));
        }
        Ok(logits)
    }

    /// Logits of a whole window from an empty cache: what perplexity needs.
    pub fn eval_window(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.reset();
        self.forward(tokens, 0)
    }
}

/// `x ← Q x` (`inverse`: `Qᵀ x`) when the model rotates inputs and the
/// width is one q35c rotates.
fn rotate(rotated: bool, x: &mut [f32], inverse: bool) {
    if rotated && q35_format::rotation::supported(x.len()) {
        let mut wide: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        q35_format::rotation::apply(&mut wide, inverse);
        for (a, b) in x.iter_mut().zip(wide) {
            *a = b as f32;
        }
    }
}
