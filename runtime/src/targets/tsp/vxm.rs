//! What the VXM's row instructions compute, on rows gathered from their
//! lane-wide vectors: each token's row is `ceil(width / lanes)` f32
//! vectors, the tail lanes zero. Elementwise steps are f32; the sums of a
//! norm and of attention's dot products and softmax are f64, as the
//! reference forward pass keeps them (a VXM reduction across lanes is a
//! tree of adds whose order the hardware fixes; f64 keeps every order
//! within f32 rounding of each other).

use q35_format::tsp::RowFunction;

/// Tokens' rows (`width` wide) from their vectors (`tiles` per token).
pub fn rows(vectors: &[&[f32]], width: usize, lanes: usize) -> Result<Vec<Vec<f32>>, String> {
    let tiles = width.div_ceil(lanes);
    if tiles == 0 || vectors.len() % tiles != 0 {
        return Err(format!("{} vectors are not whole rows of {width} ({tiles} vectors each)", vectors.len()));
    }
    Ok(vectors
        .chunks(tiles)
        .map(|row| {
            let mut r: Vec<f32> = row.iter().flat_map(|v| v.iter().copied()).collect();
            r.truncate(width);
            r
        })
        .collect())
}

/// Rows back into vectors, zero past `width`.
pub fn vectors(rows: &[Vec<f32>], lanes: usize) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for row in rows {
        for chunk in row.chunks(lanes) {
            let mut v = chunk.to_vec();
            v.resize(lanes, 0.0);
            out.push(v);
        }
    }
    out
}

/// RMSNorm, as the reference computes it.
pub use crate::reference::rms_norm as norm;

/// Rotate-half RoPE of every head of `x` at `pos`, as the reference.
pub fn rope(x: &mut [f32], head_dim: usize, pos: usize, theta: f64) {
    for head in x.chunks_mut(head_dim) {
        crate::reference::rope(head, pos, theta);
    }
}

/// A row function of `a` (and `b`).
pub fn elementwise(function: RowFunction, a: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let silu = |x: f32| x / (1.0 + (-x).exp());
    match (function, b) {
        (RowFunction::Silu, _) => a.iter().map(|&x| silu(x)).collect(),
        (RowFunction::Copy, _) => a.to_vec(),
        (RowFunction::Add, Some(b)) => a.iter().zip(b).map(|(x, y)| x + y).collect(),
        (RowFunction::Mul, Some(b)) => a.iter().zip(b).map(|(x, y)| x * y).collect(),
        (RowFunction::SwiGlu, Some(b)) => a.iter().zip(b).map(|(&x, &y)| silu(x) * y).collect(),
        _ => unreachable!("checked by the caller: two-row functions get two rows"),
    }
}

/// Causal attention of one token's queries `q` (`heads · head_dim`) over
/// cached rows `0..=pos` of `k` and `v` (`kv_heads · head_dim` each):
/// scores, softmax and the weighted sum in f64.
pub fn attention(q: &[f32], k: &[Vec<f32>], v: &[Vec<f32>], pos: usize, heads: usize, kv_heads: usize, head_dim: usize) -> Vec<f32> {
    let group = heads / kv_heads;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut out = vec![0f32; heads * head_dim];
    for h in 0..heads {
        let kv = (h / group) * head_dim;
        let q_h = &q[h * head_dim..(h + 1) * head_dim];
        let scores: Vec<f64> = (0..=pos)
            .map(|p| q_h.iter().zip(&k[p][kv..kv + head_dim]).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>() * scale)
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        for d in 0..head_dim {
            let sum: f64 = (0..=pos).map(|p| weights[p] * f64::from(v[p][kv + d])).sum();
            out[h * head_dim + d] = (sum / total) as f32;
        }
    }
    out
}
