//! The executor end to end on hand-written C kernels (no compiled model):
//! descriptors as kernels see them, workgroup counts, `tokens`/`start`
//! arguments, chunking over `max_tokens`, the KV cache across calls, and
//! the forward errors. Skipped when no C compiler is available.

use q35_format::Payload;
use q35_rt::executor::ForwardError;
use q35_rt::Session;

use crate::support::{self, TempFile, CONTEXT, VOCAB};

/// The logits the test kernels produce for `ids` at `start`, given the ids
/// of every earlier position in `history`.
fn expected(history: &mut Vec<u32>, ids: &[u32], start: usize) -> Vec<f32> {
    history.truncate(start);
    let Payload::Coded {
        codes,
        range_scale,
        mins,
        range_codes,
    } = support::proj().into_payload()
    else {
        unreachable!()
    };
    let norm = support::norm_values();
    let mut out = Vec::new();
    for (m, &id) in ids.iter().enumerate() {
        history.push(id);
        let position = start + m;
        let mut row = vec![0f32; VOCAB];
        for (j, value) in row.iter_mut().enumerate() {
            *value = id as f32 * 100.0 + position as f32 + norm[j] + 1000.0;
        }
        row[2] = mins[0] as f32;
        row[3] = range_scale.len() as f32;
        row[4] = range_codes.len() as f32;
        row[5] = mins.len() as f32;
        row[6] = codes.len() as f32;
        row[7] = history.iter().map(|&t| t as f32).sum();
        out.extend(row);
    }
    out
}

fn session(threads: usize) -> Option<(Session, TempFile)> {
    let code = support::compile_kernels()?;
    let file = TempFile::new(
        "m.q35",
        &support::artifact_with(&support::manifest(), &code),
    );
    let session = Session::load(file.path(), threads).unwrap();
    Some((session, file))
}

#[test]
fn runs_the_plan_in_chunks_with_a_persistent_cache() {
    for threads in [1, 3] {
        let Some((mut session, _file)) = session(threads) else {
            return;
        };
        assert_eq!(session.threads(), threads);
        let mut history = Vec::new();
        // 10 tokens: chunks of 4, 4 and 2 (max_tokens is 4).
        let prompt: Vec<u32> = (0..10).map(|i| (i * 3 % VOCAB) as u32).collect();
        let logits = session.forward(&prompt, 0).unwrap().to_vec();
        assert_eq!(
            logits,
            expected(&mut history, &prompt, 0),
            "{threads} threads"
        );
        assert_eq!(session.cached(), 10);
        // Decode one token.
        let logits = session.forward(&[5], 10).unwrap().to_vec();
        assert_eq!(logits, expected(&mut history, &[5], 10));
        assert_eq!(session.logits(), &logits[..]);
        // Rewind to position 3 and continue differently.
        let logits = session.forward(&[1, 2], 3).unwrap().to_vec();
        assert_eq!(logits, expected(&mut history, &[1, 2], 3));
        assert_eq!(session.cached(), 5);
        // After a reset, the cache is empty again.
        session.reset();
        let logits = session.forward(&[7], 0).unwrap().to_vec();
        assert_eq!(logits, expected(&mut history, &[7], 0));
    }
}

#[test]
fn forward_refuses_what_cannot_run() {
    let Some((mut session, _file)) = session(2) else {
        return;
    };
    session.forward(&[1, 2, 3], 0).unwrap();
    let too_long = vec![1u32; CONTEXT];
    let err = session.forward(&too_long, 3).unwrap_err();
    assert_eq!(
        err,
        ForwardError::ContextOverflow {
            start: 3,
            tokens: CONTEXT,
            context: CONTEXT
        }
    );
    assert!(
        err.to_string()
            .starts_with("16 tokens from position 3 need 19 positions, but the artifact's context is 16 positions"),
        "{err}"
    );
    let err = session.forward(&[1, VOCAB as u32], 3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "token 8 at index 1 is outside the vocabulary of 8"
    );
    let err = session.forward(&[1], 4).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot start at position 4: the cache holds only 3 positions"
    );
    // A refused call changes nothing.
    assert_eq!(session.cached(), 3);
    assert!(session.forward(&[], 3).unwrap().is_empty());
}

#[test]
fn a_kernel_the_code_does_not_declare_is_named() {
    let Some(code) = support::compile_kernels() else {
        return;
    };
    let mut manifest = support::manifest();
    manifest.dispatches[1].kernel = "bumpy".into();
    let file = TempFile::new("m.q35", &support::artifact_with(&manifest, &code));
    let err = Session::load(file.path(), 1).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: the plan disagrees with the kernels of the code object `code/cpu.so`: dispatch 1 calls `bumpy`, which the code object does not declare",
            file.path().display()
        )
    );
}

/// Manifest edits that the plan's own checks accept but that would make a
/// kernel read or write out of bounds (issue 13, rows 6 and 7) are refused
/// against the signatures the code object declares, before any buffer is
/// allocated or any kernel runs.
#[test]
fn a_plan_edit_against_the_code_is_refused() {
    let Some(code) = support::compile_kernels() else {
        return;
    };
    let cases: Vec<(Box<dyn Fn(&mut q35_format::artifact::Manifest)>, &str)> = vec![
        (Box::new(|m| m.dispatches[0].workgroups_per_token = 9), "has 0 + 9 per token workgroups, the kernel was compiled for 0 + 1 per token"),
        (Box::new(|m| m.dispatches[0].workgroups = 1 << 40), "workgroups, the kernel was compiled for"),
        (Box::new(|m| m.context_length = 8), "the manifest says context_length 8, the code was compiled for 16"),
        (Box::new(|m| m.max_tokens = 3), "the manifest says max_tokens 3, the code was compiled for 4"),
        (Box::new(|m| m.dispatches[0].buffers.reverse()), "binds `logits` (output f32 of width 8) as argument 0"),
        (Box::new(|m| m.dispatches[0].buffers.clear()), "binds 0 buffers, the kernel takes 4"),
    ];
    for (edit, expected) in cases {
        let mut manifest = support::manifest();
        edit(&mut manifest);
        let file = TempFile::new("m.q35", &support::artifact_with(&manifest, &code));
        let err = Session::load(file.path(), 1).unwrap_err().to_string();
        assert!(err.contains("the plan disagrees with the kernels of the code object"), "{err}");
        assert!(err.contains(expected), "{err} lacks {expected:?}");
    }
}

/// A code object cut short (its checksum fixed) is refused by the ELF
/// check, not loaded and faulted on (issue 13, row 8).
#[test]
fn a_truncated_code_object_is_refused_before_dlopen() {
    let Some(code) = support::compile_kernels() else {
        return;
    };
    let file = TempFile::new("m.q35", &support::artifact_with(&support::manifest(), &code[..4096.min(code.len() - 1)]));
    let err = Session::load(file.path(), 1).unwrap_err().to_string();
    assert!(err.contains("cannot load the code object `code/cpu.so`"), "{err}");
    assert!(err.contains("it is truncated") || err.contains("lie beyond the file"), "{err}");
}

#[test]
fn every_session_runs_its_own_code() {
    // glibc recognises loaded libraries by path, and memfd paths
    // (/proc/self/fd/N) repeat once a descriptor number is reused: live
    // sessions, and a session loaded after another was dropped, must each
    // run the code of their own artifact.
    let load = |bump: u32| -> Option<(Session, TempFile)> {
        let code = support::compile_kernels_with_bump(bump)?;
        let file = TempFile::new(
            "m.q35",
            &support::artifact_with(&support::manifest(), &code),
        );
        Some((Session::load(file.path(), 1).unwrap(), file))
    };
    let first_column = |s: &mut Session| s.forward(&[1], 0).unwrap()[0];
    let Some((mut a, _fa)) = load(1000) else {
        return;
    };
    let Some((mut b, _fb)) = load(2000) else {
        return;
    };
    let (va, vb) = (first_column(&mut a), first_column(&mut b));
    assert_eq!(vb - va, 1000.0);
    drop(a);
    let Some((mut c, _fc)) = load(3000) else {
        return;
    };
    assert_eq!(first_column(&mut c) - va, 2000.0);
    assert_eq!(first_column(&mut b), vb);
}
