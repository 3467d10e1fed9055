//! Running an `nvptx` artifact on an NVIDIA GPU (the `cuda` feature).
//!
//! The CUDA driver API comes from cudarc with `dynamic-loading`:
//! `libcuda.so` is opened when a session starts, so building needs no CUDA
//! toolkit and a machine without a driver or GPU gets a message, not a
//! link error. cudarc panics when it cannot open the library, so
//! [`open_driver`] looks for it first and keeps the loader's reason.
//!
//! Loading, once [`Program`] has checked the artifact without a GPU
//! (container, target, plan, weights, the PTX's entries and their
//! parameter counts):
//!
//! 1. the driver loads and initializes and sees a device; device 0 is used
//!    (`CUDA_VISIBLE_DEVICES` chooses another);
//! 2. the device's compute capability runs the artifact's SM;
//! 3. the driver JIT-compiles the PTX (`cuModuleLoadDataEx`; its error log
//!    is in the message when that fails) and every kernel is looked up;
//! 4. every launch fits the device: block shape, threads per block (also
//!    the kernel's own limit after register allocation), shared memory,
//!    grid size;
//! 5. memory: every weight array is copied to the device once, the
//!    activations, KV caches, inputs and output are allocated there and
//!    zeroed, and every dispatch's parameter list is built
//!    ([`Program::params`]).
//!
//! A call copies the token ids and positions to the device, patches each
//! dispatch's `tokens`, `start` and per-token sizes, launches the
//! dispatches in order on one stream (stream order is the dependency
//! between them) and copies the logits back; a kernel's failure surfaces
//! at that copy as a [`DeviceError`] (the session's `ForwardError::Device`).
//!
//! Driver handles are only used with the context current on the calling
//! thread: every entry point makes it current first, so a session may move
//! between threads.
//!
//! `driver` wraps the driver API (library, errors, handles, the PTX JIT),
//! `limits` checks launches against the device, `bandwidth` measures the
//! device's memory bandwidth; this module loads and runs.

mod bandwidth;
mod driver;
mod limits;

use std::collections::HashMap;
use std::ffi::{c_void, CString};

use cudarc::driver::result::{self, DriverError};
use cudarc::driver::sys;
use q35_format::artifact::Artifact;

pub use bandwidth::DeviceBandwidth;
use driver::{attribute, describe, load_module, Gpu};
pub use driver::{open_driver, DeviceInfo};
use limits::Limits;

use super::{KernelParams, Program};
use crate::artifact::{ArtifactInfo, BufferClass, LoadError};
use crate::bandwidth::MeasuredBandwidth;
use crate::targets::{DeviceError, DispatchObserver, Executor, LoadOptions};

/// The registry's loader for `nvptx` artifacts (the `cuda` feature): the
/// offline checks, then the GPU (`threads` is unused).
pub fn load(
    path: &str,
    artifact: &Artifact<'_>,
    file_bytes: u64,
    _options: LoadOptions,
) -> Result<Box<dyn Executor>, LoadError> {
    Ok(Box::new(CudaArtifact::from_artifact(path, artifact, file_bytes)?))
}

/// One dispatch, ready to launch.
struct GpuDispatch {
    kernel: String,
    function: sys::CUfunction,
    block: (u32, u32, u32),
    shared_bytes: u32,
    workgroups: usize,
    workgroups_per_token: usize,
    params: KernelParams,
}

/// A device-to-device copy's bandwidth: bytes read plus bytes written, per
/// An nvptx artifact loaded on a GPU: weights uploaded, buffers allocated,
/// kernels and their parameters ready.
pub struct CudaArtifact {
    info: ArtifactInfo,
    device: DeviceInfo,
    dispatches: Vec<GpuDispatch>,
    /// Device address of each buffer's arrays (manifest order).
    arrays: Vec<Vec<sys::CUdeviceptr>>,
    /// The logits of the last call, `max_tokens × vocab_size`.
    logits: Vec<f32>,
    /// Token ids then positions of the call, as i32.
    staging: Vec<i32>,
    /// Addresses of one dispatch's parameter values, for cuLaunchKernel.
    pointers: Vec<*mut c_void>,
    /// Host copies of activations for `forward_observed` (empty until used).
    mirrors: Vec<Vec<f32>>,
    // Dropped last: everything above refers to its memory and module.
    gpu: Gpu,
}

// SAFETY: the raw pointers are driver handles and device addresses owned
// by `gpu`, used only with the context made current on the calling thread,
// and `pointers`, rebuilt before every launch.
unsafe impl Send for CudaArtifact {}

impl std::fmt::Debug for CudaArtifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaArtifact")
            .field("path", &self.info.path())
            .field("device", &self.device)
            .field("dispatches", &self.dispatches.len())
            .finish()
    }
}

impl CudaArtifact {
    /// Checks a parsed artifact ([`Program::from_artifact`]) and loads it
    /// on the GPU.
    pub fn from_artifact(
        path: &str,
        artifact: &Artifact<'_>,
        file_bytes: u64,
    ) -> Result<Self, LoadError> {
        Self::new(Program::from_artifact(path, artifact, file_bytes)?)
    }

    /// Loads a checked program on device 0 (see the module docs).
    pub fn new(mut program: Program) -> Result<Self, LoadError> {
        let path = program.info().path().to_string();
        let no_gpu = |what: String| LoadError::NoGpu {
            path: path.clone(),
            what,
        };
        let cuda = |what: String| LoadError::Cuda {
            path: path.clone(),
            what,
        };
        let started = std::time::Instant::now();

        open_driver().map_err(|e| {
            no_gpu(format!(
                "the CUDA driver (libcuda.so) could not be loaded: {e}"
            ))
        })?;
        result::init().map_err(|e| {
            no_gpu(format!(
                "the CUDA driver found no usable device ({})",
                describe(e)
            ))
        })?;
        let count = result::device::get_count().map_err(|e| {
            no_gpu(format!(
                "the CUDA driver cannot count devices ({})",
                describe(e)
            ))
        })?;
        if count < 1 {
            return Err(no_gpu("the CUDA driver found no device".into()));
        }
        let ordinal = 0;
        let query =
            |e: DriverError| cuda(format!("querying CUDA device {ordinal}: {}", describe(e)));
        let handle = result::device::get(ordinal).map_err(query)?;
        let device = DeviceInfo {
            ordinal,
            name: result::device::get_name(handle).map_err(query)?,
            major: attribute(
                handle,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
            )
            .map_err(query)? as u32,
            minor: attribute(
                handle,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
            )
            .map_err(query)? as u32,
            // SAFETY: `handle` came from cuDeviceGet.
            memory_bytes: unsafe { result::device::total_mem(handle) }.map_err(query)?,
        };
        tracing::info!(%device, "CUDA device");
        let sm = program.sm();
        if !sm.runs_on(device.major, device.minor) {
            return Err(LoadError::ComputeCapability {
                path: path.clone(),
                sm: sm.to_string(),
                device: format!("CUDA device {ordinal} ({})", device.name),
                major: device.major,
                minor: device.minor,
            });
        }

        // SAFETY: `handle` came from cuDeviceGet; released by Gpu's drop.
        let context = unsafe { result::primary_ctx::retain(handle) }
            .map_err(|e| cuda(format!("creating a CUDA context: {}", describe(e))))?;
        let mut gpu = Gpu {
            device: handle,
            context,
            stream: std::ptr::null_mut(),
            module: std::ptr::null_mut(),
            allocations: Vec::new(),
        };
        gpu.current()
            .map_err(|e| cuda(format!("making the CUDA context current: {}", describe(e))))?;
        gpu.stream = result::stream::create(result::stream::StreamKind::NonBlocking)
            .map_err(|e| cuda(format!("creating a CUDA stream: {}", describe(e))))?;
        gpu.module = load_module(&program).map_err(cuda)?;
        tracing::debug!(elapsed = ?started.elapsed(), "PTX compiled by the driver");

        // Taken before `program` is borrowed below; dropped once uploaded.
        let weights = std::mem::take(&mut program.validated.weights);
        let manifest = program.info().manifest();
        let mut functions: HashMap<&str, sys::CUfunction> = HashMap::new();
        for (index, d) in manifest.dispatches.iter().enumerate() {
            if functions.contains_key(d.kernel.as_str()) {
                continue;
            }
            // check_plan refuses kernel names with NUL bytes.
            let name = CString::new(d.kernel.as_str())
                .map_err(|_| cuda(format!("kernel name {:?}", d.kernel)))?;
            // SAFETY: the module is loaded and stays so while `gpu` lives.
            let function =
                unsafe { result::module::get_function(gpu.module, name) }.map_err(|e| {
                    match e.0 {
                        sys::CUresult::CUDA_ERROR_NOT_FOUND => LoadError::MissingEntry {
                            path: path.clone(),
                            index,
                            kernel: d.kernel.clone(),
                        },
                        _ => cuda(format!("looking up kernel `{}`: {}", d.kernel, describe(e))),
                    }
                })?;
            functions.insert(&d.kernel, function);
        }
        let limits = Limits::query(handle).map_err(query)?;
        for (index, (d, launch)) in manifest
            .dispatches
            .iter()
            .zip(&manifest.launches)
            .enumerate()
        {
            limits
                .check(functions[d.kernel.as_str()], d, launch, manifest.max_tokens)
                .map_err(|what| {
                    cuda(format!(
                        "dispatch {index} (`{}`) {what} on {}",
                        d.kernel, device
                    ))
                })?;
        }

        // Memory: check the total first, so that a model too large for
        // the device gets one message rather than an allocation failure.
        let info = program.info();
        let needed: usize = (0..info.classes().len())
            .flat_map(|b| info.array_bytes(b).iter().copied())
            .sum();
        let (free, _) = result::mem_get_info()
            .map_err(|e| cuda(format!("querying device memory: {}", describe(e))))?;
        if needed > free {
            return Err(cuda(format!(
                "the model needs {:.1} MiB of device memory, but {device} has {:.1} MiB free",
                mib(needed),
                mib(free)
            )));
        }
        let started_upload = std::time::Instant::now();
        let mut arrays = Vec::with_capacity(weights.len());
        for (b, host) in weights.into_iter().enumerate() {
            let mut addresses = Vec::new();
            for (a, &bytes) in info.array_bytes(b).iter().enumerate() {
                let alloc_err = |e| {
                    cuda(format!(
                        "allocating {:.1} MiB for buffer `{}`: {}",
                        mib(bytes),
                        manifest.buffers[b].name,
                        describe(e)
                    ))
                };
                let address = gpu.alloc_zeroed(bytes).map_err(alloc_err)?;
                if let Some(array) = host.get(a) {
                    // SAFETY: the allocation holds `bytes` = the array's length.
                    unsafe { result::memcpy_htod_sync(address, array.as_slice::<u8>()) }.map_err(
                        |e| {
                            cuda(format!(
                                "copying weight `{}` to the device: {}",
                                manifest.buffers[b].name,
                                describe(e)
                            ))
                        },
                    )?;
                }
                addresses.push(address);
            }
            arrays.push(addresses);
        }
        // cuMemsetD8 and copies from pageable memory may still be running
        // on the legacy stream, which the session's non-blocking stream
        // does not wait for.
        result::ctx::synchronize()
            .map_err(|e| cuda(format!("uploading the weights: {}", describe(e))))?;
        tracing::debug!(
            bytes = needed,
            elapsed = ?started_upload.elapsed(),
            "device memory allocated, weights uploaded"
        );

        let params = program.params(|b, a| arrays[b][a]);
        let dispatches = manifest
            .dispatches
            .iter()
            .zip(&manifest.launches)
            .zip(params)
            .map(|((d, launch), params)| GpuDispatch {
                kernel: d.kernel.clone(),
                function: functions[d.kernel.as_str()],
                block: (launch.block[0], launch.block[1], launch.block[2]),
                shared_bytes: launch.shared_bytes,
                workgroups: d.workgroups,
                workgroups_per_token: d.workgroups_per_token,
                params,
            })
            .collect();
        let logits = vec![0.0; manifest.max_tokens * manifest.model.vocab_size];
        let buffers = manifest.buffers.len();
        tracing::info!(elapsed = ?started.elapsed(), "loaded on the GPU");
        Ok(Self {
            info: program.validated.info,
            device,
            dispatches,
            arrays,
            logits,
            staging: Vec::new(),
            pointers: Vec::new(),
            mirrors: vec![Vec::new(); buffers],
            gpu,
        })
    }

    /// The validated manifest, buffers and tokenizer.
    pub fn info(&self) -> &ArtifactInfo {
        &self.info
    }

    /// The GPU it runs on.
    pub fn device(&self) -> &DeviceInfo {
        &self.device
    }

    /// The first `tokens` rows of the last call's logits.
    pub(crate) fn output(&self, tokens: usize) -> &[f32] {
        &self.logits[..tokens * self.info.manifest().model.vocab_size]
    }

    /// One call of the dispatch list for at most `max_tokens` tokens (see
    /// the module docs). With an observer, every dispatch's activations are
    /// copied back and the stream drained before it runs.
    pub(crate) fn run_chunk(
        &mut self,
        ids: &[u32],
        start: usize,
        mut observer: Option<&mut DispatchObserver<'_>>,
    ) -> Result<(), DeviceError> {
        let Self {
            info,
            dispatches,
            arrays,
            logits,
            staging,
            pointers,
            mirrors,
            gpu,
            ..
        } = self;
        let fail = |what: &str, e: DriverError| {
            DeviceError(format!(
                "{}: the GPU failed {what}: {}",
                info.path(),
                describe(e)
            ))
        };
        let n = ids.len();
        let stream = gpu.stream;
        gpu.current()
            .map_err(|e| fail("to make its context current", e))?;

        staging.clear();
        staging.extend(ids.iter().map(|&id| id as i32));
        staging.extend((start..start + n).map(|p| p as i32));
        // SAFETY: the input buffers hold max_tokens ≥ n i32; a copy from
        // pageable memory has read `staging` when it returns.
        unsafe {
            result::memcpy_htod_async(arrays[info.tokens][0], &staging[..n], stream).and_then(
                |()| result::memcpy_htod_async(arrays[info.positions][0], &staging[n..], stream),
            )
        }
        .map_err(|e| fail("copying the tokens to the device", e))?;

        let max_tokens = info.manifest().max_tokens;
        for (index, d) in dispatches.iter_mut().enumerate() {
            if let Some(observe) = observer.as_deref_mut() {
                let bound = &info.bindings()[index];
                for &b in bound {
                    if let BufferClass::Activation { width } | BufferClass::Output { width } =
                        info.classes()[b]
                    {
                        let mirror = &mut mirrors[b];
                        mirror.resize(max_tokens * width, 0.0);
                        // SAFETY: the buffer holds max_tokens rows of `width` f32.
                        unsafe {
                            result::memcpy_dtoh_async(
                                &mut mirror[..n * width],
                                arrays[b][0],
                                stream,
                            )
                        }
                        .map_err(|e| fail("copying activations back", e))?;
                    }
                }
                // SAFETY: the stream belongs to this context.
                unsafe { result::stream::synchronize(stream) }
                    .map_err(|e| fail("running the dispatch list", e))?;
                let views: Vec<Option<&[f32]>> = bound
                    .iter()
                    .map(|&b| match info.classes()[b] {
                        BufferClass::Activation { width } | BufferClass::Output { width } => {
                            Some(&mirrors[b][..n * width])
                        }
                        _ => None,
                    })
                    .collect();
                observe(index, &info.manifest().dispatches[index], &views);
            }
            let blocks = d.workgroups + d.workgroups_per_token * n;
            if blocks == 0 {
                continue;
            }
            let _span =
                tracing::trace_span!("dispatch", index, kernel = %d.kernel, blocks).entered();
            d.params.set_call(n, start);
            pointers.clear();
            pointers.extend(
                d.params
                    .values_mut()
                    .iter_mut()
                    .map(|v| (v as *mut u64).cast::<c_void>()),
            );
            // SAFETY: the function takes exactly these parameters (checked
            // against its PTX entry at load), they point at live device
            // memory sized from the manifest, and the launch fits the
            // device (checked at load; `blocks` ≤ the grid limit for
            // n ≤ max_tokens). The driver copies the values at launch.
            unsafe {
                result::launch_kernel(
                    d.function,
                    (blocks as u32, 1, 1),
                    d.block,
                    d.shared_bytes,
                    stream,
                    pointers,
                )
            }
            .map_err(|e| fail(&format!("to launch dispatch {index} (`{}`)", d.kernel), e))?;
        }

        let width = info.manifest().model.vocab_size;
        // SAFETY: the output buffer holds max_tokens rows of vocab_size
        // f32, as does `logits`; the stream is drained before they are read.
        unsafe {
            result::memcpy_dtoh_async(&mut logits[..n * width], arrays[info.output][0], stream)
                .and_then(|()| result::stream::synchronize(stream))
        }
        .map_err(|e| fail("running the dispatch list", e))?;
        Ok(())
    }

}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}


impl Executor for CudaArtifact {
    fn info(&self) -> &ArtifactInfo {
        CudaArtifact::info(self)
    }

    fn backend(&self) -> String {
        self.device().to_string()
    }

    fn run_chunk(
        &mut self,
        ids: &[u32],
        start: usize,
        observer: Option<&mut DispatchObserver<'_>>,
    ) -> Result<(), DeviceError> {
        CudaArtifact::run_chunk(self, ids, start, observer)
    }

    fn logits(&self, tokens: usize) -> &[f32] {
        self.output(tokens)
    }

    /// The GPU's memory: device-to-device copies, bytes read + written.
    fn measure_bandwidth(&mut self, runs: usize) -> Result<MeasuredBandwidth, String> {
        let measured = CudaArtifact::measure_bandwidth(self, runs)?;
        Ok(MeasuredBandwidth {
            method: format!(
                "device-to-device copy of {:.0} MiB on {}, bytes read + bytes written, median of {} runs",
                mib(measured.copy_bytes),
                self.device(),
                measured.runs.len()
            ),
            bytes_per_second: measured.bytes_per_second,
            runs: measured.runs,
            buffer_bytes: measured.copy_bytes,
        })
    }
}
