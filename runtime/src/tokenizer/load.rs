//! Reading a `tokenizer.json`: what we accept, and errors for the rest.

use std::collections::HashMap;
use std::path::Path;

use serde::{de, Deserialize, Deserializer};

use super::byte_level::byte_to_char;
use super::{AddedToken, MergeTable, PreTokenizer, Tokenizer, TokenizerError};
use q35_format::quote::quote;

// tokenizer.json, as far as we read it.

#[derive(Deserialize)]
struct FileJson {
    #[serde(default)]
    added_tokens: Vec<AddedTokenJson>,
    #[serde(default)]
    normalizer: Option<serde_json::Value>,
    #[serde(default)]
    pre_tokenizer: Option<serde_json::Value>,
    #[serde(default)]
    decoder: Option<serde_json::Value>,
    model: Option<ModelJson>,
}

#[derive(Deserialize)]
struct AddedTokenJson {
    id: u32,
    content: String,
    #[serde(default)]
    special: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default)]
    single_word: bool,
}

#[derive(Deserialize)]
struct ModelJson {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "unique_vocab")]
    vocab: Option<HashMap<String, u32>>,
    merges: Option<Vec<MergeJson>>,
    #[serde(default)]
    unk_token: Option<String>,
    #[serde(default)]
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    end_of_word_suffix: Option<String>,
    #[serde(default)]
    byte_fallback: bool,
    #[serde(default)]
    ignore_merges: bool,
}

/// Merges come as `"a b"` (older files) or `["a", "b"]` (tokenizers ≥ 0.20);
/// anything else is kept to be refused with its index.
#[derive(Deserialize)]
#[serde(untagged)]
enum MergeJson {
    Text(String),
    Pair(String, String),
    Other(serde_json::Value),
}

/// `model.vocab` as a map, refusing a token listed twice (serde's map would
/// keep the last, silently leaving the first one's id unused).
fn unique_vocab<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<HashMap<String, u32>>, D::Error> {
    struct Vocab;
    impl<'de> de::Visitor<'de> for Vocab {
        type Value = Option<HashMap<String, u32>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of token to id")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut vocab = HashMap::with_capacity(map.size_hint().unwrap_or(0).min(1 << 20));
            while let Some((token, id)) = map.next_entry::<String, u32>()? {
                if vocab.contains_key(&token) {
                    return Err(de::Error::custom(format_args!(
                        "model.vocab lists the token {} twice",
                        quote(&token)
                    )));
                }
                vocab.insert(token, id);
            }
            Ok(Some(vocab))
        }
    }
    deserializer.deserialize_any(Vocab)
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_json_str(&text, &file)
    }

    /// Parses the contents of a `tokenizer.json`; `origin` names it in errors.
    /// A leading UTF-8 byte order mark is skipped.
    pub fn from_json_str(json: &str, origin: &str) -> Result<Self, TokenizerError> {
        let file = || origin.to_string();
        let json = json.strip_prefix('\u{feff}').unwrap_or(json);
        if json.trim().is_empty() {
            return Err(TokenizerError::Invalid {
                file: file(),
                what: "the file is empty; expected a tokenizer.json object".into(),
            });
        }
        let parsed: FileJson =
            serde_json::from_str(json).map_err(|error| TokenizerError::Json {
                file: file(),
                error,
            })?;
        let unsupported = |component, kind: &str, supported| TokenizerError::Unsupported {
            file: file(),
            component,
            kind: kind.to_string(),
            supported,
        };

        if let Some(n) = parsed.normalizer.as_ref().filter(|v| !v.is_null()) {
            return Err(unsupported(
                "normalizer",
                &type_name(n),
                "only none is supported",
            ));
        }
        let pre = parse_pre_tokenizer(parsed.pre_tokenizer.as_ref(), origin)?;
        if let Some(d) = parsed.decoder.as_ref().filter(|v| !v.is_null()) {
            if type_name(d) != "ByteLevel" {
                return Err(unsupported("decoder", &type_name(d), "expected ByteLevel"));
            }
        }

        let model = parsed.model.ok_or(TokenizerError::Missing {
            file: file(),
            field: "model",
        })?;
        match model.kind.as_deref() {
            Some("BPE") | None => {}
            Some(other) => return Err(unsupported("model type", other, "expected BPE")),
        }
        for (what, value) in [
            (
                "continuing_subword_prefix",
                &model.continuing_subword_prefix,
            ),
            ("end_of_word_suffix", &model.end_of_word_suffix),
        ] {
            if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
                return Err(unsupported(what, v, "byte-level BPE uses none"));
            }
        }
        if model.byte_fallback {
            return Err(unsupported(
                "BPE option",
                "byte_fallback",
                "byte-level BPE needs no byte fallback",
            ));
        }
        let vocab = model.vocab.ok_or(TokenizerError::Missing {
            file: file(),
            field: "model.vocab",
        })?;
        if vocab.is_empty() {
            return Err(TokenizerError::Invalid {
                file: file(),
                what: "model.vocab is empty: there are no tokens to encode text into".into(),
            });
        }
        let merges_json = model.merges.ok_or(TokenizerError::Missing {
            file: file(),
            field: "model.merges",
        })?;

        let added: Vec<AddedToken> = parsed
            .added_tokens
            .into_iter()
            .map(|t| AddedToken {
                id: t.id,
                content: t.content,
                special: t.special,
                lstrip: t.lstrip,
                rstrip: t.rstrip,
                single_word: t.single_word,
            })
            .collect();
        let id_to_token = id_table(&vocab, &added, origin)?;
        let merges = parse_merges(merges_json, &vocab, origin)?;
        let mut added = added;
        added.sort_by_key(|t| std::cmp::Reverse(t.content.len()));
        let added_by_id = added.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        let mut added_first_bytes = [false; 256];
        for first in added.iter().filter_map(|t| t.content.bytes().next()) {
            added_first_bytes[usize::from(first)] = true;
        }

        let unk = match model.unk_token {
            Some(u) => Some(*vocab.get(&u).ok_or_else(|| TokenizerError::Invalid {
                file: file(),
                what: format!("unk_token {} is not in the vocabulary", quote(&u)),
            })?),
            None => None,
        };
        let mut byte_ids = [None; 256];
        for (id, symbol) in byte_ids.iter_mut().zip(byte_to_char()) {
            *id = vocab
                .get(symbol.encode_utf8(&mut [0; 4]) as &str)
                .copied()
                .or(unk);
        }

        Ok(Self {
            vocab,
            id_to_token,
            merges,
            byte_ids,
            added,
            added_by_id,
            added_first_bytes,
            pre,
            ignore_merges: model.ignore_merges,
        })
    }
}

/// `id -> token` for the vocabulary and the added tokens together.
fn id_table(
    vocab: &HashMap<String, u32>,
    added: &[AddedToken],
    file: &str,
) -> Result<Vec<Option<String>>, TokenizerError> {
    let invalid = |what: String| TokenizerError::Invalid {
        file: file.to_string(),
        what,
    };
    // Ids index a table; a stray huge id must not allocate gigabytes.
    let entries = vocab.len() + added.len();
    let limit = 2 * entries + 1024;
    let mut table: Vec<Option<String>> = Vec::new();
    let mut sorted: Vec<(&String, &u32)> = vocab.iter().collect();
    sorted.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
    let entries_iter = sorted
        .into_iter()
        .map(|(token, &id)| (id, token.as_str(), false))
        .chain(added.iter().map(|t| (t.id, t.content.as_str(), true)));
    for (id, token, is_added) in entries_iter {
        let slot = id as usize;
        if slot >= limit {
            return Err(invalid(format!(
                "token id {id} ({}) is far beyond the {entries} tokens in the file",
                quote(token)
            )));
        }
        if is_added && token.is_empty() {
            return Err(invalid(format!("added token {id} has empty content")));
        }
        if slot >= table.len() {
            table.resize(slot + 1, None);
        }
        match &table[slot] {
            // Added tokens often repeat a vocabulary entry (same id, same text).
            Some(existing) if is_added && existing == token => {}
            Some(existing) => {
                return Err(TokenizerError::DuplicateId {
                    file: file.to_string(),
                    id,
                    first: existing.clone(),
                    second: token.to_string(),
                })
            }
            None => table[slot] = Some(token.to_string()),
        }
    }
    Ok(table)
}

/// `(left, right) -> (rank, merged)`; the rank is the merge's position.
fn parse_merges(
    merges: Vec<MergeJson>,
    vocab: &HashMap<String, u32>,
    file: &str,
) -> Result<MergeTable, TokenizerError> {
    let mut table = HashMap::with_capacity(merges.len());
    for (index, m) in merges.into_iter().enumerate() {
        let bad = |merge: String, problem: String| TokenizerError::BadMerge {
            file: file.to_string(),
            index,
            merge,
            problem,
        };
        let (left, right) = match m {
            MergeJson::Pair(a, b) => (a, b),
            MergeJson::Text(s) => match s.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                    (a.to_string(), b.to_string())
                }
                _ => return Err(bad(s, "is not two tokens separated by one space".into())),
            },
            MergeJson::Other(v) => {
                return Err(bad(
                    v.to_string(),
                    r#"is neither "left right" nor ["left", "right"]"#.into(),
                ))
            }
        };
        let id_of = |t: &str, problem: &str| {
            vocab.get(t).copied().ok_or_else(|| {
                bad(
                    format!("{left} {right}"),
                    format!("{problem} {}, which is not in the vocabulary", quote(t)),
                )
            })
        };
        let ids = (id_of(&left, "names")?, id_of(&right, "names")?);
        let merged = id_of(&format!("{left}{right}"), "produces")?;
        // A repeated pair keeps its first (best) rank, as Hugging Face does.
        table.entry(ids).or_insert((index as u32, merged));
    }
    Ok(table)
}

fn type_name(v: &serde_json::Value) -> String {
    v.get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("<no type>")
        .to_string()
}

fn parse_pre_tokenizer(
    value: Option<&serde_json::Value>,
    file: &str,
) -> Result<PreTokenizer, TokenizerError> {
    const SUPPORTED: &str =
        "expected ByteLevel, or a Sequence of Digits(individual_digits) and ByteLevel";
    let unsupported = |kind: String| TokenizerError::Unsupported {
        file: file.to_string(),
        component: "pre_tokenizer",
        kind,
        supported: SUPPORTED,
    };
    let value = value
        .filter(|v| !v.is_null())
        .ok_or(TokenizerError::Missing {
            file: file.to_string(),
            field: "pre_tokenizer (byte-level BPE needs ByteLevel)",
        })?;
    let steps: Vec<&serde_json::Value> = match type_name(value).as_str() {
        "Sequence" => value
            .get("pretokenizers")
            .and_then(|p| p.as_array())
            .ok_or(TokenizerError::Missing {
                file: file.to_string(),
                field: "pre_tokenizer.pretokenizers",
            })?
            .iter()
            .collect(),
        _ => vec![value],
    };
    let flag = |v: &serde_json::Value, key: &str, default: bool| {
        v.get(key).and_then(|b| b.as_bool()).unwrap_or(default)
    };
    match steps.as_slice() {
        [byte_level] if type_name(byte_level) == "ByteLevel" => Ok(PreTokenizer {
            individual_digits: false,
            add_prefix_space: flag(byte_level, "add_prefix_space", true),
            use_regex: flag(byte_level, "use_regex", true),
        }),
        [digits, byte_level]
            if type_name(digits) == "Digits" && type_name(byte_level) == "ByteLevel" =>
        {
            if !flag(digits, "individual_digits", false) {
                // Contiguous digit runs are what the GPT-2 regex already
                // gives (` ?\p{N}+`) except for the space; not worth a mode.
                return Err(unsupported("Digits(individual_digits: false)".into()));
            }
            Ok(PreTokenizer {
                individual_digits: true,
                add_prefix_space: flag(byte_level, "add_prefix_space", true),
                use_regex: flag(byte_level, "use_regex", true),
            })
        }
        _ => Err(unsupported(
            steps
                .iter()
                .map(|s| type_name(s))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}
