//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! Inputs that stand for several files are the files' bytes joined by
//! [`SPLIT`] (scripts/fuzz.sh writes its seeds that way; `fuzz.dict`
//! gives libFuzzer the separator).

use std::ffi::{c_char, c_int, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

extern "C" {
    /// libFuzzer's entry point for a program with its own `main`
    /// (FuzzerDriver.cpp in libfuzzer-sys).
    fn LLVMFuzzerRunDriver(
        argc: *mut c_int,
        argv: *mut *mut *mut c_char,
        callback: unsafe extern "C" fn(*const u8, usize) -> c_int,
    ) -> c_int;
}

unsafe extern "C" fn one_input(data: *const u8, size: usize) -> c_int {
    let data = if data.is_null() { std::ptr::NonNull::dangling().as_ptr() } else { data };
    // SAFETY: libFuzzer passes `size` readable bytes at `data`.
    unsafe { libfuzzer_sys::test_input_wrap(data, size) }
}

/// Runs libFuzzer on the target that `libfuzzer_sys::fuzz_target!`
/// defined, with this process's arguments; every target's `main`.
///
/// The targets have a Rust `main` rather than libFuzzer's (`#![no_main]`,
/// as cargo-fuzz makes them) because q35c links MLIR statically, and
/// libMLIRMlirOptMain.a carries mlir-opt's `main`: the linker takes that one
/// before it reaches libFuzzer's, and the binary would be mlir-opt.
pub fn run() -> ! {
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_encoded_bytes()).expect("argument with a NUL byte"))
        .collect();
    let mut argc = c_int::try_from(args.len()).expect("too many arguments");
    // libFuzzer keeps pointers into argv: leak it.
    let argv: &mut Vec<*mut c_char> = Box::leak(Box::new(
        args.into_iter()
            .map(CString::into_raw)
            .chain(std::iter::once(std::ptr::null_mut()))
            .collect(),
    ));
    let mut argv_ptr = argv.as_mut_ptr();
    // SAFETY: argc/argv are a C argument vector that lives forever.
    let status = unsafe { LLVMFuzzerRunDriver(&mut argc, &mut argv_ptr, one_input) };
    std::process::exit(status)
}

/// Separates the files of one input.
pub const SPLIT: &[u8] = b"\n#q35-fuzz-split#\n";

/// Splits `data` at [`SPLIT`] into at most `max` parts (the last keeps any
/// further separators).
pub fn split(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < max {
        match rest.windows(SPLIT.len()).position(|w| w == SPLIT) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + SPLIT.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

/// A directory of this process's own for the files a target writes:
/// `$Q35_FUZZ_TMP` (scripts/fuzz.sh points it at a tmpfs directory it
/// removes afterwards), else /dev/shm, else the system temp directory.
/// Each process (libFuzzer `-jobs`/`-fork` workers too) gets its own.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("Q35_FUZZ_TMP")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("q35-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cannot create the fuzz scratch directory");
        dir
    })
}

/// Writes `bytes` to `dir/name`; `None` removes the file.
pub fn put(dir: &Path, name: &str, bytes: Option<&[u8]>) {
    let path = dir.join(name);
    match bytes {
        Some(bytes) => std::fs::write(&path, bytes).expect("cannot write a scratch file"),
        None => match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove {}: {e}", path.display()),
        },
    }
}

/// Whether `Q35_FUZZ_VERBOSE` is set: then [`note!`] prints.
pub fn verbose() -> bool {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("Q35_FUZZ_VERBOSE").is_some())
}

/// What a step of a target gave (`note!("load: {e}")`), printed with
/// `Q35_FUZZ_VERBOSE` set, for reading what one input does when run alone
/// (`target FILE`). Always formatted, so that every error's `Display` is
/// fuzzed too.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        let text = format!($($arg)*);
        if $crate::verbose() {
            eprintln!("{text}");
        }
    }};
}
