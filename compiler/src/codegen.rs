//! Compiling for a target into an artifact: the target lowers the q35
//! module to its code object (through the [`q35_target::Backend`] trait);
//! the weights are quantized and stored beside it with the manifest
//! (buffer plan, dispatch list, config, toolchain, checksums) and the proof
//! obligations in one `.q35` file.

use crate::{
    emit::EmitOptions,
    front::Model,
    graph::ModelGraph,
    passes::Registry,
    pipeline::{RunOptions, Timings},
};
use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use melior::ir::Module;
use q35_dialect::Q35Context;
use q35_format::{
    artifact::{write_artifact, Manifest, WeightSpec, ARTIFACT_FORMAT, ARTIFACT_VERSION},
    GroupSize, QuantKind, QuantSearch,
};
use q35_target::{kernel::DEFAULT_ROWS_PER_WORKGROUP, Backend, CodeObject, Plan, Session};
use std::{collections::BTreeMap, time::Instant};

/// Compilation options beyond the emitter's.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub emit: EmitOptions,
    pub group: GroupSize,
    /// How group parameters are chosen (the decode is the same).
    pub search: QuantSearch,
    /// Per-column importances (`--quant-importance`); the matrices it names
    /// are quantized importance-weighted instead of with `search`.
    pub importance: Option<crate::importance::Importance>,
    /// GPTQ's error compensation per weight (from calibration); the
    /// matrices it names get error-compensating rounding.
    pub compensation: q35_format::gptq::Compensations,
    /// Most tokens one runtime call takes (rows of activation buffers).
    pub max_tokens: usize,
    /// Run q35-fuse (epilogues into matmuls) before lowering.
    pub fuse: bool,
    /// [`compile_cpu`]'s target options (the driver reads them from the
    /// CPU target's command-line options instead).
    pub rows_per_workgroup: usize,
    /// Coded matmuls take the integer path (int8 activations, CPU only).
    pub int8_activations: bool,
    /// Kernels are linalg ops (`q35-lower-to-kernels{kernels=linalg}`).
    pub linalg: bool,
}

impl CompileOptions {
    pub fn new(emit: EmitOptions, group: GroupSize) -> Self {
        Self {
            emit,
            group,
            search: QuantSearch::default(),
            importance: None,
            compensation: Default::default(),
            max_tokens: 64,
            rows_per_workgroup: DEFAULT_ROWS_PER_WORKGROUP,
            fuse: true,
            int8_activations: false,
            linalg: false,
        }
    }
}

/// Quantizes every weight the plan names (in parallel, with a progress
/// bar) and returns (spec, payload) pairs. Norm vectors are stored as f32.
fn quantize_weights(model: &Model, graph: &ModelGraph, options: &CompileOptions) -> Result<Vec<(WeightSpec, Vec<u8>)>> {
    let (kind, group, search) = (options.emit.quant, options.group, options.search);
    let weights = graph.weights();
    let progress = ProgressBar::new(weights.len() as u64).with_style(
        ProgressStyle::with_template("quantizing {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let results = crate::parallel::map(&weights, |weight| {
        let result = (|| -> Result<(WeightSpec, Vec<u8>)> {
            let data = graph.weight_f32(model, &weight.name)?;
            let (rows, cols, kind, group) = if weight.is_matrix {
                let (kind, group) = options.emit.rule_for(&weight.name).map_or((kind, group), |r| (r.kind, r.group));
                (weight.shape[0], weight.shape[1], kind, group)
            } else {
                (1, weight.shape[0], QuantKind::F32, GroupSize::Channel)
            };
            let q = quantize_matrix(
                &weight.name,
                rows,
                cols,
                &data,
                (kind, group),
                search,
                options.importance.as_ref(),
                options.compensation.get(&weight.name).filter(|_| weight.is_matrix).map(|c| &**c),
            )?;
            let spec = WeightSpec {
                name: weight.name.clone(),
                tensor: format!("weights/{}", weight.name),
                kind: kind.to_string(),
                rows,
                cols,
            };
            Ok((spec, q.to_bytes()))
        })();
        progress.set_message(weight.name.clone());
        progress.inc(1);
        result
    });
    progress.finish_and_clear();
    results.into_iter().collect()
}

/// Quantizes one matrix as the artifact stores it: GPTQ's rounding where
/// calibration gave a compensation, else importance-weighted (or
/// `search`ed) group parameters with nearest rounding.
#[allow(clippy::too_many_arguments)]
pub fn quantize_matrix(
    name: &str,
    rows: usize,
    cols: usize,
    data: &[f32],
    (kind, group): (QuantKind, GroupSize),
    search: q35_format::QuantSearch,
    importance: Option<&crate::importance::Importance>,
    compensation: Option<&q35_format::gptq::Compensation>,
) -> Result<q35_format::QuantizedTensor> {
    match compensation.filter(|_| kind.is_coded()) {
        Some(compensation) => Ok(q35_format::QuantizedTensor::quantize_with_compensation(
            name,
            rows,
            cols,
            data,
            kind,
            group,
            importance.and_then(|i| i.get(name)).map(Vec::as_slice),
            compensation,
        )?),
        None => crate::importance::quantize(name, rows, cols, data, kind, group, search, importance),
    }
}

/// Compiles the model with `backend` (a configured target) into artifact
/// bytes.
#[allow(clippy::too_many_arguments)]
pub fn compile(
    q35: &Q35Context,
    module: Module,
    model: &Model,
    graph: &ModelGraph,
    options: &CompileOptions,
    backend: &dyn Backend,
    run: &RunOptions,
    timings: &mut Timings,
) -> Result<Vec<u8>> {
    // An integer-path matmul beyond the proven int32 bound is refused before
    // anything is lowered.
    crate::obligations::check_integer_ops(&module).map_err(|e| anyhow!("refusing to compile:\n{e}"))?;
    let (context_length, max_tokens) = (options.emit.context_length, options.max_tokens);
    let check = |plan: &Plan| crate::limits::check_plan_memory(&plan.buffers, context_length, max_tokens);
    let mut session = Session { q35, passes: &Registry, run, timings };
    let code = backend.compile(&mut session, module, &check)?;
    assemble_artifact(model, graph, options, code, timings)
}

/// Compiles the model for the host CPU (the options' CPU fields) into
/// artifact bytes.
pub fn compile_cpu(
    q35: &Q35Context,
    module: Module,
    model: &Model,
    graph: &ModelGraph,
    options: &CompileOptions,
    run: &RunOptions,
    timings: &mut Timings,
) -> Result<Vec<u8>> {
    compile(q35, module, model, graph, options, &cpu_backend(options), run, timings)
}

/// The CPU target configured from the options' CPU fields.
pub fn cpu_backend(options: &CompileOptions) -> q35_target_cpu::Cpu {
    q35_target_cpu::Cpu {
        fuse: options.fuse,
        rows_per_workgroup: options.rows_per_workgroup,
        int8: options.int8_activations,
        linalg: options.linalg,
        context_length: options.emit.context_length,
        max_tokens: options.max_tokens,
        llvm: q35_target_llvm::Options::default(),
    }
}

/// The NVPTX target for the SM `arch`, configured from the options.
pub fn nvptx_backend(options: &CompileOptions, arch: &str) -> q35_target_nvptx::Nvptx {
    q35_target_nvptx::Nvptx {
        arch: arch.to_string(),
        warps: q35_target_nvptx::DEFAULT_WARPS,
        fuse: options.fuse,
        context_length: options.emit.context_length,
        max_tokens: options.max_tokens,
    }
}

/// Compiles the model for NVIDIA GPUs (the SM `arch`, e.g. `sm_80`) into
/// artifact bytes.
#[allow(clippy::too_many_arguments)]
pub fn compile_nvptx(
    q35: &Q35Context,
    module: Module,
    model: &Model,
    graph: &ModelGraph,
    options: &CompileOptions,
    arch: &str,
    run: &RunOptions,
    timings: &mut Timings,
) -> Result<Vec<u8>> {
    compile(q35, module, model, graph, options, &nvptx_backend(options, arch), run, timings)
}

/// Quantizes the weights and writes the artifact every target shares:
/// manifest, weights, the code object `code`, tokenizer, and the proof
/// obligations (derived from what is about to be written and proved with
/// z3 first; docs/proofs.md).
fn assemble_artifact(model: &Model, graph: &ModelGraph, options: &CompileOptions, code: CodeObject, timings: &mut Timings) -> Result<Vec<u8>> {
    let CodeObject { payload: code_name, bytes: code, target, plan, launches, rows_per_workgroup, activations } = code;
    let started = Instant::now();
    let weights = quantize_weights(model, graph, options)?;
    timings.record("quantize weights", started.elapsed());

    let mut toolchain = BTreeMap::new();
    toolchain.insert("q35c".to_string(), env!("CARGO_PKG_VERSION").to_string());
    toolchain.insert("llvm".to_string(), q35_target_llvm::llvm_version());
    toolchain.insert("melior".to_string(), "0.27".to_string());
    let mut payloads: Vec<(String, Vec<u8>)> = Vec::new();
    let mut specs = Vec::new();
    for (spec, bytes) in weights {
        payloads.push((spec.tensor.clone(), bytes));
        specs.push(spec);
    }
    payloads.push((code_name.clone(), code));
    let tokenizer = model.tokenizer_json.as_ref().map(|json| {
        payloads.push(("tokenizer.json".to_string(), json.as_bytes().to_vec()));
        "tokenizer.json".to_string()
    });
    let chat_template = model.chat_template.as_ref().map(|spec| {
        payloads.push((q35_rt::chat::PAYLOAD.to_string(), serde_json::to_vec(spec).expect("strings serialize")));
        q35_rt::chat::PAYLOAD.to_string()
    });
    let manifest = Manifest {
        format: ARTIFACT_FORMAT.to_string(),
        version: ARTIFACT_VERSION,
        target,
        model: model.config.clone(),
        quant: options.emit.quant.to_string(),
        group: options.group.to_string(),
        context_length: options.emit.context_length,
        max_tokens: options.max_tokens,
        rows_per_workgroup,
        buffers: plan.buffers,
        dispatches: plan.dispatches,
        weights: specs,
        code: code_name,
        tokenizer,
        chat_template,
        toolchain,
        checksums: BTreeMap::new(),
        launches,
        activations: activations.to_string(),
        rotated_inputs: !graph.rotated.is_empty(),
    };
    let started = Instant::now();
    let obligations = crate::obligations::for_new_artifact(&manifest, &payloads).map_err(|e| anyhow!(e))?;
    payloads.push((crate::obligations::OBLIGATIONS_PAYLOAD.to_string(), obligations));
    timings.record("prove obligations (z3)", started.elapsed());
    Ok(write_artifact(&manifest, &payloads))
}
