//! `q35c --quant-importance FILE`: per-input-column importances (for
//! example the mean square of each input feature of a matrix on
//! calibration text) that make the quantizer minimize the
//! importance-weighted squared error of each group instead of using plain
//! min/max (`QuantizedTensor::quantize_with_importance`). The stored format
//! and its decode are unchanged; only the group `min` and range code differ.
//!
//! The file is a JSON object mapping weight names to arrays of `cols`
//! non-negative numbers. Matrices it does not name use `--quant-search`;
//! a name that is not one of the model's matrices, or the wrong number of
//! values, is refused ([`load_for`]), since it means the file was made for
//! another model.

use crate::graph::ModelGraph;
use anyhow::{anyhow, bail, Context as _, Result};
use q35_format::quote::{clip, quote};
use q35_format::{GroupSize, QuantKind, QuantSearch, QuantizedTensor};
use std::{collections::BTreeMap, path::Path};

/// Weight name to one importance per input column.
pub type Importance = BTreeMap<String, Vec<f32>>;

/// Reads and checks an importance file.
pub fn load(path: &Path) -> Result<Importance> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let raw: BTreeMap<String, Vec<f64>> = serde_json::from_slice(&text).map_err(|e| {
        anyhow!(
            "{}: expected a JSON object of number arrays: {}",
            path.display(),
            clip(&e.to_string())
        )
    })?;
    let mut out = Importance::new();
    for (name, values) in raw {
        if let Some(bad) = values
            .iter()
            .find(|v| !(v.is_finite() && **v >= 0.0 && **v <= f64::from(f32::MAX)))
        {
            bail!(
                "{}: {}: importance {bad} is not a finite non-negative f32",
                path.display(),
                quote(&name)
            );
        }
        out.insert(name, values.into_iter().map(|v| v as f32).collect());
    }
    Ok(out)
}

/// [`load`], then checks the file against the model: every name must be
/// one of `graph`'s matrices, with one importance per input column.
pub fn load_for(path: &Path, graph: &ModelGraph) -> Result<Importance> {
    let importance = load(path)?;
    let columns: BTreeMap<String, usize> = graph
        .weights()
        .into_iter()
        .filter(|w| w.is_matrix)
        .map(|w| (w.name, w.shape.get(1).copied().unwrap_or(0)))
        .collect();
    for (name, values) in &importance {
        let Some(&cols) = columns.get(name) else {
            bail!(
                "{}: {} is not a matrix of this model (it has {} matrices, such as {}); \
                 was the file made for another model?",
                path.display(),
                quote(name),
                columns.len(),
                columns
                    .keys()
                    .next()
                    .map_or("none".to_string(), |n| quote(n))
            );
        };
        if values.len() != cols {
            bail!(
                "{}: {} has {} importances, but the matrix has {cols} input columns",
                path.display(),
                quote(name),
                values.len()
            );
        }
    }
    Ok(importance)
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
                    "importance of {} has {} values, the matrix has {cols} columns",
                    quote(name),
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

    #[test]
    fn load_for_checks_names_and_columns_against_the_model() {
        use crate::front::testmodel::TinySpec;
        let graph = ModelGraph::llama(&TinySpec::default().config()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imp.json");
        let q = "model.layers.0.self_attn.q_proj.weight";
        std::fs::write(&path, format!(r#"{{"{q}": {:?}}}"#, vec![1.0; 64])).unwrap();
        assert_eq!(load_for(&path, &graph).unwrap()[q].len(), 64);

        let error = |json: String| {
            std::fs::write(&path, json).unwrap();
            load_for(&path, &graph).unwrap_err().to_string()
        };
        let e = error(format!(r#"{{"{q}": [1.0, 2.0]}}"#));
        assert!(
            e.ends_with(&format!(
                "`{q}` has 2 importances, but the matrix has 64 input columns"
            )),
            "{e}"
        );
        let e = error(r#"{"model.layers.9.mlp.up_proj.weight": [1.0]}"#.into());
        assert!(
            e.ends_with("`model.layers.9.mlp.up_proj.weight` is not a matrix of this model (it has 16 matrices, such as `lm_head.weight`); was the file made for another model?"),
            "{e}"
        );
        // A norm vector is a weight but no matrix.
        let e = error(format!(r#"{{"model.norm.weight": {:?}}}"#, vec![1.0; 64]));
        assert!(
            e.contains("`model.norm.weight` is not a matrix of this model"),
            "{e}"
        );
        let long = "w".repeat(1 << 20);
        let e = error(format!(r#"{{"{long}": [1.0]}}"#));
        assert!(
            e.len() < 400 && e.contains("…` (1048576 bytes) is not a matrix"),
            "{e}"
        );
        let e = error(format!(r#"{{"{q}": "{long}"}}"#));
        assert!(
            e.len() < 400
                && e.contains("expected a JSON object of number arrays: invalid type: string"),
            "{e}"
        );
        let e = error(format!(r#"{{"{q}": [1.0, 1e999]}}"#));
        assert!(e.contains("expected a JSON object of number arrays"), "{e}");
        let e = error(format!(r#"{{"{q}": [-1.0]}}"#));
        assert!(
            e.contains("importance -1 is not a finite non-negative f32"),
            "{e}"
        );
    }
}
