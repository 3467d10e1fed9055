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

use crate::front::config::HfConfig;
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
        };
        config.check_supported().map_err(|e| {
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
    let chat_template = match tokenizer.as_ref() {
        Some(t) if t.chat_template.is_some() => {
            let origin = format!("{}: tokenizer.chat_template", path.display());
            q35_rt::chat::TemplateSpec::from_tokenizer_config(&t.to_tokenizer_config_json(config.max_position_embeddings), &origin).map_err(|message| Error::malformed(path, message))?
        }
        _ => None,
    };
    let tensors = file.into_tensors(&config)?;
    let model = Model {
        config,
        tensors,
        tokenizer_json,
        chat_template,
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
mod tests;
