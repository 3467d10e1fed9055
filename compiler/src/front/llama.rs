//! The exact tensor set of a Llama decoder in Hugging Face naming, with
//! each tensor's shape from the configuration. Validation compares a
//! loaded model against this list; the converter writes in its order.

use super::config::ModelConfig;

/// A tensor the architecture needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    /// The shape in configuration terms, for messages.
    pub meaning: &'static str,
}

/// Every tensor of a Llama with this configuration, embedding first,
/// then layer by layer, then the final norm and (unless tied) `lm_head`.
/// Meant for validated configurations (which bound the sizes).
pub fn expected_tensors(c: &ModelConfig) -> Vec<ExpectedTensor> {
    let q_rows = c.num_attention_heads.saturating_mul(c.head_dim);
    let kv_rows = c.num_key_value_heads.saturating_mul(c.head_dim);
    let (hidden, ffn) = (c.hidden_size, c.intermediate_size);
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, meaning| {
        out.push(ExpectedTensor {
            name,
            shape,
            meaning,
        })
    };
    push(
        "model.embed_tokens.weight".into(),
        vec![c.vocab_size, hidden],
        "[vocab_size, hidden_size]",
    );
    for layer in 0..c.num_hidden_layers {
        let p = format!("model.layers.{layer}");
        push(
            format!("{p}.input_layernorm.weight"),
            vec![hidden],
            "[hidden_size]",
        );
        push(
            format!("{p}.self_attn.q_proj.weight"),
            vec![q_rows, hidden],
            "[num_attention_heads*head_dim, hidden_size]",
        );
        push(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv_rows, hidden],
            "[num_key_value_heads*head_dim, hidden_size]",
        );
        push(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv_rows, hidden],
            "[num_key_value_heads*head_dim, hidden_size]",
        );
        push(
            format!("{p}.self_attn.o_proj.weight"),
            vec![hidden, q_rows],
            "[hidden_size, num_attention_heads*head_dim]",
        );
        push(
            format!("{p}.post_attention_layernorm.weight"),
            vec![hidden],
            "[hidden_size]",
        );
        push(
            format!("{p}.mlp.gate_proj.weight"),
            vec![ffn, hidden],
            "[intermediate_size, hidden_size]",
        );
        push(
            format!("{p}.mlp.up_proj.weight"),
            vec![ffn, hidden],
            "[intermediate_size, hidden_size]",
        );
        push(
            format!("{p}.mlp.down_proj.weight"),
            vec![hidden, ffn],
            "[hidden_size, intermediate_size]",
        );
    }
    push("model.norm.weight".into(), vec![hidden], "[hidden_size]");
    if !c.tie_word_embeddings {
        push(
            "lm_head.weight".into(),
            vec![c.vocab_size, hidden],
            "[vocab_size, hidden_size]",
        );
    }
    out
}

/// Buffers some checkpoints carry that are not weights: RoPE's inverse
/// frequencies, which q35 computes from `rope_theta`.
pub fn is_ignored(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq")
}
