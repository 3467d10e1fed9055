//! Splitting text into pre-tokens before BPE (see the module docs of
//! [`crate::tokenizer`] for the character classes and their divergence from
//! the regex).

/// Splits around numeric characters, each numeric character its own piece
/// (Hugging Face's `Digits { individual_digits: true }`, which uses
/// `char::is_numeric`, so `²` and `½` split too).
pub(super) fn split_digits<'a>(text: &'a str, out: &mut Vec<&'a str>) {
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c.is_numeric() {
            if start < i {
                out.push(&text[start..i]);
            }
            out.push(&text[i..i + c.len_utf8()]);
            start = i + c.len_utf8();
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
}

fn is_letter(c: char) -> bool {
    c.is_alphabetic() && !c.is_numeric()
}

fn is_other(c: char) -> bool {
    !c.is_whitespace() && !c.is_alphabetic() && !c.is_numeric()
}

/// Splits `text` as GPT-2's pre-tokenizer regex does (see the module docs
/// for the character classes):
///
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
pub fn gpt2_split(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let offset = |i: usize| chars.get(i).map_or(text.len(), |&(o, _)| o);
    // End of the run of chars satisfying `class` starting at `i`.
    let run = |mut i: usize, class: fn(char) -> bool| {
        while at(i).is_some_and(class) {
            i += 1;
        }
        i
    };
    let mut words = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        let end = if let Some(len) = contraction(&chars[i..]) {
            i + len
        } else {
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`, in that order.
            let body = if c == ' ' { i + 1 } else { i };
            let class: Option<fn(char) -> bool> = match at(body) {
                Some(d) if is_letter(d) => Some(is_letter),
                Some(d) if d.is_numeric() => Some(char::is_numeric),
                Some(d) if is_other(d) => Some(is_other),
                _ => None,
            };
            match class {
                Some(class) => run(body, class),
                None => {
                    // Whitespace: `\s+(?!\S)` leaves the last space of a run
                    // that is followed by a non-space to the next word;
                    // `\s+` takes a single one.
                    let ws_end = run(i, char::is_whitespace);
                    if ws_end < chars.len() && ws_end - i > 1 {
                        ws_end - 1
                    } else {
                        ws_end
                    }
                }
            }
        };
        words.push(&text[offset(i)..offset(end)]);
        i = end;
    }
    words
}

/// Length in chars of a contraction (`'s|'t|'re|'ve|'m|'ll|'d`, lower case
/// only, as in GPT-2) at the start of `chars`.
fn contraction(chars: &[(usize, char)]) -> Option<usize> {
    let c = |i: usize| chars.get(i).map(|&(_, c)| c);
    if c(0) != Some('\'') {
        return None;
    }
    match (c(1), c(2)) {
        (Some('s' | 't' | 'm' | 'd'), _) => Some(2),
        (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => Some(3),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_split_matches_the_regex() {
        let cases: &[(&str, &[&str])] = &[
            ("Hello world", &["Hello", " world"]),
            (
                "I'm he's we'll they're",
                &["I", "'m", " he", "'s", " we", "'ll", " they", "'re"],
            ),
            ("DON'T 'S", &["DON", "'", "T", " '", "S"]),
            ("a  b", &["a", " ", " b"]),
            ("a   \n b", &["a", "   \n", " b"]),
            ("a\n\nb", &["a", "\n", "\n", "b"]),
            ("end  ", &["end", "  "]),
            ("x=1.5!!", &["x", "=", "1", ".", "5", "!!"]),
            (" 12 ab", &[" 12", " ab"]),
            ("''s", &["''", "s"]),
            ("日本語 テスト", &["日本語", " テスト"]),
            ("Ⅳ²", &["Ⅳ²"]), // both \p{N} (Nl, No)
            ("🦀🚀 ok", &["🦀🚀", " ok"]),
            ("", &[]),
        ];
        for (text, expected) in cases {
            assert_eq!(gpt2_split(text), *expected, "splitting {text:?}");
        }
    }
}
