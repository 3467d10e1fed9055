//! Helpers for whole-path tests: write a tiny model, compile it with the
//! q35c library exactly as `q35c MODEL --target cpu|nvptx -o FILE` does,
//! and load it in q35-rt.

use anyhow::{Context, Result};
use q35_dialect::Q35Context;
use q35_format::{GroupSize, QuantKind};
use q35c::{
    codegen::CompileOptions,
    emit::{emit_module, EmitOptions, Group},
    front::{self, testmodel::TinySpec},
    graph::ModelGraph,
    pipeline::{RunOptions, Timings},
};
use std::path::{Path, PathBuf};

/// A tiny model and its artifacts, in a temporary directory removed on drop.
pub struct TinyModel {
    pub dir: tempfile::TempDir,
    pub model: PathBuf,
}

impl TinyModel {
    /// The default tiny model (2 layers, hidden 64, GQA 4:2 heads, FFN 128,
    /// 264-token vocabulary with a tokenizer, context 128).
    pub fn new() -> Result<Self> {
        Self::with(TinySpec::default())
    }

    pub fn with(spec: TinySpec) -> Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let model_dir = dir.path().join("model");
        std::fs::create_dir_all(&model_dir)?;
        let model = front::testmodel::write_tiny_model(&model_dir, spec)?;
        Ok(Self { dir, model })
    }

    /// Compiles the model for the host CPU and writes `NAME.q35`.
    pub fn compile(&self, quant: QuantKind, group: GroupSize, max_tokens: usize) -> Result<PathBuf> {
        self.compile_with(quant, group, max_tokens, true)
    }

    /// As [`TinyModel::compile`], on the integer path (int8 activations).
    pub fn compile_int8(&self, quant: QuantKind, group: GroupSize, max_tokens: usize) -> Result<PathBuf> {
        let bytes = compile_bytes_with(&self.model, quant, group, max_tokens, |o| o.int8_activations = true)?;
        let path = self.dir.path().join(format!("{quant}-{group}-{max_tokens}-int8.q35"));
        std::fs::write(&path, bytes)?;
        Ok(path)
    }

    /// Compiles the model with linalg kernels (`q35c --kernels linalg`,
    /// with or without q35-fuse) and writes `NAME-linalg.q35`.
    pub fn compile_linalg(&self, quant: QuantKind, group: GroupSize, max_tokens: usize, fuse: bool) -> Result<PathBuf> {
        let bytes = compile_bytes_with(&self.model, quant, group, max_tokens, |o| {
            o.linalg = true;
            o.fuse = fuse;
        })?;
        let path = self.dir.path().join(format!("{quant}-{group}-{max_tokens}-fuse{fuse}-linalg.q35"));
        std::fs::write(&path, bytes)?;
        Ok(path)
    }

    /// Compiles the model for NVIDIA GPUs and writes `NAME.nvptx.q35`.
    pub fn compile_nvptx(&self, quant: QuantKind, group: GroupSize, max_tokens: usize, fuse: bool) -> Result<PathBuf> {
        let bytes = compile_nvptx_bytes(&self.model, quant, group, max_tokens, fuse)?;
        let path = self.dir.path().join(format!("{quant}-{group}-{max_tokens}-fuse{fuse}.nvptx.q35"));
        std::fs::write(&path, bytes)?;
        Ok(path)
    }

    /// Compiles the model for the TSP target (the default machine
    /// description) and writes `NAME.tsp.q35`.
    pub fn compile_tsp(&self, quant: QuantKind, group: GroupSize, max_tokens: usize) -> Result<PathBuf> {
        self.compile_tsp_for(quant, group, max_tokens, &Default::default())
    }

    /// As [`TinyModel::compile_tsp`], for the machine `config` describes.
    pub fn compile_tsp_for(&self, quant: QuantKind, group: GroupSize, max_tokens: usize, config: &q35_format::tsp::TspConfig) -> Result<PathBuf> {
        let bytes = compile_for_backend(&self.model, quant, group, max_tokens, |_| {}, |options| {
            Box::new(q35_target_tsp::Tsp { config: config.clone(), context_length: options.emit.context_length, max_tokens: options.max_tokens })
        })?;
        let path = self.dir.path().join(format!("{quant}-{group}-{max_tokens}-{}.tsp.q35", config.sram_bytes));
        std::fs::write(&path, bytes)?;
        Ok(path)
    }

    /// As [`TinyModel::compile`], with every matrix input rotated (q35c's
    /// `--rotation on`), writing `NAME-rotated.q35`.
    pub fn compile_rotated(&self, quant: QuantKind, group: GroupSize, max_tokens: usize) -> Result<PathBuf> {
        self.compile_rotated_with(quant, group, max_tokens, false)
    }

    /// [`TinyModel::compile_rotated`], on the integer path if `int8`.
    pub fn compile_rotated_with(&self, quant: QuantKind, group: GroupSize, max_tokens: usize, int8: bool) -> Result<PathBuf> {
        let bytes = compile_graph(&self.model, quant, group, max_tokens, |o| o.int8_activations = int8, true, None, |options| Box::new(q35c::codegen::cpu_backend(options)))?;
        let path = self.dir.path().join(format!("{quant}-{group}-{max_tokens}-int8{int8}-rotated.q35"));
        std::fs::write(&path, bytes)?;
        Ok(path)
    }

    /// [`TinyModel::compile_nvptx`] with rotated matrix inputs
    /// (`--target nvptx --rotation on`), writing `NAME-rotated.nvptx.q35`.
    pub fn compile_nvptx_rotated(&self, quant: QuantKind, group: GroupSize, max_tokens: usize) -> Result<PathBuf> {
        let bytes = compile_graph(&self.model, quant, group, max_tokens, |_| {}, true, None, |options| {
            Box::new(q35c::codegen::nvptx_backend(options, q35_target_nvptx::DEFAULT_GPU_ARCH))
        })?;
        let path = self.dir.path().join(format!("{quant}-{group}-{max_tokens}-rotated.nvptx.q35"));
        std::fs::write(&path, bytes)?;
        Ok(path)
    }

    /// As [`TinyModel::compile`], with or without q35-fuse.
    pub fn compile_with(&self, quant: QuantKind, group: GroupSize, max_tokens: usize, fuse: bool) -> Result<PathBuf> {
        let bytes = compile_bytes(&self.model, quant, group, max_tokens, fuse)?;
        let path = self.dir.path().join(format!("{quant}-{group}-{max_tokens}-fuse{fuse}.q35"));
        std::fs::write(&path, bytes)?;
        Ok(path)
    }
}

/// Artifact bytes for `model`, compiled for the host CPU as the q35c driver does.
pub fn compile_bytes(model: &Path, quant: QuantKind, group: GroupSize, max_tokens: usize, fuse: bool) -> Result<Vec<u8>> {
    compile_bytes_with(model, quant, group, max_tokens, |o| o.fuse = fuse)
}

/// [`compile_bytes`] with the options `configure` sets.
pub fn compile_bytes_with(
    model: &Path,
    quant: QuantKind,
    group: GroupSize,
    max_tokens: usize,
    configure: impl FnOnce(&mut CompileOptions),
) -> Result<Vec<u8>> {
    compile_for(model, quant, group, max_tokens, configure, None)
}

/// Artifact bytes for `model`, compiled for NVIDIA GPUs (`--target nvptx`,
/// the default SM) as the q35c driver does.
pub fn compile_nvptx_bytes(model: &Path, quant: QuantKind, group: GroupSize, max_tokens: usize, fuse: bool) -> Result<Vec<u8>> {
    compile_for(model, quant, group, max_tokens, |o| o.fuse = fuse, Some(q35_target_nvptx::DEFAULT_GPU_ARCH))
}

/// Compiles for the CPU, or for NVIDIA GPUs with `nvptx`.
fn compile_for(
    model: &Path,
    quant: QuantKind,
    group: GroupSize,
    max_tokens: usize,
    configure: impl FnOnce(&mut CompileOptions),
    nvptx_arch: Option<&str>,
) -> Result<Vec<u8>> {
    compile_for_backend(model, quant, group, max_tokens, configure, |options| match nvptx_arch {
        Some(arch) => Box::new(q35c::codegen::nvptx_backend(options, arch)),
        None => Box::new(q35c::codegen::cpu_backend(options)),
    })
}

/// Artifact bytes for `model` (options set by `configure`) compiled by the
/// backend `backend` makes from the options, as the q35c driver does.
fn compile_for_backend(
    model: &Path,
    quant: QuantKind,
    group: GroupSize,
    max_tokens: usize,
    configure: impl FnOnce(&mut CompileOptions),
    backend: impl FnOnce(&CompileOptions) -> Box<dyn q35_target::Backend>,
) -> Result<Vec<u8>> {
    compile_graph(model, quant, group, max_tokens, configure, false, None, backend)
}

/// Artifact bytes for the model at `path` (any size), compiled for the
/// host CPU with rotated matrix inputs (`--rotation on`) and a KV cache of
/// `context` rows.
pub fn compile_rotated_bytes(path: &Path, quant: QuantKind, group: GroupSize, context: usize) -> Result<Vec<u8>> {
    compile_graph(path, quant, group, 16, |_| {}, true, Some(context), |options| Box::new(q35c::codegen::cpu_backend(options)))
}

/// [`compile_for_backend`], the graph's matrix inputs rotated if `rotate`,
/// with a KV cache of `context` rows (default: the model's context).
#[allow(clippy::too_many_arguments)]
fn compile_graph(
    model: &Path,
    quant: QuantKind,
    group: GroupSize,
    max_tokens: usize,
    configure: impl FnOnce(&mut CompileOptions),
    rotate: bool,
    context: Option<usize>,
    backend: impl FnOnce(&CompileOptions) -> Box<dyn q35_target::Backend>,
) -> Result<Vec<u8>> {
    let q35 = Q35Context::new()?;
    let model = front::load(model)?;
    let mut graph = ModelGraph::llama(&model.config)?;
    if rotate {
        graph.rotate_inputs();
    }
    let emit = EmitOptions {
        quant,
        group: match group.fixed() {
            Some(g) => Group::Size(g as u64),
            None => Group::Channel,
        },
        context_length: context.unwrap_or(model.config.max_position_embeddings),
        overrides: Vec::new(),
    };
    let module = emit_module(&q35, &graph, &model.config, &model.source.display().to_string(), &emit)?;
    let mut options = CompileOptions::new(emit, group);
    options.max_tokens = max_tokens;
    configure(&mut options);
    let backend = backend(&options);
    let run = RunOptions {
        verify_each: true,
        print_ir_after_all: false,
    };
    q35c::codegen::compile(&q35, module, &model, &graph, &options, backend.as_ref(), &run, &mut Timings::default())
}

/// Whether this host can run the integer path (AVX-512 VNNI and VBMI);
/// if not, says on stderr that the calling test is skipped.
pub fn int8_path_or_skip() -> bool {
    let available = q35_target_cpu::int8_path_available();
    if !available {
        eprintln!("skipped: this host lacks AVX-512 VNNI/VBMI, which the integer path needs");
    }
    available
}

/// Asserts that `session` (a compiled `artifact`) matches the reference
/// forward pass on the artifact's own weights over `prompt` and `decode`
/// greedy steps: logits within `bound` of max |logit|, every greedy token
/// the same.
pub fn assert_matches_reference(session: &mut q35_rt::executor::Session, artifact: &Path, prompt: &[u32], decode: usize, bound: f64) {
    let mut reference = q35_rt::check::reference_for(artifact).unwrap();
    let report = q35_rt::check::compare(session, &mut reference, prompt, decode).unwrap();
    assert!(report.relative_error() <= bound, "{}: {:.3e} of max |logit| (bound {bound})", artifact.display(), report.relative_error());
    assert_eq!(report.top1_agreement, report.rows, "{}: greedy tokens differ", artifact.display());
}
