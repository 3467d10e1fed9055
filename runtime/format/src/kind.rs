//! The two knobs of the format: how wide a group is and which code scheme a
//! tensor uses. Both parse from and print as the names the CLIs use.

use std::fmt;
use std::str::FromStr;

use crate::{Error, L3, L4};

/// Group width along K (the `cols` axis). `Channel` is one group per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum GroupSize {
    G32,
    G64,
    #[default]
    G128,
    G256,
    Channel,
}

impl GroupSize {
    pub const ALL: [GroupSize; 5] = [
        GroupSize::G32,
        GroupSize::G64,
        GroupSize::G128,
        GroupSize::G256,
        GroupSize::Channel,
    ];

    /// The nominal group width for a row of `cols` weights (`cols` for
    /// `Channel`); the last group of a row may be shorter.
    pub fn width(self, cols: usize) -> usize {
        match self {
            GroupSize::G32 => 32,
            GroupSize::G64 => 64,
            GroupSize::G128 => 128,
            GroupSize::G256 => 256,
            GroupSize::Channel => cols,
        }
    }

    /// The fixed width, or `None` for `Channel`.
    pub fn fixed(self) -> Option<usize> {
        match self {
            GroupSize::Channel => None,
            g => Some(g.width(0)),
        }
    }
}

impl fmt::Display for GroupSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fixed() {
            Some(g) => write!(f, "{g}"),
            None => f.write_str("channel"),
        }
    }
}

impl FromStr for GroupSize {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "32" => GroupSize::G32,
            "64" => GroupSize::G64,
            "128" => GroupSize::G128,
            "256" => GroupSize::G256,
            "channel" => GroupSize::Channel,
            _ => return Err(Error::ParseGroupSize(s.to_owned())),
        })
    }
}

/// How a tensor's weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum QuantKind {
    /// 4-bit codes on even columns, 3-bit codes on odd columns.
    #[default]
    Q35,
    /// Every weight 4-bit, same grouping and parameters as q35.
    Int4,
    /// Every weight 3-bit, same grouping and parameters as q35.
    Int3,
    /// Pass-through, f16 (round to nearest even).
    F16,
    /// Pass-through, f32.
    F32,
}

impl QuantKind {
    pub const ALL: [QuantKind; 5] = [
        QuantKind::Q35,
        QuantKind::Int4,
        QuantKind::Int3,
        QuantKind::F16,
        QuantKind::F32,
    ];

    /// Whether weights are stored as codes plus group parameters.
    pub fn is_coded(self) -> bool {
        matches!(self, QuantKind::Q35 | QuantKind::Int4 | QuantKind::Int3)
    }

    /// The largest code for the weight at column `col` (parity decides for
    /// q35, since groups have even width or start at column 0). `None` for
    /// the pass-through kinds.
    pub fn levels(self, col: usize) -> Option<u8> {
        match self {
            QuantKind::Q35 if col % 2 == 0 => Some(L4),
            QuantKind::Q35 => Some(L3),
            QuantKind::Int4 => Some(L4),
            QuantKind::Int3 => Some(L3),
            QuantKind::F16 | QuantKind::F32 => None,
        }
    }

    /// How many 4-bit and 3-bit codes a group of `n` weights has, as
    /// `(n4, n3)`; `None` for the pass-through kinds.
    pub fn code_counts(self, n: usize) -> Option<(usize, usize)> {
        match self {
            QuantKind::Q35 => Some((n.div_ceil(2), n / 2)),
            QuantKind::Int4 => Some((n, 0)),
            QuantKind::Int3 => Some((0, n)),
            QuantKind::F16 | QuantKind::F32 => None,
        }
    }
}

impl fmt::Display for QuantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuantKind::Q35 => "q35",
            QuantKind::Int4 => "int4",
            QuantKind::Int3 => "int3",
            QuantKind::F16 => "f16",
            QuantKind::F32 => "f32",
        })
    }
}

impl FromStr for QuantKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "q35" => QuantKind::Q35,
            "int4" => QuantKind::Int4,
            "int3" => QuantKind::Int3,
            "f16" => QuantKind::F16,
            "f32" => QuantKind::F32,
            _ => return Err(Error::ParseQuantKind(s.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for g in GroupSize::ALL {
            assert_eq!(g.to_string().parse::<GroupSize>(), Ok(g));
        }
        for k in QuantKind::ALL {
            assert_eq!(k.to_string().parse::<QuantKind>(), Ok(k));
        }
        assert_eq!(GroupSize::G128.to_string(), "128");
        assert_eq!(GroupSize::Channel.to_string(), "channel");
        assert_eq!(QuantKind::Q35.to_string(), "q35");
    }

    #[test]
    fn bad_names_are_errors() {
        assert_eq!(
            "48".parse::<GroupSize>().unwrap_err().to_string(),
            "unknown group size `48` (expected 32, 64, 128, 256 or channel)"
        );
        assert_eq!(
            "Q35".parse::<QuantKind>().unwrap_err().to_string(),
            "unknown quantization kind `Q35` (expected q35, int4, int3, f16 or f32)"
        );
    }

    #[test]
    fn code_counts_follow_parity() {
        assert_eq!(QuantKind::Q35.code_counts(7), Some((4, 3)));
        assert_eq!(QuantKind::Int4.code_counts(7), Some((7, 0)));
        assert_eq!(QuantKind::Int3.code_counts(7), Some((0, 7)));
        assert_eq!(QuantKind::F16.code_counts(7), None);
        assert_eq!(QuantKind::Q35.levels(4), Some(L4));
        assert_eq!(QuantKind::Q35.levels(5), Some(L3));
    }
}
