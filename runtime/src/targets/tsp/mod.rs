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
    let program: Program = text.parse().map_err(|e| invalid(format!("`{}`: {e}", manifest.code)))?;
    let config = match &program.config {
        Some(json) => TspConfig::from_json(json).map_err(|e| invalid(format!("`{}`: its machine description: {e}", manifest.code)))?,
        None => TspConfig::default(),
    };
    if program.tokens != 1 {
        return Err(invalid(format!("the TSP program runs {} tokens at once; this simulator runs one-token programs", program.tokens)));
    }
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
    let io = |name: &str| program.io.iter().find(|io| io.name == name).cloned().ok_or_else(|| invalid(format!("the TSP program has no `io {name}` line")));
    let (tokens, positions, logits) = (io("tokens")?, io("positions")?, io("logits")?);
    if logits.width as usize != manifest.model.vocab_size {
        return Err(invalid(format!("the program's logits are {} wide, the model's vocabulary {}", logits.width, manifest.model.vocab_size)));
    }
    Ok(Box::new(TspExecutor {
        info: validated.info,
        chip,
        program,
        tokens,
        positions,
        logits_at: logits,
        logits: Vec::new(),
        counted: Simulated::default(),
    }))
}

/// A tsp artifact on a simulated chip.
pub struct TspExecutor {
    info: ArtifactInfo,
    chip: Chip,
    program: Program,
    tokens: Io,
    positions: Io,
    logits_at: Io,
    logits: Vec<f32>,
    /// What the runs so far counted.
    counted: Simulated,
}

impl std::fmt::Debug for TspExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TspExecutor({} instructions)", self.program.instrs.len())
    }
}

impl TspExecutor {
    fn put(&mut self, io: &Io, value: i32) -> Result<(), String> {
        let mut lanes = vec![0i32; self.chip.config().lanes()];
        lanes[0] = value;
        self.chip.load(io.slice as usize, io.row, &to_rows(&Vector::I32(lanes)))
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
            return Err(DeviceError(format!("{}: the TSP program runs a token at a time; watch its dispatches one token a call", self.info.path())));
        }
        let lanes = self.chip.config().lanes();
        let vocab = self.logits_at.width as usize;
        let vectors = vocab.div_ceil(lanes);
        self.logits.clear();
        for (i, &id) in ids.iter().enumerate() {
            let path = self.info.path().to_string();
            let fail = |e: String| DeviceError(format!("{path}: {e}"));
            let (tokens, positions) = (self.tokens.clone(), self.positions.clone());
            self.put(&tokens, id as i32).map_err(fail)?;
            self.put(&positions, (start + i) as i32).map_err(fail)?;
            let stats = match observer.as_deref_mut() {
                None => self.chip.run(&self.program),
                Some(observer) => {
                    let (manifest, program) = (self.info.manifest(), &self.program);
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
            .map_err(|e| DeviceError(format!("{}: {e}", self.info.path())))?;
            self.counted.cycles += stats.cycles;
            self.counted.runs += 1;
            self.counted.installed_vectors += stats.installed_vectors;
            self.counted.mxm_busy += stats.mxm_busy;
            for v in 0..vectors {
                let bytes = self.chip.rows(self.logits_at.slice as usize, self.logits_at.row + 4 * v as u32, 4);
                let Vector::F32(values) = from_rows(Elem::F32, bytes, lanes) else { unreachable!("f32 rows") };
                let take = (vocab - v * lanes).min(lanes);
                self.logits.extend_from_slice(&values[..take]);
            }
        }
        Ok(())
    }

    fn logits(&self, tokens: usize) -> &[f32] {
        &self.logits[..tokens * self.logits_at.width as usize]
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
