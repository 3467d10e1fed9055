//! Can this machine run code compiled for a given triple and CPU features?
//!
//! A cpu artifact is compiled for one architecture and, by default, for the
//! compiling machine's CPU features (`-mcpu=native`). Running AVX-512 code
//! on a CPU without it dies with SIGILL in the middle of a kernel; this
//! module turns that into an error at load time.
//!
//! Features are checked from a fixed table of LLVM feature names whose
//! Linux `/proc/cpuinfo` flag is known; features outside the table (and
//! any feature on a system without `/proc/cpuinfo`) are not checked, so a
//! check can miss a problem but never refuses a machine that has the
//! features.

/// LLVM x86 feature name → `/proc/cpuinfo` flag, for the features that
/// change vector and bit-manipulation code generation.
const X86_FEATURES: &[(&str, &str)] = &[
    ("sse3", "pni"),
    ("ssse3", "ssse3"),
    ("sse4.1", "sse4_1"),
    ("sse4.2", "sse4_2"),
    ("popcnt", "popcnt"),
    ("avx", "avx"),
    ("avx2", "avx2"),
    ("fma", "fma"),
    ("f16c", "f16c"),
    ("bmi", "bmi1"),
    ("bmi2", "bmi2"),
    ("movbe", "movbe"),
    ("avx512f", "avx512f"),
    ("avx512bw", "avx512bw"),
    ("avx512cd", "avx512cd"),
    ("avx512dq", "avx512dq"),
    ("avx512vl", "avx512vl"),
    ("avx512ifma", "avx512ifma"),
    ("avx512vbmi", "avx512vbmi"),
    ("avx512vbmi2", "avx512_vbmi2"),
    ("avx512vnni", "avx512_vnni"),
    ("avx512bitalg", "avx512_bitalg"),
    ("avx512vpopcntdq", "avx512_vpopcntdq"),
    ("avx512bf16", "avx512_bf16"),
    ("avx512fp16", "avx512_fp16"),
    ("avxvnni", "avx_vnni"),
    ("gfni", "gfni"),
    ("vaes", "vaes"),
    ("vpclmulqdq", "vpclmulqdq"),
    ("amx-tile", "amx_tile"),
    ("amx-int8", "amx_int8"),
    ("amx-bf16", "amx_bf16"),
];

/// The architecture part of a target triple, in Rust's spelling
/// (`x86_64-pc-linux-gnu` → `x86_64`, `arm64-…` → `aarch64`).
pub fn triple_arch(triple: &str) -> &str {
    match triple.split('-').next().unwrap_or("") {
        "arm64" => "aarch64",
        "amd64" => "x86_64",
        arch => arch,
    }
}

/// This machine's architecture (`x86_64`, `aarch64`, ...).
pub fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

/// The enabled (`+name`) features of an LLVM feature string that this
/// machine is known to lack, given its `/proc/cpuinfo` flags.
pub fn missing_features(arch: &str, features: &str, cpuinfo_flags: &[&str]) -> Vec<String> {
    if arch != "x86_64" {
        return Vec::new();
    }
    features
        .split(',')
        .filter_map(|f| f.trim().strip_prefix('+'))
        .filter(|name| {
            X86_FEATURES
                .iter()
                .find(|(llvm, _)| llvm == name)
                .is_some_and(|(_, flag)| !cpuinfo_flags.contains(flag))
        })
        .map(str::to_string)
        .collect()
}

/// The `flags` line of the first processor in `/proc/cpuinfo` (`None`
/// where there is no such file).
pub fn cpuinfo_flags() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, flags)| flags.trim().to_string())
}

/// Features of `features` (for `triple`) that this machine lacks; empty
/// when it has them all or cannot tell.
pub fn missing_host_features(triple: &str, features: &str) -> Vec<String> {
    let Some(flags) = cpuinfo_flags() else {
        return Vec::new();
    };
    let flags: Vec<&str> = flags.split_whitespace().collect();
    missing_features(triple_arch(triple), features, &flags)
}

/// Bytes of memory this machine can give a new allocation now
/// (`MemAvailable` in `/proc/meminfo`), or `None` where that is unknown.
pub fn available_memory() -> Option<u64> {
    meminfo_bytes(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemAvailable")
}

/// This machine's physical memory in bytes (`MemTotal` in
/// `/proc/meminfo`), or `None` where that is unknown.
pub fn total_memory() -> Option<u64> {
    meminfo_bytes(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal")
}

/// A `/proc/meminfo` field (`Key:   N kB`) in bytes.
fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.split(':').next() == Some(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod memory_tests {
    #[test]
    fn reads_mem_available() {
        let text = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(super::meminfo_bytes(text, "MemAvailable"), Some(20_000_000 * 1024));
        assert_eq!(super::meminfo_bytes(text, "MemTotal"), Some(24_576_000 * 1024));
        assert_eq!(super::meminfo_bytes("MemTotal: 1 kB\n", "MemAvailable"), None);
        #[cfg(target_os = "linux")]
        assert!(super::available_memory().is_some_and(|b| b > 0) && super::total_memory().is_some_and(|b| b > 0));
    }
}
