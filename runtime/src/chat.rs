//! Chat turns as the model expects them: its own chat template (the Jinja
//! text of `tokenizer_config.json`'s `chat_template`, or GGUF's
//! `tokenizer.chat_template`, which q35c stores in the artifact), rendered
//! as Hugging Face renders it (`trim_blocks`, `lstrip_blocks`, Python's
//! string methods, `raise_exception`), and the tokens that end the
//! assistant's turn, found by rendering one: no per-model code.
//!
//! A model without a template whose tokenizer has the ChatML markers
//! (`<|im_start|>`, `<|im_end|>`) gets ChatML, as before templates were
//! read.

use crate::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

/// The ChatML markers (SmolLM2, Qwen, ...).
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

/// The artifact payload holding the template (JSON of [`TemplateSpec`]).
pub const PAYLOAD: &str = "chat_template.json";

/// A chat template and the special-token texts it may refer to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TemplateSpec {
    pub template: String,
    #[serde(default)]
    pub bos_token: Option<String>,
    #[serde(default)]
    pub eos_token: Option<String>,
}

impl TemplateSpec {
    /// The template of a Hugging Face `tokenizer_config.json` (`origin`
    /// names it in messages), if it has one: `chat_template` is a string,
    /// or a list of named templates of which `default` (else the first) is
    /// taken; the BOS and EOS texts are strings or `{"content": ...}`.
    pub fn from_tokenizer_config(json: &str, origin: &str) -> Result<Option<Self>, String> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("{origin}: invalid JSON: {e}"))?;
        let template = match value.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(serde_json::Value::Array(named)) => {
                let text = |t: &serde_json::Value| t.get("template").and_then(|t| t.as_str()).map(str::to_string);
                let default = named.iter().find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"));
                default.or(named.first()).and_then(text).ok_or_else(|| format!("{origin}: `chat_template` is a list without a template"))?
            }
            Some(_) => return Err(format!("{origin}: `chat_template` is neither a string nor a list of named templates")),
        };
        let token = |key: &str| match value.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => other.get("content").and_then(|c| c.as_str()).map(str::to_string),
            None => None,
        };
        let spec = TemplateSpec { template, bos_token: token("bos_token"), eos_token: token("eos_token") };
        // Refuse what cannot render now, not at the first chat.
        Template::new(&spec).map_err(|e| format!("{origin}: its chat_template: {e}"))?;
        Ok(Some(spec))
    }
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message { role: role.to_string(), content: content.to_string() }
    }
}

/// A parsed chat template, ready to render.
pub struct Template {
    env: minijinja::Environment<'static>,
    spec: TemplateSpec,
}

impl Template {
    pub fn new(spec: &TemplateSpec) -> Result<Self, String> {
        let mut env = minijinja::Environment::new();
        // As transformers' `apply_chat_template` sets up Jinja.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned("chat", spec.template.clone()).map_err(|e| e.to_string())?;
        Ok(Template { env, spec: spec.clone() })
    }

    /// `messages` as the model's prompt text, ending ready for the
    /// assistant's answer if `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        let template = self.env.get_template("chat").map_err(|e| e.to_string())?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.spec.bos_token.clone().unwrap_or_default(),
                eos_token => self.spec.eos_token.clone().unwrap_or_default(),
            })
            .map_err(|e| format!("the chat template: {e}"))
    }
}

/// How `q35-rt` talks to a model: its template (or ChatML) and the tokens
/// that end an assistant turn.
pub struct Chat {
    template: Template,
    /// Special tokens the template puts right after an assistant's text.
    end_of_turn: Vec<u32>,
}

impl Chat {
    /// The chat of an artifact with template `spec` (`None`: ChatML if the
    /// tokenizer has its markers, else no chat).
    pub fn new(spec: Option<&TemplateSpec>, tokenizer: &Tokenizer) -> Result<Option<Self>, String> {
        let spec = match spec {
            Some(spec) => spec.clone(),
            None if tokenizer.token_to_id(IM_START).is_some() && tokenizer.token_to_id(IM_END).is_some() => TemplateSpec {
                template: format!("{{% for m in messages %}}{IM_START}{{{{ m.role }}}}\n{{{{ m.content }}}}{IM_END}\n{{% endfor %}}{{% if add_generation_prompt %}}{IM_START}assistant\n{{% endif %}}"),
                bos_token: None,
                eos_token: None,
            },
            None => return Ok(None),
        };
        let template = Template::new(&spec)?;
        let end_of_turn = end_of_turn(&template, tokenizer)?;
        Ok(Some(Chat { template, end_of_turn }))
    }

    /// The prompt text for `messages`, ready for the assistant's answer.
    pub fn prompt(&self, messages: &[Message]) -> Result<String, String> {
        self.template.render(messages, true)
    }

    /// The tokens that end the assistant's turn.
    pub fn end_of_turn(&self) -> &[u32] {
        &self.end_of_turn
    }

    /// The BOS text the template writes itself, if any: then the prompt
    /// takes no second BOS token.
    pub fn bos_text(&self) -> Option<&str> {
        self.template.spec.bos_token.as_deref().filter(|b| !b.is_empty())
    }
}

/// The special tokens a template writes right after an assistant's
/// message: `<|im_end|>` (ChatML), `<|eot_id|>` (Llama 3),
/// `<end_of_turn>` (Gemma), `</s>` (Mistral), ...
fn end_of_turn(template: &Template, tokenizer: &Tokenizer) -> Result<Vec<u32>, String> {
    // A text no template changes and no tokenizer merges with its
    // neighbours' special tokens.
    const MARK: &str = "q35 end of turn probe";
    let turns = [Message::new("user", "hi"), Message::new("assistant", MARK)];
    let text = template.render(&turns, false)?;
    let Some(at) = text.rfind(MARK) else {
        return Ok(Vec::new());
    };
    let after = tokenizer.encode(&text[at + MARK.len()..]);
    // The special tokens before the first ordinary text (a newline may
    // come between them).
    Ok(after
        .iter()
        .copied()
        .take_while(|&id| tokenizer.is_special(id) || tokenizer.decode(&[id]).is_ok_and(|t| t.trim().is_empty()))
        .filter(|&id| tokenizer.is_special(id))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let json = r#"{
            "added_tokens": [
                {"id": 20, "content": "<|im_start|>", "special": true},
                {"id": 21, "content": "<|im_end|>", "special": true},
                {"id": 22, "content": "<end_of_turn>", "special": true},
                {"id": 23, "content": "<|eot_id|>", "special": true},
                {"id": 24, "content": "<bos>", "special": true}
            ],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true},
            "model": {"type": "BPE", "unk_token": "a", "vocab": {"a": 0, "b": 1, "Ċ": 2, "Ġ": 3, "h": 4, "i": 5},
                      "merges": []}
        }"#;
        Tokenizer::from_json_str(json, "test").unwrap()
    }

    /// SmolLM2's own template: a default system turn, ChatML turns.
    #[test]
    fn smollm2_template_adds_its_system_turn_and_ends_turns_with_im_end() {
        let config = r#"{"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"},
            "chat_template": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"}"#;
        let spec = TemplateSpec::from_tokenizer_config(config, "tokenizer_config.json").unwrap().unwrap();
        assert_eq!(spec.eos_token.as_deref(), Some("<|im_end|>"));
        let chat = Chat::new(Some(&spec), &tokenizer()).unwrap().unwrap();
        assert_eq!(
            chat.prompt(&[Message::new("user", "ab")]).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(chat.end_of_turn(), [21]);
    }

    /// Gemma-style: `raise_exception`, Python string methods, `trim`,
    /// block whitespace trimmed as transformers does; turns end with
    /// `<end_of_turn>`.
    #[test]
    fn gemma_style_template_renders_and_raises() {
        let template = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system turns') }}{% endif %}\n\
            {% for message in messages %}\n\
                {% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}\n\
                {{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}\n\
            {% endfor %}\n\
            {% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";
        let spec = TemplateSpec { template: template.into(), bos_token: Some("<bos>".into()), eos_token: None };
        let chat = Chat::new(Some(&spec), &tokenizer()).unwrap().unwrap();
        // The newline after `}}` stays (trim_blocks takes only a block
        // tag's), as Jinja renders it.
        assert_eq!(chat.prompt(&[Message::new("user", "  ab ")]).unwrap(), "<bos><start_of_turn>user\nab<end_of_turn>\n\n<start_of_turn>model\n");
        assert_eq!(chat.end_of_turn(), [22]);
        assert_eq!(chat.bos_text(), Some("<bos>"));
        let error = chat.prompt(&[Message::new("system", "x")]).unwrap_err();
        assert!(error.contains("no system turns"), "{error}");
        // A method templates call on strings, from Python.
        let spec = TemplateSpec { template: "{{ messages[0]['content'].strip().upper() }}{{ '<|eot_id|>' }}".into(), bos_token: None, eos_token: None };
        let chat = Chat::new(Some(&spec), &tokenizer()).unwrap().unwrap();
        assert_eq!(chat.prompt(&[Message::new("user", " ab ")]).unwrap(), "AB<|eot_id|>");
    }

    #[test]
    fn chatml_without_a_template_and_errors_name_the_file() {
        let chat = Chat::new(None, &tokenizer()).unwrap().unwrap();
        assert_eq!(chat.prompt(&[Message::new("user", "ab")]).unwrap(), "<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(chat.end_of_turn(), [21]);
        assert_eq!(TemplateSpec::from_tokenizer_config("{}", "t.json").unwrap(), None);
        let named = r#"{"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "{{ 1 }}"}]}"#;
        assert_eq!(TemplateSpec::from_tokenizer_config(named, "t.json").unwrap().unwrap().template, "{{ 1 }}");
        let error = TemplateSpec::from_tokenizer_config(r#"{"chat_template": "{% for %}"}"#, "dir/tokenizer_config.json").unwrap_err();
        assert!(error.starts_with("dir/tokenizer_config.json: its chat_template: "), "{error}");
    }
}
