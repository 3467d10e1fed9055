//! A context with every dialect q35 needs, and diagnostics collected for
//! the user instead of printed by MLIR or lost.

use crate::{Error, Result, IRDL_SOURCE};
use melior::{
    diagnostic::DiagnosticSeverity,
    dialect::DialectRegistry,
    ir::{operation::OperationLike, Location, Module},
    utility::{
        load_irdl_dialects, register_all_dialects, register_all_llvm_translations,
        register_all_passes,
    },
    Context,
};
use std::{
    fmt,
    sync::{Arc, Mutex},
};

/// One diagnostic as MLIR reported it, with its location resolved to
/// `file:line:col` where MLIR knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: &'static str,
    pub location: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.location, self.severity, self.message)
    }
}

/// Diagnostics collected from a context. MLIR may report from worker
/// threads (parallel verification), hence the mutex.
#[derive(Clone, Default)]
pub struct Diagnostics(Arc<Mutex<Vec<Diagnostic>>>);

impl Diagnostics {
    /// Takes every diagnostic collected so far.
    pub fn take(&self) -> Vec<Diagnostic> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Takes the collected diagnostics rendered one per line, naming
    /// `path` where MLIR only knew the buffer by an internal name.
    pub fn take_rendered(&self, path: &str) -> String {
        let rendered: Vec<String> = self
            .take()
            .into_iter()
            .map(|mut d| {
                d.location = rename_buffer(&d.location, path);
                d.to_string()
            })
            .collect();
        if rendered.is_empty() {
            format!("{path}: error: MLIR reported failure without a diagnostic")
        } else {
            rendered.join("\n")
        }
    }

    fn push(&self, diagnostic: Diagnostic) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(diagnostic);
    }
}

/// MLIR names a buffer parsed from a string `-`; say which file it was.
fn rename_buffer(location: &str, path: &str) -> String {
    match location.strip_prefix("-:") {
        Some(rest) => format!("{path}:{rest}"),
        None => location.to_string(),
    }
}

/// MLIR's verifier often says only "op expects ..." or "expected base type
/// ..." and names the op in a note ("see current operation: ..."). Put the
/// op's name in the message itself so one line says what is wrong where.
fn name_the_op(message: String, notes: &[Diagnostic]) -> String {
    let op = notes.iter().find_map(|note| {
        let text = note.message.strip_prefix("see current operation: ")?;
        let start = text.find('"')? + 1;
        let end = start + text[start..].find('"')?;
        Some(text[start..end].to_string())
    });
    match op {
        Some(op) if !message.contains(&format!("'{op}'")) => match message.strip_prefix("op ") {
            Some(rest) => format!("'{op}' op {rest}"),
            None => format!("'{op}' op {message}"),
        },
        _ => message,
    }
}

/// Renders an MLIR location as `file:line:col`, taking the first file
/// position inside name, call-site and fused locations, or MLIR's own text
/// when there is none. Works on the printed form: melior's string getters
/// are unsound for empty strings.
pub fn render_location(location: Location) -> String {
    let text = location.to_string();
    file_line_col(&text).unwrap_or(text)
}

/// Finds `"file":line:col` in a printed location.
fn file_line_col(text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(open) = rest.find('"') {
        let after = &rest[open + 1..];
        let close = after.find('"')?;
        let file = &after[..close];
        let tail = &after[close + 1..];
        let numbers: Vec<&str> = tail
            .strip_prefix(':')
            .map(|t| t.splitn(3, |c: char| !c.is_ascii_digit()).take(2).collect())
            .unwrap_or_default();
        if let [line, col] = numbers[..] {
            if !line.is_empty() && !col.is_empty() {
                let file = if file.is_empty() { "-" } else { file };
                return Some(format!("{file}:{line}:{col}"));
            }
        }
        rest = tail;
    }
    None
}

/// An MLIR context with all upstream dialects registered and loaded, the
/// `q35` dialect loaded from its IRDL definition, and a diagnostic
/// collector attached.
pub struct Q35Context {
    context: Context,
    diagnostics: Diagnostics,
}

impl Q35Context {
    /// Creates the context and loads the dialects.
    pub fn new() -> Result<Self> {
        let registry = DialectRegistry::new();
        register_all_dialects(&registry);
        let context = Context::new();
        context.append_dialect_registry(&registry);
        context.load_all_available_dialects();
        register_all_llvm_translations(&context);
        // Upstream passes must be registered for textual pipelines to name them.
        register_all_passes();

        let diagnostics = Diagnostics::default();
        let sink = diagnostics.clone();
        context.attach_diagnostic_handler(move |diagnostic| {
            let severity = match diagnostic.severity() {
                DiagnosticSeverity::Error => "error",
                DiagnosticSeverity::Warning => "warning",
                DiagnosticSeverity::Note => "note",
                DiagnosticSeverity::Remark => "remark",
            };
            let notes: Vec<Diagnostic> = (0..diagnostic.note_count())
                .filter_map(|index| diagnostic.note(index).ok())
                .map(|note| Diagnostic {
                    severity: "note",
                    location: render_location(note.location()),
                    message: note.to_string(),
                })
                .collect();
            let message = name_the_op(diagnostic.to_string(), &notes);
            sink.push(Diagnostic {
                severity,
                location: render_location(diagnostic.location()),
                message,
            });
            for note in notes {
                sink.push(note);
            }
            // Handled: MLIR must not also print it to stderr.
            true
        });

        let this = Self {
            context,
            diagnostics,
        };
        this.load_q35()?;
        Ok(this)
    }

    fn load_q35(&self) -> Result<()> {
        let module = Module::parse(&self.context, IRDL_SOURCE)
            .ok_or_else(|| Error::DialectLoad(self.diagnostics.take_rendered("q35.irdl.mlir")))?;
        if !load_irdl_dialects(&module) {
            return Err(Error::DialectLoad(
                self.diagnostics.take_rendered("q35.irdl.mlir"),
            ));
        }
        Ok(())
    }

    pub fn context(&self) -> &Context {
        &self.context
    }

    pub fn diagnostics(&self) -> &Diagnostics {
        &self.diagnostics
    }

    /// Parses MLIR text read from `path` and runs MLIR's verifier on it.
    /// Errors carry every diagnostic, located in `path`.
    pub fn parse(&self, source: &str, path: &str) -> Result<Module<'_>> {
        if let Some(offset) = source.find('\0') {
            return Err(Error::NulByte {
                path: path.to_string(),
                offset,
            });
        }
        self.diagnostics.take();
        let module = Module::parse(&self.context, source).ok_or_else(|| Error::Parse {
            path: path.to_string(),
            diagnostics: self.diagnostics.take_rendered(path),
        })?;
        if !module.as_operation().verify() {
            return Err(Error::Verify {
                path: path.to_string(),
                diagnostics: self.diagnostics.take_rendered(path),
            });
        }
        Ok(module)
    }
}

#[cfg(test)]
mod tests {
    use super::file_line_col;

    #[test]
    fn finds_positions_in_printed_locations() {
        assert_eq!(file_line_col(r#"loc("-":5:8)"#).as_deref(), Some("-:5:8"));
        assert_eq!(
            file_line_col(r#"loc("model.layers.0"("m.safetensors":3:1))"#).as_deref(),
            Some("m.safetensors:3:1")
        );
        assert_eq!(file_line_col("loc(unknown)"), None);
    }
}
