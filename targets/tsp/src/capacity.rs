//! How many chips a model takes and how fast it decodes, from its shape
//! alone (`q35c plan --target tsp --config config.json`): no weights, and
//! no program for the whole model (Llama-3.1-405B's would hold some
//! hundred million instructions).
//!
//! The decode programs of the model cut to one and to two decoder layers
//! are scheduled exactly as q35c schedules an artifact, on a chip with
//! room for them; their difference is one layer's cycles, SRAM and weight
//! installs (every layer has the same shapes, so the same schedule), the
//! rest is the embedding, the final norm and the LM head. The model then
//! takes its layers' share, and the chips the SRAM it needs in all.
//!
//! Assumptions, printed with the figures:
//! - a pipeline: the chips hold the model's weights and caches in layer
//!   order, each as full as it can be, a matrix split by rows where a
//!   chip's SRAM ends; one sequence's token visits them in turn;
//! - a token crosses each chip boundary once, carrying the activations
//!   live there (the widest set at any cut, measured on the plan), over
//!   one link of `link_bytes_per_cycle` after `link_latency`;
//! - the weights stream from SRAM into the MXM as on one chip (decode is
//!   bound by weight installs, so the roomier chip's extra and longer MEM
//!   slices change little: checked on SmolLM2, which fits one chip); a
//!   layer's KV cache may be longer than a MEM slice (it would be striped
//!   over several, which the lowering does not do yet);
//! - host transfers (the token in, the logits out over PCIe) are not
//!   counted.

use crate::model::{self, kv_widths, live_across};
use q35_format::tsp::{Op, Program, TspConfig};
use q35_target::Plan;
use std::fmt;

/// One decode program of a plan, scheduled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Measure {
    pub cycles: u64,
    /// Weight vectors installed into the MXM planes.
    pub installed_vectors: u64,
    /// SRAM rows, all slices together: weights, caches, activations.
    pub sram_rows: u64,
    /// Of them, the KV caches'.
    pub kv_rows: u64,
}

/// Schedules `plan`'s decode program on `config`'s chip, or on a roomier
/// one ([`model::on_roomy_chip`]).
pub fn measure(config: &TspConfig, plan: &Plan) -> Result<Measure, String> {
    let lanes = config.lanes();
    let kv_rows = kv_widths(plan)
        .iter()
        .filter_map(|(name, &width)| {
            plan.buffers
                .iter()
                .find(|b| b.name == *name)
                .map(|b| model::kv_cache_rows(lanes, width, b.width))
        })
        .sum();
    model::on_roomy_chip(config, |roomy| {
        let (programs, sram_rows) = model::lower_measured(roomy, plan, &[1])?;
        let program = &programs[0];
        Ok(Measure { cycles: program.cycles(), installed_vectors: installed_vectors(program), sram_rows, kv_rows })
    })
}

/// Weight vectors the program installs into the MXM planes.
fn installed_vectors(program: &Program) -> u64 {
    program
        .instrs
        .iter()
        .filter(|i| matches!(i.op, Op::Install { .. }))
        .map(|i| i.inputs.iter().map(|o| o.len as u64).sum::<u64>())
        .sum()
}

/// Bytes a token's activations take at the widest cut between two
/// dispatches, or inside a matmul (its input, its partial output and what
/// else is live): what a chip boundary there must carry.
pub fn widest_cut(plan: &Plan) -> u64 {
    let width = |name: &str| plan.buffers.iter().find(|b| b.name == name).map_or(0, |b| 4 * b.width as u64);
    let live = |at: usize| live_across(plan, at).into_iter().map(width).sum::<u64>();
    let between = (1..plan.dispatches.len()).map(live);
    // Inside a matmul split by rows: what is live before it, and its output.
    let inside = plan.dispatches.iter().enumerate().filter(|(_, d)| matches!(plan.kernels.get(&d.kernel), Some(q35_target::KernelSpec::Matmul(_)))).map(|(i, d)| live(i) + d.buffers.last().map_or(0, |y| width(y)));
    between.chain(inside).max().unwrap_or(0)
}

/// A model's chips and decode speed on the TSP.
#[derive(Clone, Debug)]
pub struct Capacity {
    pub config: TspConfig,
    pub layers: u64,
    pub one_layer: Measure,
    pub two_layers: Measure,
    /// The whole model.
    pub sram_rows: u64,
    pub kv_rows: u64,
    pub chips: u64,
    /// Bytes a token carries across a chip boundary, and the cycles that
    /// takes.
    pub hop_bytes: u64,
    pub hop_cycles: u64,
    /// Scheduled work a token, all chips together, without the hops.
    pub compute_cycles: u64,
    pub cycles_per_token: u64,
    /// The weight-install bound of the whole model, cycles a token.
    pub install_bound: f64,
}

/// The model of `layers` decoder layers whose one- and two-layer plans are
/// `one` and `two`, on chips described by `config`.
pub fn capacity(
    config: &TspConfig,
    one: &Plan,
    two: &Plan,
    layers: usize,
) -> Result<Capacity, String> {
    let (m1, m2) = (measure(config, one)?, measure(config, two)?);
    let layers = layers as u64;
    // rest + n·layer, from n = 1 and 2.
    let scale = |a: u64, b: u64| {
        let layer = b.saturating_sub(a);
        a.saturating_sub(layer) + layers * layer
    };
    let sram_rows = scale(m1.sram_rows, m2.sram_rows);
    let chip_rows = config.rows_per_slice() * config.mem_slices as u64;
    let chips = sram_rows.div_ceil(chip_rows).max(1);
    let hop_bytes = widest_cut(two);
    let hop_cycles = config.link_latency + config.link_cycles(hop_bytes);
    let compute_cycles = scale(m1.cycles, m2.cycles);
    let install_rate = (config.mxm_planes * config.install_vectors_per_cycle) as f64;
    Ok(Capacity {
        config: config.clone(),
        layers,
        one_layer: m1,
        two_layers: m2,
        sram_rows,
        kv_rows: scale(m1.kv_rows, m2.kv_rows),
        chips,
        hop_bytes,
        hop_cycles,
        compute_cycles,
        cycles_per_token: compute_cycles + (chips - 1) * hop_cycles,
        install_bound: scale(m1.installed_vectors, m2.installed_vectors) as f64 / install_rate,
    })
}

impl Capacity {
    fn bytes(&self, rows: u64) -> u64 {
        rows * self.config.lanes() as u64
    }

    /// Tokens a second of one sequence at the configured clock.
    pub fn tokens_per_second(&self) -> f64 {
        1.0 / self.config.seconds(self.cycles_per_token)
    }

    /// Tokens a second of `chips` sequences in flight, one a chip: each
    /// chip's share of the work and one hop a token.
    pub fn pipelined_tokens_per_second(&self) -> f64 {
        let hop = if self.chips > 1 { self.hop_cycles } else { 0 };
        1.0 / self
            .config
            .seconds(self.compute_cycles.div_ceil(self.chips) + hop)
    }

    /// The figures as JSON (`q35c plan --json`).
    pub fn to_json(&self) -> String {
        let mib = |rows: u64| self.bytes(rows) as f64 / (1024.0 * 1024.0);
        let value = format!(
            concat!(
                "{{\"chips\":{},\"sram_mib\":{:.1},\"kv_cache_mib\":{:.1},\"sram_mib_per_chip\":{:.1},\"chip_sram_mib\":{:.1},",
                "\"cycles_per_token\":{},\"compute_cycles_per_token\":{},\"hop_bytes\":{},\"hop_cycles\":{},",
                "\"install_bound_cycles_per_token\":{:.0},\"tokens_per_second\":{:.2},\"pipelined_tokens_per_second\":{:.1},\"clock_mhz\":{}}}"
            ),
            self.chips,
            mib(self.sram_rows),
            mib(self.kv_rows),
            mib(self.sram_rows) / self.chips as f64,
            self.config.sram_bytes as f64 / (1024.0 * 1024.0),
            self.cycles_per_token,
            self.compute_cycles,
            self.hop_bytes,
            self.hop_cycles,
            self.install_bound,
            self.tokens_per_second(),
            self.pipelined_tokens_per_second(),
            self.config.clock_mhz,
        );
        value
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let c = &self.config;
        let mib = |rows: u64| self.bytes(rows) as f64 / (1024.0 * 1024.0);
        let ms = |cycles: u64| 1e3 * c.seconds(cycles);
        writeln!(
            f,
            "chip: {} lanes, {} MEM slices, {:.0} MiB SRAM, {} MXM planes, {} MHz",
            c.lanes(),
            c.mem_slices,
            c.sram_bytes as f64 / (1024.0 * 1024.0),
            c.mxm_planes,
            c.clock_mhz
        )?;
        writeln!(
            f,
            "SRAM: {:.1} MiB in all ({:.1} MiB KV caches, the rest weights with their group parameters, activations and scratch)",
            mib(self.sram_rows),
            mib(self.kv_rows)
        )?;
        let per_chip = mib(self.sram_rows) / self.chips as f64;
        if self.chips == 1 {
            writeln!(f, "chips: 1 ({per_chip:.1} MiB of its SRAM)")?;
        } else {
            writeln!(
                f,
                "chips: {} in a pipeline, {per_chip:.1} MiB SRAM each on average",
                self.chips
            )?;
        }
        writeln!(
            f,
            "decode, one sequence: {} cycles a token ({:.3} ms), {:.1} tok/s",
            self.cycles_per_token,
            ms(self.cycles_per_token),
            self.tokens_per_second()
        )?;
        writeln!(
            f,
            "  scheduled work: {} cycles, {:.1} % of the weight-install bound ({:.0} cycles)",
            self.compute_cycles,
            100.0 * self.install_bound / self.compute_cycles as f64,
            self.install_bound
        )?;
        if self.chips > 1 {
            writeln!(
                f,
                "  chip to chip: {} hops of {} cycles ({} bytes a token at the widest cut)",
                self.chips - 1,
                self.hop_cycles,
                self.hop_bytes
            )?;
            writeln!(
                f,
                "decode, {} sequences in flight (one a chip): {:.0} tok/s together",
                self.chips,
                self.pipelined_tokens_per_second()
            )?;
        }
        writeln!(
            f,
            "from: the one- and two-layer decode programs as scheduled ({} and {} cycles, {:.1} and {:.1} MiB); layer {} cycles, {:.1} MiB",
            self.one_layer.cycles,
            self.two_layers.cycles,
            mib(self.one_layer.sram_rows),
            mib(self.two_layers.sram_rows),
            self.two_layers.cycles.saturating_sub(self.one_layer.cycles),
            mib(self.two_layers.sram_rows.saturating_sub(self.one_layer.sram_rows)),
        )?;
        writeln!(f, "assumes: layers in order over the chips, a matrix split by rows where a chip's SRAM ends; host transfers (token in, logits out) not counted")
    }
}
