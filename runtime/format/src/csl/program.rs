//! A CSL artifact's code object: the CSL files, where each region of PEs
//! sits and what it computes, and which region runs each dispatch of the
//! plan. q35-rt's simulator runs the files; the host side of a run (the
//! memcpy copies and launches the SDK's runner would make) follows the
//! regions.
//!
//! The payload is text: the kernel signatures' comment line, then this
//! structure as JSON.

use super::CslConfig;
use serde::{Deserialize, Serialize};

/// One source file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CslFile {
    pub name: String,
    pub text: String,
}

/// What a region's PEs compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionKind {
    /// A dequant-matmul's rectangle (`pe_program_matmul.csl`); also the
    /// embedding's gather (`lookup`) from the same weights.
    Matmul,
    /// One PE: `rms_norm` (`pe_program_norm.csl`).
    Norm,
    /// One PE: add, mul, silu or swiglu (`pe_program_rows.csl`).
    Rows,
    /// One PE: RoPE (`pe_program_rope.csl`).
    Rope,
    /// One PE a KV head: its K and V caches and its query heads' attention
    /// (`pe_program_attention.csl`).
    Attention,
}

/// A rectangle of PEs and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub kind: RegionKind,
    pub x0: usize,
    pub y0: usize,
    pub width: usize,
    pub height: usize,
    /// A matmul's block: rows and columns per PE.
    #[serde(default)]
    pub rows: usize,
    #[serde(default)]
    pub cols: usize,
    /// The weight a matmul or norm region holds.
    #[serde(default)]
    pub weight: Option<String>,
}

/// The whole program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CslProgram {
    pub config: CslConfig,
    pub files: Vec<CslFile>,
    /// The program's rectangle.
    pub width: usize,
    pub height: usize,
    pub regions: Vec<Region>,
    /// The region of each dispatch, in the plan's order.
    pub dispatches: Vec<usize>,
}

impl CslProgram {
    /// The payload text after the signatures' comment line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }

    /// Reads the payload: comment lines, then the JSON.
    pub fn parse(text: &str) -> Result<CslProgram, String> {
        let body: String = text.lines().skip_while(|l| l.starts_with("//")).collect::<Vec<_>>().join("\n");
        let program: CslProgram = serde_json::from_str(&body).map_err(|e| format!("not a CSL program: {e}"))?;
        program.config.check()?;
        for (i, r) in program.regions.iter().enumerate() {
            if r.x0 + r.width > program.width || r.y0 + r.height > program.height || r.width == 0 || r.height == 0 {
                return Err(format!("region {i} ({} x {} at ({}, {})) is outside the {} x {} program", r.width, r.height, r.x0, r.y0, program.width, program.height));
            }
        }
        if let Some(d) = program.dispatches.iter().position(|&r| r >= program.regions.len()) {
            return Err(format!("dispatch {d} names region {}, of {}", program.dispatches[d], program.regions.len()));
        }
        Ok(program)
    }

    pub fn file(&self, name: &str) -> Option<&str> {
        self.files.iter().find(|f| f.name == name).map(|f| f.text.as_str())
    }
}
