//! The tiny model compiled for NVIDIA GPUs, as q35-rt runs it.
//!
//! Without a GPU: every dispatch's kernel parameter list, as
//! `q35_rt::nvptx::Program::params` builds it for the CUDA backend, against
//! the `.param` list of the kernel's `.entry` in the artifact's PTX (read
//! here line by line, independently of the runtime's parser): the same
//! count, every parameter a `.u64`, the descriptor pointers exactly where
//! the PTX has `.ptr`, and the pointers in the order of the dispatch's
//! buffers. This is the offline check that the marshaling matches what
//! the compiler emitted.
//!
//! With the `cuda` feature and a GPU: the logits against the reference
//! forward pass, with the CPU test's bound (tests/tests/cpu.rs); without a
//! CUDA driver or device these tests print why and pass.

use std::collections::HashMap;

use q35_format::{GroupSize, QuantKind};
use q35_rt::nvptx::Program;
use q35_tests::TinyModel;

/// Each `.entry` of LLVM's PTX and its parameters as (type, `.ptr`).
fn entries(ptx: &str) -> HashMap<String, Vec<(String, bool)>> {
    let mut entries = HashMap::new();
    let mut lines = ptx.lines();
    while let Some(line) = lines.next() {
        let Some(at) = line.find(".entry ") else {
            continue;
        };
        let head = &line[at + ".entry ".len()..];
        let name = head.trim_end_matches("()").trim_end_matches('(').trim().to_string();
        let mut params = Vec::new();
        if !head.ends_with("()") {
            for param in lines.by_ref().map(str::trim).take_while(|l| !l.starts_with(')')) {
                let words: Vec<&str> = param.trim_end_matches(',').split_whitespace().collect();
                assert_eq!(words[0], ".param", "{name}: {param}");
                params.push((words[1].to_string(), words.contains(&".ptr")));
            }
        }
        entries.insert(name, params);
    }
    entries
}

/// A distinct fake device address for array `a` of buffer `b`.
fn address(b: usize, a: usize) -> u64 {
    0x7f00_0000_0000 + (b as u64) * 0x1_0000 + (a as u64) * 0x100
}

#[test]
fn every_dispatch_passes_what_its_ptx_entry_declares() {
    let tiny = TinyModel::new().unwrap();
    for (quant, group, fuse, rotated) in [
        (QuantKind::Q35, GroupSize::G64, true, false),
        (QuantKind::F16, GroupSize::Channel, false, false),
        (QuantKind::Int4, GroupSize::G32, true, false),
        (QuantKind::Q35, GroupSize::G32, true, true),
    ] {
        let what = format!("{quant} g{group} fuse {fuse} rotated {rotated}");
        let path = match rotated {
            true => tiny.compile_nvptx_rotated(quant, group, 8).unwrap(),
            false => tiny.compile_nvptx(quant, group, 8, fuse).unwrap(),
        };
        let program = Program::load(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        let entries = entries(program.ptx().to_str().unwrap());
        let manifest = program.info().manifest();
        let mut params = program.params(address);
        assert_eq!(params.len(), manifest.dispatches.len(), "{what}");
        for (i, (d, p)) in manifest.dispatches.iter().zip(&mut params).enumerate() {
            let entry = entries
                .get(&d.kernel)
                .unwrap_or_else(|| panic!("{what}: dispatch {i}: no entry `{}` in the PTX", d.kernel));
            let kinds = p.kinds();
            assert_eq!(entry.len(), kinds.len(), "{what}: dispatch {i} (`{}`): parameter count", d.kernel);
            for (j, ((ty, pointer), kind)) in entry.iter().zip(kinds).enumerate() {
                assert_eq!(ty, ".u64", "{what}: `{}` parameter {j}", d.kernel);
                assert_eq!(
                    *pointer,
                    kind.is_pointer(),
                    "{what}: `{}` parameter {j} is {kind:?} but the PTX says .ptr = {pointer}",
                    d.kernel
                );
            }
            // The pointers, in pairs, follow the dispatch's buffers and
            // each buffer's arrays.
            p.set_call(3, 5);
            assert_eq!(&p.values()[..2], [3, 5]);
            let pointers: Vec<u64> = p
                .values()
                .iter()
                .zip(p.kinds())
                .filter(|(_, k)| k.is_pointer())
                .map(|(&v, _)| v)
                .collect();
            let expected: Vec<u64> = program.info().bindings()[i]
                .iter()
                .flat_map(|&b| {
                    let arrays = program.info().array_bytes(b).len();
                    (0..arrays).flat_map(move |a| [address(b, a), address(b, a)])
                })
                .collect();
            assert_eq!(pointers, expected, "{what}: dispatch {i} (`{}`)", d.kernel);
        }
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    //! On a GPU: the compiled kernels against the reference forward pass.

    use q35_format::{GroupSize, QuantKind};
    use q35_rt::artifact::LoadError;
    use q35_rt::check::{compare, reference_for};
    use q35_rt::executor::Session;
    use q35_tests::TinyModel;

    /// The CPU test's bound (tests/tests/cpu.rs). The GPU kernels differ
    /// from the reference in f32 summation order (warp shuffles, an online
    /// softmax), which that bound's margin covers.
    const BOUND: f64 = 1e-3;
    const PROMPT: [u32; 7] = [1, 17, 42, 99, 3, 250, 8];

    /// Whether there is a CUDA driver (else the reason is printed).
    fn driver() -> bool {
        match q35_rt::cuda::open_driver() {
            Ok(()) => true,
            Err(reason) => {
                eprintln!("skipped: no CUDA driver ({reason})");
                false
            }
        }
    }

    /// A session on the GPU, or `None` (with the reason printed) where the
    /// driver finds no device.
    fn gpu_session(path: &std::path::Path) -> Option<Session> {
        match Session::load(path, 1) {
            Ok(session) => Some(session),
            Err(e @ LoadError::NoGpu { .. }) => {
                eprintln!("skipped: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_tiny_model_on_a_gpu_matches_the_reference() {
        if !driver() {
            return;
        }
        let tiny = TinyModel::new().unwrap();
        // max_tokens 4 runs the 7-token prompt in two chunks.
        for (quant, group, fuse, max_tokens) in [
            (QuantKind::Q35, GroupSize::G32, true, 16),
            (QuantKind::Q35, GroupSize::Channel, false, 4),
            (QuantKind::Int4, GroupSize::G64, true, 16),
            (QuantKind::F16, GroupSize::Channel, true, 16),
            (QuantKind::F32, GroupSize::Channel, false, 16),
        ] {
            let what = format!("{quant} g{group} fuse {fuse} max_tokens {max_tokens}");
            let artifact = tiny.compile_nvptx(quant, group, max_tokens, fuse).unwrap();
            let Some(mut session) = gpu_session(&artifact) else {
                return;
            };
            eprintln!("{what} on {}", session.backend());
            let mut reference = reference_for(&artifact).unwrap();
            let report = compare(&mut session, &mut reference, &PROMPT, 16).unwrap();
            assert_eq!(report.rows, PROMPT.len() + 16, "{what}: rows compared");
            assert!(!report.non_finite, "{what}: non-finite logits");
            assert!(
                report.relative_error() <= BOUND,
                "{what}: max |error| {} is {:.3e} of max |logit| {} (bound {BOUND})",
                report.max_abs_error,
                report.relative_error(),
                report.max_abs_logit
            );
            assert_eq!(report.top1_agreement, report.rows, "{what}: greedy tokens differ");
        }
    }

    /// Rotated matrix inputs (`--rotation on`): the transform runs as the
    /// CPU's loop nest on one thread per token.
    #[test]
    fn rotated_inputs_on_a_gpu_match_the_reference() {
        if !driver() {
            return;
        }
        let tiny = TinyModel::new().unwrap();
        let artifact = tiny.compile_nvptx_rotated(QuantKind::Q35, GroupSize::G32, 4).unwrap();
        let Some(mut session) = gpu_session(&artifact) else {
            return;
        };
        assert!(session.manifest().rotated_inputs);
        q35_tests::assert_matches_reference(&mut session, &artifact, &PROMPT, 16, BOUND);
    }

    /// `forward_observed` copies the activations back before each dispatch
    /// and gives the same logits as `forward`; the bandwidth measurement
    /// runs.
    #[test]
    fn observed_calls_and_bandwidth_on_a_gpu() {
        if !driver() {
            return;
        }
        let tiny = TinyModel::new().unwrap();
        let artifact = tiny.compile_nvptx(QuantKind::Q35, GroupSize::G64, 8, true).unwrap();
        let Some(mut session) = gpu_session(&artifact) else {
            return;
        };
        let plain = session.forward(&PROMPT, 0).unwrap().to_vec();
        let dispatches = session.manifest().dispatches.len();
        let mut calls = 0;
        let mut activations = 0;
        session.reset();
        let observed = session
            .forward_observed(&PROMPT, 0, &mut |_, spec, views| {
                calls += 1;
                assert_eq!(views.len(), spec.buffers.len());
                for view in views.iter().flatten() {
                    activations += 1;
                    assert_eq!(view.len() % PROMPT.len(), 0);
                }
            })
            .unwrap()
            .to_vec();
        assert_eq!(observed, plain);
        assert_eq!(calls, dispatches);
        assert!(activations >= dispatches);
        let bandwidth = session.measure_bandwidth(2).unwrap();
        eprintln!(
            "{}: {:.0} GB/s device-to-device (read + write)",
            session.backend(),
            bandwidth.bytes_per_second / 1e9
        );
        assert!(bandwidth.bytes_per_second > 1e9, "{bandwidth:?}");
    }
}
