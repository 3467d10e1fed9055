//! Property tests over random shapes (odd K, tails, K < G), every group size
//! and every kind.

use half::f16;
use proptest::prelude::*;
use q35_format::{
    block_bytes, pack_group, pack_planes, planes_bytes, quantize_code, unpack_group, unpack_planes,
    Error, GroupSize, Layout, Payload, QuantKind, QuantizedTensor, L3, L4,
};

#[derive(Clone, Debug)]
struct Case {
    rows: usize,
    cols: usize,
    kind: QuantKind,
    group: GroupSize,
    data: Vec<f32>,
}

fn cols() -> impl Strategy<Value = usize> {
    prop_oneof![1..=70usize, 71..=700usize, Just(576), Just(1536)]
}

/// Weights `scale * (offset + u)`, `u` in [-1, 1], with exact zeros, x16
/// outliers and, sometimes, one constant group. Magnitudes stay below 2^15,
/// so every kind (f16 included) can represent them.
fn case() -> impl Strategy<Value = Case> {
    (
        1..=3usize,
        cols(),
        prop::sample::select(QuantKind::ALL.to_vec()),
        prop::sample::select(GroupSize::ALL.to_vec()),
        -20i32..=8,
        -4.0f32..4.0,
    )
        .prop_flat_map(|(rows, cols, kind, group, exp, offset)| {
            let n = rows * cols;
            (
                Just((rows, cols, kind, group, 2f32.powi(exp), offset)),
                prop::collection::vec((-1.0f32..=1.0, 0u8..40), n),
                prop::option::of((0..rows, any::<prop::sample::Index>(), any::<bool>())),
            )
        })
        .prop_map(
            |((rows, cols, kind, group, scale, offset), draws, constant)| {
                let mut data: Vec<f32> = draws
                    .into_iter()
                    .map(|(u, tag)| match tag {
                        0 => 0.0,
                        1 => scale * (offset + u) * 16.0,
                        _ => scale * (offset + u),
                    })
                    .collect();
                if let Some((r, g, f16_exact)) = constant {
                    let layout = Layout::new(QuantKind::Q35, group, cols);
                    let span = layout.group_cols(g.index(layout.groups()));
                    let mut c = scale * offset;
                    if f16_exact {
                        c = f16::from_f32(c).to_f32();
                    }
                    data[r * cols..][span].fill(c);
                }
                Case {
                    rows,
                    cols,
                    kind,
                    group,
                    data,
                }
            },
        )
}

/// The f32 spacing at `|x|` (2^-149 at 0).
fn ulp(x: f32) -> f64 {
    let x = x.abs();
    f64::from(f32::from_bits(x.to_bits() + 1)) - f64::from(x)
}

/// The spec's bits per weight, computed independently of `Layout`:
/// `8 * (codes + 2N + 2N*ng + N*ng) / (N*K)`.
fn spec_bpw(kind: QuantKind, group: GroupSize, rows: usize, cols: usize) -> f64 {
    let g = group.width(cols);
    let ng = cols.div_ceil(g);
    let block = |n: usize| match kind {
        QuantKind::Q35 => block_bytes(n),
        QuantKind::Int4 => n.div_ceil(2),
        QuantKind::Int3 => n.div_ceil(4) + n.div_ceil(8),
        QuantKind::F16 => 2 * n,
        QuantKind::F32 => 4 * n,
    };
    let codes = rows * ((ng - 1) * block(g) + block(cols - (ng - 1) * g));
    let params = if kind.is_coded() {
        2 * rows + 3 * rows * ng
    } else {
        0
    };
    8.0 * (codes + params) as f64 / (rows * cols) as f64
}

proptest! {
    #[test]
    fn pack_unpack_round_trip(
        n in 0usize..600,
        kind in prop::sample::select(vec![QuantKind::Q35, QuantKind::Int4, QuantKind::Int3]),
        seed in prop::collection::vec(any::<u8>(), 600),
    ) {
        let (n4, n3) = kind.code_counts(n).unwrap();
        let q4: Vec<u8> = seed[..n4].iter().map(|b| b & L4).collect();
        let q3: Vec<u8> = seed[n4..n4 + n3].iter().map(|b| b & L3).collect();
        let len = planes_bytes(n4, n3);
        if kind == QuantKind::Q35 {
            prop_assert_eq!(len, block_bytes(n));
        }
        // Packing over stale 0xff and over 0x00 gives the same bytes (so
        // padding is zero), and nothing past the block is touched.
        let mut packed = [vec![0xffu8; len + 3], vec![0u8; len + 3]];
        for buf in &mut packed {
            if kind == QuantKind::Q35 {
                pack_group(&q4, &q3, buf);
            } else {
                pack_planes(&q4, &q3, buf);
            }
        }
        prop_assert_eq!(&packed[0][..len], &packed[1][..len]);
        prop_assert_eq!(&packed[0][len..], &[0xff; 3]);
        prop_assert_eq!(&packed[1][len..], &[0; 3]);

        let (mut u4, mut u3) = (vec![0u8; n4], vec![0u8; n3]);
        if kind == QuantKind::Q35 {
            unpack_group(&packed[0], n, &mut u4, &mut u3);
        } else {
            unpack_planes(&packed[0], &mut u4, &mut u3);
        }
        prop_assert_eq!(u4, q4);
        prop_assert_eq!(u3, q3);
    }

    #[test]
    fn quantize_dequantize_serialize(case in case()) {
        let Case { rows, cols, kind, group, ref data } = case;
        let t = QuantizedTensor::quantize("prop.w", rows, cols, data, kind, group).unwrap();
        let layout = *t.layout();

        // Sizes.
        prop_assert_eq!(t.bits_per_weight(), spec_bpw(kind, group, rows, cols));
        prop_assert!((t.bits_per_weight() - layout.bits_per_weight()).abs() < 1e-9);
        if kind.is_coded() {
            let covered: Vec<usize> = (0..layout.groups()).flat_map(|g| layout.group_cols(g)).collect();
            prop_assert_eq!(covered, (0..cols).collect::<Vec<_>>());
            prop_assert_eq!(t.row_codes(rows - 1).unwrap().len(), layout.row_bytes());
        }

        // Serialization round trip, byte for byte.
        let bytes = t.to_bytes();
        prop_assert_eq!(bytes.len(), t.serialized_len());
        let back = QuantizedTensor::from_bytes("prop.w", &bytes).unwrap();
        prop_assert_eq!(&back, &t);
        prop_assert_eq!(back.to_bytes(), bytes);

        let deq = t.dequantize();
        match kind {
            QuantKind::F32 => prop_assert_eq!(&deq, data),
            QuantKind::F16 => {
                for (&w, &d) in data.iter().zip(&deq) {
                    prop_assert_eq!(d, f16::from_f32(w).to_f32());
                }
            }
            _ => check_coded(&t, data, &deq)?,
        }
    }

    #[test]
    fn non_finite_is_an_error(
        case in case(),
        at in any::<prop::sample::Index>(),
        bad in prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY]),
    ) {
        let Case { rows, cols, kind, group, mut data } = case;
        let i = at.index(data.len());
        data[i] = bad;
        let err = QuantizedTensor::quantize("prop.w", rows, cols, &data, kind, group).unwrap_err();
        prop_assert!(err.to_string().starts_with("tensor `prop.w`: non-finite weight"));
        let Error::NonFinite { row, col, .. } = err else {
            return Err(TestCaseError::fail(format!("wrong error {err}")));
        };
        prop_assert_eq!((row, col), (i / cols, i % cols));
    }
}

/// Checks a coded tensor element by element: the stored code is the spec's
/// code for the stored parameters, the reconstruction error is within
/// `s/2 + eps`, and constant groups of f16 values come back exactly.
fn check_coded(t: &QuantizedTensor, data: &[f32], deq: &[f32]) -> Result<(), TestCaseError> {
    let (kind, layout) = (t.kind(), t.layout());
    for r in 0..t.rows() {
        let row = &data[r * t.cols()..(r + 1) * t.cols()];
        for g in 0..layout.groups() {
            let cols = layout.group_cols(g);
            let p = t.group_params(r, g).unwrap();

            // Stored codes are the spec's codes. Unpacked here with the q35
            // names where they apply, as a kernel would.
            let block = &t.row_codes(r).unwrap()[layout.block_range(g)];
            let (n4, n3) = kind.code_counts(cols.len()).unwrap();
            let (mut q4, mut q3) = (vec![0; n4], vec![0; n3]);
            if kind == QuantKind::Q35 {
                unpack_group(block, cols.len(), &mut q4, &mut q3);
            } else {
                unpack_planes(block, &mut q4, &mut q3);
            }
            for (i, c) in cols.clone().enumerate() {
                let l = kind.levels(c).unwrap();
                let q = match kind {
                    QuantKind::Q35 if i % 2 == 0 => q4[i / 2],
                    QuantKind::Q35 => q3[i / 2],
                    QuantKind::Int4 => q4[i],
                    _ => q3[i],
                };
                prop_assert_eq!(q, quantize_code(row[c], p.min, p.step(l), l));
            }

            // The min is rounded down and the range up, so every weight lies
            // in [min, min + range]. With X = max(|min|, |min + range|):
            //  - below the grid top T = min + L*s, the code is the nearest grid
            //    point, so |w - (min + q*s)| <= s/2 exactly (the f64 quotient
            //    can pick the other code only at near-ties, for ~2^-48 * s);
            //  - fl32(q*s) errs by at most ulp(range) and fl32(min + q*s) by at
            //    most ulp(X); X >= range/2, so together <= 3 ulp(X);
            //  - above T (s = fl32(range/L) may be rounded down), w is at most
            //    range - L*s <= ulp(range) past the top point, far below s/2.
            // So eps = 4 ulp(X) bounds the f32 rounding with room to spare.
            let x = p.min.abs().max((p.min + p.range).abs());
            let eps = 4.0 * ulp(x);
            let constant_f16 = row[cols.clone()].iter().all(|&w| w == row[cols.start])
                && f16::from_f32(row[cols.start]).to_f32() == row[cols.start];
            for c in cols.clone() {
                let (w, d) = (row[c], deq[r * t.cols() + c]);
                let s = p.step(kind.levels(c).unwrap());
                let err = (f64::from(w) - f64::from(d)).abs();
                prop_assert!(
                    err <= f64::from(s) / 2.0 + eps,
                    "row {} col {}: w {} w' {} err {} s {} eps {}",
                    r,
                    c,
                    w,
                    d,
                    err,
                    s,
                    eps
                );
                if constant_f16 {
                    prop_assert_eq!(d, w, "constant group, row {} col {}", r, c);
                }
            }
        }
    }
    // The payload arrays have the spec's shapes.
    let Payload::Coded {
        range_scale,
        mins,
        range_codes,
        ..
    } = t.payload()
    else {
        return Err(TestCaseError::fail("coded kind without coded payload"));
    };
    prop_assert_eq!(range_scale.len(), t.rows());
    prop_assert_eq!(mins.len(), t.rows() * layout.groups());
    prop_assert_eq!(range_codes.len(), t.rows() * layout.groups());
    Ok(())
}
