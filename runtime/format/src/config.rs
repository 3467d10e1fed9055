//! The model hyper-parameters that every q35 tool agrees on.
//!
//! Plain data: the compiler's front end fills it from `config.json` or a GGUF
//! header, the artifact manifest embeds it, and the runtime (reference
//! forward pass, executors, tokenizer glue) reads it. Field names follow
//! Hugging Face's `config.json` so the JSON stays familiar.

use serde::{Deserialize, Serialize};

/// Hyper-parameters of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Architecture name as the front end detected it (for example `llama`).
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of the MLP's gate/up projections.
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Per-head width. Explicit because some models (for example Gemma and
    /// some Llama variants) have `num_attention_heads * head_dim != hidden_size`.
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Longest sequence the model supports; the runtime rejects longer prompts.
    pub max_position_embeddings: usize,
    /// The LM head reuses `embed_tokens` when true.
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

impl ModelConfig {
    /// Width of all query heads together (`num_attention_heads * head_dim`).
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of all key (or value) heads together (`num_key_value_heads * head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Checks that the values describe a model that can be built.
    ///
    /// `num_attention_heads * head_dim` may differ from `hidden_size` (the
    /// projections then change width), so that is not an error.
    pub fn validate(&self) -> Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("model config: {name} is 0"));
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(format!(
                "model config: num_attention_heads ({}) is not a multiple of \
                 num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            // RoPE rotates pairs (i, i + head_dim/2).
            return Err(format!(
                "model config: head_dim ({}) must be even for rotary embeddings",
                self.head_dim
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "model config: rms_norm_eps ({}) must be a positive number",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!(
                "model config: rope_theta ({}) must be a positive number",
                self.rope_theta
            ));
        }
        for (name, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
        ] {
            if let Some(id) = id {
                if id as usize >= self.vocab_size {
                    return Err(format!(
                        "model config: {name} ({id}) is outside the vocabulary of {} tokens",
                        self.vocab_size
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2() -> ModelConfig {
        ModelConfig {
            architecture: "llama".into(),
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 100000.0,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        }
    }

    #[test]
    fn valid_config_passes_and_round_trips() {
        let c = smollm2();
        c.validate().unwrap();
        assert_eq!((c.q_dim(), c.kv_dim()), (576, 192));
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), c);
    }

    #[test]
    fn token_ids_are_optional_in_json() {
        let mut v = serde_json::to_value(smollm2()).unwrap();
        let m = v.as_object_mut().unwrap();
        m.remove("bos_token_id");
        m.remove("eos_token_id");
        let c: ModelConfig = serde_json::from_value(v).unwrap();
        assert_eq!((c.bos_token_id, c.eos_token_id), (None, None));
    }

    #[test]
    fn inconsistent_values_are_named() {
        type Edit = fn(&mut ModelConfig);
        let cases: [(Edit, &str); 6] = [
            (|c| c.hidden_size = 0, "hidden_size is 0"),
            (
                |c| c.num_key_value_heads = 2,
                "not a multiple of num_key_value_heads (2)",
            ),
            (|c| c.head_dim = 63, "head_dim (63) must be even"),
            (|c| c.rms_norm_eps = 0.0, "rms_norm_eps"),
            (|c| c.rope_theta = f64::NAN, "rope_theta"),
            (
                |c| c.eos_token_id = Some(49152),
                "eos_token_id (49152) is outside",
            ),
        ];
        for (edit, expected) in cases {
            let mut c = smollm2();
            edit(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
    }

    #[test]
    fn head_dim_independent_of_hidden_size_is_allowed() {
        let mut c = smollm2();
        c.head_dim = 128; // 9 * 128 != 576
        c.validate().unwrap();
    }
}
