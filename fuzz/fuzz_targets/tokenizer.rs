//! The runtime's tokenizer loader: `Tokenizer::from_json_str` on a
//! `tokenizer.json`, then, with a tokenizer that loads, encoding texts,
//! decoding the ids (at once and streamed), and looking up ids in and out
//! of range. The input is `tokenizer.json`, optionally followed by
//! `q35_fuzz::SPLIT` and a text to encode besides the fixed ones. Invalid
//! UTF-8 is replaced (U+FFFD), so every input reaches the JSON parser.
//!
//! Only `Ok` or `Err` is accepted: a panic, abort, OOM or timeout is a
//! finding.

use libfuzzer_sys::fuzz_target;
use q35_fuzz::{note, split};
use q35_rt::tokenizer::{StreamDecoder, Tokenizer};

const TEXTS: &[&str] = &[
    "Hello, world! It's 2024: 12345 apples.",
    "  leading spaces\n\ttabs\r\nand   runs  ",
    "ünïcödé — 日本語 — नमस्ते — 🎉👍🏽",
    "<s>special</s><|im_start|>user\nhi<|im_end|>",
    "",
];

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 2);
    let json = String::from_utf8_lossy(parts[0]);
    let tokenizer = match Tokenizer::from_json_str(&json, "tokenizer.json") {
        Ok(t) => t,
        Err(e) => return note!("load: {e}"),
    };
    note!("load: ok, {tokenizer:?}");
    let extra = parts.get(1).map(|t| String::from_utf8_lossy(t));
    for text in TEXTS.iter().copied().chain(extra.as_deref()) {
        let ids = tokenizer.encode(text);
        match tokenizer.decode(&ids) {
            Ok(back) => note!("{text:?} -> {ids:?} -> {back:?}"),
            Err(e) => note!("decode {ids:?}: {e}"),
        }
        let mut stream = StreamDecoder::new();
        for &id in &ids {
            if let Err(e) = stream.push(&tokenizer, id) {
                note!("stream: {e}");
            }
        }
        let _ = stream.finish();
    }
    let vocab = tokenizer.vocab_size() as u64;
    for id in [0, 1, vocab.saturating_sub(1), vocab, vocab + 1, u32::MAX as u64] {
        let Ok(id) = u32::try_from(id) else { continue };
        let _ = tokenizer.is_special(id);
        if let Err(e) = tokenizer.token_bytes(id) {
            note!("token_bytes: {e}");
        }
        if let Some(token) = tokenizer.id_to_token(id) {
            let _ = tokenizer.token_to_id(token);
        }
    }
});

fn main() {
    q35_fuzz::run()
}
