//! The TSP target: a cycle-exact simulator ([`sim`]) of the program q35c
//! scheduled, on the machine its description names. Loading parses the
//! program text from the artifact, builds the chip's SRAM from the
//! artifact's weights as the program's placements say
//! (`q35_format::tsp::image`), and a run writes each token's id and
//! position where the program reads them, runs it, and reads the logits
//! where it writes them. The KV cache stays in the simulated SRAM between
//! runs, as it would on the chip.

pub mod sim;
pub mod vxm;

use super::{DeviceError, DispatchObserver, Executor, LoadOptions, Simulated};
use crate::artifact::{code_signatures, ArtifactInfo, LoadError, Validated};
use crate::bandwidth::MeasuredBandwidth;
use q35_format::artifact::Artifact;
use q35_format::tsp::{image::placement_bytes, Elem, Io, Program, TspConfig};
use q35_format::QuantizedTensor;
use sim::{from_rows, to_rows, Chip, Vector};

/// Loads a tsp artifact onto a simulated chip.
pub fn load(path: &str, artifact: &Artifact<'_>, file_bytes: u64, _options: LoadOptions) -> Result<Box<dyn Executor>, LoadError> {
    let manifest = &artifact.manifest;
    let invalid = |what: String| LoadError::Invalid { path: path.to_string(), what };
    let code = artifact.payload(&manifest.code).ok_or_else(|| invalid(format!("the code object `{}` is missing", manifest.code)))?;
    let validated = Validated::new(path, artifact, file_bytes, || {
        code_signatures(manifest, code).map_err(|what| LoadError::Signature { path: path.to_string(), payload: manifest.code.clone(), what })
    })?;
    let text = std::str::from_utf8(code).map_err(|e| invalid(format!("the TSP program is not UTF-8 text ({e})")))?;
    let programs = Program::parse_all(text).map_err(|e| invalid(format!("`{}`: {e}", manifest.code)))?;
    let count = programs.first().map_or(1, |p| p.chips) as usize;
    if let Some(p) = programs.iter().find(|p| p.chips as usize != count) {
        return Err(invalid(format!("`{}` mixes programs for {count} and {} chips", manifest.code, p.chips)));
    }
    let mut weights: std::collections::HashMap<&str, QuantizedTensor> = std::collections::HashMap::new();
    let mut chips = Vec::with_capacity(count);
    for c in 0..count as u32 {
        let mut programs: Vec<Program> = programs.iter().filter(|p| p.chip == c).cloned().collect();
        // One token a run, and optionally a full chunk a run (prefill).
        let decode = programs.iter().position(|p| p.tokens == 1).ok_or_else(|| invalid(format!("`{}` has no one-token program for chip {c}", manifest.code)))?;
        let program = programs.remove(decode);
        let prefill = programs.into_iter().find(|p| p.tokens > 1);
        let config = match &program.config {
            Some(json) => TspConfig::from_json(json).map_err(|e| invalid(format!("`{}`: its machine description: {e}", manifest.code)))?,
            None => TspConfig::default(),
        };
        let mut chip = Chip::new(config);
        let lanes = chip.config().lanes();
        for placement in &program.placements {
            if !weights.contains_key(placement.weight.as_str()) {
                let spec = manifest.weights.iter().find(|w| w.name == placement.weight).ok_or_else(|| invalid(format!("the program places `{}`, which the artifact does not hold", placement.weight)))?;
                let bytes = artifact.payload(&spec.tensor).ok_or_else(|| invalid(format!("weight `{}`: payload `{}` is missing", spec.name, spec.tensor)))?;
                let tensor = QuantizedTensor::from_bytes(spec.name.clone(), bytes).map_err(|e| invalid(format!("weight `{}`: {e}", spec.name)))?;
                weights.insert(spec.name.as_str(), tensor);
            }
            let bytes = placement_bytes(placement, &weights[placement.weight.as_str()], lanes).map_err(invalid)?;
            chip.load(placement.slice as usize, placement.row, &bytes).map_err(invalid)?;
        }
        let ends = |program: Program| {
            let io = |name: &str| program.io.iter().find(|io| io.name == name).cloned();
            let (tokens, positions, logits) = (io("tokens"), io("positions"), io("logits"));
            Loaded { program, tokens, positions, logits }
        };
        chips.push(ChipRun { chip, decode: ends(program), prefill: prefill.map(ends) });
    }
    // The first chip takes the tokens, the last gives the logits; a prefill
    // program on every chip or none.
    let first = chips.first().ok_or_else(|| invalid(format!("`{}` holds no program", manifest.code)))?;
    let last = chips.last().expect("one chip at least");
    let Some(logits) = &last.decode.logits else {
        return Err(invalid(format!("the TSP program has no `io logits` line on its last chip ({})", count - 1)));
    };
    if first.decode.tokens.is_none() {
        return Err(invalid("the TSP program has no `io tokens` line on its first chip".into()));
    }
    if logits.width as usize != manifest.model.vocab_size {
        return Err(invalid(format!("the program's logits are {} wide, the model's vocabulary {}", logits.width, manifest.model.vocab_size)));
    }
    if chips.iter().any(|c| c.prefill.is_some() != first.prefill.is_some()) {
        return Err(invalid("some chips have a prefill program and some do not".into()));
    }
    Ok(Box::new(TspExecutor { info: validated.info, chips, logits: Vec::new(), counted: Simulated::default() }))
}

/// A program and where it takes its inputs and leaves its logits (each on
/// the chips of a pipeline that need it).
struct Loaded {
    program: Program,
    tokens: Option<Io>,
    positions: Option<Io>,
    logits: Option<Io>,
}

/// One chip of the pipeline (of one, for most models) and its programs.
struct ChipRun {
    chip: Chip,
    /// One token a run; and a full chunk a run, if the artifact has it.
    decode: Loaded,
    prefill: Option<Loaded>,
}

/// A tsp artifact on simulated chips.
pub struct TspExecutor {
    info: ArtifactInfo,
    chips: Vec<ChipRun>,
    logits: Vec<f32>,
    /// What the runs so far counted.
    counted: Simulated,
}

impl std::fmt::Debug for TspExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let instructions: usize = self.chips.iter().map(|c| c.decode.program.instrs.len()).sum();
        write!(f, "TspExecutor({} chips, {instructions} instructions)", self.chips.len())
    }
}

/// Writes `values` (a lane each, the rest zero) as the i32 vector at `io`.
fn put(chip: &mut Chip, io: &Io, values: &[i32]) -> Result<(), String> {
    let mut lanes = vec![0i32; chip.config().lanes()];
    lanes[..values.len()].copy_from_slice(values);
    chip.load(io.slice as usize, io.row, &to_rows(&Vector::I32(lanes)))
}

impl TspExecutor {
    fn prefill_tokens(&self) -> Option<usize> {
        self.chips[0].prefill.as_ref().map(|p| p.program.tokens as usize)
    }

    /// One run of the prefill programs (`prefill`) or the decode programs
    /// on `ids` at positions from `start`, chip after chip of the pipeline
    /// (all counting cycles from the run's start), watched by `observer`;
    /// appends the logits of every token.
    fn run_once(&mut self, ids: &[u32], start: usize, prefill: bool, mut observer: Option<&mut DispatchObserver<'_>>) -> Result<(), String> {
        let ids: Vec<i32> = ids.iter().map(|&id| id as i32).collect();
        let positions_of: Vec<i32> = (0..ids.len()).map(|i| (start + i) as i32).collect();
        let TspExecutor { info, chips, logits: out, counted } = self;
        let manifest = info.manifest();
        let (mut sent, mut cycles) = (Vec::new(), 0);
        let (mut logits_at, count) = (None, chips.len());
        for (c, run) in chips.iter_mut().enumerate() {
            let loaded = if prefill { run.prefill.as_ref().expect("checked by the caller") } else { &run.decode };
            if let Some(io) = &loaded.tokens {
                put(&mut run.chip, io, &ids)?;
            }
            if let Some(io) = &loaded.positions {
                put(&mut run.chip, io, &positions_of)?;
            }
            run.chip.receive(std::mem::take(&mut sent));
            let program = &loaded.program;
            let stats = match observer.as_deref_mut() {
                None => run.chip.run(program),
                Some(observer) => run.chip.run_observed(program, &mut |d, chip| {
                    let Some(spec) = manifest.dispatches.get(d) else { return };
                    // Each bound activation's row for this token, as the
                    // dispatch will read it.
                    let rows: Vec<Option<Vec<f32>>> = spec.buffers.iter().map(|name| program.io.iter().find(|io| io.name == *name && io.name != "tokens" && io.name != "positions").map(|io| read_row(chip, io))).collect();
                    let views: Vec<Option<&[f32]>> = rows.iter().map(|r| r.as_deref()).collect();
                    observer(d, spec, &views);
                }),
            }
            .map_err(|e| if count > 1 { format!("chip {c} of {count}: {e}") } else { e.to_string() })?;
            sent = run.chip.take_sent();
            cycles = cycles.max(stats.cycles);
            counted.installed_vectors += stats.installed_vectors;
            counted.mxm_busy += stats.mxm_busy;
            if let Some(io) = &loaded.logits {
                logits_at = Some((c, io.clone()));
            }
        }
        counted.cycles += cycles;
        counted.runs += 1;
        counted.tokens += ids.len() as u64;
        let (c, logits) = logits_at.ok_or("no chip gives the logits")?;
        let chip = &chips[c].chip;
        let lanes = chip.config().lanes();
        let vocab = logits.width as usize;
        let vectors = vocab.div_ceil(lanes);
        for t in 0..ids.len() {
            for v in 0..vectors {
                let (slice, row) = logits.vector_at(t, v, ids.len(), lanes);
                let bytes = chip.rows(slice, row, 4);
                let Vector::F32(values) = from_rows(Elem::F32, bytes, lanes) else { unreachable!("f32 rows") };
                let take = (vocab - v * lanes).min(lanes);
                out.extend_from_slice(&values[..take]);
            }
        }
        Ok(())
    }
}

/// One token's row of the activation at `io` (f32 vectors in SRAM).
fn read_row(chip: &Chip, io: &Io) -> Vec<f32> {
    let lanes = chip.config().lanes();
    let width = io.width as usize;
    let mut row = Vec::with_capacity(width.div_ceil(lanes) * lanes);
    for v in 0..width.div_ceil(lanes) {
        // A watched run is one token.
        let (slice, at) = io.vector_at(0, v, 1, lanes);
        if let Vector::F32(values) = from_rows(Elem::F32, chip.rows(slice, at, 4), lanes) {
            row.extend(values);
        }
    }
    row.truncate(width);
    row
}

impl Executor for TspExecutor {
    fn info(&self) -> &ArtifactInfo {
        &self.info
    }

    fn backend(&self) -> String {
        let c = self.chips[0].chip.config();
        let chips = match self.chips.len() {
            1 => String::new(),
            n => format!("{n} chips in a pipeline, "),
        };
        format!("TSP simulator ({chips}{} lanes, {} MXM planes, {} MHz)", c.lanes(), c.mxm_planes, c.clock_mhz)
    }

    fn run_chunk(&mut self, ids: &[u32], start: usize, observer: Option<&mut DispatchObserver<'_>>) -> Result<(), DeviceError> {
        let mut observer = observer;
        if observer.is_some() && ids.len() > 1 {
            return Err(DeviceError(format!("{}: the TSP programs are watched a token a call", self.info.path())));
        }
        let path = self.info.path().to_string();
        let fail = |e: String| DeviceError(format!("{path}: {e}"));
        self.logits.clear();
        // Whole prefill chunks in one run of the prefill program each (not
        // watched: a watched call is one token); the rest a token a run.
        let chunk = match (self.prefill_tokens(), &observer) {
            (Some(tokens), None) => tokens,
            _ => usize::MAX,
        };
        let mut done = 0;
        while ids.len() - done >= chunk {
            self.run_once(&ids[done..done + chunk], start + done, true, None).map_err(fail)?;
            done += chunk;
        }
        for (i, &id) in ids.iter().enumerate().skip(done) {
            self.run_once(&[id], start + i, false, observer.as_deref_mut()).map_err(fail)?;
        }
        Ok(())
    }

    fn logits(&self, tokens: usize) -> &[f32] {
        &self.logits[..tokens * self.info.manifest().model.vocab_size]
    }

    fn measure_bandwidth(&mut self, _runs: usize) -> Result<MeasuredBandwidth, String> {
        Err("the TSP simulator has no memory to time: its figures are cycles (q35-rt bench prints them)".into())
    }

    fn simulated(&self) -> Option<Simulated> {
        let c = self.chips[0].chip.config();
        Some(Simulated {
            clock_hz: c.clock_mhz * 1e6,
            install_cycles_per_vector: 1.0 / (c.mxm_planes * c.install_vectors_per_cycle) as f64,
            mxm_planes: c.mxm_planes * self.chips.len(),
            chips: self.chips.len(),
            ..self.counted
        })
    }
}
