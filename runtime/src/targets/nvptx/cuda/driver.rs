//! The CUDA driver API as the backend uses it: opening the library (so
//! that a missing driver is a message, not cudarc's panic), error text,
//! device attributes, the context/stream/module/memory of a session
//! released in order ([`Gpu`]), and the PTX JIT with its error log.

use std::ffi::c_void;

use cudarc::driver::result::{self, DriverError};
use cudarc::driver::sys;

use crate::targets::nvptx::Program;

/// Bytes of the JIT error log kept for the message.
const JIT_LOG_BYTES: usize = 16 << 10;

/// `CUDA_ERROR_NAME: description` for a driver error.
pub(super) fn describe(error: DriverError) -> String {
    let name = error.error_name().map_or_else(
        |_| format!("{:?}", error.0),
        |n| n.to_string_lossy().into_owned(),
    );
    match error.error_string() {
        Ok(text) => format!("{name}: {}", text.to_string_lossy()),
        Err(_) => name,
    }
}

/// Opens the CUDA driver library the way cudarc will (its list of names,
/// in order), so that a missing driver is an error with the loader's
/// reason instead of cudarc's panic.
pub fn open_driver() -> Result<(), String> {
    let mut first_error = None;
    for name in cudarc::get_lib_name_candidates("cuda") {
        // SAFETY: loading the driver runs its initializers, as the first
        // driver call would.
        match unsafe { libloading::Library::new(&name) } {
            Ok(_) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    Err(first_error.unwrap_or_else(|| "no library name to try".into()))
}

/// The GPU a session runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: i32,
    pub name: String,
    /// Compute capability.
    pub major: u32,
    pub minor: u32,
    pub memory_bytes: usize,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CUDA device {} ({}, compute capability {}.{}, {:.1} GiB)",
            self.ordinal,
            self.name,
            self.major,
            self.minor,
            self.memory_bytes as f64 / (1u64 << 30) as f64
        )
    }
}

/// A device attribute.
pub(super) fn attribute(
    device: sys::CUdevice,
    attribute: sys::CUdevice_attribute,
) -> Result<i32, DriverError> {
    // SAFETY: `device` came from cuDeviceGet.
    unsafe { result::device::get_attribute(device, attribute) }
}

/// A kernel attribute.
pub(super) fn function_attribute(
    function: sys::CUfunction,
    attribute: sys::CUfunction_attribute,
) -> Result<i32, DriverError> {
    // SAFETY: `function` came from cuModuleGetFunction on a loaded module.
    unsafe { result::function::get_function_attribute(function, attribute) }
}

/// The context, stream, module and device memory of a session, released
/// in reverse order on drop (also when loading fails half way).
pub(super) struct Gpu {
    pub(super) device: sys::CUdevice,
    pub(super) context: sys::CUcontext,
    pub(super) stream: sys::CUstream,
    pub(super) module: sys::CUmodule,
    pub(super) allocations: Vec<sys::CUdeviceptr>,
}

impl Gpu {
    /// Makes the context current on this thread.
    pub(super) fn current(&self) -> Result<(), DriverError> {
        // SAFETY: the primary context is retained for as long as `self` lives.
        unsafe { result::ctx::set_current(self.context) }
    }

    /// `bytes` (at least 1) of zeroed device memory, freed on drop.
    pub(super) fn alloc_zeroed(&mut self, bytes: usize) -> Result<sys::CUdeviceptr, DriverError> {
        let bytes = bytes.max(1);
        // SAFETY: the context is current (callers make it so).
        let ptr = unsafe { result::malloc_sync(bytes) }?;
        self.allocations.push(ptr);
        // SAFETY: `ptr` is a fresh allocation of `bytes` bytes.
        unsafe { result::memset_d8_sync(ptr, 0, bytes) }?;
        Ok(ptr)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // Errors are ignored: nothing can be done about them here, and
        // after a kernel fault every call returns the same sticky error.
        // SAFETY: every handle was created in this context and is
        // released once; the stream is drained before memory is freed.
        unsafe {
            let _ = result::ctx::set_current(self.context);
            if !self.stream.is_null() {
                let _ = result::stream::synchronize(self.stream);
            }
            for ptr in self.allocations.drain(..).rev() {
                let _ = result::free_sync(ptr);
            }
            if !self.module.is_null() {
                let _ = result::module::unload(self.module);
            }
            if !self.stream.is_null() {
                let _ = result::stream::destroy(self.stream);
            }
            let _ = result::primary_ctx::release(self.device);
        }
    }
}


/// Loads the PTX, with the JIT's error log in the message on failure.
pub(super) fn load_module(program: &Program) -> Result<sys::CUmodule, String> {
    let mut log = vec![0u8; JIT_LOG_BYTES];
    let mut options = [
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
    ];
    // The driver takes option values as pointer-sized words.
    let mut values = [
        log.as_mut_ptr().cast::<c_void>(),
        std::ptr::without_provenance_mut(log.len()),
    ];
    let mut module = std::ptr::null_mut();
    // SAFETY: a NUL-terminated PTX image, two options with matching
    // values, and a log buffer of the size given, alive for the call.
    let status = unsafe {
        sys::cuModuleLoadDataEx(
            &mut module,
            program.ptx().as_ptr().cast(),
            options.len() as u32,
            options.as_mut_ptr(),
            values.as_mut_ptr(),
        )
    };
    match status.result() {
        Ok(()) => Ok(module),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]);
            let log = log.trim();
            Err(format!(
                "the CUDA driver cannot compile the PTX for this GPU ({}){}",
                describe(e),
                if log.is_empty() {
                    String::new()
                } else {
                    format!(":\n{log}")
                }
            ))
        }
    }
}
