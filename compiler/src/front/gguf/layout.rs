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

/// The source row of HF row `row` in the GGUF (permuted) tensor, for heads
/// of `head_dim` rows: HF row `h*hd + i*hd/2 + j` (i = 0, 1) is GGUF row
/// `h*hd + 2j + i`.
fn gguf_row(row: usize, head_dim: usize) -> usize {
    let half = head_dim / 2;
    let (head, within) = (row / head_dim, row % head_dim);
    let (i, j) = (within / half, within % half);
    head * head_dim + 2 * j + i
}

fn check(rows: usize, cols: usize, heads: usize, len: usize) -> Result<usize, String> {
    if heads == 0 || rows % heads != 0 || (rows / heads) % 2 != 0 {
        return Err(format!(
            "cannot undo llama.cpp's RoPE row order: {rows} rows do not split into {heads} heads of an even size"
        ));
    }
    if rows.checked_mul(cols) != Some(len) {
        return Err(format!("{len} values do not make a {rows}x{cols} matrix"));
    }
    Ok(rows / heads)
}

/// Undoes llama.cpp's q/k permutation: GGUF rows → HF rows.
pub fn unpermute_rope_rows(
    data: &[f32],
    rows: usize,
    cols: usize,
    heads: usize,
) -> Result<Vec<f32>, String> {
    let head_dim = check(rows, cols, heads, data.len())?;
    let mut out = Vec::with_capacity(data.len());
    for row in 0..rows {
        let src = gguf_row(row, head_dim) * cols;
        out.extend_from_slice(data.get(src..src + cols).ok_or("row out of range")?);
    }
    Ok(out)
}

/// llama.cpp's q/k permutation: HF rows → GGUF rows (the converter's side,
/// for writing test files and for checking the inverse).
pub fn permute_rope_rows(
    data: &[f32],
    rows: usize,
    cols: usize,
    heads: usize,
) -> Result<Vec<f32>, String> {
    let head_dim = check(rows, cols, heads, data.len())?;
    let mut out = vec![0.0; data.len()];
    for row in 0..rows {
        let dst = gguf_row(row, head_dim) * cols;
        let src = row * cols;
        out.get_mut(dst..dst + cols)
            .ok_or("row out of range")?
            .copy_from_slice(data.get(src..src + cols).ok_or("row out of range")?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_the_converters_reshape() {
        // 2 heads of head_dim 4, 1 column: rows 0..8. The converter's
        // reshape(2, 2, 2, 1).swapaxes(1, 2) orders each head's rows as
        // [0, 2, 1, 3], i.e. first-half and second-half rows interleaved.
        let hf: Vec<f32> = (0..8).map(|r| r as f32).collect();
        let gguf = permute_rope_rows(&hf, 8, 1, 2).unwrap();
        assert_eq!(gguf, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(unpermute_rope_rows(&gguf, 8, 1, 2).unwrap(), hf);
    }

    #[test]
    fn unpermute_inverts_permute_on_wider_heads() {
        // 3 heads of head_dim 6, 2 columns.
        let hf: Vec<f32> = (0..36).map(|v| v as f32).collect();
        let gguf = permute_rope_rows(&hf, 18, 2, 3).unwrap();
        // Head 1, GGUF row 6 + 2*1 + 1 = 9 holds HF row 6 + 3 + 1 = 10.
        assert_eq!(&gguf[18..20], &[20.0, 21.0]);
        assert_eq!(unpermute_rope_rows(&gguf, 18, 2, 3).unwrap(), hf);
        assert!(unpermute_rope_rows(&gguf, 18, 2, 4).is_err());
        assert!(unpermute_rope_rows(&gguf, 18, 2, 6).is_err());
        assert!(unpermute_rope_rows(&gguf[1..], 18, 2, 3).is_err());
    }

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
