//! Lays a whole model on the wafer from its shape alone (`q35c plan
//! --target csl --config config.json`): the PEs its matrices, KV caches
//! and row operations take, each PE's SRAM, and the cycles a decoded token
//! takes; or the shortfall when it does not fit.
//!
//! The plans of the model cut to one and to two decoder layers are laid
//! out; their difference is one layer, the rest is the embedding, the
//! final norm and the LM head. Assumptions, printed with the figures:
//! - every matrix's codes stay on its PEs (weights stationary), at one
//!   block size for the whole model, the one that decodes fastest among
//!   those that fit; the embedding table is the tied LM head's PEs (a
//!   token's row is read from them), or its own when untied;
//! - a token's matmuls run one after another (decode: each needs the
//!   previous one's output); their cycles are the emitted matmul
//!   program's, as the simulator counts them (`partition::matmul_cycles`);
//! - each layer's K and V caches are f32 on PEs of their own, spread so a
//!   PE holds at most its data SRAM; attention runs on them, one DSD pass
//!   over the cache for the scores and one for the values, plus the
//!   softmax (4 operations a position) and a reduction down the PEs;
//! - norms, RoPE, SwiGLU and residual adds run on one PE column per layer
//!   holding the activations, about 8 operations an element; not lowered
//!   to CSL yet, so these two are estimates, not counted programs.

use crate::partition::{group_choices, matmul_cycles, row_choices, BlockSize};
use q35_format::csl::CslConfig;
use q35_target::{KernelSpec, Plan};
use std::fmt;

/// What one plan takes at one block size.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Tally {
    weight_pes: u64,
    kv_pes: u64,
    row_pes: u64,
    matmul_cycles: u64,
    other_cycles: u64,
    /// The most SRAM a weight PE declares.
    max_data_bytes: usize,
    weights: u64,
}

impl Tally {
    fn pes(&self) -> u64 {
        self.weight_pes + self.kv_pes + self.row_pes
    }

    fn cycles(&self) -> u64 {
        self.matmul_cycles + self.other_cycles
    }

    fn scaled(one: &Tally, two: &Tally, layers: u64) -> Tally {
        let f = |a: u64, b: u64| a + (b - a) * (layers - 1);
        Tally {
            weight_pes: f(one.weight_pes, two.weight_pes),
            kv_pes: f(one.kv_pes, two.kv_pes),
            row_pes: f(one.row_pes, two.row_pes),
            matmul_cycles: f(one.matmul_cycles, two.matmul_cycles),
            other_cycles: f(one.other_cycles, two.other_cycles),
            max_data_bytes: one.max_data_bytes.max(two.max_data_bytes),
            weights: f(one.weights, two.weights),
        }
    }
}

fn tally(config: &CslConfig, plan: &Plan, size: BlockSize, context: usize) -> Result<Tally, String> {
    let mut t = Tally::default();
    let data = config.data_bytes();
    let elements_per_pe = (data / 4).max(1) as u64;
    for d in &plan.dispatches {
        match plan.kernels.get(&d.kernel) {
            Some(KernelSpec::Matmul(m)) => {
                let shape = size.shape(m.n, m.k, m.quant, m.group)?;
                let bytes = shape.max_data_bytes();
                if bytes > data {
                    return Err(format!("{} rows x {} columns per PE take {bytes} bytes", shape.rows, shape.cols));
                }
                t.max_data_bytes = t.max_data_bytes.max(bytes);
                t.weight_pes += (shape.pes() * m.epilogue.weights()) as u64;
                t.weights += (m.n * m.k * m.epilogue.weights()) as u64;
                t.matmul_cycles += matmul_cycles(config, &shape);
            }
            Some(KernelSpec::Embedding(m)) => {
                // Untied tables need PEs of their own; a tied one is the LM
                // head's (the plan then multiplies by the same weight).
                let tied = plan.dispatches.iter().any(|o| matches!(plan.kernels.get(&o.kernel), Some(KernelSpec::Matmul(_))) && o.buffers.get(1) == d.buffers.get(1));
                if !tied {
                    let shape = size.shape(m.n, m.k, m.quant, m.group)?;
                    t.weight_pes += shape.pes() as u64;
                    t.weights += (m.n * m.k) as u64;
                }
                t.other_cycles += m.k as u64 + 2 * config.ramp_cycles;
            }
            Some(KernelSpec::Attention { shape, .. }) => {
                let kv = (shape.num_kv_heads * shape.head_dim) as u64;
                let elements = 2 * kv * context as u64;
                let pes = elements.div_ceil(elements_per_pe).max(shape.num_kv_heads as u64);
                t.kv_pes += pes;
                let per_pe = elements.div_ceil(pes);
                let positions = (context as u64).div_ceil(pes.div_ceil(shape.num_kv_heads as u64));
                t.other_cycles += 2 * per_pe * config.dsd_cycles_per_element + 4 * positions + 2 * pes.isqrt() * config.hop_cycles + 64;
            }
            Some(KernelSpec::Row { width, .. } | KernelSpec::Rope { width, .. }) => {
                let pes = (3 * *width as u64).div_ceil(elements_per_pe).max(1);
                t.row_pes += pes;
                t.other_cycles += 8 * (*width as u64).div_ceil(pes) + pes * config.hop_cycles + 16;
            }
            Some(KernelSpec::KvUpdate(_)) | Some(KernelSpec::QuantizeActivations(_)) | None => {}
        }
    }
    Ok(t)
}

/// The model on the wafer, or what it lacks.
#[derive(Clone, Debug, PartialEq)]
pub struct Capacity {
    pub config: CslConfig,
    pub layers: usize,
    pub context: usize,
    /// The block size chosen (or the largest tried, when nothing fits).
    pub rows_per_pe: usize,
    pub groups_per_pe: usize,
    pub weight_pes: u64,
    pub kv_pes: u64,
    pub row_pes: u64,
    pub pes_available: u64,
    pub max_data_bytes: usize,
    pub weights: u64,
    pub matmul_cycles: u64,
    pub other_cycles: u64,
    pub fits: bool,
}

impl Capacity {
    pub fn pes(&self) -> u64 {
        self.weight_pes + self.kv_pes + self.row_pes
    }

    pub fn cycles_per_token(&self) -> u64 {
        self.matmul_cycles + self.other_cycles
    }

    pub fn tokens_per_second(&self) -> f64 {
        self.config.clock_mhz * 1e6 / self.cycles_per_token().max(1) as f64
    }

    pub fn to_json(&self) -> String {
        format!(
            "{{\"target\": \"csl\", \"fits\": {}, \"layers\": {}, \"context\": {}, \"rows_per_pe\": {}, \"groups_per_pe\": {}, \"pes\": {}, \"pes_available\": {}, \"weight_pes\": {}, \"kv_pes\": {}, \"row_op_pes\": {}, \"max_pe_data_bytes\": {}, \"pe_sram_bytes\": {}, \"weights\": {}, \"cycles_per_token\": {}, \"matmul_cycles\": {}, \"other_cycles\": {}, \"tokens_per_second\": {:.1}, \"config\": {}}}",
            self.fits,
            self.layers,
            self.context,
            self.rows_per_pe,
            self.groups_per_pe,
            self.pes(),
            self.pes_available,
            self.weight_pes,
            self.kv_pes,
            self.row_pes,
            self.max_data_bytes,
            self.config.pe_sram_bytes,
            self.weights,
            self.cycles_per_token(),
            self.matmul_cycles,
            self.other_cycles,
            self.tokens_per_second(),
            self.config.to_json()
        )
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "wafer: {} x {} PEs ({} x {} for programs after memcpy's {} columns and {} rows), {} bytes of SRAM per PE ({} assumed for code), {} MHz",
            c.fabric_width,
            c.fabric_height,
            c.program_width(),
            c.program_height(),
            c.memcpy_columns,
            c.memcpy_rows,
            c.pe_sram_bytes,
            c.code_bytes,
            c.clock_mhz
        )?;
        writeln!(f, "block: {} rows x {} groups of codes per PE; the most loaded PE declares {} bytes of data", self.rows_per_pe, self.groups_per_pe, self.max_data_bytes)?;
        writeln!(
            f,
            "PEs: {} of {} ({:.1} %): {} hold the {} weights' codes, {} the KV caches (context {}), {} the row operations",
            self.pes(),
            self.pes_available,
            100.0 * self.pes() as f64 / self.pes_available as f64,
            self.weight_pes,
            self.weights,
            self.kv_pes,
            self.context,
            self.row_pes
        )?;
        if !self.fits {
            let wafers = self.pes().div_ceil(self.pes_available);
            writeln!(
                f,
                "does not fit: even at the largest block the model needs {} PEs, {} more than the wafer has ({wafers} wafers' worth); a model this size needs several wafers or fewer bits",
                self.pes(),
                self.pes() - self.pes_available
            )?;
            return Ok(());
        }
        writeln!(
            f,
            "decode: {} cycles per token ({} in matmuls, {} estimated for attention, norms and the rest), {:.1} tokens/s at {} MHz",
            self.cycles_per_token(),
            self.matmul_cycles,
            self.other_cycles,
            self.tokens_per_second(),
            c.clock_mhz
        )?;
        writeln!(f, "assumptions: weights stationary at one block size; a token's matmuls one after another (no pipelining across layers); attention and row operations estimated (not yet emitted as CSL); host transfers not counted")
    }
}

/// `layers` layers from the plans of one (`one`) and two (`two`) layers:
/// the fastest block size that fits, or the roomiest one with the
/// shortfall.
pub fn capacity(config: &CslConfig, one: &Plan, two: &Plan, layers: usize, context: usize) -> Result<Capacity, String> {
    let available = config.program_pes();
    let mut best: Option<(BlockSize, Tally)> = None;
    let mut roomiest: Option<(BlockSize, Tally)> = None;
    for rows in row_choices() {
        for groups in group_choices() {
            let size = BlockSize { rows, groups };
            let (Ok(a), Ok(b)) = (tally(config, one, size, context), tally(config, two, size, context)) else { continue };
            let t = Tally::scaled(&a, &b, layers.max(1) as u64);
            if roomiest.as_ref().is_none_or(|(_, r)| t.pes() < r.pes()) {
                roomiest = Some((size, t));
            }
            if t.pes() <= available && best.as_ref().is_none_or(|(_, b)| t.cycles() < b.cycles()) {
                best = Some((size, t));
            }
        }
    }
    let fits = best.is_some();
    let (size, t) = best.or(roomiest).ok_or("no block size fits a PE's SRAM")?;
    Ok(Capacity {
        config: config.clone(),
        layers,
        context,
        rows_per_pe: size.rows,
        groups_per_pe: size.groups,
        weight_pes: t.weight_pes,
        kv_pes: t.kv_pes,
        row_pes: t.row_pes,
        pes_available: available,
        max_data_bytes: t.max_data_bytes,
        weights: t.weights,
        matmul_cycles: t.matmul_cycles,
        other_cycles: t.other_cycles,
        fits,
    })
}
