//! int8 activations for the integer path (docs/format.md §8).
//!
//! With `q35c --activations int8`, every coded matmul quantizes its input
//! row group by group (the weight's groups along K) to symmetric int8 codes
//! and one f32 scale, and multiplies codes by codes in integers. This
//! module is the definition: the CPU kernel computes exactly these codes
//! and scales (the same f32 operations in the same order), and the
//! reference forward pass uses them.

/// Largest activation code: codes lie in `-127..=127`, so `|x| <= 128`,
/// the bound the accumulator proofs assume (`Accum.v`).
pub const ACT_LEVELS: f32 = 127.0;

/// Smallest `a`: keeps `127 / a` finite (and far from overflow) for zero
/// and tiny groups.
pub const ACT_FLOOR: f32 = 7.888_609e-31; // 2^-100

/// Quantizes one group `x` of activations into `codes` (same length) and
/// returns the scale `sx`; the group then stands for `sx * codes`.
///
/// ```text
/// a     = max(max_k |x_k|, 2^-100)     (a group below 2^-100 gives codes of 0 or ±1)
/// x8_k  = round_half_even(fl32(x_k * fl32(127 / a)))   in -127..=127
/// sx    = fl32(a / 127)
/// ```
///
/// The largest `|x_k|` maps to ±127 (the product is within an ulp of 127),
/// so the clamp below never changes a finite input's code; it only keeps
/// non-finite inputs inside the range.
pub fn quantize_activations(x: &[f32], codes: &mut [i8]) -> f32 {
    assert_eq!(x.len(), codes.len(), "one code per activation");
    let a = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(ACT_FLOOR);
    let inv = ACT_LEVELS / a;
    for (code, &v) in codes.iter_mut().zip(x) {
        *code = (v * inv).round_ties_even().clamp(-ACT_LEVELS, ACT_LEVELS) as i8;
    }
    a / ACT_LEVELS
}

/// `x` with every group of `group` columns replaced by what its int8 codes
/// stand for, `sx * x8_k`, in f64 (exact: a 24-bit scale times a 7-bit code).
pub fn dequantized_activations(x: &[f32], group: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    let mut codes = vec![0i8; group.min(x.len())];
    for chunk in x.chunks(group.max(1)) {
        let codes = &mut codes[..chunk.len()];
        let sx = f64::from(quantize_activations(chunk, codes));
        out.extend(codes.iter().map(|&c| sx * f64::from(c)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_magnitude_maps_to_the_end_code() {
        let x = [0.5f32, -2.0, 1.0, 0.0, 1.99];
        let mut codes = [0i8; 5];
        let sx = quantize_activations(&x, &mut codes);
        assert_eq!(sx, 2.0 / 127.0);
        assert_eq!(codes, [32, -127, 64, 0, 126]);
    }

    #[test]
    fn ties_round_to_even_and_zero_groups_stay_zero() {
        // 127 / 127 = 1, so x * inv = x exactly: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2.
        let x = [127.0f32, 0.5, 1.5, 2.5, -2.5];
        let mut codes = [0i8; 5];
        assert_eq!(quantize_activations(&x, &mut codes), 1.0);
        assert_eq!(codes, [127, 0, 2, 2, -2]);
        let mut zero = [1i8; 3];
        let sx = quantize_activations(&[0.0, -0.0, 1e-40], &mut zero);
        assert_eq!(zero, [0, 0, 0]);
        assert_eq!(sx, ACT_FLOOR / 127.0);
        assert_eq!(ACT_FLOOR, 2f32.powi(-100));
    }

    #[test]
    fn every_code_is_within_half_a_step_of_its_activation() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for len in [1, 7, 64, 128, 300] {
            let x: Vec<f32> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 37.0
                })
                .collect();
            let back = dequantized_activations(&x, 64);
            for (g, (xs, bs)) in x.chunks(64).zip(back.chunks(64)).enumerate() {
                let a = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                let step = f64::from(a) / 127.0;
                for (&v, &b) in xs.iter().zip(bs) {
                    assert!((f64::from(v) - b).abs() <= step * (0.5 + 1e-6), "len {len} group {g}: {v} -> {b}");
                }
            }
        }
    }
}
