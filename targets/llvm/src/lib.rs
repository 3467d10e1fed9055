//! Code generation through LLVM for the CPU and NVPTX.
//!
//! Input: a module already in the LLVM dialect (the kernels after the
//! upstream conversions). [`translate`] turns it into LLVM IR; [`compile_cpu`]
//! optimizes it for the host CPU at -O3 and emits an object file, and
//! [`link_shared_object`] links that into the shared object the runtime
//! loads with dlopen.

mod nvptx;
mod translate;

pub use nvptx::{compile_ptx, find_libdevice, find_ptxas, translate_gpu_module, GPU_ARCHS, NVPTX_TRIPLE};
pub use translate::translate;

use inkwell::{
    context::Context as LlvmContext,
    module::Module as LlvmModule,
    passes::PassBuilderOptions,
    targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine},
    OptimizationLevel,
};
use std::path::Path;

/// One error enum for the crate; messages say which step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("MLIR to LLVM IR translation failed (is the module fully in the LLVM dialect?)")]
    Translate,
    #[error("LLVM target initialization failed: {0}")]
    Target(String),
    #[error("LLVM optimization failed: {0}")]
    Optimize(String),
    #[error("LLVM code generation failed: {0}")]
    Codegen(String),
    #[error("linking the shared object failed: {0}")]
    Link(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// CPU code generation options.
#[derive(Clone, Debug)]
pub struct Options {
    /// LLVM optimization level (0..=3).
    pub opt_level: u8,
    /// Target CPU name; `None` = the host CPU (`native`).
    pub cpu: Option<String>,
    /// Target features; `None` = the host's.
    pub features: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            opt_level: 3,
            cpu: None,
            features: None,
        }
    }
}

/// The host triple, CPU and features as LLVM names them.
pub fn host() -> (String, String, String) {
    (
        TargetMachine::get_default_triple().as_str().to_string_lossy().into_owned(),
        TargetMachine::get_host_cpu_name().to_string(),
        TargetMachine::get_host_cpu_features().to_string(),
    )
}

fn target_machine(options: &Options) -> Result<TargetMachine> {
    Target::initialize_native(&InitializationConfig::default()).map_err(Error::Target)?;
    let triple = TargetMachine::get_default_triple();
    let target = Target::from_triple(&triple).map_err(|e| Error::Target(e.to_string()))?;
    let (_, host_cpu, host_features) = host();
    let level = match options.opt_level {
        0 => OptimizationLevel::None,
        1 => OptimizationLevel::Less,
        2 => OptimizationLevel::Default,
        _ => OptimizationLevel::Aggressive,
    };
    target
        .create_target_machine(
            &triple,
            options.cpu.as_deref().unwrap_or(&host_cpu),
            options.features.as_deref().unwrap_or(&host_features),
            level,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| Error::Target(format!("no target machine for {}", triple.as_str().to_string_lossy())))
}

/// Optimizes `module` for the host and returns the object file's bytes.
pub fn compile_cpu(module: &LlvmModule, options: &Options) -> Result<Vec<u8>> {
    let machine = target_machine(options)?;
    module.set_triple(&machine.get_triple());
    module.set_data_layout(&machine.get_target_data().get_data_layout());
    let pipeline = format!("default<O{}>", options.opt_level.min(3));
    module
        .run_passes(&pipeline, &machine, PassBuilderOptions::create())
        .map_err(|e| Error::Optimize(e.to_string()))?;
    let buffer = machine
        .write_to_memory_buffer(module, FileType::Object)
        .map_err(|e| Error::Codegen(e.to_string()))?;
    Ok(buffer.as_slice().to_vec())
}

/// Assembly text for `--emit=asm`.
pub fn cpu_assembly(module: &LlvmModule, options: &Options) -> Result<String> {
    let machine = target_machine(options)?;
    module.set_triple(&machine.get_triple());
    module.set_data_layout(&machine.get_target_data().get_data_layout());
    let pipeline = format!("default<O{}>", options.opt_level.min(3));
    module
        .run_passes(&pipeline, &machine, PassBuilderOptions::create())
        .map_err(|e| Error::Optimize(e.to_string()))?;
    let buffer = machine
        .write_to_memory_buffer(module, FileType::Assembly)
        .map_err(|e| Error::Codegen(e.to_string()))?;
    Ok(String::from_utf8_lossy(buffer.as_slice()).into_owned())
}

/// Adds to `module` an exported constant byte array `name` holding
/// `bytes`: data the code object declares about itself (the kernel
/// signatures), which the runtime reads from the ELF file before loading it.
pub fn add_exported_bytes(module: &LlvmModule, name: &str, bytes: &[u8]) {
    let value = module.get_context().const_string(bytes, false);
    let global = module.add_global(value.get_type(), None, name);
    global.set_initializer(&value);
    global.set_constant(true);
    global.set_linkage(inkwell::module::Linkage::External);
}

/// Links an object file into a shared object with the system C compiler
/// driver (as rustc does), adding libm for the math the kernels call.
pub fn link_shared_object(object: &[u8], output: &Path) -> Result<()> {
    let dir = output.parent().unwrap_or(Path::new("."));
    let object_path = dir.join(format!(".q35-kernels-{}.o", std::process::id()));
    std::fs::write(&object_path, object).map_err(|e| Error::Link(format!("writing {}: {e}", object_path.display())))?;
    let status = std::process::Command::new("cc")
        .args(["-shared", "-o"])
        .arg(output)
        .arg(&object_path)
        .arg("-lm")
        .output();
    let _ = std::fs::remove_file(&object_path);
    let out = status.map_err(|e| Error::Link(format!("running cc: {e}")))?;
    if !out.status.success() {
        return Err(Error::Link(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    Ok(())
}

/// A fresh LLVM context for [`translate`].
pub fn llvm_context() -> LlvmContext {
    LlvmContext::create()
}

/// The LLVM version the code generator links, e.g. `22.1.8`.
pub fn llvm_version() -> String {
    let (major, minor, patch) = inkwell::support::get_llvm_version();
    format!("{major}.{minor}.{patch}")
}
