//! The memref descriptor layout kernels are compiled against, and the
//! buffers behind it.

use std::mem::{align_of, offset_of, size_of};

use q35_rt::memref::{AlignedBuffer, MemRef1, MemRef2, BUFFER_ALIGN};

#[test]
fn descriptors_have_the_c_interface_layout() {
    // struct { T *allocated; T *aligned; int64_t offset; int64_t sizes[R]; int64_t strides[R]; }
    assert_eq!(size_of::<MemRef1>(), 40);
    assert_eq!(size_of::<MemRef2>(), 56);
    assert_eq!(align_of::<MemRef1>(), 8);
    assert_eq!(
        [
            offset_of!(MemRef1, allocated),
            offset_of!(MemRef1, aligned),
            offset_of!(MemRef1, offset),
            offset_of!(MemRef1, sizes),
            offset_of!(MemRef1, strides)
        ],
        [0, 8, 16, 24, 32]
    );
    assert_eq!(
        [
            offset_of!(MemRef2, allocated),
            offset_of!(MemRef2, aligned),
            offset_of!(MemRef2, offset),
            offset_of!(MemRef2, sizes),
            offset_of!(MemRef2, strides)
        ],
        [0, 8, 16, 24, 40]
    );
}

#[test]
fn descriptors_are_row_major_from_offset_zero() {
    let mut buffer = AlignedBuffer::zeroed(4 * 6);
    let d = MemRef2::matrix(buffer.as_mut_ptr(), 2, 3);
    assert_eq!((d.offset, d.sizes, d.strides), (0, [2, 3], [3, 1]));
    assert_eq!(d.allocated, d.aligned);
    let v = MemRef1::vector(buffer.as_mut_ptr(), 6);
    assert_eq!((v.offset, v.sizes, v.strides), (0, [6], [1]));
}

#[test]
fn buffers_are_aligned_zeroed_and_typed() {
    for len in [0, 1, 63, 64, 1000] {
        let buffer = AlignedBuffer::zeroed(len);
        assert_eq!(buffer.as_ptr() as usize % BUFFER_ALIGN, 0);
        assert_eq!(buffer.len(), len);
        assert!(buffer.as_slice::<u8>().iter().all(|&b| b == 0));
    }
    let buffer = AlignedBuffer::from_slice(&[1.5f32, -2.0, 3.25]);
    assert_eq!(buffer.len(), 12);
    assert_eq!(buffer.as_slice::<f32>(), [1.5, -2.0, 3.25]);
    assert_eq!(buffer.as_slice::<u16>().len(), 6);
}
