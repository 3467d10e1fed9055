//! NVPTX code generation: the device part of a GPU-lowered module (the
//! `gpu.module` after `convert-gpu-to-nvvm`, i.e. LLVM + NVVM dialects) to
//! LLVM IR for `nvptx64-nvidia-cuda`, libdevice linked in for the math the
//! kernels call (`__nv_expf`, `__nv_cos`, ...), optimized at -O3 and printed
//! as PTX by LLVM's NVPTX back end through inkwell.
//!
//! Why inkwell and not MLIR's `gpu-module-to-binary{format=isa}`: the
//! latter's PTX lands in a `#gpu.object` attribute that the C API does not
//! read back, and it looks for libdevice in a CUDA installation; here the
//! same LLVM that compiles the CPU kernels runs, with the optimization
//! level, the SM and the libdevice file under q35's control.

use crate::{Error, Result};
use inkwell::{
    context::Context as LlvmContext,
    module::{Linkage, Module as LlvmModule},
    passes::PassBuilderOptions,
    targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetTriple},
    OptimizationLevel,
};
use melior::ir::{block::BlockLike, operation::OperationLike, Location, Module, RegionLike};
use std::path::Path;

/// The NVPTX triple the kernels are compiled for.
pub const NVPTX_TRIPLE: &str = "nvptx64-nvidia-cuda";

/// SM architectures `--gpu-arch` accepts.
pub const GPU_ARCHS: &[&str] = &["sm_80", "sm_86", "sm_89", "sm_90"];

/// LLVM's calling convention number for `ptx_kernel` functions.
const PTX_KERNEL_CC: u32 = 71;

/// Translates the first `gpu.module` of `module` (already in the LLVM and
/// NVVM dialects) into LLVM IR in `context`: its ops are copied into a
/// fresh builtin module, which is translated like the CPU one.
pub fn translate_gpu_module<'ctx>(module: &Module, context: &'ctx LlvmContext) -> Result<LlvmModule<'ctx>> {
    let mut op = module.body().first_operation();
    let gpu_module = loop {
        let Some(current) = op else { return Err(Error::Translate) };
        if current.name().as_string_ref().as_str() == Ok("gpu.module") {
            break current;
        }
        op = current.next_in_block();
    };
    let mlir_context = module.as_operation().context();
    // SAFETY: the context outlives this function (the module borrows it).
    let device = Module::new(Location::unknown(unsafe { mlir_context.to_ref() }));
    let body = gpu_module
        .region(0)
        .ok()
        .and_then(|r| r.first_block())
        .ok_or(Error::Translate)?;
    let mut op = body.first_operation();
    while let Some(current) = op {
        // SAFETY: mlirOperationClone returns a new, detached operation that
        // the returned `Operation` owns until it is appended to `device`.
        let copy = unsafe { melior::ir::Operation::from_raw(mlir_sys::mlirOperationClone(current.to_raw())) };
        device.body().append_operation(copy);
        op = current.next_in_block();
    }
    crate::translate(&device, context)
}

/// The PTX text of `module` (LLVM IR for the device) for `arch` (`sm_80`
/// ...). `libdevice` is linked in when the module calls `__nv_*` functions;
/// without it such a module is an error that says where to get it.
pub fn compile_ptx(module: &LlvmModule, arch: &str, libdevice: Option<&Path>) -> Result<String> {
    if !GPU_ARCHS.contains(&arch) {
        return Err(Error::Target(format!("unsupported GPU architecture `{arch}` (known: {})", GPU_ARCHS.join(", "))));
    }
    Target::initialize_nvptx(&InitializationConfig::default());
    let triple = TargetTriple::create(NVPTX_TRIPLE);
    let target = Target::from_triple(&triple).map_err(|e| Error::Target(e.to_string()))?;
    // No feature string: LLVM picks the lowest PTX ISA version the SM needs.
    let machine = target
        .create_target_machine(&triple, arch, "", OptimizationLevel::Aggressive, RelocMode::Default, CodeModel::Default)
        .ok_or_else(|| Error::Target(format!("no NVPTX target machine for {arch}")))?;
    module.set_triple(&triple);
    module.set_data_layout(&machine.get_target_data().get_data_layout());

    let mut needs_libdevice = false;
    let mut function = module.get_first_function();
    while let Some(f) = function {
        if f.count_basic_blocks() == 0 && f.get_name().to_bytes().starts_with(b"__nv_") {
            needs_libdevice = true;
        }
        function = f.get_next_function();
    }
    if needs_libdevice {
        let path = libdevice.ok_or_else(|| {
            Error::Target("the kernels call libdevice math (__nv_*) but no libdevice.10.bc was found; run scripts/setup.sh (it installs the CUDA nvcc wheel into ~/.cache/q35/cuda) or set Q35_LIBDEVICE".into())
        })?;
        let library = LlvmModule::parse_bitcode_from_path(path, module.get_context())
            .map_err(|e| Error::Target(format!("reading libdevice {}: {e}", path.display())))?;
        library.set_triple(&triple);
        library.set_data_layout(&machine.get_target_data().get_data_layout());
        module
            .link_in_module(library)
            .map_err(|e| Error::Target(format!("linking libdevice {}: {e}", path.display())))?;
    }
    // Only kernels are entry points: everything else (device helpers,
    // libdevice) becomes internal, so -O3 inlines it and drops the unused.
    let mut function = module.get_first_function();
    while let Some(f) = function {
        if f.count_basic_blocks() > 0 && f.get_call_conventions() != PTX_KERNEL_CC {
            f.set_linkage(Linkage::Internal);
        }
        function = f.get_next_function();
    }
    let mut global = module.get_first_global();
    while let Some(g) = global {
        if !g.is_declaration() {
            g.set_linkage(Linkage::Internal);
        }
        global = g.get_next_global();
    }
    module
        .run_passes("default<O3>", &machine, PassBuilderOptions::create())
        .map_err(|e| Error::Optimize(e.to_string()))?;
    module.verify().map_err(|e| Error::Codegen(e.to_string()))?;
    let buffer = machine
        .write_to_memory_buffer(module, FileType::Assembly)
        .map_err(|e| Error::Codegen(e.to_string()))?;
    Ok(String::from_utf8_lossy(buffer.as_slice()).into_owned())
}

/// Where scripts/setup.sh puts NVIDIA's nvcc wheel: `$Q35_CUDA_DIR`, else
/// `~/.cache/q35/cuda`.
fn cuda_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("Q35_CUDA_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/q35/cuda")))
}

/// Where libdevice is: `$Q35_LIBDEVICE`, the wheel that scripts/setup.sh
/// installs (`~/.cache/q35/cuda`), then a CUDA installation.
pub fn find_libdevice() -> Option<std::path::PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("Q35_LIBDEVICE") {
        candidates.push(std::path::PathBuf::from(path));
    }
    candidates.extend(cuda_dir().map(|d| d.join("nvidia/cuda_nvcc/nvvm/libdevice/libdevice.10.bc")));
    for root in ["/usr/local/cuda", "/usr/lib/cuda"] {
        candidates.push(Path::new(root).join("nvvm/libdevice/libdevice.10.bc"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Where ptxas is: `$Q35_PTXAS`, the wheel from scripts/setup.sh, then
/// `PATH` and `/usr/local/cuda`.
pub fn find_ptxas() -> Option<std::path::PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("Q35_PTXAS") {
        candidates.push(std::path::PathBuf::from(path));
    }
    candidates.extend(cuda_dir().map(|d| d.join("nvidia/cuda_nvcc/bin/ptxas")));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("ptxas")));
    }
    candidates.push("/usr/local/cuda/bin/ptxas".into());
    candidates.into_iter().find(|p| p.is_file())
}
