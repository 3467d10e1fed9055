//! Reading a PTX module's kernel entries and their parameters, enough to
//! check them against the dispatch list without a GPU.

/// One `.entry` of a PTX module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxEntry {
    pub name: String,
    pub params: Vec<PtxParam>,
}

/// One `.param` of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxParam {
    /// The fundamental type: `.u64`, `.b32`, `.f32`, ...
    pub ty: String,
    /// Declared `.ptr` (a pointer kernel parameter).
    pub pointer: bool,
}

impl PtxParam {
    pub(super) fn is_64_bit(&self) -> bool {
        matches!(self.ty.as_str(), ".u64" | ".b64" | ".s64")
    }
}

/// Every kernel entry of a PTX module with its parameters, in order.
/// `//` and `/* */` comments are skipped; `.func`s are not entries.
pub fn ptx_entries(ptx: &str) -> Result<Vec<PtxEntry>, String> {
    let text = strip_comments(ptx);
    let mut entries = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = find_directive(rest, ".entry") {
        rest = rest[at + ".entry".len()..].trim_start();
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '%')))
            .unwrap_or(rest.len());
        let name = rest[..name_len].to_string();
        if name.is_empty() {
            return Err("an `.entry` directive has no name".into());
        }
        rest = rest[name_len..].trim_start();
        let mut params = Vec::new();
        if let Some(list) = rest.strip_prefix('(') {
            let close = list
                .find(')')
                .ok_or_else(|| format!("entry `{name}`: the parameter list is not closed"))?;
            for param in list[..close].split(',').map(str::trim) {
                if !param.is_empty() {
                    params.push(
                        parse_param(param)
                            .ok_or_else(|| format!("entry `{name}`: cannot read `{param}`"))?,
                    );
                }
            }
            rest = &list[close + 1..];
        }
        entries.push(PtxEntry { name, params });
    }
    Ok(entries)
}

/// The text with comments replaced by spaces (PTX has C-style comments;
/// a line comment's newline stays).
fn strip_comments(ptx: &str) -> String {
    let mut out = String::with_capacity(ptx.len());
    let mut rest = ptx;
    while let Some(at) = rest.find('/') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(body) = tail.strip_prefix("//") {
            out.push(' ');
            rest = &body[body.find('\n').unwrap_or(body.len())..];
        } else if let Some(body) = tail.strip_prefix("/*") {
            out.push(' ');
            rest = &body[body.find("*/").map_or(body.len(), |end| end + 2)..];
        } else {
            out.push('/');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The byte offset of `directive` as a whole word in `text`.
fn find_directive(text: &str, directive: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text[from..].find(directive) {
        let at = from + at;
        let end = at + directive.len();
        let before = text[..at]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace);
        let after = text[end..].chars().next().is_none_or(char::is_whitespace);
        if before && after {
            return Some(at);
        }
        from = end;
    }
    None
}

/// `.param .u64 .ptr .align 1 name` → type `.u64`, pointer.
fn parse_param(text: &str) -> Option<PtxParam> {
    let mut words = text.split_whitespace();
    if words.next()? != ".param" {
        return None;
    }
    let words: Vec<&str> = words.collect();
    let fundamental = |w: &str| {
        w.strip_prefix('.').is_some_and(|t| {
            let (class, bits) = t.split_at(1.min(t.len()));
            matches!(class, "u" | "s" | "b" | "f") && matches!(bits, "8" | "16" | "32" | "64")
        })
    };
    Some(PtxParam {
        ty: words.iter().find(|w| fundamental(w))?.to_string(),
        pointer: words.contains(&".ptr"),
    })
}

