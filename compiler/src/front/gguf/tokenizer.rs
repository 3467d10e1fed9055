//! A GGUF's tokenizer (`tokenizer.ggml.*` metadata) and the Hugging Face
//! `tokenizer.json` / `tokenizer_config.json` it corresponds to.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = gpt2`, as used by
//! SmolLM2, Llama 3 and GPT-2-style vocabularies) is converted. The JSON
//! follows the `tokenizers` library's serialization (a `BPE` model with
//! `vocab` and `merges`, `ByteLevel` pre-tokenizer and decoder, control
//! tokens in `added_tokens`), because the runtime reads the same file.

use super::{GgufFile, Value};
use crate::front::error::{quote, Error, Result};
use serde::{ser::SerializeMap, Serialize, Serializer};
use serde_json::json;
use std::{
    collections::{hash_map::Entry, HashMap},
    path::Path,
};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Llama 3's pre-tokenizer regex (llama.cpp's `llama-bpe`).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer metadata of a GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTokenizer {
    /// `tokenizer.ggml.model`: `gpt2` for byte-level BPE.
    pub model: String,
    /// `tokenizer.ggml.pre`: llama.cpp's name for the pre-tokenizer
    /// (`smollm`, `llama-bpe`, `default`, ...).
    pub pre: Option<String>,
    /// Token strings by id, in GPT-2's byte-to-unicode alphabet.
    pub tokens: Vec<String>,
    /// One [`token_type`] per token.
    pub token_types: Vec<i32>,
    /// BPE merges in rank order, `"left right"`.
    pub merges: Vec<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub unknown_token_id: Option<u32>,
    pub padding_token_id: Option<u32>,
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    /// `tokenizer.chat_template` (Jinja).
    pub chat_template: Option<String>,
}

impl GgufTokenizer {
    /// The tokenizer of a GGUF file: `None` without tokenizer metadata, or
    /// (with a warning) for tokenizer models other than byte-level BPE.
    pub(crate) fn from_gguf(file: &GgufFile) -> Result<Option<Self>> {
        let Some(model) = file.opt_str("tokenizer.ggml.model")? else {
            return Ok(None);
        };
        if model != "gpt2" {
            tracing::warn!(
                "{}: tokenizer.ggml.model {} is not converted (q35 converts byte-level BPE, `gpt2`); \
                 no tokenizer.json",
                file.path.display(),
                quote(model)
            );
            return Ok(None);
        }
        let strings = |key: &str| -> Result<Option<Vec<String>>> {
            let Some(items) = file.opt_array(key)? else {
                return Ok(None);
            };
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        Error::config(&file.path, format!("{key}[{i}]"), "expected a string")
                    })
                })
                .collect::<Result<Vec<_>>>()
                .map(Some)
        };
        let tokens = strings("tokenizer.ggml.tokens")?
            .ok_or_else(|| Error::config(&file.path, "tokenizer.ggml.tokens", "missing"))?;
        let merges = strings("tokenizer.ggml.merges")?.ok_or_else(|| {
            Error::config(
                &file.path,
                "tokenizer.ggml.merges",
                "missing; byte-level BPE needs merges",
            )
        })?;
        let token_types = match file.opt_array("tokenizer.ggml.token_type")? {
            None => vec![token_type::NORMAL; tokens.len()],
            Some(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match *v {
                    Value::I32(t) => Ok(t),
                    _ => Err(Error::config(
                        &file.path,
                        format!("tokenizer.ggml.token_type[{i}]"),
                        format!("expected INT32, found {}", v.type_name()),
                    )),
                })
                .collect::<Result<_>>()?,
        };
        if token_types.len() != tokens.len() {
            return Err(Error::config(
                &file.path,
                "tokenizer.ggml.token_type",
                format!(
                    "has {} entries for {} tokens",
                    token_types.len(),
                    tokens.len()
                ),
            ));
        }
        let id = |key: &str| -> Result<Option<u32>> {
            let Some(id) = file.opt_u64(key)? else {
                return Ok(None);
            };
            match u32::try_from(id) {
                Ok(id) if (id as usize) < tokens.len() => Ok(Some(id)),
                _ => Err(Error::config(
                    &file.path,
                    key,
                    format!("token id {id} is outside the {} tokens", tokens.len()),
                )),
            }
        };
        Ok(Some(GgufTokenizer {
            model: model.to_string(),
            pre: file.opt_str("tokenizer.ggml.pre")?.map(str::to_string),
            bos_token_id: id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: id("tokenizer.ggml.eos_token_id")?,
            unknown_token_id: id("tokenizer.ggml.unknown_token_id")?,
            padding_token_id: id("tokenizer.ggml.padding_token_id")?,
            add_bos_token: file.opt_bool("tokenizer.ggml.add_bos_token")?,
            add_eos_token: file.opt_bool("tokenizer.ggml.add_eos_token")?,
            chat_template: file.opt_str("tokenizer.chat_template")?.map(str::to_string),
            tokens,
            token_types,
            merges,
        }))
    }

    fn token(&self, id: Option<u32>) -> Option<&str> {
        self.tokens.get(id? as usize).map(String::as_str)
    }

    /// The Hugging Face `tokenizer.json`. Every merge must join two tokens
    /// of the vocabulary into a third, as the `tokenizers` library checks
    /// on load; `path` names the source in errors.
    pub fn to_tokenizer_json(&self, path: &Path) -> Result<String> {
        let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(self.tokens.len());
        let mut unique: Vec<(&str, u32)> = Vec::with_capacity(self.tokens.len());
        for (id, token) in self.tokens.iter().enumerate() {
            let id = u32::try_from(id)
                .map_err(|_| Error::config(path, "tokenizer.ggml.tokens", "too many tokens"))?;
            match vocab.entry(token) {
                Entry::Vacant(slot) => {
                    slot.insert(id);
                    unique.push((token, id));
                }
                // A JSON object cannot hold the same key twice; keep the first.
                Entry::Occupied(first) => tracing::warn!(
                    "{}: token {} (id {id}) repeats token {}; tokenizer.json keeps the first",
                    path.display(),
                    quote(token),
                    first.get()
                ),
            }
        }
        for (i, merge) in self.merges.iter().enumerate() {
            let field = || format!("tokenizer.ggml.merges[{i}]");
            let Some((left, right)) = merge
                .split_once(' ')
                .filter(|(l, r)| !l.is_empty() && !r.is_empty() && !r.contains(' '))
            else {
                return Err(Error::config(
                    path,
                    field(),
                    format!("{} is not two tokens separated by a space", quote(merge)),
                ));
            };
            for part in [
                left.to_string(),
                right.to_string(),
                format!("{left}{right}"),
            ] {
                if !vocab.contains_key(part.as_str()) {
                    return Err(Error::config(
                        path,
                        field(),
                        format!(
                            "{}: {} is not in the vocabulary",
                            quote(merge),
                            quote(&part)
                        ),
                    ));
                }
            }
        }

        let added_tokens: Vec<_> = self
            .token_types
            .iter()
            .zip(&self.tokens)
            .enumerate()
            .filter(|(_, (ty, _))| matches!(**ty, token_type::CONTROL | token_type::USER_DEFINED))
            .map(|(id, (&ty, content))| {
                json!({
                    "id": id,
                    "content": content,
                    "single_word": false,
                    "lstrip": false,
                    "rstrip": false,
                    "normalized": false,
                    "special": ty == token_type::CONTROL,
                })
            })
            .collect();

        let pre = self.pre.as_deref().unwrap_or("default");
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        let (pre_tokenizer, ignore_merges) = match pre {
            "default" | "gpt2" | "gpt-2" => (byte_level(true), false),
            // llama.cpp splits digits one by one, then applies GPT-2's regex.
            "smollm" | "starcoder" | "refact" | "codeshell" => (
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Digits", "individual_digits": true},
                    byte_level(true),
                ]}),
                false,
            ),
            "llama-bpe" | "llama3" => (
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": false},
                    byte_level(false),
                ]}),
                true,
            ),
            other => {
                tracing::warn!(
                    "{}: pre-tokenizer {} is not known to q35; using GPT-2's byte-level split",
                    path.display(),
                    quote(other)
                );
                (byte_level(true), false)
            }
        };

        let tokenizer = TokenizerJson {
            version: "1.0",
            truncation: None,
            padding: None,
            added_tokens,
            normalizer: None,
            pre_tokenizer,
            post_processor: self.post_processor(),
            decoder: json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
            model: BpeModel {
                kind: "BPE",
                dropout: None,
                unk_token: None,
                continuing_subword_prefix: None,
                end_of_word_suffix: None,
                fuse_unk: false,
                byte_fallback: false,
                ignore_merges,
                vocab: VocabById(&unique),
                merges: &self.merges,
            },
        };
        serde_json::to_string_pretty(&tokenizer)
            .map(|mut text| {
                text.push('\n');
                text
            })
            .map_err(|e| Error::malformed(path, format!("cannot write tokenizer.json: {e}")))
    }

    /// Adds BOS/EOS around each sequence when the GGUF asks for it (as
    /// HF's Llama 3 tokenizer does); otherwise GPT-2's plain byte-level
    /// post-processor.
    fn post_processor(&self) -> serde_json::Value {
        let bos = self
            .token(self.bos_token_id)
            .filter(|_| self.add_bos_token == Some(true));
        let eos = self
            .token(self.eos_token_id)
            .filter(|_| self.add_eos_token == Some(true));
        if bos.is_none() && eos.is_none() {
            return json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
        }
        let special =
            |token: &str, type_id: u32| json!({"SpecialToken": {"id": token, "type_id": type_id}});
        let sequence = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
        let mut single = Vec::new();
        let mut pair = Vec::new();
        for (seq, type_id) in [("A", 0u32), ("B", 1)] {
            let mut part = Vec::new();
            part.extend(bos.map(|t| special(t, type_id)));
            part.push(sequence(seq, type_id));
            part.extend(eos.map(|t| special(t, type_id)));
            if seq == "A" {
                single = part.clone();
            }
            pair.extend(part);
        }
        let mut special_tokens = serde_json::Map::new();
        for (token, id) in [(bos, self.bos_token_id), (eos, self.eos_token_id)] {
            if let (Some(token), Some(id)) = (token, id) {
                special_tokens.insert(
                    token.to_string(),
                    json!({"id": token, "ids": [id], "tokens": [token]}),
                );
            }
        }
        json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special_tokens})
    }

    /// A Hugging Face `tokenizer_config.json`: special tokens and the chat
    /// template, which `tokenizer.json` does not carry.
    pub fn to_tokenizer_config_json(&self, model_max_length: usize) -> String {
        let config = json!({
            "add_bos_token": self.add_bos_token.unwrap_or(false),
            "add_eos_token": self.add_eos_token.unwrap_or(false),
            "bos_token": self.token(self.bos_token_id),
            "eos_token": self.token(self.eos_token_id),
            "unk_token": self.token(self.unknown_token_id),
            "pad_token": self.token(self.padding_token_id),
            "chat_template": self.chat_template,
            "clean_up_tokenization_spaces": false,
            "model_max_length": model_max_length,
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        let mut text = serde_json::to_string_pretty(&config).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// `tokenizer.json`, fields in the order the `tokenizers` library writes
/// them. Typed rather than a `serde_json::Value` so that the vocabulary
/// keeps id order (a `Value` map would sort it by token text).
#[derive(Serialize)]
struct TokenizerJson<'a> {
    version: &'static str,
    truncation: Option<()>,
    padding: Option<()>,
    added_tokens: Vec<serde_json::Value>,
    normalizer: Option<()>,
    pre_tokenizer: serde_json::Value,
    post_processor: serde_json::Value,
    decoder: serde_json::Value,
    model: BpeModel<'a>,
}

#[derive(Serialize)]
struct BpeModel<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    dropout: Option<f32>,
    unk_token: Option<&'a str>,
    continuing_subword_prefix: Option<&'a str>,
    end_of_word_suffix: Option<&'a str>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    vocab: VocabById<'a>,
    merges: &'a [String],
}

/// The vocabulary as a JSON object in id order (serde_json's own map
/// would sort it by token text).
struct VocabById<'a>(&'a [(&'a str, u32)]);

impl Serialize for VocabById<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (token, id) in self.0 {
            map.serialize_entry(token, id)?;
        }
        map.end()
    }
}

/// GPT-2's byte-to-unicode table: printable Latin-1 bytes stand for
/// themselves, the other 68 bytes for U+0100 upwards (space is `Ġ`).
pub fn byte_level_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (byte, slot) in (0u8..=255).zip(table.iter_mut()) {
        *slot = if matches!(byte, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff) {
            char::from(byte)
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::testmodel::tiny_tokenizer;
    use serde_json::Value as Json;

    #[test]
    fn alphabet_is_gpt2s() {
        let table = byte_level_alphabet();
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'a' as usize], 'a');
        assert_eq!(table[0], 'Ā');
        let mut sorted = table.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }

    #[test]
    fn tokenizer_json_has_the_shape_tokenizers_reads() {
        let t = tiny_tokenizer();
        let text = t.to_tokenizer_json(Path::new("t.gguf")).unwrap();
        let json: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(json["version"], "1.0");
        assert_eq!(json["model"]["type"], "BPE");
        assert_eq!(json["model"]["vocab"]["Ġ"], 32);
        assert_eq!(
            json["model"]["vocab"].as_object().unwrap().len(),
            t.tokens.len()
        );
        assert_eq!(json["model"]["merges"][0], "Ġ t");
        assert_eq!(json["pre_tokenizer"]["type"], "ByteLevel");
        assert_eq!(json["decoder"]["type"], "ByteLevel");
        let added = json["added_tokens"].as_array().unwrap();
        assert_eq!(added.len(), 2);
        assert_eq!(added[0]["content"], "<s>");
        assert_eq!(added[0]["special"], true);
        // Vocabulary in id order in the text itself.
        let first = text.find("\"Ā\"").unwrap();
        assert!(first < text.find("\"!\"").unwrap());
    }

    #[test]
    fn pre_tokenizers_and_bos() {
        let mut t = tiny_tokenizer();
        t.pre = Some("llama-bpe".into());
        t.add_bos_token = Some(true);
        let json: Json =
            serde_json::from_str(&t.to_tokenizer_json(Path::new("t.gguf")).unwrap()).unwrap();
        assert_eq!(json["pre_tokenizer"]["pretokenizers"][0]["type"], "Split");
        assert_eq!(json["model"]["ignore_merges"], true);
        assert_eq!(json["post_processor"]["type"], "TemplateProcessing");
        assert_eq!(
            json["post_processor"]["single"][0]["SpecialToken"]["id"],
            "<s>"
        );
        assert_eq!(
            json["post_processor"]["special_tokens"]["<s>"]["ids"][0],
            262
        );
        t.pre = Some("smollm".into());
        let json: Json =
            serde_json::from_str(&t.to_tokenizer_json(Path::new("t.gguf")).unwrap()).unwrap();
        assert_eq!(json["pre_tokenizer"]["pretokenizers"][0]["type"], "Digits");

        let config: Json = serde_json::from_str(&t.to_tokenizer_config_json(128)).unwrap();
        assert_eq!(config["bos_token"], "<s>");
        assert_eq!(config["eos_token"], "</s>");
    }

    #[test]
    fn bad_merges_are_named() {
        let mut t = tiny_tokenizer();
        t.merges.push("x zz".into());
        let e = t
            .to_tokenizer_json(Path::new("t.gguf"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "t.gguf: `tokenizer.ggml.merges[6]`: `x zz`: `zz` is not in the vocabulary"
        );
        t.merges.pop();
        t.merges.push("xyz".into());
        let e = t
            .to_tokenizer_json(Path::new("t.gguf"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`xyz` is not two tokens separated by a space"),
            "{e}"
        );
    }
}
