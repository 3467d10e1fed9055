//! A minimal GGUF v3 writer for tests: metadata of every value type,
//! tensors of any ggml type from raw bytes, ggml block encoders with
//! chosen codes, and a tiny Llama laid out as llama.cpp's converter does
//! (GGUF names, permuted q/k rows).

use super::{ggml::GgmlType, tokenizer::GgufTokenizer, Value, MAGIC};
use crate::front::rope_rows::permute_rope_rows;
use crate::front::{
    dtype::f32_to_le_bytes,
    testmodel::{tiny_tensors, tiny_tokenizer, TinySpec},
};
use half::f16;

struct TensorData {
    name: String,
    /// HF shape; written reversed as ggml's `ne`.
    shape: Vec<usize>,
    ggml_type: GgmlType,
    bytes: Vec<u8>,
    /// Written instead of the real offset, to make lying files.
    forced_offset: Option<u64>,
}

/// Builds a GGUF file in memory.
pub(crate) struct GgufWriter {
    kvs: Vec<(String, Value)>,
    tensors: Vec<TensorData>,
}

impl GgufWriter {
    pub(crate) fn new() -> Self {
        GgufWriter {
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Sets a metadata key (replacing an earlier value).
    pub(crate) fn kv(&mut self, key: &str, value: Value) {
        self.remove_kv(key);
        self.kvs.push((key.to_string(), value));
    }

    pub(crate) fn remove_kv(&mut self, key: &str) {
        self.kvs.retain(|(k, _)| k != key);
    }

    /// Adds a tensor (replacing one of the same name, keeping its place).
    pub(crate) fn tensor_raw(
        &mut self,
        name: &str,
        shape: &[usize],
        ggml_type: GgmlType,
        bytes: Vec<u8>,
    ) {
        let data = TensorData {
            name: name.to_string(),
            shape: shape.to_vec(),
            ggml_type,
            bytes,
            forced_offset: None,
        };
        match self.tensors.iter_mut().find(|t| t.name == name) {
            Some(t) => *t = data,
            None => self.tensors.push(data),
        }
    }

    pub(crate) fn tensor_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) {
        self.tensor_raw(name, shape, GgmlType::F32, f32_to_le_bytes(values));
    }

    pub(crate) fn force_offset(&mut self, name: &str, offset: u64) {
        if let Some(t) = self.tensors.iter_mut().find(|t| t.name == name) {
            t.forced_offset = Some(offset);
        }
    }

    fn alignment(&self) -> usize {
        self.kvs
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .map_or(32, |a| a as usize)
    }

    /// The whole file. Tensor data is laid out in order, each padded to
    /// the alignment except the last, so any shorter prefix is truncated.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment();
        let mut out = MAGIC.to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kvs.len() as u64).to_le_bytes());
        for (key, value) in &self.kvs {
            put_string(&mut out, key);
            out.extend(value_type(value).to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_string(&mut out, &t.name);
            out.extend((t.shape.len() as u32).to_le_bytes());
            for &d in t.shape.iter().rev() {
                out.extend((d as u64).to_le_bytes());
            }
            out.extend(t.ggml_type.0.to_le_bytes());
            out.extend(t.forced_offset.unwrap_or(offset).to_le_bytes());
            offset = (offset + t.bytes.len() as u64).next_multiple_of(align as u64);
        }
        out.resize(out.len().next_multiple_of(align), 0);
        for (i, t) in self.tensors.iter().enumerate() {
            out.extend(&t.bytes);
            if i + 1 < self.tensors.len() {
                out.resize(out.len().next_multiple_of(align), 0);
            }
        }
        out
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn value_type(value: &Value) -> u32 {
    match value {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.extend(v.to_le_bytes()),
        Value::I8(v) => out.extend(v.to_le_bytes()),
        Value::U16(v) => out.extend(v.to_le_bytes()),
        Value::I16(v) => out.extend(v.to_le_bytes()),
        Value::U32(v) => out.extend(v.to_le_bytes()),
        Value::I32(v) => out.extend(v.to_le_bytes()),
        Value::F32(v) => out.extend(v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            // An empty array's element type is arbitrary; use UINT8.
            let ty = items.first().map_or(0, value_type);
            out.extend(ty.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        Value::U64(v) => out.extend(v.to_le_bytes()),
        Value::I64(v) => out.extend(v.to_le_bytes()),
        Value::F64(v) => out.extend(v.to_le_bytes()),
    }
}

/// Q8_0 blocks: one scale per 32 codes.
pub(crate) fn q8_0(scales: &[f32], codes: &[i8]) -> Vec<u8> {
    assert_eq!(codes.len(), scales.len() * 32);
    let mut out = Vec::new();
    for (d, qs) in scales.iter().zip(codes.chunks(32)) {
        out.extend(f16::from_f32(*d).to_le_bytes());
        out.extend(qs.iter().map(|&q| q as u8));
    }
    out
}

/// Packs 32 4-bit codes as ggml does: byte j = code j | code j+16 << 4.
fn nibbles(codes: &[u8]) -> impl Iterator<Item = u8> + '_ {
    (0..16).map(move |j| (codes[j] & 0xf) | (codes[j + 16] << 4))
}

/// Q4_0 blocks: one scale per 32 codes in 0..16.
pub(crate) fn q4_0(scales: &[f32], codes: &[u8]) -> Vec<u8> {
    assert_eq!(codes.len(), scales.len() * 32);
    let mut out = Vec::new();
    for (d, qs) in scales.iter().zip(codes.chunks(32)) {
        out.extend(f16::from_f32(*d).to_le_bytes());
        out.extend(nibbles(qs));
    }
    out
}

/// Q4_1 blocks: one (scale, min) per 32 codes in 0..16.
pub(crate) fn q4_1(params: &[(f32, f32)], codes: &[u8]) -> Vec<u8> {
    assert_eq!(codes.len(), params.len() * 32);
    let mut out = Vec::new();
    for ((d, m), qs) in params.iter().zip(codes.chunks(32)) {
        out.extend(f16::from_f32(*d).to_le_bytes());
        out.extend(f16::from_f32(*m).to_le_bytes());
        out.extend(nibbles(qs));
    }
    out
}

/// Tokenizer metadata as llama.cpp's converter writes it.
pub(crate) fn put_tokenizer(w: &mut GgufWriter, t: &GgufTokenizer) {
    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    w.kv("tokenizer.ggml.model", Value::String(t.model.clone()));
    if let Some(pre) = &t.pre {
        w.kv("tokenizer.ggml.pre", Value::String(pre.clone()));
    }
    w.kv("tokenizer.ggml.tokens", strings(&t.tokens));
    w.kv(
        "tokenizer.ggml.token_type",
        Value::Array(t.token_types.iter().map(|&ty| Value::I32(ty)).collect()),
    );
    w.kv("tokenizer.ggml.merges", strings(&t.merges));
    for (key, id) in [
        ("bos_token_id", t.bos_token_id),
        ("eos_token_id", t.eos_token_id),
        ("unknown_token_id", t.unknown_token_id),
        ("padding_token_id", t.padding_token_id),
    ] {
        if let Some(id) = id {
            w.kv(&format!("tokenizer.ggml.{key}"), Value::U32(id));
        }
    }
    if let Some(add) = t.add_bos_token {
        w.kv("tokenizer.ggml.add_bos_token", Value::Bool(add));
    }
    if let Some(template) = &t.chat_template {
        w.kv("tokenizer.chat_template", Value::String(template.clone()));
    }
}

/// The tiny random Llama of [`TinySpec`] as a llama.cpp-converted F32
/// GGUF: GGUF names, q/k rows permuted, `output.weight` last (absent when
/// tied), and the tiny tokenizer.
pub(crate) fn tiny_llama_gguf(spec: &TinySpec) -> GgufWriter {
    let c = spec.config();
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::String("llama".into()));
    w.kv("general.name", Value::String("tiny".into()));
    for (key, v) in [
        ("block_count", c.num_hidden_layers),
        ("context_length", c.max_position_embeddings),
        ("embedding_length", c.hidden_size),
        ("feed_forward_length", c.intermediate_size),
        ("attention.head_count", c.num_attention_heads),
        ("attention.head_count_kv", c.num_key_value_heads),
        ("vocab_size", c.vocab_size),
        ("rope.dimension_count", c.head_dim),
    ] {
        w.kv(&format!("llama.{key}"), Value::U32(v as u32));
    }
    w.kv("llama.rope.freq_base", Value::F32(c.rope_theta as f32));
    w.kv(
        "llama.attention.layer_norm_rms_epsilon",
        Value::F32(c.rms_norm_eps as f32),
    );
    w.kv("general.file_type", Value::U32(0));
    put_tokenizer(&mut w, &tiny_tokenizer());

    let mut tensors = tiny_tensors(spec);
    // llama.cpp puts output.weight anywhere; last makes truncation tests exact.
    tensors.sort_by_key(|(name, _, _)| name == "lm_head.weight");
    for (name, shape, values) in tensors {
        let gguf = gguf_name(&name);
        let values = if name.ends_with("q_proj.weight") {
            permute_rope_rows(&values, shape[0], shape[1], c.num_attention_heads).unwrap()
        } else if name.ends_with("k_proj.weight") {
            permute_rope_rows(&values, shape[0], shape[1], c.num_key_value_heads).unwrap()
        } else {
            values
        };
        w.tensor_f32(&gguf, &shape, &values);
    }
    w
}

/// The GGUF name of an HF Llama tensor (inverse of `layout::hf_name`).
pub(crate) fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").expect("a layer tensor");
    let (layer, part) = rest.split_once('.').expect("layer.part");
    let part = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("no GGUF name for {other}"),
    };
    format!("blk.{layer}.{part}")
}
