//! A whole model as one CSL program: a region of PEs for every dispatch of
//! the plan (a matmul's rectangle, one PE for a row op, one PE a KV head
//! for attention), packed onto the wafer in rows, and the `layout.csl`
//! that places them. The host runs the dispatches in order, copying a
//! token's activations in and out of each region and launching it, as
//! the SDK's runner does with memcpy; the weights are copied in once,
//! as data.

use crate::emit::{self, layout_header, matmul_call, LAYOUT_EXPORTS, MATMUL_REGION};
use crate::partition::BlockSize;
use crate::rows;
use q35_format::csl::{BlockShape, CslConfig, CslFile, CslProgram, Region, RegionKind};
use q35_target::kernel::RowOp;
use q35_target::{KernelSpec, Plan};
use std::collections::HashMap;

/// The block size whole-model programs use: small enough that SmolLM2's
/// widest matrices span few PE rows, large enough to keep their count low.
pub const BLOCK: BlockSize = BlockSize { rows: 64, groups: 1 };

fn region(kind: RegionKind, width: usize, height: usize) -> Region {
    Region { kind, x0: 0, y0: 0, width, height, rows: 0, cols: 0, weight: None }
}

/// Lowers `plan` to the program for `config`'s wafer.
pub fn lower(config: &CslConfig, plan: &Plan) -> Result<CslProgram, String> {
    let mut regions: Vec<Region> = Vec::new();
    let mut dispatches = Vec::with_capacity(plan.dispatches.len());
    let mut by_weight: HashMap<String, usize> = HashMap::new();
    let mut attention_of_cache: HashMap<String, usize> = HashMap::new();
    // How layout.csl places each region: a matmul call, or tiles with this code and params.
    let mut calls: Vec<(usize, Option<BlockShape>, String)> = Vec::new();
    let mut kinds = Vec::new();
    let data = config.data_bytes();
    for (i, d) in plan.dispatches.iter().enumerate() {
        let spec = plan.kernels.get(&d.kernel).ok_or_else(|| format!("dispatch {i} names kernel `{}`, which the plan does not describe", d.kernel))?;
        let index = match spec {
            KernelSpec::Matmul(m) | KernelSpec::Embedding(m) => {
                let weight = d.buffers.get(1).ok_or_else(|| format!("dispatch {i} binds no weight"))?.clone();
                if let Some(&r) = by_weight.get(&weight) {
                    r
                } else {
                    if !m.quant.is_coded() {
                        return Err(format!("`{weight}` is {}: the csl target keeps coded weights on its PEs", m.quant));
                    }
                    // A matrix taller than the wafer is wide takes more rows a PE.
                    let rows = BLOCK.rows.max(m.n.div_ceil(config.program_width()).next_multiple_of(16));
                    let shape = BlockSize { rows, ..BLOCK }.shape(m.n, m.k, m.quant, m.group)?;
                    let bytes = shape.max_data_bytes();
                    if bytes > data {
                        return Err(format!("`{weight}`'s PEs would declare {bytes} bytes of data; a PE has {data}"));
                    }
                    let mut r = region(RegionKind::Matmul, shape.width(), shape.height());
                    (r.rows, r.cols, r.weight) = (shape.rows, shape.cols, Some(weight.clone()));
                    calls.push((regions.len(), Some(shape), String::new()));
                    kinds.push(m.quant);
                    regions.push(r);
                    by_weight.insert(weight, regions.len() - 1);
                    regions.len() - 1
                }
            }
            KernelSpec::Row { op, width, .. } => {
                let (kind, text) = match op {
                    RowOp::Rotate { .. } => return Err(format!("`{}`: the csl target does not run q35.rotate (the online rotation); compile with --rotation off", d.kernel)),
                    RowOp::RmsNorm { epsilon } => (RegionKind::Norm, format!("\"pe_program_norm.csl\", .{{ .memcpy_params = memcpy.get_params(X), .width = {width}, .epsilon = {:e} }}", *epsilon as f32)),
                    other => {
                        let code = match other {
                            RowOp::Add => 0,
                            RowOp::Mul => 1,
                            RowOp::Silu => 2,
                            _ => 3,
                        };
                        (RegionKind::Rows, format!("\"pe_program_rows.csl\", .{{ .memcpy_params = memcpy.get_params(X), .width = {width}, .op = {code} }}"))
                    }
                };
                if 12 * width > data {
                    return Err(format!("a {width}-wide row op needs {} bytes on its PE; a PE has {data}", 12 * width));
                }
                let mut r = region(kind, 1, 1);
                if kind == RegionKind::Norm {
                    r.weight = d.buffers.get(1).cloned();
                }
                calls.push((regions.len(), None, text));
                regions.push(r);
                regions.len() - 1
            }
            KernelSpec::Rope { width, head_dim, .. } => {
                calls.push((regions.len(), None, format!("\"pe_program_rope.csl\", .{{ .memcpy_params = memcpy.get_params(X), .width = {width}, .head_dim = {head_dim} }}")));
                regions.push(region(RegionKind::Rope, 1, 1));
                regions.len() - 1
            }
            KernelSpec::KvUpdate(_) | KernelSpec::Attention { .. } => {
                let (KernelSpec::KvUpdate(s) | KernelSpec::Attention { shape: s, .. }) = spec else { unreachable!() };
                let cache = if matches!(spec, KernelSpec::KvUpdate(_)) { d.buffers.get(2) } else { d.buffers.get(1) };
                let cache = cache.ok_or_else(|| format!("dispatch {i} binds no KV cache"))?.clone();
                if let Some(&r) = attention_of_cache.get(&cache) {
                    r
                } else {
                    let group = s.num_heads / s.num_kv_heads;
                    let bytes = rows::attention_bytes(s.head_dim, group, s.context);
                    if bytes > data {
                        let most = (data / 4 - 2 * group * s.head_dim - 2 * s.head_dim - 1) / (2 * s.head_dim + 1);
                        return Err(format!(
                            "a KV head's cache of {} positions takes {bytes} bytes on its PE, which has {data}: compile with --context {most} or less (the cache is not yet split over PEs)",
                            s.context
                        ));
                    }
                    calls.push((
                        regions.len(),
                        None,
                        format!("\"pe_program_attention.csl\", .{{ .memcpy_params = memcpy.get_params(X), .head_dim = {}, .group = {group}, .context = {} }}", s.head_dim, s.context),
                    ));
                    regions.push(region(RegionKind::Attention, s.num_kv_heads, 1));
                    attention_of_cache.insert(cache, regions.len() - 1);
                    regions.len() - 1
                }
            }
            KernelSpec::QuantizeActivations(_) => return Err("the csl target runs f32 activations (no --activations int8)".into()),
        };
        dispatches.push(index);
    }
    let (width, height, gaps) = pack(config, &mut regions)?;
    // The layout: one call or tile a region.
    let mut layout = format!("// q35c: {} regions of PEs, one a dispatch's matmul, row op or attention, on {width} x {height} PEs.\n", regions.len());
    layout += &layout_header(width, height);
    layout += "\n";
    kinds.sort_by_key(|k| k.to_string());
    kinds.dedup();
    // One matmul function and PE program per code kind.
    for kind in &kinds {
        layout += &MATMUL_REGION.replace("fn matmul(", &format!("fn matmul_{kind}(")).replace("pe_program_matmul.csl", &format!("pe_program_matmul_{kind}.csl"));
    }
    layout += IDLE_REGION;
    layout += "\nlayout {\n  @set_rectangle(fabric_width, fabric_height);\n";
    for (x0, y0, w, h) in &gaps {
        layout += &format!("  idle({x0}, {y0}, {w}, {h});\n");
    }
    for (index, shape, text) in calls {
        let r = &regions[index];
        match shape {
            Some(shape) => layout += &matmul_call(r.x0, r.y0, &shape).replacen("matmul(", &format!("matmul_{}(", shape.kind), 1),
            None => {
                for h in 0..r.width {
                    let x = r.x0 + h;
                    layout += &format!("  @set_tile_code({x}, {}, {});\n", r.y0, text.replace("get_params(X)", &format!("get_params({x})")));
                }
            }
        }
    }
    layout += LAYOUT_EXPORTS;
    layout += "  @export_name(\"store\", fn()void);\n}\n";
    let mut files = vec![CslFile { name: "layout.csl".into(), text: layout }];
    files.extend(kinds.iter().map(|&kind| CslFile { name: format!("pe_program_matmul_{kind}.csl"), text: emit::pe_program(kind) }));
    files.extend([
        CslFile { name: "pe_program_norm.csl".into(), text: rows::norm() },
        CslFile { name: "pe_program_rows.csl".into(), text: rows::elementwise() },
        CslFile { name: "pe_program_rope.csl".into(), text: rows::rope() },
        CslFile { name: "pe_program_attention.csl".into(), text: rows::attention() },
        CslFile { name: "pe_program_idle.csl".into(), text: IDLE_PROGRAM.into() },
    ]);
    Ok(CslProgram { config: config.clone(), files, width, height, regions, dispatches })
}

/// The PEs no region uses, between and beside regions: every PE of the
/// rectangle has code.
const IDLE_REGION: &str = "
// PEs no region uses.
fn idle(x0: i16, y0: i16, width: i16, height: i16) void {
  var x: i16 = 0;
  while (x < width) : (x += 1) {
    var y: i16 = 0;
    while (y < height) : (y += 1) {
      @set_tile_code(x0 + x, y0 + y, \"pe_program_idle.csl\", .{ .memcpy_params = memcpy.get_params(x0 + x) });
    }
  }
}
";

const IDLE_PROGRAM: &str = "// q35c: a PE no region uses.

param memcpy_params: comptime_struct;

const sys_mod = @import_module(\"<memcpy/memcpy>\", memcpy_params);
";

/// Places the regions in rows (shelves) across the wafer; the program's
/// rectangle and the gaps no region fills.
fn pack(config: &CslConfig, regions: &mut [Region]) -> Result<(usize, usize, Vec<(usize, usize, usize, usize)>), String> {
    let (limit_w, limit_h) = (config.program_width(), config.program_height());
    let mut shelves: Vec<(usize, usize, Vec<usize>)> = Vec::new(); // (y, height, regions)
    let (mut x, mut y) = (0, 0);
    for (i, r) in regions.iter_mut().enumerate() {
        if r.width > limit_w {
            return Err(format!("region {i} is {} PEs wide; the wafer has {limit_w} columns", r.width));
        }
        if shelves.is_empty() || x + r.width > limit_w {
            y += shelves.last().map_or(0, |s| s.1);
            shelves.push((y, 0, Vec::new()));
            x = 0;
        }
        let shelf = shelves.last_mut().expect("pushed");
        (r.x0, r.y0) = (x, shelf.0);
        x += r.width;
        shelf.1 = shelf.1.max(r.height);
        shelf.2.push(i);
    }
    let width = regions.iter().map(|r| r.x0 + r.width).max().unwrap_or(1);
    let height = shelves.last().map_or(1, |s| s.0 + s.1);
    if height > limit_h {
        return Err(format!("the model's regions take {height} rows of {limit_w} PEs; the wafer has {limit_h}"));
    }
    let mut gaps = Vec::new();
    for (sy, sh, members) in &shelves {
        for &i in members {
            let r = &regions[i];
            if r.height < *sh {
                gaps.push((r.x0, r.y0 + r.height, r.width, sh - r.height));
            }
        }
        let end = members.last().map_or(0, |&i| regions[i].x0 + regions[i].width);
        if end < width {
            gaps.push((end, *sy, width - end, *sh));
        }
    }
    Ok((width, height, gaps))
}
