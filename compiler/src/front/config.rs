//! The model configuration of a Llama-family decoder: read from a Hugging
//! Face `config.json` (or built from GGUF metadata by the GGUF reader),
//! checked, and written back as an HF-style `config.json`.
//!
//! Only what the compiler uses is kept. Settings that would change the
//! model's math but that q35 does not implement (RoPE scaling, biases,
//! another activation, experts) are rejected rather than ignored, so a
//! model never compiles into something that computes differently.

use super::error::{name_list, quote, Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// The HF class name of the one architecture q35 supports.
pub const LLAMA_ARCHITECTURE: &str = "LlamaForCausalLM";
/// Its HF `model_type`.
pub const LLAMA_MODEL_TYPE: &str = "llama";
const SUPPORTED: &str = "LlamaForCausalLM (model_type `llama`)";
/// Far above any real model (the largest Llamas have about 130 layers);
/// bounds the work a lying config can ask for.
const MAX_LAYERS: usize = 10_000;
/// The widest hidden, MLP, query or key/value width accepted: 2^20, 64
/// times the largest real model's (Llama 3.1 405B: hidden 16384, MLP
/// 53248); like [`MAX_LAYERS`], a bound on what a lying config can ask for.
pub const MAX_WIDTH: usize = 1 << 20;
/// Token ids and positions reach the kernels as i32, so a vocabulary and a
/// context hold fewer than 2^31 entries.
pub const MAX_I32_COUNT: usize = i32::MAX as usize;

/// Hyper-parameters of a Llama-family decoder: the one configuration type
/// the front end, the compiler and the runtime share.
pub use q35_format::ModelConfig;

/// A configuration value that cannot work, with the HF field it is in.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct InvalidConfig {
    pub field: &'static str,
    pub message: String,
}

impl InvalidConfig {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        InvalidConfig {
            field,
            message: message.into(),
        }
    }

    /// The same problem as a front-end error naming `path`.
    pub fn at(self, path: &Path) -> Error {
        Error::config(path, self.field, self.message)
    }
}

/// A [`ModelConfig`] read from, checked as and written as a Hugging Face
/// `config.json`.
pub trait HfConfig: Sized {
    /// Reads and validates a Hugging Face `config.json`.
    fn from_hf_file(path: &Path) -> Result<Self>;
    /// Parses and validates the text of a Hugging Face `config.json`;
    /// `path` is only used in error messages.
    fn from_hf_json(text: &str, path: &Path) -> Result<Self>;
    /// Checks that the configuration describes a model q35 can build.
    fn check_supported(&self) -> Result<(), InvalidConfig>;
    /// The configuration as a Hugging Face `config.json` (pretty-printed),
    /// loadable by `transformers` and by [`HfConfig::from_hf_json`], saying
    /// the checkpoint's dtype if `torch_dtype` is given.
    fn to_hf_json(&self, torch_dtype: Option<&str>) -> String;
}

impl HfConfig for ModelConfig {
    fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::malformed(
                    path,
                    "not found; a safetensors model needs its config.json in the same directory",
                )
            } else {
                Error::io(path, e)
            }
        })?;
        Self::from_hf_json(&text, path)
    }

    fn from_hf_json(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::malformed(path, format!("invalid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::malformed(
                path,
                "expected a JSON object at the top level",
            ));
        };
        let fields = Fields { path, map: &map };
        fields.check_architecture()?;
        fields.check_unsupported_features()?;

        let hidden_size: usize = fields.required("hidden_size", "a positive integer")?;
        let num_attention_heads: usize =
            fields.required("num_attention_heads", "a positive integer")?;
        let head_dim = match fields.optional::<usize>("head_dim", "a positive integer")? {
            Some(head_dim) => head_dim,
            None => {
                if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
                    return Err(Error::config(
                        path,
                        "hidden_size",
                        format!(
                            "hidden_size {hidden_size} is not divisible by num_attention_heads \
                             {num_attention_heads}, and there is no head_dim to say the head width"
                        ),
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        let bos_ids = fields.token_ids("bos_token_id")?;
        let eos_ids = fields.token_ids("eos_token_id")?;
        let config = ModelConfig {
            architecture: LLAMA_ARCHITECTURE.to_string(),
            vocab_size: fields.required("vocab_size", "a positive integer")?,
            hidden_size,
            intermediate_size: fields.required("intermediate_size", "a positive integer")?,
            num_hidden_layers: fields.required("num_hidden_layers", "a positive integer")?,
            num_attention_heads,
            num_key_value_heads: fields
                .optional("num_key_value_heads", "a positive integer")?
                .unwrap_or(num_attention_heads),
            head_dim,
            rms_norm_eps: fields.required("rms_norm_eps", "a positive number")?,
            rope_theta: fields
                .optional("rope_theta", "a positive number")?
                .unwrap_or(10000.0),
            max_position_embeddings: fields
                .required("max_position_embeddings", "a positive integer")?,
            tie_word_embeddings: fields
                .optional("tie_word_embeddings", "true or false")?
                .unwrap_or(false),
            bos_token_id: bos_ids.first().copied(),
            eos_token_id: eos_ids.first().copied(),
        };
        config.check_supported().map_err(|e| e.at(path))?;
        // validate() checks the ids kept; a list's other ids must be real
        // tokens too, or the list is not what the model was trained with.
        for (field, ids) in [("bos_token_id", &bos_ids), ("eos_token_id", &eos_ids)] {
            if let Some((i, id)) = ids
                .iter()
                .enumerate()
                .find(|(_, &id)| id as usize >= config.vocab_size)
            {
                return Err(Error::config(
                    path,
                    field,
                    format!(
                        "token id {id} (item {} of the {} listed) is outside the vocabulary (vocab_size {})",
                        i + 1,
                        ids.len(),
                        config.vocab_size
                    ),
                ));
            }
        }
        Ok(config)
    }

    fn check_supported(&self) -> Result<(), InvalidConfig> {
        if self.architecture != LLAMA_ARCHITECTURE {
            return Err(InvalidConfig::new(
                "architectures",
                format!(
                    "unsupported architecture `{}`; q35 supports {SUPPORTED}",
                    self.architecture
                ),
            ));
        }
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(InvalidConfig::new(field, "must be positive, found 0"));
            }
        }
        for (field, value, meaning) in [
            ("hidden_size", self.hidden_size, "hidden_size"),
            (
                "intermediate_size",
                self.intermediate_size,
                "intermediate_size",
            ),
            (
                "num_attention_heads",
                self.num_attention_heads.saturating_mul(self.head_dim),
                "the query width num_attention_heads*head_dim",
            ),
            (
                "num_key_value_heads",
                self.num_key_value_heads.saturating_mul(self.head_dim),
                "the key/value width num_key_value_heads*head_dim",
            ),
        ] {
            if value > MAX_WIDTH {
                return Err(InvalidConfig::new(
                    field,
                    format!(
                        "{meaning} {value} is implausible (the limit is 2^20 = {MAX_WIDTH}, \
                         64 times the widest real model's)"
                    ),
                ));
            }
        }
        for (field, value, why) in [
            ("vocab_size", self.vocab_size, "token ids"),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                "positions",
            ),
        ] {
            if value > MAX_I32_COUNT {
                return Err(InvalidConfig::new(
                    field,
                    format!(
                        "{value} is above 2^31 - 1 = {MAX_I32_COUNT}: {why} reach the kernels as i32"
                    ),
                ));
            }
        }
        if self.num_hidden_layers > MAX_LAYERS {
            return Err(InvalidConfig::new(
                "num_hidden_layers",
                format!(
                    "{} layers is implausible (the limit is {MAX_LAYERS})",
                    self.num_hidden_layers
                ),
            ));
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(InvalidConfig::new(
                "num_key_value_heads",
                format!(
                    "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                    self.num_attention_heads, self.num_key_value_heads
                ),
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(InvalidConfig::new(
                "head_dim",
                format!(
                    "must be even (RoPE rotates pairs of dimensions), found {}",
                    self.head_dim
                ),
            ));
        }
        // Every weight's element count must fit in memory arithmetic.
        let fits = [
            (self.num_attention_heads, self.head_dim),
            (self.vocab_size, self.hidden_size),
            (self.intermediate_size, self.hidden_size),
        ]
        .iter()
        .all(|&(a, b)| a.checked_mul(b).and_then(|n| n.checked_mul(4)).is_some());
        if !fits {
            return Err(InvalidConfig::new(
                "hidden_size",
                "the weight sizes overflow",
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0 && self.rms_norm_eps < 1.0) {
            return Err(InvalidConfig::new(
                "rms_norm_eps",
                format!(
                    "must be a number between 0 and 1, exclusive (it keeps RMSNorm's 1/sqrt(mean(x²) + eps) \
                     finite without swamping the activations; models use 1e-5 or 1e-6), found {}",
                    number(self.rms_norm_eps)
                ),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(InvalidConfig::new(
                "rope_theta",
                format!(
                    "must be a finite number above 1 (RoPE's frequencies theta^(-2i/head_dim) must \
                     decrease along the head; models use 10000 to 1000000), found {}",
                    number(self.rope_theta)
                ),
            ));
        }
        for (field, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
        ] {
            if let Some(id) = id {
                if id as usize >= self.vocab_size {
                    return Err(InvalidConfig::new(
                        field,
                        format!(
                            "token id {id} is outside the vocabulary (vocab_size {})",
                            self.vocab_size
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn to_hf_json(&self, torch_dtype: Option<&str>) -> String {
        #[derive(Serialize)]
        struct HfConfig<'a> {
            architectures: [&'a str; 1],
            model_type: &'static str,
            vocab_size: usize,
            hidden_size: usize,
            intermediate_size: usize,
            num_hidden_layers: usize,
            num_attention_heads: usize,
            num_key_value_heads: usize,
            head_dim: usize,
            hidden_act: &'static str,
            rms_norm_eps: f64,
            rope_theta: f64,
            rope_scaling: Option<()>,
            attention_bias: bool,
            mlp_bias: bool,
            max_position_embeddings: usize,
            tie_word_embeddings: bool,
            bos_token_id: Option<u32>,
            eos_token_id: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            torch_dtype: Option<&'a str>,
        }
        let hf = HfConfig {
            architectures: [&self.architecture],
            model_type: LLAMA_MODEL_TYPE,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            hidden_act: "silu",
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            rope_scaling: None,
            attention_bias: false,
            mlp_bias: false,
            max_position_embeddings: self.max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings,
            bos_token_id: self.bos_token_id,
            eos_token_id: self.eos_token_id,
            torch_dtype,
        };
        // Serializing plain numbers, strings and options cannot fail.
        let mut text = serde_json::to_string_pretty(&hf).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// Typed access to config.json's fields, each error naming the field.
struct Fields<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    /// A field's value; absent and `null` both read as `None`.
    fn optional<T: DeserializeOwned>(
        &self,
        field: &'static str,
        expected: &str,
    ) -> Result<Option<T>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => T::deserialize(value).map(Some).map_err(|_| {
                Error::config(
                    self.path,
                    field,
                    format!("expected {expected}, found {}", short(value)),
                )
            }),
        }
    }

    fn required<T: DeserializeOwned>(&self, field: &'static str, expected: &str) -> Result<T> {
        self.optional(field, expected)?.ok_or_else(|| {
            Error::config(
                self.path,
                field,
                format!("missing; a Llama config needs it ({expected})"),
            )
        })
    }

    /// A token id or a list of them (Llama 3 lists several end-of-sequence
    /// ids), as a list; absent is empty. q35 keeps the first.
    fn token_ids(&self, field: &'static str) -> Result<Vec<u32>> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Ids {
            One(u32),
            Many(Vec<u32>),
        }
        Ok(
            match self.optional::<Ids>(field, "a token id or a list of token ids")? {
                None => Vec::new(),
                Some(Ids::One(id)) => vec![id],
                Some(Ids::Many(ids)) => {
                    if ids.len() > 1 {
                        tracing::warn!(
                            "{}: `{field}` lists {} ids; q35 keeps the first, {}",
                            self.path.display(),
                            ids.len(),
                            ids[0]
                        );
                    }
                    ids
                }
            },
        )
    }

    fn check_architecture(&self) -> Result<()> {
        let architectures: Option<Vec<String>> =
            self.optional("architectures", "a list of class names")?;
        let model_type: Option<String> = self.optional("model_type", "a string")?;
        let found = match (&architectures, &model_type) {
            (Some(list), _) if list.iter().any(|a| a == LLAMA_ARCHITECTURE) => return Ok(()),
            (None, Some(t)) if t == LLAMA_MODEL_TYPE => return Ok(()),
            (None, None) => {
                return Err(Error::config(
                    self.path,
                    "architectures",
                    format!("missing, and so is `model_type`; q35 supports {SUPPORTED}"),
                ))
            }
            (Some(list), _) => {
                if list.is_empty() {
                    "none (`architectures` is empty)".to_string()
                } else {
                    name_list(list)
                }
            }
            (None, Some(t)) => format!("model_type {}", quote(t)),
        };
        Err(Error::UnsupportedArchitecture {
            path: self.path.to_path_buf(),
            found,
            supported: SUPPORTED,
        })
    }

    /// Llama options that change the computation and that q35 does not
    /// implement.
    fn check_unsupported_features(&self) -> Result<()> {
        if let Some(act) = self.optional::<String>("hidden_act", "a string")? {
            if act != "silu" {
                return Err(Error::config(
                    self.path,
                    "hidden_act",
                    format!(
                        "{} is not supported; q35's Llama MLP uses silu",
                        quote(&act)
                    ),
                ));
            }
        }
        for field in ["attention_bias", "mlp_bias"] {
            if self.optional::<bool>(field, "true or false")? == Some(true) {
                return Err(Error::config(
                    self.path,
                    field,
                    "biases are not supported; q35's Llama has none",
                ));
            }
        }
        if let Some(scaling) = self.map.get("rope_scaling").filter(|v| !v.is_null()) {
            return Err(Error::config(
                self.path,
                "rope_scaling",
                format!(
                    "RoPE scaling ({}) is not supported; q35 implements plain RoPE",
                    short(scaling)
                ),
            ));
        }
        Ok(())
    }
}

/// A number for a message: `1e-30`, not thirty zeros.
fn number(value: f64) -> String {
    if value != 0.0 && value.is_finite() && !(1e-3..1e16).contains(&value.abs()) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

/// A JSON value shortened for a message.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M's config.json, abridged.
    const SMOLLM2: &str = r#"{
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 576, "intermediate_size": 1536, "max_position_embeddings": 8192,
        "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
        "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 100000,
        "tie_word_embeddings": true, "torch_dtype": "bfloat16", "vocab_size": 49152
    }"#;

    fn parse(text: &str) -> Result<ModelConfig> {
        ModelConfig::from_hf_json(text, Path::new("/models/x/config.json"))
    }

    fn with(edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut map: Map<String, Value> = serde_json::from_str(SMOLLM2).unwrap();
        edit(&mut map);
        Value::Object(map).to_string()
    }

    #[test]
    fn parses_smollm2_and_applies_defaults() {
        let c = parse(SMOLLM2).unwrap();
        assert_eq!(
            (c.hidden_size, c.head_dim, c.num_key_value_heads),
            (576, 64, 3)
        );
        assert_eq!((c.rope_theta, c.rms_norm_eps), (100000.0, 1e-5));
        assert!(c.tie_word_embeddings);

        let c = parse(&with(|m| {
            m.remove("num_key_value_heads");
            m.remove("rope_theta");
            m.remove("tie_word_embeddings");
            m.insert("eos_token_id".into(), serde_json::json!([2, 0]));
        }))
        .unwrap();
        assert_eq!(
            (c.num_key_value_heads, c.rope_theta, c.tie_word_embeddings),
            (9, 10000.0, false)
        );
        assert_eq!(c.eos_token_id, Some(2));
    }

    #[test]
    fn hf_json_round_trips() {
        let c = parse(SMOLLM2).unwrap();
        assert_eq!(parse(&c.to_hf_json(None)).unwrap(), c);
        let back: ModelConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn missing_field_names_file_and_field() {
        let e = parse(&with(|m| {
            m.remove("hidden_size");
        }))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/models/x/config.json: `hidden_size`: missing; a Llama config needs it (a positive integer)"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = parse(&with(|m| {
            m.insert("num_hidden_layers".into(), "30".into());
        }))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/models/x/config.json: `num_hidden_layers`: expected a positive integer, found \"30\""
        );
    }

    #[test]
    fn hidden_not_divisible_by_heads() {
        let e = parse(&with(|m| {
            m.insert("num_attention_heads".into(), 7.into());
            m.insert("num_key_value_heads".into(), 7.into());
        }))
        .unwrap_err();
        assert!(
            e.to_string().contains(
                "`hidden_size`: hidden_size 576 is not divisible by num_attention_heads 7"
            ),
            "{e}"
        );
    }

    #[test]
    fn unsupported_architecture_is_named() {
        let e = parse(&with(|m| {
            m.insert(
                "architectures".into(),
                serde_json::json!(["MistralForCausalLM"]),
            );
            m.insert("model_type".into(), "mistral".into());
        }))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/models/x/config.json: unsupported architecture `MistralForCausalLM`; \
             q35 supports LlamaForCausalLM (model_type `llama`)"
        );
        let e = parse(&with(|m| {
            m.remove("architectures");
            m.insert("model_type".into(), "gpt2".into());
        }))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("unsupported architecture model_type `gpt2`"),
            "{e}"
        );
        assert!(parse(&with(|m| {
            m.remove("architectures");
        }))
        .is_ok());
    }

    #[test]
    fn value_errors() {
        let cases: [(&str, Value, &str); 18] = [
            ("num_hidden_layers", 0.into(), "`num_hidden_layers`: must be positive, found 0"),
            (
                "num_key_value_heads",
                2.into(),
                "`num_key_value_heads`: num_attention_heads 9 is not a multiple of num_key_value_heads 2",
            ),
            ("head_dim", 63.into(), "`head_dim`: must be even (RoPE rotates pairs of dimensions), found 63"),
            ("rms_norm_eps", (-1.0).into(), "`rms_norm_eps`: must be a number between 0 and 1, exclusive"),
            ("rms_norm_eps", 0.0.into(), "`rms_norm_eps`: must be a number between 0 and 1, exclusive"),
            ("rms_norm_eps", 1.5.into(), "models use 1e-5 or 1e-6), found 1.5"),
            ("rope_theta", 1e-30.into(), "`rope_theta`: must be a finite number above 1 (RoPE's frequencies theta^(-2i/head_dim) must decrease along the head; models use 10000 to 1000000), found 1e-30"),
            ("rope_theta", 1.0.into(), "`rope_theta`: must be a finite number above 1"),
            ("rope_theta", (-5.0).into(), "`rope_theta`: must be a finite number above 1"),
            ("vocab_size", (1u64 << 31).into(), "`vocab_size`: 2147483648 is above 2^31 - 1 = 2147483647: token ids reach the kernels as i32"),
            ("max_position_embeddings", (1u64 << 40).into(), "`max_position_embeddings`: 1099511627776 is above 2^31 - 1"),
            ("hidden_size", (9u64 << 18).into(), "`hidden_size`: hidden_size 2359296 is implausible (the limit is 2^20 = 1048576"),
            ("intermediate_size", (1u64 << 30).into(), "`intermediate_size`: intermediate_size 1073741824 is implausible"),
            ("head_dim", (1u64 << 20).into(), "`num_attention_heads`: the query width num_attention_heads*head_dim 9437184 is implausible"),
            ("num_hidden_layers", 1_000_000.into(), "`num_hidden_layers`: 1000000 layers is implausible"),
            ("eos_token_id", 49152.into(), "`eos_token_id`: token id 49152 is outside the vocabulary"),
            ("hidden_act", "gelu".into(), "`hidden_act`: `gelu` is not supported"),
            ("rope_scaling", serde_json::json!({"rope_type": "llama3"}), "`rope_scaling`: RoPE scaling"),
        ];
        for (field, value, expected) in cases {
            let e = parse(&with(|m| {
                m.insert(field.into(), value);
            }))
            .unwrap_err();
            assert!(e.to_string().starts_with("/models/x/config.json: "), "{e}");
            assert!(e.to_string().contains(expected), "{field}: {e}");
        }
    }

    #[test]
    fn every_listed_token_id_is_checked() {
        let c = parse(&with(|m| {
            m.insert("eos_token_id".into(), serde_json::json!([2, 49151]));
        }))
        .unwrap();
        assert_eq!(c.eos_token_id, Some(2));
        for (ids, expected) in [
            (
                serde_json::json!([263, 99999]),
                "/models/x/config.json: `eos_token_id`: token id 99999 (item 2 of the 2 listed) is outside the vocabulary (vocab_size 49152)",
            ),
            (
                serde_json::json!([99999]),
                "/models/x/config.json: `eos_token_id`: token id 99999 is outside the vocabulary (vocab_size 49152)",
            ),
        ] {
            let e = parse(&with(|m| {
                m.insert("eos_token_id".into(), ids);
            }))
            .unwrap_err();
            assert_eq!(e.to_string(), expected);
        }
        let e = parse(&with(|m| {
            m.insert("bos_token_id".into(), serde_json::json!([1, 1, 49152]));
        }))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("`bos_token_id`: token id 49152 (item 3 of the 3 listed)"),
            "{e}"
        );
    }

    #[test]
    fn long_strings_from_the_file_are_quoted_short() {
        let long = "g".repeat(1 << 20);
        let e = parse(&with(|m| {
            m.insert("hidden_act".into(), long.clone().into());
        }))
        .unwrap_err()
        .to_string();
        assert!(e.ends_with("`hidden_act`: `gggggggggggggggggggggggggggggggggggggggg…` (1048576 bytes) is not supported; q35's Llama MLP uses silu"), "{e}");
        let e = parse(&with(|m| {
            m.insert(
                "architectures".into(),
                serde_json::json!(vec![long.clone(); 100]),
            );
        }))
        .unwrap_err()
        .to_string();
        assert!(
            e.len() < 1000 && e.contains(" and 92 more; q35 supports"),
            "{}",
            &e[..300]
        );
    }

    #[test]
    fn bad_json_is_reported() {
        let e = parse("{\"hidden_size\": 5,").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/models/x/config.json: invalid JSON: "),
            "{e}"
        );
        let e = ModelConfig::from_hf_file(Path::new("/nonexistent/config.json")).unwrap_err();
        assert!(
            e.to_string()
                .contains("not found; a safetensors model needs its config.json"),
            "{e}"
        );
    }
}
