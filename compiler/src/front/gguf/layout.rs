//! How llama.cpp's converter lays Hugging Face Llama tensors out in GGUF:
//! tensor names, and the per-head row interleaving of `attn_q`/`attn_k`.
//!
//! The converter stores `permute(W, n_head)` for the q and k projections,
//!
//! ```text
//! permute(w, n) = w.reshape(n, 2, rows/n/2, K).swapaxes(1, 2).reshape(rows, K)
//! ```
//!
//! so that llama.cpp can apply RoPE to adjacent pairs (2j, 2j+1). HF's
//! Llama rotates halves instead (j, j + head_dim/2). Reading GGUF, we undo
//! the permutation, and the model then uses HF's rotate-half RoPE. For `k`
//! the converter uses the number of key/value heads.

/// The HF name of a GGUF tensor, and for `attn_q`/`attn_k` which head
/// count the converter permuted it with. Names that are not part of a
/// Llama come back unchanged (validation reports them as unexpected).
pub(crate) fn hf_name(gguf: &str) -> (String, Option<RopeHeads>) {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return (name.to_string(), None);
    }
    let Some((layer, part)) = gguf
        .strip_prefix("blk.")
        .and_then(|rest| rest.split_once('.'))
        .filter(|(layer, _)| !layer.is_empty() && layer.bytes().all(|b| b.is_ascii_digit()))
    else {
        return (gguf.to_string(), None);
    };
    let (hf, heads) = match part {
        "attn_norm.weight" => ("input_layernorm.weight", None),
        "attn_q.weight" => ("self_attn.q_proj.weight", Some(RopeHeads::Query)),
        "attn_k.weight" => ("self_attn.k_proj.weight", Some(RopeHeads::KeyValue)),
        "attn_v.weight" => ("self_attn.v_proj.weight", None),
        "attn_output.weight" => ("self_attn.o_proj.weight", None),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", None),
        "ffn_up.weight" => ("mlp.up_proj.weight", None),
        "ffn_down.weight" => ("mlp.down_proj.weight", None),
        _ => return (gguf.to_string(), None),
    };
    (format!("model.layers.{layer}.{hf}"), heads)
}

/// Which head count a permuted tensor was permuted with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RopeHeads {
    /// `attn_q`: `attention.head_count`.
    Query,
    /// `attn_k`: `attention.head_count_kv`.
    KeyValue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hf() {
        assert_eq!(hf_name("token_embd.weight").0, "model.embed_tokens.weight");
        assert_eq!(hf_name("output.weight").0, "lm_head.weight");
        assert_eq!(
            hf_name("blk.12.attn_k.weight"),
            (
                "model.layers.12.self_attn.k_proj.weight".to_string(),
                Some(RopeHeads::KeyValue)
            )
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").0,
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(hf_name("blk.x.attn_q.weight").0, "blk.x.attn_q.weight");
        assert_eq!(hf_name("rope_freqs.weight").0, "rope_freqs.weight");
    }
}
