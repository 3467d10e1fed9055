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
    // K-quant and Q5_0 blocks, from the fixture checked against llama.cpp's
    // gguf-py (dtype.rs): two rows of a block each.
    let fixture: serde_json::Value = serde_json::from_str(include_str!("../../../tests/data/ggml-blocks.json")).unwrap();
    let blocks = |name: &str, bytes: usize| -> Vec<u8> {
        let text = fixture[name]["bytes"].as_str().unwrap();
        (0..2 * bytes).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap()).collect()
    };
    let kquants = [("Q4_K", GgmlType::Q4_K, DType::Q4K, 144), ("Q6_K", GgmlType::Q6_K, DType::Q6K, 210), ("Q5_0", GgmlType::Q5_0, DType::Q5_0, 22)];
    for (name, ggml, dtype, bytes) in kquants {
        w.tensor_raw(name, &[2, dtype.block_len()], ggml, blocks(name, bytes));
    }
    let (_dir, path) = write(&w);
    let file = GgufFile::open(&path).unwrap();
    let config = crate::front::testmodel::TinySpec::default().config();
    let tensors = file.into_tensors(&config).unwrap();
    for (name, _, dtype, bytes) in kquants {
        assert_eq!(tensors.get(name).unwrap().dtype(), dtype);
        assert_eq!(tensors.to_f32(name).unwrap(), dtype.to_f32(&blocks(name, bytes)).unwrap(), "{name}");
    }

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
        let expected = spec.config();
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
    // IQ2_XXS blocks are 256 elements of 66 bytes; the reader does not
    // need to know, it rejects the type by name.
    w.tensor_raw(
        "blk.0.ffn_up.weight",
        &[128, 64],
        GgmlType(16),
        vec![0; 128 * 64 / 256 * 66],
    );
    let (_dir, path) = write(&w);
    let e = read_model(&path).err().unwrap().to_string();
    assert_eq!(
        e,
        format!(
            "{}: tensor `blk.0.ffn_up.weight`: ggml type IQ2_XXS is not supported; q35 reads F32, F16, BF16, \
             Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K",
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

#[test]
fn the_chat_template_comes_from_metadata() {
    let mut w = test_writer::tiny_llama_gguf(&TinySpec::default());
    let template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}";
    w.kv("tokenizer.chat_template", Value::String(template.into()));
    let (_dir, path) = write(&w);
    let (model, _) = read_model(&path).unwrap();
    let spec = model.chat_template.expect("the template");
    assert_eq!(spec.template, template);
    // A template that does not parse names the file and the key.
    let mut w = test_writer::tiny_llama_gguf(&TinySpec::default());
    w.kv("tokenizer.chat_template", Value::String("{% for %}".into()));
    let (_dir, path) = write(&w);
    let e = read_model(&path).err().unwrap().to_string();
    assert!(e.contains("tokenizer.chat_template: its chat_template:"), "{e}");
}
