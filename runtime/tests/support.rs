//! Building small artifacts in tests, without the compiler: a manifest
//! with a hand-written plan, quantized weights, and a code payload given by
//! the test (garbage, or a shared object compiled from C when `cc` exists).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use q35_format::artifact::{
    write_artifact, BufferSpec, DispatchSpec, Manifest, TargetSpec, WeightSpec, ARTIFACT_FORMAT,
    ARTIFACT_VERSION,
};
use q35_format::signature::{CodeSignatures, SIGNATURES_SYMBOL};
use q35_format::{GroupSize, ModelConfig, QuantKind, QuantizedTensor};

pub const VOCAB: usize = 8;
pub const CONTEXT: usize = 16;
pub const MAX_TOKENS: usize = 4;
/// The packed weight `proj`: 8 × 64, q35, one group of 64 per row.
pub const PROJ_ROWS: usize = 8;
pub const PROJ_COLS: usize = 64;
pub const CODE: &str = "code/cpu.so";

/// A file under the temporary directory, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, bytes: &[u8]) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "q35-rt-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

pub fn config() -> ModelConfig {
    ModelConfig {
        architecture: "llama".into(),
        vocab_size: VOCAB,
        hidden_size: 4,
        intermediate_size: 8,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 2,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        max_position_embeddings: CONTEXT,
        tie_word_embeddings: true,
        bos_token_id: None,
        eos_token_id: None,
    }
}

fn buffer(name: &str, element: &str, width: usize, role: &str) -> BufferSpec {
    BufferSpec {
        name: name.into(),
        element: element.into(),
        width,
        role: role.into(),
    }
}

fn dispatch(kernel: &str, workgroups: usize, per_token: usize, buffers: &[&str]) -> DispatchSpec {
    DispatchSpec {
        kernel: kernel.into(),
        workgroups,
        workgroups_per_token: per_token,
        buffers: buffers.iter().map(|b| b.to_string()).collect(),
        concurrent: false,
    }
}

/// The norm vector's values.
pub fn norm_values() -> Vec<f32> {
    (0..VOCAB).map(|j| j as f32 * 0.5).collect()
}

/// The packed weight, quantized from a fixed pattern.
pub fn proj() -> QuantizedTensor {
    let data: Vec<f32> = (0..PROJ_ROWS * PROJ_COLS)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    QuantizedTensor::quantize(
        "proj",
        PROJ_ROWS,
        PROJ_COLS,
        &data,
        QuantKind::Q35,
        GroupSize::G64,
    )
    .unwrap()
}

/// The manifest of the test plan (see `executor.rs` for what the kernels do).
pub fn manifest() -> Manifest {
    Manifest {
        format: ARTIFACT_FORMAT.into(),
        version: ARTIFACT_VERSION,
        target: TargetSpec {
            kind: "cpu".into(),
            triple: format!("{}-unknown-linux-gnu", std::env::consts::ARCH),
            cpu: "generic".into(),
            features: String::new(),
        },
        model: config(),
        quant: "q35".into(),
        group: "64".into(),
        context_length: CONTEXT,
        max_tokens: MAX_TOKENS,
        rows_per_workgroup: 64,
        buffers: vec![
            buffer("tokens", "i32", 1, "input"),
            buffer("positions", "i32", 1, "input"),
            buffer("norm", "f32", VOCAB, "weight"),
            buffer(
                "proj",
                &format!("!q35.packed<{PROJ_ROWS} : i64, {PROJ_COLS} : i64, 64 : i64, \"q35\", \"planar\">"),
                PROJ_ROWS * PROJ_COLS,
                "weight",
            ),
            buffer("cache", "f32", CONTEXT, "kv_cache"),
            buffer("logits", "f32", VOCAB, "output"),
        ],
        dispatches: vec![
            dispatch("probe", 0, 1, &["tokens", "positions", "norm", "logits"]),
            dispatch("bump", VOCAB, 0, &["positions", "logits"]),
            dispatch("remember", 0, 1, &["tokens", "cache"]),
            dispatch("recall", 0, 1, &["cache", "logits"]),
            dispatch("coded", 1, 0, &["proj", "logits"]),
        ],
        weights: vec![
            WeightSpec {
                name: "norm".into(),
                tensor: "weights/norm".into(),
                kind: "f32".into(),
                rows: 1,
                cols: VOCAB,
            },
            WeightSpec {
                name: "proj".into(),
                tensor: "weights/proj".into(),
                kind: "q35".into(),
                rows: PROJ_ROWS,
                cols: PROJ_COLS,
            },
        ],
        code: CODE.into(),
        tokenizer: None,
        chat_template: None,
        toolchain: BTreeMap::new(),
        checksums: BTreeMap::new(),
        launches: Vec::new(),
        activations: "f32".to_string(),
        rotated_inputs: false,
    }
}

/// The weight payloads of [`manifest`].
pub fn weight_payloads() -> Vec<(String, Vec<u8>)> {
    let norm = QuantizedTensor::quantize(
        "norm",
        1,
        VOCAB,
        &norm_values(),
        QuantKind::F32,
        GroupSize::Channel,
    )
    .unwrap();
    vec![
        ("weights/norm".into(), norm.to_bytes()),
        ("weights/proj".into(), proj().to_bytes()),
    ]
}

/// Artifact bytes of `manifest` with its weights and `code`.
pub fn artifact_with(manifest: &Manifest, code: &[u8]) -> Vec<u8> {
    let mut payloads = weight_payloads();
    payloads.push((CODE.into(), code.to_vec()));
    write_artifact(manifest, &payloads)
}

/// The C source of the test kernels (see `executor.rs`).
pub const KERNELS_C: &str = r#"
#include <stdint.h>
typedef struct { void *allocated, *aligned; int64_t offset, sizes[1], strides[1]; } D1;
typedef struct { void *allocated, *aligned; int64_t offset, sizes[2], strides[2]; } D2;
#define AT(d, T, i) (((T *)(d)->aligned)[(d)->offset + (i)])
#define AT2(d, i, j) AT(d, float, (i) * (d)->strides[0] + (j) * (d)->strides[1])
#ifndef BUMP
#define BUMP 1000.0f
#endif

/* out[m][j] = id*100 + position + norm[j], +1e6 if a descriptor is not as documented */
void _mlir_ciface_probe(int64_t wg, int64_t tokens, int64_t start, D1 *ids, D1 *pos, D1 *norm, D2 *out) {
    int64_t m = wg;
    float bad = 0;
    if (ids->sizes[0] != tokens || ids->strides[0] != 1 || ids->offset != 0) bad = 1e6f;
    if (pos->sizes[0] != tokens || norm->sizes[0] != 8) bad = 1e6f;
    if (out->sizes[0] != tokens || out->sizes[1] != 8 || out->strides[0] != 8 || out->strides[1] != 1) bad = 1e6f;
    if (((uintptr_t)out->aligned) % 64 != 0 || out->allocated != out->aligned) bad = 1e6f;
    for (int j = 0; j < 8; j++)
        AT2(out, m, j) = AT(ids, int32_t, m) * 100.0f + AT(pos, int32_t, m) + AT(norm, float, j) + bad;
}

/* one workgroup per column: +BUMP when `start` is the first position */
void _mlir_ciface_bump(int64_t wg, int64_t tokens, int64_t start, D1 *pos, D2 *out) {
    for (int64_t m = 0; m < tokens; m++)
        AT2(out, m, wg) += (start == AT(pos, int32_t, 0)) ? BUMP : -1e6f;
}

void _mlir_ciface_remember(int64_t wg, int64_t tokens, int64_t start, D1 *ids, D2 *cache) {
    float bad = (cache->sizes[0] != 16 || cache->sizes[1] != 1) ? 1e6f : 0;
    AT2(cache, start + wg, 0) = AT(ids, int32_t, wg) + bad;
}

/* out[m][7] = sum of the ids at positions 0..=start+m */
void _mlir_ciface_recall(int64_t wg, int64_t tokens, int64_t start, D2 *cache, D2 *out) {
    float sum = 0;
    for (int64_t p = 0; p <= start + wg; p++) sum += AT2(cache, p, 0);
    AT2(out, wg, 7) = sum;
}

/* columns 2..6: the first min's f16 bits and the four arrays' lengths */
void _mlir_ciface_coded(int64_t wg, int64_t tokens, int64_t start, D1 *codes, D1 *mins, D1 *range_codes, D1 *range_scale, D2 *out) {
    for (int64_t m = 0; m < tokens; m++) {
        AT2(out, m, 2) = AT(mins, uint16_t, 0);
        AT2(out, m, 3) = range_scale->sizes[0];
        AT2(out, m, 4) = range_codes->sizes[0];
        AT2(out, m, 5) = mins->sizes[0];
        AT2(out, m, 6) = codes->sizes[0];
    }
}
"#;

/// The test kernels as a shared object, or `None` (with a note) when no C
/// compiler is available.
pub fn compile_kernels() -> Option<Vec<u8>> {
    compile_kernels_with_bump(1000)
}

/// The test kernels with `bump` adding `bump` instead of 1000, declaring
/// the kernel signatures of [`manifest`]'s plan as q35c's code objects do.
pub fn compile_kernels_with_bump(bump: u32) -> Option<Vec<u8>> {
    let plan = manifest();
    let signatures = CodeSignatures::of_plan(&plan.buffers, &plan.dispatches, plan.context_length, plan.max_tokens).unwrap();
    let json = signatures.to_json();
    let literal: String = json
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    // Sized without the terminating NUL, like q35c's symbol.
    let source = format!("{KERNELS_C}\nconst char {SIGNATURES_SYMBOL}[{}] = \"{literal}\";\n", json.len());
    let source = TempFile::new("kernels.c", source.as_bytes());
    let output = source.path().with_extension("so");
    let status = std::process::Command::new("cc")
        .args([
            "-shared",
            "-fPIC",
            "-O1",
            &format!("-DBUMP={bump}.0f"),
            "-o",
        ])
        .arg(&output)
        .arg(source.path())
        .status();
    let bytes = match status {
        Ok(s) if s.success() => std::fs::read(&output).ok(),
        _ => None,
    };
    let _ = std::fs::remove_file(&output);
    if bytes.is_none() {
        eprintln!("note: no working `cc`; skipping the test that runs C kernels");
    }
    bytes
}
