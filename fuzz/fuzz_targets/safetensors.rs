//! The Hugging Face front end: `q35c::front::load` on a directory holding
//! `config.json` and `model.safetensors` (or a sharded
//! `model.safetensors.index.json` and its shard), then every tensor
//! converted to f32. The input is, joined by `q35_fuzz::SPLIT`:
//!
//! - `safetensors`: the file, beside the built-in config below (the seed
//!   model's), so every mutation reaches the safetensors reader;
//! - `config.json | safetensors`;
//! - `config.json | index.json | shard` (the index must name the shard
//!   `model-00001-of-00001.safetensors`).
//!
//! Only `Ok` or `Err` is accepted: a panic, abort, OOM or timeout is a
//! finding.

use libfuzzer_sys::fuzz_target;
use q35_fuzz::{note, put, scratch_dir, split};
use q35c::front;

/// The config.json of `q35c tiny-model --layers 1 --hidden 16 --heads 2
/// --kv-heads 1 --ffn 32` (scripts/fuzz.sh's seed model).
const TINY_CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "vocab_size": 264,
  "hidden_size": 16,
  "intermediate_size": 32,
  "num_hidden_layers": 1,
  "num_attention_heads": 2,
  "num_key_value_heads": 1,
  "head_dim": 8,
  "hidden_act": "silu",
  "rms_norm_eps": 0.00001,
  "rope_theta": 10000.0,
  "rope_scaling": null,
  "attention_bias": false,
  "mlp_bias": false,
  "max_position_embeddings": 128,
  "tie_word_embeddings": true,
  "bos_token_id": 262,
  "eos_token_id": 263,
  "torch_dtype": "float32"
}"#;

const SHARD: &str = "model-00001-of-00001.safetensors";

fuzz_target!(|data: &[u8]| {
    let dir = scratch_dir();
    let parts = split(data, 3);
    let (config, single, index, shard) = match parts[..] {
        [model] => (TINY_CONFIG.as_bytes(), Some(model), None, None),
        [config, model] => (config, Some(model), None, None),
        [config, index, shard] => (config, None, Some(index), Some(shard)),
        _ => unreachable!("split gives 1 to 3 parts"),
    };
    put(dir, front::CONFIG_FILE, Some(config));
    put(dir, front::SAFETENSORS_FILE, single);
    put(dir, front::SAFETENSORS_INDEX_FILE, index);
    put(dir, SHARD, shard);
    match front::load(dir) {
        Ok(model) => {
            note!("load: ok, {} tensors", model.tensors.len());
            for tensor in model.tensors.iter() {
                if let Err(e) = tensor.to_f32() {
                    note!("to_f32: {e}");
                }
            }
        }
        Err(e) => note!("load: {e}"),
    }
});

fn main() {
    q35_fuzz::run()
}
