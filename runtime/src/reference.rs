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

use std::collections::HashMap;
use std::path::Path;

use q35_format::ModelConfig;

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

/// A weight as f32 with its shape (row-major, Hugging Face layout).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Where the reference gets its weights from, by Hugging Face tensor name
/// (`model.layers.0.self_attn.q_proj.weight`).
pub trait Weights {
    fn get(&self, name: &str) -> Result<WeightTensor>;
}

/// An in-memory map, for tests and for weights built by other tools.
impl Weights for HashMap<String, WeightTensor> {
    fn get(&self, name: &str) -> Result<WeightTensor> {
        HashMap::get(self, name)
            .cloned()
            .ok_or_else(|| ReferenceError::MissingTensor {
                origin: "weight map".into(),
                name: name.into(),
            })
    }
}

/// Weights of one Hugging Face `model.safetensors`, memory-mapped and
/// converted to f32 tensor by tensor.
pub struct SafetensorsWeights {
    file: String,
    mmap: memmap2::Mmap,
    /// Offset of the data section (after the 8-byte length and the header).
    data_start: usize,
    metadata: safetensors::tensor::Metadata,
}

impl SafetensorsWeights {
    /// Maps the file and checks its header (offsets, sizes, dtypes' byte
    /// counts) before any tensor is read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let read_err = |source| ReferenceError::Read {
            file: file.clone(),
            source,
        };
        let handle = std::fs::File::open(path).map_err(read_err)?;
        // SAFETY: the map is read-only and we never hand out references that
        // outlive it. Memory-mapping is only sound while no other process
        // truncates or rewrites the file; like every mmap-based model loader
        // we accept that (a truncated file would fault, not corrupt memory
        // silently). The header is validated before any offset is used.
        let mmap = unsafe { memmap2::Mmap::map(&handle) }.map_err(read_err)?;
        let (header_len, metadata) =
            safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| {
                ReferenceError::Safetensors {
                    file: file.clone(),
                    what: e.to_string(),
                }
            })?;
        Ok(Self {
            file,
            mmap,
            data_start: 8 + header_len,
            metadata,
        })
    }

    /// Names of all tensors in the file.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.metadata.tensors().into_keys().collect();
        names.sort();
        names
    }
}

impl Weights for SafetensorsWeights {
    fn get(&self, name: &str) -> Result<WeightTensor> {
        use safetensors::Dtype;
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| ReferenceError::MissingTensor {
                origin: self.file.clone(),
                name: name.into(),
            })?;
        let (begin, end) = info.data_offsets;
        // read_metadata checked that the offsets tile the data section exactly.
        let bytes = &self.mmap[self.data_start + begin..self.data_start + end];
        let data: Vec<f32> = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ReferenceError::UnsupportedDtype {
                    origin: self.file.clone(),
                    name: name.into(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok(WeightTensor {
            shape: info.shape.clone(),
            data,
        })
    }
}

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
        })
    }

    /// Every matmul input is quantized to int8 per group of its weight's
    /// `groups[name]` columns first and stands for `sx·x8`
    /// (`q35_format::activations`), as the integer path computes.
    pub fn with_int8_activations(mut self, groups: std::collections::HashMap<String, usize>) -> Self {
        self.int8_activations = Some(groups);
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
            .map(|&t| self.embed[t as usize * hidden..(t as usize + 1) * hidden].to_vec())
            .collect();
        for (l, (layer, cache)) in self.layers.iter().zip(&mut self.cache).enumerate() {
            // Keys and values of all new positions first: with the causal
            // mask each query then reads only the positions up to its own.
            let mut queries = Vec::with_capacity(xs.len());
            for (i, x) in xs.iter().enumerate() {
                let h = rms_norm(x, &layer.attn_norm, self.config.rms_norm_eps);
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
                let attn = attention(&self.config, q, cache, start + i + 1);
                seen(Some(l), "self_attn.o_proj", &attn);
                add_assign(x, &matvec(&layer.wo, &attn, layer_int8(l, "self_attn.o_proj")));
                let h = rms_norm(x, &layer.mlp_norm, self.config.rms_norm_eps);
                seen(Some(l), "mlp.gate_proj", &h);
                seen(Some(l), "mlp.up_proj", &h);
                let gate = matvec(&layer.w_gate, &h, layer_int8(l, "mlp.gate_proj"));
                let up = matvec(&layer.w_up, &h, layer_int8(l, "mlp.up_proj"));
                let act: Vec<f32> = gate
                    .iter()
                    .zip(&up)
                    .map(|(&g, &u)| (silu(f64::from(g)) * f64::from(u)) as f32)
                    .collect();
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
            let h = rms_norm(x, &self.norm, self.config.rms_norm_eps);
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

/// Grouped-query causal attention of one position's queries `q` over the
/// first `len` cached positions. Query head `h` reads kv head
/// `h / (heads / kv_heads)`.
fn attention(c: &ModelConfig, q: &[f32], cache: &LayerCache, len: usize) -> Vec<f32> {
    let hd = c.head_dim;
    let group = c.num_attention_heads / c.num_key_value_heads;
    let kv_dim = c.kv_dim();
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0f32; c.q_dim()];
    for (h, (q_h, out_h)) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)).enumerate() {
        let kv = (h / group) * hd;
        let scores: Vec<f64> = (0..len)
            .map(|p| dot(q_h, &cache.k[p * kv_dim + kv..p * kv_dim + kv + hd]) * scale)
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        for (d, o) in out_h.iter_mut().enumerate() {
            let sum: f64 = (0..len)
                .map(|p| weights[p] * f64::from(cache.v[p * kv_dim + kv + d]))
                .sum();
            *o = (sum / total) as f32;
        }
    }
    out
}

/// `x / sqrt(mean(x²) + eps) * w`, with the mean in f64.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let mean_sq = dot(x, x) / x.len() as f64;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    x.iter()
        .zip(w)
        .map(|(&x, &w)| (f64::from(x) * inv * f64::from(w)) as f32)
        .collect()
}

/// Rotary embedding of one head at `pos`, in Hugging Face's rotate-half
/// form: element `i` pairs with `i + d/2` and turns by `pos · θ^(-2i/d)`.
pub fn rope(head: &mut [f32], pos: usize, theta: f64) {
    let half = head.len() / 2;
    let d = head.len() as f64;
    for i in 0..half {
        let angle = pos as f64 * theta.powf(-2.0 * i as f64 / d);
        let (sin, cos) = angle.sin_cos();
        let (a, b) = (f64::from(head[i]), f64::from(head[i + half]));
        head[i] = (a * cos - b * sin) as f32;
        head[i + half] = (b * cos + a * sin) as f32;
    }
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// `W·x` for `W` of shape `[W.len() / x.len(), x.len()]`, on the int8
/// activations' values when `int8` gives their group.
fn matvec(w: &[f32], x: &[f32], int8: Option<usize>) -> Vec<f32> {
    match int8 {
        None => w
            .chunks_exact(x.len())
            .map(|row| dot(row, x) as f32)
            .collect(),
        Some(group) => {
            let x = q35_format::activations::dequantized_activations(x, group);
            w.chunks_exact(x.len())
                .map(|row| {
                    row.iter()
                        .zip(&x)
                        .map(|(&w, &x)| f64::from(w) * x)
                        .sum::<f64>() as f32
                })
                .collect()
        }
    }
}

fn add_assign(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
}

/// Dot product in f64. Four running sums let the CPU overlap the additions;
/// in f64 the order changes the result far below f32 resolution.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4
        .remainder()
        .iter()
        .zip(b4.remainder())
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    for (x, y) in a4.zip(b4) {
        for i in 0..4 {
            acc[i] += f64::from(x[i]) * f64::from(y[i]);
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> ModelConfig {
        ModelConfig {
            architecture: "llama".into(),
            vocab_size: 96,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            max_position_embeddings: 32,
            tie_word_embeddings: false,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        }
    }

    /// Deterministic pseudo-random values in [-scale, scale) (splitmix64).
    struct Gen(u64);
    impl Gen {
        fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
            (0..n)
                .map(|_| {
                    self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut z = self.0;
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    z ^= z >> 31;
                    ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
                })
                .collect()
        }
    }

    /// Every tensor of `c`, random, scaled so activations stay O(1).
    fn tiny_weights(c: &ModelConfig, seed: u64) -> HashMap<String, WeightTensor> {
        let mut g = Gen(seed);
        let mut m = HashMap::new();
        let mut put = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
            let data = g
                .values(shape.iter().product(), scale)
                .iter()
                .map(|v| v + offset)
                .collect();
            m.insert(name, WeightTensor { shape, data });
        };
        let (h, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let lin = |k: usize| 1.0 / (k as f32).sqrt();
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            put(format!("{p}.input_layernorm.weight"), vec![h], 0.2, 1.0);
            put(
                format!("{p}.self_attn.q_proj.weight"),
                vec![c.q_dim(), h],
                2.0 * lin(h),
                0.0,
            );
            put(
                format!("{p}.self_attn.k_proj.weight"),
                vec![c.kv_dim(), h],
                2.0 * lin(h),
                0.0,
            );
            put(
                format!("{p}.self_attn.v_proj.weight"),
                vec![c.kv_dim(), h],
                lin(h),
                0.0,
            );
            put(
                format!("{p}.self_attn.o_proj.weight"),
                vec![h, c.q_dim()],
                lin(c.q_dim()),
                0.0,
            );
            put(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                0.2,
                1.0,
            );
            put(format!("{p}.mlp.gate_proj.weight"), vec![f, h], lin(h), 0.0);
            put(format!("{p}.mlp.up_proj.weight"), vec![f, h], lin(h), 0.0);
            put(format!("{p}.mlp.down_proj.weight"), vec![h, f], lin(f), 0.0);
        }
        put("model.embed_tokens.weight".into(), vec![v, h], 1.0, 0.0);
        put("model.norm.weight".into(), vec![h], 0.2, 1.0);
        put("lm_head.weight".into(), vec![v, h], lin(h), 0.0);
        m
    }

    fn tiny() -> Reference {
        let c = tiny_config();
        Reference::new(c.clone(), &tiny_weights(&c, 1)).unwrap()
    }

    const PROMPT: [u32; 12] = [1, 17, 42, 5, 95, 0, 63, 63, 12, 80, 7, 33];

    fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        diff / scale
    }

    #[test]
    fn prefill_equals_token_by_token_decode() {
        let mut model = tiny();
        let prefill = model.forward(&PROMPT, 0).unwrap();
        assert_eq!(prefill.len(), PROMPT.len() * 96);
        assert!(prefill.iter().all(|x| x.is_finite()));
        model.reset();
        let mut decode = Vec::new();
        for (i, &t) in PROMPT.iter().enumerate() {
            decode.extend(model.forward(&[t], i).unwrap());
        }
        assert_eq!(model.cached(), PROMPT.len());
        assert!(max_rel_diff(&prefill, &decode) <= 1e-5);
        // Mixed: a prefill of 5, then chunks.
        model.reset();
        let mut mixed = model.forward(&PROMPT[..5], 0).unwrap();
        mixed.extend(model.forward(&PROMPT[5..9], 5).unwrap());
        mixed.extend(model.forward(&PROMPT[9..], 9).unwrap());
        assert!(max_rel_diff(&prefill, &mixed) <= 1e-5);
    }

    #[test]
    fn later_tokens_do_not_change_earlier_logits() {
        let mut model = tiny();
        let a = model.eval_window(&PROMPT).unwrap();
        let mut other = PROMPT;
        other[7..].copy_from_slice(&[3, 3, 3, 3, 3]);
        let b = model.eval_window(&other).unwrap();
        assert_eq!(a[..7 * 96], b[..7 * 96]);
        assert_ne!(a[7 * 96..8 * 96], b[7 * 96..8 * 96]);
    }

    #[test]
    fn rewinding_the_cache_recomputes() {
        let mut model = tiny();
        let full = model.forward(&PROMPT, 0).unwrap();
        let again = model.forward(&PROMPT[6..], 6).unwrap();
        assert_eq!(full[6 * 96..], again[..]);
        let err = model.forward(&[1], 13).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot start at position 13: the cache holds only 12 positions"
        );
    }

    #[test]
    fn grouped_query_heads_share_kv_heads() {
        // The same model with every kv head duplicated for the two query
        // heads that read it must give the same logits.
        let c = tiny_config();
        let w = tiny_weights(&c, 5);
        let mut full = c.clone();
        full.num_key_value_heads = c.num_attention_heads;
        let mut wf = w.clone();
        let hd = c.head_dim;
        for i in 0..c.num_hidden_layers {
            for proj in ["k_proj", "v_proj"] {
                let name = format!("model.layers.{i}.self_attn.{proj}.weight");
                let t = &w[&name];
                let rows_per_head = hd * c.hidden_size;
                let data: Vec<f32> = (0..c.num_attention_heads)
                    .flat_map(|h| {
                        let kv = h / 2;
                        t.data[kv * rows_per_head..(kv + 1) * rows_per_head].to_vec()
                    })
                    .collect();
                wf.insert(
                    name,
                    WeightTensor {
                        shape: vec![full.kv_dim(), c.hidden_size],
                        data,
                    },
                );
            }
        }
        let a = Reference::new(c, &w).unwrap().forward(&PROMPT, 0).unwrap();
        let b = Reference::new(full, &wf)
            .unwrap()
            .forward(&PROMPT, 0)
            .unwrap();
        assert!(max_rel_diff(&a, &b) <= 1e-6);
    }

    #[test]
    fn tied_embeddings_use_embed_tokens() {
        let mut c = tiny_config();
        let mut w = tiny_weights(&c, 2);
        let embed = w["model.embed_tokens.weight"].clone();
        w.insert("lm_head.weight".into(), embed);
        let untied = Reference::new(c.clone(), &w)
            .unwrap()
            .forward(&PROMPT, 0)
            .unwrap();
        c.tie_word_embeddings = true;
        w.remove("lm_head.weight");
        let tied = Reference::new(c, &w).unwrap().forward(&PROMPT, 0).unwrap();
        assert_eq!(untied, tied);
    }

    #[test]
    fn rms_norm_matches_hand_computation() {
        // mean(x²) = 30/4 = 7.5, 1/sqrt(7.5) = 0.365148371670...
        let y = rms_norm(&[1.0, 2.0, 3.0, 4.0], &[1.0, 1.0, 2.0, 0.5], 0.0);
        let expected: [f64; 4] = [0.36514837, 0.73029674, 2.19089023, 0.73029674];
        for (&a, b) in y.iter().zip(expected) {
            assert!((f64::from(a) - b).abs() < 1e-6, "{y:?}");
        }
        // eps is added inside the root: x = [0, 0] stays finite.
        assert_eq!(rms_norm(&[0.0, 0.0], &[1.0, 1.0], 1e-5), [0.0, 0.0]);
    }

    #[test]
    fn rope_matches_hand_computation() {
        // d = 4, θ = 10000: frequencies 1 and 0.01; pairs (0, 2) and (1, 3).
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        rope(&mut x, 0, 10000.0);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
        rope(&mut x, 1, 10000.0);
        // [1·cos1 − 3·sin1, 2·cos.01 − 4·sin.01, 3·cos1 + 1·sin1, 4·cos.01 + 2·sin.01]
        let expected: [f64; 4] = [-1.98411065, 1.95990067, 2.46237790, 4.01979967];
        for (&a, b) in x.iter().zip(expected) {
            assert!((f64::from(a) - b).abs() < 1e-6, "{x:?}");
        }
    }

    #[test]
    fn too_long_prompts_and_bad_tokens_are_errors() {
        let mut model = tiny();
        let err = model.forward(&[1; 33], 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "33 tokens from position 0 need 33 positions, but the context is 32"
        );
        let err = model.forward(&[1, 96], 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "token 96 at index 1 is outside the vocabulary of 96"
        );
    }

    #[test]
    fn missing_and_misshapen_weights_are_named() {
        let c = tiny_config();
        let mut w = tiny_weights(&c, 3);
        w.remove("model.layers.1.mlp.up_proj.weight");
        let err = Reference::new(c.clone(), &w).err().unwrap();
        assert_eq!(
            err.to_string(),
            "weight map: tensor `model.layers.1.mlp.up_proj.weight` is missing"
        );
        let mut w = tiny_weights(&c, 3);
        w.get_mut("model.norm.weight").unwrap().shape = vec![63];
        let err = Reference::new(c, &w).err().unwrap();
        assert_eq!(
            err.to_string(),
            "tensor `model.norm.weight`: shape [63], expected [64]"
        );
    }

    #[test]
    fn safetensors_weights_convert_f16_and_bf16() {
        use safetensors::{serialize_to_file, tensor::TensorView, Dtype};
        let dir = std::env::temp_dir().join(format!("q35-rt-ref-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        let f32s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let f16s: Vec<u8> = [0.25f32, 3.0]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        let bf16s: Vec<u8> = [-0.5f32, 8.0]
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        let i32s = vec![0u8; 8];
        let views = [
            ("a", TensorView::new(Dtype::F32, vec![2], &f32s).unwrap()),
            ("b", TensorView::new(Dtype::F16, vec![1, 2], &f16s).unwrap()),
            ("c", TensorView::new(Dtype::BF16, vec![2], &bf16s).unwrap()),
            ("d", TensorView::new(Dtype::I32, vec![2], &i32s).unwrap()),
        ];
        serialize_to_file(views, None, &path).unwrap();
        let w = SafetensorsWeights::open(&path).unwrap();
        assert_eq!(w.names(), ["a", "b", "c", "d"]);
        assert_eq!(w.get("a").unwrap().data, [1.5, -2.0]);
        let b = w.get("b").unwrap();
        assert_eq!((b.shape, b.data), (vec![1, 2], vec![0.25, 3.0]));
        assert_eq!(w.get("c").unwrap().data, [-0.5, 8.0]);
        let file = path.display();
        assert_eq!(
            w.get("d").unwrap_err().to_string(),
            format!("{file}: tensor `d` has dtype I32; the reference reads F32, F16 and BF16")
        );
        assert_eq!(
            w.get("e").unwrap_err().to_string(),
            format!("{file}: tensor `e` is missing")
        );
        // A truncated file is refused when opened.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let err = SafetensorsWeights::open(&path).err().unwrap().to_string();
        assert!(
            err.starts_with(&format!("{file}: not a valid safetensors file")),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
