//! Per-matrix precision: which kind and group each weight matrix is stored
//! with. Every matrix carries its own kind and group in the IR
//! (`!q35.packed<N, K, G, kind, planar>`), the kernels are generated per
//! type, and the artifact records each weight's kind, so matrices may
//! differ; the policy says how.
//!
//! `q35c --quant-policy FILE` reads rules, one per line, first match wins;
//! matrices no rule matches take `--quant` and `--group`:
//!
//! ```text
//! # pattern                         kind  group
//! model.embed_tokens.weight          int4  128
//! *.self_attn.v_proj.weight          q35   64
//! ```
//!
//! A pattern is a weight name in which `*` stands for any run of
//! characters. The kinds are `q35`, `int4`, `int3`, `f16` and `f32`; the
//! groups 32, 64, 128, 256 or `channel`.
//!
//! Without a file, the default q35 g128 build (or any `--bpw-budget`)
//! chooses every matrix's format by sensitivity within a bit budget
//! ([`allocate`], built on `q35_format::allocate`).

use crate::{front::Model, graph::ModelGraph, importance::Importance};
use anyhow::{bail, Context as _, Result};
use q35_format::{allocate, quote::quote, GroupSize, QuantKind};
use std::path::Path;

/// One rule: matrices whose name matches `pattern` get `kind` and `group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub pattern: String,
    pub kind: QuantKind,
    pub group: GroupSize,
}

/// The rules, in order, over a default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantPolicy {
    pub default: (QuantKind, GroupSize),
    pub rules: Vec<Rule>,
}

impl QuantPolicy {
    /// Every matrix the same.
    pub fn uniform(kind: QuantKind, group: GroupSize) -> Self {
        Self {
            default: (kind, group),
            rules: Vec::new(),
        }
    }

    /// The kind and group of matrix `name`.
    pub fn format_of(&self, name: &str) -> (QuantKind, GroupSize) {
        self.rules
            .iter()
            .find(|r| matches(&r.pattern, name))
            .map_or(self.default, |r| (r.kind, r.group))
    }

    /// Whether every matrix is stored the same way.
    pub fn is_uniform(&self) -> bool {
        self.rules.iter().all(|r| (r.kind, r.group) == self.default)
    }

    /// Parses a policy file's text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str, default: (QuantKind, GroupSize)) -> Result<Self> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = || format!("{origin}:{}", n + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [pattern, kind, group] = fields[..] else {
                bail!("{}: expected `PATTERN KIND GROUP`, found {}", at(), quote(line));
            };
            let kind: QuantKind = kind.parse().map_err(|e: q35_format::Error| anyhow::anyhow!("{}: {e}", at()))?;
            let group: GroupSize = group.parse().map_err(|e: q35_format::Error| anyhow::anyhow!("{}: {e}", at()))?;
            rules.push(Rule {
                pattern: pattern.to_string(),
                kind,
                group,
            });
        }
        Ok(Self { default, rules })
    }

    /// Reads a policy file.
    pub fn load(path: &Path, default: (QuantKind, GroupSize)) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the quantization policy {}", path.display()))?;
        Self::parse(&text, &path.display().to_string(), default)
    }

    /// Checks the rules against the model's matrices: a rule that matches
    /// none is a mistake (a typo, or a policy for another model).
    pub fn check_against<'a>(&self, matrices: impl Iterator<Item = &'a str> + Clone, origin: &str) -> Result<()> {
        for rule in &self.rules {
            if !matrices.clone().any(|m| matches(&rule.pattern, m)) {
                bail!("{origin}: the pattern {} matches no matrix of this model", quote(&rule.pattern));
            }
        }
        Ok(())
    }
}

/// The policy [`q35_format::allocate`] chooses for `model` within
/// `budget` bits per weight over all matrices: one rule per matrix, by
/// its exact name. `importance` (from calibration) weighs each input
/// column's error; without it every column weighs the same.
pub fn allocate(model: &Model, graph: &ModelGraph, importance: Option<&Importance>, budget: f64) -> Result<QuantPolicy> {
    let matrices: Vec<_> = graph.weights().into_iter().filter(|w| w.is_matrix).collect();
    let estimates = crate::parallel::map(&matrices, |weight| {
        let data = graph.weight_f32(model, &weight.name)?;
        Ok(allocate::estimate(&allocate::Matrix {
            name: &weight.name,
            rows: weight.shape[0],
            cols: weight.shape[1],
            data: &data,
            importance: importance.and_then(|i| i.get(&weight.name)).map(Vec::as_slice),
        }))
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    let weights = matrices.iter().map(|w| w.shape[0] * w.shape[1]).sum();
    let formats = allocate::allocate(&estimates, weights, budget).map_err(anyhow::Error::msg)?;
    for (estimate, format) in estimates.iter().zip(&formats) {
        let error = |f: (QuantKind, GroupSize)| estimate.formats.iter().find(|o| o.0 == f).map_or(f64::NAN, |o| o.2);
        tracing::debug!(
            matrix = estimate.name,
            q35_g128 = error((QuantKind::Q35, GroupSize::G128)) / allocate::role_sensitivity(&estimate.name),
            chosen = %format!("{} g{}", format.0, format.1),
            "relative output error estimate at q35 g128 (before the role's coefficient)"
        );
    }
    let rules = matrices
        .iter()
        .zip(formats)
        .map(|(w, (kind, group))| Rule {
            pattern: w.name.clone(),
            kind,
            group,
        })
        .collect();
    Ok(QuantPolicy {
        default: (QuantKind::Q35, GroupSize::G128),
        rules,
    })
}

/// Bits per weight of `policy` over `graph`'s matrices, group parameters
/// included.
pub fn bits_per_weight(policy: &QuantPolicy, graph: &ModelGraph) -> f64 {
    let matrices: Vec<_> = graph.weights().into_iter().filter(|w| w.is_matrix).collect();
    let shapes: Vec<(usize, usize)> = matrices.iter().map(|w| (w.shape[0], w.shape[1])).collect();
    let formats: Vec<_> = matrices.iter().map(|w| policy.format_of(&w.name)).collect();
    allocate::bits_per_weight(&shapes, &formats)
}

/// The policy in one line per distinct format: `q35 g128: 120 matrices
/// (61.2% of weights)`, largest share first.
pub fn summary(policy: &QuantPolicy, graph: &ModelGraph) -> String {
    let matrices: Vec<_> = graph.weights().into_iter().filter(|w| w.is_matrix).collect();
    let total: usize = matrices.iter().map(|w| w.shape[0] * w.shape[1]).sum();
    let mut by_format: Vec<((QuantKind, GroupSize), usize, usize)> = Vec::new();
    for w in &matrices {
        let format = policy.format_of(&w.name);
        let n = w.shape[0] * w.shape[1];
        match by_format.iter_mut().find(|(f, _, _)| *f == format) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 += n;
            }
            None => by_format.push((format, 1, n)),
        }
    }
    by_format.sort_by_key(|f| std::cmp::Reverse(f.2));
    by_format
        .iter()
        .map(|((kind, group), count, n)| {
            format!("{kind} g{group}: {count} matrices ({:.1}% of weights)", 100.0 * *n as f64 / total.max(1) as f64)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `*`-glob match of `name` against `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names() {
        assert!(matches("*.v_proj.weight", "model.layers.3.self_attn.v_proj.weight"));
        assert!(matches("model.layers.*.mlp.*", "model.layers.12.mlp.up_proj.weight"));
        assert!(!matches("model.layers.*.mlp.*", "model.layers.12.self_attn.q_proj.weight"));
        assert!(matches("model.embed_tokens.weight", "model.embed_tokens.weight"));
        assert!(!matches("model.embed_tokens", "model.embed_tokens.weight"));
        assert!(matches("*", "x"));
        assert!(!matches("a*a", "a"));
    }

    #[test]
    fn first_rule_wins_and_the_rest_take_the_default() {
        let text = "# comment\nmodel.embed_tokens.weight int4 128\n*.v_proj.weight q35 64  # trailing\n*.weight int3 32\n";
        let policy = QuantPolicy::parse(text, "p.txt", (QuantKind::Q35, GroupSize::G128)).unwrap();
        assert_eq!(policy.format_of("model.embed_tokens.weight"), (QuantKind::Int4, GroupSize::G128));
        assert_eq!(policy.format_of("model.layers.0.self_attn.v_proj.weight"), (QuantKind::Q35, GroupSize::G64));
        assert_eq!(policy.format_of("model.layers.0.self_attn.q_proj.weight"), (QuantKind::Int3, GroupSize::G32));
        assert_eq!(policy.format_of("lm_head"), (QuantKind::Q35, GroupSize::G128));
        assert!(!policy.is_uniform());
    }

    #[test]
    fn errors_name_the_line() {
        let d = (QuantKind::Q35, GroupSize::G128);
        let e = QuantPolicy::parse("x q35\n", "p.txt", d).unwrap_err().to_string();
        assert_eq!(e, "p.txt:1: expected `PATTERN KIND GROUP`, found `x q35`");
        let e = QuantPolicy::parse("\nx q9 64\n", "p.txt", d).unwrap_err().to_string();
        assert!(e.starts_with("p.txt:2: "), "{e}");
        let e = QuantPolicy::parse("x q35 100\n", "p.txt", d).unwrap_err().to_string();
        assert!(e.starts_with("p.txt:1: "), "{e}");
        let p = QuantPolicy::parse("*.k_proj.weight int4 64\n", "p.txt", d).unwrap();
        let e = p.check_against(["model.embed_tokens.weight"].into_iter(), "p.txt").unwrap_err().to_string();
        assert_eq!(e, "p.txt: the pattern `*.k_proj.weight` matches no matrix of this model");
    }
}
