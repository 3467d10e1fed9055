//! `q35-lower-to-gpu`: turns the kernels of `q35-lower-to-kernels` into GPU
//! kernels in a `gpu.module`, and gives every dispatch a launch
//! configuration.
//!
//! Input: a module after `q35-lower-to-kernels` (a `q35.plan` and one
//! `func.func` per kernel). Output:
//!
//! ```mlir
//! module attributes {gpu.container_module} {
//!   "q35.plan"() {buffers = [...], dispatches = [{..., block = array<i32: 128, 1, 1>}]}
//!   gpu.module @q35_kernels {
//!     gpu.func @dequant_matmul_q35_576x576_g128_r64(%tokens: index, %start: index, %x: memref<?x576xf32>, ...)
//!         kernel attributes {known_block_size = array<i32: 128, 1, 1>} { ... }
//!     gpu.func @rms_norm_576_eps1e_5(%tokens: index, %start: index, ...) kernel
//!         attributes {known_block_size = array<i32: 32, 1, 1>} { ... }
//!     gpu.func @embedding_q35_49152x576_g128(%tokens: index, %start: index, %ids: memref<?xi32>, ...) kernel
//!         attributes {known_block_size = array<i32: 32, 1, 1>} { ... }
//!   }
//! }
//! ```
//!
//! Every GPU kernel takes `(tokens, start, buffers...)` with the CPU
//! kernel's memref types; the launch grid is `workgroups +
//! workgroups_per_token · tokens` blocks in x (as on the CPU) of the
//! dispatch's `block` threads. Matmuls (every quant kind and epilogue)
//! become the warp-per-row fused dequant-GEMV of [`gemv`], with
//! `workgroups = ceil(N / warps)`. RMSNorm, the elementwise ops, RoPE and
//! the KV update become one-warp-per-token kernels and attention one warp
//! per (token, head) ([`rows`]); the embedding one warp per token
//! ([`gemv::build_embedding`]). Any other kernel keeps its CPU loop nest as
//! a private device function, run by one thread per workgroup.

// The op-building helpers of `q35-lower-to-kernels`.
use crate::{gemv, rows};
use q35_target::{
    builder::{arg, Builder},
    pass::Findings,
    AttentionShape, KernelSpec, MatmulShape, Plan, RowOp,
};
use melior::{
    dialect::func,
    ir::{
        attribute::{
            DenseI32ArrayAttribute, FlatSymbolRefAttribute,
            StringAttribute, TypeAttribute,
        },
        block::BlockLike,
        operation::{OperationBuilder, OperationLike, OperationMutLike, OperationRefMut},
        r#type::FunctionType,
        Attribute, Block, Identifier, Location, Operation, OperationRef, Region, RegionLike, Type,
    },
    pass::{create_external, ExternalPass, Pass, RunExternalPass},
    Context, ContextRef,
};
use q35_format::artifact::{DispatchSpec, LaunchSpec};
use std::collections::BTreeMap;

/// Warps (output rows) per GEMV block by default.
pub const DEFAULT_WARPS: usize = 4;

/// Name of the device module.
pub const GPU_MODULE: &str = "q35_kernels";

#[repr(align(8))]
struct PassId;
static PASS_ID: PassId = PassId;

/// The dispatch list with GPU workgroup counts and each dispatch's launch,
/// for the driver.
#[derive(Clone, Default)]
pub struct LaunchHandle(std::sync::Arc<std::sync::Mutex<Option<Launches>>>);

/// The dispatch list (GPU workgroup counts) and one launch per dispatch.
pub type Launches = (Vec<DispatchSpec>, Vec<LaunchSpec>);

impl LaunchHandle {
    pub fn take(&self) -> Option<Launches> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn set(&self, value: Launches) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    }
}

#[derive(Clone)]
pub struct GpuPass<'c> {
    context: &'c Context,
    warps: usize,
    findings: Findings,
    launches: LaunchHandle,
}

impl<'c> GpuPass<'c> {
    pub fn new(context: &'c Context, warps: usize) -> Self {
        Self {
            context,
            warps,
            findings: Findings::default(),
            launches: LaunchHandle::default(),
        }
    }

    pub fn findings(&self) -> Findings {
        self.findings.clone()
    }

    pub fn launches(&self) -> LaunchHandle {
        self.launches.clone()
    }

    pub fn into_pass(self) -> Pass {
        create_external(
            self,
            TypeId::create(&PASS_ID),
            "q35-lower-to-gpu",
            "q35-lower-to-gpu",
            "turn q35 kernels into gpu.func kernels with launch configurations",
            "builtin.module",
            &[],
        )
    }
}

use melior::ir::r#type::TypeId;

impl<'c> RunExternalPass<'c> for GpuPass<'c> {
    fn initialize(&mut self, _context: ContextRef<'c>) {}

    fn run(&mut self, operation: OperationRef<'c, '_>, pass: ExternalPass<'_>) {
        match lower_module(self.context, operation, self.warps) {
            Ok(launches) => self.launches.set(launches),
            Err(message) => {
                self.findings.push(message);
                pass.signal_failure();
            }
        }
    }
}

/// The warp-parallel kernels of [`rows`].
enum RowKernel {
    Row(RowOp, usize),
    Rope { width: usize, head_dim: usize, theta: f64 },
    KvUpdate(AttentionShape),
    Attention(AttentionShape),
}

fn gpu_func<'c>(b: &Builder<'c>, name: &str, arguments: &[Type<'c>], threads: u32, fill: impl FnOnce(&Block<'c>)) -> Operation<'c> {
    let block = Block::new(&arguments.iter().map(|&t| (t, b.location)).collect::<Vec<_>>());
    fill(&block);
    block.append_operation(OperationBuilder::new("gpu.return", b.location).build().expect("valid gpu.return"));
    let region = Region::new();
    region.append_block(block);
    OperationBuilder::new("gpu.func", b.location)
        .add_attributes(&[
            (Identifier::new(b.context, "sym_name"), StringAttribute::new(b.context, name).into()),
            (
                Identifier::new(b.context, "function_type"),
                TypeAttribute::new(FunctionType::new(b.context, arguments, &[]).into()).into(),
            ),
            (Identifier::new(b.context, "gpu.kernel"), Attribute::unit(b.context)),
            (
                Identifier::new(b.context, "known_block_size"),
                DenseI32ArrayAttribute::new(b.context, &[threads as i32, 1, 1]).into(),
            ),
        ])
        .add_regions([region])
        .build()
        .expect("valid gpu.func")
}

fn lower_module<'c>(context: &'c Context, module: OperationRef<'c, '_>, warps: usize) -> Result<Launches, String> {
    let body = module
        .region(0)
        .ok()
        .and_then(|r| r.first_block())
        .ok_or("module has no body")?;
    let mut plan = None;
    let mut kernels = Vec::new();
    let mut op = body.first_operation();
    while let Some(current) = op {
        match current.name().as_string_ref().as_str() {
            Ok("q35.plan") => plan = Some(current),
            Ok("func.func") => kernels.push(current),
            Ok("gpu.module") => return Err("the module already has a gpu.module; q35-lower-to-gpu runs once".into()),
            _ => {}
        }
        op = current.next_in_block();
    }
    let plan = plan.ok_or("no q35.plan: run q35-lower-to-kernels before q35-lower-to-gpu")?;
    let plan_op = plan;
    let plan = Plan::from_op(plan_op)?;
    // One stream runs the launches in order: none is concurrent.
    let mut dispatches: Vec<DispatchSpec> = plan.dispatches.iter().map(|d| DispatchSpec { concurrent: false, ..d.clone() }).collect();
    let b = Builder {
        context,
        location: Location::unknown(context),
    };
    let location = b.location;

    let device = Block::new(&[]);
    // Threads per block and GPU workgroup count of each kernel.
    let mut launch: BTreeMap<String, (u32, Option<(usize, usize)>)> = BTreeMap::new();
    for kernel in kernels {
        let name = kernel
            .attribute("sym_name")
            .ok()
            .and_then(|a| StringAttribute::try_from(a).ok())
            .map(|s| s.value().to_string())
            .ok_or("kernel without a name")?;
        let function_type = kernel
            .attribute("function_type")
            .ok()
            .and_then(|a| TypeAttribute::try_from(a).ok())
            .and_then(|t| FunctionType::try_from(t.value()).ok())
            .ok_or_else(|| format!("kernel `{name}` has no function type"))?;
        let arguments: Vec<Type> = (0..function_type.input_count())
            .map(|i| function_type.input(i).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        if arguments.len() < 3 || arguments[..3].iter().any(|t| *t != b.index_type()) {
            return Err(format!("kernel `{name}` does not take (workgroup, tokens, start) first"));
        }
        if !dispatches.iter().any(|d| d.kernel == name) {
            continue; // no dispatch calls it
        }
        let mut gpu_arguments = vec![b.index_type(); 2];
        gpu_arguments.extend_from_slice(&arguments[3..]);
        let spec = plan.kernels.get(&name).copied();
        // A matmul whose buffers are those of a float-activation matmul
        // (the integer path's stay generic).
        let shape = match spec {
            Some(KernelSpec::Matmul(shape)) => Some(MatmulShape { rows_per_workgroup: 1, int8_activations: false, linalg: false, ..shape }),
            _ => None,
        }
        .filter(|shape| shape.buffer_types(&b) == arguments[3..]);
        // A coded table (an f16/f32 one stays generic).
        let embedding = match spec {
            Some(KernelSpec::Embedding(shape)) if shape.quant.is_coded() => Some(MatmulShape { rows_per_workgroup: 1, int8_activations: false, linalg: false, ..shape }),
            _ => None,
        };
        let row_kernel = match spec {
            // The CPU loop nest, one thread per token (below): correct, not
            // fast; there is no warp-parallel transform yet.
            Some(KernelSpec::Row { op: RowOp::Rotate { .. }, .. }) => None,
            Some(KernelSpec::Row { op, width, linalg: false }) => Some(RowKernel::Row(op, width)),
            Some(KernelSpec::Rope { width, head_dim, theta, .. }) => Some(RowKernel::Rope { width, head_dim, theta }),
            Some(KernelSpec::KvUpdate(shape)) => Some(RowKernel::KvUpdate(shape)),
            Some(KernelSpec::Attention { shape, .. }) => Some(RowKernel::Attention(shape)),
            _ => None,
        };
        if let Some(shape) = shape {
            let threads = (warps * gemv::WARP) as u32;
            device.append_operation(gpu_func(&b, &name, &gpu_arguments, threads, |block| gemv::build(&b, &shape, warps, block)));
            launch.insert(name.clone(), (threads, Some((gemv::workgroups(&shape, warps), 0))));
        } else if let Some(shape) = embedding {
            // One warp per token, as many blocks as the CPU's workgroups.
            let threads = gemv::WARP as u32;
            device.append_operation(gpu_func(&b, &name, &gpu_arguments, threads, |block| gemv::build_embedding(&b, &shape, block, false)));
            launch.insert(name.clone(), (threads, None));
        } else if let Some(spec) = row_kernel {
            type Fill<'f, 'c> = Box<dyn FnOnce(&Block<'c>) + 'f>;
            let (grid, fill): (Option<(usize, usize)>, Fill<'_, 'c>) = match spec {
                RowKernel::Row(op, width) => (None, Box::new(move |block| rows::build_row(&b, op, width, block, rows::Mode::Gpu))),
                RowKernel::Rope { width, head_dim, theta } => (None, Box::new(move |block| rows::build_rope(&b, width, head_dim, theta, block, rows::Mode::Gpu))),
                RowKernel::KvUpdate(shape) => (None, Box::new(move |block| rows::build_kv_update(&b, &shape, block, rows::Mode::Gpu))),
                // One block per (token, head) instead of one per head.
                RowKernel::Attention(shape) => (Some((0, shape.num_heads)), Box::new(move |block| rows::build_attention(&b, &shape, block, rows::Mode::Gpu))),
            };
            device.append_operation(gpu_func(&b, &name, &gpu_arguments, rows::THREADS, fill));
            launch.insert(name.clone(), (rows::THREADS, grid));
        } else {
            // The CPU loop nest becomes a device function; one thread per
            // workgroup calls it with its block id as the workgroup.
            let body_name = format!("{name}__body");
            let callee = FlatSymbolRefAttribute::new(context, &body_name);
            device.append_operation(gpu_func(&b, &name, &gpu_arguments, 1, |block| {
                let wg = gemv::gpu_id(&b, block, "gpu.block_id");
                let mut operands = vec![wg];
                operands.extend((0..block.argument_count()).map(|i| arg(block, i)));
                block.append_operation(func::call(context, callee, &operands, &[], location));
            }));
            // SAFETY: the kernel is detached from the module and owned by
            // `moved` until it is appended to the device block.
            let mut moved = unsafe { OperationRefMut::from_raw(kernel.to_raw()) };
            moved.remove_from_parent();
            let mut moved = unsafe { Operation::from_raw(kernel.to_raw()) };
            moved.set_attribute("sym_name", StringAttribute::new(context, &body_name).into());
            moved.set_attribute("sym_visibility", StringAttribute::new(context, "private").into());
            let _ = moved.remove_attribute("llvm.emit_c_interface");
            device.append_operation(moved);
            launch.insert(name.clone(), (1, None));
            continue;
        }
        melior::IrRewriter::new(context).as_rewriter_base().erase_op(kernel);
    }

    let mut launches = Vec::new();
    for dispatch in &mut dispatches {
        let (threads, workgroups) = *launch
            .get(&dispatch.kernel)
            .ok_or_else(|| format!("dispatch of `{}`, which is not a kernel of the module", dispatch.kernel))?;
        if let Some((workgroups, per_token)) = workgroups {
            dispatch.workgroups = workgroups;
            dispatch.workgroups_per_token = per_token;
        }
        launches.push(LaunchSpec {
            block: [threads, 1, 1],
            shared_bytes: 0,
        });
    }

    // The plan again, with GPU workgroup counts and each dispatch's block.
    let text: Vec<String> = dispatches
        .iter()
        .zip(&launches)
        .map(|(d, l)| {
            let list: Vec<String> = d.buffers.iter().map(|b| format!("\"{b}\"")).collect();
            format!(
                "{{kernel = @{}, workgroups = {} : i64, workgroups_per_token = {} : i64, buffers = [{}], block = array<i32: {}, {}, {}>}}",
                d.kernel,
                d.workgroups,
                d.workgroups_per_token,
                list.join(", "),
                l.block[0],
                l.block[1],
                l.block[2]
            )
        })
        .collect();
    let new_dispatches = Attribute::parse(context, &format!("[{}]", text.join(", "))).ok_or("internal: bad dispatch list")?;
    let buffers = plan_op.attribute("buffers").map_err(|e| e.to_string())?;
    let new_plan = OperationBuilder::new("q35.plan", location)
        .add_attributes(&[
            (Identifier::new(context, "buffers"), buffers),
            (Identifier::new(context, "dispatches"), new_dispatches),
        ])
        .build()
        .map_err(|e| e.to_string())?;
    melior::IrRewriter::new(context).as_rewriter_base().erase_op(plan_op);
    body.insert_operation(0, new_plan);

    let region = Region::new();
    region.append_block(device);
    let gpu_module = OperationBuilder::new("gpu.module", location)
        .add_attributes(&[(Identifier::new(context, "sym_name"), StringAttribute::new(context, GPU_MODULE).into())])
        .add_regions([region])
        .build()
        .map_err(|e| e.to_string())?;
    body.append_operation(gpu_module);
    // SAFETY: the pass owns the module op while it runs.
    let mut module_mut = unsafe { OperationRefMut::from_raw(module.to_raw()) };
    module_mut.set_attribute("gpu.container_module", Attribute::unit(context));
    Ok((dispatches, launches))
}

/// Host builds of the GPU kernels' CPU forms, for the emulation tests.
#[cfg(test)]
pub(crate) mod emulation {
    use q35_target::builder::Builder;
    use melior::ir::{
        attribute::{Attribute, StringAttribute, TypeAttribute},
        block::BlockLike,
        r#type::FunctionType,
        Block, Identifier, Location, Region, RegionLike, Type,
    };

    /// The shared object of one kernel `k(wg, tokens, start, buffers...)`
    /// (memref types as text), its body built by `fill`, compiled like a
    /// model's CPU kernels; it exports `_mlir_ciface_k`.
    pub fn shared_object(buffers: &[String], fill: impl FnOnce(&Builder, &Block)) -> Vec<u8> {
        let q35 = q35_dialect::Q35Context::new().unwrap();
        let context = q35.context();
        let location = Location::unknown(context);
        let b = Builder { context, location };
        let module = melior::ir::Module::new(location);
        let mut types = vec![b.index_type(); 3];
        types.extend(buffers.iter().map(|t| Type::parse(context, t).unwrap()));
        let block = Block::new(&types.iter().map(|&t| (t, location)).collect::<Vec<_>>());
        fill(&b, &block);
        block.append_operation(melior::dialect::func::r#return(&[], location));
        let region = Region::new();
        region.append_block(block);
        module.body().append_operation(melior::dialect::func::func(
            context,
            StringAttribute::new(context, "k"),
            TypeAttribute::new(FunctionType::new(context, &types, &[]).into()),
            region,
            &[(Identifier::new(context, "llvm.emit_c_interface"), Attribute::unit(context))],
            location,
        ));
        assert!(melior::ir::operation::OperationLike::verify(&module.as_operation()));
        q35_target_cpu::shared_object(&q35, module).unwrap()
    }

    /// The text of a matmul shape's buffer types (activations, weights,
    /// residual, output).
    pub fn buffer_types(shape: &q35_target::MatmulShape) -> Vec<String> {
        let q35 = q35_dialect::Q35Context::new().unwrap();
        let b = Builder { context: q35.context(), location: Location::unknown(q35.context()) };
        shape.buffer_types(&b).iter().map(|t| t.to_string()).collect()
    }
}
