//! The memory a compiled plan's buffers take when an artifact runs.
//!
//! The runtime allocates every non-weight buffer of the manifest's plan up
//! front (`BufferClass::array_bytes` in q35-rt's `artifact.rs`): the
//! `tokens` and `positions` inputs and every activation for `max_tokens`
//! rows, and every KV cache whole. [`plan_bytes`] computes the same sizes
//! from the buffer list, so the compiler can refuse a plan no machine
//! could run (`--context`, `--max-tokens`) before it writes one. Weights
//! are not counted: their size is that of their payloads.

use crate::artifact::BufferSpec;

/// Bytes of a plan's buffers, by kind (saturating: a sum that overflows
/// is `u64::MAX`, more than any machine has).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanBytes {
    /// The KV caches: `context_length × kv_dim` f32 each, two per layer.
    pub kv_cache: u64,
    /// Inputs, activations (f32, and i8 codes on the integer path) and the
    /// logits: `max_tokens` rows each.
    pub activations: u64,
    /// The largest single buffer: its name and bytes.
    pub largest: Option<(String, u64)>,
}

impl PlanBytes {
    /// Every counted buffer together.
    pub fn total(&self) -> u64 {
        self.kv_cache.saturating_add(self.activations)
    }
}

/// The bytes the runtime allocates for `buffers` with `max_tokens` rows
/// per call, as q35-rt computes them: `input` 4 per token (i32), `activation`
/// and `output` `width × 4` per token (f32) or `width` per token (`i8`
/// codes), `kv_cache` `width × 4` (its width is already `context × cols`).
/// Weights and roles the runtime does not know count 0.
pub fn plan_bytes(buffers: &[BufferSpec], max_tokens: usize) -> PlanBytes {
    let rows = max_tokens as u64;
    let mut bytes = PlanBytes::default();
    for spec in buffers {
        let width = spec.width as u64;
        let (size, kv) = match spec.role.as_str() {
            "input" => (rows.saturating_mul(4), false),
            "activation" if spec.element == "i8" => (rows.saturating_mul(width), false),
            "activation" | "output" => (rows.saturating_mul(width).saturating_mul(4), false),
            "kv_cache" => (width.saturating_mul(4), true),
            _ => continue,
        };
        if kv {
            bytes.kv_cache = bytes.kv_cache.saturating_add(size);
        } else {
            bytes.activations = bytes.activations.saturating_add(size);
        }
        if bytes
            .largest
            .as_ref()
            .is_none_or(|(_, largest)| size > *largest)
        {
            bytes.largest = Some((spec.name.clone(), size));
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(name: &str, element: &str, width: usize, role: &str) -> BufferSpec {
        BufferSpec {
            name: name.into(),
            element: element.into(),
            width,
            role: role.into(),
        }
    }

    #[test]
    fn counts_what_the_runtime_allocates() {
        let buffers = [
            buffer("tokens", "i32", 1, "input"),
            buffer("positions", "i32", 1, "input"),
            buffer("x", "f32", 64, "activation"),
            buffer("x.codes", "i8", 64, "activation"),
            buffer("k_cache.0", "f32", 128 * 32, "kv_cache"),
            buffer("v_cache.0", "f32", 128 * 32, "kv_cache"),
            buffer("w", "!q35.packed<...>", 4096, "weight"),
            buffer("logits", "f32", 264, "output"),
        ];
        let bytes = plan_bytes(&buffers, 8);
        assert_eq!(bytes.kv_cache, 2 * 128 * 32 * 4);
        assert_eq!(
            bytes.activations,
            8 * 4 * 2 + 8 * 64 * 4 + 8 * 64 + 8 * 264 * 4
        );
        assert_eq!(bytes.total(), bytes.kv_cache + bytes.activations);
        assert_eq!(bytes.largest, Some(("k_cache.0".to_string(), 128 * 32 * 4)));
    }

    #[test]
    fn sizes_saturate_instead_of_wrapping() {
        let bytes = plan_bytes(&[buffer("x", "f32", usize::MAX, "activation")], usize::MAX);
        assert_eq!(bytes.total(), u64::MAX);
    }
}
