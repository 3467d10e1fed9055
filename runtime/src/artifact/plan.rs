//! Step 3: the buffer plan and dispatch list checked on their own (and
//! against this machine's memory), before anything is allocated.

use std::collections::HashMap;

use q35_format::artifact::{Artifact, DispatchSpec, Manifest};

use super::BufferClass;
use crate::kernel::MAX_DESCRIPTORS;

/// Step 3: the buffer plan and dispatch list are consistent. Returns every
/// buffer's class, in manifest order.
pub fn check_plan(manifest: &Manifest) -> Result<Vec<BufferClass>, String> {
    if manifest.context_length == 0 {
        return Err("context_length is 0".into());
    }
    if manifest.max_tokens == 0 {
        return Err("max_tokens is 0".into());
    }
    // Positions are passed as i32.
    if manifest.context_length > i32::MAX as usize {
        return Err(format!(
            "context_length {} does not fit i32 positions",
            manifest.context_length
        ));
    }
    let mut classes = Vec::with_capacity(manifest.buffers.len());
    let mut seen = HashMap::new();
    for spec in &manifest.buffers {
        if seen.insert(spec.name.as_str(), ()).is_some() {
            return Err(format!("buffer `{}` is declared twice", spec.name));
        }
        let class = BufferClass::of(spec, manifest.context_length)?;
        // Guard allocations against sizes no machine has.
        let elements = match &class {
            BufferClass::Activation { width }
            | BufferClass::ActivationCodes { width }
            | BufferClass::Output { width } => {
                manifest.max_tokens.checked_mul(*width)
            }
            _ => Some(spec.width),
        };
        if elements
            .and_then(|e| e.checked_mul(4))
            .is_none_or(|bytes| bytes > isize::MAX as usize / 2)
        {
            return Err(format!(
                "buffer `{}` is too large ({} x {})",
                spec.name, manifest.max_tokens, spec.width
            ));
        }
        classes.push(class);
    }
    let count = |f: fn(&BufferClass) -> bool| classes.iter().filter(|c| f(c)).count();
    if count(|c| matches!(c, BufferClass::Tokens)) != 1
        || count(|c| matches!(c, BufferClass::Positions)) != 1
    {
        return Err("the plan must have one `tokens` and one `positions` input buffer".into());
    }
    match classes
        .iter()
        .zip(&manifest.buffers)
        .filter(|(c, _)| matches!(c, BufferClass::Output { .. }))
        .collect::<Vec<_>>()[..]
    {
        [(BufferClass::Output { width }, spec)] if *width != manifest.model.vocab_size => {
            return Err(format!(
                "output buffer `{}` has width {width}, but the vocabulary has {} tokens",
                spec.name, manifest.model.vocab_size
            ))
        }
        [_] => {}
        ref outputs => {
            return Err(format!(
                "the plan has {} output buffers, expected 1",
                outputs.len()
            ))
        }
    }
    let index: HashMap<&str, usize> = manifest
        .buffers
        .iter()
        .enumerate()
        .map(|(i, b)| (b.name.as_str(), i))
        .collect();
    for (i, d) in manifest.dispatches.iter().enumerate() {
        if d.kernel.is_empty() || d.kernel.contains('\0') {
            return Err(format!(
                "dispatch {i} has an invalid kernel name {:?}",
                d.kernel
            ));
        }
        let mut descriptors = 0;
        for name in &d.buffers {
            let b = index.get(name.as_str()).ok_or_else(|| {
                format!(
                    "dispatch {i} (`{}`) uses buffer `{name}`, which the plan does not declare",
                    d.kernel
                )
            })?;
            descriptors += classes[*b].descriptor_count();
        }
        if descriptors > MAX_DESCRIPTORS {
            return Err(format!(
                "dispatch {i} (`{}`) passes {descriptors} memref descriptors; this runtime calls kernels with at most {MAX_DESCRIPTORS}",
                d.kernel
            ));
        }
        let most = d
            .workgroups_per_token
            .checked_mul(manifest.max_tokens)
            .and_then(|w| w.checked_add(d.workgroups))
            .filter(|&w| w <= i64::MAX as usize);
        if most.is_none() {
            return Err(format!(
                "dispatch {i} (`{}`) has an impossible workgroup count",
                d.kernel
            ));
        }
    }
    check_concurrent(manifest, &index, &classes)?;
    Ok(classes)
}

/// Dispatches marked `concurrent` run at the same time as the rest of
/// their group, so the runtime does not take the compiler's word for it:
/// within a group, a buffer that is not a weight (nor a token input) may
/// be bound by two dispatches only if none of them may write it. Checked
/// conservatively: a dispatch may write its last buffer and any KV cache.
fn check_concurrent(manifest: &Manifest, index: &HashMap<&str, usize>, classes: &[BufferClass]) -> Result<(), String> {
    let mut start = 0;
    for (i, d) in manifest.dispatches.iter().enumerate() {
        if !d.concurrent {
            start = i;
            continue;
        }
        let mutable = |name: &String| {
            matches!(
                classes[index[name.as_str()]],
                BufferClass::Activation { .. } | BufferClass::ActivationCodes { .. } | BufferClass::Output { .. } | BufferClass::KvCache { .. }
            )
        };
        let written = |d: &DispatchSpec, name: &String| {
            d.buffers.last() == Some(name) || matches!(classes[index[name.as_str()]], BufferClass::KvCache { .. })
        };
        for (j, other) in manifest.dispatches[start..i].iter().enumerate() {
            if let Some(shared) = d
                .buffers
                .iter()
                .filter(|b| mutable(b))
                .find(|b| other.buffers.contains(b) && (written(d, b) || written(other, b)))
            {
                return Err(format!(
                    "dispatch {i} (`{}`) is marked concurrent with dispatch {} (`{}`), but both bind `{shared}`, which one of them may write",
                    d.kernel,
                    start + j,
                    other.kernel
                ));
            }
        }
    }
    Ok(())
}

/// Step 3 (last): everything the plan allocates fits in this machine's
/// available memory (`available`, when known), checked before anything is
/// allocated so that an oversized plan is a message, not an OOM kill.
pub(crate) fn check_memory(artifact: &Artifact<'_>, classes: &[BufferClass], available: Option<u64>) -> Result<(), String> {
    let manifest = &artifact.manifest;
    let mut kv = 0u64;
    let mut activations = 0u64;
    for class in classes {
        let bytes = class.array_bytes(manifest.max_tokens).unwrap_or(0) as u64;
        match class {
            BufferClass::KvCache { .. } => kv = kv.saturating_add(bytes),
            _ => activations = activations.saturating_add(bytes),
        }
    }
    // Decoded weights take about their payloads' size.
    let weights = manifest
        .weights
        .iter()
        .filter_map(|w| artifact.payload(&w.tensor))
        .fold(0u64, |sum, p| sum.saturating_add(p.len() as u64));
    let total = kv.saturating_add(activations).saturating_add(weights);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    match available {
        Some(available) if total > available => Err(format!(
            "running it needs {:.2} GiB (KV caches {:.2}, activations {:.2}, weights {:.2}) but this machine has {:.2} GiB available; recompile with a smaller --context or --max-tokens",
            gib(total),
            gib(kv),
            gib(activations),
            gib(weights),
            gib(available)
        )),
        _ => Ok(()),
    }
}
