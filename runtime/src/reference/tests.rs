//! The reference against hand-computed values, small models and its own
//! invariants.

use std::collections::HashMap;

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
