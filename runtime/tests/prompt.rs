//! BOS from the tokenizer's post-processor, and the chat template.

use q35_rt::chat::{Chat, Message};
use q35_rt::prompt::{adds_bos, prompt_ids};
use q35_rt::tokenizer::Tokenizer;

fn json(post_processor: &str, chat: bool) -> String {
    let chat_tokens = if chat {
        r#", {"id": 11, "content": "<|im_start|>", "special": true}, {"id": 12, "content": "<|im_end|>", "special": true}"#
    } else {
        ""
    };
    format!(
        r#"{{
          "added_tokens": [{{"id": 1, "content": "<s>", "special": true}}{chat_tokens}],
          "normalizer": null,
          "pre_tokenizer": {{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}},
          "post_processor": {post_processor},
          "decoder": {{"type": "ByteLevel"}},
          "model": {{"type": "BPE", "vocab": {{"a": 2, "b": 3, "Ġ": 4, "Ċ": 5, "u": 6, "s": 7, "e": 8, "r": 9, "t": 10, "<s>": 1}}, "merges": []}}
        }}"#
    )
}

const LLAMA_TEMPLATE: &str = r#"{"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}"#;

#[test]
fn bos_follows_the_post_processor() {
    let cases = [
        ("null", false),
        (r#"{"type": "ByteLevel", "add_prefix_space": true}"#, false),
        (LLAMA_TEMPLATE, true),
        (
            &format!(
                r#"{{"type": "Sequence", "processors": [{{"type": "ByteLevel"}}, {LLAMA_TEMPLATE}]}}"#
            ),
            true,
        ),
        (
            r#"{"type": "RobertaProcessing", "cls": ["<s>", 1], "sep": ["</s>", 2]}"#,
            true,
        ),
    ];
    for (processor, expected) in cases {
        let text = json(processor, false);
        let tokenizer = Tokenizer::from_json_str(&text, "t.json").unwrap();
        assert_eq!(
            adds_bos(&text, &tokenizer, Some(1)),
            expected,
            "{processor}"
        );
        assert!(!adds_bos(&text, &tokenizer, None));
        assert!(!adds_bos(&text, &tokenizer, Some(2)), "another BOS id");
    }
}

#[test]
fn prompts_get_bos_only_when_asked() {
    let text = json(LLAMA_TEMPLATE, false);
    let tokenizer = Tokenizer::from_json_str(&text, "t.json").unwrap();
    assert_eq!(prompt_ids(&tokenizer, "ab", Some(1), true), [1, 2, 3]);
    assert_eq!(prompt_ids(&tokenizer, "ab", Some(1), false), [2, 3]);
    assert_eq!(prompt_ids(&tokenizer, "ab", None, true), [2, 3]);
}

#[test]
fn the_chat_template_needs_its_markers() {
    let plain = Tokenizer::from_json_str(&json("null", false), "t.json").unwrap();
    assert!(Chat::new(None, &plain).unwrap().is_none());
    let chat = Tokenizer::from_json_str(&json("null", true), "t.json").unwrap();
    let wrapped = Chat::new(None, &chat).unwrap().unwrap().prompt(&[Message::new("user", "ab")]).unwrap();
    assert_eq!(
        wrapped,
        "<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = chat.encode(&wrapped);
    assert_eq!(ids.first(), Some(&11));
    assert_eq!(ids.iter().filter(|&&t| t == 11).count(), 2);
    assert_eq!(ids.iter().filter(|&&t| t == 12).count(), 1);
}
