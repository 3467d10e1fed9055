//! Measuring this machine's memory read bandwidth, the roof that decoding
//! (memory-bound: every weight is read once per token) runs under.
//!
//! A streaming sum over a buffer several times larger than the last-level
//! cache, split over the same thread pool that runs the model, timed a few
//! times, in two forms: a plain loop (the hardware prefetchers alone) and
//! one that also prefetches [`PREFETCH_AHEAD`] bytes ahead in software, as
//! the matmul kernels do. The roof is the better of the two medians: a
//! kernel that prefetches must not beat the "bandwidth" it is judged by
//! (on this project's Zen 5 machine the plain loop alone read 10–25 % less
//! than the prefetching one). The buffer is written first (in
//! parallel, so first-touch places pages near the threads that read them):
//! never-written pages all map the kernel's shared zero page, and reading
//! them would measure the cache instead of memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::memref::AlignedBuffer;
use crate::thread_pool::ThreadPool;

/// Buffer size when the last-level cache size is unknown.
const FALLBACK_LLC: usize = 32 << 20;
/// Never measure with less than this, whatever the cache says.
const MIN_BUFFER: usize = 256 << 20;
/// Chunks per thread: enough to balance, large enough to stream.
const CHUNKS_PER_THREAD: usize = 4;
/// How far ahead the prefetching read asks for lines (the best of 1, 4
/// and 16 KiB on the Zen 5 machine of docs/benchmarks.md).
pub const PREFETCH_AHEAD: usize = 4096;

/// One measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Bandwidth {
    /// Median read bandwidth of the better read, bytes per second.
    pub bytes_per_second: f64,
    /// Every run's bandwidth of the better read, bytes per second, in run
    /// order.
    pub runs: Vec<f64>,
    /// Whether the better read was the software-prefetching one.
    pub prefetched: bool,
    /// Size of the buffer read each run.
    pub buffer_bytes: usize,
    pub threads: usize,
}

impl Bandwidth {
    /// In GB/s (10⁹ bytes per second).
    pub fn gb_per_second(&self) -> f64 {
        self.bytes_per_second / 1e9
    }
}

/// The bandwidth a roofline is judged against, whatever measured it (this
/// machine's memory for a CPU target, the device's for a GPU):
/// what every executor's `measure_bandwidth` returns.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasuredBandwidth {
    /// Median, bytes per second.
    pub bytes_per_second: f64,
    /// Every run's figure, in run order.
    pub runs: Vec<f64>,
    /// Bytes read (or copied) each run.
    pub buffer_bytes: usize,
    /// How it was measured, for people.
    pub method: String,
}

/// The size of the largest (last-level) CPU cache, from Linux's sysfs.
pub fn last_level_cache_bytes() -> Option<usize> {
    let mut best: Option<(u32, usize)> = None;
    for index in 0..16 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
        let read = |file: &str| std::fs::read_to_string(format!("{dir}/{file}")).ok();
        let (Some(level), Some(size)) = (read("level"), read("size")) else {
            continue;
        };
        let Ok(level) = level.trim().parse::<u32>() else {
            continue;
        };
        let Some(bytes) = parse_cache_size(size.trim()) else {
            continue;
        };
        if best.is_none_or(|(l, _)| level > l) {
            best = Some((level, bytes));
        }
    }
    best.map(|(_, bytes)| bytes)
}

/// `"32768K"`, `"1M"`, `"512"` → bytes.
pub fn parse_cache_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let value: usize = digits.parse().ok()?;
    let scale = match unit {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    value.checked_mul(scale)
}

/// The buffer size the default measurement uses: 4× the last-level cache
/// and at least 256 MiB, but never more than half the available memory
/// (some virtual machines report caches of hundreds of MiB).
pub fn default_buffer_bytes() -> usize {
    let llc = last_level_cache_bytes().unwrap_or(FALLBACK_LLC);
    let wanted = llc.saturating_mul(4).max(MIN_BUFFER);
    match available_memory_bytes() {
        Some(available) => wanted.min(available / 2),
        None => wanted,
    }
}

fn available_memory_bytes() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Measures with the default buffer size, `runs` timed runs.
pub fn measure(pool: &mut ThreadPool, runs: usize) -> Bandwidth {
    measure_with(pool, default_buffer_bytes(), runs)
}

/// Measures read bandwidth over `buffer_bytes` (rounded down to whole
/// chunks) with every thread of `pool`: `runs` timed runs (at least 1)
/// after one untimed warm-up.
pub fn measure_with(pool: &mut ThreadPool, buffer_bytes: usize, runs: usize) -> Bandwidth {
    let threads = pool.threads();
    let chunks = threads * CHUNKS_PER_THREAD;
    let words_per_chunk = (buffer_bytes / 8 / chunks).max(64) & !7;
    let mut buffer = AlignedBuffer::zeroed(words_per_chunk * chunks * 8);
    let base = buffer.as_mut_ptr() as usize;

    // Write every page, in parallel (first touch).
    let fill = |chunk: usize| {
        // SAFETY: chunks are disjoint ranges of the buffer, which outlives `run`.
        let words = unsafe {
            std::slice::from_raw_parts_mut(
                (base as *mut u64).add(chunk * words_per_chunk),
                words_per_chunk,
            )
        };
        for (i, w) in words.iter_mut().enumerate() {
            *w = (chunk * words_per_chunk + i) as u64;
        }
    };
    pool.run(chunks, &fill);

    let sums: Vec<AtomicU64> = (0..chunks).map(|_| AtomicU64::new(0)).collect();
    let reader = |prefetch: bool| {
        let sums = &sums;
        move |chunk: usize| {
            // SAFETY: shared reads of initialized memory that outlives `run`.
            let words = unsafe {
                std::slice::from_raw_parts(
                    (base as *const u64).add(chunk * words_per_chunk),
                    words_per_chunk,
                )
            };
            let sum = if prefetch { stream_sum::<true>(words) } else { stream_sum::<false>(words) };
            sums[chunk].store(sum, Ordering::Relaxed);
        }
    };
    let (plain, prefetching) = (reader(false), reader(true));
    pool.run(chunks, &plain); // warm-up
    let bytes = (words_per_chunk * chunks * 8) as f64;
    let mut timed = |read: &(dyn Fn(usize) + Sync)| {
        let started = Instant::now();
        pool.run(chunks, read);
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        std::hint::black_box(
            sums.iter()
                .map(|s| s.load(Ordering::Relaxed))
                .fold(0u64, u64::wrapping_add),
        );
        bytes / seconds
    };
    // Alternating, so that both see the same phases of a shared machine.
    let (mut plain_runs, mut prefetched_runs) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        plain_runs.push(timed(&plain));
        prefetched_runs.push(timed(&prefetching));
    }
    drop(buffer);
    let prefetched = median(&prefetched_runs) > median(&plain_runs);
    let results = if prefetched { prefetched_runs } else { plain_runs };
    Bandwidth {
        bytes_per_second: median(&results),
        runs: results,
        prefetched,
        buffer_bytes: words_per_chunk * chunks * 8,
        threads,
    }
}

/// Sum with eight independent accumulators, so the loop is limited by
/// loads, not by one add chain (and vectorizes); with `PREFETCH`, also
/// asking for the line [`PREFETCH_AHEAD`] bytes ahead of each 64-byte
/// block (a hint: past the end it is dropped, not faulted).
fn stream_sum<const PREFETCH: bool>(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut blocks = words.chunks_exact(8);
    for block in &mut blocks {
        #[cfg(target_arch = "x86_64")]
        if PREFETCH {
            // SAFETY: prefetch is a hint; it never faults, in bounds or not.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch::<_MM_HINT_T0>(block.as_ptr().cast::<i8>().wrapping_add(PREFETCH_AHEAD));
            }
        }
        for (a, &w) in acc.iter_mut().zip(block) {
            *a = a.wrapping_add(w);
        }
    }
    let tail = blocks
        .remainder()
        .iter()
        .fold(0u64, |s, &w| s.wrapping_add(w));
    acc.iter().fold(tail, |s, &a| s.wrapping_add(a))
}

/// The median of `values` (the mean of the middle two for an even count);
/// 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
