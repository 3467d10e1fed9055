//! Limits on what a compiled artifact asks of the machine that runs it,
//! checked when compiling so that `q35c` refuses what `q35-rt` would refuse
//! or could not allocate: the KV cache rows (`--context`), the rows of a
//! call (`--max-tokens`) and the memory of the plan's buffers.

use anyhow::{bail, Result};
use q35_format::artifact::BufferSpec;
use q35_format::plan::plan_bytes;

/// The most KV cache rows: positions reach the kernels as i32, and the
/// runtime refuses an artifact whose context does not fit (`check_plan`).
pub const MAX_CONTEXT: usize = i32::MAX as usize;

/// The memory assumed when `/proc/meminfo` cannot be read.
pub const FALLBACK_MEMORY: u64 = 1 << 40;

const GIB: f64 = (1u64 << 30) as f64;

/// Checks `--context` (or the default taken from the model).
pub fn check_context(context: usize) -> Result<()> {
    if context == 0 {
        bail!("--context 0: the KV cache needs at least one row (the context is the longest sequence the artifact runs)");
    }
    if context > MAX_CONTEXT {
        bail!(
            "--context {context} is above the limit of 2^31 - 1 = {MAX_CONTEXT} positions \
             (positions reach the kernels as i32)"
        );
    }
    Ok(())
}

/// The machine's physical memory in bytes (`MemTotal` in `/proc/meminfo`),
/// and where the figure came from; [`FALLBACK_MEMORY`] (1 TiB) if it
/// cannot be read.
pub fn physical_memory() -> (u64, &'static str) {
    match q35_rt::host::total_memory() {
        Some(bytes) => (bytes, "MemTotal in /proc/meminfo"),
        None => (FALLBACK_MEMORY, "assumed: /proc/meminfo is unreadable"),
    }
}

/// Refuses a plan whose buffers, as the runtime allocates them
/// ([`plan_bytes`]), need more than this machine's physical memory: one
/// buffer or all together. An artifact is usually run where it is
/// compiled (it is compiled for the host CPU); a plan beyond the compiling
/// machine's memory is a mistyped `--context` or `--max-tokens`.
pub fn check_plan_memory(buffers: &[BufferSpec], context: usize, max_tokens: usize) -> Result<()> {
    let (memory, source) = physical_memory();
    check_plan_memory_within(buffers, context, max_tokens, memory, source)
}

/// [`check_plan_memory`] against `memory` bytes (`source` says where that
/// figure came from).
pub fn check_plan_memory_within(
    buffers: &[BufferSpec],
    context: usize,
    max_tokens: usize,
    memory: u64,
    source: &str,
) -> Result<()> {
    let bytes = plan_bytes(buffers, max_tokens);
    if bytes.total() <= memory {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / GIB;
    let largest = bytes.largest.as_ref().map_or(String::new(), |(name, b)| {
        format!("; the largest, `{name}`, alone {:.1} GiB", gib(*b))
    });
    let flag = if bytes.kv_cache >= bytes.activations {
        "lower --context"
    } else {
        "lower --max-tokens"
    };
    bail!(
        "the plan's buffers need {:.1} GiB ({:.1} GiB of KV cache for --context {context}, \
         {:.1} GiB of activations for --max-tokens {max_tokens}{largest}), more than this \
         machine's {:.1} GiB of memory ({source}): {flag}",
        gib(bytes.total()),
        gib(bytes.kv_cache),
        gib(bytes.activations),
        gib(memory)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(name: &str, width: usize, role: &str) -> BufferSpec {
        BufferSpec {
            name: name.into(),
            element: if role == "input" { "i32" } else { "f32" }.into(),
            width,
            role: role.into(),
        }
    }

    /// A tiny model's plan shape: two caches of `context × 32`.
    fn plan(context: usize) -> Vec<BufferSpec> {
        vec![
            buffer("tokens", 1, "input"),
            buffer("positions", 1, "input"),
            buffer("x", 64, "activation"),
            buffer("k_cache.0", context * 32, "kv_cache"),
            buffer("v_cache.0", context * 32, "kv_cache"),
            buffer("logits", 264, "output"),
        ]
    }

    #[test]
    fn context_is_between_one_and_i32_max() {
        check_context(1).unwrap();
        check_context(MAX_CONTEXT).unwrap();
        assert_eq!(
            check_context(0).unwrap_err().to_string(),
            "--context 0: the KV cache needs at least one row (the context is the longest sequence the artifact runs)"
        );
        for context in [1usize << 31, 1 << 32] {
            assert_eq!(
                check_context(context).unwrap_err().to_string(),
                format!("--context {context} is above the limit of 2^31 - 1 = 2147483647 positions (positions reach the kernels as i32)")
            );
        }
    }

    #[test]
    fn plans_beyond_memory_are_refused_naming_the_flag() {
        let gib = 1u64 << 30;
        check_plan_memory_within(&plan(2048), 2048, 64, gib, "test").unwrap();
        // 2^24 rows × 32 × 4 bytes × 2 caches = 4 GiB.
        let context = 1 << 24;
        let e = check_plan_memory_within(&plan(context), context, 64, gib, "test")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the plan's buffers need 4.0 GiB (4.0 GiB of KV cache for --context 16777216, 0.0 GiB of activations for --max-tokens 64; the largest, `k_cache.0`, alone 2.0 GiB), more than this machine's 1.0 GiB of memory (test): lower --context"),
            "{e}"
        );
        let e = check_plan_memory_within(&plan(2048), 2048, 1 << 32, gib, "test")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("of activations for --max-tokens 4294967296; the largest, `logits`"),
            "{e}"
        );
        assert!(e.ends_with("lower --max-tokens"), "{e}");
        let e = check_plan_memory_within(&plan(2048), 2048, usize::MAX, gib, "test").unwrap_err();
        assert!(e.to_string().ends_with("lower --max-tokens"), "{e}");
    }

    #[test]
    fn physical_memory_is_known_or_assumed() {
        let (bytes, source) = physical_memory();
        assert!(bytes > 0);
        if std::path::Path::new("/proc/meminfo").exists() {
            assert_eq!(source, "MemTotal in /proc/meminfo");
        }
    }
}
