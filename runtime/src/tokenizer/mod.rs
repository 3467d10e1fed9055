//! Byte-level BPE tokenizer read from a Hugging Face `tokenizer.json`.
//!
//! Covers the GPT-2 family as Llama-style checkpoints ship it (SmolLM2,
//! GPT-2, StarCoder, ...): model `BPE` with `vocab` and `merges`, pre-tokenizer
//! `ByteLevel` (optionally after `Digits { individual_digits }` in a
//! `Sequence`), decoder `ByteLevel`, and `added_tokens` matched literally in
//! the text. Anything else (normalizers, `Metaspace`, custom `Split` regexes)
//! is rejected at load time with an error that names the file and the
//! component, rather than tokenizing differently from the model's training.
//!
//! [`Tokenizer::encode`] never adds BOS/EOS: the caller decides (see
//! `ModelConfig::bos_token_id`), as llama.cpp and the chat templates do.
//!
//! # Pre-tokenization
//!
//! GPT-2's split regex
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! is reproduced by a hand-written scanner ([`gpt2_split`]) with these
//! character classes:
//!
//! - `\s` = [`char::is_whitespace`] (Unicode `White_Space`, the same set
//!   Oniguruma uses);
//! - `\p{N}` = [`char::is_numeric`] (`Nd`, `Nl`, `No`: exactly `\p{N}`);
//! - `\p{L}` = [`char::is_alphabetic`] minus `\p{N}`. `Alphabetic` is `L` +
//!   `Nl` + `Other_Alphabetic`; removing `Nl` leaves one known divergence:
//!   `Other_Alphabetic` characters (combining vowel signs of Indic and Thai
//!   scripts, Arabic harakat, circled letters such as `Ⓐ`) count as letters
//!   here but fall into `[^\s\p{L}\p{N}]` in the regex, so pre-token
//!   boundaries around them differ (`"नमस्ते"`: regex `नमस|्|त|े`, ours
//!   `नमस|्|ते`). Merges are learned inside the regex's pre-tokens, so
//!   where ours are coarser the ids still agree (our Hindi, Thai, Arabic and
//!   circled-letter probes in `tests/smollm2_tokenizer.rs`). Ids can differ
//!   where such a character is followed by punctuation: `ْ'd` is `ْ'|d` for
//!   the regex but `ْ|'d` here. On SmolLM2, 6 of 3,562 fuzz strings (random
//!   mixes of scripts, marks and punctuation, plus this repository's source
//!   files) differed, all of that kind. Text without `Other_Alphabetic`
//!   characters (Latin, CJK, Cyrillic, Greek, emoji, code) is unaffected.
//!
//! Bytes whose byte-level character is not in the vocabulary (SmolLM2 lacks
//! 21, mostly bytes UTF-8 never uses) become `unk_token` if there is one and
//! are dropped otherwise, as Hugging Face does.
//!
//! # What loading checks
//!
//! `q35c` loads a model's tokenizer with this same loader when it compiles,
//! so a file the runtime would refuse is refused there. A leading UTF-8 BOM
//! is skipped (Windows editors write one; JSON itself forbids it). Refused:
//! an empty file, invalid JSON, an empty `model.vocab`, a token listed twice
//! in it, two tokens with one id, an id far beyond the number of tokens, a
//! merge that is not two tokens of the vocabulary whose concatenation is in
//! it too, an empty added token, and unsupported components.
//! [`Tokenizer::check_model_vocab`] checks the ids against a model's
//! vocabulary.

mod bpe;
mod byte_level;
mod load;
mod pretokenize;

pub use pretokenize::gpt2_split;

use std::collections::HashMap;
use std::fmt;

use byte_level::char_to_byte;
use pretokenize::split_digits;
use q35_format::quote::{clip, quote};

/// Everything that can go wrong while loading a `tokenizer.json`.
///
/// `file` is the path given to [`Tokenizer::from_file`] (or the origin given
/// to [`Tokenizer::from_json_str`]). Strings from the file (tokens, type
/// names) are shown through [`quote`]: at most a short prefix.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{file}: cannot read tokenizer: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Not a source: serde's message can quote megabytes of the file, and
    /// is shown here clipped.
    #[error("{file}: not a valid tokenizer.json: {}", clip(&.error.to_string()))]
    Json {
        file: String,
        error: serde_json::Error,
    },
    #[error("{file}: {field} is missing")]
    Missing { file: String, field: &'static str },
    #[error("{file}: unsupported {component} {} ({supported})", quote(.kind))]
    Unsupported {
        file: String,
        component: &'static str,
        kind: String,
        supported: &'static str,
    },
    #[error("{file}: merge {index} ({}) {problem}", quote(.merge))]
    BadMerge {
        file: String,
        index: usize,
        merge: String,
        problem: String,
    },
    #[error("{file}: token id {id} is used by both {} and {}", quote(.first), quote(.second))]
    DuplicateId {
        file: String,
        id: u32,
        first: String,
        second: String,
    },
    #[error("{file}: {what}")]
    Invalid { file: String, what: String },
}

/// A token id that is not in the vocabulary, found while decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token id {id} is not in the vocabulary ({vocab_size} ids)")]
pub struct UnknownTokenId {
    pub id: u32,
    pub vocab_size: usize,
}

/// Pre-tokenizer settings we support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PreTokenizer {
    individual_digits: bool,
    add_prefix_space: bool,
    use_regex: bool,
}

/// A token added on top of the BPE vocabulary (`<|im_start|>`, ...).
#[derive(Debug, Clone)]
struct AddedToken {
    id: u32,
    content: String,
    special: bool,
    lstrip: bool,
    rstrip: bool,
    single_word: bool,
}

/// `(left, right) -> (rank, merged)`; the lower rank merges first.
type MergeTable = HashMap<(u32, u32), (u32, u32)>;

/// A loaded byte-level BPE tokenizer.
#[derive(Clone)]
pub struct Tokenizer {
    vocab: HashMap<String, u32>,
    /// `id -> token text`; `None` for ids no token uses.
    id_to_token: Vec<Option<String>>,
    merges: MergeTable,
    /// Initial symbol of each byte: its byte-level character's id, else
    /// unk, else none (the byte is dropped, as Hugging Face does; SmolLM2's
    /// vocabulary lacks 21 bytes, mostly ones UTF-8 never uses).
    byte_ids: [Option<u32>; 256],
    /// Added tokens, longest first so the first match is the longest.
    added: Vec<AddedToken>,
    /// Ids that decode to their literal content (added tokens).
    added_by_id: HashMap<u32, usize>,
    /// Whether some added token starts with this byte.
    added_first_bytes: [bool; 256],
    pre: PreTokenizer,
    ignore_merges: bool,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.merges.len())
            .field("added_tokens", &self.added.len())
            .field("pre_tokenizer", &self.pre)
            .finish()
    }
}

impl Tokenizer {
    /// Number of ids (one more than the largest id in use).
    pub fn vocab_size(&self) -> usize {
        self.id_to_token.len()
    }

    /// Checks that every id is one the model has (`vocab_size` rows of
    /// embedding and logits); `origin` names the file in the error. A
    /// token beyond it could never be produced, and a prompt holding it
    /// would index past the embedding table. A tokenizer with fewer ids
    /// than the model is fine (models pad their vocabulary): an id it lacks
    /// is refused when decoding ([`UnknownTokenId`]).
    pub fn check_model_vocab(&self, vocab_size: usize, origin: &str) -> Result<(), TokenizerError> {
        if self.vocab_size() <= vocab_size {
            return Ok(());
        }
        let id = self.vocab_size() - 1;
        let token = self.id_to_token(id as u32).unwrap_or_default();
        Err(TokenizerError::Invalid {
            file: origin.to_string(),
            what: format!(
                "token id {id} ({}) is outside the model's vocabulary of {vocab_size} ids \
                 (config vocab_size): the model could never produce ids {vocab_size} to {id}, \
                 nor read them in a prompt",
                quote(token),
            ),
        })
    }

    /// The id of a token written as in the file (`"<|im_end|>"`, `"Ġthe"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added
            .iter()
            .find(|t| t.content == token)
            .map(|t| t.id)
            .or_else(|| self.vocab.get(token).copied())
    }

    /// The token text of an id, as written in the file.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.id_to_token.get(id as usize)?.as_deref()
    }

    /// Whether `id` is an added token marked `special` (BOS, EOS, chat markers).
    pub fn is_special(&self, id: u32) -> bool {
        self.added_by_id
            .get(&id)
            .is_some_and(|&i| self.added[i].special)
    }

    /// Token ids of `text`. Added tokens written in the text (`<|im_start|>`)
    /// become their ids; no BOS/EOS is added.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest_start = 0;
        for (start, end, id) in self.find_added(text) {
            self.encode_ordinary(&text[rest_start..start], &mut ids);
            ids.push(id);
            rest_start = end;
        }
        self.encode_ordinary(&text[rest_start..], &mut ids);
        ids
    }

    /// Text of `ids`. Invalid UTF-8 (a multi-byte character cut between
    /// tokens, or a stray byte) becomes U+FFFD, as in Hugging Face's decoder;
    /// use [`StreamDecoder`] to decode while generating.
    pub fn decode(&self, ids: &[u32]) -> Result<String, UnknownTokenId> {
        let mut bytes = Vec::new();
        for &id in ids {
            self.append_bytes(id, &mut bytes)?;
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The raw bytes a token stands for.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>, UnknownTokenId> {
        let mut bytes = Vec::new();
        self.append_bytes(id, &mut bytes)?;
        Ok(bytes)
    }

    fn append_bytes(&self, id: u32, out: &mut Vec<u8>) -> Result<(), UnknownTokenId> {
        let unknown = UnknownTokenId {
            id,
            vocab_size: self.vocab_size(),
        };
        if let Some(&i) = self.added_by_id.get(&id) {
            out.extend_from_slice(self.added[i].content.as_bytes());
            return Ok(());
        }
        let token = self.id_to_token(id).ok_or(unknown)?;
        // Like Hugging Face's ByteLevel decoder: map every character back to
        // its byte, or, if one is not a byte-level character, keep the text.
        let start = out.len();
        for c in token.chars() {
            match char_to_byte(c) {
                Some(b) => out.push(b),
                None => {
                    out.truncate(start);
                    out.extend_from_slice(token.as_bytes());
                    break;
                }
            }
        }
        Ok(())
    }

    /// Leftmost-longest matches of added tokens: `(start, end, id)`, where
    /// `start..end` includes whitespace absorbed by `lstrip`/`rstrip`.
    fn find_added(&self, text: &str) -> Vec<(usize, usize, u32)> {
        let mut found = Vec::new();
        if self.added.is_empty() {
            return found;
        }
        let mut pos = 0;
        let mut floor = 0; // lstrip must not reach into an earlier match
        while pos < text.len() {
            // Most positions start no added token; skip them by first byte.
            let candidate = self.added_first_bytes[usize::from(text.as_bytes()[pos])];
            let hit = match candidate {
                false => None,
                true => self.added.iter().find(|t| {
                    text[pos..].starts_with(t.content.as_str())
                        && (!t.single_word || is_single_word(text, pos, pos + t.content.len()))
                }),
            };
            match hit {
                Some(t) => {
                    let mut start = pos;
                    let mut end = pos + t.content.len();
                    if t.lstrip {
                        let before = &text[floor..start];
                        start = floor + before.trim_end().len();
                    }
                    if t.rstrip {
                        let after = &text[end..];
                        end += after.len() - after.trim_start().len();
                    }
                    found.push((start, end, t.id));
                    pos = end;
                    floor = end;
                }
                None => pos += text[pos..].chars().next().map_or(1, char::len_utf8),
            }
        }
        found
    }

    /// Encodes text that contains no added tokens.
    fn encode_ordinary(&self, text: &str, ids: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut pieces: Vec<&str> = Vec::new();
        if self.pre.individual_digits {
            split_digits(text, &mut pieces);
        } else {
            pieces.push(text);
        }
        let mut prefixed = String::new();
        for piece in pieces {
            // Hugging Face's ByteLevel adds the prefix space to each piece
            // the previous pre-tokenizers produced, not only to the text.
            let piece = if self.pre.add_prefix_space && !piece.starts_with(' ') {
                prefixed.clear();
                prefixed.push(' ');
                prefixed.push_str(piece);
                prefixed.as_str()
            } else {
                piece
            };
            if self.pre.use_regex {
                for word in gpt2_split(piece) {
                    self.encode_word(word.as_bytes(), ids);
                }
            } else {
                self.encode_word(piece.as_bytes(), ids);
            }
        }
    }
}

/// Decodes tokens one at a time while generating, emitting text only once
/// it is complete UTF-8: a character split across tokens (emoji, CJK) is
/// held back until its last byte arrives.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token and returns the text that became complete (maybe empty).
    /// Bytes that can never become valid UTF-8 are emitted as U+FFFD.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, UnknownTokenId> {
        tokenizer.append_bytes(id, &mut self.pending)?;
        let mut out = String::new();
        let mut consumed = 0;
        loop {
            match std::str::from_utf8(&self.pending[consumed..]) {
                Ok(s) => {
                    out.push_str(s);
                    consumed = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Already validated, so this copies without replacing.
                    out.push_str(&String::from_utf8_lossy(
                        &self.pending[consumed..consumed + valid],
                    ));
                    consumed += valid;
                    match e.error_len() {
                        // An invalid sequence: replace it and go on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            consumed += bad;
                        }
                        // An incomplete character at the end: wait for more.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        Ok(out)
    }

    /// Ends the stream: whatever is still held back, lossily.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// `single_word`: the match must not touch a word character on either side.
fn is_single_word(text: &str, start: usize, end: usize) -> bool {
    let word_char = |c: char| c.is_alphanumeric() || c == '_';
    !text[..start].chars().next_back().is_some_and(word_char)
        && !text[end..].chars().next().is_some_and(word_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny tokenizer: bytes for "a", "b", "c", " ", "'", "1", "2", their
    /// merges, and chat markers. Merges use both JSON forms.
    fn tiny_json(pre: &str) -> String {
        // Ġ is the byte-level character of the space.
        format!(
            r#"{{
              "version": "1.0",
              "added_tokens": [
                {{"id": 20, "content": "<|im_start|>", "special": true}},
                {{"id": 21, "content": "<|im_end|>", "special": true}},
                {{"id": 22, "content": "<|im_start|>x", "special": false}}
              ],
              "normalizer": null,
              "pre_tokenizer": {pre},
              "decoder": {{"type": "ByteLevel", "add_prefix_space": true}},
              "model": {{
                "type": "BPE",
                "vocab": {{"a": 0, "b": 1, "c": 2, "Ġ": 3, "'": 4, "1": 5, "2": 6,
                           "ab": 7, "abc": 8, "Ġa": 9, "Ġab": 10, "12": 11, "'s": 12, "s": 13,
                           "aa": 14, "<|im_start|>": 20}},
                "merges": ["Ġ a", "a b", ["ab", "c"], ["Ġa", "b"], "1 2", "' s", "a a"]
              }}
            }}"#
        )
    }

    const BYTE_LEVEL: &str =
        r#"{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}"#;
    const DIGITS: &str = r#"{"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": true},
        {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}]}"#;

    /// The tiny vocabulary lacks most bytes, so give it an unk token.
    fn tiny(pre: &str) -> Tokenizer {
        let json =
            tiny_json(pre).replace(r#""type": "BPE","#, r#""type": "BPE", "unk_token": "c","#);
        Tokenizer::from_json_str(&json, "tiny.json").unwrap()
    }

    #[test]
    fn merges_apply_by_rank() {
        let t = tiny(BYTE_LEVEL);
        assert_eq!(t.encode("abc"), [8]);
        assert_eq!(t.encode("ab ab"), [7, 10]);
        assert_eq!(t.encode("ba"), [1, 0]);
        // "a a" beats nothing else; "aaa" merges leftmost first.
        assert_eq!(t.encode("aaa"), [14, 0]);
        assert_eq!(t.encode("'s"), [12]);
    }

    #[test]
    fn digits_split_individually_when_configured() {
        assert_eq!(tiny(BYTE_LEVEL).encode("12"), [11]);
        assert_eq!(tiny(DIGITS).encode("12"), [5, 6]);
    }

    #[test]
    fn added_tokens_match_longest_first() {
        let t = tiny(BYTE_LEVEL);
        assert_eq!(t.encode("<|im_start|>ab<|im_end|>"), [20, 7, 21]);
        assert_eq!(t.encode("<|im_start|>x"), [22]);
        assert!(t.is_special(20) && !t.is_special(22) && !t.is_special(7));
        assert_eq!(t.token_to_id("<|im_end|>"), Some(21));
        assert_eq!(t.decode(&[20, 7, 21]).unwrap(), "<|im_start|>ab<|im_end|>");
    }

    #[test]
    fn decode_maps_byte_level_characters_back() {
        let t = tiny(BYTE_LEVEL);
        assert_eq!(t.decode(&[10, 3, 8]).unwrap(), " ab abc");
        assert_eq!(
            t.decode(&[99]),
            Err(UnknownTokenId {
                id: 99,
                vocab_size: 23
            })
        );
    }

    #[test]
    fn stream_decoder_waits_for_complete_characters() {
        // One token per byte: "é" is 0xC3 0xA9, byte-level "Ã" and "©".
        let json = r#"{"pre_tokenizer": {"type": "ByteLevel"},
            "model": {"type": "BPE", "unk_token": "x", "vocab": {"x": 0, "Ã": 1, "©": 2, "ÿ": 3}, "merges": []}}"#;
        let t = Tokenizer::from_json_str(json, "bytes.json").unwrap();
        let mut s = StreamDecoder::new();
        assert_eq!(s.push(&t, 0).unwrap(), "x");
        assert_eq!(s.push(&t, 1).unwrap(), "");
        assert_eq!(s.push(&t, 2).unwrap(), "é");
        // 0xFF can never start a character: replaced at once.
        assert_eq!(s.push(&t, 3).unwrap(), "\u{fffd}");
        assert_eq!(s.push(&t, 1).unwrap(), "");
        assert_eq!(s.finish(), "\u{fffd}");
        assert_eq!(t.decode(&[0, 1, 2, 1]).unwrap(), "xé\u{fffd}");
    }

    #[test]
    fn bytes_without_a_token_are_dropped() {
        let t = Tokenizer::from_json_str(&tiny_json(BYTE_LEVEL), "tiny.json").unwrap();
        // "\u{4}" is its own pre-token (punctuation class), then nothing.
        assert_eq!(t.encode("a\u{4}b"), [0, 1]);
        assert!(t.encode("\u{4}").is_empty());
    }

    #[test]
    fn prefix_space_is_added_per_piece() {
        let pre = r#"{"type": "ByteLevel", "add_prefix_space": true}"#;
        assert_eq!(tiny(pre).encode("ab"), [10]);
    }

    #[test]
    fn lstrip_and_rstrip_absorb_whitespace() {
        let json = tiny_json(BYTE_LEVEL)
            .replace(
                r#""special": true}"#,
                r#""special": true, "lstrip": true, "rstrip": true}"#,
            )
            .replace(r#""type": "BPE","#, r#""type": "BPE", "unk_token": "c","#);
        let t = Tokenizer::from_json_str(&json, "strip.json").unwrap();
        assert_eq!(t.encode("ab  <|im_end|>  ab"), [7, 21, 7]);
    }

    fn load_err(json: &str) -> String {
        Tokenizer::from_json_str(json, "bad.json")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let base = tiny_json(BYTE_LEVEL);
        let cases = [
            (
                base.replace(r#""vocab": {"#, r#""vocab_": {"#),
                "bad.json: model.vocab is missing",
            ),
            (
                base.replace(r#""type": "BPE""#, r#""type": "Unigram""#),
                "unsupported model type `Unigram`",
            ),
            (
                base.replace(r#""1 2""#, r#""1 9""#),
                "merge 4 (`1 9`) names `9`, which is not in the vocabulary",
            ),
            (
                base.replace(r#""a a""#, r#""b b""#),
                "merge 6 (`b b`) produces `bb`",
            ),
            (
                base.replace(r#""a b","#, r#""ab","#),
                "merge 1 (`ab`) is not two tokens",
            ),
            (
                base.replace(r#""b": 1,"#, r#""b": 0,"#),
                "token id 0 is used by both `a` and `b`",
            ),
            (
                base.replace(r#""aa": 14,"#, r#""aa": 4000000000,"#),
                "token id 4000000000 (`aa`) is far beyond the 19 tokens in the file",
            ),
            (
                base.replace(r#""normalizer": null"#, r#""normalizer": {"type": "NFC"}"#),
                "unsupported normalizer `NFC`",
            ),
            (
                base.replace(BYTE_LEVEL, r#"{"type": "Metaspace"}"#),
                "unsupported pre_tokenizer `Metaspace`",
            ),
            ("{".to_string(), "bad.json: not a valid tokenizer.json"),
            (
                "".to_string(),
                "bad.json: the file is empty; expected a tokenizer.json object",
            ),
            (" \n".to_string(), "bad.json: the file is empty"),
            (
                "{{\n".to_string(),
                "bad.json: not a valid tokenizer.json: key must be a string at line 1 column 2",
            ),
            (
                base.replace(r#""vocab": {"a": 0,"#, r#""vocab": {"#)
                    .replace(
                        r#""aa": 14, "<|im_start|>": 20}"#,
                        r#""aa": 14, "<|im_start|>": 20, "b": 0}"#,
                    ),
                "model.vocab lists the token `b` twice",
            ),
            (
                base.replace(r#""merges": ["#, r#""merges": [["a"], "#),
                r#"merge 0 (`["a"]`) is neither "left right" nor ["left", "right"]"#,
            ),
            (
                base.replace(r#""merges": ["#, r#""merges": [["a", "b", "c"], "#),
                r#"merge 0 (`["a","b","c"]`) is neither"#,
            ),
            (
                base.replace(
                    r#""<|im_start|>": 20}"#,
                    r#""<|im_start|>": 20, "x": 500000}"#,
                ),
                "token id 500000 (`x`) is far beyond the 20 tokens in the file",
            ),
        ];
        for (json, expected) in cases {
            let err = load_err(&json);
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
        let empty_vocab = r#"{"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {}, "merges": []}}"#;
        assert_eq!(
            load_err(empty_vocab),
            "bad.json: model.vocab is empty: there are no tokens to encode text into"
        );
        let err = Tokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("/nonexistent/tokenizer.json: cannot read"));
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        let json = format!("\u{feff}{}", tiny_json(BYTE_LEVEL));
        let t = Tokenizer::from_json_str(&json, "bom.json").unwrap();
        assert_eq!(t.vocab_size(), 23);
        assert_eq!(
            load_err("\u{feff}"),
            "bad.json: the file is empty; expected a tokenizer.json object"
        );
    }

    #[test]
    fn long_strings_are_quoted_short() {
        let long = "x".repeat(10 << 20);
        let base = tiny_json(BYTE_LEVEL);
        let cases = [
            // A 10 MB token colliding with another token's id.
            (
                base.replace(r#""b": 1,"#, &format!(r#""b": 1, "{long}": 0,"#)),
                "token id 0 is used by both `a` and `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…` (10485760 bytes)",
            ),
            (
                base.replace(r#""a a""#, &format!(r#""a {long}""#)),
                "merge 6 (`a xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…` (10485762 bytes)) names `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…` (10485760 bytes), which is not",
            ),
            (
                base.replace(r#""type": "BPE""#, &format!(r#""type": "{long}""#)),
                "unsupported model type `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…` (10485760 bytes) (expected BPE)",
            ),
            // serde's own message quotes the value: clipped too.
            (
                base.replace(r#""b": 1,"#, &format!(r#""b": "{long}","#)),
                "bytes cut]…",
            ),
        ];
        for (json, expected) in cases {
            let err = load_err(&json);
            assert!(
                err.contains(expected),
                "{:?} lacks {expected:?}",
                &err[..err.len().min(300)]
            );
            assert!(err.len() < 400, "{} bytes: {:?}", err.len(), &err[..300]);
        }
    }

    #[test]
    fn ids_beyond_the_models_vocabulary_are_refused() {
        let t = tiny(BYTE_LEVEL);
        assert_eq!(t.vocab_size(), 23);
        t.check_model_vocab(23, "tiny.json").unwrap();
        // Fewer tokenizer ids than model ids is fine (padded vocabularies).
        t.check_model_vocab(32, "tiny.json").unwrap();
        let err = t
            .check_model_vocab(21, "tiny.json")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "tiny.json: token id 22 (`<|im_start|>x`) is outside the model's vocabulary of 21 ids \
             (config vocab_size): the model could never produce ids 21 to 22, nor read them in a prompt"
        );
    }
}
