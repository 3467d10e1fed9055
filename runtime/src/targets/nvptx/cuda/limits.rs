//! The device limits a launch must fit, checked for every dispatch at
//! load so that no launch fails (or reads garbage) at run time.

use cudarc::driver::result::{self, DriverError};
use cudarc::driver::sys;
use q35_format::artifact::{DispatchSpec, LaunchSpec};

use super::driver::{attribute, describe, function_attribute};

/// The device limits a launch must fit.
pub(super) struct Limits {
    block: [i32; 3],
    shared_default: i32,
    shared_optin: i32,
    grid_x: i32,
}

impl Limits {
    pub(super) fn query(device: sys::CUdevice) -> Result<Self, DriverError> {
        use sys::CUdevice_attribute::*;
        Ok(Self {
            block: [
                attribute(device, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X)?,
                attribute(device, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y)?,
                attribute(device, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z)?,
            ],
            shared_default: attribute(device, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)?,
            shared_optin: attribute(
                device,
                CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )?,
            grid_x: attribute(device, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X)?,
        })
    }

    /// Checks one dispatch's launch against the device and its kernel, and
    /// raises the kernel's dynamic shared memory limit where it needs more
    /// than the default; the error completes "dispatch i (`k`) ...".
    pub(super) fn check(
        &self,
        function: sys::CUfunction,
        dispatch: &DispatchSpec,
        launch: &LaunchSpec,
        max_tokens: usize,
    ) -> Result<(), String> {
        use sys::CUfunction_attribute::*;
        let attr = |a| function_attribute(function, a).map_err(describe);
        for (axis, (&size, &most)) in ["x", "y", "z"]
            .iter()
            .zip(launch.block.iter().zip(&self.block))
        {
            if i64::from(size) > i64::from(most) {
                return Err(format!(
                    "launches blocks of {size} threads in {axis}, more than the {most} allowed"
                ));
            }
        }
        let threads: u64 = launch.block.iter().map(|&b| u64::from(b)).product();
        let kernel_most = attr(CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?;
        if threads > kernel_most.max(0) as u64 {
            return Err(format!(
                "launches blocks of {threads} threads, but the compiled kernel allows at most {kernel_most} (its register use)"
            ));
        }
        let static_shared = attr(CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?.max(0) as u64;
        let shared = static_shared + u64::from(launch.shared_bytes);
        if shared > self.shared_optin.max(0) as u64 {
            return Err(format!(
                "needs {shared} bytes of shared memory per block ({static_shared} static, {} dynamic), more than the {} allowed",
                launch.shared_bytes, self.shared_optin
            ));
        }
        if shared > self.shared_default.max(0) as u64 {
            // Above the default a kernel must opt in to its dynamic size.
            // SAFETY: `function` belongs to the loaded module.
            unsafe {
                result::function::set_function_attribute(
                    function,
                    CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    launch.shared_bytes as i32,
                )
            }
            .map_err(|e| {
                format!(
                    "cannot have {} bytes of dynamic shared memory: {}",
                    launch.shared_bytes,
                    describe(e)
                )
            })?;
        }
        // check_plan bounds this product by i64::MAX.
        let most = dispatch.workgroups + dispatch.workgroups_per_token * max_tokens;
        if most > self.grid_x.max(0) as usize {
            return Err(format!(
                "launches up to {most} blocks ({} + {} per token, {max_tokens} tokens), more than the grid limit of {}",
                dispatch.workgroups, dispatch.workgroups_per_token, self.grid_x
            ));
        }
        Ok(())
    }
}
