//! llama.cpp's per-head row interleaving of the q and k projections in
//! GGUF files, and its inverse (see `gguf::layout` for where it applies):
//!
//! ```text
//! permute(w, n) = w.reshape(n, 2, rows/n/2, K).swapaxes(1, 2).reshape(rows, K)
//! ```
//!
//! Reading GGUF, the tensors undo it, so the model uses HF's rotate-half
//! RoPE.

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
}
