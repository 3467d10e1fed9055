//! A quantized tensor: quantizing from f32, the reference dequantization,
//! size and error reports, and validation of tensors built from parts.

use std::fmt;

use half::f16;

use crate::gptq::Compensation;
use crate::math::{range_code_for, range_scale_for};
use crate::search::search_group;
use crate::{
    dequant, f16_round_down, pack::padding_is_zero, pack_planes, quantize_code, unpack_planes,
    Error, GroupParams, GroupSize, Layout, QuantKind, QuantSearch, Result, L3, L4,
};

/// The stored data of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// q35, int4 and int3: packed codes plus group parameters, all row-major.
    Coded {
        /// `rows` rows of [`Layout::row_bytes`] bytes each.
        codes: Vec<u8>,
        /// One f16 (bits) per row.
        range_scale: Vec<u16>,
        /// One f16 (bits) per (row, group).
        mins: Vec<u16>,
        /// One u8 per (row, group).
        range_codes: Vec<u8>,
    },
    /// f16 bits, row-major.
    F16(Vec<u16>),
    /// f32 values, row-major.
    F32(Vec<f32>),
}

impl Payload {
    fn describe(&self) -> &'static str {
        match self {
            Payload::Coded { .. } => "coded",
            Payload::F16(_) => "f16",
            Payload::F32(_) => "f32",
        }
    }
}

/// A weight matrix `[rows, cols]` in one of the [`QuantKind`]s.
///
/// Always valid: lengths agree with the shape, parameters are finite and
/// padding bits are zero, whether it came from [`QuantizedTensor::quantize`],
/// [`QuantizedTensor::from_parts`] or [`QuantizedTensor::from_bytes`].
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedTensor {
    name: String,
    rows: usize,
    cols: usize,
    layout: Layout,
    payload: Payload,
}

/// How far a dequantized tensor is from its source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantStats {
    pub rmse: f64,
    pub max_abs_err: f64,
    /// True bits per weight, parameters included.
    pub bpw: f64,
}

impl fmt::Display for QuantStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rmse {:.3e}, max |err| {:.3e}, {:.3} bits/weight",
            self.rmse, self.max_abs_err, self.bpw
        )
    }
}

/// One row's disjoint share of the output arrays; rows never touch each
/// other's, which is what lets a caller quantize rows in parallel.
struct RowMut<'a> {
    codes: &'a mut [u8],
    range_scale: &'a mut u16,
    mins: &'a mut [u16],
    range_codes: &'a mut [u8],
}

impl QuantizedTensor {
    /// Quantizes row-major `data` of shape `[rows, cols]`.
    ///
    /// Errors on an empty shape, a length that does not match, a non-finite
    /// weight, or parameters that do not fit f16 (a group min below -65504,
    /// or a group span above 65504 * 255; for `f16`, a weight beyond ±65504).
    ///
    /// This is the plain reference scheme ([`QuantSearch::None`]) that
    /// `docs/format.md` specifies; [`QuantizedTensor::quantize_with`] can
    /// search for parameters with a smaller error instead.
    pub fn quantize(
        name: impl Into<String>,
        rows: usize,
        cols: usize,
        data: &[f32],
        kind: QuantKind,
        group: GroupSize,
    ) -> Result<Self> {
        Self::quantize_with(name, rows, cols, data, kind, group, QuantSearch::None)
    }

    /// Like [`QuantizedTensor::quantize`], choosing group parameters with
    /// `search`. The stored fields and their decode are the same for every
    /// search; with [`QuantSearch::Mse`] a group may clip weights (so the
    /// `s/2` bound of the plain scheme does not hold for them), but its
    /// squared error is never larger than the plain scheme's.
    pub fn quantize_with(
        name: impl Into<String>,
        rows: usize,
        cols: usize,
        data: &[f32],
        kind: QuantKind,
        group: GroupSize,
        search: QuantSearch,
    ) -> Result<Self> {
        Self::quantize_inner(name.into(), rows, cols, data, kind, group, search, None, None)
    }

    /// Like [`QuantizedTensor::quantize_with`] with [`QuantSearch::Mse`],
    /// minimizing the squared error weighted per input column by
    /// `importance` (`cols` non-negative finite values, for example the mean
    /// square of each input feature on calibration text). Each group's
    /// weighted error is never larger than the plain scheme's.
    ///
    /// # Panics
    /// If `importance.len() != cols` or a value is negative or not finite.
    pub fn quantize_with_importance(
        name: impl Into<String>,
        rows: usize,
        cols: usize,
        data: &[f32],
        kind: QuantKind,
        group: GroupSize,
        importance: &[f32],
    ) -> Result<Self> {
        assert_eq!(importance.len(), cols, "one importance per column");
        assert!(
            importance.iter().all(|c| c.is_finite() && *c >= 0.0),
            "importances must be finite and non-negative"
        );
        Self::quantize_inner(
            name.into(),
            rows,
            cols,
            data,
            kind,
            group,
            QuantSearch::Mse,
            Some(importance),
            None,
        )
    }

    /// Like [`QuantizedTensor::quantize_with_importance`] (or plain min/max
    /// parameters without `importance`), then the codes chosen by GPTQ's
    /// error-compensating rounding against the input statistics in
    /// `compensation` ([`crate::gptq`]) instead of rounding each weight to
    /// its nearest level. Same stored format and decode.
    ///
    /// # Panics
    /// As [`QuantizedTensor::quantize_with_importance`], and if
    /// `compensation` is for another number of columns.
    #[allow(clippy::too_many_arguments)]
    pub fn quantize_with_compensation(
        name: impl Into<String>,
        rows: usize,
        cols: usize,
        data: &[f32],
        kind: QuantKind,
        group: GroupSize,
        importance: Option<&[f32]>,
        compensation: &Compensation,
    ) -> Result<Self> {
        assert_eq!(compensation.cols(), cols, "a compensation for {cols} columns");
        if let Some(importance) = importance {
            assert_eq!(importance.len(), cols, "one importance per column");
        }
        let search = if importance.is_some() { QuantSearch::Mse } else { QuantSearch::None };
        Self::quantize_inner(name.into(), rows, cols, data, kind, group, search, importance, Some(compensation))
    }

    #[allow(clippy::too_many_arguments)]
    fn quantize_inner(
        name: String,
        rows: usize,
        cols: usize,
        data: &[f32],
        kind: QuantKind,
        group: GroupSize,
        search: QuantSearch,
        importance: Option<&[f32]>,
        compensation: Option<&Compensation>,
    ) -> Result<Self> {
        check_shape(&name, rows, cols, data.len())?;
        let layout = Layout::new(kind, group, cols);
        let non_finite = |i: usize, value: f32| Error::NonFinite {
            tensor: name.clone(),
            row: i / cols,
            col: i % cols,
            value,
        };
        let payload = match kind {
            QuantKind::F32 => {
                if let Some((i, &w)) = data.iter().enumerate().find(|(_, w)| !w.is_finite()) {
                    return Err(non_finite(i, w));
                }
                Payload::F32(data.to_vec())
            }
            QuantKind::F16 => {
                let mut out = Vec::with_capacity(data.len());
                for (i, &w) in data.iter().enumerate() {
                    if !w.is_finite() {
                        return Err(non_finite(i, w));
                    }
                    let h = f16::from_f32(w);
                    if !h.is_finite() {
                        return Err(Error::F16Overflow {
                            tensor: name.clone(),
                            row: i / cols,
                            col: i % cols,
                            value: w,
                        });
                    }
                    out.push(h.to_bits());
                }
                Payload::F16(out)
            }
            QuantKind::Q35 | QuantKind::Int4 | QuantKind::Int3 => {
                let (rb, ng) = (layout.row_bytes(), layout.groups());
                let mut codes = vec![0; rows * rb];
                let mut range_scale = vec![0; rows];
                let mut mins = vec![0; rows * ng];
                let mut range_codes = vec![0; rows * ng];
                // Each row reads its own input and writes its own chunks, so
                // the rows are split into contiguous shares, one per core
                // (a searched quantization of a large matrix takes seconds).
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                let share = rows.div_ceil(threads).max(64);
                let results: Vec<Result<()>> = std::thread::scope(|scope| {
                    let handles: Vec<_> = codes
                        .chunks_mut(share * rb)
                        .zip(range_scale.chunks_mut(share))
                        .zip(mins.chunks_mut(share * ng))
                        .zip(range_codes.chunks_mut(share * ng))
                        .enumerate()
                        .map(|(t, (((codes, range_scale), mins), range_codes))| {
                            let (name, layout) = (&name, &layout);
                            scope.spawn(move || -> Result<()> {
                                let mut outs: Vec<RowMut<'_>> = codes
                                    .chunks_mut(rb)
                                    .zip(range_scale.iter_mut())
                                    .zip(mins.chunks_mut(ng))
                                    .zip(range_codes.chunks_mut(ng))
                                    .map(|(((codes, range_scale), mins), range_codes)| RowMut {
                                        codes,
                                        range_scale,
                                        mins,
                                        range_codes,
                                    })
                                    .collect();
                                for (b, block) in outs.chunks_mut(ROW_BLOCK).enumerate() {
                                    let first = t * share + b * ROW_BLOCK;
                                    quantize_rows(name, first, layout, data, search, importance, compensation, block)?;
                                }
                                Ok(())
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().expect("a quantizing thread panicked")).collect()
                });
                // The first error in row order, as the sequential loop gave.
                results.into_iter().collect::<Result<Vec<()>>>()?;
                Payload::Coded {
                    codes,
                    range_scale,
                    mins,
                    range_codes,
                }
            }
        };
        Ok(QuantizedTensor {
            name,
            rows,
            cols,
            layout,
            payload,
        })
    }

    /// Builds a tensor from stored parts, checking everything
    /// [`QuantizedTensor`] promises: the payload matches `kind`, every array
    /// has exactly the length the shape implies, range scales are finite and
    /// non-negative, mins and f16/f32 data finite, padding bits zero.
    pub fn from_parts(
        name: impl Into<String>,
        rows: usize,
        cols: usize,
        kind: QuantKind,
        group: GroupSize,
        payload: Payload,
    ) -> Result<Self> {
        let name = name.into();
        if rows == 0 || cols == 0 {
            return Err(Error::EmptyShape {
                tensor: name,
                rows,
                cols,
            });
        }
        let layout = Layout::new(kind, group, cols);
        let values = rows.saturating_mul(cols);
        let check_len = |what, expected: usize, found: usize| {
            if expected == found {
                Ok(())
            } else {
                Err(Error::Length {
                    tensor: name.clone(),
                    what,
                    expected,
                    found,
                })
            }
        };
        match (kind, &payload) {
            (QuantKind::F32, Payload::F32(d)) => {
                check_len(
                    "f32 data",
                    values.saturating_mul(4),
                    d.len().saturating_mul(4),
                )?;
                if let Some((i, &w)) = d.iter().enumerate().find(|(_, w)| !w.is_finite()) {
                    return Err(Error::NonFinite {
                        tensor: name,
                        row: i / cols,
                        col: i % cols,
                        value: w,
                    });
                }
            }
            (QuantKind::F16, Payload::F16(d)) => {
                check_len(
                    "f16 data",
                    values.saturating_mul(2),
                    d.len().saturating_mul(2),
                )?;
                if let Some((i, &b)) = d.iter().enumerate().find(|(_, &b)| !f16_finite(b)) {
                    return Err(Error::NonFinite {
                        tensor: name,
                        row: i / cols,
                        col: i % cols,
                        value: f16::from_bits(b).to_f32(),
                    });
                }
            }
            (
                QuantKind::Q35 | QuantKind::Int4 | QuantKind::Int3,
                Payload::Coded {
                    codes,
                    range_scale,
                    mins,
                    range_codes,
                },
            ) => {
                let ng = layout.groups();
                let params = rows.saturating_mul(ng);
                check_len(
                    "codes",
                    rows.saturating_mul(layout.row_bytes()),
                    codes.len(),
                )?;
                check_len(
                    "range scales",
                    rows.saturating_mul(2),
                    range_scale.len() * 2,
                )?;
                check_len("mins", params.saturating_mul(2), mins.len() * 2)?;
                check_len("range codes", params, range_codes.len())?;
                let invalid = |what, i: usize, bits| Error::InvalidParam {
                    tensor: name.clone(),
                    what,
                    row: i / ng,
                    index: i % ng,
                    bits,
                };
                // Sign bit clear and below +inf: finite and non-negative.
                if let Some((r, &b)) = range_scale.iter().enumerate().find(|(_, &b)| b >= 0x7c00) {
                    return Err(invalid("range scale", r * ng, b));
                }
                if let Some((i, &b)) = mins.iter().enumerate().find(|(_, &b)| !f16_finite(b)) {
                    return Err(invalid("min", i, b));
                }
                for (r, row) in codes.chunks_exact(layout.row_bytes()).enumerate() {
                    for g in 0..ng {
                        let n = layout.group_cols(g).len();
                        let (n4, n3) = kind.code_counts(n).unwrap_or_default();
                        if !padding_is_zero(&row[layout.block_range(g)], n4, n3) {
                            return Err(Error::Padding {
                                tensor: name,
                                row: r,
                                group: g,
                            });
                        }
                    }
                }
            }
            (kind, payload) => {
                return Err(Error::PayloadKind {
                    tensor: name,
                    kind,
                    payload: payload.describe(),
                })
            }
        }
        Ok(QuantizedTensor {
            name,
            rows,
            cols,
            layout,
            payload,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn kind(&self) -> QuantKind {
        self.layout.kind()
    }

    pub fn group(&self) -> GroupSize {
        self.layout.group()
    }

    /// Row layout: groups, block offsets, row bytes.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    pub fn into_payload(self) -> Payload {
        self.payload
    }

    /// Row `r`'s packed codes (`None` for f16/f32).
    ///
    /// # Panics
    /// If `r >= rows`.
    pub fn row_codes(&self, r: usize) -> Option<&[u8]> {
        assert!(r < self.rows, "row {r} out of {}", self.rows);
        match &self.payload {
            Payload::Coded { codes, .. } => {
                let rb = self.layout.row_bytes();
                Some(&codes[r * rb..(r + 1) * rb])
            }
            _ => None,
        }
    }

    /// Parameters of row `r`, group `g` (`None` for f16/f32).
    ///
    /// # Panics
    /// If `r >= rows` or `g >= groups`.
    pub fn group_params(&self, r: usize, g: usize) -> Option<GroupParams> {
        let ng = self.layout.groups();
        assert!(
            r < self.rows && g < ng,
            "row {r}, group {g} out of {}x{ng}",
            self.rows
        );
        match &self.payload {
            Payload::Coded {
                range_scale,
                mins,
                range_codes,
                ..
            } => {
                let i = r * ng + g;
                Some(GroupParams::from_bits(
                    mins[i],
                    range_scale[r],
                    range_codes[i],
                ))
            }
            _ => None,
        }
    }

    /// The reference dequantization of row `r` into `out`.
    ///
    /// # Panics
    /// If `r >= rows` or `out.len() != cols`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows, "row {r} out of {}", self.rows);
        assert_eq!(out.len(), self.cols, "output row length");
        let span = r * self.cols..(r + 1) * self.cols;
        match &self.payload {
            Payload::F32(d) => out.copy_from_slice(&d[span]),
            Payload::F16(d) => {
                for (o, &b) in out.iter_mut().zip(&d[span]) {
                    *o = f16::from_bits(b).to_f32();
                }
            }
            Payload::Coded {
                codes,
                range_scale,
                mins,
                range_codes,
            } => {
                let (kind, layout) = (self.kind(), &self.layout);
                let (rb, ng) = (layout.row_bytes(), layout.groups());
                let row = &codes[r * rb..(r + 1) * rb];
                let (mut q4, mut q3) = (Vec::new(), Vec::new());
                for g in 0..ng {
                    let cols = layout.group_cols(g);
                    let (n4, n3) = kind.code_counts(cols.len()).unwrap_or_default();
                    q4.resize(n4, 0);
                    q3.resize(n3, 0);
                    unpack_planes(&row[layout.block_range(g)], &mut q4, &mut q3);
                    let i = r * ng + g;
                    let p = GroupParams::from_bits(mins[i], range_scale[r], range_codes[i]);
                    let (s4, s3) = (p.s4(), p.s3());
                    for (i, o) in out[cols].iter_mut().enumerate() {
                        *o = match kind {
                            QuantKind::Q35 if i % 2 == 0 => dequant(p.min, s4, q4[i / 2]),
                            QuantKind::Q35 => dequant(p.min, s3, q3[i / 2]),
                            QuantKind::Int4 => dequant(p.min, s4, q4[i]),
                            _ => dequant(p.min, s3, q3[i]),
                        };
                    }
                }
            }
        }
    }

    /// The reference dequantization, row-major `rows * cols` values.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// Bytes of stored data: codes and every parameter array (no header).
    pub fn byte_len(&self) -> usize {
        match &self.payload {
            Payload::Coded {
                codes,
                range_scale,
                mins,
                range_codes,
            } => codes.len() + 2 * range_scale.len() + 2 * mins.len() + range_codes.len(),
            Payload::F16(d) => 2 * d.len(),
            Payload::F32(d) => 4 * d.len(),
        }
    }

    /// True bits per weight: `8 * byte_len / (rows * cols)`.
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.byte_len() as f64 / (self.rows * self.cols) as f64
    }

    /// Error of the reference dequantization against `source` (the data it
    /// was quantized from).
    pub fn stats(&self, source: &[f32]) -> Result<QuantStats> {
        check_shape(&self.name, self.rows, self.cols, source.len())?;
        let (mut sq, mut max) = (0.0f64, 0.0f64);
        for (&w, d) in source.iter().zip(self.dequantize()) {
            let e = (f64::from(w) - f64::from(d)).abs();
            sq += e * e;
            max = max.max(e);
        }
        Ok(QuantStats {
            rmse: (sq / source.len() as f64).sqrt(),
            max_abs_err: max,
            bpw: self.bits_per_weight(),
        })
    }
}

fn check_shape(name: &str, rows: usize, cols: usize, found: usize) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(Error::EmptyShape {
            tensor: name.to_owned(),
            rows,
            cols,
        });
    }
    // Saturating: an overflowing shape can never match a real slice.
    let expected = rows.saturating_mul(cols);
    if found != expected {
        return Err(Error::DataLength {
            tensor: name.to_owned(),
            rows,
            cols,
            expected,
            found,
        });
    }
    Ok(())
}

fn f16_finite(bits: u16) -> bool {
    bits & 0x7c00 != 0x7c00
}

/// Rows quantized together: GPTQ's compensation reads its factor once per
/// block of this many rows ([`Compensation::round_rows`]).
const ROW_BLOCK: usize = 16;

/// Quantizes rows `first..first + out.len()` of `data`, each as
/// [`row_params`] and then codes: nearest, or GPTQ's rounding of the
/// block together.
#[allow(clippy::too_many_arguments)]
fn quantize_rows(
    name: &str,
    first: usize,
    layout: &Layout,
    data: &[f32],
    search: QuantSearch,
    importance: Option<&[f32]>,
    compensation: Option<&Compensation>,
    out: &mut [RowMut<'_>],
) -> Result<()> {
    let cols = layout.cols();
    let rows: Vec<&[f32]> = (first..first + out.len()).map(|r| &data[r * cols..(r + 1) * cols]).collect();
    let params = rows
        .iter()
        .zip(out.iter_mut())
        .enumerate()
        .map(|(i, (row, out))| row_params(name, first + i, layout, row, search, importance, out))
        .collect::<Result<Vec<_>>>()?;
    let mut codes = vec![vec![0u8; cols]; rows.len()];
    match compensation {
        None => {
            for ((row, params), codes) in rows.iter().zip(&params).zip(&mut codes) {
                for (g, p) in params.iter().enumerate() {
                    for col in layout.group_cols(g) {
                        let (l, s) = level(layout, p, g, col);
                        codes[col] = quantize_code(row[col], p.min, s, l);
                    }
                }
            }
        }
        Some(compensation) => {
            let width = layout.group_width();
            compensation.round_rows(&rows, |b, col, value| {
                let g = col / width;
                let p = &params[b][g];
                let (l, s) = level(layout, p, g, col);
                let code = quantize_code(value as f32, p.min, s, l);
                codes[b][col] = code;
                f64::from(dequant(p.min, s, code))
            });
        }
    }
    let (mut q4, mut q3) = (Vec::new(), Vec::new());
    for ((params, codes), out) in params.iter().zip(&codes).zip(out.iter_mut()) {
        for (g, p) in params.iter().enumerate() {
            q4.clear();
            q3.clear();
            for col in layout.group_cols(g) {
                if level(layout, p, g, col).0 == L4 {
                    q4.push(codes[col]);
                } else {
                    q3.push(codes[col]);
                }
            }
            pack_planes(&q4, &q3, &mut out.codes[layout.block_range(g)]);
        }
    }
    Ok(())
}

/// A column's largest code and step: q35 gives even columns of a group
/// 4-bit codes, odd ones 3-bit.
fn level(layout: &Layout, p: &GroupParams, g: usize, col: usize) -> (u8, f32) {
    let four = match layout.kind() {
        QuantKind::Q35 => (col - layout.group_cols(g).start) % 2 == 0,
        QuantKind::Int4 => true,
        _ => false,
    };
    if four {
        (L4, p.s4())
    } else {
        (L3, p.s3())
    }
}

/// One row's group parameters, written to `out` and returned as decoded:
/// per-group f16 min (rounded down), one f16 range scale for the row
/// (rounded up), per-group range codes (rounded up, or searched).
#[allow(clippy::too_many_arguments)]
fn row_params(
    name: &str,
    r: usize,
    layout: &Layout,
    row: &[f32],
    search: QuantSearch,
    importance: Option<&[f32]>,
    out: &mut RowMut<'_>,
) -> Result<Vec<GroupParams>> {
    let mut extremes = Vec::with_capacity(layout.groups());
    for g in 0..layout.groups() {
        let cols = layout.group_cols(g);
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for (col, &w) in cols.clone().zip(&row[cols]) {
            if !w.is_finite() {
                return Err(Error::NonFinite {
                    tensor: name.to_owned(),
                    row: r,
                    col,
                    value: w,
                });
            }
            lo = lo.min(w);
            hi = hi.max(w);
        }
        let min = f16_round_down(lo);
        if min.is_infinite() {
            return Err(Error::MinOverflow {
                tensor: name.to_owned(),
                row: r,
                group: g,
                min: lo,
            });
        }
        extremes.push((min, hi));
    }
    let rs = range_scale_for(&extremes).ok_or_else(|| Error::RangeOverflow {
        tensor: name.to_owned(),
        row: r,
        span: extremes
            .iter()
            .map(|&(min, max)| f64::from(max) - f64::from(min))
            .fold(0.0, f64::max),
    })?;
    *out.range_scale = rs.to_bits();

    let kind = layout.kind();
    let mut params = Vec::with_capacity(extremes.len());
    for (g, &(min, max)) in extremes.iter().enumerate() {
        let c = range_code_for(min, max, rs);
        let (min, c) = match search {
            QuantSearch::None => (min, c),
            QuantSearch::Mse => {
                let cols = layout.group_cols(g);
                search_group(
                    &row[cols.clone()],
                    importance.map(|v| &v[cols]),
                    kind,
                    rs,
                    (min, c),
                )
            }
        };
        out.mins[g] = min.to_bits();
        out.range_codes[g] = c;
        // Codes are chosen against the parameters exactly as stored.
        params.push(GroupParams::from_bits(min.to_bits(), rs.to_bits(), c));
    }
    Ok(params)
}
