//! `!q35.packed<rows, cols, group, quant, layout>` as a Rust value.
//!
//! IRDL types have no C API accessors for their parameters, so the type is
//! read back from its printed form. That is reading a type, not rewriting
//! IR: passes still build and replace ops through melior.

use crate::{Error, Result};
use melior::{ir::Type, Context};
use std::{fmt, str::FromStr};


/// How the weights of a packed matrix are quantized: the format crate's
/// kinds, named as the CLIs and the type's `quant` parameter name them.
pub use q35_format::QuantKind as Quant;

/// The only byte layout so far (docs/format.md).
pub const LAYOUT_PLANAR: &str = "planar";

/// Whether `group` is a group width the format supports for rows of `cols`:
/// a fixed width, or the whole row (per-channel).
fn supported_group(group: u64, cols: u64) -> bool {
    group == cols
        || q35_format::GroupSize::ALL
            .iter()
            .filter_map(|g| g.fixed())
            .any(|g| g as u64 == group)
}

/// A packed weight matrix type: `rows` output channels (N) by `cols`
/// reduction elements (K), quantized per (row, group along K).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PackedType {
    pub rows: u64,
    pub cols: u64,
    pub group: u64,
    pub quant: Quant,
    pub layout: String,
}

impl PackedType {
    pub fn new(rows: u64, cols: u64, group: u64, quant: Quant) -> Self {
        Self {
            rows,
            cols,
            group,
            quant,
            layout: LAYOUT_PLANAR.to_string(),
        }
    }

    /// Reads a type; `None` if it is not a `!q35.packed`.
    pub fn from_type(r#type: Type) -> Option<Result<Self>> {
        let text = r#type.to_string();
        text.starts_with("!q35.packed<").then(|| text.parse())
    }

    /// Builds the MLIR type (the q35 dialect must be loaded in `context`).
    pub fn to_type<'c>(&self, context: &'c Context) -> Result<Type<'c>> {
        let text = self.to_string();
        Type::parse(context, &text).ok_or_else(|| Error::Type {
            text,
            reason: "MLIR rejected it (is the q35 dialect loaded?)".into(),
        })
    }

    /// The checks IRDL cannot express; `None` when the type is sound.
    pub fn problem(&self) -> Option<String> {
        if self.rows == 0 || self.cols == 0 {
            return Some(format!("shape {}x{} has a zero dimension", self.rows, self.cols));
        }
        if !supported_group(self.group, self.cols) {
            return Some(format!(
                "group size {} is not one of 32, 64, 128, 256 or the row length {} (per-channel)",
                self.group, self.cols
            ));
        }
        if self.layout != LAYOUT_PLANAR {
            return Some(format!("unknown layout `{}`", self.layout));
        }
        None
    }
}

impl fmt::Display for PackedType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "!q35.packed<{} : i64, {} : i64, {} : i64, \"{}\", \"{}\">",
            self.rows, self.cols, self.group, self.quant, self.layout
        )
    }
}

impl FromStr for PackedType {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |reason: &str| Error::Type {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let body = text
            .strip_prefix("!q35.packed<")
            .and_then(|rest| rest.strip_suffix('>'))
            .ok_or_else(|| bad("expected !q35.packed<rows, cols, group, quant, layout>"))?;
        let params: Vec<&str> = body.split(',').map(str::trim).collect();
        let [rows, cols, group, quant, layout] = params[..] else {
            return Err(bad("expected 5 parameters"));
        };
        let int = |param: &str, what: &str| -> Result<u64> {
            let value = param.split(':').next().unwrap_or("").trim();
            value
                .parse::<u64>()
                .map_err(|_| bad(&format!("{what} `{param}` is not a non-negative integer")))
        };
        let string = |param: &str| param.trim_matches('"').to_string();
        Ok(Self {
            rows: int(rows, "rows")?,
            cols: int(cols, "cols")?,
            group: int(group, "group")?,
            quant: string(quant).parse().map_err(|e: q35_format::Error| bad(&e.to_string()))?,
            layout: string(layout),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let t = PackedType::new(1536, 576, 128, Quant::Q35);
        assert_eq!(
            t.to_string(),
            r#"!q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">"#
        );
        assert_eq!(t.to_string().parse::<PackedType>().unwrap(), t);
    }

    #[test]
    fn problems_are_named() {
        assert_eq!(PackedType::new(8, 576, 128, Quant::Q35).problem(), None);
        assert_eq!(PackedType::new(8, 576, 576, Quant::Int4).problem(), None);
        assert!(PackedType::new(8, 576, 100, Quant::Q35)
            .problem()
            .unwrap()
            .contains("group size 100"));
        assert!(PackedType::new(0, 576, 128, Quant::Q35)
            .problem()
            .unwrap()
            .contains("zero dimension"));
    }

    #[test]
    fn malformed_text_is_an_error() {
        let err = "!q35.packed<1, 2>".parse::<PackedType>().unwrap_err();
        assert!(err.to_string().contains("expected 5 parameters"), "{err}");
    }
}
