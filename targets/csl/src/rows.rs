//! The PE programs of everything but matmuls: RMSNorm, the element-wise
//! ops, RoPE, and attention with its KV cache. Each runs on its own PE
//! (attention on one PE a KV head); the host copies a token's activations
//! in and out (`x`, `w`, `y`; `arg` holds the position) and launches
//! `compute` (or `store`, the KV cache update). Functions of the SDK's
//! `<math>` library give square roots, exponentials, sines and cosines.

/// The head every program starts with: its params, memcpy and math.
fn head(what: &str, params: &[(&str, &str)]) -> String {
    let mut t = format!("// q35c: {what}\n\nparam memcpy_params: comptime_struct;\n");
    for (name, ty) in params {
        t += &format!("param {name}: {ty};\n");
    }
    t += "\nconst sys_mod = @import_module(\"<memcpy/memcpy>\", memcpy_params);\nconst math = @import_module(\"<math>\");\n\n";
    t
}

/// `@export_symbol`s of `arrays` (each with a `NAME_ptr`) and `functions`.
fn exports(arrays: &[&str], functions: &[&str]) -> String {
    let mut t = String::new();
    for a in arrays {
        t += &format!("var {a}_ptr: [*]f32 = &{a};\n");
    }
    t += "\ncomptime {\n";
    for a in arrays {
        t += &format!("  @export_symbol({a}_ptr, \"{a}\");\n");
    }
    for f in functions {
        t += &format!("  @export_symbol({f});\n");
    }
    t += "}\n";
    t
}

/// `y = x / sqrt(mean(x²) + epsilon) · w`.
pub fn norm() -> String {
    let mut t = head("RMSNorm of one row on one PE: y = x / sqrt(mean(x^2) + epsilon) * w.", &[("width", "i16"), ("epsilon", "f32")]);
    t += "var x = @zeros([width]f32);
var w = @zeros([width]f32);
var y = @zeros([width]f32);

fn compute() void {
  var sum: f32 = 0.0;
  var i: i16 = 0;
  while (i < width) : (i += 1) {
    sum += x[i] * x[i];
  }
  const inv = 1.0 / math.sqrt_f32(sum / @as(f32, width) + epsilon);
  i = 0;
  while (i < width) : (i += 1) {
    y[i] = x[i] * inv * w[i];
  }
  sys_mod.unblock_cmd_stream();
}

";
    t + &exports(&["x", "w", "y"], &["compute"])
}

/// Element-wise ops: `op` 0 add, 1 mul, 2 silu, 3 swiglu (x the gate, w
/// the up projection).
pub fn elementwise() -> String {
    let mut t = head("element-wise ops of one row on one PE: op 0 add, 1 mul, 2 silu(x), 3 silu(x) * w.", &[("width", "i16"), ("op", "i16")]);
    t += "var x = @zeros([width]f32);
var w = @zeros([width]f32);
var y = @zeros([width]f32);

const x_dsd = @get_dsd(mem1d_dsd, .{ .tensor_access = |i|{width} -> x[i] });
const w_dsd = @get_dsd(mem1d_dsd, .{ .tensor_access = |i|{width} -> w[i] });
const y_dsd = @get_dsd(mem1d_dsd, .{ .tensor_access = |i|{width} -> y[i] });

fn compute() void {
  if (op == 0) {
    @fadds(y_dsd, x_dsd, w_dsd);
  } else if (op == 1) {
    @fmuls(y_dsd, x_dsd, w_dsd);
  } else {
    var i: i16 = 0;
    while (i < width) : (i += 1) {
      const silu = x[i] / (1.0 + math.exp_f32(-x[i]));
      if (op == 2) {
        y[i] = silu;
      } else {
        y[i] = silu * w[i];
      }
    }
  }
  sys_mod.unblock_cmd_stream();
}

";
    t + &exports(&["x", "w", "y"], &["compute"])
}

/// RoPE, rotate-half form: element i of each head pairs with i + d/2 and
/// turns by position · w[i] (w: theta^(-2i/d), from the host).
pub fn rope() -> String {
    let mut t = head("RoPE of one row on one PE (rotate-half pairs; w[i] = theta^(-2i/head_dim)).", &[("width", "i16"), ("head_dim", "i16")]);
    t += "var x = @zeros([width]f32);
var w = @zeros([head_dim / 2]f32);
var y = @zeros([width]f32);
var arg = @zeros([1]f32);

fn compute() void {
  const half = head_dim / 2;
  var h: i16 = 0;
  while (h < width) : (h += head_dim) {
    var i: i16 = 0;
    while (i < half) : (i += 1) {
      const angle = arg[0] * w[i];
      const c = math.cos_f32(angle);
      const s = math.sin_f32(angle);
      const a = x[h + i];
      const b = x[h + i + half];
      y[h + i] = a * c - b * s;
      y[h + i + half] = b * c + a * s;
    }
  }
  sys_mod.unblock_cmd_stream();
}

";
    t + &exports(&["x", "w", "y", "arg"], &["compute"])
}

/// One KV head's cache and attention: `store` writes K and V (`w`: K then
/// V) at position arg[0]; `compute` attends its `group` query heads (`x`)
/// over positions 0..=arg[0] into `y`.
pub fn attention() -> String {
    let mut t = head(
        "one KV head's K and V caches and the attention of its query heads, on one PE.",
        &[("head_dim", "i16"), ("group", "i16"), ("context", "i16")],
    );
    t += "var x = @zeros([group * head_dim]f32);
var y = @zeros([group * head_dim]f32);
var w = @zeros([2 * head_dim]f32);
var arg = @zeros([1]f32);
var k_cache = @zeros([context * head_dim]f32);
var v_cache = @zeros([context * head_dim]f32);
var scores = @zeros([context]f32);

fn store() void {
  const at = @as(i16, arg[0]) * head_dim;
  var d: i16 = 0;
  while (d < head_dim) : (d += 1) {
    k_cache[at + d] = w[d];
    v_cache[at + d] = w[head_dim + d];
  }
  sys_mod.unblock_cmd_stream();
}

fn compute() void {
  const len = @as(i16, arg[0]) + 1;
  const scale = 1.0 / math.sqrt_f32(@as(f32, head_dim));
  var g: i16 = 0;
  while (g < group) : (g += 1) {
    const q = g * head_dim;
    var most: f32 = -3.0e38;
    var p: i16 = 0;
    while (p < len) : (p += 1) {
      var dot: f32 = 0.0;
      var d: i16 = 0;
      while (d < head_dim) : (d += 1) {
        dot += x[q + d] * k_cache[p * head_dim + d];
      }
      scores[p] = dot * scale;
      if (scores[p] > most) {
        most = scores[p];
      }
    }
    var total: f32 = 0.0;
    p = 0;
    while (p < len) : (p += 1) {
      scores[p] = math.exp_f32(scores[p] - most);
      total += scores[p];
    }
    var d: i16 = 0;
    while (d < head_dim) : (d += 1) {
      var sum: f32 = 0.0;
      p = 0;
      while (p < len) : (p += 1) {
        sum += scores[p] * v_cache[p * head_dim + d];
      }
      y[q + d] = sum / total;
    }
  }
  sys_mod.unblock_cmd_stream();
}

";
    t + &exports(&["x", "y", "w", "arg"], &["compute", "store"])
}

/// Bytes of data one attention PE declares.
pub fn attention_bytes(head_dim: usize, group: usize, context: usize) -> usize {
    4 * (2 * group * head_dim + 2 * head_dim + 1 + 2 * context * head_dim + context)
}
