//! Prints the token ids of a text file, whitespace-separated (for offline
//! quantization experiments: `quant_lab calib`).
//!
//! ```text
//! cargo run -p q35-rt --example tokenize -- TOKENIZER_JSON TEXT_FILE
//! ```

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tokenizer = q35_rt::tokenizer::Tokenizer::from_file(&args[1]).expect("tokenizer");
    let text = std::fs::read_to_string(&args[2]).expect("text");
    let ids: Vec<String> = tokenizer.encode(&text).iter().map(u32::to_string).collect();
    println!("{}", ids.join(" "));
}
