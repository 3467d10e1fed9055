//! The arithmetic of the reference: every dot product, norm and softmax
//! accumulated in f64 (see the parent module for why).

use q35_format::ModelConfig;

use super::LayerCache;

/// Grouped-query causal attention of one position's queries `q` over the
/// first `len` cached positions. Query head `h` reads kv head
/// `h / (heads / kv_heads)`.
pub(super) fn attention(c: &ModelConfig, q: &[f32], cache: &LayerCache, len: usize) -> Vec<f32> {
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

pub(super) fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// `W·x` for `W` of shape `[W.len() / x.len(), x.len()]`, on the int8
/// activations' values when `int8` gives their group.
pub(super) fn matvec(w: &[f32], x: &[f32], int8: Option<usize>) -> Vec<f32> {
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

pub(super) fn add_assign(x: &mut [f32], y: &[f32]) {
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

