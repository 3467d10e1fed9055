//! A tiny, deterministic, random Llama for tests across the project:
//! `model.safetensors` + `config.json` + a byte-level `tokenizer.json`.
//!
//! Weights come from a seeded SplitMix64 and contain no transcendental
//! functions, so the same spec gives the same bytes on every machine:
//! matrices ~ N(0, 0.02²) (a sum of four uniforms), norm weights in
//! [0.9, 1.1].

use crate::front::config::HfConfig;
use super::{
    atomic,
    config::{ModelConfig, LLAMA_ARCHITECTURE},
    dtype::{f32_to_le_bytes, DType},
    error::{Error, Result},
    gguf::tokenizer::{byte_level_alphabet, token_type, GgufTokenizer},
    llama::expected_tensors,
    safetensors::{self, TensorSpec},
    CONFIG_FILE, SAFETENSORS_FILE, TOKENIZER_FILE,
};
use std::path::{Path, PathBuf};

/// Merges of the tiny tokenizer (token ids 256..262 after the 256 bytes).
const TINY_MERGES: [&str; 6] = ["Ġ t", "h e", "i n", "Ġt he", "e r", "a n"];
/// Tokens of the tiny tokenizer: 256 bytes, the merges, `<s>`, `</s>`.
pub const TINY_TOKENIZER_LEN: usize = 256 + TINY_MERGES.len() + 2;
/// The most parameters a tiny model may have: 2^28, 1 GiB of f32 weights
/// on disk and about twice that in memory while it is generated (every
/// tensor as f32, then as bytes). A tiny model is for tests and quick
/// trials; anything larger is a mistyped size.
pub const MAX_TINY_PARAMETERS: u64 = 1 << 28;

/// Sizes and seed of a tiny model.
#[derive(Clone, Debug, PartialEq)]
pub struct TinySpec {
    pub num_hidden_layers: usize,
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub intermediate_size: usize,
    /// At least [`TINY_TOKENIZER_LEN`] when `tokenizer` is set.
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub seed: u64,
    /// Write tokenizer.json (and set bos/eos ids in config.json).
    pub tokenizer: bool,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            num_hidden_layers: 2,
            hidden_size: 64,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            intermediate_size: 128,
            vocab_size: TINY_TOKENIZER_LEN,
            max_position_embeddings: 128,
            tie_word_embeddings: false,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            seed: 0x0035_0035,
            tokenizer: true,
        }
    }
}

impl TinySpec {
    /// Checks the sizes before anything is written, naming the
    /// `q35c tiny-model` option at fault: every size positive, `--hidden`
    /// divisible by `--heads`, `--heads` by `--kv-heads`, an even head
    /// width, and at most [`MAX_TINY_PARAMETERS`] parameters.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (flag, value) in [
            ("--layers", self.num_hidden_layers),
            ("--hidden", self.hidden_size),
            ("--heads", self.num_attention_heads),
            ("--kv-heads", self.num_key_value_heads),
            ("--ffn", self.intermediate_size),
            ("vocab_size", self.vocab_size),
        ] {
            if value == 0 {
                return Err(format!("{flag} must be positive, found 0"));
            }
        }
        let (hidden, heads, kv_heads) = (
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
        );
        if hidden % heads != 0 {
            return Err(format!(
                "--hidden {hidden} is not divisible by --heads {heads} (each head takes hidden/heads dimensions)"
            ));
        }
        if heads % kv_heads != 0 {
            return Err(format!(
                "--heads {heads} is not a multiple of --kv-heads {kv_heads} (each key/value head serves heads/kv-heads query heads)"
            ));
        }
        let head_dim = hidden / heads;
        if head_dim % 2 != 0 {
            return Err(format!(
                "--hidden {hidden} / --heads {heads} = {head_dim} dimensions per head, which must be even (RoPE rotates pairs)"
            ));
        }
        let parameters = self.parameters();
        if parameters > u128::from(MAX_TINY_PARAMETERS) {
            return Err(format!(
                "{parameters} parameters (--layers {}, --hidden {hidden}, --ffn {}, {} tokens) is over the tiny \
                 model's limit of 2^28 = {MAX_TINY_PARAMETERS} (1 GiB of f32 weights): lower --hidden, --ffn or --layers",
                self.num_hidden_layers, self.intermediate_size, self.vocab_size
            ));
        }
        Ok(())
    }

    /// Parameters of the model (computed without overflow, for any sizes).
    pub fn parameters(&self) -> u128 {
        let [layers, hidden, heads, kv_heads, ffn, vocab] = [
            self.num_hidden_layers,
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.intermediate_size,
            self.vocab_size,
        ]
        .map(|n| n as u128);
        let kv_width = kv_heads * (hidden / heads.max(1));
        // q and o, k and v, gate, up and down, two norms.
        let layer = 2 * hidden * hidden + 2 * kv_width * hidden + 3 * ffn * hidden + 2 * hidden;
        let heads_and_embedding = if self.tie_word_embeddings { 1 } else { 2 } * vocab * hidden;
        layers * layer + heads_and_embedding + hidden
    }

    /// The model configuration this spec describes.
    pub fn config(&self) -> ModelConfig {
        let (bos, eos) = if self.tokenizer {
            (
                Some(TINY_TOKENIZER_LEN as u32 - 2),
                Some(TINY_TOKENIZER_LEN as u32 - 1),
            )
        } else {
            (None, None)
        };
        ModelConfig {
            architecture: LLAMA_ARCHITECTURE.to_string(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: self.hidden_size / self.num_attention_heads.max(1),
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            max_position_embeddings: self.max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings,
            bos_token_id: bos,
            eos_token_id: eos,
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for
/// test weights, and identical everywhere.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Approximately standard normal: four uniforms summed (Irwin–Hall),
    /// centred and scaled to unit variance.
    pub fn normal(&mut self) -> f64 {
        let sum: f64 = (0..4).map(|_| self.uniform()).sum();
        (sum - 2.0) * 3f64.sqrt()
    }
}

/// The tiny model's tensors in HF order: `(name, shape, values)`.
pub fn tiny_tensors(spec: &TinySpec) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = SplitMix64::new(spec.seed);
    expected_tensors(&spec.config())
        .into_iter()
        .map(|t| {
            let n: usize = t.shape.iter().product();
            let values = if t.shape.len() == 1 {
                (0..n).map(|_| (0.9 + 0.2 * rng.uniform()) as f32).collect()
            } else {
                (0..n).map(|_| (0.02 * rng.normal()) as f32).collect()
            };
            (t.name, t.shape, values)
        })
        .collect()
}

/// A byte-level BPE tokenizer: ids 0..256 are the bytes (GPT-2's
/// alphabet), then six merges (`Ġt`, `he`, `in`, `Ġthe`, `er`, `an`),
/// then `<s>` and `</s>` as control tokens.
pub fn tiny_tokenizer() -> GgufTokenizer {
    let mut tokens: Vec<String> = byte_level_alphabet()
        .iter()
        .map(|c| c.to_string())
        .collect();
    tokens.extend(TINY_MERGES.iter().map(|m| m.replace(' ', "")));
    tokens.extend(["<s>".to_string(), "</s>".to_string()]);
    let mut token_types = vec![token_type::NORMAL; tokens.len() - 2];
    token_types.extend([token_type::CONTROL; 2]);
    GgufTokenizer {
        model: "gpt2".into(),
        pre: Some("default".into()),
        tokens,
        token_types,
        merges: TINY_MERGES.iter().map(|m| m.to_string()).collect(),
        bos_token_id: Some(TINY_TOKENIZER_LEN as u32 - 2),
        eos_token_id: Some(TINY_TOKENIZER_LEN as u32 - 1),
        unknown_token_id: None,
        padding_token_id: None,
        add_bos_token: Some(false),
        add_eos_token: None,
        chat_template: None,
    }
}

/// `q35c tiny-model -o DIR`: checks `spec` before touching the disk
/// ([`TinySpec::check`]), creates `dir` and any missing parents, and writes
/// the model; if writing fails, the directories it created are removed, so
/// a failure leaves nothing behind.
pub fn create_tiny_model(dir: &Path, spec: TinySpec) -> Result<PathBuf> {
    spec.check()
        .map_err(|message| Error::malformed(dir, format!("tiny model: {message}")))?;
    // The outermost directory this call creates.
    let created = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .last()
        .map(Path::to_path_buf);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let written = write_tiny_model(dir, spec);
    if written.is_err() {
        if let Some(created) = created {
            let _ = std::fs::remove_dir_all(created);
        }
    }
    written
}

/// Writes the tiny model into `dir` (which must exist) and returns the
/// path of its `model.safetensors`.
pub fn write_tiny_model(dir: &Path, spec: TinySpec) -> Result<PathBuf> {
    spec.check()
        .map_err(|message| Error::malformed(dir, format!("tiny model: {message}")))?;
    if spec.tokenizer && spec.vocab_size < TINY_TOKENIZER_LEN {
        return Err(Error::config(
            &dir.join(CONFIG_FILE),
            "vocab_size",
            format!(
                "the tiny tokenizer needs {TINY_TOKENIZER_LEN} tokens, found {}",
                spec.vocab_size
            ),
        ));
    }
    let config = spec.config();
    config
        .check_supported()
        .map_err(|e| e.at(&dir.join(CONFIG_FILE)))?;
    let tensors = tiny_tensors(&spec);
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(name, shape, _)| TensorSpec {
            name: name.clone(),
            shape: shape.clone(),
            dtype: DType::F32,
        })
        .collect();
    let weights = dir.join(SAFETENSORS_FILE);
    safetensors::write(&weights, &specs, |i| {
        Ok(tensors
            .get(i)
            .map(|(_, _, v)| f32_to_le_bytes(v))
            .unwrap_or_default())
    })?
    .commit()?;
    write_text(&dir.join(CONFIG_FILE), &config.to_hf_json(Some("float32")))?;
    if spec.tokenizer {
        let path = dir.join(TOKENIZER_FILE);
        write_text(&path, &tiny_tokenizer().to_tokenizer_json(&path)?)?;
    }
    Ok(weights)
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    atomic::write_file(path, |out| {
        out.write_all(text.as_bytes())
            .map_err(atomic::write_error(path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let pa = write_tiny_model(a.path(), TinySpec::default()).unwrap();
        let pb = write_tiny_model(b.path(), TinySpec::default()).unwrap();
        assert_eq!(std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
        let other = TinySpec {
            seed: 1,
            ..TinySpec::default()
        };
        let pc = write_tiny_model(b.path(), other).unwrap();
        assert_ne!(std::fs::read(&pa).unwrap(), std::fs::read(&pc).unwrap());
    }

    #[test]
    fn weights_have_the_intended_statistics() {
        let tensors = tiny_tensors(&TinySpec::default());
        let (_, _, up) = tensors
            .iter()
            .find(|(n, _, _)| n.ends_with("up_proj.weight"))
            .unwrap();
        let mean = up.iter().sum::<f32>() / up.len() as f32;
        let std = (up.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / up.len() as f32).sqrt();
        assert!(
            mean.abs() < 0.002 && (std - 0.02).abs() < 0.002,
            "mean {mean} std {std}"
        );
        let (_, _, norm) = tensors
            .iter()
            .find(|(n, _, _)| n == "model.norm.weight")
            .unwrap();
        assert!(norm.iter().all(|v| (0.9..=1.1).contains(v)));
    }

    #[test]
    fn too_small_vocab_for_the_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TinySpec {
            vocab_size: 256,
            ..TinySpec::default()
        };
        let e = write_tiny_model(dir.path(), spec.clone())
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("`vocab_size`: the tiny tokenizer needs 264 tokens, found 256"),
            "{e}"
        );
        let path = write_tiny_model(
            dir.path(),
            TinySpec {
                tokenizer: false,
                ..spec
            },
        )
        .unwrap();
        let model = crate::front::load(&path).unwrap();
        assert_eq!(model.config.vocab_size, 256);
        assert_eq!(model.config.bos_token_id, None);
    }

    #[test]
    fn bad_sizes_are_refused_before_anything_is_written() {
        type Edit = fn(&mut TinySpec);
        let root = tempfile::tempdir().unwrap();
        let cases: [(Edit, &str); 6] = [
            (|s| s.num_attention_heads = 3, "tiny model: --hidden 64 is not divisible by --heads 3 (each head takes hidden/heads dimensions)"),
            (|s| s.num_key_value_heads = 3, "tiny model: --heads 4 is not a multiple of --kv-heads 3"),
            (|s| { s.hidden_size = 60; s.num_attention_heads = 4 }, "--hidden 60 / --heads 4 = 15 dimensions per head, which must be even (RoPE rotates pairs)"),
            (|s| s.num_hidden_layers = 0, "tiny model: --layers must be positive, found 0"),
            (|s| s.num_key_value_heads = 0, "tiny model: --kv-heads must be positive, found 0"),
            (
                |s| { s.hidden_size = 65536; s.num_attention_heads = 64; s.num_key_value_heads = 64 },
                "tiny model: 34445000704 parameters (--layers 2, --hidden 65536, --ffn 128, 264 tokens) is over the tiny model's limit of 2^28 = 268435456 (1 GiB of f32 weights): lower --hidden, --ffn or --layers",
            ),
        ];
        for (edit, expected) in cases {
            let mut spec = TinySpec::default();
            edit(&mut spec);
            let dir = root.path().join("new/model");
            let e = create_tiny_model(&dir, spec).unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
            assert!(!root.path().join("new").exists(), "{e}");
        }
        // A failure after the directory was made removes what was created.
        let spec = TinySpec {
            vocab_size: 256,
            ..TinySpec::default()
        };
        let e = create_tiny_model(&root.path().join("new/model"), spec)
            .unwrap_err()
            .to_string();
        assert!(e.contains("the tiny tokenizer needs 264 tokens"), "{e}");
        assert!(!root.path().join("new").exists());
        // An existing directory is kept.
        let existing = root.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        let spec = TinySpec {
            vocab_size: 256,
            ..TinySpec::default()
        };
        create_tiny_model(&existing, spec).unwrap_err();
        assert!(existing.is_dir());
        // Defaults pass, and the largest sizes stay within the bound.
        create_tiny_model(&root.path().join("ok/model"), TinySpec::default()).unwrap();
        assert!(TinySpec::default().parameters() < u128::from(MAX_TINY_PARAMETERS));
        let huge = TinySpec {
            num_hidden_layers: usize::MAX,
            ..TinySpec::default()
        };
        assert!(huge
            .check()
            .unwrap_err()
            .contains("over the tiny model's limit"));
    }
}
