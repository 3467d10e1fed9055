//! A model's tensors by Hugging Face name, kept in their memory-mapped
//! files and converted to f32 only when asked for.
//!
//! The readers (`safetensors`, `gguf`) check every range against its file
//! and every byte length against dtype and shape before a tensor is
//! inserted here, so reading one later cannot go out of bounds.

use super::{
    dtype::{element_count, DType},
    error::{Error, Result},
    rope_rows::unpermute_rope_rows,
};
use memmap2::Mmap;
use std::{
    collections::BTreeMap,
    ops::Range,
    path::{Path, PathBuf},
};

/// Row order of a stored tensor relative to Hugging Face's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RowOrder {
    /// Stored as HF has it.
    Hf,
    /// A GGUF `attn_q`/`attn_k` weight whose rows llama.cpp's converter
    /// interleaved per head for its RoPE; undone when read.
    GgufRope { heads: usize },
}

/// Where and how one tensor is stored.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The name inside its file (the GGUF name for GGUF tensors).
    pub stored_name: String,
    /// HF shape (row-major, last dimension contiguous).
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// Index into [`Tensors::files`].
    pub file: usize,
    /// Byte range in the file, checked against the file and dtype × shape.
    pub range: Range<usize>,
    pub rows: RowOrder,
}

struct SourceFile {
    path: PathBuf,
    map: Mmap,
}

/// The tensors of a model, by Hugging Face name.
#[derive(Default)]
pub struct Tensors {
    files: Vec<SourceFile>,
    entries: BTreeMap<String, Entry>,
}

/// One tensor of a [`Tensors`].
#[derive(Clone, Copy)]
pub struct Tensor<'a> {
    name: &'a str,
    entry: &'a Entry,
    file: &'a SourceFile,
}

impl std::fmt::Debug for Tensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensors")
            .field(
                "files",
                &self.files.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl Tensors {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Keeps a mapped file; returns its index for [`Entry::file`].
    pub(crate) fn add_file(&mut self, path: PathBuf, map: Mmap) -> usize {
        self.files.push(SourceFile { path, map });
        self.files.len() - 1
    }

    /// Adds a tensor; a name given twice is an error naming both files.
    pub(crate) fn insert(&mut self, name: String, entry: Entry) -> Result<()> {
        let path = self.file_path(entry.file).to_path_buf();
        if let Some(first) = self.entries.get(&name) {
            let first_path = self.file_path(first.file).display().to_string();
            return Err(Error::tensor(
                &path,
                name,
                format!("appears twice (also in {first_path})"),
            ));
        }
        self.entries.insert(name, entry);
        Ok(())
    }

    fn file_path(&self, index: usize) -> &Path {
        self.files
            .get(index)
            .map_or(Path::new("?"), |f| f.path.as_path())
    }

    /// The tensor called `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<Tensor<'_>> {
        let (name, entry) = self.entries.get_key_value(name)?;
        let file = self.files.get(entry.file)?;
        Some(Tensor { name, entry, file })
    }

    /// The tensor called `name`, or an error naming it and the model file.
    pub fn tensor(&self, name: &str) -> Result<Tensor<'_>> {
        self.get(name).ok_or_else(|| Error::NoSuchTensor {
            path: self.file_path(0).to_path_buf(),
            tensor: name.to_string(),
        })
    }

    /// The shape of the tensor called `name`.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The tensor called `name` as f32, in HF layout.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.tensor(name)?.to_f32()
    }

    /// Tensor names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// All tensors in name order.
    pub fn iter(&self) -> impl Iterator<Item = Tensor<'_>> {
        self.entries.keys().filter_map(|name| self.get(name))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The files the tensors live in.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }
}

impl<'a> Tensor<'a> {
    /// The Hugging Face name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The name inside the file (differs from [`Tensor::name`] for GGUF).
    pub fn stored_name(&self) -> &'a str {
        &self.entry.stored_name
    }

    /// The HF shape, e.g. `[out_features, in_features]` for a linear weight.
    pub fn shape(&self) -> &'a [usize] {
        &self.entry.shape
    }

    /// How the elements are stored.
    pub fn dtype(&self) -> DType {
        self.entry.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        element_count(&self.entry.shape).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file the tensor is stored in.
    pub fn path(&self) -> &'a Path {
        &self.file.path
    }

    /// The stored bytes, in the file's row order (see [`Tensor::to_f32`]).
    pub fn bytes(&self) -> Result<&'a [u8]> {
        self.file.map.get(self.entry.range.clone()).ok_or_else(|| {
            self.error(format!(
                "byte range {:?} is outside the file",
                self.entry.range
            ))
        })
    }

    /// The values as f32 in HF layout: dequantized, and for GGUF q/k
    /// weights with llama.cpp's RoPE row interleaving undone.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let values = self
            .entry
            .dtype
            .to_f32(self.bytes()?)
            .map_err(|m| self.error(m))?;
        if values.len() != self.len() {
            return Err(self.error(format!(
                "decoded {} values, but shape {:?} has {}",
                values.len(),
                self.entry.shape,
                self.len()
            )));
        }
        match self.entry.rows {
            RowOrder::Hf => Ok(values),
            RowOrder::GgufRope { heads } => {
                let (rows, cols) = match self.entry.shape.as_slice() {
                    [rows, cols] => (*rows, *cols),
                    shape => {
                        return Err(self.error(format!("expected a matrix, found shape {shape:?}")))
                    }
                };
                unpermute_rope_rows(&values, rows, cols, heads).map_err(|m| self.error(m))
            }
        }
    }

    fn error(&self, message: String) -> Error {
        Error::tensor(&self.file.path, self.entry.stored_name.clone(), message)
    }
}
