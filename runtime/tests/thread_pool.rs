//! The thread pool runs every workgroup exactly once per dispatch, with a
//! barrier between dispatches, however many threads and workgroups.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use q35_rt::thread_pool::{ThreadPool, PARK_AFTER};

#[test]
fn every_workgroup_runs_exactly_once() {
    // More threads than cores too: waiting must not starve the workers.
    for threads in [1, 2, 3, 8] {
        let mut pool = ThreadPool::new(threads);
        assert_eq!(pool.threads(), threads);
        for count in [0, 1, 2, 7, 64, 1000] {
            let hits: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
            pool.run(count, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "{threads} threads, {count} workgroups"
            );
        }
    }
}

#[test]
fn dispatches_are_separated_by_a_barrier() {
    // Every workgroup of a dispatch sees every write of the one before.
    let mut pool = ThreadPool::new(4);
    let n = 97;
    let data: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
    let stale = AtomicUsize::new(0);
    for round in 1..=300 {
        pool.run(n, &|i| data[i].store(round, Ordering::Relaxed));
        pool.run(n, &|_| {
            let behind = data
                .iter()
                .filter(|d| d.load(Ordering::Relaxed) != round)
                .count();
            stale.fetch_add(behind, Ordering::Relaxed);
        });
    }
    assert_eq!(stale.load(Ordering::Relaxed), 0);
}

#[test]
fn workers_wake_after_sleeping() {
    let mut pool = ThreadPool::new(3);
    let count = AtomicUsize::new(0);
    for _ in 0..3 {
        std::thread::sleep(PARK_AFTER * 3 + Duration::from_millis(5));
        pool.run(100, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
    }
    assert_eq!(count.load(Ordering::Relaxed), 300);
}

#[test]
fn a_panicking_workgroup_is_reported_after_the_dispatch() {
    let mut pool = ThreadPool::new(3);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.run(50, &|i| {
            if i == 17 {
                panic!("workgroup 17 fails");
            }
        });
    }));
    assert!(result.is_err());
    // The pool still works.
    let count = AtomicUsize::new(0);
    pool.run(10, &|_| {
        count.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(count.load(Ordering::Relaxed), 10);
}

#[test]
fn a_thread_held_up_has_its_share_taken_by_the_others() {
    // Each thread starts on its own contiguous share; workgroup 0 (the
    // calling thread's first) stalls, so the worker must finish its own
    // share and then take what is left of the caller's.
    let mut pool = ThreadPool::new(2);
    let caller = std::thread::current().id();
    let on_worker = AtomicUsize::new(0);
    pool.run(100, &|i| {
        if i == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        if std::thread::current().id() != caller {
            on_worker.fetch_add(1, Ordering::Relaxed);
        }
    });
    assert!(
        on_worker.load(Ordering::Relaxed) > 50,
        "{} of 100 on the worker",
        on_worker.load(Ordering::Relaxed)
    );
}
