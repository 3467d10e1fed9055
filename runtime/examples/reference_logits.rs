//! Runs the reference forward pass on a Hugging Face model and writes logits.
//!
//! ```text
//! cargo run --release -p q35-rt --example reference_logits -- \
//!     MODEL_DIR IDS_FILE OUT_FILE
//! ```
//!
//! `MODEL_DIR` holds `model.safetensors` and `model_config.json` (a
//! [`q35_rt::ModelConfig`] as JSON). `IDS_FILE` holds token ids separated by
//! whitespace. The logits of every position, `[ids × vocab]` little-endian
//! f32, go to `OUT_FILE`; the top-1 token of each position is printed. Used
//! to compare the reference with llama.cpp and other implementations.

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use q35_rt::reference::{Reference, SafetensorsWeights};
use q35_rt::{sampling, ModelConfig};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, ids_file, out_file] = args.as_slice() else {
        return Err("usage: reference_logits MODEL_DIR IDS_FILE OUT_FILE".into());
    };
    let dir = Path::new(dir);
    let config_path = dir.join("model_config.json");
    let config: ModelConfig = serde_json::from_str(&std::fs::read_to_string(&config_path)?)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let ids: Vec<u32> = std::fs::read_to_string(ids_file)?
        .split_whitespace()
        .map(|s| s.parse().map_err(|e| format!("{ids_file}: `{s}`: {e}")))
        .collect::<Result<_, _>>()?;

    let t = Instant::now();
    let weights = SafetensorsWeights::open(dir.join("model.safetensors"))?;
    let vocab = config.vocab_size;
    let mut model = Reference::new(config, &weights)?;
    eprintln!("loaded in {:.1} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let logits = model.forward(&ids, 0)?;
    eprintln!("{} tokens in {:.1} s", ids.len(), t.elapsed().as_secs_f64());

    let top1: Vec<String> = logits
        .chunks_exact(vocab)
        .map(|row| sampling::greedy(row).map(|id| id.to_string()))
        .collect::<Result<_, _>>()?;
    println!("{}", top1.join(" "));
    let bytes: Vec<u8> = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(out_file, bytes)?;
    Ok(())
}
