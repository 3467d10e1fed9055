//! `q35-lower-to-kernels`: plans the model function as kernels and
//! dispatches, and builds the kernels' CPU bodies (func, scf, arith, math,
//! memref, vector; linalg with `kernels=linalg`) with the CPU target's
//! builders ([`q35_target_cpu::kernels`]).
//!
//! Every compute op of the `q35` function becomes a dispatch of a kernel,
//! described by a typed [`KernelSpec`]; kernels are shared by every op of
//! the same shape (one kernel serves the q projection of all 30 layers).
//! The function itself is replaced by a `q35.plan` op ([`Plan`]) that every
//! target consumes and the compiler turns into the artifact's manifest:
//! `buffers` (every buffer with its element type, width and whether it
//! holds a weight, an input, the KV cache or an activation; activations
//! reuse buffers once their value is dead), `dispatches` (kernel, workgroup
//! count as `workgroups + workgroups_per_token · tokens`, the buffers bound
//! to its memref arguments, in order, and whether it runs concurrently with
//! the dispatches before it: [`Group`]) and `kernels` (each kernel's spec).

use q35_target::{
    builder::Builder, pass::Findings, AttentionShape, Epilogue, KernelSpec, MatmulShape, Plan, RowOp,
};
use q35_target_cpu::int8_path_available;
use melior::{
    ir::{
        attribute::{FloatAttribute, IntegerAttribute},
        block::BlockLike,
        operation::OperationLike,
        r#type::{RankedTensorType, TypeId},
        Location, OperationRef, RegionLike, ShapedTypeLike, Type, Value, ValueLike,
    },
    pass::{create_external, ExternalPass, Pass, RunExternalPass},
    Context, ContextRef,
};
use q35_dialect::PackedType;
use q35_format::{
    artifact::{BufferSpec, DispatchSpec},
    GroupSize, QuantKind,
};
use std::collections::{BTreeMap, HashMap};

pub use q35_target::kernel::{DEFAULT_ROWS_PER_WORKGROUP, DEFAULT_ROWS_PER_WORKGROUP_INT8};

#[repr(align(8))]
struct PassId;
static PASS_ID: PassId = PassId;

/// The buffer plan and dispatch list of the last run, for the driver
/// (which turns them into the manifest without reading them back from IR).
#[derive(Clone, Default)]
pub struct PlanHandle(std::sync::Arc<std::sync::Mutex<Option<Plans>>>);

type Plans = Plan;

impl PlanHandle {
    pub fn take(&self) -> Option<Plan> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn set(&self, plan: Plan) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(plan);
    }
}

#[derive(Clone)]
pub struct LowerPass<'c> {
    context: &'c Context,
    rows_per_workgroup: usize,
    /// Coded matmuls take the integer path (int8 activations).
    int8_activations: bool,
    /// Kernels (all but the KV update) are built from linalg ops.
    linalg: bool,
    findings: Findings,
    plan: PlanHandle,
}

impl<'c> LowerPass<'c> {
    pub fn new(context: &'c Context, rows_per_workgroup: usize) -> Self {
        Self {
            context,
            rows_per_workgroup,
            int8_activations: false,
            linalg: false,
            findings: Findings::default(),
            plan: PlanHandle::default(),
        }
    }

    /// Coded matmuls (not the embedding) quantize their activations to
    /// int8 and multiply in integers ([`int8_path_available`] must
    /// hold: the kernels need AVX-512 VNNI and VBMI).
    pub fn with_int8_activations(mut self, int8: bool) -> Self {
        self.int8_activations = int8;
        self
    }

    /// Kernels (all but the KV update) are `linalg.generic` ops on views of their buffers
    /// (lowered by upstream `convert-linalg-to-loops`) instead of the
    /// hand-written loops and vectors; the integer path keeps its own.
    pub fn with_linalg(mut self, linalg: bool) -> Self {
        self.linalg = linalg;
        self
    }

    pub fn findings(&self) -> Findings {
        self.findings.clone()
    }

    pub fn plan(&self) -> PlanHandle {
        self.plan.clone()
    }

    pub fn into_pass(self) -> Pass {
        create_external(
            self,
            TypeId::create(&PASS_ID),
            "q35-lower-to-kernels",
            "q35-lower-to-kernels",
            "lower q35 ops to kernels in upstream dialects and a dispatch list",
            "builtin.module",
            &[],
        )
    }
}

impl<'c> RunExternalPass<'c> for LowerPass<'c> {
    fn initialize(&mut self, _context: ContextRef<'c>) {}

    fn run(&mut self, operation: OperationRef<'c, '_>, pass: ExternalPass<'_>) {
        if self.int8_activations && !int8_path_available() {
            self.findings.push(
                "int8 activations need a CPU with AVX-512 VNNI and VBMI (avx512vnni, avx512vbmi); this host lacks them: use f32 activations"
                    .to_string(),
            );
            pass.signal_failure();
            return;
        }
        match lower_module(self.context, operation, self.rows_per_workgroup, self.int8_activations, self.linalg) {
            Ok(plan) => self.plan.set(plan),
            Err(message) => {
                self.findings.push(message);
                pass.signal_failure();
            }
        }
    }
}

/// One buffer of the plan.
#[derive(Clone, Debug)]
struct Buffer {
    name: String,
    /// `f32`, `i32`, or the packed weight's type.
    element: String,
    /// Row width (elements per token for activations; total for others).
    width: usize,
    role: &'static str,
}

/// Buffers of activations are reused once dead, keyed by (element, width).
#[derive(Default)]
struct BufferPlan {
    buffers: Vec<Buffer>,
    free: HashMap<(String, usize), Vec<String>>,
}

impl BufferPlan {
    fn add(&mut self, name: String, element: &str, width: usize, role: &'static str) -> String {
        self.buffers.push(Buffer {
            name: name.clone(),
            element: element.to_string(),
            width,
            role,
        });
        name
    }

    /// An f32 activation buffer of `width` per token.
    fn activation(&mut self, width: usize) -> String {
        self.activation_of("f32", width)
    }

    fn activation_of(&mut self, element: &str, width: usize) -> String {
        let key = (element.to_string(), width);
        if let Some(name) = self.free.get_mut(&key).and_then(Vec::pop) {
            return name;
        }
        let name = format!("act{}", self.buffers.len());
        self.add(name, element, width, "activation")
    }

    fn release(&mut self, name: &str) {
        if let Some(b) = self.buffers.iter().find(|b| b.name == name && b.role == "activation") {
            let key = (b.element.clone(), b.width);
            self.free.entry(key).or_default().push(name.to_string());
        }
    }
}

fn tensor_width(r#type: Type) -> Result<(usize, String), String> {
    let tensor = RankedTensorType::try_from(r#type).map_err(|_| format!("expected a ranked tensor, got {type}"))?;
    let last = tensor.rank().checked_sub(1).ok_or("expected a tensor of rank >= 1")?;
    let width = match tensor.dim_size(last) {
        Ok(melior::ir::r#type::DimSize::Static(n)) => n as usize,
        _ => return Err(format!("the last dimension of {type} must be static")),
    };
    Ok((width, tensor.element().to_string()))
}

fn int_attr(op: &OperationRef, name: &str) -> Result<i64, String> {
    op.attribute(name)
        .ok()
        .and_then(|a| IntegerAttribute::try_from(a).ok())
        .map(|a| a.value())
        .ok_or_else(|| format!("missing integer attribute `{name}`"))
}

fn bool_attr(op: &OperationRef, name: &str) -> Result<bool, String> {
    op.attribute(name)
        .ok()
        .and_then(|a| melior::ir::attribute::BoolAttribute::try_from(a).ok())
        .map(|a| a.value())
        .ok_or_else(|| format!("missing bool attribute `{name}`"))
}

fn float_attr(op: &OperationRef, name: &str) -> Result<f64, String> {
    op.attribute(name)
        .ok()
        .and_then(|a| FloatAttribute::try_from(a).ok())
        .map(|a| a.value())
        .ok_or_else(|| format!("missing float attribute `{name}`"))
}

fn group_of(packed: &PackedType) -> GroupSize {
    GroupSize::ALL
        .into_iter()
        .find(|g| g.fixed() == Some(packed.group as usize))
        .unwrap_or(GroupSize::Channel)
}

/// Lowers every function of `module` that holds q35 compute ops.
fn lower_module<'c>(
    context: &'c Context,
    module: OperationRef<'c, '_>,
    rows_per_workgroup: usize,
    int8_activations: bool,
    linalg: bool,
) -> Result<Plan, String> {
    let body = module
        .region(0)
        .ok()
        .and_then(|r| r.first_block())
        .ok_or("module has no body")?;
    let mut functions = Vec::new();
    let mut op = body.first_operation();
    while let Some(current) = op {
        if current.name().as_string_ref().as_str() == Ok("func.func") {
            functions.push(current);
        }
        op = current.next_in_block();
    }
    let mut kernels: BTreeMap<String, KernelSpec> = BTreeMap::new();
    let mut dispatch_list: Vec<DispatchSpec> = Vec::new();
    let mut buffer_list: Vec<BufferSpec> = Vec::new();
    let mut lowered_any = false;
    for function in functions {
        let Some(entry) = function.region(0).ok().and_then(|r| r.first_block()) else { continue };
        if !has_q35_ops(entry) {
            continue;
        }
        if lowered_any {
            return Err("more than one function holds q35 compute ops; lower one model function per module".into());
        }
        lowered_any = true;
        let (dispatches, plan) = plan_function(entry, rows_per_workgroup, int8_activations, linalg, &mut kernels)?;
        dispatch_list = dispatches;
        buffer_list = plan
            .buffers
            .into_iter()
            .map(|b| BufferSpec {
                name: b.name,
                element: b.element,
                width: b.width,
                role: b.role.to_string(),
            })
            .collect();
        melior::IrRewriter::new(context).as_rewriter_base().erase_op(function);
    }
    if !lowered_any {
        return Err("no function with q35 compute ops to lower".into());
    }

    let b = Builder {
        context,
        location: Location::unknown(context),
    };
    for (name, spec) in &kernels {
        body.append_operation(q35_target_cpu::kernels::build_kernel(&b, name, spec));
    }
    let plan = Plan {
        buffers: buffer_list,
        dispatches: dispatch_list,
        kernels,
    };
    body.insert_operation(0, plan.to_op(context, b.location)?);
    Ok(plan)
}

/// SSA values as map keys: their MLIR handle.
fn key(value: Value) -> usize {
    value.to_raw().ptr as usize
}

fn has_q35_ops(block: melior::ir::BlockRef) -> bool {
    let mut op = block.first_operation();
    while let Some(current) = op {
        let name = current.name();
        let name = name.as_string_ref().as_str().unwrap_or("");
        if name.starts_with("q35.") && name != "q35.weight" {
            return true;
        }
        op = current.next_in_block();
    }
    false
}

/// Walks the function in order, assigning buffers and kernels.
fn plan_function(
    entry: melior::ir::BlockRef,
    rows_per_workgroup: usize,
    int8_activations: bool,
    linalg: bool,
    kernels: &mut BTreeMap<String, KernelSpec>,
) -> Result<(Vec<DispatchSpec>, BufferPlan), String> {
    let mut plan = BufferPlan::default();
    let mut names: HashMap<usize, (String, usize)> = HashMap::new();
    // Last use of every value, to release activation buffers.
    let mut last_use: HashMap<usize, usize> = HashMap::new();
    let mut ops = Vec::new();
    let mut op = entry.first_operation();
    while let Some(current) = op {
        for operand in current.operands() {
            last_use.insert(key(operand), ops.len());
        }
        ops.push(current);
        op = current.next_in_block();
    }

    // Arguments: token ids / positions (tensor<?xi32>) or activations
    // (tensor<?xWxf32>), the start position (index), and KV caches (static
    // tensor<CxWxf32>, in (k, v) pairs per layer).
    let mut caches = 0;
    for i in 0..entry.argument_count() {
        let value: Value = entry.argument(i).map_err(|e| e.to_string())?.into();
        let Ok(tensor) = RankedTensorType::try_from(value.r#type()) else {
            continue; // the start position, a scalar
        };
        let (width, element) = if tensor.rank() == 1 {
            (1, tensor.element().to_string())
        } else {
            tensor_width(value.r#type())?
        };
        let rows = match tensor.dim_size(0) {
            Ok(melior::ir::r#type::DimSize::Static(n)) if tensor.rank() == 2 => Some(n as usize),
            _ => None,
        };
        let name = match (rows, element.as_str(), i) {
            (Some(rows), _, _) => {
                let which = if caches % 2 == 0 { "k" } else { "v" };
                let name = format!("{which}_cache.{}", caches / 2);
                caches += 1;
                plan.add(name, "f32", rows * width, "kv_cache")
            }
            (None, "i32", 0) => plan.add("tokens".into(), "i32", 1, "input"),
            (None, "i32", 1) => plan.add("positions".into(), "i32", 1, "input"),
            (None, _, _) => plan.add(format!("input{i}"), &element, width, "input"),
        };
        names.insert(key(value), (name, 0));
    }

    // The integer path's quantized forms of a value (its key and the
    // quantize kernel), each computed once and released with the value.
    let mut quantized: HashMap<(usize, String), String> = HashMap::new();
    let mut dispatches = Vec::new();
    let mut group = Group::default();
    // A dispatch writes its last `writes` buffers (one, or the two caches
    // of kv_update) and reads the others.
    let mut emit = |kernel: &str, workgroups: usize, per_token: usize, buffers: &[String], writes: usize| {
        let concurrent = group.admit(buffers, writes);
        dispatches.push(DispatchSpec {
            kernel: kernel.to_string(),
            workgroups,
            workgroups_per_token: per_token,
            buffers: buffers.to_vec(),
            concurrent,
        });
    };

    for (index, op) in ops.iter().enumerate() {
        let op_name = op.name();
        let op_name = op_name.as_string_ref().as_str().unwrap_or("").to_string();
        let operand = |i: usize| -> Result<Value, String> { op.operand(i).map_err(|e| e.to_string()) };
        let buffer_of = |names: &HashMap<usize, (String, usize)>, v: Value| -> Result<String, String> {
            names.get(&key(v)).map(|(n, _)| n.clone()).ok_or_else(|| format!("`{op_name}` uses a value with no buffer"))
        };
        let mut results: Vec<(Value, String, usize)> = Vec::new();
        match op_name.as_str() {
            "q35.weight" => {
                let name = op
                    .attribute("name")
                    .ok()
                    .and_then(q35_dialect::verify::string_value)
                    .ok_or("weight without a name")?;
                let result: Value = op.result(0).map_err(|e| e.to_string())?.into();
                let (element, width) = match PackedType::from_type(result.r#type()) {
                    Some(packed) => {
                        let packed = packed.map_err(|e| e.to_string())?;
                        (packed.to_string(), (packed.rows * packed.cols) as usize)
                    }
                    None => (tensor_width(result.r#type())?.1, tensor_width(result.r#type())?.0),
                };
                plan.add(name.clone(), &element, width, "weight");
                names.insert(key(result), (name, 0));
                continue;
            }
            "q35.dequant_matmul" | "q35.dequant_matmul_add" | "q35.dequant_matmul_swiglu" | "q35.embedding" => {
                let (input, weight) = (operand(0)?, operand(1)?);
                let epilogue = match op_name.as_str() {
                    "q35.dequant_matmul_add" => Epilogue::AddResidual,
                    "q35.dequant_matmul_swiglu" => Epilogue::SwiGlu,
                    _ => Epilogue::None,
                };
                let packed_or_float = PackedType::from_type(weight.r#type());
                let shape = match packed_or_float {
                    Some(p) => {
                        let p = p.map_err(|e| e.to_string())?;
                        MatmulShape {
                            n: p.rows as usize,
                            k: p.cols as usize,
                            quant: p.quant,
                            group: group_of(&p),
                            rows_per_workgroup,
                            epilogue,
                            // The integer path needs integer codes.
                            int8_activations: int8_activations
                                && op_name != "q35.embedding"
                                && !matches!(p.quant, QuantKind::F16 | QuantKind::F32),
                            linalg,
                        }
                    }
                    None => {
                        let t = RankedTensorType::try_from(weight.r#type()).map_err(|_| "weight must be packed or a tensor")?;
                        let dim = |i| match t.dim_size(i) {
                            Ok(melior::ir::r#type::DimSize::Static(n)) => Ok(n as usize),
                            _ => Err("weight shape must be static".to_string()),
                        };
                        MatmulShape {
                            n: dim(0)?,
                            k: dim(1)?,
                            quant: QuantKind::F32,
                            group: GroupSize::Channel,
                            rows_per_workgroup,
                            epilogue,
                            int8_activations: false,
                            linalg,
                        }
                    }
                };
                let result: Value = op.result(0).map_err(|e| e.to_string())?.into();
                let (width, _) = tensor_width(result.r#type())?;
                let out = plan.activation(width);
                // The third operand is the residual (add) or the up weight
                // (SwiGLU); either way it is bound after the first weight.
                let mut x = buffer_of(&names, input)?;
                if shape.int8_activations {
                    // Quantized once, for every matmul that reads this input.
                    let codes = shape.activation_codes();
                    let kernel = codes.kernel_name();
                    let entry = (key(input), kernel.clone());
                    x = match quantized.get(&entry) {
                        Some(rows) => rows.clone(),
                        None => {
                            let rows = plan.activation_of("i8", codes.row_bytes());
                            emit(&kernel, 0, 1, &[x, rows.clone()], 1);
                            kernels.entry(kernel).or_insert(KernelSpec::QuantizeActivations(codes));
                            quantized.insert(entry, rows.clone());
                            rows
                        }
                    };
                }
                let mut buffers = vec![x, buffer_of(&names, weight)?];
                if epilogue != Epilogue::None {
                    buffers.push(buffer_of(&names, operand(2)?)?);
                }
                buffers.push(out.clone());
                if op_name == "q35.embedding" {
                    let name = format!("embedding_{}_{}x{}_g{}{}", shape.quant, shape.n, shape.k, shape.group, if shape.linalg_body() { "_linalg" } else { "" });
                    emit(&name, 0, 1, &buffers, 1);
                    kernels.entry(name).or_insert(KernelSpec::Embedding(shape));
                } else {
                    let name = shape.kernel_name();
                    emit(&name, shape.workgroups(), 0, &buffers, 1);
                    kernels.entry(name).or_insert(KernelSpec::Matmul(shape));
                }
                results.push((result, out, width));
            }
            "q35.rms_norm" | "q35.add" | "q35.mul" | "q35.silu" | "q35.swiglu" | "q35.rotate" => {
                let row_op = match op_name.as_str() {
                    "q35.rotate" => RowOp::Rotate {
                        inverse: bool_attr(op, "inverse")?,
                    },
                    "q35.rms_norm" => RowOp::RmsNorm {
                        epsilon: float_attr(op, "epsilon")?,
                    },
                    "q35.add" => RowOp::Add,
                    "q35.mul" => RowOp::Mul,
                    "q35.silu" => RowOp::Silu,
                    _ => RowOp::SwiGlu,
                };
                let result: Value = op.result(0).map_err(|e| e.to_string())?.into();
                let (width, _) = tensor_width(result.r#type())?;
                let mut buffers = Vec::new();
                for i in 0..row_op.inputs() {
                    buffers.push(buffer_of(&names, operand(i)?)?);
                }
                let out = plan.activation(width);
                buffers.push(out.clone());
                let name = match row_op {
                    // Printed as f32: the attribute is f32, and its f64 widening
                    // (9.999999747378752e-6) makes an unreadable symbol.
                    RowOp::RmsNorm { epsilon } => format!("rms_norm_{width}_eps{:e}", epsilon as f32).replace(['.', '-'], "_"),
                    _ => format!("{}_{width}", row_op.name()),
                };
                // The transform's butterflies have no linalg form here: its
                // loops serve both kernel styles.
                let linalg = linalg && !matches!(row_op, RowOp::Rotate { .. });
                let name = name + if linalg { "_linalg" } else { "" };
                emit(&name, 0, 1, &buffers, 1);
                kernels.entry(name).or_insert(KernelSpec::Row { op: row_op, width, linalg });
                results.push((result, out, width));
            }
            "q35.rope" => {
                let head_dim = int_attr(op, "head_dim")? as usize;
                let theta = float_attr(op, "theta")?;
                let result: Value = op.result(0).map_err(|e| e.to_string())?.into();
                let (width, _) = tensor_width(result.r#type())?;
                let out = plan.activation(width);
                let buffers = vec![buffer_of(&names, operand(0)?)?, buffer_of(&names, operand(1)?)?, out.clone()];
                let name = format!("rope_{width}_hd{head_dim}_theta{}{}", theta as u64, if linalg { "_linalg" } else { "" });
                emit(&name, 0, 1, &buffers, 1);
                kernels.entry(name).or_insert(KernelSpec::Rope { width, head_dim, theta, linalg });
                results.push((result, out, width));
            }
            "q35.attention" => {
                let cache_type = operand(3)?.r#type();
                let context_rows = RankedTensorType::try_from(cache_type)
                    .ok()
                    .and_then(|t| t.dim_size(0).ok())
                    .and_then(|d| match d {
                        melior::ir::r#type::DimSize::Static(n) => Some(n as usize),
                        _ => None,
                    })
                    .ok_or("KV cache rows must be static")?;
                let shape = AttentionShape {
                    num_heads: int_attr(op, "num_heads")? as usize,
                    num_kv_heads: int_attr(op, "num_kv_heads")? as usize,
                    head_dim: int_attr(op, "head_dim")? as usize,
                    context: context_rows,
                };
                let (q, k, v, kc, vc) = (
                    buffer_of(&names, operand(0)?)?,
                    buffer_of(&names, operand(1)?)?,
                    buffer_of(&names, operand(2)?)?,
                    buffer_of(&names, operand(3)?)?,
                    buffer_of(&names, operand(4)?)?,
                );
                let suffix = format!("h{}_kv{}_hd{}_c{}", shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.context);
                let update = format!("kv_update_{suffix}");
                emit(&update, 0, 1, &[k, v, kc.clone(), vc.clone()], 2);
                kernels.entry(update).or_insert(KernelSpec::KvUpdate(shape));
                let result: Value = op.result(0).map_err(|e| e.to_string())?.into();
                let (width, _) = tensor_width(result.r#type())?;
                let out = plan.activation(width);
                let attend = format!("attention_{suffix}{}", if linalg { "_linalg" } else { "" });
                emit(&attend, shape.num_heads, 0, &[q, kc.clone(), vc.clone(), out.clone()], 1);
                kernels.entry(attend).or_insert(KernelSpec::Attention { shape, linalg });
                results.push((result, out, width));
                // The updated caches are the same buffers, updated in place.
                for (i, cache) in [(1, kc), (2, vc)] {
                    let value: Value = op.result(i).map_err(|e| e.to_string())?.into();
                    names.insert(key(value), (cache, 0));
                }
            }
            "func.return" => {
                let logits = buffer_of(&names, operand(0)?)?;
                for buffer in &mut plan.buffers {
                    if buffer.name == logits {
                        buffer.role = "output";
                    }
                }
                // Outputs are never reused.
                plan.free.clear();
                continue;
            }
            other => return Err(format!("cannot lower `{other}` to kernels")),
        }
        for (value, buffer, width) in results {
            names.insert(key(value), (buffer, width));
        }
        // Release activations whose last use was this op, with their
        // quantized forms (once, if an op reads a value twice).
        let mut released = Vec::new();
        for operand in op.operands() {
            if last_use.get(&key(operand)) == Some(&index) && !released.contains(&key(operand)) {
                released.push(key(operand));
                if let Some((name, width)) = names.get(&key(operand)) {
                    if *width > 0 {
                        plan.release(name);
                    }
                }
                quantized.retain(|(value, _), rows| {
                    if *value == key(operand) {
                        plan.release(rows);
                    }
                    *value != key(operand)
                });
            }
        }
    }
    Ok((dispatches, plan))
}

/// The buffers read and written by the dispatches of the current
/// concurrent group (docs/artifact.md §4: `concurrent`).
#[derive(Default)]
struct Group {
    reads: std::collections::HashSet<String>,
    writes: std::collections::HashSet<String>,
}

impl Group {
    /// Adds a dispatch binding `buffers` whose last `writes` it writes:
    /// to this group when it has no hazard with it (returns true), else as
    /// the first of a new group.
    fn admit(&mut self, buffers: &[String], writes: usize) -> bool {
        let split = buffers.len() - writes;
        let reads = &buffers[..split];
        let written = &buffers[split..];
        let independent = !self.writes.is_empty()
            && reads.iter().all(|b| !self.writes.contains(b))
            && written.iter().all(|b| !self.writes.contains(b) && !self.reads.contains(b));
        if !independent {
            self.reads.clear();
            self.writes.clear();
        }
        self.reads.extend(reads.iter().cloned());
        self.writes.extend(written.iter().cloned());
        independent
    }
}
