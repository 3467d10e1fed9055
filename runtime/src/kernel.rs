//! The kernel ABI: how the runtime calls one workgroup of a compiled kernel.
//!
//! For a dispatch of kernel `K` the shared object exports
//! `_mlir_ciface_K` with the C signature
//!
//! ```c
//! void _mlir_ciface_K(int64_t wg, int64_t tokens, int64_t start, Desc *b0, Desc *b1, ...);
//! ```
//!
//! (MLIR's C interface for a `func.func` whose first three arguments are
//! `index` and whose others are memrefs). Rust cannot call a C function
//! with a number of arguments known only at run time, so there is one
//! trampoline per arity, chosen once when the artifact is loaded.

use std::ffi::c_void;

/// Prefix MLIR gives the C-interface wrapper of every kernel.
pub const CIFACE_PREFIX: &str = "_mlir_ciface_";
/// Most descriptor arguments a kernel may take.
pub const MAX_DESCRIPTORS: usize = 12;

/// Calls the kernel at `entry` for workgroup `wg` with the descriptor
/// pointers `args` (exactly the arity the trampoline was chosen for).
pub type Trampoline =
    unsafe fn(entry: *const c_void, wg: i64, tokens: i64, start: i64, args: &[*mut c_void]);

macro_rules! trampolines {
    ($($name:ident: $($i:literal)*;)*) => {
        $(
            unsafe fn $name(entry: *const c_void, wg: i64, tokens: i64, start: i64, args: &[*mut c_void]) {
                type Kernel = unsafe extern "C" fn(i64, i64, i64 $(, trampolines!(@ptr $i))*);
                // SAFETY (caller's contract): `entry` is a kernel with this
                // many descriptor arguments and `args` holds that many.
                let kernel: Kernel = unsafe { std::mem::transmute::<*const c_void, Kernel>(entry) };
                let _ = args; // unused by the 0-argument trampoline
                unsafe { kernel(wg, tokens, start $(, args[$i])*) }
            }
        )*
    };
    (@ptr $i:literal) => { *mut c_void };
}

trampolines! {
    call0: ;
    call1: 0;
    call2: 0 1;
    call3: 0 1 2;
    call4: 0 1 2 3;
    call5: 0 1 2 3 4;
    call6: 0 1 2 3 4 5;
    call7: 0 1 2 3 4 5 6;
    call8: 0 1 2 3 4 5 6 7;
    call9: 0 1 2 3 4 5 6 7 8;
    call10: 0 1 2 3 4 5 6 7 8 9;
    call11: 0 1 2 3 4 5 6 7 8 9 10;
    call12: 0 1 2 3 4 5 6 7 8 9 10 11;
}

/// The trampoline for a kernel with `descriptors` memref arguments, or
/// `None` beyond [`MAX_DESCRIPTORS`].
pub fn trampoline(descriptors: usize) -> Option<Trampoline> {
    const TABLE: [Trampoline; MAX_DESCRIPTORS + 1] = [
        call0, call1, call2, call3, call4, call5, call6, call7, call8, call9, call10, call11,
        call12,
    ];
    TABLE.get(descriptors).copied()
}
