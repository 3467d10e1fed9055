//! The byte form of one tensor, as the artifact stores it.
//!
//! ```text
//! offset size  field
//!      0    4  magic "Q35T"
//!      4    1  layout version (1)
//!      5    1  kind: 0 q35, 1 int4, 2 int3, 3 f16, 4 f32
//!      6    2  group width G (32, 64, 128, 256), 0 = per channel   u16 LE
//!      8    8  rows                                                u64 LE
//!     16    8  cols                                                u64 LE
//!     24       payload
//! ```
//!
//! Coded payload: `range_scale` (rows x f16), `mins` (rows x groups x f16),
//! `range_codes` (rows x groups x u8), then `codes` (rows x row_bytes). The
//! f16 arrays come first so they stay 2-byte aligned whatever the code
//! length. f16/f32 payload: the values, row-major. All little endian. The
//! name is not stored: the artifact's index names its tensors.
//!
//! Reading accepts exactly one encoding of a valid tensor: the payload length
//! must match the header exactly, and the parts are then checked like
//! [`QuantizedTensor::from_parts`].

use crate::{Error, GroupSize, Layout, Payload, QuantKind, QuantizedTensor, Result};

/// First four bytes of a serialized tensor.
pub const MAGIC: [u8; 4] = *b"Q35T";
/// Version of the byte layout this crate reads and writes.
pub const LAYOUT_VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_BYTES: usize = 24;

fn kind_code(kind: QuantKind) -> u8 {
    match kind {
        QuantKind::Q35 => 0,
        QuantKind::Int4 => 1,
        QuantKind::Int3 => 2,
        QuantKind::F16 => 3,
        QuantKind::F32 => 4,
    }
}

fn kind_from_code(code: u8) -> Option<QuantKind> {
    QuantKind::ALL.into_iter().find(|&k| kind_code(k) == code)
}

fn group_code(group: GroupSize) -> u16 {
    group.fixed().map_or(0, |g| g as u16)
}

fn group_from_code(code: u16) -> Option<GroupSize> {
    GroupSize::ALL.into_iter().find(|&g| group_code(g) == code)
}

/// Payload bytes of a `rows x cols` tensor with this layout (saturating).
fn payload_len(layout: &Layout, rows: usize) -> usize {
    layout
        .row_bytes()
        .saturating_add(layout.param_bytes_per_row())
        .saturating_mul(rows)
}

impl QuantizedTensor {
    /// Length of [`QuantizedTensor::to_bytes`]' output.
    pub fn serialized_len(&self) -> usize {
        HEADER_BYTES + self.byte_len()
    }

    /// The tensor's byte form (see the module docs for the layout).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.serialized_len());
        out.extend_from_slice(&MAGIC);
        out.push(LAYOUT_VERSION);
        out.push(kind_code(self.kind()));
        out.extend_from_slice(&group_code(self.group()).to_le_bytes());
        out.extend_from_slice(&(self.rows() as u64).to_le_bytes());
        out.extend_from_slice(&(self.cols() as u64).to_le_bytes());
        match self.payload() {
            Payload::Coded {
                codes,
                range_scale,
                mins,
                range_codes,
            } => {
                range_scale
                    .iter()
                    .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
                mins.iter()
                    .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
                out.extend_from_slice(range_codes);
                out.extend_from_slice(codes);
            }
            Payload::F16(d) => d
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Payload::F32(d) => d
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        }
        debug_assert_eq!(out.len(), self.serialized_len());
        out
    }

    /// Reads a tensor written by [`QuantizedTensor::to_bytes`]; `name` is
    /// used for the tensor and in every error.
    pub fn from_bytes(name: impl Into<String>, bytes: &[u8]) -> Result<Self> {
        let name = name.into();
        let Some((header, payload)) = bytes.split_first_chunk::<HEADER_BYTES>() else {
            return Err(Error::Length {
                tensor: name,
                what: "header",
                expected: HEADER_BYTES,
                found: bytes.len(),
            });
        };
        let field = |range: std::ops::Range<usize>| &header[range];
        if field(0..4) != MAGIC {
            return Err(Error::BadMagic {
                tensor: name,
                found: field(0..4).to_vec(),
            });
        }
        if header[4] != LAYOUT_VERSION {
            return Err(Error::UnsupportedVersion {
                tensor: name,
                found: header[4],
            });
        }
        let unknown = |field, code| Error::UnknownCode {
            tensor: name.clone(),
            field,
            code,
        };
        let kind = kind_from_code(header[5]).ok_or_else(|| unknown("kind", header[5].into()))?;
        let group_bits = u16::from_le_bytes([header[6], header[7]]);
        let group =
            group_from_code(group_bits).ok_or_else(|| unknown("group", group_bits.into()))?;
        let dim = |at: usize| {
            let v = u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or_default());
            // A dimension beyond usize makes the payload impossibly long, and
            // the length check below reports that.
            usize::try_from(v).unwrap_or(usize::MAX)
        };
        let (rows, cols) = (dim(8), dim(16));
        if rows == 0 || cols == 0 {
            return Err(Error::EmptyShape {
                tensor: name,
                rows,
                cols,
            });
        }
        let layout = Layout::new(kind, group, cols);
        let expected = payload_len(&layout, rows);
        if payload.len() != expected {
            return Err(Error::Length {
                tensor: name,
                what: "payload",
                expected,
                found: payload.len(),
            });
        }
        let payload = match kind {
            QuantKind::F32 => Payload::F32(
                payload
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            QuantKind::F16 => Payload::F16(read_u16s(payload)),
            QuantKind::Q35 | QuantKind::Int4 | QuantKind::Int3 => {
                // Lengths were checked above, so these splits are in bounds.
                let params = rows * layout.groups();
                let (range_scale, rest) = payload.split_at(2 * rows);
                let (mins, rest) = rest.split_at(2 * params);
                let (range_codes, codes) = rest.split_at(params);
                Payload::Coded {
                    codes: codes.to_vec(),
                    range_scale: read_u16s(range_scale),
                    mins: read_u16s(mins),
                    range_codes: range_codes.to_vec(),
                }
            }
        };
        QuantizedTensor::from_parts(name, rows, cols, kind, group, payload)
    }
}

fn read_u16s(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}
