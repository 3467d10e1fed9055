//! nvptx artifacts without a GPU: the test plan of `support` with PTX
//! entries of the right arity, checked by `q35_rt::nvptx::Program` (every
//! loading step but the GPU's), its kernel parameter values, and the
//! refusals. With the `cuda` feature on a machine without a driver, loading
//! it for a session gives the "needs an NVIDIA GPU" message.

use q35_format::artifact::{write_artifact, LaunchSpec, Manifest};
use q35_format::Payload;
use q35_format::signature::CodeSignatures;
use q35_rt::nvptx::{ParamKind, Program};

use crate::support::{self, TempFile, CONTEXT, VOCAB};

const PTX_PAYLOAD: &str = "code/kernels.ptx";

/// The test plan as an nvptx artifact.
fn manifest() -> Manifest {
    let mut manifest = support::manifest();
    manifest.target.kind = "nvptx".into();
    manifest.target.triple = "nvptx64-nvidia-cuda".into();
    manifest.target.cpu = "sm_80".into();
    manifest.code = PTX_PAYLOAD.into();
    manifest.launches = manifest
        .dispatches
        .iter()
        .map(|_| LaunchSpec {
            block: [32, 1, 1],
            shared_bytes: 0,
        })
        .collect();
    manifest
}

/// Parameters per kernel of the test plan: tokens, start, then 5 per rank-1
/// and 7 per rank-2 descriptor.
const ARITY: [(&str, usize); 5] = [
    ("probe", 2 + 5 + 5 + 5 + 7),
    ("bump", 2 + 5 + 7),
    ("remember", 2 + 5 + 7),
    ("recall", 2 + 7 + 7),
    ("coded", 2 + 4 * 5 + 7),
];

/// A PTX module with an empty entry of `arity` u64 parameters per kernel,
/// shaped as LLVM prints it (descriptor pointers marked `.ptr`), declaring
/// the kernel signatures of the test plan as q35c's PTX does.
fn ptx(kernels: &[(&str, usize)]) -> String {
    let plan = manifest();
    let signatures =
        CodeSignatures::of_plan(&plan.buffers, &plan.dispatches, plan.context_length, plan.max_tokens).unwrap();
    let mut text = signatures.ptx_comment();
    text.push_str("//\n// test module\n.version 7.0\n.target sm_80\n.address_size 64\n\n");
    for &(name, arity) in kernels {
        text.push_str(&format!("\t// .globl\t{name}\n.visible .entry {name}(\n"));
        let params: Vec<String> = (0..arity)
            .map(|i| format!("\t.param .u64 {name}_param_{i}"))
            .collect();
        text.push_str(&params.join(",\n"));
        text.push_str("\n)\n{\n\tret;\n\n}\n");
    }
    text
}

fn artifact(manifest: &Manifest, code: &[u8]) -> TempFile {
    let mut payloads = support::weight_payloads();
    payloads.push((PTX_PAYLOAD.into(), code.to_vec()));
    TempFile::new("m.q35", &write_artifact(manifest, &payloads))
}

fn program_err(manifest: &Manifest, code: &[u8]) -> (String, String) {
    let file = artifact(manifest, code);
    let err = Program::load(file.path()).unwrap_err();
    (file.path().display().to_string(), err.to_string())
}

/// A fake device address for array `a` of buffer `b`.
fn address(b: usize, a: usize) -> u64 {
    0x7f00_0000_0000 + (b as u64) * 0x1_0000 + (a as u64) * 0x100
}

#[test]
fn parameters_follow_the_descriptor_table() {
    let file = artifact(&manifest(), ptx(&ARITY).as_bytes());
    let program = Program::load(file.path()).unwrap();
    assert_eq!(program.sm().to_string(), "sm_80");
    let mut params = program.params(address);
    assert_eq!(params.len(), 5);
    for (p, (kernel, arity)) in params.iter().zip(ARITY) {
        assert_eq!(p.kinds().len(), arity, "{kernel}");
    }
    for p in &mut params {
        p.set_call(3, 5);
    }
    // Buffers: tokens 0, positions 1, norm 2, proj 3, cache 4, logits 5.
    let (tokens, positions, norm, cache, logits) = (
        address(0, 0),
        address(1, 0),
        address(2, 0),
        address(4, 0),
        address(5, 0),
    );
    let vocab = VOCAB as u64;
    // probe(tokens, positions, norm, logits)
    assert_eq!(
        params[0].values(),
        [
            3, 5, //
            tokens, tokens, 0, 3, 1, //
            positions, positions, 0, 3, 1, //
            norm, norm, 0, vocab, 1, //
            logits, logits, 0, 3, vocab, vocab, 1,
        ]
    );
    // recall(cache, logits): the cache keeps its context rows.
    assert_eq!(
        params[3].values(),
        [
            3,
            5, //
            cache,
            cache,
            0,
            CONTEXT as u64,
            1,
            1,
            1, //
            logits,
            logits,
            0,
            3,
            vocab,
            vocab,
            1,
        ]
    );
    // coded(proj, logits): the four arrays of the coded weight, in order.
    let Payload::Coded {
        codes,
        range_scale,
        mins,
        range_codes,
    } = support::proj().into_payload()
    else {
        unreachable!()
    };
    let proj = |a| address(3, a);
    assert_eq!(
        params[4].values()[..22],
        [
            3,
            5, //
            proj(0),
            proj(0),
            0,
            codes.len() as u64,
            1, //
            proj(1),
            proj(1),
            0,
            mins.len() as u64,
            1, //
            proj(2),
            proj(2),
            0,
            range_codes.len() as u64,
            1, //
            proj(3),
            proj(3),
            0,
            range_scale.len() as u64,
            1,
        ]
    );
    use ParamKind::*;
    assert_eq!(
        params[1].kinds(),
        [
            Tokens, Start, Allocated, Aligned, Offset, Size, Stride, Allocated, Aligned, Offset,
            Size, Size, Stride, Stride
        ]
    );
    // A later call rewrites only the token-dependent values.
    params[0].set_call(1, 9);
    assert_eq!(&params[0].values()[..7], [1, 9, tokens, tokens, 0, 1, 1]);
    assert_eq!(params[0].values()[20], 1);
}

#[test]
fn the_ptx_must_match_the_dispatch_list() {
    let manifest = manifest();
    let (path, err) = program_err(&manifest, ptx(&ARITY[..4]).as_bytes());
    assert_eq!(
        err,
        format!("{path}: dispatch 4 launches kernel `coded`, but the PTX has no entry `coded`")
    );
    let mut short = ARITY;
    short[1].1 -= 1;
    let (path, err) = program_err(&manifest, ptx(&short).as_bytes());
    assert!(
        err.starts_with(&format!(
            "{path}: cannot load the code object `{PTX_PAYLOAD}`: entry `bump` takes 13 parameters"
        )) && err.contains("but dispatch 1 passes 14 of type .u64"),
        "{err}"
    );
    let narrow = ptx(&ARITY).replacen(".param .u64 probe_param_3", ".param .u32 probe_param_3", 1);
    let (_, err) = program_err(&manifest, narrow.as_bytes());
    assert!(
        err.contains("entry `probe` takes 24 parameters (.u64, .u64, .u64, .u32,"),
        "{err}"
    );
    let (path, err) = program_err(&manifest, b"\xff\xfe not text");
    assert!(
        err.starts_with(&format!("{path}: cannot load the code object `{PTX_PAYLOAD}`: PTX must be text, but it is not UTF-8")),
        "{err}"
    );
    let (_, err) = program_err(&manifest, b".version 7.0\0");
    assert!(
        err.ends_with("PTX must be text, but it contains a NUL byte"),
        "{err}"
    );
}

#[test]
fn the_target_and_launches_are_checked() {
    let code = ptx(&ARITY);
    let mut bad = manifest();
    bad.target.cpu = "znver5".into();
    let (path, err) = program_err(&bad, code.as_bytes());
    assert_eq!(
        err,
        format!("{path}: target cpu `znver5` is not an SM name such as sm_80 or sm_90")
    );
    let mut bad = manifest();
    bad.launches.pop();
    let (path, err) = program_err(&bad, code.as_bytes());
    assert_eq!(
        err,
        format!("{path}: the plan has 5 dispatches but 4 launch configurations")
    );
    let mut bad = manifest();
    bad.launches[2].block = [32, 0, 1];
    let (path, err) = program_err(&bad, code.as_bytes());
    assert_eq!(
        err,
        format!("{path}: dispatch 2 (`remember`) has an empty block [32, 0, 1]")
    );
    let mut bad = manifest();
    bad.target.kind = "cpu".into();
    let (path, err) = program_err(&bad, code.as_bytes());
    assert_eq!(
        err,
        format!("{path}: compiled for target `cpu`, not `nvptx`")
    );
}

/// The shared steps run before the PTX entries are looked at: a bad weight
/// is reported as on the CPU, and a plan edit against the PTX module's
/// declared kernel signatures too.
#[test]
fn weights_are_checked_as_for_the_cpu() {
    let mut bad = manifest();
    bad.weights[1].rows = 4;
    let (path, err) = program_err(&bad, ptx(&ARITY).as_bytes());
    assert!(
        err.starts_with(&format!("{path}: weight `proj`: ")),
        "{err}"
    );
    let mut edited = manifest();
    edited.dispatches[1].workgroups = 9;
    let (path, err) = program_err(&edited, ptx(&ARITY).as_bytes());
    assert_eq!(
        err,
        format!("{path}: the plan disagrees with the kernels of the code object `{PTX_PAYLOAD}`: dispatch 1 (`bump`) has 9 + 0 per token workgroups, the kernel was compiled for 8 + 0 per token")
    );
}

/// With the `cuda` feature and no CUDA driver on the machine, a session on
/// a valid nvptx artifact fails with the message saying so (skipped where
/// a driver is installed: the GPU tests in q35-tests cover that case).
#[cfg(feature = "cuda")]
#[test]
fn without_a_driver_the_session_says_it_needs_a_gpu() {
    if q35_rt::cuda::open_driver().is_ok() {
        eprintln!("skipped: a CUDA driver is installed on this machine");
        return;
    }
    let file = artifact(&manifest(), ptx(&ARITY).as_bytes());
    let err = q35_rt::Session::load(file.path(), 1).unwrap_err();
    let path = file.path().display();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "{path}: this nvptx artifact needs an NVIDIA GPU, but the CUDA driver (libcuda.so) could not be loaded: "
        )),
        "{text}"
    );
    assert!(matches!(err, q35_rt::artifact::LoadError::NoGpu { .. }));
}
