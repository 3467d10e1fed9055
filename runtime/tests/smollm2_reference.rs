//! The reference forward pass on the real SmolLM2-135M-Instruct against
//! llama.cpp (`#[ignore]`d: needs the converted weights and ~15 s in a
//! release build). Run with
//!
//! ```text
//! cargo test --release -p q35-rt --test main -- --ignored smollm2_reference
//! ```
//!
//! The weights are the Q4_1 GGUF dequantized to f32 and rearranged into
//! Hugging Face layout (`gguf_to_hf_f32.py`, outside the repository, under
//! `~/.cache/q35/scripts/`), in `~/.cache/q35/smollm2-ref/` (or
//! `Q35_SMOLLM2_REF`): `model.safetensors` + `model_config.json`. The
//! expected values come from llama.cpp (llama-cpp-python 0.3.36) running the
//! same dequantized weights as an F32 GGUF with an f32 KV cache
//! (`llamacpp_f32_expect.py`); there the two agree to 1.5e-6 of the largest
//! logit, so the tolerance below leaves room only for summation order.

use std::path::PathBuf;

use q35_rt::reference::{Reference, SafetensorsWeights};
use q35_rt::ModelConfig;

const PROMPT: [u32; 123] = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
    19712, 8182, 2, 198, 1, 4093, 198, 504, 414, 46682, 18669, 436, 5371, 281, 216, 33, 40, 40, 41,
    327, 260, 2260, 506, 11285, 281, 7042, 30, 657, 314, 216, 35, 35, 32, 13897, 6780, 284, 436,
    260, 31469, 555, 29, 9211, 2678, 281, 260, 905, 327, 216, 36, 33, 929, 30, 16374, 281, 827,
    8545, 1701, 357, 436, 2837, 28, 284, 617, 2724, 357, 30, 2, 198, 1, 520, 9531, 198, 504, 414,
    46682, 18669, 436, 2837, 347, 260, 11759, 2457, 288, 260, 216, 33, 40, 40, 41, 39592, 10951,
    15436, 28, 13786, 260, 996, 19963, 282, 260, 3432, 6989, 30, 657, 436, 2724, 411,
];
const TOP1: [u32; 123] = [
    29, 198, 19, 359, 354, 7952, 11173, 11173, 338, 5646, 9337, 6335, 30, 617, 288, 253, 65, 511,
    288, 198, 1, 520, 198, 57, 725, 3729, 18669, 314, 2837, 281, 216, 33, 40, 40, 41, 30, 260, 216,
    506, 11285, 281, 7042, 28, 657, 436, 260, 35, 34, 34, 8137, 6780, 30, 6443, 2837, 31469, 2678,
    29, 9211, 2678, 281, 260, 905, 1793, 216, 33, 929, 929, 30, 2, 260, 216, 18092, 30, 357, 314,
    2837, 30, 284, 1538, 2837, 357, 30, 2, 198, 1, 520, 9531, 198, 504, 414, 46682, 18669, 436,
    2837, 411, 253, 216, 288, 327, 260, 216, 33, 40, 40, 41, 2260, 10951, 15436, 365, 253, 260,
    216, 29191, 282, 260, 3432, 6989, 30, 657, 436, 2724, 411, 26821,
];
const TOP1_LOGIT: [f32; 123] = [
    23.3721, 35.2132, 33.4717, 31.6917, 14.8924, 13.9545, 21.1166, 23.6259, 23.0920, 7.4829,
    28.1207, 27.9493, 28.5625, 21.4044, 24.9176, 7.9161, 23.1677, 15.3052, 25.2787, 26.8807,
    30.4665, 26.3698, 37.6278, 33.3315, 11.2204, 25.9996, 18.3330, 19.3239, 21.4771, 23.0292,
    18.5171, 32.1492, 34.2909, 31.8245, 31.1174, 25.4987, 11.5683, 6.6699, 9.5806, 7.4587, 20.3796,
    14.0959, 21.5281, 15.4297, 28.3412, 21.8270, 36.0823, 27.1248, 27.3776, 27.0699, 23.6192,
    24.2114, 21.8894, 22.0825, 20.5917, 14.7454, 26.9251, 27.5530, 17.2074, 27.6106, 19.6456,
    17.3292, 28.2423, 27.2078, 33.9220, 31.6406, 32.9903, 26.5384, 17.2464, 19.4028, 18.4004,
    27.9290, 22.6952, 15.4099, 25.8376, 21.0296, 20.3607, 21.6342, 21.1308, 21.4937, 20.1898,
    25.7016, 25.4612, 30.6220, 23.3929, 27.6592, 36.2320, 34.5284, 30.4719, 14.4971, 36.9184,
    22.1251, 19.4288, 20.5808, 23.0758, 12.5146, 7.2155, 18.2701, 25.7486, 11.8391, 7.9366,
    27.4549, 31.5148, 30.1690, 28.1603, 12.2304, 11.2582, 19.0762, 21.8145, 14.1795, 12.6316,
    11.7853, 24.3015, 17.9289, 9.9128, 10.5414, 13.5648, 25.8267, 12.6206, 27.7360, 18.5365,
    22.6147, 10.1348,
];

#[test]
#[ignore = "needs ~/.cache/q35/smollm2-ref; run in release"]
fn smollm2_reference_matches_llama_cpp_f32() {
    let dir = match std::env::var_os("Q35_SMOLLM2_REF") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/q35/smollm2-ref"),
    };
    if !dir.join("model.safetensors").exists() {
        eprintln!("note: {} has no model.safetensors; skipping", dir.display());
        return;
    }
    let config: ModelConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model_config.json")).unwrap())
            .unwrap();
    let vocab = config.vocab_size;
    let weights = SafetensorsWeights::open(dir.join("model.safetensors")).unwrap();
    let mut model = Reference::new(config, &weights).unwrap();
    let logits = model.forward(&PROMPT, 0).unwrap();
    for (i, row) in logits.chunks_exact(vocab).enumerate() {
        let top = q35_rt::sampling::greedy(row).unwrap();
        assert_eq!(top, TOP1[i], "position {i}");
        let diff = (row[top as usize] - TOP1_LOGIT[i]).abs();
        assert!(
            diff < 1e-3,
            "position {i}: top-1 logit {} vs {}",
            row[top as usize],
            TOP1_LOGIT[i]
        );
    }
}
