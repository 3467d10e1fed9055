//! Packing codes of one group into its byte block, and back.
//!
//! A block holds three planes back to back: the 4-bit codes two per byte
//! (`nib`), the low two bits of the 3-bit codes four per byte (`lo2`), and
//! their high bits eight per byte (`hi1`). Code `j` of a plane sits in byte
//! `j / per_byte` at bit `width * (j % per_byte)`; padding bits are zero.
//! Planes (rather than 7-bit pairs) keep every field at a power-of-two bit
//! offset, so kernels unpack with shifts and masks only.
//!
//! These functions are what the Coq development mirrors: keep the names and
//! bit positions exactly as they are.

/// Largest 4-bit code (even columns of q35, every column of int4).
pub const L4: u8 = 15;
/// Largest 3-bit code (odd columns of q35, every column of int3).
pub const L3: u8 = 7;

/// Bytes of a block holding `n4` 4-bit codes and `n3` 3-bit codes:
/// `ceil(n4/2) + ceil(n3/4) + ceil(n3/8)`.
pub const fn planes_bytes(n4: usize, n3: usize) -> usize {
    n4.div_ceil(2) + n3.div_ceil(4) + n3.div_ceil(8)
}

/// Bytes of the q35 block of a group of `n` weights (`ceil(n/2)` 4-bit codes,
/// `floor(n/2)` 3-bit codes). `block_bytes(128) == 56`, i.e. 3.5 bits/weight.
pub const fn block_bytes(n: usize) -> usize {
    planes_bytes(n.div_ceil(2), n / 2)
}

/// Packs a q35 group: `q4` holds the codes of local elements 0, 2, 4, ...
/// and `q3` those of 1, 3, 5, ..., so `q4.len()` is `ceil(n/2)` and
/// `q3.len()` is `floor(n/2)`. Writes exactly `block_bytes(n)` bytes at the
/// front of `out`, padding bits zero, and leaves the rest of `out` alone.
///
/// Codes are masked to their width (debug builds assert they fit).
///
/// # Panics
/// If `out` is shorter than `block_bytes(n)`.
pub fn pack_group(q4: &[u8], q3: &[u8], out: &mut [u8]) {
    debug_assert!(q4.len() == q3.len() || q4.len() == q3.len() + 1);
    pack_planes(q4, q3, out);
}

/// Unpacks a q35 group of `n` weights: fills `q4[..ceil(n/2)]` and
/// `q3[..floor(n/2)]` from the first `block_bytes(n)` bytes of `block`.
///
/// # Panics
/// If `block`, `q4` or `q3` is shorter than that.
pub fn unpack_group(block: &[u8], n: usize, q4: &mut [u8], q3: &mut [u8]) {
    unpack_planes(block, &mut q4[..n.div_ceil(2)], &mut q3[..n / 2]);
}

/// Packs any number of 4-bit and 3-bit codes into the three planes (int4
/// passes an empty `q3`, int3 an empty `q4`). Writes exactly
/// `planes_bytes(q4.len(), q3.len())` bytes at the front of `out`.
///
/// # Panics
/// If `out` is shorter than that.
pub fn pack_planes(q4: &[u8], q3: &[u8], out: &mut [u8]) {
    let (nib, lo2, hi1) = split_planes_mut(out, q4.len(), q3.len());
    nib.fill(0);
    lo2.fill(0);
    hi1.fill(0);
    for (j, &q) in q4.iter().enumerate() {
        debug_assert!(q <= L4, "4-bit code {q} out of range");
        nib[j / 2] |= (q & 0xf) << (4 * (j % 2));
    }
    for (j, &q) in q3.iter().enumerate() {
        debug_assert!(q <= L3, "3-bit code {q} out of range");
        lo2[j / 4] |= (q & 0b11) << (2 * (j % 4));
        hi1[j / 8] |= ((q >> 2) & 1) << (j % 8);
    }
}

/// Unpacks `q4.len()` 4-bit and `q3.len()` 3-bit codes from the planes at
/// the front of `block`.
///
/// # Panics
/// If `block` is shorter than `planes_bytes(q4.len(), q3.len())`.
pub fn unpack_planes(block: &[u8], q4: &mut [u8], q3: &mut [u8]) {
    let (nib, lo2, hi1) = split_planes(block, q4.len(), q3.len());
    for (j, q) in q4.iter_mut().enumerate() {
        *q = (nib[j / 2] >> (4 * (j % 2))) & 0xf;
    }
    for (j, q) in q3.iter_mut().enumerate() {
        let lo = (lo2[j / 4] >> (2 * (j % 4))) & 0b11;
        let hi = (hi1[j / 8] >> (j % 8)) & 1;
        *q = lo | (hi << 2);
    }
}

/// Whether every padding bit of a block of `n4` + `n3` codes is zero.
/// Only the last byte of each plane can hold padding.
pub(crate) fn padding_is_zero(block: &[u8], n4: usize, n3: usize) -> bool {
    let (nib, lo2, hi1) = split_planes(block, n4, n3);
    // Bits at and above `used` in the plane's last byte must be clear.
    let clear_above = |plane: &[u8], used: usize| match plane.last() {
        Some(&b) if used != 0 => b >> used == 0,
        _ => true,
    };
    clear_above(nib, 4 * (n4 % 2)) && clear_above(lo2, 2 * (n3 % 4)) && clear_above(hi1, n3 % 8)
}

fn split_planes(block: &[u8], n4: usize, n3: usize) -> (&[u8], &[u8], &[u8]) {
    let (nib, rest) = block.split_at(n4.div_ceil(2));
    let (lo2, rest) = rest.split_at(n3.div_ceil(4));
    (nib, lo2, &rest[..n3.div_ceil(8)])
}

fn split_planes_mut(block: &mut [u8], n4: usize, n3: usize) -> (&mut [u8], &mut [u8], &mut [u8]) {
    let (nib, rest) = block.split_at_mut(n4.div_ceil(2));
    let (lo2, rest) = rest.split_at_mut(n3.div_ceil(4));
    (nib, lo2, &mut rest[..n3.div_ceil(8)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_bytes_full_groups() {
        assert_eq!(block_bytes(32), 8 + 4 + 2);
        assert_eq!(block_bytes(64), 16 + 8 + 4);
        assert_eq!(block_bytes(128), 56);
        assert_eq!(block_bytes(256), 112);
        // Full groups are exactly 3.5 bits per weight.
        for n in [32, 64, 128, 256, 576, 1536, 49152] {
            assert_eq!(block_bytes(n) * 16, n * 7, "n = {n}");
        }
    }

    #[test]
    fn block_bytes_tails() {
        // (n, ceil(n4/2) + ceil(n3/4) + ceil(n3/8)) worked by hand.
        let cases = [
            (0, 0),
            (1, 1),         // n4 = 1, n3 = 0
            (2, 1 + 1 + 1), // n4 = 1, n3 = 1
            (3, 1 + 1 + 1), // n4 = 2, n3 = 1
            (7, 2 + 1 + 1), // n4 = 4, n3 = 3
            (8, 2 + 1 + 1), // n4 = 4, n3 = 4
            (9, 3 + 1 + 1), // n4 = 5, n3 = 4
            (17, 5 + 2 + 1),
            (63, 16 + 8 + 4),
            (65, 17 + 8 + 4),
            (127, 32 + 16 + 8),
        ];
        for (n, bytes) in cases {
            assert_eq!(block_bytes(n), bytes, "n = {n}");
        }
        assert_eq!(planes_bytes(5, 0), 3);
        assert_eq!(planes_bytes(0, 9), 3 + 2);
    }

    /// The worked example of docs/format.md.
    #[test]
    fn worked_example_bytes() {
        let q4 = [0, 4, 9, 13];
        let q3 = [7, 4, 1, 3];
        let mut out = [0xaa; 6];
        pack_group(&q4, &q3, &mut out);
        assert_eq!(out, [0x40, 0xd9, 0xd3, 0x03, 0xaa, 0xaa]);
        let (mut u4, mut u3) = ([0; 4], [0; 4]);
        unpack_group(&out, 8, &mut u4, &mut u3);
        assert_eq!((u4, u3), (q4, q3));
    }

    #[test]
    fn pack_overwrites_stale_bytes_and_pads_with_zero() {
        let mut out = [0xff; block_bytes(3)];
        pack_group(&[15, 15], &[7], &mut out);
        // nib: 0xff; lo2: 0b11; hi1: 0b1.
        assert_eq!(out, [0xff, 0x03, 0x01]);
        assert!(padding_is_zero(&out, 2, 1));
        out[1] |= 0x10;
        assert!(!padding_is_zero(&out, 2, 1));
    }
}
