//! The scalar arithmetic of the format: how group parameters are rounded,
//! how a weight becomes a code, and how a code becomes a weight again.
//!
//! Directed rounding is what makes the error bound hold: the stored min is
//! rounded down and the stored range up, so `[min, min + range]` contains
//! every weight of the group and each weight is within `s/2` of a grid point
//! (plus f32 rounding). The searches below decide "does this cover the group"
//! with exact comparisons, so the stored parameters are exactly the ones
//! `docs/format.md` defines, not approximations of them.

use half::f16;

use crate::{L3, L4};

/// Largest K for which the int8-activation path cannot overflow its i32
/// accumulator: `|x| <= 128`, `|q - z| <= L4 = 15`, so each product is at
/// most 1920 in magnitude and `1920 * K <= i32::MAX` iff `K <= 1_118_481`.
pub const INT8_PATH_MAX_K: usize = i32::MAX as usize / (128 * L4 as usize);

/// The reference dequantization `fl32(min + fl32(q * s))`.
///
/// Two separately rounded f32 operations: Rust never fuses `a * b + c` into
/// an fma unless `mul_add` is called, so every target computes the same bits.
/// Kernels must do the same (no fast-math contraction).
pub fn dequant(min: f32, s: f32, q: u8) -> f32 {
    let scaled = f32::from(q) * s;
    min + scaled
}

/// The code of weight `w`: `clamp(round((w - min) / s), 0, l)`, rounding half
/// away from zero; `s == 0` (a constant group) gives 0.
///
/// The quotient is taken in f64; it can differ from the exact real quotient
/// only in its last f64 bits, so the code differs from exact-real rounding
/// only when `(w - min) / s` is within about 2^-50 (relative) of a half
/// integer, where both candidate codes are equally good.
pub fn quantize_code(w: f32, min: f32, s: f32, l: u8) -> u8 {
    if s <= 0.0 || s.is_nan() {
        return 0;
    }
    let t = (f64::from(w) - f64::from(min)) / f64::from(s);
    // `t.round().clamp(0, l)` without `round`, a libm call on the baseline
    // x86-64 target (every weight of every candidate goes through here):
    // for 0 < t < l the truncation is the floor and `t - floor` is exact,
    // so comparing it with 1/2 rounds half away from zero exactly. A NaN
    // (impossible for finite inputs) gives 0, as the cast did.
    if !(t > 0.0) {
        return 0;
    }
    if t >= f64::from(l) {
        return l;
    }
    let floor = t as u8;
    floor + u8::from(t - f64::from(floor) >= 0.5)
}

/// The largest f16 that is `<= x` (round toward -inf). Gives -inf when `x` is
/// below `-65504`; values above `65504` give `65504`.
pub fn f16_round_down(x: f32) -> f16 {
    let h = f16::from_f32(x);
    if h.to_f32() > x {
        f16_next_down(h)
    } else {
        h
    }
}

/// The parameters one (row, group) dequantizes with, exactly as kernels
/// must compute them from the stored bits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupParams {
    /// The stored f16 min, widened to f32.
    pub min: f32,
    /// `range_scale * range_code`, exact in f32 (11-bit mantissa times an
    /// 8-bit integer fits in 24 bits).
    pub range: f32,
}

impl GroupParams {
    /// From the stored bits: the group's f16 min, the row's f16 range scale
    /// and the group's range code.
    pub fn from_bits(min: u16, range_scale: u16, range_code: u8) -> Self {
        GroupParams {
            min: f16::from_bits(min).to_f32(),
            range: f16::from_bits(range_scale).to_f32() * f32::from(range_code),
        }
    }

    /// The step for codes up to `l`: `fl32(range / l)`.
    pub fn step(&self, l: u8) -> f32 {
        self.range / f32::from(l)
    }

    /// `fl32(range / 15)`, the step of 4-bit codes.
    pub fn s4(&self) -> f32 {
        self.step(L4)
    }

    /// `fl32(range / 7)`, the step of 3-bit codes.
    pub fn s3(&self) -> f32 {
        self.step(L3)
    }
}

/// Whether `min + c * rs >= max` holds exactly.
///
/// Exact in f64: `c <= 255` and `rs` (an f16) make `c * rs` a product of at
/// most 8 + 11 significant bits, a multiple of 2^-24 below 2^24; `min` is an
/// f16, a multiple of 2^-24 below 2^16. The sum is therefore a multiple of
/// 2^-24 below 2^25, which needs at most 49 bits, and `max` is an f32.
fn covers(min: f16, c: u8, rs: f16, max: f32) -> bool {
    f64::from(min) + f64::from(c) * f64::from(rs) >= f64::from(max)
}

/// The row's range scale: the smallest f16 `rs >= 0` with
/// `min_g + 255 * rs >= max_g` for every group `g`, i.e. `max_g (max_g -
/// min_g) / 255` rounded up to f16. `None` when no finite f16 suffices.
pub(crate) fn range_scale_for(groups: &[(f16, f32)]) -> Option<f16> {
    let covers_all = |rs: f16| groups.iter().all(|&(min, max)| covers(min, 255, rs, max));
    let span = groups
        .iter()
        .map(|&(min, max)| f64::from(max) - f64::from(min))
        .fold(0.0, f64::max);
    // Start at the nearest f16 to the answer and walk to the exact one; the
    // estimate is within an f16 ulp, so the loops take a step or two.
    let mut rs = f16::from_f64(span / 255.0);
    if !rs.is_finite() {
        rs = f16::MAX;
    }
    while !covers_all(rs) {
        rs = f16_next_up(rs)?;
    }
    while rs.to_bits() != 0 && covers_all(f16_next_down(rs)) {
        rs = f16_next_down(rs);
    }
    Some(rs)
}

/// The group's range code: the smallest `c` in `0..=255` with
/// `min + c * rs >= max`, i.e. `ceil((max - min) / rs)`. The caller
/// guarantees `c = 255` covers (that is how `rs` was chosen).
pub(crate) fn range_code_for(min: f16, max: f32, rs: f16) -> u8 {
    if rs.to_bits() == 0 {
        return 0;
    }
    let est = ((f64::from(max) - f64::from(min)) / f64::from(rs)).ceil();
    let mut c = est.clamp(0.0, 255.0) as u8;
    while c < 255 && !covers(min, c, rs, max) {
        c += 1;
    }
    while c > 0 && covers(min, c - 1, rs, max) {
        c -= 1;
    }
    c
}

/// The next f16 below `h` (-inf stays -inf; never called with NaN).
fn f16_next_down(h: f16) -> f16 {
    let b = h.to_bits();
    f16::from_bits(match b {
        0x0000 | 0x8000 => 0x8001,     // ±0 -> -smallest subnormal
        0xfc00 => 0xfc00,              // -inf
        b if b & 0x8000 == 0 => b - 1, // positive: smaller magnitude
        b => b + 1,                    // negative: larger magnitude
    })
}

/// Next f16 above a non-negative finite `h`, or `None` past `f16::MAX`.
fn f16_next_up(h: f16) -> Option<f16> {
    let b = h.to_bits();
    (b < f16::MAX.to_bits()).then(|| f16::from_bits(b + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_path_bound() {
        assert_eq!(INT8_PATH_MAX_K, 1_118_481);
        assert!(1920 * INT8_PATH_MAX_K as i64 <= i64::from(i32::MAX));
        assert!(1920 * (INT8_PATH_MAX_K as i64 + 1) > i64::from(i32::MAX));
    }

    #[test]
    fn round_down_is_the_largest_f16_below() {
        let cases: [(f32, u16); 8] = [
            (0.1, 0x2e66),  // nearest f16 (0.09998) is already below
            (-0.1, 0xae67), // nearest is above: one f16 ulp down (-0.10004)
            (1.0, 0x3c00),
            (0.0, 0x0000),
            (3.0e-8, 0x0000),  // nearest is 2^-24, above
            (-3.0e-8, 0x8001), // -2^-24
            (65504.0, 0x7bff),
            (70000.0, 0x7bff), // above f16::MAX still rounds down to it
        ];
        for (x, bits) in cases {
            assert_eq!(f16_round_down(x).to_bits(), bits, "x = {x}");
        }
        assert_eq!(f16_round_down(-65505.0), f16::NEG_INFINITY);
    }

    #[test]
    fn range_scale_and_code_are_minimal() {
        let min = f16::from_f32(-1.0);
        let groups = [(min, 0.9921875), (f16::from_f32(0.5), 0.75)];
        let rs = range_scale_for(&groups).unwrap();
        assert_eq!(rs.to_f32(), 1.0 / 128.0);
        assert_eq!(range_code_for(groups[0].0, groups[0].1, rs), 255);
        assert_eq!(range_code_for(groups[1].0, groups[1].1, rs), 32);
        // A constant f16-exact group needs no range.
        assert_eq!(range_code_for(min, -1.0, rs), 0);
        assert_eq!(range_scale_for(&[(min, -1.0)]).unwrap().to_bits(), 0);
        // Beyond 65504 * 255 nothing fits.
        assert_eq!(range_scale_for(&[(f16::ZERO, 2.0e7)]), None);
    }

    #[test]
    fn code_rounds_half_away_and_clamps() {
        assert_eq!(quantize_code(0.5, 0.0, 1.0, L4), 1);
        assert_eq!(quantize_code(0.49, 0.0, 1.0, L4), 0);
        assert_eq!(quantize_code(100.0, 0.0, 1.0, L3), L3);
        assert_eq!(quantize_code(-5.0, 0.0, 1.0, L3), 0);
        assert_eq!(quantize_code(3.0, 3.0, 0.0, L4), 0);
        assert_eq!(dequant(-1.0, 0.1328125, 4), -0.46875);
    }

    /// The inline rounding gives `round().clamp()`'s code on every input:
    /// random weights, quotients next to every half integer (one f64 ulp
    /// either side), and the clamps.
    #[test]
    fn inline_rounding_is_round_then_clamp() {
        let by_round = |w: f32, min: f32, s: f32, l: u8| -> u8 {
            if s <= 0.0 || s.is_nan() {
                return 0;
            }
            ((f64::from(w) - f64::from(min)) / f64::from(s)).round().clamp(0.0, f64::from(l)) as u8
        };
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        for _ in 0..200_000 {
            let (w, min, s) = (next() * 4.0 - 2.0, next() * -2.0, next() * 0.5);
            for l in [L3, L4] {
                assert_eq!(quantize_code(w, min, s, l), by_round(w, min, s, l), "w {w} min {min} s {s} l {l}");
            }
        }
        for k in 0..16 {
            let half = k as f32 + 0.5;
            for w in [half, f32::from_bits(half.to_bits() - 1), f32::from_bits(half.to_bits() + 1)] {
                for l in [L3, L4] {
                    assert_eq!(quantize_code(w, 0.0, 1.0, l), by_round(w, 0.0, 1.0, l), "w {w} l {l}");
                }
            }
        }
    }
}
