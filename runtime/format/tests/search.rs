//! The MSE parameter search (`QuantSearch::Mse`): same stored fields and
//! decode as the plain scheme, never a larger squared error per group.

use proptest::prelude::*;
use q35_format::{
    dequant, quantize_code, unpack_planes, GroupSize, Payload, QuantKind, QuantSearch,
    QuantizedTensor,
};

/// Squared error of every (row, group) of `t` against `data`.
fn group_sse(t: &QuantizedTensor, data: &[f32]) -> Vec<f64> {
    let deq = t.dequantize();
    let layout = *t.layout();
    let mut out = Vec::new();
    for r in 0..t.rows() {
        for g in 0..layout.groups() {
            let base = r * t.cols();
            out.push(
                layout
                    .group_cols(g)
                    .map(|c| (f64::from(data[base + c]) - f64::from(deq[base + c])).powi(2))
                    .sum(),
            );
        }
    }
    out
}

fn coded() -> impl Strategy<Value = QuantKind> {
    prop::sample::select(vec![QuantKind::Q35, QuantKind::Int4, QuantKind::Int3])
}

/// Gaussian-ish weights (sum of uniforms) with occasional outliers.
fn weights(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec((-1.0f32..1.0, -1.0f32..1.0, -1.0f32..1.0, 0u8..50), n).prop_map(|v| {
        v.into_iter()
            .map(|(a, b, c, tag)| {
                let x = (a + b + c) * 0.02;
                if tag == 0 {
                    x * 8.0
                } else {
                    x
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn never_worse_than_plain_per_group(
        (rows, cols, kind, group, data) in (1..=3usize, prop_oneof![1..=40usize, Just(130), Just(576)], coded(),
            prop::sample::select(GroupSize::ALL.to_vec()))
            .prop_flat_map(|(r, c, k, g)| (Just(r), Just(c), Just(k), Just(g), weights(r * c)))
    ) {
        let plain = QuantizedTensor::quantize_with("w", rows, cols, &data, kind, group, QuantSearch::None).unwrap();
        let mse = QuantizedTensor::quantize_with("w", rows, cols, &data, kind, group, QuantSearch::Mse).unwrap();
        // `quantize` is the plain reference scheme.
        prop_assert_eq!(&plain, &QuantizedTensor::quantize("w", rows, cols, &data, kind, group).unwrap());
        for (g, (a, b)) in group_sse(&plain, &data).into_iter().zip(group_sse(&mse, &data)).enumerate() {
            prop_assert!(b <= a, "group {}: mse {} > plain {}", g, b, a);
        }
        // Same byte layout and bpw; the bytes round-trip and decode the same.
        prop_assert_eq!(mse.byte_len(), plain.byte_len());
        let back = QuantizedTensor::from_bytes("w", &mse.to_bytes()).unwrap();
        prop_assert_eq!(&back, &mse);
        prop_assert_eq!(back.dequantize(), mse.dequantize());
        // Range scales are the plain ones; codes are the nearest codes for
        // the stored parameters (so in range by construction).
        let (Payload::Coded { range_scale: a, .. }, Payload::Coded { range_scale: b, .. }) =
            (plain.payload(), mse.payload()) else { unreachable!() };
        prop_assert_eq!(a, b);
        let layout = *mse.layout();
        for r in 0..rows {
            let codes = mse.row_codes(r).unwrap();
            for g in 0..layout.groups() {
                let span = layout.group_cols(g);
                let (n4, n3) = kind.code_counts(span.len()).unwrap();
                let (mut q4, mut q3) = (vec![0; n4], vec![0; n3]);
                unpack_planes(&codes[layout.block_range(g)], &mut q4, &mut q3);
                let p = mse.group_params(r, g).unwrap();
                for (i, c) in span.enumerate() {
                    let l = kind.levels(i).unwrap();
                    let q = match kind {
                        QuantKind::Q35 if i % 2 == 0 => q4[i / 2],
                        QuantKind::Q35 => q3[i / 2],
                        QuantKind::Int4 => q4[i],
                        _ => q3[i],
                    };
                    prop_assert!(q <= l);
                    prop_assert_eq!(q, quantize_code(data[r * cols + c], p.min, p.step(l), l));
                    prop_assert_eq!(mse.dequantize()[r * cols + c], dequant(p.min, p.step(l), q));
                }
            }
        }
    }
}

#[test]
fn search_lowers_error_on_gaussian_weights() {
    // A deterministic bell-shaped row set: clipping the tails must pay off
    // in total (by at least 10% in squared error for q35 at G = 128).
    let (rows, cols) = (16, 512);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
    };
    let data: Vec<f32> = (0..rows * cols)
        .map(|_| (0..4).map(|_| uniform()).sum::<f32>() * 0.03)
        .collect();
    let total = |s| {
        let t = QuantizedTensor::quantize_with(
            "w",
            rows,
            cols,
            &data,
            QuantKind::Q35,
            GroupSize::G128,
            s,
        )
        .unwrap();
        group_sse(&t, &data).into_iter().sum::<f64>()
    };
    let (plain, mse) = (total(QuantSearch::None), total(QuantSearch::Mse));
    assert!(mse < 0.9 * plain, "plain {plain}, mse {mse}");
}

#[test]
fn constant_and_exact_groups_stay_exact() {
    // An f16-exact constant row, and a row exactly on an int4 grid whose
    // range (255 * 2^-8) and step (17 * 2^-8) are exact.
    let mut data = vec![0.5f32; 64];
    data.extend((0..64).map(|i| (i % 16) as f32 * 17.0 / 256.0));
    for search in QuantSearch::ALL {
        let t = QuantizedTensor::quantize_with(
            "w",
            2,
            64,
            &data,
            QuantKind::Int4,
            GroupSize::G32,
            search,
        )
        .unwrap();
        assert_eq!(t.dequantize(), data, "{search}");
    }
}

/// Importance-weighted squared error of every (row, group).
fn weighted_group_sse(t: &QuantizedTensor, data: &[f32], imp: &[f32]) -> Vec<f64> {
    let deq = t.dequantize();
    let layout = *t.layout();
    let mut out = Vec::new();
    for r in 0..t.rows() {
        for g in 0..layout.groups() {
            let base = r * t.cols();
            out.push(
                layout
                    .group_cols(g)
                    .map(|c| {
                        f64::from(imp[c])
                            * (f64::from(data[base + c]) - f64::from(deq[base + c])).powi(2)
                    })
                    .sum(),
            );
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn importance_search_never_worse_than_plain(
        (rows, cols, kind, group, data, imp) in (1..=3usize, prop_oneof![1..=40usize, Just(130), Just(576)], coded(),
            prop::sample::select(GroupSize::ALL.to_vec()))
            .prop_flat_map(|(r, c, k, g)| (Just(r), Just(c), Just(k), Just(g), weights(r * c),
                prop::collection::vec(prop_oneof![Just(0.0f32), 0.0f32..1.0, 10.0f32..1000.0], c)))
    ) {
        let plain = QuantizedTensor::quantize("w", rows, cols, &data, kind, group).unwrap();
        let awq = QuantizedTensor::quantize_with_importance("w", rows, cols, &data, kind, group, &imp).unwrap();
        for (a, b) in weighted_group_sse(&plain, &data, &imp).into_iter().zip(weighted_group_sse(&awq, &data, &imp)) {
            prop_assert!(b <= a, "weighted: searched {} > plain {}", b, a);
        }
        prop_assert_eq!(awq.byte_len(), plain.byte_len());
        prop_assert_eq!(&QuantizedTensor::from_bytes("w", &awq.to_bytes()).unwrap(), &awq);
        // Unit importance is the unweighted search.
        let ones = vec![1.0; cols];
        prop_assert_eq!(
            QuantizedTensor::quantize_with_importance("w", rows, cols, &data, kind, group, &ones).unwrap(),
            QuantizedTensor::quantize_with("w", rows, cols, &data, kind, group, QuantSearch::Mse).unwrap()
        );
    }
}

#[test]
fn important_columns_get_smaller_errors() {
    // One heavily weighted column per group: the weighted search puts its
    // weights closer to the grid than the unweighted search does.
    let (rows, cols) = (32, 128);
    let data: Vec<f32> = (0..rows * cols)
        .map(|i| (((i * 7919) % 1000) as f32 / 1000.0 - 0.5) * 0.1)
        .collect();
    let mut imp = vec![1.0f32; cols];
    imp[5] = 1000.0;
    let col_err = |t: &QuantizedTensor| -> f64 {
        let d = t.dequantize();
        (0..rows)
            .map(|r| (f64::from(data[r * cols + 5]) - f64::from(d[r * cols + 5])).powi(2))
            .sum()
    };
    let mse = QuantizedTensor::quantize_with(
        "w",
        rows,
        cols,
        &data,
        QuantKind::Q35,
        GroupSize::G128,
        QuantSearch::Mse,
    )
    .unwrap();
    let awq = QuantizedTensor::quantize_with_importance(
        "w",
        rows,
        cols,
        &data,
        QuantKind::Q35,
        GroupSize::G128,
        &imp,
    )
    .unwrap();
    assert!(
        col_err(&awq) < 0.5 * col_err(&mse),
        "{} vs {}",
        col_err(&awq),
        col_err(&mse)
    );
}

#[test]
#[should_panic(expected = "one importance per column")]
fn importance_length_is_checked() {
    let _ = QuantizedTensor::quantize_with_importance(
        "w",
        1,
        4,
        &[0.0; 4],
        QuantKind::Q35,
        GroupSize::G32,
        &[1.0; 3],
    );
}
