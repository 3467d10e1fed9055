//! GGUF, llama.cpp's model file (versions 2 and 3, little-endian):
//!
//! ```text
//! "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//! kv_count × (string key, u32 value type, value)        metadata
//! tensor_count × (string name, u32 n_dims, n_dims × u64 ne,
//!                 u32 ggml type, u64 offset)             tensor infos
//! padding to `general.alignment` (default 32)
//! data section; each tensor at data start + its offset
//! ```
//!
//! Strings are a u64 length and UTF-8 bytes; arrays a u32 element type, a
//! u64 count and the elements. `ne[0]` is the row length, so the Hugging
//! Face shape is `ne` reversed, and the data is already in HF's row-major
//! order (except for q/k, see [`layout`]).
//!
//! Every length, count and offset is checked against the file before it
//! is used: a truncated or lying file gives an error naming the file,
//! the byte offset and what was being read, never a panic.

pub mod ggml;
pub mod layout;
#[cfg(test)]
pub(crate) mod test_writer;
pub mod tokenizer;
mod value;

use super::{
    config::{ModelConfig, LLAMA_ARCHITECTURE},
    dtype::DType,
    error::{clip, quote, Error, Result},
    safetensors::{check_overlaps, map_file, HeaderEntry},
    tensors::{Entry, RowOrder, Tensors},
    Model,
};
use ggml::{GgmlType, SUPPORTED_TYPES};
use layout::RopeHeads;
use memmap2::Mmap;
use std::{
    collections::BTreeMap,
    ops::Range,
    path::{Path, PathBuf},
};
pub use tokenizer::GgufTokenizer;
pub use value::Value;

/// The first four bytes of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal; a bound keeps a hostile file from
/// recursing the reader into a stack overflow.
const MAX_ARRAY_DEPTH: usize = 8;
const LLAMA: &str = "llama";

/// One tensor as the file describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// ggml's `ne`: `ne[0]` is the row length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// The Hugging Face shape: `dims` reversed.
    pub shape: Vec<usize>,
    /// `None` for a ggml type q35 does not read.
    pub dtype: Option<DType>,
    /// Absolute byte range in the file (`None` with `dtype`).
    pub range: Option<Range<usize>>,
}

/// A parsed GGUF file, memory-mapped.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: usize,
    /// Absolute offset of the data section.
    pub data_start: usize,
    map: Mmap,
}

/// Everything parsed from a GGUF file except the map itself.
struct Parsed {
    version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    alignment: usize,
    data_start: usize,
}

impl GgufFile {
    /// Maps and parses a GGUF file; all ranges are checked.
    pub fn open(path: &Path) -> Result<Self> {
        let map = map_file(path)?;
        let p = parse(path, &map)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            version: p.version,
            metadata: p.metadata,
            tensors: p.tensors,
            alignment: p.alignment,
            data_start: p.data_start,
            map,
        })
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// The stored bytes of a tensor of a supported type.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Option<&[u8]> {
        self.map.get(info.range.clone()?)
    }

    fn error(&self, key: &str, message: impl Into<String>) -> Error {
        Error::config(&self.path, key, message)
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        read: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => read(v).map(Some).ok_or_else(|| {
                self.error(key, format!("expected {expected}, found {}", v.type_name()))
            }),
        }
    }

    pub(crate) fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.opt_u64(key)? {
            None => Ok(None),
            Some(v) => usize::try_from(v)
                .map(Some)
                .map_err(|_| self.error(key, format!("{v} is too large"))),
        }
    }

    fn req_usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.error(key, "missing; a llama GGUF needs it"))
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "a string", Value::as_str)
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", Value::as_bool)
    }

    pub(crate) fn opt_array(&self, key: &str) -> Result<Option<&[Value]>> {
        self.typed(key, "an array", Value::as_array)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.opt_str("general.architecture")?
            .ok_or_else(|| self.error("general.architecture", "missing"))
    }

    /// The model configuration from `llama.*` metadata, validated.
    pub fn config(&self) -> Result<ModelConfig> {
        let arch = self.architecture()?;
        if arch != LLAMA {
            return Err(Error::UnsupportedArchitecture {
                path: self.path.clone(),
                found: format!("{} (general.architecture)", quote(arch)),
                supported: "`llama` GGUF files (LlamaForCausalLM)",
            });
        }
        let key = |k: &str| format!("{LLAMA}.{k}");
        if let Some(experts) = self.opt_u64(&key("expert_count"))?.filter(|&n| n > 0) {
            return Err(self.error(
                &key("expert_count"),
                format!("a mixture of {experts} experts is not supported; q35 supports dense Llama models"),
            ));
        }
        if let Some(scaling) = self
            .opt_str(&key("rope.scaling.type"))?
            .filter(|&s| s != "none")
        {
            return Err(self.error(
                &key("rope.scaling.type"),
                format!(
                    "RoPE scaling {} is not supported; q35 implements plain RoPE",
                    quote(scaling)
                ),
            ));
        }
        let hidden_size = self.req_usize(&key("embedding_length"))?;
        let num_attention_heads = self.req_usize(&key("attention.head_count"))?;
        let head_dim = match self.opt_usize(&key("attention.key_length"))? {
            Some(head_dim) => head_dim,
            None if num_attention_heads > 0 && hidden_size % num_attention_heads == 0 => {
                hidden_size / num_attention_heads
            }
            None => {
                return Err(self.error(
                    &key("embedding_length"),
                    format!(
                        "{hidden_size} is not divisible by attention.head_count {num_attention_heads}, \
                         and there is no attention.key_length to say the head width"
                    ),
                ))
            }
        };
        if let Some(v) = self
            .opt_usize(&key("attention.value_length"))?
            .filter(|&v| v != head_dim)
        {
            return Err(self.error(
                &key("attention.value_length"),
                format!("{v} differs from the key length {head_dim}; q35 needs them equal"),
            ));
        }
        if let Some(d) = self
            .opt_usize(&key("rope.dimension_count"))?
            .filter(|&d| d != head_dim)
        {
            return Err(self.error(
                &key("rope.dimension_count"),
                format!(
                    "RoPE over {d} of {head_dim} head dimensions is not supported; q35 rotates all"
                ),
            ));
        }
        let vocab_size = match self.opt_usize(&key("vocab_size"))? {
            Some(n) => n,
            None => self
                .opt_array("tokenizer.ggml.tokens")?
                .map(<[Value]>::len)
                .ok_or_else(|| {
                    self.error(
                        &key("vocab_size"),
                        "missing, and so is tokenizer.ggml.tokens",
                    )
                })?,
        };
        let f64_key = |k: &str| -> Result<Option<f64>> { self.typed(k, "a number", Value::as_f64) };
        let token_id = |k: &str| -> Result<Option<u32>> {
            self.opt_u64(k)?
                .map(|id| {
                    u32::try_from(id)
                        .map_err(|_| self.error(k, format!("token id {id} is too large")))
                })
                .transpose()
        };
        let config = ModelConfig {
            architecture: LLAMA_ARCHITECTURE.to_string(),
            vocab_size,
            hidden_size,
            intermediate_size: self.req_usize(&key("feed_forward_length"))?,
            num_hidden_layers: self.req_usize(&key("block_count"))?,
            num_attention_heads,
            num_key_value_heads: self
                .opt_usize(&key("attention.head_count_kv"))?
                .unwrap_or(num_attention_heads),
            head_dim,
            rms_norm_eps: f64_key(&key("attention.layer_norm_rms_epsilon"))?.ok_or_else(|| {
                self.error(
                    &key("attention.layer_norm_rms_epsilon"),
                    "missing; a llama GGUF needs it",
                )
            })?,
            rope_theta: f64_key(&key("rope.freq_base"))?.unwrap_or(10000.0),
            max_position_embeddings: self.req_usize(&key("context_length"))?,
            // llama.cpp's converter leaves out `output.weight` when the
            // output projection is the token embedding.
            tie_word_embeddings: !self.tensors.iter().any(|t| t.name == "output.weight"),
            bos_token_id: token_id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: token_id("tokenizer.ggml.eos_token_id")?,
            torch_dtype: None,
        };
        config.validate().map_err(|e| {
            self.error(
                &format!("{} ({})", metadata_key(e.field), e.field),
                e.message,
            )
        })?;
        Ok(config)
    }

    /// The tensors under their Hugging Face names; q/k rows are restored
    /// to HF order when read. A tensor of an unsupported type is an error.
    pub fn into_tensors(self, config: &ModelConfig) -> Result<Tensors> {
        let mut tensors = Tensors::new();
        let file = tensors.add_file(self.path.clone(), self.map);
        for info in self.tensors {
            let (Some(dtype), Some(range)) = (info.dtype, info.range) else {
                return Err(Error::tensor(
                    &self.path,
                    info.name,
                    format!(
                        "ggml type {} is not supported; q35 reads {SUPPORTED_TYPES}",
                        info.ggml_type.name()
                    ),
                ));
            };
            let (name, rope) = layout::hf_name(&info.name);
            let rows = match rope {
                None => RowOrder::Hf,
                Some(RopeHeads::Query) => RowOrder::GgufRope {
                    heads: config.num_attention_heads,
                },
                Some(RopeHeads::KeyValue) => RowOrder::GgufRope {
                    heads: config.num_key_value_heads,
                },
            };
            tensors.insert(
                name,
                Entry {
                    stored_name: info.name,
                    shape: info.shape,
                    dtype,
                    file,
                    range,
                    rows,
                },
            )?;
        }
        Ok(tensors)
    }
}

/// The GGUF metadata key a configuration field comes from.
fn metadata_key(field: &str) -> String {
    let key = match field {
        "vocab_size" => "vocab_size",
        "hidden_size" => "embedding_length",
        "intermediate_size" => "feed_forward_length",
        "num_hidden_layers" => "block_count",
        "num_attention_heads" => "attention.head_count",
        "num_key_value_heads" => "attention.head_count_kv",
        "head_dim" => "attention.key_length",
        "rms_norm_eps" => "attention.layer_norm_rms_epsilon",
        "rope_theta" => "rope.freq_base",
        "max_position_embeddings" => "context_length",
        "bos_token_id" | "eos_token_id" => return format!("tokenizer.ggml.{field}"),
        other => return other.to_string(),
    };
    format!("{LLAMA}.{key}")
}

/// Reads a llama GGUF as a [`Model`] (not yet validated), with its
/// tokenizer metadata.
pub(crate) fn read_model(path: &Path) -> Result<(Model, Option<GgufTokenizer>)> {
    let file = GgufFile::open(path)?;
    let config = file.config()?;
    let tokenizer = GgufTokenizer::from_gguf(&file)?;
    if let Some(t) = &tokenizer {
        if t.tokens.len() > config.vocab_size {
            return Err(Error::config(
                path,
                "tokenizer.ggml.tokens",
                format!(
                    "{} tokens, more than the model's vocabulary of {}",
                    t.tokens.len(),
                    config.vocab_size
                ),
            ));
        }
    }
    let tokenizer_json = tokenizer
        .as_ref()
        .map(|t| t.to_tokenizer_json(path))
        .transpose()?;
    if let Some(json) = &tokenizer_json {
        let origin = format!(
            "{}: tokenizer.json made from its tokenizer.ggml metadata",
            path.display()
        );
        super::check_tokenizer(json, &origin, &config)?;
    }
    let tensors = file.into_tensors(&config)?;
    let model = Model {
        config,
        tensors,
        tokenizer_json,
        source: path.to_path_buf(),
    };
    Ok((model, tokenizer))
}

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end));
        let Some(slice) = slice else {
            return Err(Error::malformed(
                self.path,
                format!(
                    "truncated: {what} at byte {} needs {n} bytes, but the file is {} bytes",
                    self.pos,
                    self.bytes.len()
                ),
            ));
        };
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let bytes = self.take(N, what)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count or length that must fit in the rest of the file, where each
    /// counted thing takes at least one byte.
    fn count(&mut self, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let left = self.bytes.len() - self.pos;
        usize::try_from(n).ok().filter(|&n| n <= left).ok_or_else(|| {
            Error::malformed(
                self.path,
                format!("truncated or corrupt: {what} at byte {at} is {n}, but only {left} bytes follow"),
            )
        })
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.count(&format!("length of {what}"))?;
        let at = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            Error::malformed(
                self.path,
                format!("{what} at byte {at} is not valid UTF-8: {e}"),
            )
        })
    }

    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.array(what)?)),
            1 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => {
                let at = self.pos;
                match self.array::<1>(what)? {
                    [0] => Value::Bool(false),
                    [1] => Value::Bool(true),
                    [b] => {
                        return Err(Error::malformed(
                            self.path,
                            format!("{what} at byte {at} is a bool of value {b}, not 0 or 1"),
                        ))
                    }
                }
            }
            8 => Value::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::malformed(
                        self.path,
                        format!("{what} nests arrays deeper than {MAX_ARRAY_DEPTH} levels"),
                    ));
                }
                let element_type = self.u32(&format!("element type of {what}"))?;
                let count = self.count(&format!("element count of {what}"))?;
                // Grow as elements arrive: a lying count must not allocate.
                let mut items = Vec::with_capacity(count.min(1 << 16));
                for _ in 0..count {
                    items.push(self.value(element_type, what, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(Error::malformed(
                    self.path,
                    format!("{what} has unknown value type {other} (GGUF defines 0 to 12)"),
                ))
            }
        })
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    let mut c = Cursor {
        path,
        bytes,
        pos: 0,
    };
    let magic = c.array::<4>("the magic number")?;
    if magic != MAGIC {
        return Err(Error::malformed(
            path,
            format!(
                "not a GGUF file: it starts with {:?}, not \"GGUF\"",
                String::from_utf8_lossy(&magic)
            ),
        ));
    }
    let version = c.u32("the version")?;
    if version != 2 && version != 3 {
        let hint = if matches!(version.swap_bytes(), 2 | 3) {
            " (a big-endian file? q35 reads little-endian GGUF)"
        } else {
            ""
        };
        return Err(Error::malformed(
            path,
            format!("GGUF version {version} is not supported; q35 reads versions 2 and 3{hint}"),
        ));
    }
    let tensor_count = c.count("the tensor count")?;
    let kv_count = c.count("the metadata count")?;

    let mut metadata = BTreeMap::new();
    for i in 0..kv_count {
        let key = c.string(&format!("metadata key {i}"))?;
        let what = format!("metadata {}", quote(&key));
        let ty = c.u32(&format!("type of {what}"))?;
        let value = c.value(ty, &what, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(Error::malformed(
                path,
                format!("metadata key {} appears twice", quote(&key)),
            ));
        }
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => v.as_u64().filter(|a| a.is_power_of_two()).ok_or_else(|| {
            Error::config(
                path,
                "general.alignment",
                format!("must be a power of two, found {}", clip(&format!("{v:?}"))),
            )
        })?,
    };
    let alignment = usize::try_from(alignment).map_err(|_| {
        Error::config(
            path,
            "general.alignment",
            format!("{alignment} is too large"),
        )
    })?;

    let mut raw = Vec::with_capacity(tensor_count.min(1 << 16));
    for i in 0..tensor_count {
        let name = c.string(&format!("name of tensor {i}"))?;
        let what = |field: &str| format!("{field} of tensor {}", quote(&name));
        let n_dims = c.u32(&what("dimension count"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Error::tensor(
                path,
                name,
                format!("has {n_dims} dimensions; ggml tensors have 1 to {MAX_DIMS}"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&what("dimensions"))?);
        }
        let ggml_type = GgmlType(c.u32(&what("type"))?);
        let offset = c.u64(&what("data offset"))?;
        raw.push((name, dims, ggml_type, offset));
    }
    let data_start = c.pos.checked_next_multiple_of(alignment).ok_or_else(|| {
        Error::malformed(
            path,
            "the data section would start beyond the addressable range",
        )
    })?;

    let mut tensors = Vec::with_capacity(raw.len());
    let mut names = std::collections::BTreeSet::new();
    for (name, dims, ggml_type, offset) in raw {
        if !names.insert(name.clone()) {
            return Err(Error::tensor(
                path,
                name,
                "appears twice in the tensor list",
            ));
        }
        let info = tensor_info(
            path,
            bytes.len(),
            data_start,
            alignment,
            name,
            dims,
            ggml_type,
            offset,
        )?;
        tensors.push(info);
    }
    let ranges: Vec<HeaderEntry> = tensors
        .iter()
        .filter_map(|t| {
            Some(HeaderEntry {
                name: t.name.clone(),
                dtype: t.dtype?,
                shape: t.shape.clone(),
                range: t.range.clone()?,
            })
        })
        .collect();
    check_overlaps(path, &ranges)?;
    Ok(Parsed {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

#[allow(clippy::too_many_arguments)]
fn tensor_info(
    path: &Path,
    file_len: usize,
    data_start: usize,
    alignment: usize,
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    offset: u64,
) -> Result<TensorInfo> {
    let shape: Vec<usize> = dims
        .iter()
        .rev()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| Error::tensor(path, &name, format!("dimensions {dims:?} are too large")))?;
    let Some(dtype) = ggml_type.dtype() else {
        // Kept so the file can still be inspected; using it is an error.
        return Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            shape,
            dtype: None,
            range: None,
        });
    };
    let len = dtype
        .byte_len(&shape)
        .map_err(|m| Error::tensor(path, &name, m))?;
    if offset % alignment as u64 != 0 {
        return Err(Error::tensor(
            path,
            name,
            format!("data offset {offset} is not a multiple of the alignment {alignment}"),
        ));
    }
    let range = usize::try_from(offset)
        .ok()
        .and_then(|o| data_start.checked_add(o))
        .and_then(|start| Some(start..start.checked_add(len)?))
        .filter(|r| r.end <= file_len)
        .ok_or_else(|| {
            Error::tensor(
                path,
                &name,
                format!(
                    "its {len} bytes of {dtype} data at offset {offset} from the data section (byte {data_start}) \
                     reach past the end of the {file_len}-byte file (truncated?)"
                ),
            )
        })?;
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        shape,
        dtype: Some(dtype),
        range: Some(range),
    })
}

#[cfg(test)]
mod tests {
    use super::{test_writer::GgufWriter, *};
    use crate::front::testmodel::{tiny_tensors, TinySpec};
    use half::f16;

    fn write(w: &GgufWriter) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, w.to_bytes()).unwrap();
        (dir, path)
    }

    fn parse_bytes(bytes: &[u8]) -> Result<Parsed> {
        parse(Path::new("m.gguf"), bytes)
    }

    #[test]
    fn metadata_values_of_every_type_round_trip() {
        let values = vec![
            ("a.u8", Value::U8(7)),
            ("a.i8", Value::I8(-7)),
            ("a.u16", Value::U16(700)),
            ("a.i16", Value::I16(-700)),
            ("a.u32", Value::U32(70000)),
            ("a.i32", Value::I32(-70000)),
            ("a.f32", Value::F32(1e-5)),
            ("a.bool", Value::Bool(true)),
            ("a.str", Value::String("héllo".into())),
            ("a.u64", Value::U64(1 << 40)),
            ("a.i64", Value::I64(-(1 << 40))),
            ("a.f64", Value::F64(0.125)),
            (
                "a.arr",
                Value::Array(vec![Value::String("x".into()), Value::String("".into())]),
            ),
            (
                "a.nested",
                Value::Array(vec![
                    Value::Array(vec![Value::I32(1)]),
                    Value::Array(vec![]),
                ]),
            ),
        ];
        let mut w = GgufWriter::new();
        for (k, v) in &values {
            w.kv(k, v.clone());
        }
        let p = parse_bytes(&w.to_bytes()).unwrap();
        assert_eq!(p.version, 3);
        for (k, v) in values {
            assert_eq!(p.metadata.get(k), Some(&v), "{k}");
        }
        assert_eq!(Value::F32(1e-5).as_f64(), Some(1e-5));
        assert_eq!(Value::I32(-1).as_u64(), None);
    }

    #[test]
    fn tensors_of_each_type_decode_to_known_values() {
        let mut w = GgufWriter::new();
        let f32s: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
        w.tensor_f32("f32", &[2, 3], &f32s);
        let f16s: Vec<u8> = [0.5f32, -2.0]
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        w.tensor_raw("f16", &[2], GgmlType::F16, f16s);
        let bf16s: Vec<u8> = [3.0f32, -0.25]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        w.tensor_raw("bf16", &[1, 2], GgmlType::BF16, bf16s);
        let codes: Vec<i8> = (0..64).map(|i| (i as i8) - 32).collect();
        w.tensor_raw(
            "q8_0",
            &[2, 32],
            GgmlType::Q8_0,
            test_writer::q8_0(&[0.5, 2.0], &codes),
        );
        let nibbles: Vec<u8> = (0..32).map(|i| (i % 16) as u8).collect();
        w.tensor_raw(
            "q4_0",
            &[32],
            GgmlType::Q4_0,
            test_writer::q4_0(&[0.25], &nibbles),
        );
        w.tensor_raw(
            "q4_1",
            &[32],
            GgmlType::Q4_1,
            test_writer::q4_1(&[(0.5, -1.0)], &nibbles),
        );
        let (_dir, path) = write(&w);
        let file = GgufFile::open(&path).unwrap();
        let config = crate::front::testmodel::TinySpec::default().config();
        let tensors = file.into_tensors(&config).unwrap();

        assert_eq!(tensors.to_f32("f32").unwrap(), f32s);
        assert_eq!(tensors.shape("f32"), Some(&[2usize, 3][..]));
        assert_eq!(tensors.to_f32("f16").unwrap(), [0.5, -2.0]);
        assert_eq!(tensors.to_f32("bf16").unwrap(), [3.0, -0.25]);
        let q8 = tensors.to_f32("q8_0").unwrap();
        assert_eq!((q8[0], q8[31], q8[32], q8[63]), (-16.0, -0.5, 0.0, 62.0));
        let q4 = tensors.to_f32("q4_0").unwrap();
        let expected: Vec<f32> = nibbles.iter().map(|&q| (q as f32 - 8.0) * 0.25).collect();
        assert_eq!(q4, expected);
        let q41 = tensors.to_f32("q4_1").unwrap();
        let expected: Vec<f32> = nibbles.iter().map(|&q| q as f32 * 0.5 - 1.0).collect();
        assert_eq!(q41, expected);
        assert_eq!(tensors.get("q4_1").unwrap().dtype(), DType::Q4_1);
    }

    #[test]
    fn tiny_llama_round_trips_through_gguf_with_qk_unpermuted() {
        for tie in [false, true] {
            let spec = TinySpec {
                tie_word_embeddings: tie,
                ..TinySpec::default()
            };
            let (_dir, path) = write(&test_writer::tiny_llama_gguf(&spec));
            let (model, tokenizer) = read_model(&path).unwrap();
            model.validate().unwrap();
            let mut expected = spec.config();
            expected.torch_dtype = None;
            assert_eq!(model.config, expected);
            assert!(tokenizer.is_some() && model.tokenizer_json.is_some());
            for (name, shape, values) in tiny_tensors(&spec) {
                let t = model.tensors.tensor(&name).unwrap();
                assert_eq!(t.shape(), shape.as_slice(), "{name}");
                assert_eq!(t.to_f32().unwrap(), values, "{name}");
            }
            // The stored rows really are permuted: reading the raw bytes
            // of a q projection differs from HF order.
            let q = model
                .tensors
                .tensor("model.layers.0.self_attn.q_proj.weight")
                .unwrap();
            assert_eq!(q.stored_name(), "blk.0.attn_q.weight");
            assert_ne!(
                DType::F32.to_f32(q.bytes().unwrap()).unwrap(),
                q.to_f32().unwrap()
            );
        }
    }

    #[test]
    fn config_comes_from_metadata() {
        let mut w = test_writer::tiny_llama_gguf(&TinySpec::default());
        w.kv("llama.rope.freq_base", Value::F32(500000.0));
        w.kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-6));
        w.remove_kv("llama.attention.head_count_kv");
        w.remove_kv("llama.vocab_size");
        let (_dir, path) = write(&w);
        let c = GgufFile::open(&path).unwrap().config().unwrap();
        assert_eq!((c.rope_theta, c.rms_norm_eps), (500000.0, 1e-6));
        // Defaults: kv heads = heads, vocabulary = the tokenizer's tokens.
        assert_eq!(
            (c.num_key_value_heads, c.vocab_size),
            (4, TinySpec::default().vocab_size)
        );
        assert_eq!((c.bos_token_id, c.eos_token_id), (Some(262), Some(263)));
        assert!(!c.tie_word_embeddings);
    }

    #[test]
    fn truncated_files_error_at_every_length() {
        let bytes = test_writer::tiny_llama_gguf(&TinySpec::default()).to_bytes();
        let header_end = parse_bytes(&bytes).unwrap().data_start;
        let lengths = (0..header_end.min(4096)).chain((header_end..bytes.len()).step_by(997));
        for len in lengths {
            let e = match parse_bytes(&bytes[..len]) {
                Ok(_) => panic!("a {len}-byte prefix parsed"),
                Err(e) => e.to_string(),
            };
            assert!(e.starts_with("m.gguf: "), "{e}");
            assert!(e.contains("truncated"), "{len}: {e}");
        }
        let (_dir, path) = write(&test_writer::tiny_llama_gguf(&TinySpec::default()));
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let e = GgufFile::open(&path).err().unwrap().to_string();
        assert!(
            e.contains(": tensor `output.weight`: its 67584 bytes of F32 data at offset "),
            "{e}"
        );
        assert!(
            e.ends_with(&format!(
                "reach past the end of the {}-byte file (truncated?)",
                bytes.len() - 1
            )),
            "{e}"
        );
        std::fs::write(&path, &bytes[..10]).unwrap();
        let e = GgufFile::open(&path).err().unwrap().to_string();
        assert!(e.ends_with("m.gguf: truncated: the tensor count at byte 8 needs 8 bytes, but the file is 10 bytes"), "{e}");
    }

    #[test]
    fn corrupt_bytes_never_panic() {
        let bytes = test_writer::tiny_llama_gguf(&TinySpec {
            num_hidden_layers: 1,
            ..TinySpec::default()
        })
        .to_bytes();
        let header_end = parse_bytes(&bytes).unwrap().data_start;
        let mut rng = crate::front::testmodel::SplitMix64::new(7);
        for _ in 0..3000 {
            let mut bad = bytes.clone();
            let at = (rng.next_u64() % header_end as u64) as usize;
            bad[at] ^= (rng.next_u64() % 255 + 1) as u8;
            let _ = parse_bytes(&bad);
        }
    }

    #[test]
    fn bad_magic_and_version() {
        let mut bytes = GgufWriter::new().to_bytes();
        assert!(parse_bytes(&bytes).is_ok());
        bytes[..4].copy_from_slice(b"GGML");
        let e = parse_bytes(&bytes).err().unwrap().to_string();
        assert_eq!(
            e,
            "m.gguf: not a GGUF file: it starts with \"GGML\", not \"GGUF\""
        );
        let e = parse_bytes(b"GG").err().unwrap().to_string();
        assert!(
            e.contains("truncated: the magic number at byte 0 needs 4 bytes"),
            "{e}"
        );
        let mut bytes = GgufWriter::new().to_bytes();
        bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
        let e = parse_bytes(&bytes).err().unwrap().to_string();
        assert!(
            e.contains(
                "GGUF version 50331648 is not supported; q35 reads versions 2 and 3 (a big-endian"
            ),
            "{e}"
        );
    }

    #[test]
    fn unsupported_tensor_type_names_tensor_and_type() {
        let mut w = test_writer::tiny_llama_gguf(&TinySpec::default());
        // Q4_K blocks are 256 elements of 144 bytes; the reader does not
        // need to know, it rejects the type by name.
        w.tensor_raw(
            "blk.0.ffn_up.weight",
            &[128, 64],
            GgmlType(12),
            vec![0; 128 * 64 / 256 * 144],
        );
        let (_dir, path) = write(&w);
        let e = read_model(&path).err().unwrap().to_string();
        assert_eq!(
            e,
            format!(
                "{}: tensor `blk.0.ffn_up.weight`: ggml type Q4_K is not supported; q35 reads F32, F16, BF16, \
                 Q8_0, Q4_0 and Q4_1",
                path.display()
            )
        );
    }

    #[test]
    fn non_llama_architecture_is_named() {
        let mut w = test_writer::tiny_llama_gguf(&TinySpec::default());
        w.kv("general.architecture", Value::String("qwen2".into()));
        let (_dir, path) = write(&w);
        let e = read_model(&path).err().unwrap().to_string();
        assert_eq!(
            e,
            format!(
                "{}: unsupported architecture `qwen2` (general.architecture); q35 supports `llama` GGUF files \
                 (LlamaForCausalLM)",
                path.display()
            )
        );
        let mut w = test_writer::tiny_llama_gguf(&TinySpec::default());
        w.kv("llama.expert_count", Value::U32(8));
        let (_dir, path) = write(&w);
        let e = read_model(&path).err().unwrap().to_string();
        assert!(
            e.contains("`llama.expert_count`: a mixture of 8 experts is not supported"),
            "{e}"
        );
    }

    #[test]
    fn missing_and_mistyped_metadata() {
        let mut w = test_writer::tiny_llama_gguf(&TinySpec::default());
        w.remove_kv("llama.block_count");
        let (_dir, path) = write(&w);
        let e = read_model(&path).err().unwrap().to_string();
        assert_eq!(
            e,
            format!(
                "{}: `llama.block_count`: missing; a llama GGUF needs it",
                path.display()
            )
        );
        let mut w = test_writer::tiny_llama_gguf(&TinySpec::default());
        w.kv("llama.embedding_length", Value::String("64".into()));
        let (_dir, path) = write(&w);
        let e = read_model(&path).err().unwrap().to_string();
        assert!(
            e.ends_with("`llama.embedding_length`: expected a non-negative integer, found STRING"),
            "{e}"
        );
        let mut w = test_writer::tiny_llama_gguf(&TinySpec::default());
        w.kv("llama.attention.head_count_kv", Value::U32(3));
        let (_dir, path) = write(&w);
        let e = read_model(&path).err().unwrap().to_string();
        assert_eq!(
            e,
            format!(
                "{}: `llama.attention.head_count_kv (num_key_value_heads)`: num_attention_heads 4 is not a \
                 multiple of num_key_value_heads 3",
                path.display()
            )
        );
    }

    #[test]
    fn lying_offsets_and_shapes() {
        let mut w = GgufWriter::new();
        w.tensor_f32("a", &[8], &[0.0; 8]);
        w.tensor_f32("b", &[8], &[0.0; 8]);
        w.force_offset("b", 0);
        let e = parse_bytes(&w.to_bytes()).err().unwrap().to_string();
        assert!(e.starts_with("m.gguf: tensor `b`: its bytes "), "{e}");
        assert!(e.contains("overlap those of tensor `a`"), "{e}");
        w.force_offset("b", 8);
        let e = parse_bytes(&w.to_bytes()).err().unwrap().to_string();
        assert_eq!(
            e,
            "m.gguf: tensor `b`: data offset 8 is not a multiple of the alignment 32"
        );
        w.force_offset("b", u64::MAX - 31);
        let e = parse_bytes(&w.to_bytes()).err().unwrap().to_string();
        assert!(
            e.contains("tensor `b`: its 32 bytes of F32 data at offset 18446744073709551584"),
            "{e}"
        );

        let mut w = GgufWriter::new();
        w.tensor_raw("q", &[2, 48], GgmlType::Q8_0, vec![0; 2 * 34]);
        let e = parse_bytes(&w.to_bytes()).err().unwrap().to_string();
        assert_eq!(
            e,
            "m.gguf: tensor `q`: Q8_0 stores blocks of 32 along a row, but the row length is 48"
        );

        let mut w = GgufWriter::new();
        w.kv("general.alignment", Value::U32(24));
        let e = parse_bytes(&w.to_bytes()).err().unwrap().to_string();
        assert_eq!(
            e,
            "m.gguf: `general.alignment`: must be a power of two, found U32(24)"
        );
        let mut w = GgufWriter::new();
        w.kv("general.alignment", Value::U32(64));
        w.tensor_f32("a", &[3], &[1.0, 2.0, 3.0]);
        w.tensor_f32("b", &[1], &[4.0]);
        let p = parse_bytes(&w.to_bytes()).unwrap();
        assert_eq!(p.data_start % 64, 0);
        assert_eq!(p.tensors[1].offset, 64);
    }
}
