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
//! at that copy as [`ForwardError::Device`].
//!
//! Driver handles are only used with the context current on the calling
//! thread: every entry point makes it current first, so a session may move
//! between threads.

use std::collections::HashMap;
use std::ffi::{c_void, CString};

use cudarc::driver::result::{self, DriverError};
use cudarc::driver::sys;
use q35_format::artifact::{Artifact, DispatchSpec, LaunchSpec};

use crate::artifact::{ArtifactInfo, BufferClass, LoadError};
use crate::executor::{DispatchObserver, ForwardError};
use crate::nvptx::{KernelParams, Program};

/// Bytes of the JIT error log kept for the message.
const JIT_LOG_BYTES: usize = 16 << 10;
/// Largest buffer the bandwidth measurement copies.
const BANDWIDTH_BYTES: usize = 1 << 30;

/// `CUDA_ERROR_NAME: description` for a driver error.
fn describe(error: DriverError) -> String {
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
fn attribute(
    device: sys::CUdevice,
    attribute: sys::CUdevice_attribute,
) -> Result<i32, DriverError> {
    // SAFETY: `device` came from cuDeviceGet.
    unsafe { result::device::get_attribute(device, attribute) }
}

/// A kernel attribute.
fn function_attribute(
    function: sys::CUfunction,
    attribute: sys::CUfunction_attribute,
) -> Result<i32, DriverError> {
    // SAFETY: `function` came from cuModuleGetFunction on a loaded module.
    unsafe { result::function::get_function_attribute(function, attribute) }
}

/// The context, stream, module and device memory of a session, released
/// in reverse order on drop (also when loading fails half way).
struct Gpu {
    device: sys::CUdevice,
    context: sys::CUcontext,
    stream: sys::CUstream,
    module: sys::CUmodule,
    allocations: Vec<sys::CUdeviceptr>,
}

impl Gpu {
    /// Makes the context current on this thread.
    fn current(&self) -> Result<(), DriverError> {
        // SAFETY: the primary context is retained for as long as `self` lives.
        unsafe { result::ctx::set_current(self.context) }
    }

    /// `bytes` (at least 1) of zeroed device memory, freed on drop.
    fn alloc_zeroed(&mut self, bytes: usize) -> Result<sys::CUdeviceptr, DriverError> {
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
/// second (the figure GPU datasheets quote).
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceBandwidth {
    /// Median, bytes per second.
    pub bytes_per_second: f64,
    /// Every run's figure, in run order.
    pub runs: Vec<f64>,
    /// Bytes copied each run (each read once and written once).
    pub copy_bytes: usize,
}

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
    ) -> Result<(), ForwardError> {
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
            ForwardError::Device(format!(
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

    /// The device's memory bandwidth: `runs` timed device-to-device copies of up to
    /// 1 GiB (a quarter of the free memory at most) after one warm-up,
    /// timed with events on the session's stream, each counting the bytes
    /// read plus the bytes written.
    pub fn measure_bandwidth(&mut self, runs: usize) -> Result<DeviceBandwidth, String> {
        let err = |what: &str, e: DriverError| {
            format!("measuring the GPU's bandwidth: {what}: {}", describe(e))
        };
        self.gpu.current().map_err(|e| err("context", e))?;
        let (free, _) = result::mem_get_info().map_err(|e| err("free memory", e))?;
        let bytes = BANDWIDTH_BYTES.min(free / 4) & !((1 << 20) - 1);
        if bytes == 0 {
            return Err(
                "measuring the GPU's bandwidth: less than 4 MiB of device memory is free".into(),
            );
        }
        let scratch = Scratch::new(bytes).map_err(|e| err("allocating", e))?;
        let stream = self.gpu.stream;
        let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
        let events = Events::new(flags).map_err(|e| err("events", e))?;
        // SAFETY: both allocations hold `bytes` bytes; events and stream
        // belong to this context.
        let copy = || unsafe { result::memcpy_dtod_async(scratch.dst, scratch.src, bytes, stream) };
        copy().map_err(|e| err("copying", e))?;
        let mut results = Vec::with_capacity(runs.max(1));
        for _ in 0..runs.max(1) {
            // SAFETY: as above.
            let ms = unsafe {
                result::event::record(events.start, stream)
                    .and_then(|()| copy())
                    .and_then(|()| result::event::record(events.end, stream))
                    .and_then(|()| result::event::synchronize(events.end))
                    .and_then(|()| result::event::elapsed(events.start, events.end))
            }
            .map_err(|e| err("copying", e))?;
            results.push(2.0 * bytes as f64 / (f64::from(ms) / 1e3).max(1e-9));
        }
        Ok(DeviceBandwidth {
            bytes_per_second: crate::bandwidth::median(&results),
            runs: results,
            copy_bytes: bytes,
        })
    }
}

/// The device limits a launch must fit.
struct Limits {
    block: [i32; 3],
    shared_default: i32,
    shared_optin: i32,
    grid_x: i32,
}

impl Limits {
    fn query(device: sys::CUdevice) -> Result<Self, DriverError> {
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
    fn check(
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

/// Loads the PTX, with the JIT's error log in the message on failure.
fn load_module(program: &Program) -> Result<sys::CUmodule, String> {
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

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// Two device buffers for the bandwidth copy, freed on drop.
struct Scratch {
    src: sys::CUdeviceptr,
    dst: sys::CUdeviceptr,
}

impl Scratch {
    fn new(bytes: usize) -> Result<Self, DriverError> {
        // SAFETY: the context is current; each allocation is freed once,
        // by this function on failure or by drop.
        unsafe {
            let src = result::malloc_sync(bytes)?;
            let dst = match result::malloc_sync(bytes) {
                Ok(dst) => dst,
                Err(e) => {
                    let _ = result::free_sync(src);
                    return Err(e);
                }
            };
            let scratch = Self { src, dst };
            // Written once, so the copy reads real pages; the memset runs
            // on the legacy stream, which the session's stream does not
            // wait for.
            result::memset_d8_sync(src, 1, bytes)?;
            result::ctx::synchronize()?;
            Ok(scratch)
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: allocated by `new`, freed once; the copies that used them
        // have been waited for.
        unsafe {
            let _ = result::free_sync(self.src);
            let _ = result::free_sync(self.dst);
        }
    }
}

/// A start and an end event, destroyed on drop.
struct Events {
    start: sys::CUevent,
    end: sys::CUevent,
}

impl Events {
    fn new(flags: sys::CUevent_flags) -> Result<Self, DriverError> {
        let start = result::event::create(flags)?;
        match result::event::create(flags) {
            Ok(end) => Ok(Self { start, end }),
            Err(e) => {
                // SAFETY: created above, destroyed once.
                let _ = unsafe { result::event::destroy(start) };
                Err(e)
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // SAFETY: created by `new`, destroyed once.
        unsafe {
            let _ = result::event::destroy(self.start);
            let _ = result::event::destroy(self.end);
        }
    }
}
