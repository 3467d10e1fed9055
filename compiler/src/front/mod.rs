//! Front end: reads a model — Hugging Face `model.safetensors` (single or
//! sharded) with `config.json` and optional `tokenizer.json`, or a GGUF
//! file — into a validated [`Model`]: its configuration, its tensors by
//! Hugging Face name (memory-mapped, converted to f32 on demand) and its
//! tokenizer.
//!
//! Every input is untrusted: a bad file gives one [`Error`] naming the
//! file, tensor or field and what was expected, never a panic. The front
//! end knows nothing of graphs, quantization or MLIR.

mod atomic;
pub mod config;
pub mod convert;
pub mod dtype;
mod error;
pub mod gguf;
pub mod llama;
pub mod rope_rows;
pub mod safetensors;
pub mod tensors;
pub mod testmodel;

pub use config::ModelConfig;
pub use dtype::DType;
pub use error::{Error, Result};
pub use tensors::{Tensor, Tensors};

use crate::front::config::HfConfig;
use error::name_list;
use std::path::{Path, PathBuf};

/// File names of the Hugging Face layout.
pub const SAFETENSORS_FILE: &str = "model.safetensors";
pub const SAFETENSORS_INDEX_FILE: &str = "model.safetensors.index.json";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// A model read from disk.
#[derive(Debug)]
pub struct Model {
    pub config: ModelConfig,
    pub tensors: Tensors,
    /// The Hugging Face `tokenizer.json` text: read beside a safetensors
    /// model, or made from a GGUF's tokenizer metadata.
    pub tokenizer_json: Option<String>,
    /// Its chat template: `tokenizer_config.json`'s beside a safetensors
    /// model, or a GGUF's `tokenizer.chat_template`.
    pub chat_template: Option<q35_rt::chat::TemplateSpec>,
    /// The file the model was read from (for a sharded model, the index).
    pub source: PathBuf,
}

/// Reads and validates a model: a `model.safetensors` file, a sharded
/// checkpoint's `model.safetensors.index.json`, a directory holding either,
/// or a `.gguf` file (recognised by its magic number).
pub fn load(path: &Path) -> Result<Model> {
    let _span = tracing::info_span!("front::load", path = %path.display()).entered();
    let model = if path.is_dir() {
        load_dir(path)?
    } else if is_gguf(path)? {
        gguf::read_model(path)?.0
    } else if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(".index.json"))
    {
        load_hf(path, true)?
    } else {
        load_hf(path, false)?
    };
    model.validate()?;
    tracing::info!(
        tensors = model.tensors.len(),
        layers = model.config.num_hidden_layers,
        hidden = model.config.hidden_size,
        "loaded {}",
        model.source.display()
    );
    Ok(model)
}

/// Every file [`load`] may read for `path`, so that a command can refuse
/// to write its output over one of them. Lists what exists, without
/// reading anything.
pub fn input_files(path: &Path) -> Vec<PathBuf> {
    let (dir, mut files) = if path.is_dir() {
        (path.to_path_buf(), Vec::new())
    } else {
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        if is_gguf(path).unwrap_or(false) {
            return vec![path.to_path_buf()];
        }
        (dir, vec![path.to_path_buf()])
    };
    for name in [SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, CONFIG_FILE, TOKENIZER_FILE] {
        files.push(dir.join(name));
    }
    // Shards of a sharded checkpoint.
    if let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { &dir }) {
        files.extend(
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors")),
        );
    }
    files.retain(|f| f.is_file());
    files
}

fn load_dir(dir: &Path) -> Result<Model> {
    let single = dir.join(SAFETENSORS_FILE);
    let index = dir.join(SAFETENSORS_INDEX_FILE);
    if single.is_file() {
        return load_hf(&single, false);
    }
    if index.is_file() {
        return load_hf(&index, true);
    }
    let ggufs: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".gguf"))
        .collect();
    let hint = if ggufs.is_empty() {
        String::new()
    } else {
        format!(
            "; to read a GGUF file, pass the file itself ({})",
            name_list(&ggufs)
        )
    };
    Err(Error::malformed(
        dir,
        format!("directory has neither {SAFETENSORS_FILE} nor {SAFETENSORS_INDEX_FILE}{hint}"),
    ))
}

/// GGUF by magic number, or by extension so that a broken `.gguf` file
/// gets the GGUF reader's error rather than the safetensors one.
fn is_gguf(path: &Path) -> Result<bool> {
    use std::io::Read;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return Ok(true);
    }
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let read = file.read(&mut magic).map_err(|e| Error::io(path, e))?;
    Ok(read == 4 && magic == gguf::MAGIC)
}

/// A Hugging Face model: safetensors (or its shard index) with config.json
/// and, if present, tokenizer.json beside it.
fn load_hf(path: &Path, sharded: bool) -> Result<Model> {
    let dir = path.parent().unwrap_or(Path::new(""));
    let config = ModelConfig::from_hf_file(&dir.join(CONFIG_FILE))?;
    let mut tensors = Tensors::new();
    if sharded {
        safetensors::read_sharded(path, &mut tensors)?;
    } else {
        safetensors::read_file(path, &mut tensors)?;
    }
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    let tokenizer_json = match std::fs::read_to_string(&tokenizer_path) {
        // The artifact carries the text without a byte order mark, so
        // every reader of it sees plain JSON.
        Ok(text) => Some(match text.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_string(),
            None => text,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(tokenizer_path, e)),
    };
    if let Some(json) = &tokenizer_json {
        check_tokenizer(json, &tokenizer_path.display().to_string(), &config)?;
    }
    let config_path = dir.join(TOKENIZER_CONFIG_FILE);
    let chat_template = match std::fs::read_to_string(&config_path) {
        Ok(text) => q35_rt::chat::TemplateSpec::from_tokenizer_config(text.trim_start_matches('\u{feff}'), &config_path.display().to_string())
            .map_err(|message| Error::malformed(&config_path, message.split_once(": ").map_or(message.clone(), |(_, m)| m.to_string())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(config_path, e)),
    };
    Ok(Model {
        config,
        tensors,
        tokenizer_json,
        chat_template,
        source: path.to_path_buf(),
    })
}

/// Loads `json` with the runtime's own tokenizer loader, so that a
/// tokenizer `q35-rt` would refuse is refused when compiling, and checks
/// its ids against the model's vocabulary (`origin` names it in messages).
/// A tokenizer with fewer ids than `vocab_size` is accepted: models pad
/// their vocabulary, and the runtime refuses an id the tokenizer lacks
/// when it decodes one.
pub(crate) fn check_tokenizer(json: &str, origin: &str, config: &ModelConfig) -> Result<()> {
    let tokenizer = q35_rt::tokenizer::Tokenizer::from_json_str(json, origin)?;
    tokenizer.check_model_vocab(config.vocab_size, origin)?;
    Ok(())
}

impl Model {
    /// Checks the configuration and that the tensors are exactly the
    /// architecture's set, each with its exact shape.
    pub fn validate(&self) -> Result<()> {
        self.config.check_supported().map_err(|e| e.at(&self.source))?;
        let expected = llama::expected_tensors(&self.config);
        let missing: Vec<String> = expected
            .iter()
            .filter(|t| self.tensors.get(&t.name).is_none())
            .map(|t| t.name.clone())
            .collect();
        let known: std::collections::HashSet<&str> =
            expected.iter().map(|t| t.name.as_str()).collect();
        let unexpected: Vec<String> = self
            .tensors
            .names()
            .filter(|name| !known.contains(name) && !llama::is_ignored(name))
            .map(str::to_string)
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            let head = "lm_head.weight".to_string();
            let hint = if self.config.tie_word_embeddings && unexpected.contains(&head) {
                Some("the config ties the word embeddings, so lm_head.weight should not be there")
            } else if !self.config.tie_word_embeddings && missing == [head] {
                Some("if the output projection is the token embedding, set tie_word_embeddings")
            } else {
                None
            };
            return Err(Error::TensorSet {
                path: self.source.clone(),
                architecture: self.config.architecture.clone(),
                missing: missing.into(),
                unexpected: unexpected.into(),
                hint,
            });
        }
        for t in &expected {
            let Some(found) = self.tensors.get(&t.name) else {
                continue;
            };
            if found.shape() != t.shape.as_slice() {
                return Err(Error::Shape {
                    path: found.path().to_path_buf(),
                    tensor: t.name.clone(),
                    stored_as: Some(found.stored_name())
                        .filter(|s| *s != t.name)
                        .map(Into::into),
                    expected: t.shape.as_slice().into(),
                    found: found.shape().into(),
                    meaning: t.meaning,
                });
            }
        }
        Ok(())
    }

    /// A tensor as f32 in HF layout (shorthand for `tensors.to_f32`).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.tensors.to_f32(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::testmodel::{tiny_tensors, write_tiny_model, TinySpec};

    fn tiny(spec: TinySpec) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_tiny_model(dir.path(), spec).unwrap();
        (dir, path)
    }

    /// Rewrites the tiny model's safetensors with `edit` applied to its
    /// tensor list.
    fn rewrite(
        path: &Path,
        spec: &TinySpec,
        edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>),
    ) {
        let mut tensors = tiny_tensors(spec);
        edit(&mut tensors);
        let specs: Vec<_> = tensors
            .iter()
            .map(|(name, shape, _)| safetensors::TensorSpec {
                name: name.clone(),
                shape: shape.clone(),
                dtype: DType::F32,
            })
            .collect();
        safetensors::write(path, &specs, |i| Ok(dtype::f32_to_le_bytes(&tensors[i].2)))
            .unwrap()
            .commit()
            .unwrap();
    }

    #[test]
    fn loads_the_tiny_model_from_file_and_directory() {
        let spec = TinySpec::default();
        let (dir, path) = tiny(spec.clone());
        for source in [path.as_path(), dir.path()] {
            let model = load(source).unwrap();
            assert_eq!(model.source, path);
            assert_eq!(model.config, spec.config());
            assert_eq!(
                model.tensors.len(),
                llama::expected_tensors(&model.config).len()
            );
            assert!(model.tokenizer_json.as_deref().unwrap().contains("\"BPE\""));
            for (name, shape, values) in tiny_tensors(&spec) {
                let t = model.tensors.tensor(&name).unwrap();
                assert_eq!((t.shape(), t.dtype()), (shape.as_slice(), DType::F32));
                assert_eq!(model.tensor_f32(&name).unwrap(), values);
            }
        }
    }

    #[test]
    fn tied_model_has_no_lm_head() {
        let spec = TinySpec {
            tie_word_embeddings: true,
            ..TinySpec::default()
        };
        let (_dir, path) = tiny(spec);
        let model = load(&path).unwrap();
        assert!(model.tensors.get("lm_head.weight").is_none());
        let e = model
            .tensors
            .to_f32("lm_head.weight")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("{}: no tensor named `lm_head.weight`", path.display())
        );
    }

    #[test]
    fn missing_tensor_is_named() {
        let spec = TinySpec::default();
        let (_dir, path) = tiny(spec.clone());
        rewrite(&path, &spec, |t| {
            t.retain(|(n, _, _)| n != "model.layers.1.mlp.up_proj.weight")
        });
        let e = load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: tensors do not match LlamaForCausalLM: missing 1 tensor(s): `model.layers.1.mlp.up_proj.weight`",
                path.display()
            )
        );
        rewrite(&path, &spec, |t| {
            t.retain(|(n, _, _)| n != "lm_head.weight")
        });
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "(if the output projection is the token embedding, set tie_word_embeddings)"
            ),
            "{e}"
        );
    }

    #[test]
    fn extra_tensor_is_named_and_inv_freq_ignored() {
        let spec = TinySpec::default();
        let (_dir, path) = tiny(spec.clone());
        rewrite(&path, &spec, |t| {
            t.push((
                "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
                vec![8],
                vec![1.0; 8],
            ));
        });
        load(&path).unwrap();
        rewrite(&path, &spec, |t| {
            t.push((
                "model.layers.0.self_attn.q_proj.bias".into(),
                vec![64],
                vec![0.0; 64],
            ));
            t.push((
                "model.layers.2.input_layernorm.weight".into(),
                vec![64],
                vec![1.0; 64],
            ));
        });
        let e = load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: tensors do not match LlamaForCausalLM: unexpected 2 tensor(s): \
                 `model.layers.0.self_attn.q_proj.bias`, `model.layers.2.input_layernorm.weight`",
                path.display()
            )
        );
    }

    #[test]
    fn many_missing_tensors_are_summarised() {
        let spec = TinySpec::default();
        let (_dir, path) = tiny(spec.clone());
        rewrite(&path, &spec, |t| {
            for (name, _, _) in t.iter_mut() {
                *name = name.replace("model.", "transformer.");
            }
        });
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.contains("missing 20 tensor(s): `model.embed_tokens.weight`, "),
            "{e}"
        );
        assert!(
            e.contains(
                " and 12 more; unexpected 20 tensor(s): `transformer.embed_tokens.weight`, "
            ),
            "{e}"
        );
    }

    #[test]
    fn wrong_shape_is_named_with_its_meaning() {
        let spec = TinySpec::default();
        let (_dir, path) = tiny(spec.clone());
        rewrite(&path, &spec, |t| {
            let k = t
                .iter_mut()
                .find(|(n, _, _)| n == "model.layers.0.self_attn.k_proj.weight")
                .unwrap();
            k.1 = vec![64, 64];
            k.2 = vec![0.0; 64 * 64];
        });
        let e = load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: tensor `model.layers.0.self_attn.k_proj.weight` has shape [64, 64], expected [32, 64] = \
                 [num_key_value_heads*head_dim, hidden_size]",
                path.display()
            )
        );
    }

    #[test]
    fn missing_config_and_empty_directory() {
        let (dir, path) = tiny(TinySpec::default());
        std::fs::remove_file(dir.path().join(CONFIG_FILE)).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.ends_with("config.json: not found; a safetensors model needs its config.json in the same directory"), "{e}");

        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join("m.gguf"), b"GGUF").unwrap();
        let e = load(empty.path()).unwrap_err().to_string();
        assert!(
            e.ends_with("directory has neither model.safetensors nor model.safetensors.index.json; to read a GGUF file, pass the file itself (`m.gguf`)"),
            "{e}"
        );
        let e = load(&empty.path().join("m.gguf")).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "m.gguf: truncated: the version at byte 4 needs 4 bytes, but the file is 4 bytes"
            ),
            "{e}"
        );
        std::fs::write(empty.path().join("empty.gguf"), b"").unwrap();
        let e = load(&empty.path().join("empty.gguf"))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("empty.gguf: truncated: the magic number at byte 0 needs 4 bytes, but the file is 0 bytes"), "{e}");
        let e = load(&empty.path().join("nothing.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nothing.safetensors: No such file or directory"),
            "{e}"
        );
    }

    #[test]
    fn sharded_model_loads_from_its_directory() {
        let spec = TinySpec::default();
        let tensors = tiny_tensors(&spec);
        let (dir, path) = tiny(spec.clone());
        std::fs::remove_file(&path).unwrap();
        let (first, second) = tensors.split_at(tensors.len() / 2);
        let mut weight_map = serde_json::Map::new();
        for (i, part) in [first, second].into_iter().enumerate() {
            let file = format!("model-0000{}-of-00002.safetensors", i + 1);
            let specs: Vec<_> = part
                .iter()
                .map(|(name, shape, _)| {
                    weight_map.insert(name.clone(), file.clone().into());
                    safetensors::TensorSpec {
                        name: name.clone(),
                        shape: shape.clone(),
                        dtype: DType::F32,
                    }
                })
                .collect();
            safetensors::write(&dir.path().join(&file), &specs, |i| {
                Ok(dtype::f32_to_le_bytes(&part[i].2))
            })
            .unwrap()
            .commit()
            .unwrap();
        }
        let index = dir.path().join(SAFETENSORS_INDEX_FILE);
        std::fs::write(
            &index,
            serde_json::json!({ "metadata": {}, "weight_map": weight_map }).to_string(),
        )
        .unwrap();
        let model = load(dir.path()).unwrap();
        assert_eq!(model.source, index);
        assert_eq!(load(&index).unwrap().source, index);
        assert_eq!(model.tensors.files().count(), 2);
        for (name, _, values) in &tensors {
            assert_eq!(&model.tensor_f32(name).unwrap(), values);
        }
    }
}
