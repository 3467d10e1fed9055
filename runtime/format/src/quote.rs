//! User-controlled text in error messages.
//!
//! Token strings, tensor and weight names and JSON values come from files
//! anyone can write: a message must stay one readable line even when such a
//! string is 10 MB long or holds control characters, so every tool quotes
//! them through [`quote`] (a name, a token) or [`clip`] (a whole message
//! from a library, such as a serde error, that may embed one).

/// Characters of a quoted string shown before it is cut.
pub const QUOTE_CHARS: usize = 40;

/// Characters [`clip`] keeps: this many from the start, a quarter of it
/// from the end.
pub const CLIP_CHARS: usize = 160;

/// `text` in backticks for a message: its first [`QUOTE_CHARS`]
/// characters, control characters escaped (`\n`, `\u{1b}`), and, when it
/// is longer, `…` and its length in bytes:
/// `` `aaaaaaaa…` (10485760 bytes) ``.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(QUOTE_CHARS + 2);
    out.push('`');
    let mut chars = text.chars();
    for c in chars.by_ref().take(QUOTE_CHARS) {
        push_escaped(&mut out, c);
    }
    if chars.next().is_some() {
        out.push_str(&format!("…` ({} bytes)", text.len()));
    } else {
        out.push('`');
    }
    out
}

/// A free-form message (a library's error text, which may quote input)
/// kept to one short line: control characters escaped, and if it is longer
/// than [`CLIP_CHARS`] characters, its start and end around
/// `…[N bytes cut]…`, so both what went wrong and where (serde's
/// `at line L column C`) stay readable.
pub fn clip(text: &str) -> String {
    let count = text.chars().count();
    let tail = CLIP_CHARS / 4;
    let mut out = String::new();
    if count <= CLIP_CHARS + tail {
        text.chars().for_each(|c| push_escaped(&mut out, c));
        return out;
    }
    let head_end = text
        .char_indices()
        .nth(CLIP_CHARS)
        .map_or(text.len(), |(i, _)| i);
    let tail_start = text
        .char_indices()
        .nth(count - tail)
        .map_or(text.len(), |(i, _)| i);
    text[..head_end]
        .chars()
        .for_each(|c| push_escaped(&mut out, c));
    out.push_str(&format!("…[{} bytes cut]…", tail_start - head_end));
    text[tail_start..]
        .chars()
        .for_each(|c| push_escaped(&mut out, c));
    out
}

fn push_escaped(out: &mut String, c: char) {
    if c.is_control() {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole() {
        assert_eq!(quote("model.norm.weight"), "`model.norm.weight`");
        assert_eq!(quote(""), "``");
        assert_eq!(quote("a\nb\u{1b}[31m"), "`a\\nb\\u{1b}[31m`");
        let forty = "é".repeat(QUOTE_CHARS);
        assert_eq!(quote(&forty), format!("`{forty}`"));
    }

    #[test]
    fn long_text_is_cut_with_its_length() {
        let long = "x".repeat(10 << 20);
        assert_eq!(
            quote(&long),
            format!("`{}…` (10485760 bytes)", "x".repeat(QUOTE_CHARS))
        );
        // Multi-byte characters are never split.
        let wide = "日".repeat(100);
        assert_eq!(
            quote(&wide),
            format!("`{}…` (300 bytes)", "日".repeat(QUOTE_CHARS))
        );
    }

    #[test]
    fn clip_keeps_start_and_end() {
        assert_eq!(clip("short message"), "short message");
        let message = format!(
            "invalid type: string \"{}\", expected u32 at line 1 column 99",
            "A".repeat(1 << 20)
        );
        let clipped = clip(&message);
        assert!(
            clipped.starts_with("invalid type: string \"AAAA"),
            "{clipped}"
        );
        assert!(
            clipped.ends_with("\", expected u32 at line 1 column 99"),
            "{clipped}"
        );
        assert!(clipped.contains("bytes cut]…"), "{clipped}");
        assert!(
            clipped.chars().count() < CLIP_CHARS + CLIP_CHARS / 4 + 30,
            "{clipped}"
        );
    }
}
