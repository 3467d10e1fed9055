//! The GGUF front end on one `.gguf` file: `GgufFile::open`, every
//! tensor's bytes, `config`, `into_tensors` and every tensor to f32; then
//! `q35c convert`'s `convert_gguf` (the model read as `q35c::front::load`
//! reads it: the GGUF tokenizer metadata and its conversion to a
//! `tokenizer.json`, the model's validation; then the Hugging Face files
//! written), and the runtime loading the tokenizer.json written and
//! encoding/decoding with it.
//!
//! Only `Ok` or `Err` is accepted: a panic, abort, OOM or timeout is a
//! finding.

use libfuzzer_sys::fuzz_target;
use q35_fuzz::{note, put, scratch_dir};
use q35_rt::tokenizer::Tokenizer;
use q35c::front::{self, convert::convert_gguf, gguf::GgufFile};

fuzz_target!(|data: &[u8]| {
    let dir = scratch_dir();
    put(dir, "model.gguf", Some(data));
    let path = dir.join("model.gguf");

    let file = match GgufFile::open(&path) {
        Ok(file) => file,
        Err(e) => {
            // Everything below starts by opening the file the same way.
            return note!("open: {e}");
        }
    };
    note!("open: ok, {} tensors, {} metadata keys", file.tensors.len(), file.metadata.len());
    if let Err(e) = file.architecture() {
        note!("architecture: {e}");
    }
    for info in &file.tensors {
        let _ = file.tensor_bytes(info);
    }
    match file.config() {
        Ok(config) => match file.into_tensors(&config) {
            Ok(tensors) => {
                for tensor in tensors.iter() {
                    if let Err(e) = tensor.to_f32() {
                        note!("to_f32: {e}");
                    }
                }
            }
            Err(e) => note!("into_tensors: {e}"),
        },
        Err(e) => note!("config: {e}"),
    }

    // What `q35c convert` does: `read_model` (the tokenizer metadata and
    // its tokenizer.json), the model's validation (as `front::load`), and
    // writing the Hugging Face files.
    let out = dir.join("converted");
    match convert_gguf(&path, &out) {
        Ok(()) => {
            note!("convert: ok");
            if let Ok(json) = std::fs::read_to_string(out.join(front::TOKENIZER_FILE)) {
                match Tokenizer::from_json_str(&json, "converted tokenizer.json") {
                    Ok(tokenizer) => {
                        let ids = tokenizer.encode("Hello, world! 123 ünï 日本 <s></s>");
                        if let Err(e) = tokenizer.decode(&ids) {
                            note!("decode: {e}");
                        }
                    }
                    Err(e) => note!("runtime tokenizer: {e}"),
                }
            }
        }
        Err(e) => note!("convert: {e}"),
    }
});

fn main() {
    q35_fuzz::run()
}
