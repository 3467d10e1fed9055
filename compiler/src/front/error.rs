//! The front end's one error type. Every message names the file and, where
//! it applies, the tensor or configuration field, with what was expected
//! and what was found: these messages are read by people (DESIGN.md,
//! principle 6), so they carry the whole story in their `Display` and do
//! not rely on a `source()` chain. Names and values from the file are shown
//! through [`quote`]: a 10 MB tensor name prints as its first 40 characters
//! and its length.

pub(crate) use q35_format::quote::{clip, quote};
use std::{
    io,
    path::{Path, PathBuf},
};

/// The front end's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How many names a list in a message shows before "and N more".
const NAMES_SHOWN: usize = 8;

/// Everything that can go wrong reading a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {error}", .path.display())]
    Io { path: PathBuf, error: io::Error },

    /// The file's structure is broken: truncated, a lying header, bad JSON.
    #[error("{}: {message}", .path.display())]
    Malformed { path: PathBuf, message: String },

    /// One tensor's entry is broken or cannot be used.
    #[error("{}: tensor {}: {message}", .path.display(), quote(.tensor))]
    Tensor {
        path: PathBuf,
        tensor: String,
        message: String,
    },

    /// A configuration field (config.json key or GGUF metadata key) is
    /// missing or has an unusable value; `field` is a name q35 asked for,
    /// never one read from the file.
    #[error("{}: `{field}`: {message}", .path.display())]
    Config {
        path: PathBuf,
        field: String,
        message: String,
    },

    /// The model is not of an architecture the compiler supports.
    #[error("{}: unsupported architecture {found}; q35 supports {supported}", .path.display())]
    UnsupportedArchitecture {
        path: PathBuf,
        found: String,
        supported: &'static str,
    },

    /// The tensors present are not the set the architecture needs.
    #[error("{}: {}", .path.display(), describe_tensor_set(.architecture, .missing, .unexpected, .hint))]
    TensorSet {
        path: PathBuf,
        architecture: String,
        missing: Box<[String]>,
        unexpected: Box<[String]>,
        hint: Option<&'static str>,
    },

    /// A tensor is present with the wrong shape.
    #[error("{}: tensor {}{} has shape {found:?}, expected {expected:?} = {meaning}",
        .path.display(), quote(.tensor), .stored_as.as_ref().map_or(String::new(), |s| format!(" ({} in the file)", quote(s))))]
    Shape {
        path: PathBuf,
        tensor: String,
        /// The name in the file when it differs (GGUF).
        stored_as: Option<Box<str>>,
        expected: Box<[usize]>,
        found: Box<[usize]>,
        meaning: &'static str,
    },

    /// A tensor was asked for by a name the model does not have.
    #[error("{}: no tensor named {}", .path.display(), quote(.tensor))]
    NoSuchTensor { path: PathBuf, tensor: String },

    /// The tokenizer is one the runtime would refuse; the message is the
    /// runtime loader's own, naming the file (whole: not a source).
    #[error("{0}")]
    Tokenizer(Box<q35_rt::tokenizer::TokenizerError>),
}

impl From<q35_rt::tokenizer::TokenizerError> for Error {
    fn from(error: q35_rt::tokenizer::TokenizerError) -> Self {
        Error::Tokenizer(Box::new(error))
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, error: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }

    pub(crate) fn malformed(path: &Path, message: impl Into<String>) -> Self {
        Error::Malformed {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn tensor(
        path: &Path,
        tensor: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Tensor {
            path: path.to_path_buf(),
            tensor: tensor.into(),
            message: message.into(),
        }
    }

    pub(crate) fn config(
        path: &Path,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Config {
            path: path.to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }
}

fn describe_tensor_set(
    architecture: &str,
    missing: &[String],
    unexpected: &[String],
    hint: &Option<&str>,
) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "missing {} tensor(s): {}",
            missing.len(),
            name_list(missing)
        ));
    }
    if !unexpected.is_empty() {
        parts.push(format!(
            "unexpected {} tensor(s): {}",
            unexpected.len(),
            name_list(unexpected)
        ));
    }
    let mut text = format!("tensors do not match {architecture}: {}", parts.join("; "));
    if let Some(hint) = hint {
        text.push_str(" (");
        text.push_str(hint);
        text.push(')');
    }
    text
}

/// `a`, `b`, `c` and 5 more: enough to recognise a naming problem without
/// flooding the terminal with hundreds of names.
pub(crate) fn name_list(names: &[String]) -> String {
    let shown: Vec<String> = names.iter().take(NAMES_SHOWN).map(|n| quote(n)).collect();
    let mut text = shown.join(", ");
    if names.len() > NAMES_SHOWN {
        text.push_str(&format!(" and {} more", names.len() - NAMES_SHOWN));
    }
    text
}
