//! A persistent pool of worker threads that runs one dispatch at a time:
//! `run(count, f)` calls `f(0)`, ..., `f(count - 1)` exactly once each,
//! spread over the pool, and returns when all have finished (the barrier
//! between dispatches).
//!
//! A 30-layer model runs about 400 dispatches per token, most of them
//! microseconds long, so the cost that matters is the hand-off:
//!
//! - the calling thread works too, and a dispatch of a single workgroup
//!   (every per-token kernel while decoding) runs inline without waking
//!   anyone;
//! - each thread starts on its own contiguous share of the workgroup ids
//!   (its own counter, on its own cache line, so claiming an id costs no
//!   cross-core traffic and a thread's prefetches run into its own next
//!   workgroup), then takes what is left of the others' shares, so uneven
//!   workgroups and a thread slowed by the machine still balance;
//! - between dispatches workers spin for a short while, then yield, and
//!   only after about [`PARK_AFTER`] without work go to sleep on a condition
//!   variable; back-to-back dispatches never pay for a futex wake-up, and an
//!   idle pool costs no CPU.
//!
//! Every worker takes part in every dispatch (possibly finding no workgroup
//! left) and reports when it is done; `run` returns only after all have
//! reported. So no worker can still be reading a dispatch's closure when
//! `run` returns, which is what makes lending it a borrowed closure sound.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker keeps polling before it sleeps.
pub const PARK_AFTER: Duration = Duration::from_millis(2);
/// Busy-wait iterations before an idle thread starts yielding its core
/// (so an oversubscribed machine still makes progress).
const SPIN_ITERATIONS: u32 = 2_000;

/// The closure of the current dispatch, lifetime erased (see `run`).
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
}

/// Thread t's share of the current dispatch's workgroup ids: `next` up to
/// `end`. Aligned so that no two shares (or their owners' other traffic)
/// sit on one cache line pair.
#[repr(align(128))]
struct Share {
    next: AtomicUsize,
    end: AtomicUsize,
}

struct Shared {
    /// Bumped once per dispatch; workers wait for it to change.
    epoch: AtomicUsize,
    /// Written by `run` only while every worker is waiting for the next
    /// epoch; read by workers after they see the epoch change.
    job: UnsafeCell<Option<Job>>,
    /// One per thread: the caller of `run` is 0, worker i is i.
    shares: Box<[Share]>,
    /// Workers done with the current epoch.
    finished: AtomicUsize,
    /// Workers asleep (or about to sleep) on `wake`.
    sleepers: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is the only non-Sync field; it is written by the thread
// calling `run` only while all workers are between epochs (they have
// reported `finished` and wait for `epoch` to change), and read by workers
// only after the epoch change, which is published with Release/Acquire.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A fixed set of threads that run dispatches (see the module docs).
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl ThreadPool {
    /// A pool of `threads` threads in all: the caller of [`ThreadPool::run`]
    /// and `threads - 1` workers. `0` means one per available core.
    pub fn new(threads: usize) -> Self {
        let threads = if threads == 0 {
            available_threads()
        } else {
            threads
        };
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            shares: (0..threads.max(1))
                .map(|_| Share {
                    next: AtomicUsize::new(0),
                    end: AtomicUsize::new(0),
                })
                .collect(),
            finished: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = Vec::with_capacity(threads.saturating_sub(1));
        for i in 1..threads {
            let worker_shared = Arc::clone(&shared);
            match std::thread::Builder::new()
                .name(format!("q35-worker-{i}"))
                .spawn(move || worker(&worker_shared, i))
            {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    // The shares of threads that never started are taken
                    // over by the others (every thread steals what is left).
                    tracing::warn!("started {i} of {threads} threads ({e}); running with {i}");
                    break;
                }
            }
        }
        Self { shared, workers }
    }

    /// Threads taking part in a dispatch, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` exactly once for every `i` in `0..count`, in parallel,
    /// and returns when every call has returned.
    ///
    /// # Panics
    /// If a call of `f` panicked (after all calls have finished).
    pub fn run(&mut self, count: usize, f: &(dyn Fn(usize) + Sync)) {
        if count == 0 {
            return;
        }
        if count == 1 || self.workers.is_empty() {
            (0..count).for_each(f);
            return;
        }
        let shared = &*self.shared;
        // SAFETY: the lifetime of `f` is erased for storage in `job`. Every
        // worker reports `finished` for this epoch before we return (below),
        // and none reads `job` again until the next epoch, so `f` outlives
        // all its uses.
        let erased: *const (dyn Fn(usize) + Sync + 'static) =
            unsafe { std::mem::transmute(f as *const (dyn Fn(usize) + Sync)) };
        // SAFETY: all workers are waiting for the next epoch (the previous
        // `run` waited for every one of them), so nobody reads `job` now.
        unsafe { *shared.job.get() = Some(Job { f: erased }) };
        let threads = shared.shares.len();
        for (t, share) in shared.shares.iter().enumerate() {
            share.next.store(t * count / threads, Ordering::Relaxed);
            share
                .end
                .store((t + 1) * count / threads, Ordering::Relaxed);
        }
        shared.finished.store(0, Ordering::Relaxed);
        // SeqCst pairs with the sleeper's SeqCst increment-then-check: either
        // it sees the new epoch or we see it asleep and wake it.
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        let own = catch_unwind(AssertUnwindSafe(|| claim_and_run(shared, f, 0)));
        let workers = self.workers.len();
        wait_until(|| shared.finished.load(Ordering::Acquire) == workers);
        let worker_panicked = shared.panicked.swap(false, Ordering::Relaxed);
        if let Err(payload) = own {
            std::panic::resume_unwind(payload);
        }
        if worker_panicked {
            panic!("a workgroup panicked on a worker thread");
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads())
            .finish()
    }
}

/// One per core the process may use (at least 1).
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs thread `me`'s share, then what is left of the others'.
fn claim_and_run(shared: &Shared, f: &(dyn Fn(usize) + Sync), me: usize) {
    let threads = shared.shares.len();
    for k in 0..threads {
        let share = &shared.shares[(me + k) % threads];
        let end = share.end.load(Ordering::Relaxed);
        loop {
            // Every id below `end` is returned by exactly one fetch_add.
            let i = share.next.fetch_add(1, Ordering::Relaxed);
            if i >= end {
                break;
            }
            f(i);
        }
    }
}

fn worker(shared: &Shared, me: usize) {
    // Epoch 0 is the pool's state at creation, whenever this thread starts:
    // a dispatch published before it got here is still waiting for it.
    let mut seen = 0;
    loop {
        wait_for_epoch(shared, seen);
        // Exactly one epoch ahead: `run` cannot publish another before we
        // report `finished` for this one.
        seen += 1;
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: published before the epoch change we just observed, and
        // not written again until we report `finished`.
        let Some(job) = (unsafe { *shared.job.get() }) else {
            shared.finished.fetch_add(1, Ordering::Release);
            continue;
        };
        // SAFETY: `run` keeps the closure alive until we report `finished`.
        let f = unsafe { &*job.f };
        if catch_unwind(AssertUnwindSafe(|| claim_and_run(shared, f, me))).is_err() {
            shared.panicked.store(true, Ordering::Relaxed);
            // Take the remaining ids so the other threads stop early.
            for share in shared.shares.iter() {
                share.next.store(share.end.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        shared.finished.fetch_add(1, Ordering::Release);
    }
}

/// Spins, then yields, then sleeps until `epoch` differs from `seen`.
fn wait_for_epoch(shared: &Shared, seen: usize) {
    let started = Instant::now();
    let mut spins = 0u32;
    loop {
        if shared.epoch.load(Ordering::Acquire) != seen {
            return;
        }
        if spins < SPIN_ITERATIONS {
            spins += 1;
            std::hint::spin_loop();
            continue;
        }
        if started.elapsed() < PARK_AFTER {
            std::thread::yield_now();
            continue;
        }
        let mut guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        shared.sleepers.fetch_add(1, Ordering::SeqCst);
        while shared.epoch.load(Ordering::SeqCst) == seen {
            guard = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        shared.sleepers.fetch_sub(1, Ordering::SeqCst);
        return;
    }
}

/// Spins, then yields, until `done()`; the caller has nothing else to do
/// and the workers it waits for are running.
fn wait_until(done: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !done() {
        if spins < SPIN_ITERATIONS {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
