//! MLIR's LLVM dialect to an inkwell module.
//!
//! melior has no safe wrapper for `mlirTranslateModuleToLLVMIR`, so this is
//! the one place q35 crosses the C API by hand: MLIR builds the LLVM module
//! inside the LLVM context inkwell owns, and inkwell takes ownership of it.

use crate::{Error, Result};
use inkwell::{context::Context as LlvmContext, module::Module as LlvmModule};
use melior::ir::Module;

/// Translates `module` (LLVM dialect only) into LLVM IR in `context`.
pub fn translate<'ctx>(module: &Module, context: &'ctx LlvmContext) -> Result<LlvmModule<'ctx>> {
    // SAFETY: `module` is a valid MLIR module for the duration of the call,
    // and the LLVM context pointer comes from a live inkwell context; the
    // returned module (or null on failure) belongs to that context, and
    // inkwell's `Module::new` takes ownership of it for the context's
    // lifetime 'ctx. Both libraries are the same LLVM 22 build.
    let raw = unsafe {
        mlir_sys::mlirTranslateModuleToLLVMIR(
            module.as_operation().to_raw(),
            context.raw() as mlir_sys::LLVMContextRef,
        )
    };
    if raw.is_null() {
        return Err(Error::Translate);
    }
    Ok(unsafe { LlvmModule::new(raw as inkwell::llvm_sys::prelude::LLVMModuleRef) })
}
