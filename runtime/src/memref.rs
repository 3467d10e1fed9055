//! The memory a compiled kernel sees: 64-byte aligned buffers and the MLIR
//! memref descriptors that point into them.
//!
//! Kernels are compiled with MLIR's C interface (`llvm.emit_c_interface`):
//! every memref argument is passed as a pointer to a descriptor
//!
//! ```c
//! struct { T *allocated; T *aligned; int64_t offset; int64_t sizes[R]; int64_t strides[R]; }
//! ```
//!
//! which [`MemRefDescriptor`] mirrors field for field (`#[repr(C)]`). The
//! runtime only ever builds row-major descriptors with offset 0.
//!
//! This module owns no policy: it does not know which buffer is a weight or
//! an activation (that is the artifact loader's job).

use std::alloc::{self, Layout};
use std::ffi::c_void;
use std::ptr::NonNull;

/// Alignment of every buffer: a cache line, and enough for any vector load.
pub const BUFFER_ALIGN: usize = 64;

/// A rank-`R` MLIR memref descriptor (C interface layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRefDescriptor<const R: usize> {
    /// The pointer returned by the allocator (MLIR frees through it; we never let it).
    pub allocated: *mut c_void,
    /// The pointer the kernel indexes from.
    pub aligned: *mut c_void,
    /// Offset from `aligned`, in elements.
    pub offset: i64,
    pub sizes: [i64; R],
    /// In elements.
    pub strides: [i64; R],
}

/// Rank 1: token ids, positions, norm vectors, weight arrays.
pub type MemRef1 = MemRefDescriptor<1>;
/// Rank 2: activations `[tokens, width]`, KV caches `[context, width]`.
pub type MemRef2 = MemRefDescriptor<2>;

impl MemRefDescriptor<1> {
    /// A contiguous vector of `len` elements at `data`.
    pub fn vector(data: *mut c_void, len: usize) -> Self {
        Self {
            allocated: data,
            aligned: data,
            offset: 0,
            sizes: [len as i64],
            strides: [1],
        }
    }

    /// The descriptors of a weight payload in kernel argument order
    /// (docs/artifact.md §5): codes, mins, range codes, range scales for a
    /// coded weight, the values for f16/f32. They point into `payload`,
    /// which must outlive every call that uses them (kernels only read
    /// weights).
    pub fn of_payload(payload: &q35_format::Payload) -> Vec<Self> {
        use q35_format::Payload;
        fn of<T>(v: &[T]) -> MemRef1 {
            MemRef1::vector(v.as_ptr() as *mut c_void, v.len())
        }
        match payload {
            Payload::Coded {
                codes,
                range_scale,
                mins,
                range_codes,
            } => vec![of(codes), of(mins), of(range_codes), of(range_scale)],
            Payload::F16(v) => vec![of(v)],
            Payload::F32(v) => vec![of(v)],
        }
    }
}

impl MemRefDescriptor<2> {
    /// A row-major `rows × cols` matrix at `data`.
    pub fn matrix(data: *mut c_void, rows: usize, cols: usize) -> Self {
        Self {
            allocated: data,
            aligned: data,
            offset: 0,
            sizes: [rows as i64, cols as i64],
            strides: [cols as i64, 1],
        }
    }
}

/// Element types a buffer can be viewed as. Sealed: only plain-old-data
/// types whose every bit pattern is valid and whose alignment divides
/// [`BUFFER_ALIGN`].
pub trait Element: Copy + sealed::Sealed + 'static {}

mod sealed {
    pub trait Sealed {}
}

macro_rules! elements {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {}
    )*};
}
elements!(u8, i8, u16, i32, u32, u64, f32);

/// An owned, zero-initialized, 64-byte aligned byte buffer.
///
/// Kernels write into it through raw pointers while no Rust reference to
/// its contents exists; the typed views below are for the runtime's own
/// reads and writes between dispatches.
pub struct AlignedBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is plain owned memory; `&AlignedBuffer` gives only
// shared (read) views, `&mut` gives exclusive ones, as for `Vec<u8>`.
unsafe impl Send for AlignedBuffer {}
unsafe impl Sync for AlignedBuffer {}

impl AlignedBuffer {
    /// `len` zero bytes. Panics only if `len` overflows `isize` when rounded
    /// up to the alignment, or aborts if the allocator fails (as `Vec` does).
    pub fn zeroed(len: usize) -> Self {
        // Never allocate zero bytes (undefined for `alloc`); round up to a
        // whole cache line so vector tails never straddle into another buffer.
        let size = len.max(1).next_multiple_of(BUFFER_ALIGN);
        let layout =
            Layout::from_size_align(size, BUFFER_ALIGN).expect("buffer size overflows isize");
        // SAFETY: `layout` has a nonzero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        Self { ptr, len }
    }

    /// A buffer holding a copy of `data`'s elements.
    pub fn from_slice<T: Element>(data: &[T]) -> Self {
        let mut buffer = Self::zeroed(std::mem::size_of_val(data));
        buffer.as_mut_slice::<T>().copy_from_slice(data);
        buffer
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start of the buffer, for descriptors.
    pub fn as_mut_ptr(&mut self) -> *mut c_void {
        self.ptr.as_ptr().cast()
    }

    /// The start of the buffer as a const pointer.
    pub fn as_ptr(&self) -> *const c_void {
        self.ptr.as_ptr().cast()
    }

    /// The whole elements of `T` the buffer holds.
    pub fn as_slice<T: Element>(&self) -> &[T] {
        // SAFETY: the pointer is valid for `len` bytes, aligned to 64 (a
        // multiple of T's alignment), every bit pattern is a valid `T`, and
        // the returned borrow ties the view to `&self`.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().cast::<T>(),
                self.len / std::mem::size_of::<T>(),
            )
        }
    }

    /// Mutable view as whole elements of `T`.
    pub fn as_mut_slice<T: Element>(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, with exclusivity from `&mut self`.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().cast::<T>(),
                self.len / std::mem::size_of::<T>(),
            )
        }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        let size = self.len.max(1).next_multiple_of(BUFFER_ALIGN);
        // SAFETY: allocated in `zeroed` with exactly this layout.
        unsafe {
            alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(size, BUFFER_ALIGN),
            )
        }
    }
}

impl std::fmt::Debug for AlignedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuffer")
            .field("len", &self.len)
            .finish()
    }
}
