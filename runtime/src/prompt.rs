//! Turning user text into the token ids a model expects: whether to put
//! BOS first (chat templates are the chat module's).
//!
//! [`Tokenizer::encode`] never adds special tokens; whether a model wants
//! BOS is said by its `tokenizer.json` post-processor (Llama 2 and 3 add
//! one through `TemplateProcessing`; SmolLM2's `ByteLevel` adds none), so
//! that is what decides here, as it does for Hugging Face and llama.cpp.

use serde_json::Value;

use crate::tokenizer::Tokenizer;

/// Whether `tokenizer_json`'s post-processor puts `bos` in front of a
/// single sequence. `false` without a BOS id or a post-processor that adds it.
pub fn adds_bos(tokenizer_json: &str, tokenizer: &Tokenizer, bos: Option<u32>) -> bool {
    let Some(bos) = bos else { return false };
    // As the tokenizer loader does, skip a leading byte order mark.
    let tokenizer_json = tokenizer_json
        .strip_prefix('\u{feff}')
        .unwrap_or(tokenizer_json);
    let Ok(file) = serde_json::from_str::<Value>(tokenizer_json) else {
        return false;
    };
    file.get("post_processor")
        .and_then(|p| first_special(p, tokenizer))
        .is_some_and(|id| id == bos)
}

/// The id of the special token a post-processor puts first, if any.
fn first_special(processor: &Value, tokenizer: &Tokenizer) -> Option<u32> {
    match processor.get("type")?.as_str()? {
        "Sequence" => processor
            .get("processors")?
            .as_array()?
            .iter()
            .find_map(|p| first_special(p, tokenizer)),
        "TemplateProcessing" => {
            let first = processor.get("single")?.as_array()?.first()?;
            let name = first.get("SpecialToken")?.get("id")?.as_str()?;
            let listed = processor
                .get("special_tokens")
                .and_then(|s| s.get(name))
                .and_then(|s| s.get("ids"))
                .and_then(|ids| ids.as_array())
                .and_then(|ids| ids.first())
                .and_then(Value::as_u64)
                .and_then(|id| u32::try_from(id).ok());
            listed.or_else(|| tokenizer.token_to_id(name))
        }
        // `cls: ["<s>", 0]`
        "BertProcessing" | "RobertaProcessing" => {
            let id = processor.get("cls")?.as_array()?.get(1)?.as_u64()?;
            u32::try_from(id).ok()
        }
        _ => None,
    }
}

/// Token ids of `text`, with BOS first when the model wants it.
pub fn prompt_ids(tokenizer: &Tokenizer, text: &str, bos: Option<u32>, add_bos: bool) -> Vec<u32> {
    let mut ids = Vec::new();
    if let (true, Some(bos)) = (add_bos, bos) {
        ids.push(bos);
    }
    ids.extend(tokenizer.encode(text));
    ids
}
