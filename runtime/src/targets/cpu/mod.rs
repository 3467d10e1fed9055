//! The `cpu` target: the artifact's code is an ELF shared object for this
//! machine, loaded from memory (`code`), its kernels called through the
//! C-interface trampolines (`crate::kernel`) with memref descriptors over
//! the artifact's buffers (`loaded`), each dispatch's workgroups spread
//! over a thread pool (here).

pub mod code;
mod loaded;

use q35_format::artifact::Artifact;

pub use loaded::LoadedArtifact;

use super::{DeviceError, DispatchObserver, Executor, LoadOptions};
use crate::artifact::{ArtifactInfo, LoadError};
use crate::bandwidth::{self, MeasuredBandwidth};
use crate::thread_pool::ThreadPool;
use loaded::BoundDispatch;

/// The registry's loader for `cpu` artifacts.
pub fn load(
    path: &str,
    artifact: &Artifact<'_>,
    file_bytes: u64,
    options: LoadOptions,
) -> Result<Box<dyn Executor>, LoadError> {
    let artifact = LoadedArtifact::from_artifact(path, artifact, file_bytes)?;
    Ok(Box::new(CpuExecutor::new(artifact, options.threads)))
}

/// A loaded cpu artifact and the thread pool that runs its dispatches.
#[derive(Debug)]
pub struct CpuExecutor {
    artifact: LoadedArtifact,
    pool: ThreadPool,
}

impl CpuExecutor {
    /// `threads` threads (0: one per core) over a loaded artifact.
    pub fn new(artifact: LoadedArtifact, threads: usize) -> Self {
        Self {
            artifact,
            pool: ThreadPool::new(threads),
        }
    }
}

/// A pointer to a bound dispatch that workers may share. Workgroups of one
/// dispatch write disjoint parts of their output buffers (the compiler's
/// contract), and the session outlives every `run`.
struct SharedDispatch<'a>(&'a BoundDispatch);
// SAFETY: see above; the raw pointers inside are only passed to kernels.
unsafe impl Sync for SharedDispatch<'_> {}

impl Executor for CpuExecutor {
    fn info(&self) -> &ArtifactInfo {
        self.artifact.info()
    }

    fn backend(&self) -> String {
        format!("cpu, {} threads", self.pool.threads())
    }

    fn threads(&self) -> usize {
        self.pool.threads()
    }

    fn logits(&self, tokens: usize) -> &[f32] {
        self.artifact.output(tokens)
    }

    /// Each group of dispatches (one, or several marked `concurrent`:
    /// independent, so their workgroups run as one) spread over the pool,
    /// groups in order.
    fn run_chunk(
        &mut self,
        ids: &[u32],
        start: usize,
        mut observer: Option<&mut DispatchObserver<'_>>,
    ) -> Result<(), DeviceError> {
        let Self { artifact, pool } = self;
        let n = ids.len();
        artifact.bind_tokens(ids, start);
        let (tokens, start_arg) = (n as i64, start as i64);
        let specs = &artifact.info().manifest().dispatches;
        let mut first = 0;
        while first < artifact.dispatches.len() {
            let end = (first + 1..specs.len()).find(|&i| !specs[i].concurrent).unwrap_or(specs.len());
            if let Some(observe) = observer.as_deref_mut() {
                // Independent: each dispatch's inputs are ready before the group runs.
                for (index, spec) in specs.iter().enumerate().take(end).skip(first) {
                    let views: Vec<Option<&[f32]>> = artifact.info().bindings()[index]
                        .iter()
                        .map(|&b| artifact.rows(b, n))
                        .collect();
                    observe(index, spec, &views);
                }
            }
            let group: Vec<(SharedDispatch, usize)> = artifact.dispatches[first..end]
                .iter()
                .map(|d| (SharedDispatch(d), d.workgroups + d.workgroups_per_token * n))
                .collect();
            let count: usize = group.iter().map(|(_, c)| c).sum();
            let _span = tracing::trace_span!("dispatch", index = first, kernel = %artifact.dispatches[first].kernel, dispatches = end - first, workgroups = count).entered();
            let call = |mut wg: usize| {
                // The group's workgroups in order: dispatch by dispatch.
                let Some((d, _)) = group.iter().find(|(_, c)| {
                    let here = wg < *c;
                    if !here {
                        wg -= c;
                    }
                    here
                }) else {
                    return;
                };
                // SAFETY: the entry was found in the loaded code under the
                // kernel's name and its trampoline matches the argument
                // count; the descriptors and buffers they point to are
                // owned by the artifact and sized from the manifest; the
                // group's dispatches write no buffer another of them binds
                // (`check_concurrent`).
                unsafe { (d.0.trampoline)(d.0.entry, wg as i64, tokens, start_arg, &d.0.args) }
            };
            pool.run(count, &call);
            first = end;
        }
        Ok(())
    }

    /// This machine's memory read bandwidth, measured with the session's
    /// own threads.
    fn measure_bandwidth(&mut self, runs: usize) -> Result<MeasuredBandwidth, String> {
        let measured = bandwidth::measure(&mut self.pool, runs);
        Ok(MeasuredBandwidth {
            method: format!(
                "streaming read{} of {:.0} MiB with {} threads, median of {} runs",
                if measured.prefetched { " (software prefetch, the better of two)" } else { " (plain, the better of two)" },
                measured.buffer_bytes as f64 / (1u64 << 20) as f64,
                measured.threads,
                measured.runs.len()
            ),
            bytes_per_second: measured.bytes_per_second,
            runs: measured.runs,
            buffer_bytes: measured.buffer_bytes,
        })
    }
}
