//! `q35c --quant-importance FILE`: per-input-column importances (for
//! example the mean square of each input feature of a matrix on
//! calibration text) that make the quantizer minimize the
//! importance-weighted squared error of each group instead of using plain
//! min/max (`QuantizedTensor::quantize_with_importance`). The stored format
//! and its decode are unchanged; only the group `min` and range code differ.
//!
//! The file is a JSON object mapping weight names to arrays of `cols`
//! non-negative numbers. Matrices it does not name use `--quant-search`.

use anyhow::{bail, Context as _, Result};
use q35_format::{GroupSize, QuantKind, QuantSearch, QuantizedTensor};
use std::{collections::BTreeMap, path::Path};

/// Weight name to one importance per input column.
pub type Importance = BTreeMap<String, Vec<f32>>;

/// Reads and checks an importance file.
pub fn load(path: &Path) -> Result<Importance> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let raw: BTreeMap<String, Vec<f64>> = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{}: expected a JSON object of number arrays",
            path.display()
        )
    })?;
    let mut out = Importance::new();
    for (name, values) in raw {
        if let Some(bad) = values
            .iter()
            .find(|v| !(v.is_finite() && **v >= 0.0 && **v <= f64::from(f32::MAX)))
        {
            bail!(
                "{}: `{name}`: importance {bad} is not a finite non-negative f32",
                path.display()
            );
        }
        out.insert(name, values.into_iter().map(|v| v as f32).collect());
    }
    Ok(out)
}

/// Quantizes one matrix: importance-weighted when `importance` names it
/// (coded kinds only), else with `search`.
#[allow(clippy::too_many_arguments)]
pub fn quantize(
    name: &str,
    rows: usize,
    cols: usize,
    data: &[f32],
    kind: QuantKind,
    group: GroupSize,
    search: QuantSearch,
    importance: Option<&Importance>,
) -> Result<QuantizedTensor> {
    match importance
        .and_then(|i| i.get(name))
        .filter(|_| kind.is_coded())
    {
        Some(v) => {
            if v.len() != cols {
                bail!(
                    "importance of `{name}` has {} values, the matrix has {cols} columns",
                    v.len()
                );
            }
            Ok(QuantizedTensor::quantize_with_importance(
                name, rows, cols, data, kind, group, v,
            )?)
        }
        None => Ok(QuantizedTensor::quantize_with(
            name, rows, cols, data, kind, group, search,
        )?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_checks_values_and_quantize_checks_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imp.json");
        std::fs::write(&path, r#"{"w": [1.0, 0.0, 1000.0, 2.5]}"#).unwrap();
        let imp = load(&path).unwrap();
        assert_eq!(imp["w"], vec![1.0, 0.0, 1000.0, 2.5]);
        let data = [0.1, -0.2, 0.3, 0.05];
        let q = quantize(
            "w",
            1,
            4,
            &data,
            QuantKind::Q35,
            GroupSize::G32,
            QuantSearch::None,
            Some(&imp),
        )
        .unwrap();
        let expected = QuantizedTensor::quantize_with_importance(
            "w",
            1,
            4,
            &data,
            QuantKind::Q35,
            GroupSize::G32,
            &imp["w"],
        )
        .unwrap();
        assert_eq!(q, expected);
        // Unnamed matrices and pass-through kinds ignore the file.
        let plain = quantize(
            "v",
            1,
            4,
            &data,
            QuantKind::Q35,
            GroupSize::G32,
            QuantSearch::None,
            Some(&imp),
        )
        .unwrap();
        assert_eq!(
            plain,
            QuantizedTensor::quantize("v", 1, 4, &data, QuantKind::Q35, GroupSize::G32).unwrap()
        );
        assert!(quantize(
            "w",
            1,
            4,
            &data,
            QuantKind::F16,
            GroupSize::G32,
            QuantSearch::None,
            Some(&imp)
        )
        .is_ok());
        let err = quantize(
            "w",
            2,
            2,
            &data,
            QuantKind::Q35,
            GroupSize::G32,
            QuantSearch::None,
            Some(&imp),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("has 4 values, the matrix has 2 columns"),
            "{err}"
        );
        std::fs::write(&path, r#"{"w": [1.0, -1.0]}"#).unwrap();
        assert!(load(&path)
            .unwrap_err()
            .to_string()
            .contains("not a finite non-negative"));
    }
}
