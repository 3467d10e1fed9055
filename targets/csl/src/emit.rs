//! CSL text of one dequant-matmul on its rectangle of PEs
//! (`q35_format::csl::block` says which weights each PE holds): a
//! `layout.csl` that places the PE program and routes the colours, and a
//! `pe_program.csl` every PE runs, in the shape of the SDK's GEMV
//! tutorials (column-wise `@fmacs`, weights as data the host copies in,
//! activations and partial sums over the fabric with async DSD moves that
//! activate the next task).

use q35_format::csl::BlockShape;
use q35_format::QuantKind;
use std::fmt::Write as _;

/// The files of one program, in the order the SDK compiles them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CslFiles {
    pub files: Vec<(String, String)>,
}

impl CslFiles {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.files.iter().find(|(n, _)| n == name).map(|(_, text)| text.as_str())
    }
}

/// Colours: activations along PE rows, partial sums down PE columns (two,
/// alternating by row, so a PE's input and output differ), memcpy's launch.
pub const X_COLOR: u32 = 0;
pub const SUM_EVEN_COLOR: u32 = 1;
pub const SUM_ODD_COLOR: u32 = 2;
pub const LAUNCH_COLOR: u32 = 8;

/// `layout.csl` and `pe_program.csl` of `name`'s matmul split as `shape`.
pub fn matmul(name: &str, shape: &BlockShape) -> CslFiles {
    CslFiles { files: vec![("layout.csl".into(), layout(name, shape)), ("pe_program_matmul.csl".into(), pe_program(shape.kind))] }
}

fn layout(name: &str, s: &BlockShape) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "// q35c: dequant-matmul `{name}` ({} x {}, {} g{}) on {} x {} PEs.", s.n, s.k, s.kind, s.group, s.width(), s.height());
    t += &layout_header(s.width(), s.height());
    t += "\n";
    t += MATMUL_REGION;
    t += "\nlayout {\n  @set_rectangle(fabric_width, fabric_height);\n";
    t += &matmul_call(0, 0, s);
    t += LAYOUT_EXPORTS;
    t += "}\n";
    t
}

/// The params, colours and memcpy import every layout starts with.
pub fn layout_header(width: usize, height: usize) -> String {
    format!(
        "
param fabric_width: i16 = {width};
param fabric_height: i16 = {height};

const LAUNCH: color = @get_color({LAUNCH_COLOR});
const x_color: color = @get_color({X_COLOR});
const sum_even: color = @get_color({SUM_EVEN_COLOR});
const sum_odd: color = @get_color({SUM_ODD_COLOR});

const memcpy = @import_module(\"<memcpy/get_params>\", .{{
  .width = fabric_width,
  .height = fabric_height,
  .LAUNCH = LAUNCH,
}});
"
    )
}

/// The symbols the host copies to and from, and the functions it launches.
pub const LAYOUT_EXPORTS: &str = "
  @export_name(\"x\", [*]f32, true);
  @export_name(\"y\", [*]f32, true);
  @export_name(\"w\", [*]f32, true);
  @export_name(\"arg\", [*]f32, true);
  @export_name(\"codes\", [*]u16, true);
  @export_name(\"mins\", [*]f16, true);
  @export_name(\"range_codes\", [*]u16, true);
  @export_name(\"range_scales\", [*]f16, true);
  @export_name(\"compute\", fn()void);
  @export_name(\"lookup\", fn()void);
";

/// `matmul(...)`'s call placing `s` with its north-west PE at (x0, y0).
pub fn matmul_call(x0: usize, y0: usize, s: &BlockShape) -> String {
    let (first, last) = (s.local_groups(0), s.local_groups(s.height() - 1));
    let h = s.height() - 1;
    format!(
        "  matmul({x0}, {y0}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {});\n",
        s.width(),
        s.height(),
        s.rows,
        s.span(0).len(),
        first.groups,
        first.group_width,
        first.last_width,
        s.code_words(0),
        s.span(h).len(),
        last.groups,
        last.group_width,
        last.last_width,
        s.code_words(h)
    )
}

/// Places a matmul's rectangle of PEs: PE (x, y) holds output rows
/// [x * rows, (x + 1) * rows) and input columns [y * cols, (y + 1) * cols)
/// of the weights, as codes. Activations enter each PE row at its west PE
/// and are broadcast east; partial sums flow south down each PE column and
/// leave at the bottom. The last PE row's figures are `tail_*` (K need not
/// divide evenly).
pub const MATMUL_REGION: &str = "// A dequant-matmul's rectangle of width x height PEs at (x0, y0): PE
// (x, y) holds output rows [x * rows, (x + 1) * rows) and input columns
// [y * cols, (y + 1) * cols) of the weights, as codes. Activations enter
// each PE row at its west PE and are broadcast east; partial sums flow
// south down each PE column and leave at the bottom. The last PE row's
// figures are the tail_ ones (K need not divide evenly).
fn matmul(x0: i16, y0: i16, width: i16, height: i16, rows: i16, cols: i16, groups: i16, group_width: i16, last_width: i16, code_words: i16,
          tail_cols: i16, tail_groups: i16, tail_group_width: i16, tail_last_width: i16, tail_code_words: i16) void {
  var x: i16 = 0;
  while (x < width) : (x += 1) {
    var y: i16 = 0;
    while (y < height) : (y += 1) {
      const tail = y == height - 1;
      var sum_in: color = sum_odd;
      var sum_out: color = sum_even;
      if (y % 2 == 1) {
        sum_in = sum_even;
        sum_out = sum_odd;
      }
      @set_tile_code(x0 + x, y0 + y, \"pe_program_matmul.csl\", .{
        .memcpy_params = memcpy.get_params(x0 + x),
        .rows = rows,
        .cols = if (tail) tail_cols else cols,
        .groups = if (tail) tail_groups else groups,
        .group_width = if (tail) tail_group_width else group_width,
        .last_width = if (tail) tail_last_width else last_width,
        .code_words = if (tail) tail_code_words else code_words,
        .first_row = y == 0,
        .last_row = tail,
        .first_col = x == 0,
        .last_col = x == width - 1,
        .x_color = x_color,
        .sum_in_color = sum_in,
        .sum_out_color = sum_out,
      });

      if (width == 1) {
        // One PE column: its PEs have their activations from the host.
      } else if (x == 0) {
        @set_color_config(x0 + x, y0 + y, x_color, .{ .routes = .{ .rx = .{RAMP}, .tx = .{EAST} } });
      } else if (x == width - 1) {
        @set_color_config(x0 + x, y0 + y, x_color, .{ .routes = .{ .rx = .{WEST}, .tx = .{RAMP} } });
      } else {
        @set_color_config(x0 + x, y0 + y, x_color, .{ .routes = .{ .rx = .{WEST}, .tx = .{RAMP, EAST} } });
      }
      if (y > 0) {
        @set_color_config(x0 + x, y0 + y, sum_in, .{ .routes = .{ .rx = .{NORTH}, .tx = .{RAMP} } });
      }
      if (!tail) {
        @set_color_config(x0 + x, y0 + y, sum_out, .{ .routes = .{ .rx = .{RAMP}, .tx = .{SOUTH} } });
      }
    }
  }
}
";

/// The matmul PE program for codes of `kind`.
pub fn pe_program(kind: QuantKind) -> String {
    let (four, three) = (kind != QuantKind::Int3, kind != QuantKind::Int4);
    let mut t = format!(
        "// q35c: one PE of a dequant-matmul ({kind}): y[rows] = W[rows, cols] . x[cols]
// over this PE's block, plus the partial sum of the PEs north of it.
// Codes are stored column by column: a 4-bit column is rows / 4 words of
// nibbles, a 3-bit column rows / 8 words of low bit pairs then rows / 16
// words of high bits (the artifact's planes, transposed).
"
    );
    t += "
param memcpy_params: comptime_struct;
param rows: i16;
param cols: i16;
param groups: i16;
param group_width: i16;
param last_width: i16;
param code_words: i16;
param first_row: bool;
param last_row: bool;
param first_col: bool;
param last_col: bool;
param x_color: color;
param sum_in_color: color;
param sum_out_color: color;

const sys_mod = @import_module(\"<memcpy/memcpy>\", memcpy_params);

const matvec_id: local_task_id = @get_local_task_id(9);
const reduce_id: local_task_id = @get_local_task_id(10);
const done_id: local_task_id = @get_local_task_id(11);

var x = @zeros([cols]f32);
var y = @zeros([rows]f32);
var w = @zeros([rows]f32);
var step4 = @zeros([rows]f32);
var step3 = @zeros([rows]f32);
var codes = @zeros([code_words]u16);
var mins = @zeros([groups * rows]f16);
var range_codes = @zeros([groups * rows]u16);
var range_scales = @zeros([rows]f16);
// The host's one-number argument: the row `lookup` decodes.
var arg = @zeros([1]f32);

var x_ptr: [*]f32 = &x;
var y_ptr: [*]f32 = &y;
var codes_ptr: [*]u16 = &codes;
var mins_ptr: [*]f16 = &mins;
var range_codes_ptr: [*]u16 = &range_codes;
var range_scales_ptr: [*]f16 = &range_scales;
var arg_ptr: [*]f32 = &arg;

const x_dsd = @get_dsd(mem1d_dsd, .{ .tensor_access = |i|{cols} -> x[i] });
const y_dsd = @get_dsd(mem1d_dsd, .{ .tensor_access = |i|{rows} -> y[i] });
const w_dsd = @get_dsd(mem1d_dsd, .{ .tensor_access = |i|{rows} -> w[i] });
const x_in = @get_dsd(fabin_dsd, .{ .extent = cols, .fabric_color = x_color, .input_queue = @get_input_queue(1) });
const x_out = @get_dsd(fabout_dsd, .{ .extent = cols, .fabric_color = x_color, .output_queue = @get_output_queue(1) });
const sum_in = @get_dsd(fabin_dsd, .{ .extent = rows, .fabric_color = sum_in_color, .input_queue = @get_input_queue(2) });
const sum_out = @get_dsd(fabout_dsd, .{ .extent = rows, .fabric_color = sum_out_color, .output_queue = @get_output_queue(2) });

// The steps of local group g's codes for every row: range / 15 and range / 7.
fn group_steps(base: i16) void {
  var r: i16 = 0;
  while (r < rows) : (r += 1) {
    const range = @as(f32, range_scales[r]) * @as(f32, range_codes[base + r]);
";
    if four {
        t += "    step4[r] = range / 15.0;\n";
    }
    if three {
        t += "    step3[r] = range / 7.0;\n";
    }
    t += "  }\n}\n";
    if four {
        t += "
// w = the weights of the 4-bit column at word `at` (group parameters at `base`).
fn column4(base: i16, at: i16) void {
  var r: i16 = 0;
  while (r < rows) : (r += 1) {
    const q = (codes[at + (r >> 2)] >> ((r & 3) << 2)) & 15;
    w[r] = @as(f32, mins[base + r]) + @as(f32, q) * step4[r];
  }
}
";
    }
    if three {
        t += "
// w = the weights of the 3-bit column at word `at` (group parameters at `base`).
fn column3(base: i16, at: i16) void {
  var r: i16 = 0;
  while (r < rows) : (r += 1) {
    const lo = (codes[at + (r >> 3)] >> ((r & 7) << 1)) & 3;
    const hi = (codes[at + (rows >> 3) + (r >> 4)] >> (r & 15)) & 1;
    w[r] = @as(f32, mins[base + r]) + @as(f32, lo | (hi << 2)) * step3[r];
  }
}
";
    }
    let column = match kind {
        QuantKind::Int4 => "      column4(base, at);\n      at += rows >> 2;\n".to_string(),
        QuantKind::Int3 => "      column3(base, at);\n      at += (rows >> 3) + (rows >> 4);\n".to_string(),
        _ => "      if (c % 2 == 0) {\n        column4(base, at);\n        at += rows >> 2;\n      } else {\n        column3(base, at);\n        at += (rows >> 3) + (rows >> 4);\n      }\n".to_string(),
    };
    t += "
task matvec() void {
  var at: i16 = 0;
  var c: i16 = 0;
  var g: i16 = 0;
  while (g < groups) : (g += 1) {
    const base = g * rows;
    group_steps(base);
    const n = if (g == groups - 1) last_width else group_width;
    var j: i16 = 0;
    while (j < n) : (j += 1) {
";
    t += &column;
    t += "      @fmacs(y_dsd, y_dsd, w_dsd, x[c]);
      c += 1;
    }
  }
  if (first_row) {
    @activate(reduce_id);
  } else {
    @fadds(y_dsd, y_dsd, sum_in, .{ .async = true, .activate = reduce_id });
  }
}

task reduce() void {
  if (last_row) {
    @activate(done_id);
  } else {
    @fmovs(sum_out, y_dsd, .{ .async = true, .activate = done_id });
  }
}

task done() void {
  sys_mod.unblock_cmd_stream();
}

LOOKUP
fn compute() void {
  @fmovs(y_dsd, 0.0);
  if (first_col and last_col) {
    @activate(matvec_id);
  } else if (first_col) {
    @fmovs(x_out, x_dsd, .{ .async = true, .activate = matvec_id });
  } else {
    @fmovs(x_dsd, x_in, .{ .async = true, .activate = matvec_id });
  }
}

comptime {
  @bind_local_task(matvec, matvec_id);
  @bind_local_task(reduce, reduce_id);
  @bind_local_task(done, done_id);

  @export_symbol(x_ptr, \"x\");
  @export_symbol(y_ptr, \"y\");
  @export_symbol(codes_ptr, \"codes\");
  @export_symbol(mins_ptr, \"mins\");
  @export_symbol(range_codes_ptr, \"range_codes\");
  @export_symbol(range_scales_ptr, \"range_scales\");
  @export_symbol(arg_ptr, \"arg\");
  @export_symbol(compute);
  @export_symbol(lookup);
}
";
    t.replace("LOOKUP\n", &lookup(kind))
}

/// `lookup()`: decodes the weights of the local row `arg[0]` into `x`
/// (the embedding's gather, from the same PEs as the tied LM head).
fn lookup(kind: QuantKind) -> String {
    let four = "        const q = (codes[at + (lr >> 2)] >> ((lr & 3) << 2)) & 15;\n        x[c] = min + @as(f32, q) * (range / 15.0);\n        at += rows >> 2;\n";
    let three = "        const lo = (codes[at + (lr >> 3)] >> ((lr & 7) << 1)) & 3;\n        const hi = (codes[at + (rows >> 3) + (lr >> 4)] >> (lr & 15)) & 1;\n        x[c] = min + @as(f32, lo | (hi << 2)) * (range / 7.0);\n        at += (rows >> 3) + (rows >> 4);\n";
    let column = match kind {
        QuantKind::Int4 => four.to_string(),
        QuantKind::Int3 => three.to_string(),
        _ => format!("      if (c % 2 == 0) {{\n{four}      }} else {{\n{three}      }}\n"),
    };
    format!(
        "// x = the weights of local row arg[0] (the embedding's gather).
fn lookup() void {{
  const lr = @as(i16, arg[0]);
  var at: i16 = 0;
  var c: i16 = 0;
  var g: i16 = 0;
  while (g < groups) : (g += 1) {{
    const base = g * rows;
    const range = @as(f32, range_scales[lr]) * @as(f32, range_codes[base + lr]);
    const min = @as(f32, mins[base + lr]);
    const n = if (g == groups - 1) last_width else group_width;
    var j: i16 = 0;
    while (j < n) : (j += 1) {{
{column}      c += 1;
    }}
  }}
  sys_mod.unblock_cmd_stream();
}}

"
    )
}
