//! The machine a CSL program is laid out for: every figure a parameter,
//! read from a JSON target description (`q35c --csl-config FILE`), with a
//! Cerebras CS-2 (WSE-2) as the default.
//!
//! Sources (docs/targets.md, "CSL"): the Cerebras SDK documentation (a
//! CS-2's fabric is 757 × 996 PEs, a CS-3's 762 × 1176; 48 KB of SRAM per
//! PE; 24 routable colours; 32-bit wavelets, one hop per cycle) and the
//! csl-examples repository (the memcpy infrastructure needs 7 columns and
//! 2 rows of the fabric: `dim_x >= 7 + width`, `dim_y >= 2 + height`; the
//! examples' 850 MHz convention for cycles to time). The per-operation
//! cycle costs are not public: they are plainly named parameters with
//! chosen defaults, and docs/targets.md says so.

use serde::{Deserialize, Serialize};

/// One wafer and its PEs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CslConfig {
    /// The fabric, PEs (757 × 996 on a CS-2).
    pub fabric_width: usize,
    pub fabric_height: usize,
    /// Columns and rows the memcpy infrastructure takes from the fabric
    /// (7 and 2).
    pub memcpy_columns: usize,
    pub memcpy_rows: usize,
    /// SRAM of one PE, bytes (48 KB).
    pub pe_sram_bytes: usize,
    /// Of that, what the program's code and stack are assumed to take (no
    /// CSL compiler is at hand to measure it; chosen).
    pub code_bytes: usize,
    /// Routable colours (24).
    pub colors: usize,
    /// Clock, MHz (850, the SDK examples' convention).
    pub clock_mhz: f64,
    /// Cycles of one scalar operation of a PE program (an arithmetic
    /// operation, a load or a store; chosen).
    pub scalar_op_cycles: u64,
    /// Cycles per element of a DSD operation on f32 memory (chosen: one
    /// f32 FMAC a cycle).
    pub dsd_cycles_per_element: u64,
    /// Cycles a wavelet takes per hop, and from a PE's ramp onto its
    /// router or back.
    pub hop_cycles: u64,
    pub ramp_cycles: u64,
    /// Cycles from activating a task to its first operation (chosen).
    pub task_switch_cycles: u64,
}

impl Default for CslConfig {
    fn default() -> Self {
        CslConfig {
            fabric_width: 757,
            fabric_height: 996,
            memcpy_columns: 7,
            memcpy_rows: 2,
            pe_sram_bytes: 48 * 1024,
            code_bytes: 6 * 1024,
            colors: 24,
            clock_mhz: 850.0,
            scalar_op_cycles: 1,
            dsd_cycles_per_element: 1,
            hop_cycles: 1,
            ramp_cycles: 2,
            task_switch_cycles: 4,
        }
    }
}

impl CslConfig {
    /// The rectangle a program may use: the fabric less memcpy's columns
    /// and rows.
    pub fn program_width(&self) -> usize {
        self.fabric_width.saturating_sub(self.memcpy_columns)
    }

    pub fn program_height(&self) -> usize {
        self.fabric_height.saturating_sub(self.memcpy_rows)
    }

    /// PEs a program may use.
    pub fn program_pes(&self) -> u64 {
        self.program_width() as u64 * self.program_height() as u64
    }

    /// Bytes of a PE's SRAM left for data.
    pub fn data_bytes(&self) -> usize {
        self.pe_sram_bytes.saturating_sub(self.code_bytes)
    }

    /// Parses a target description; absent fields take the defaults.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: CslConfig = serde_json::from_str(text).map_err(|e| format!("not a CSL description: {e}"))?;
        config.check()?;
        Ok(config)
    }

    /// The description as one line of JSON (every field).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain numbers serialize")
    }

    /// Whether the figures describe a machine a program can use.
    pub fn check(&self) -> Result<(), String> {
        if self.program_width() == 0 || self.program_height() == 0 {
            return Err(format!(
                "a {} × {} fabric leaves no PEs after memcpy's {} columns and {} rows",
                self.fabric_width, self.fabric_height, self.memcpy_columns, self.memcpy_rows
            ));
        }
        if self.data_bytes() < 1024 {
            return Err(format!("{} bytes of SRAM per PE less {} for code leaves under 1 KiB for data", self.pe_sram_bytes, self.code_bytes));
        }
        if self.colors < 4 {
            return Err(format!("{} colours: a matmul needs 4 (activations, two for partial sums, launch)", self.colors));
        }
        if !(self.clock_mhz.is_finite() && self.clock_mhz > 0.0) {
            return Err(format!("`clock_mhz` must be a positive number, not {}", self.clock_mhz));
        }
        if self.hop_cycles == 0 || self.dsd_cycles_per_element == 0 || self.scalar_op_cycles == 0 {
            return Err("`hop_cycles`, `dsd_cycles_per_element` and `scalar_op_cycles` must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_absent_fields_default() {
        let c = CslConfig::default();
        assert_eq!(CslConfig::from_json(&c.to_json()).unwrap(), c);
        let wse3 = CslConfig::from_json(r#"{"fabric_width": 762, "fabric_height": 1176}"#).unwrap();
        assert_eq!(wse3.program_pes(), 755 * 1174);
        assert_eq!(c.program_pes(), 750 * 994);
    }

    #[test]
    fn bad_descriptions_name_the_field() {
        assert!(CslConfig::from_json(r#"{"fabric_widht": 3}"#).unwrap_err().contains("fabric_widht"));
        assert!(CslConfig::from_json(r#"{"fabric_width": 5}"#).unwrap_err().contains("no PEs"));
        assert!(CslConfig::from_json(r#"{"clock_mhz": -1}"#).unwrap_err().contains("clock_mhz"));
        assert!(CslConfig::from_json(r#"{"pe_sram_bytes": 4096}"#).unwrap_err().contains("under 1 KiB"));
    }
}
