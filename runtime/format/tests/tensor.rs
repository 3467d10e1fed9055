//! Worked examples, sizes and every error path of `QuantizedTensor`.

use q35_format::{
    block_bytes, Error, GroupSize, Layout, Payload, QuantKind, QuantizedTensor, HEADER_BYTES,
};

/// The worked example of docs/format.md: one row, one group of 8 weights.
const EXAMPLE: [f32; 8] = [-1.0, 0.9921875, -0.5, 0.0, 0.25, -0.75, 0.75, -0.25];

fn q35(name: &str, rows: usize, cols: usize, data: &[f32], group: GroupSize) -> QuantizedTensor {
    QuantizedTensor::quantize(name, rows, cols, data, QuantKind::Q35, group).unwrap()
}

/// Deterministic weights of a few magnitudes, without a random-number crate.
fn weights(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let u = x as f32 / u32::MAX as f32 - 0.5;
            u * if i % 97 == 0 { 0.5 } else { 0.05 }
        })
        .collect()
}

#[test]
fn worked_example() {
    // K = 8 is below every G, so G = 32 and per-channel give the same group.
    for group in [GroupSize::Channel, GroupSize::G32] {
        let t = q35("ex", 1, 8, &EXAMPLE, group);
        let Payload::Coded {
            codes,
            range_scale,
            mins,
            range_codes,
        } = t.payload()
        else {
            panic!("q35 is coded");
        };
        assert_eq!(codes, &[0x40, 0xd9, 0xd3, 0x03]);
        assert_eq!(range_scale, &[0x2000]); // f16 2^-7
        assert_eq!(mins, &[0xbc00]); // f16 -1.0
        assert_eq!(range_codes, &[255]);
        let p = t.group_params(0, 0).unwrap();
        assert_eq!((p.min, p.range, p.s4()), (-1.0, 1.9921875, 0.1328125));
        assert_eq!(p.s3().to_bits(), 0x3e91_b6db); // fl32(1.9921875 / 7), rounded down
        assert_eq!(
            t.dequantize(),
            [
                -1.0,
                0.9921874,
                -0.46875,
                0.1383928,
                0.1953125,
                -0.71540177,
                0.7265625,
                -0.14620543
            ]
        );
        assert_eq!(t.byte_len(), 4 + 2 + 2 + 1);
        assert_eq!(t.bits_per_weight(), 9.0);
    }
    let bytes = q35("ex", 1, 8, &EXAMPLE, GroupSize::G128).to_bytes();
    assert_eq!(
        bytes,
        [
            b'Q', b'3', b'5', b'T', 1, 0, 128, 0, // magic, version, q35, G = 128
            1, 0, 0, 0, 0, 0, 0, 0, // rows
            8, 0, 0, 0, 0, 0, 0, 0, // cols
            0x00, 0x20, // range_scale
            0x00, 0xbc, // mins
            255,  // range_codes
            0x40, 0xd9, 0xd3, 0x03, // codes
        ]
    );
}

#[test]
fn smollm2_bits_per_weight() {
    // 576 x 576, G = 128: 5 groups per row (4 full, one of 64).
    let (n, k) = (576, 576);
    let data = weights(n * k, 1);
    let t = q35(
        "model.layers.0.self_attn.q_proj.weight",
        n,
        k,
        &data,
        GroupSize::G128,
    );
    let ng = 5;
    let codes = n * (4 * block_bytes(128) + block_bytes(64));
    let spec = 8.0 * (codes + 2 * n + 2 * n * ng + n * ng) as f64 / (n * k) as f64;
    assert_eq!(t.byte_len(), codes + 2 * n + 3 * n * ng);
    assert_eq!(t.bits_per_weight(), spec);
    assert!((spec - (3.5 + (5.0 * 24.0 + 16.0) / 576.0)).abs() < 1e-12);
    assert!(t.bits_per_weight() <= 3.76);
    assert_eq!(t.bits_per_weight(), t.layout().bits_per_weight());
    let stats = t.stats(&data).unwrap();
    assert_eq!(stats.bpw, spec);
    assert!(stats.rmse > 0.0 && stats.rmse < stats.max_abs_err);
    assert_eq!(format!("{:.3}", stats.bpw), "3.736");
}

#[test]
fn comparison_kinds_bits_per_weight() {
    let data = weights(2 * 1536, 2);
    let bpw = |kind| {
        QuantizedTensor::quantize("w", 2, 1536, &data, kind, GroupSize::G128)
            .unwrap()
            .bits_per_weight()
    };
    let params = (12.0 * 24.0 + 16.0) / 1536.0;
    assert!((bpw(QuantKind::Q35) - (3.5 + params)).abs() < 1e-12);
    assert!((bpw(QuantKind::Int4) - (4.0 + params)).abs() < 1e-12);
    assert!((bpw(QuantKind::Int3) - (3.0 + params)).abs() < 1e-12);
    assert_eq!(bpw(QuantKind::F16), 16.0);
    assert_eq!(bpw(QuantKind::F32), 32.0);
}

#[test]
fn long_rows() {
    // K = 49152 (a large MLP row) and an odd K, grouped and per channel.
    for (k, group) in [
        (49152, GroupSize::G128),
        (49152, GroupSize::Channel),
        (49153, GroupSize::G256),
        (1537, GroupSize::Channel),
    ] {
        let data = weights(k, k as u32);
        let t = q35("long", 1, k, &data, group);
        let l = Layout::new(QuantKind::Q35, group, k);
        assert_eq!(t.row_codes(0).unwrap().len(), l.row_bytes());
        let back = QuantizedTensor::from_bytes("long", &t.to_bytes()).unwrap();
        assert_eq!(back, t);
        // Every weight is within half the coarser (3-bit) step of its group,
        // up to f32 rounding (weights here are below 0.3, so 1e-6 is ample).
        let half_step = (0..l.groups())
            .map(|g| f64::from(t.group_params(0, g).unwrap().s3()) / 2.0)
            .fold(0.0, f64::max);
        let max_err = t.stats(&data).unwrap().max_abs_err;
        assert!(max_err <= half_step + 1e-6, "{k} {group}: {max_err}");
    }
}

#[test]
fn constant_rows_of_f16_values_are_exact() {
    // A constant that f16 holds exactly needs no range: code 0, step 0.
    let data = [0.375f32; 40];
    for kind in [QuantKind::Q35, QuantKind::Int4, QuantKind::Int3] {
        let t = QuantizedTensor::quantize("c", 2, 20, &data, kind, GroupSize::G32).unwrap();
        assert_eq!(t.dequantize(), data);
        assert_eq!(t.group_params(1, 0).unwrap().range, 0.0);
    }
}

#[test]
fn constant_row_of_non_f16_value_is_within_bound() {
    // 0.1 is not an f16: the min rounds down, so the range is not zero and
    // reconstruction is within s/2, not exact (see docs/format.md).
    let data = [0.1f32; 16];
    let t = q35("c", 1, 16, &data, GroupSize::G32);
    let p = t.group_params(0, 0).unwrap();
    assert!(p.min < 0.1 && p.range > 0.0);
    assert!(t.stats(&data).unwrap().max_abs_err <= f64::from(p.s3()) / 2.0);
}

#[test]
fn shape_errors_name_the_tensor() {
    let err = QuantizedTensor::quantize("w", 2, 3, &[0.0; 5], QuantKind::Q35, GroupSize::G32)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `w`: shape 2x3 needs 6 values, got 5"
    );
    let err =
        QuantizedTensor::quantize("w", 0, 3, &[], QuantKind::F32, GroupSize::G32).unwrap_err();
    assert_eq!(err.to_string(), "tensor `w`: shape 0x3 is empty");
    let t = q35("w", 1, 8, &EXAMPLE, GroupSize::G32);
    assert!(matches!(
        t.stats(&EXAMPLE[..7]),
        Err(Error::DataLength { .. })
    ));
}

#[test]
fn non_finite_weights_are_errors() {
    for kind in QuantKind::ALL {
        let mut data = EXAMPLE.repeat(2);
        data[13] = f32::NAN;
        let err =
            QuantizedTensor::quantize("blk.0.w", 2, 8, &data, kind, GroupSize::G32).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tensor `blk.0.w`: non-finite weight NaN at row 1, column 5",
            "{kind}"
        );
    }
}

#[test]
fn out_of_f16_range_is_an_error() {
    let err =
        QuantizedTensor::quantize("w", 1, 2, &[-70000.0, 0.0], QuantKind::Q35, GroupSize::G32)
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `w`: row 0, group 0: min -70000 is below the f16 range"
    );
    let err = QuantizedTensor::quantize("w", 1, 2, &[0.0, 2.0e7], QuantKind::Int3, GroupSize::G32)
        .unwrap_err();
    assert!(matches!(err, Error::RangeOverflow { row: 0, .. }), "{err}");
    // Large but representable: 1e6 / 255 fits an f16 range scale.
    QuantizedTensor::quantize("w", 1, 2, &[0.0, 1.0e6], QuantKind::Q35, GroupSize::G32).unwrap();
    let err = QuantizedTensor::quantize("w", 1, 2, &[0.0, 1.0e6], QuantKind::F16, GroupSize::G32)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `w`: weight 1000000 at row 0, column 1 overflows f16"
    );
}

#[test]
fn reading_checks_header_and_lengths() {
    let t = q35("w", 3, 40, &weights(120, 3), GroupSize::G32);
    let bytes = t.to_bytes();
    let read = |b: &[u8]| QuantizedTensor::from_bytes("w", b).unwrap_err().to_string();

    assert_eq!(
        read(&bytes[..10]),
        "tensor `w`: header is 10 bytes, expected 24"
    );
    let payload = bytes.len() - HEADER_BYTES;
    assert_eq!(
        read(&bytes[..bytes.len() - 1]),
        format!(
            "tensor `w`: payload is {} bytes, expected {payload}",
            payload - 1
        )
    );
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(
        read(&long),
        format!(
            "tensor `w`: payload is {} bytes, expected {payload}",
            payload + 1
        )
    );

    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(read(&bad).starts_with("tensor `w`: bad magic"));
    let mut bad = bytes.clone();
    bad[4] = 2;
    assert_eq!(
        read(&bad),
        "tensor `w`: layout version 2, this reader knows 1"
    );
    let mut bad = bytes.clone();
    bad[5] = 9;
    assert_eq!(read(&bad), "tensor `w`: unknown kind code 9 in header");
    let mut bad = bytes.clone();
    bad[6] = 48;
    assert_eq!(read(&bad), "tensor `w`: unknown group code 48 in header");
    let mut bad = bytes.clone();
    bad[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(read(&bad).starts_with("tensor `w`: payload is"));
    let mut bad = bytes.clone();
    bad[8..16].copy_from_slice(&0u64.to_le_bytes());
    assert_eq!(read(&bad), "tensor `w`: shape 0x40 is empty");
    // Same payload length, different meaning: int4 rows are longer, so the
    // length check catches a kind swap too.
    let mut bad = bytes.clone();
    bad[5] = 1;
    assert!(read(&bad).starts_with("tensor `w`: payload is"));
}

#[test]
fn reading_checks_parameters_and_padding() {
    let t = q35("w", 3, 40, &weights(120, 4), GroupSize::G32);
    let bytes = t.to_bytes();
    let read = |b: &[u8]| QuantizedTensor::from_bytes("w", b).unwrap_err().to_string();
    // range_scale of row 1 := -1.0
    let mut bad = bytes.clone();
    bad[HEADER_BYTES + 2..HEADER_BYTES + 4].copy_from_slice(&0xbc00u16.to_le_bytes());
    assert_eq!(
        read(&bad),
        "tensor `w`: range scale at row 1, index 0 is invalid (f16 bits 0xbc00)"
    );
    // min of row 2, group 1 := NaN
    let at = HEADER_BYTES + 2 * 3 + 2 * (2 * 2 + 1);
    let mut bad = bytes.clone();
    bad[at..at + 2].copy_from_slice(&0x7e00u16.to_le_bytes());
    assert_eq!(
        read(&bad),
        "tensor `w`: min at row 2, index 1 is invalid (f16 bits 0x7e00)"
    );
    // 39 columns: the tail group of 7 has three 3-bit codes, so the top two
    // bits of its lo2 byte are padding.
    let t = q35("w", 1, 39, &weights(39, 5), GroupSize::G32);
    let mut bad = t.to_bytes();
    let codes = HEADER_BYTES + 2 + 2 * 2 + 2;
    bad[codes + block_bytes(32) + 2] |= 0xc0;
    assert_eq!(
        read(&bad),
        "tensor `w`: row 0, group 1 has nonzero padding bits"
    );
}

#[test]
fn from_parts_checks_kind_and_lengths() {
    let err = QuantizedTensor::from_parts(
        "w",
        1,
        2,
        QuantKind::Q35,
        GroupSize::G32,
        Payload::F32(vec![1.0, 2.0]),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "tensor `w`: kind q35 cannot hold f32 data");
    let err = QuantizedTensor::from_parts(
        "w",
        1,
        2,
        QuantKind::F16,
        GroupSize::G32,
        Payload::F16(vec![0x3c00]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `w`: f16 data is 2 bytes, expected 4"
    );
    let err = QuantizedTensor::from_parts(
        "w",
        1,
        2,
        QuantKind::F16,
        GroupSize::G32,
        Payload::F16(vec![0x3c00, 0x7c00]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `w`: non-finite weight inf at row 0, column 1"
    );
}
