//! CPU code generation and the artifact: the q35 module is lowered to
//! kernels and the LLVM dialect, translated to LLVM IR, optimized for the
//! host at -O3 and linked into a shared object; the weights are quantized
//! and stored beside it with the manifest (buffer plan, dispatch list,
//! config, toolchain, checksums) in one `.q35` file.

use crate::{
    emit::EmitOptions,
    front::Model,
    graph::ModelGraph,
    passes::lower::{LowerPass, DEFAULT_ROWS_PER_WORKGROUP},
    pipeline::{self, RunOptions, Timings},
};
use anyhow::{anyhow, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use melior::{
    ir::{block::BlockLike, operation::OperationLike, Module},
    IrRewriter,
};
use q35_dialect::Q35Context;
use q35_format::{
    artifact::{write_artifact, Manifest, TargetSpec, WeightSpec, ARTIFACT_FORMAT, ARTIFACT_VERSION},
    signature::{CodeSignatures, SIGNATURES_SYMBOL},
    GroupSize, ModelConfig, QuantKind, QuantSearch,
};
use std::{collections::BTreeMap, time::Instant};

/// The upstream conversions from kernels (func/scf/arith/math/memref, and
/// linalg for `kernels=linalg`) to the LLVM dialect, in order.
pub const TO_LLVM: &str = "builtin.module(convert-linalg-to-loops,lower-affine,convert-scf-to-cf,convert-math-to-llvm,expand-strided-metadata,finalize-memref-to-llvm,convert-arith-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,reconcile-unrealized-casts)";

/// CPU compilation options beyond the emitter's.
#[derive(Clone, Debug)]
pub struct CpuOptions {
    pub emit: EmitOptions,
    pub group: GroupSize,
    /// How group parameters are chosen (the decode is the same).
    pub search: QuantSearch,
    /// Per-column importances (`--quant-importance`); the matrices it names
    /// are quantized importance-weighted instead of with `search`.
    pub importance: Option<crate::importance::Importance>,
    /// GPTQ's error compensation per weight (from calibration); the
    /// matrices it names get error-compensating rounding.
    pub compensation: crate::calibration::Compensations,
    /// Most tokens one runtime call takes (rows of activation buffers).
    pub max_tokens: usize,
    pub rows_per_workgroup: usize,
    /// Run q35-fuse (epilogues into matmuls) before lowering.
    pub fuse: bool,
    /// Coded matmuls take the integer path (int8 activations, CPU only).
    pub int8_activations: bool,
    /// Kernels are linalg ops (`q35-lower-to-kernels{kernels=linalg}`).
    pub linalg: bool,
    pub llvm: q35_target_llvm::Options,
}

impl CpuOptions {
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
            llvm: q35_target_llvm::Options::default(),
        }
    }
}

/// The runtime's view of the model configuration.
pub fn runtime_config(config: &crate::front::config::ModelConfig) -> ModelConfig {
    ModelConfig {
        architecture: config.architecture.clone(),
        vocab_size: config.vocab_size,
        hidden_size: config.hidden_size,
        intermediate_size: config.intermediate_size,
        num_hidden_layers: config.num_hidden_layers,
        num_attention_heads: config.num_attention_heads,
        num_key_value_heads: config.num_key_value_heads,
        head_dim: config.head_dim,
        rms_norm_eps: config.rms_norm_eps,
        rope_theta: config.rope_theta,
        max_position_embeddings: config.max_position_embeddings,
        tie_word_embeddings: config.tie_word_embeddings,
        bos_token_id: config.bos_token_id,
        eos_token_id: config.eos_token_id,
    }
}

/// Lowers `module` (the emitted q35 module) in place to the kernels stage
/// of `options` (after `q35-fuse` when `fuse` is set; coded matmuls on the
/// integer path when `int8_activations` is; linalg kernels when
/// `linalg` is) and returns the plan.
pub fn lower_to_kernels(
    q35: &Q35Context,
    module: &mut Module,
    options: &CpuOptions,
    run: &RunOptions,
    timings: &mut Timings,
) -> Result<(Vec<q35_format::artifact::BufferSpec>, Vec<q35_format::artifact::DispatchSpec>)> {
    if options.fuse {
        pipeline::run(q35, module, &pipeline::parse("q35-fuse")?, run, timings)?;
    }
    let lower = LowerPass::new(q35.context(), options.rows_per_workgroup)
        .with_int8_activations(options.int8_activations)
        .with_linalg(options.linalg);
    let (plan, findings) = (lower.plan(), lower.findings());
    pipeline::run_pass(q35, module, "q35-lower-to-kernels", lower.into_pass(), &findings, run, timings)?;
    plan.take().ok_or_else(|| anyhow!("q35-lower-to-kernels produced no plan"))
}

/// [`lower_to_kernels`], then upstream conversions to the LLVM dialect.
pub fn lower_to_llvm(
    q35: &Q35Context,
    module: &mut Module,
    options: &CpuOptions,
    run: &RunOptions,
    timings: &mut Timings,
) -> Result<(Vec<q35_format::artifact::BufferSpec>, Vec<q35_format::artifact::DispatchSpec>)> {
    let plan = lower_to_kernels(q35, module, options, run, timings)?;
    let steps = pipeline::parse(TO_LLVM)?;
    pipeline::run(q35, module, &steps, run, timings)?;
    // The plan op has done its job (the manifest carries it) and is not LLVM.
    let body = module.body();
    let mut op = body.first_operation();
    while let Some(current) = op {
        op = current.next_in_block();
        if current.name().as_string_ref().as_str() == Ok("q35.plan") {
            IrRewriter::new(q35.context()).as_rewriter_base().erase_op(current);
        }
    }
    Ok(plan)
}

/// Quantizes every weight the plan names (in parallel, with a progress
/// bar) and returns (spec, payload) pairs. Norm vectors are stored as f32.
fn quantize_weights(model: &Model, graph: &ModelGraph, options: &CpuOptions) -> Result<Vec<(WeightSpec, Vec<u8>)>> {
    let (kind, group, search) = (options.emit.quant, options.group, options.search);
    let weights = graph.weights();
    let progress = ProgressBar::new(weights.len() as u64).with_style(
        ProgressStyle::with_template("quantizing {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let results = crate::parallel::map(&weights, |weight| {
        let result = (|| -> Result<(WeightSpec, Vec<u8>)> {
            let data = model.tensor_f32(&weight.name)?;
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

/// Compiles the model for the host CPU into artifact bytes.
pub fn compile_cpu(
    q35: &Q35Context,
    mut module: Module,
    model: &Model,
    graph: &ModelGraph,
    options: &CpuOptions,
    run: &RunOptions,
    timings: &mut Timings,
) -> Result<Vec<u8>> {
    // An integer-path matmul beyond the proven int32 bound is refused before
    // anything is lowered.
    crate::obligations::check_integer_ops(&module).map_err(|e| anyhow!("refusing to compile:\n{e}"))?;
    let (buffers, dispatches) = lower_to_llvm(q35, &mut module, options, run, timings)?;
    // Refused before LLVM runs: a plan no machine could allocate.
    crate::limits::check_plan_memory(&buffers, options.emit.context_length, options.max_tokens)?;

    let started = Instant::now();
    let llvm = q35_target_llvm::llvm_context();
    let ir = q35_target_llvm::translate(&module, &llvm)?;
    let signatures = CodeSignatures::of_plan(&buffers, &dispatches, options.emit.context_length, options.max_tokens)
        .map_err(|e| anyhow!("internal error: {e}"))?;
    q35_target_llvm::add_exported_bytes(&ir, SIGNATURES_SYMBOL, signatures.to_json().as_bytes());
    timings.record("translate to LLVM IR", started.elapsed());
    let started = Instant::now();
    let object = q35_target_llvm::compile_cpu(&ir, &options.llvm)?;
    timings.record("LLVM -O3 + object code", started.elapsed());
    let started = Instant::now();
    let dir = tempfile::tempdir().context("creating a temporary directory for linking")?;
    let so_path = dir.path().join("kernels.so");
    q35_target_llvm::link_shared_object(&object, &so_path)?;
    let code = std::fs::read(&so_path).with_context(|| format!("reading {}", so_path.display()))?;
    timings.record("link shared object", started.elapsed());

    let (triple, host_cpu, host_features) = q35_target_llvm::host();
    let target = TargetSpec {
        kind: "cpu".to_string(),
        triple,
        cpu: options.llvm.cpu.clone().unwrap_or(host_cpu),
        features: options.llvm.features.clone().unwrap_or(host_features),
    };
    let plan = Plan {
        buffers,
        dispatches,
        launches: Vec::new(),
        rows_per_workgroup: options.rows_per_workgroup,
    };
    assemble_artifact(model, graph, options, target, plan, ("code/cpu.so", code), timings)
}

/// What lowering decided, as the manifest records it.
pub(crate) struct Plan {
    pub buffers: Vec<q35_format::artifact::BufferSpec>,
    pub dispatches: Vec<q35_format::artifact::DispatchSpec>,
    /// Launch configurations (GPU targets; empty on the CPU).
    pub launches: Vec<q35_format::artifact::LaunchSpec>,
    pub rows_per_workgroup: usize,
}

/// Quantizes the weights and writes the artifact every target shares:
/// manifest, weights, the code object `code`, tokenizer, and the proof
/// obligations (derived from what is about to be written and proved with
/// z3 first; docs/proofs.md).
pub(crate) fn assemble_artifact(
    model: &Model,
    graph: &ModelGraph,
    options: &CpuOptions,
    target: TargetSpec,
    plan: Plan,
    (code_name, code): (&str, Vec<u8>),
    timings: &mut Timings,
) -> Result<Vec<u8>> {
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
    payloads.push((code_name.to_string(), code));
    let tokenizer = model.tokenizer_json.as_ref().map(|json| {
        payloads.push(("tokenizer.json".to_string(), json.as_bytes().to_vec()));
        "tokenizer.json".to_string()
    });
    let manifest = Manifest {
        format: ARTIFACT_FORMAT.to_string(),
        version: ARTIFACT_VERSION,
        target,
        model: runtime_config(&model.config),
        quant: options.emit.quant.to_string(),
        group: options.group.to_string(),
        context_length: options.emit.context_length,
        max_tokens: options.max_tokens,
        rows_per_workgroup: plan.rows_per_workgroup,
        buffers: plan.buffers,
        dispatches: plan.dispatches,
        weights: specs,
        code: code_name.to_string(),
        tokenizer,
        toolchain,
        checksums: BTreeMap::new(),
        launches: plan.launches,
        activations: if options.int8_activations { "int8" } else { "f32" }.to_string(),
    };
    let started = Instant::now();
    let obligations = crate::obligations::for_new_artifact(&manifest, &payloads).map_err(|e| anyhow!(e))?;
    payloads.push((crate::obligations::OBLIGATIONS_PAYLOAD.to_string(), obligations));
    timings.record("prove obligations (z3)", started.elapsed());
    Ok(write_artifact(&manifest, &payloads))
}
