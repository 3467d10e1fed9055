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
    let mut programs = Program::parse_all(text).map_err(|e| invalid(format!("`{}`: {e}", manifest.code)))?;
    // One token a run, and optionally a full chunk a run (prefill).
    let decode = programs.iter().position(|p| p.tokens == 1).ok_or_else(|| invalid(format!("`{}` has no one-token program", manifest.code)))?;
    let program = programs.remove(decode);
    let prefill = programs.into_iter().find(|p| p.tokens > 1);
    let config = match &program.config {
        Some(json) => TspConfig::from_json(json).map_err(|e| invalid(format!("`{}`: its machine description: {e}", manifest.code)))?,
        None => TspConfig::default(),
    };
    let mut chip = Chip::new(config);
    let lanes = chip.config().lanes();
    let mut weights: std::collections::HashMap<&str, QuantizedTensor> = std::collections::HashMap::new();
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
    let ends = |program: Program| -> Result<Loaded, LoadError> {
        let io = |name: &str| program.io.iter().find(|io| io.name == name).cloned().ok_or_else(|| invalid(format!("the TSP program has no `io {name}` line")));
        let (tokens, positions, logits) = (io("tokens")?, io("positions")?, io("logits")?);
        if logits.width as usize != manifest.model.vocab_size {
            return Err(invalid(format!("the program's logits are {} wide, the model's vocabulary {}", logits.width, manifest.model.vocab_size)));
        }
        Ok(Loaded { program, tokens, positions, logits })
    };
    let (decode, prefill) = (ends(program)?, prefill.map(ends).transpose()?);
    Ok(Box::new(TspExecutor {
        info: validated.info,
        chip,
        decode,
        prefill,
        logits: Vec::new(),
        counted: Simulated::default(),
    }))
}

/// A program and where it takes its inputs and leaves its logits.
struct Loaded {
    program: Program,
    tokens: Io,
    positions: Io,
    logits: Io,
}

/// A tsp artifact on a simulated chip.
pub struct TspExecutor {
    info: ArtifactInfo,
    chip: Chip,
    /// One token a run; and a full chunk a run, if the artifact has it.
    decode: Loaded,
    prefill: Option<Loaded>,
    logits: Vec<f32>,
    /// What the runs so far counted.
    counted: Simulated,
}

impl std::fmt::Debug for TspExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TspExecutor({} instructions)", self.decode.program.instrs.len())
    }
}

impl TspExecutor {
    /// Writes `values` (a lane each, the rest zero) as the i32 vector at `io`.
    fn put(&mut self, io: &Io, values: &[i32]) -> Result<(), String> {
        let mut lanes = vec![0i32; self.chip.config().lanes()];
        lanes[..values.len()].copy_from_slice(values);
        self.chip.load(io.slice as usize, io.row, &to_rows(&Vector::I32(lanes)))
    }

    /// One run of the prefill program (`prefill`) or the decode program on
    /// `ids` at positions from `start`, watched by `observer`; appends the
    /// logits of every token.
    fn run_once(&mut self, ids: &[u32], start: usize, prefill: bool, observer: Option<&mut DispatchObserver<'_>>) -> Result<(), String> {
        let loaded = if prefill { self.prefill.as_ref().expect("checked by the caller") } else { &self.decode };
        let (tokens, positions, logits) = (loaded.tokens.clone(), loaded.positions.clone(), loaded.logits.clone());
        let ids: Vec<i32> = ids.iter().map(|&id| id as i32).collect();
        let positions_of: Vec<i32> = (0..ids.len()).map(|i| (start + i) as i32).collect();
        self.put(&tokens, &ids)?;
        self.put(&positions, &positions_of)?;
        let loaded = if prefill { self.prefill.as_ref().expect("checked by the caller") } else { &self.decode };
        let stats = match observer {
            None => self.chip.run(&loaded.program),
            Some(observer) => {
                let (manifest, program) = (self.info.manifest(), &loaded.program);
                self.chip.run_observed(program, &mut |d, chip| {
                    let Some(spec) = manifest.dispatches.get(d) else { return };
                    // Each bound activation's row for this token, as the
                    // dispatch will read it.
                    let rows: Vec<Option<Vec<f32>>> = spec.buffers.iter().map(|name| program.io.iter().find(|io| io.name == *name && io.name != "tokens" && io.name != "positions").map(|io| read_row(chip, io))).collect();
                    let views: Vec<Option<&[f32]>> = rows.iter().map(|r| r.as_deref()).collect();
                    observer(d, spec, &views);
                })
            }
        }
        .map_err(|e| e.to_string())?;
        self.counted.cycles += stats.cycles;
        self.counted.runs += 1;
        self.counted.tokens += ids.len() as u64;
        self.counted.installed_vectors += stats.installed_vectors;
        self.counted.mxm_busy += stats.mxm_busy;
        let lanes = self.chip.config().lanes();
        let vocab = logits.width as usize;
        let vectors = vocab.div_ceil(lanes);
        for t in 0..ids.len() {
            for v in 0..vectors {
                let bytes = self.chip.rows(logits.slice as usize, logits.row + 4 * (t * vectors + v) as u32, 4);
                let Vector::F32(values) = from_rows(Elem::F32, bytes, lanes) else { unreachable!("f32 rows") };
                let take = (vocab - v * lanes).min(lanes);
                self.logits.extend_from_slice(&values[..take]);
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
        if let Vector::F32(values) = from_rows(Elem::F32, chip.rows(io.slice as usize, io.row + 4 * v as u32, 4), lanes) {
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
        let c = self.chip.config();
        format!("TSP simulator ({} lanes, {} MXM planes, {} MHz)", c.lanes(), c.mxm_planes, c.clock_mhz)
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
        let chunk = match (&self.prefill, &observer) {
            (Some(p), None) => p.program.tokens as usize,
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
        &self.logits[..tokens * self.decode.logits.width as usize]
    }

    fn measure_bandwidth(&mut self, _runs: usize) -> Result<MeasuredBandwidth, String> {
        Err("the TSP simulator has no memory to time: its figures are cycles (q35-rt bench prints them)".into())
    }

    fn simulated(&self) -> Option<Simulated> {
        let c = self.chip.config();
        Some(Simulated {
            clock_hz: c.clock_mhz * 1e6,
            install_cycles_per_vector: 1.0 / (c.mxm_planes * c.install_vectors_per_cycle) as f64,
            mxm_planes: c.mxm_planes,
            ..self.counted
        })
    }
}
