//! The GPU's memory bandwidth, the roof a CUDA session's decoding runs
//! under: timed device-to-device copies on the session's stream.

use cudarc::driver::result::{self, DriverError};
use cudarc::driver::sys;

use super::driver::describe;
use super::CudaArtifact;

/// Largest buffer the bandwidth measurement copies.
const BANDWIDTH_BYTES: usize = 1 << 30;

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


impl CudaArtifact {
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
