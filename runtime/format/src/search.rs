//! How the quantizer chooses a group's stored parameters.
//!
//! The decode is fixed (`w' = min + q·s`, `s = range/L`, see `docs/format.md`),
//! but which `min` and `range` a group stores is the quantizer's choice.
//!
//! - [`QuantSearch::None`], the *plain* scheme: `min` is the group's smallest
//!   weight rounded down to f16 and `range` covers its largest weight, so no
//!   weight is clipped and every weight is within `s/2` of its grid point.
//!   This is the reference [`QuantizedTensor::quantize`] and what the proofs
//!   describe.
//! - [`QuantSearch::Mse`]: for each group, search `(min, range)` for the
//!   smallest squared error of the reconstruction. Clipping a few outliers
//!   buys a finer step for all the other weights, which matters most for the
//!   3-bit half of q35 (`s3 = range/7`). The search seeds several clipped
//!   ranges, refines each by alternating nearest codes with a least-squares
//!   fit of `(min, range)` to those codes (which never increases the
//!   continuous error), then rounds the best to the stored f16 min and u8
//!   range code (trying the neighbouring roundings) and keeps the plain
//!   parameters whenever they are at least as good. So a group's squared
//!   error, measured exactly as kernels decode, never exceeds the plain one.
//!
//! With per-column importances (`QuantizedTensor::quantize_with_importance`,
//! e.g. the mean square of each input feature on calibration text) the same
//! search minimizes the importance-weighted squared error instead, and the
//! weighted error never exceeds the plain one. On SmolLM2 that weighting is
//! what matters: the unweighted search lowers RMSE but not perplexity
//! (`docs/quality.md`).
//!
//! The row's range scale is the plain one in both modes (so the plain
//! parameters stay a candidate for every group); only the per-group `min`
//! and range code differ.
//!
//! [`QuantizedTensor::quantize`]: crate::QuantizedTensor::quantize

use std::fmt;
use std::str::FromStr;

use half::f16;

use crate::{dequant, quantize_code, Error, GroupParams, QuantKind};

/// How group parameters are chosen (the decode is the same for both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum QuantSearch {
    /// Plain min/max: no weight clipped (the reference scheme, and the
    /// default: on SmolLM2 it gives the lower perplexity, see
    /// `docs/quality.md`).
    #[default]
    None,
    /// Per-group squared-error search over clipped ranges.
    Mse,
}

impl QuantSearch {
    pub const ALL: [QuantSearch; 2] = [QuantSearch::None, QuantSearch::Mse];
}

impl fmt::Display for QuantSearch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuantSearch::None => "none",
            QuantSearch::Mse => "mse",
        })
    }
}

impl FromStr for QuantSearch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "none" => QuantSearch::None,
            "mse" => QuantSearch::Mse,
            _ => return Err(Error::ParseQuantSearch(s.to_owned())),
        })
    }
}

/// Clip ratios tried as seeds: the kept fraction of the group's span.
const SHRINK: [f64; 4] = [1.0, 0.9, 0.8, 0.7];
/// Least-squares refinements per seed.
const REFINE: usize = 3;

/// Squared error of `w` reconstructed from the stored parameters, exactly
/// as the reference dequantization computes it.
///
/// With `imp`, element `i`'s squared error is multiplied by `imp[i]`.
pub(crate) fn group_sse(
    w: &[f32],
    imp: Option<&[f32]>,
    kind: QuantKind,
    min: f16,
    range_scale: f16,
    code: u8,
) -> f64 {
    let p = GroupParams::from_bits(min.to_bits(), range_scale.to_bits(), code);
    // Each parity's level and step once, not per element (the same f32
    // division every time).
    let level = [kind.levels(0).unwrap_or(0), kind.levels(1).unwrap_or(0)];
    let step = level.map(|l| p.step(l));
    let mut sse = 0.0;
    for (i, &x) in w.iter().enumerate() {
        let c = imp.map_or(1.0, |v| f64::from(v[i]));
        let (l, s) = (level[i % 2], step[i % 2]);
        let d = dequant(p.min, s, quantize_code(x, p.min, s, l));
        let e = f64::from(x) - f64::from(d);
        sse += c * e * e;
    }
    sse
}

/// One pass at continuous parameters `(m, r)`: nearest codes, their squared
/// error, and the least-squares `(min, range)` for those codes (`None` when
/// the codes are all at the same grid fraction). `levels` gives the largest
/// code of even and odd local elements.
fn pass(
    w: &[f32],
    imp: Option<&[f32]>,
    levels: (f64, f64),
    m: f64,
    r: f64,
) -> (f64, Option<(f64, f64)>) {
    // Weighted sums over elements of e^2, t, t^2, x, t*x and 1, where
    // t = q/L is the element's grid fraction and e its error.
    #[inline(always)]
    fn one(x: f32, c: f64, m: f64, r: f64, l: f64, a: &mut [f64; 6]) {
        let x = f64::from(x);
        // Clamp first: then `floor(v + 0.5)` is round half away from zero,
        // and, `v + 0.5` being positive, the floor is a truncation: an
        // integer conversion, where `f64::floor` is a libm call on the
        // baseline x86-64 target (13 % of an importance-weighted compile).
        let q = ((x - m) * (l / r)).clamp(0.0, l);
        let t = ((q + 0.5) as i64) as f64 * (1.0 / l);
        let e = x - (m + r * t);
        a[0] += c * e * e;
        a[1] += c * t;
        a[2] += c * t * t;
        a[3] += c * x;
        a[4] += c * t * x;
        a[5] += c;
    }
    let (l0, l1) = levels;
    let (mut even, mut odd) = ([0.0; 6], [0.0; 6]);
    match imp {
        None => {
            let pairs = w.chunks_exact(2);
            if let [x] = pairs.remainder() {
                one(*x, 1.0, m, r, l0, &mut even);
            }
            for p in pairs {
                one(p[0], 1.0, m, r, l0, &mut even);
                one(p[1], 1.0, m, r, l1, &mut odd);
            }
        }
        Some(imp) => {
            for (i, (&x, &c)) in w.iter().zip(imp).enumerate() {
                let (l, a) = if i % 2 == 0 {
                    (l0, &mut even)
                } else {
                    (l1, &mut odd)
                };
                one(x, f64::from(c), m, r, l, a);
            }
        }
    }
    let [sse, st, stt, sw, stw, n]: [f64; 6] = std::array::from_fn(|i| even[i] + odd[i]);
    let det = n * stt - st * st;
    if det <= 0.0 {
        return (sse, None);
    }
    let range = (n * stw - st * sw) / det;
    let min = (sw - range * st) / n;
    (
        sse,
        (range > 0.0 && range.is_finite() && min.is_finite()).then_some((min, range)),
    )
}

/// The stored `(min, range_code)` with the smallest exact squared error for
/// the group `w` of a `kind` tensor, given the row's `range_scale` and the
/// plain parameters `plain` (which are returned unless something is
/// strictly better).
///
/// With `imp` (one non-negative weight per element) the error is the
/// importance-weighted squared error.
pub(crate) fn search_group(
    w: &[f32],
    imp: Option<&[f32]>,
    kind: QuantKind,
    range_scale: f16,
    plain: (f16, u8),
) -> (f16, u8) {
    let plain_sse = group_sse(w, imp, kind, plain.0, range_scale, plain.1);
    if plain_sse == 0.0 || range_scale.to_bits() == 0 || w.len() < 2 {
        return plain;
    }
    let level = |i| f64::from(kind.levels(i).unwrap_or(1).max(1));
    let levels = (level(0), level(1));
    let (lo, hi) = w
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(f64::from(x)), hi.max(f64::from(x)))
        });
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 {
        return plain;
    }

    // Continuous search.
    let mut best = (f64::INFINITY, lo, span);
    for (k, &shrink) in SHRINK.iter().enumerate() {
        let r0 = span * shrink;
        // Clip both ends, or only the top, or only the bottom.
        let anchors: &[f64] = if k == 0 { &[0.0] } else { &[0.0, 0.5, 1.0] };
        for &a in anchors {
            let (mut m, mut r) = (lo + a * (span - r0), r0);
            for _ in 0..=REFINE {
                let (sse, next) = pass(w, imp, levels, m, r);
                if sse < best.0 {
                    best = (sse, m, r);
                }
                match next {
                    Some((m2, r2)) if (m2, r2) != (m, r) => (m, r) = (m2, r2),
                    _ => break,
                }
            }
        }
    }

    // Round to stored parameters: f16 min (nearest and its neighbours) and
    // range code (floor and ceil), each candidate scored exactly.
    let (_, m, r) = best;
    let mut out = (plain_sse, plain);
    let rs = f64::from(range_scale.to_f32());
    let c = (r / rs).clamp(0.0, 255.0);
    let codes = [c.floor() as u8, c.ceil() as u8];
    let mn = f16::from_f64(m);
    if !mn.is_finite() {
        return plain;
    }
    let mins = [mn, f16_step(mn, -1), f16_step(mn, 1)];
    for &min in mins.iter().filter(|h| h.is_finite()) {
        for &code in &codes {
            let sse = group_sse(w, imp, kind, min, range_scale, code);
            if sse < out.0 {
                out = (sse, (min, code));
            }
        }
    }
    out.1
}

/// The f16 one step above (`dir > 0`) or below `h` in value.
fn f16_step(h: f16, dir: i32) -> f16 {
    let v = h.to_f32();
    let b = h.to_bits();
    let up = dir > 0;
    let bits = if v == 0.0 {
        if up {
            0x0001
        } else {
            0x8001
        }
    } else if (v > 0.0) == up {
        b + 1
    } else {
        b - 1
    };
    f16::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in QuantSearch::ALL {
            assert_eq!(s.to_string().parse::<QuantSearch>(), Ok(s));
        }
        assert_eq!(QuantSearch::default(), QuantSearch::None);
        assert!("MSE".parse::<QuantSearch>().is_err());
    }

    #[test]
    fn f16_steps() {
        let one = f16::from_f32(1.0);
        assert!(f16_step(one, 1) > one && f16_step(one, -1) < one);
        let neg = f16::from_f32(-1.0);
        assert!(f16_step(neg, 1) > neg && f16_step(neg, -1) < neg);
        assert!(f16_step(f16::ZERO, 1) > f16::ZERO && f16_step(f16::ZERO, -1) < f16::ZERO);
    }

    #[test]
    fn an_outlier_costs_less_than_plain() {
        // 63 weights spread over [-0.1, 0.1] and one at 1.0: the plain range
        // wastes nearly all levels on the outlier. (Clipping it costs more
        // than it saves; the search moves the grid instead.)
        let mut w: Vec<f32> = (0..63).map(|i| (i as f32 - 31.0) / 310.0).collect();
        w.push(1.0);
        let min = crate::f16_round_down(-0.1);
        let rs = crate::math::range_scale_for(&[(min, 1.0)]).unwrap();
        let plain = (min, crate::math::range_code_for(min, 1.0, rs));
        let found = search_group(&w, None, QuantKind::Q35, rs, plain);
        let (a, b) = (
            group_sse(&w, None, QuantKind::Q35, plain.0, rs, plain.1),
            group_sse(&w, None, QuantKind::Q35, found.0, rs, found.1),
        );
        assert!(b < 0.9 * a, "plain {a}, searched {b}");
    }
}
