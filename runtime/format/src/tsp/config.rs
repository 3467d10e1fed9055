//! The machine a TSP program is scheduled for: every figure a parameter,
//! read from a JSON target description (`q35c --tsp-config FILE`), with
//! the published Groq TSP figures as defaults.
//!
//! Sources (docs/targets.md, "TSP"): Abts et al., "Think Fast: A Tensor
//! Streaming Processor (TSP) for Accelerating Deep Learning Workloads",
//! ISCA 2020 (20 superlanes × 16 lanes = 320 lanes of 320-byte vectors,
//! 88 MEM slices and 220 MiB of SRAM, VXM with 16 ALUs per lane, MXM
//! planes of 320×320 int8 weights, 32 streams in each direction, 900 MHz);
//! Abts et al., ISCA 2022 (chip-to-chip links). The functional delays,
//! the weight-install rate and the link figures are not public: they are
//! plainly named parameters here, with chosen defaults, and docs/targets.md
//! says so.

use serde::{Deserialize, Serialize};

/// One TSP chip, and the links between chips.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TspConfig {
    /// Superlanes × lanes per superlane = lanes of a vector (320).
    pub superlanes: usize,
    pub lanes_per_superlane: usize,
    /// MEM slices; each reads or writes one vector per cycle.
    pub mem_slices: usize,
    /// SRAM in all MEM slices together, bytes (220 MiB).
    pub sram_bytes: u64,
    /// MXM planes; each holds one installed weight tile of lanes × lanes
    /// int8 weights.
    pub mxm_planes: usize,
    /// Vector ALUs of the VXM per lane: independent vector instructions
    /// the VXM can run at once.
    pub vxm_alus: usize,
    /// Stream registers in each direction (east, west).
    pub streams_per_direction: usize,
    /// Clock, MHz (900 nominal).
    pub clock_mhz: f64,
    /// Weight vectors one MXM plane installs per cycle (not public).
    pub install_vectors_per_cycle: usize,
    /// Cycles from issue to the first result on a stream, per unit (not
    /// public; chosen).
    pub delays: Delays,
    /// Chip-to-chip link bandwidth, bytes per cycle, and latency, cycles
    /// (not public; chosen from the ISCA 2022 description).
    pub link_bytes_per_cycle: usize,
    pub link_latency: u64,
}

/// Functional delays, cycles from issue to the first output vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delays {
    pub mem_read: u64,
    pub vxm: u64,
    pub mxm_multiply: u64,
}

impl Default for Delays {
    fn default() -> Self {
        Delays {
            mem_read: 5,
            vxm: 4,
            mxm_multiply: 24,
        }
    }
}

impl Default for TspConfig {
    fn default() -> Self {
        TspConfig {
            superlanes: 20,
            lanes_per_superlane: 16,
            mem_slices: 88,
            sram_bytes: 220 * 1024 * 1024,
            mxm_planes: 4,
            vxm_alus: 16,
            streams_per_direction: 32,
            clock_mhz: 900.0,
            install_vectors_per_cycle: 1,
            delays: Delays::default(),
            link_bytes_per_cycle: 320,
            link_latency: 600,
        }
    }
}

impl TspConfig {
    /// Lanes of a vector, and bytes of an int8 vector.
    pub fn lanes(&self) -> usize {
        self.superlanes * self.lanes_per_superlane
    }

    /// Stream registers in all (both directions).
    pub fn streams(&self) -> usize {
        2 * self.streams_per_direction
    }

    /// Rows (vectors of `lanes()` bytes) of one MEM slice.
    pub fn rows_per_slice(&self) -> u64 {
        self.sram_bytes / self.mem_slices as u64 / self.lanes() as u64
    }

    /// Parses a target description; absent fields take the defaults.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: TspConfig = serde_json::from_str(text).map_err(|e| format!("not a TSP description: {e}"))?;
        config.check()?;
        Ok(config)
    }

    /// The description as one line of JSON (every field).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain numbers serialize")
    }

    /// Whether the figures describe a machine a schedule can use.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("superlanes", self.superlanes),
            ("lanes_per_superlane", self.lanes_per_superlane),
            ("mem_slices", self.mem_slices),
            ("mxm_planes", self.mxm_planes),
            ("vxm_alus", self.vxm_alus),
            ("streams_per_direction", self.streams_per_direction),
            ("install_vectors_per_cycle", self.install_vectors_per_cycle),
            ("link_bytes_per_cycle", self.link_bytes_per_cycle),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("`{name}` must be at least 1"));
        }
        if self.lanes() > 4096 {
            return Err(format!("{} lanes: at most 4096", self.lanes()));
        }
        if !(self.clock_mhz.is_finite() && self.clock_mhz > 0.0) {
            return Err(format!("`clock_mhz` must be a positive number, not {}", self.clock_mhz));
        }
        if self.rows_per_slice() == 0 {
            return Err(format!("`sram_bytes` {} gives each of {} MEM slices less than one vector", self.sram_bytes, self.mem_slices));
        }
        if self.streams() < 16 {
            return Err(format!("{} streams: a matmul schedule needs at least 16", self.streams()));
        }
        Ok(())
    }

    /// Cycles the link takes to carry `bytes` (before `link_latency`).
    pub fn link_cycles(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.link_bytes_per_cycle as u64)
    }

    /// Seconds for `cycles` at the configured clock.
    pub fn seconds(&self, cycles: u64) -> f64 {
        cycles as f64 / (self.clock_mhz * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_published_chip() {
        let c = TspConfig::default();
        assert_eq!(c.lanes(), 320);
        assert_eq!(c.streams(), 64);
        // 220 MiB over 88 slices of 320-byte rows.
        assert_eq!(c.rows_per_slice(), 220 * 1024 * 1024 / 88 / 320);
        c.check().unwrap();
    }

    #[test]
    fn a_description_overrides_some_figures_and_refuses_bad_ones() {
        let c = TspConfig::from_json(r#"{"clock_mhz": 1000, "delays": {"vxm": 2}}"#).unwrap();
        assert_eq!((c.clock_mhz, c.delays.vxm, c.delays.mem_read), (1000.0, 2, 5));
        let e = TspConfig::from_json(r#"{"mxm_planes": 0}"#).unwrap_err();
        assert!(e.contains("`mxm_planes` must be at least 1"), "{e}");
        let e = TspConfig::from_json(r#"{"lanes": 320}"#).unwrap_err();
        assert!(e.contains("unknown field `lanes`"), "{e}");
    }
}
