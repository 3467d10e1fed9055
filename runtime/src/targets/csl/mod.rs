//! The CSL target: a simulator of a wafer of PEs that runs the CSL text
//! q35c emitted ([`ast`] and [`parse`]: the language subset; [`interp`]:
//! one PE's statements, expressions and DSD operations; [`wafer`]: the
//! layout, the fabric's colours and routes, tasks in cycle order).
//!
//! Loading runs the program's `layout.csl` and every PE's declarations,
//! then copies the weights in as data, as the SDK's host does with memcpy:
//! each matmul region's codes and group parameters
//! (`q35_format::csl::Block`), each norm's weights, RoPE's frequencies. A
//! run takes a token at a time through the dispatches in the plan's
//! order, copying its activations into a region, launching the region's
//! function and copying the result out; the KV caches stay on their PEs.
//! The cycles are the launches' (host copies are not counted).

pub mod ast;
pub mod interp;
pub mod parse;
pub mod value;
pub mod wafer;

use super::{DeviceError, DispatchObserver, Executor, LoadOptions, Simulated};
use crate::artifact::{code_signatures, ArtifactInfo, LoadError, Validated};
use crate::bandwidth::MeasuredBandwidth;
use q35_format::artifact::Artifact;
use q35_format::csl::{Block, BlockShape, CslProgram, Region, RegionKind};
use q35_format::QuantizedTensor;
use std::collections::HashMap;
use wafer::Wafer;

/// Loads a csl artifact onto a simulated wafer.
pub fn load(path: &str, artifact: &Artifact<'_>, file_bytes: u64, _options: LoadOptions) -> Result<Box<dyn Executor>, LoadError> {
    let manifest = &artifact.manifest;
    let invalid = |what: String| LoadError::Invalid { path: path.to_string(), what };
    let code = artifact.payload(&manifest.code).ok_or_else(|| invalid(format!("the code object `{}` is missing", manifest.code)))?;
    let validated = Validated::new(path, artifact, file_bytes, || {
        code_signatures(manifest, code).map_err(|what| LoadError::Signature { path: path.to_string(), payload: manifest.code.clone(), what })
    })?;
    let text = std::str::from_utf8(code).map_err(|e| invalid(format!("the CSL program is not UTF-8 text ({e})")))?;
    let program = CslProgram::parse(text).map_err(|e| invalid(format!("`{}`: {e}", manifest.code)))?;
    if program.dispatches.len() != manifest.dispatches.len() {
        return Err(invalid(format!("the CSL program places {} dispatches, the plan has {}", program.dispatches.len(), manifest.dispatches.len())));
    }
    let files: Vec<(String, String)> = program.files.iter().map(|f| (f.name.clone(), f.text.clone())).collect();
    let mut wafer = Wafer::load(&program.config, &files).map_err(|e| invalid(format!("the CSL program: {e}")))?;
    let tensor = |name: &str| -> Result<QuantizedTensor, LoadError> {
        let spec = manifest.weights.iter().find(|w| w.name == name).ok_or_else(|| invalid(format!("the CSL program places `{name}`, which the artifact does not hold")))?;
        let bytes = artifact.payload(&spec.tensor).ok_or_else(|| invalid(format!("weight `{name}`: payload `{}` is missing", spec.tensor)))?;
        QuantizedTensor::from_bytes(spec.name.clone(), bytes).map_err(|e| invalid(format!("weight `{name}`: {e}")))
    };
    let sim = |e: wafer::SimError| invalid(format!("copying the weights in: {e}"));
    let bits = |v: &[u16]| v.iter().map(|&b| u32::from(b)).collect::<Vec<u32>>();
    let model = &manifest.model;
    for region in &program.regions {
        match (region.kind, &region.weight) {
            (RegionKind::Matmul, Some(name)) => {
                let t = tensor(name)?;
                let shape = BlockShape::new(t.rows(), t.cols(), t.kind(), t.group(), region.rows, region.cols).map_err(|e| invalid(format!("`{name}`: {e}")))?;
                if (shape.width(), shape.height()) != (region.width, region.height) {
                    return Err(invalid(format!("`{name}` split {} x {} does not fill its {} x {} region", shape.width(), shape.height(), region.width, region.height)));
                }
                for px in 0..shape.width() {
                    for py in 0..shape.height() {
                        let block = Block::pack(&t, &shape, px, py).map_err(invalid)?;
                        let (x, y) = (region.x0 + px, region.y0 + py);
                        wafer.write(x, y, "codes", &bits(&block.codes)).map_err(sim)?;
                        wafer.write(x, y, "mins", &bits(&block.mins)).map_err(sim)?;
                        wafer.write(x, y, "range_codes", &bits(&block.range_codes)).map_err(sim)?;
                        wafer.write(x, y, "range_scales", &bits(&block.range_scales)).map_err(sim)?;
                    }
                }
            }
            (RegionKind::Norm, Some(name)) => {
                let values: Vec<u32> = tensor(name)?.dequantize().iter().map(|v| v.to_bits()).collect();
                wafer.write(region.x0, region.y0, "w", &values).map_err(sim)?;
            }
            (RegionKind::Rope, _) => {
                // theta^(-2i/d), rounded once to f32.
                let d = model.head_dim as f64;
                let freqs: Vec<u32> = (0..model.head_dim / 2).map(|i| (model.rope_theta.powf(-2.0 * i as f64 / d) as f32).to_bits()).collect();
                wafer.write(region.x0, region.y0, "w", &freqs).map_err(sim)?;
            }
            (RegionKind::Matmul | RegionKind::Norm, None) => return Err(invalid("a matmul or norm region names no weight".into())),
            _ => {}
        }
    }
    let output = manifest.buffers.iter().find(|b| b.role == "output").map(|b| b.name.clone()).ok_or_else(|| invalid("the plan has no output buffer".into()))?;
    let pes = program.regions.iter().map(|r| (r.width * r.height) as u64).sum();
    Ok(Box::new(CslExecutor { info: validated.info, program, wafer, output, logits: Vec::new(), counted: Simulated::default(), pes }))
}

/// A csl artifact on a simulated wafer.
pub struct CslExecutor {
    info: ArtifactInfo,
    program: CslProgram,
    wafer: Wafer,
    output: String,
    logits: Vec<f32>,
    counted: Simulated,
    pes: u64,
}

impl std::fmt::Debug for CslExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CslExecutor({:?}, {} regions)", self.wafer, self.program.regions.len())
    }
}

fn f32_bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

impl CslExecutor {
    /// Launches `function` on `region`; counts its cycles.
    fn launch(&mut self, function: &str, region: &Region) -> Result<(), String> {
        let stats = self.wafer.launch_region(function, region.x0, region.y0, region.width, region.height).map_err(|e| e.to_string())?;
        self.counted.cycles += stats.cycles;
        self.counted.pe_busy += stats.busy;
        Ok(())
    }

    /// One token through every dispatch.
    fn token(&mut self, id: u32, position: usize, mut observer: Option<&mut DispatchObserver<'_>>) -> Result<(), String> {
        let manifest = self.info.manifest().clone();
        let model = &manifest.model;
        let mut values: HashMap<String, Vec<f32>> = HashMap::new();
        let pos = [(position as f32).to_bits()];
        for (d, spec) in manifest.dispatches.iter().enumerate() {
            let region = self.program.regions[self.program.dispatches[d]].clone();
            if let Some(observer) = observer.as_deref_mut() {
                let views: Vec<Option<&[f32]>> = spec.buffers.iter().map(|b| values.get(b).map(|v| v.as_slice())).collect();
                observer(d, spec, &views);
            }
            let input = |values: &HashMap<String, Vec<f32>>, i: usize| -> Result<Vec<f32>, String> {
                let name = spec.buffers.get(i).ok_or_else(|| format!("dispatch {d} binds no buffer {i}"))?;
                values.get(name).cloned().ok_or_else(|| format!("dispatch {d} reads `{name}` before any dispatch wrote it"))
            };
            let out = spec.buffers.last().cloned().unwrap_or_default();
            let w = &mut self.wafer;
            match region.kind {
                RegionKind::Matmul if spec.buffers.first().map(String::as_str) == Some("tokens") => {
                    // The embedding: row `id` from the PE column holding it.
                    let rows = region.rows;
                    let (px, local) = (id as usize / rows, id as usize % rows);
                    let x = region.x0 + px;
                    let column = Region { x0: x, width: 1, ..region.clone() };
                    for py in 0..region.height {
                        w.write(x, region.y0 + py, "arg", &[(local as f32).to_bits()]).map_err(|e| e.to_string())?;
                    }
                    self.launch("lookup", &column)?;
                    let mut row = Vec::new();
                    for py in 0..region.height {
                        let part = self.wafer.read_f32(x, region.y0 + py, "x")?;
                        let cols = region.cols.min(model.hidden_size - py * region.cols);
                        row.extend_from_slice(&part[..cols]);
                    }
                    values.insert(out, row);
                }
                RegionKind::Matmul => {
                    let x = input(&values, 0)?;
                    for py in 0..region.height {
                        let span = (py * region.cols).min(x.len())..((py + 1) * region.cols).min(x.len());
                        w.write(region.x0, region.y0 + py, "x", &f32_bits(&x[span])).map_err(|e| e.to_string())?;
                    }
                    self.launch("compute", &region)?;
                    let width = manifest.buffers.iter().find(|b| b.name == out).map_or(0, |b| b.width);
                    let mut y = Vec::with_capacity(width);
                    for px in 0..region.width {
                        let part = self.wafer.read_f32(region.x0 + px, region.y0 + region.height - 1, "y")?;
                        let take = region.rows.min(width - y.len());
                        y.extend_from_slice(&part[..take]);
                    }
                    values.insert(out, y);
                }
                RegionKind::Norm | RegionKind::Rows | RegionKind::Rope => {
                    let x = input(&values, 0)?;
                    w.write(region.x0, region.y0, "x", &f32_bits(&x)).map_err(|e| e.to_string())?;
                    match region.kind {
                        RegionKind::Rows if spec.buffers.len() == 3 => {
                            let b = input(&values, 1)?;
                            w.write(region.x0, region.y0, "w", &f32_bits(&b)).map_err(|e| e.to_string())?;
                        }
                        RegionKind::Rope => w.write(region.x0, region.y0, "arg", &pos).map_err(|e| e.to_string())?,
                        _ => {}
                    }
                    self.launch("compute", &region)?;
                    let mut y = self.wafer.read_f32(region.x0, region.y0, "y")?;
                    y.truncate(x.len());
                    values.insert(out, y);
                }
                RegionKind::Attention => {
                    let hd = model.head_dim;
                    let group = model.num_attention_heads / model.num_key_value_heads;
                    if spec.kernel.starts_with("kv_update") {
                        let (k, v) = (input(&values, 0)?, input(&values, 1)?);
                        for h in 0..region.width {
                            let mut kv = k[h * hd..(h + 1) * hd].to_vec();
                            kv.extend_from_slice(&v[h * hd..(h + 1) * hd]);
                            w.write(region.x0 + h, region.y0, "w", &f32_bits(&kv)).map_err(|e| e.to_string())?;
                            w.write(region.x0 + h, region.y0, "arg", &pos).map_err(|e| e.to_string())?;
                        }
                        self.launch("store", &region)?;
                    } else {
                        let q = input(&values, 0)?;
                        let span = group * hd;
                        for h in 0..region.width {
                            w.write(region.x0 + h, region.y0, "x", &f32_bits(&q[h * span..(h + 1) * span])).map_err(|e| e.to_string())?;
                            w.write(region.x0 + h, region.y0, "arg", &pos).map_err(|e| e.to_string())?;
                        }
                        self.launch("compute", &region)?;
                        let mut y = Vec::with_capacity(q.len());
                        for h in 0..region.width {
                            y.extend_from_slice(&self.wafer.read_f32(region.x0 + h, region.y0, "y")?);
                        }
                        values.insert(out, y);
                    }
                }
            }
        }
        let logits = values.remove(&self.output).ok_or("no dispatch wrote the logits")?;
        self.logits.extend_from_slice(&logits);
        self.counted.runs += 1;
        self.counted.tokens += 1;
        Ok(())
    }
}

impl Executor for CslExecutor {
    fn info(&self) -> &ArtifactInfo {
        &self.info
    }

    fn backend(&self) -> String {
        let c = &self.program.config;
        format!("CSL simulator ({} x {} PEs of a {} x {} wafer, {} regions, {} MHz)", self.program.width, self.program.height, c.fabric_width, c.fabric_height, self.program.regions.len(), c.clock_mhz)
    }

    fn run_chunk(&mut self, ids: &[u32], start: usize, mut observer: Option<&mut DispatchObserver<'_>>) -> Result<(), DeviceError> {
        if observer.is_some() && ids.len() > 1 {
            return Err(DeviceError(format!("{}: the CSL program is watched a token a call", self.info.path())));
        }
        self.logits.clear();
        for (i, &id) in ids.iter().enumerate() {
            self.token(id, start + i, observer.as_deref_mut()).map_err(|e| DeviceError(format!("{}: {e}", self.info.path())))?;
        }
        Ok(())
    }

    fn logits(&self, tokens: usize) -> &[f32] {
        &self.logits[..tokens * self.info.manifest().model.vocab_size]
    }

    fn measure_bandwidth(&mut self, _runs: usize) -> Result<MeasuredBandwidth, String> {
        Err("the CSL simulator has no memory to time: its figures are cycles (q35-rt bench prints them)".into())
    }

    fn simulated(&self) -> Option<Simulated> {
        Some(Simulated { clock_hz: self.program.config.clock_mhz * 1e6, pes: self.pes, chips: 1, ..self.counted })
    }
}
