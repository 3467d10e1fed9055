//! The memory bandwidth measurement (small buffer: this checks the
//! mechanics, not the machine).

use q35_rt::bandwidth::{measure_with, median, parse_cache_size};
use q35_rt::thread_pool::ThreadPool;

#[test]
fn measures_a_positive_bandwidth() {
    let mut pool = ThreadPool::new(2);
    let b = measure_with(&mut pool, 8 << 20, 3);
    assert_eq!(b.runs.len(), 3);
    assert!(
        b.bytes_per_second > 0.0 && b.bytes_per_second.is_finite(),
        "{b:?}"
    );
    assert!(b.runs.iter().all(|&r| r > 0.0));
    assert_eq!(b.threads, 2);
    assert!(
        b.buffer_bytes > 7 << 20 && b.buffer_bytes <= 8 << 20,
        "{b:?}"
    );
}

#[test]
fn cache_sizes_and_medians() {
    assert_eq!(parse_cache_size("32768K"), Some(32 << 20));
    assert_eq!(parse_cache_size("2M"), Some(2 << 20));
    assert_eq!(parse_cache_size("512"), Some(512));
    assert_eq!(parse_cache_size("12Q"), None);
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    assert_eq!(median(&[]), 0.0);
}
