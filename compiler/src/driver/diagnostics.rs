//! `--verify-diagnostics`: checks the diagnostics a run produced against
//! `// expected-error@+N {{text}}` annotations in the input, in the manner
//! of `mlir-opt -verify-diagnostics`, so lit tests can state exactly which
//! line fails and why.

/// One expectation: severity, the line it refers to, and a substring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub severity: String,
    pub line: usize,
    pub text: String,
    /// Line of the annotation itself, for messages.
    pub written_at: usize,
}

/// One reported diagnostic, parsed from `file:line:col: severity: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub severity: String,
    pub line: Option<usize>,
    pub message: String,
}

/// Collects `expected-<severity>[@+N|@-N] {{text}}` annotations.
pub fn expectations(source: &str) -> Result<Vec<Expected>, String> {
    let mut out = Vec::new();
    for (index, line) in source.lines().enumerate() {
        let line_no = index + 1;
        let Some(at) = line.find("expected-") else { continue };
        let rest = &line[at + "expected-".len()..];
        let severity_end = rest.find(['@', ' ', '{']).unwrap_or(rest.len());
        let severity = &rest[..severity_end];
        if !["error", "warning", "note", "remark"].contains(&severity) {
            continue;
        }
        let mut rest = &rest[severity_end..];
        let mut target = line_no;
        if let Some(offset) = rest.strip_prefix('@') {
            let end = offset.find([' ', '{']).unwrap_or(offset.len());
            let delta = &offset[..end];
            let parsed = match delta.as_bytes().first() {
                Some(b'+') => delta[1..].parse::<usize>().ok().map(|d| line_no + d),
                Some(b'-') => delta[1..].parse::<usize>().ok().and_then(|d| line_no.checked_sub(d)),
                _ => None,
            };
            target = parsed.ok_or_else(|| format!("line {line_no}: bad offset `@{delta}`"))?;
            rest = &offset[end..];
        }
        let text = rest
            .trim_start()
            .strip_prefix("{{")
            .and_then(|r| r.find("}}").map(|end| r[..end].to_string()))
            .ok_or_else(|| format!("line {line_no}: expected-{severity} needs {{{{text}}}}"))?;
        out.push(Expected {
            severity: severity.to_string(),
            line: target,
            text,
            written_at: line_no,
        });
    }
    Ok(out)
}

/// Parses the diagnostic lines of an error report.
pub fn reported(report: &str) -> Vec<Reported> {
    report
        .lines()
        .filter_map(|line| {
            for severity in ["error", "warning", "note", "remark"] {
                let marker = format!(": {severity}: ");
                if let Some(pos) = line.find(&marker) {
                    let location = &line[..pos];
                    let mut parts = location.rsplitn(3, ':');
                    let _col = parts.next();
                    let line_no = parts.next().and_then(|l| l.parse().ok());
                    return Some(Reported {
                        severity: severity.to_string(),
                        line: line_no,
                        message: line[pos + marker.len()..].to_string(),
                    });
                }
            }
            None
        })
        .collect()
}

/// Matches reported diagnostics against expectations; notes are only
/// required to match when expected. Returns the mismatches, one per line.
pub fn check(expected: &[Expected], reported: &[Reported]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut used = vec![false; reported.len()];
    for e in expected {
        let found = reported.iter().enumerate().position(|(i, r)| {
            !used[i] && r.severity == e.severity && r.line == Some(e.line) && r.message.contains(&e.text)
        });
        match found {
            Some(i) => used[i] = true,
            None => problems.push(format!(
                "line {}: expected {} on line {} containing `{}` was not produced",
                e.written_at, e.severity, e.line, e.text
            )),
        }
    }
    for (r, used) in reported.iter().zip(used) {
        if !used && r.severity != "note" {
            problems.push(format!(
                "unexpected {} on line {}: {}",
                r.severity,
                r.line.map_or("?".to_string(), |l| l.to_string()),
                r.message
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_annotations() {
        let src = "a\n// expected-error@+1 {{bad thing}}\nb\nc // expected-error {{here}}\n";
        let e = expectations(src).unwrap();
        assert_eq!(e[0].line, 3);
        assert_eq!(e[0].text, "bad thing");
        assert_eq!(e[1].line, 4);
    }

    #[test]
    fn matches_and_reports_mismatch() {
        let e = expectations("// expected-error@+1 {{K}}\nx\n").unwrap();
        let ok = reported("f.mlir:2:3: error: 'q35.dequant_matmul' op x's last dimension (K) is 512");
        assert!(check(&e, &ok).is_empty());
        let wrong_line = reported("f.mlir:5:3: error: K");
        assert_eq!(check(&e, &wrong_line).len(), 2);
    }
}
