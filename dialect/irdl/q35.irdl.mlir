// The q35 dialect, defined declaratively in IRDL.
//
// Every q35 tool loads this file at start-up (melior's load_irdl_dialects),
// and upstream `mlir-opt --irdl-file=dialect/irdl/q35.irdl.mlir` accepts it
// too, so the dialect can be cross-checked independently of our tools.
//
// IRDL checks operand/result/attribute counts and kinds, and that values
// bound to the same constraint variable are equal (e.g. both operands and the
// result of q35.add have one type). What IRDL cannot express (element types
// of builtin tensors, shape agreement between a weight type and an
// activation, attribute value ranges) is checked by the Rust verifier in
// dialect/src/verify.rs, run by every tool and as the `q35-verify` pass.
// docs/dialect.md documents every op and type.
irdl.dialect @q35 {
  // A packed weight matrix W[rows, cols] (rows = output channels N, cols =
  // the reduction dimension K), quantized per (row, group of `group`
  // elements along K) in the given quantization (`"q35"`, `"int4"`,
  // `"int3"`, `"f16"`, `"f32"`) and byte layout (`"planar"`, see
  // docs/format.md). Example: !q35.packed<576 : i64, 1536 : i64, 128 : i64, "q35", "planar">
  irdl.type @packed {
    // Each parameter gets its own constraint variable: IRDL requires every
    // use of one variable to bind the same attribute.
    %rows = irdl.base "#builtin.integer"
    %cols = irdl.base "#builtin.integer"
    %group = irdl.base "#builtin.integer"
    %q35 = irdl.is "q35"
    %int4 = irdl.is "int4"
    %int3 = irdl.is "int3"
    %f16 = irdl.is "f16"
    %f32 = irdl.is "f32"
    %quant = irdl.any_of(%q35, %int4, %int3, %f16, %f32)
    %layout = irdl.is "planar"
    irdl.parameters(rows: %rows, cols: %cols, group: %group, quant: %quant, layout: %layout)
  }

  // A reference by symbol to a weight stored outside the IR (the artifact's
  // weight section). Weights never become IR constants.
  irdl.operation @weight {
    %name = irdl.base "#builtin.string"
    %packed = irdl.base @q35::@packed
    %tensor = irdl.base "!builtin.tensor"
    %ty = irdl.any_of(%packed, %tensor)
    irdl.attributes { "name" = %name }
    irdl.results(weight: %ty)
  }

  // Row lookup: out[s, :] = dequant(table)[tokens[s], :].
  irdl.operation @embedding {
    %tokens = irdl.base "!builtin.tensor"
    %packed = irdl.base @q35::@packed
    %matrix = irdl.base "!builtin.tensor"
    %table = irdl.any_of(%packed, %matrix)
    %out = irdl.base "!builtin.tensor"
    irdl.operands(tokens: %tokens, table: %table)
    irdl.results(out: %out)
  }

  // out = x / sqrt(mean(x^2, last dim) + epsilon) * gamma.
  irdl.operation @rms_norm {
    %tensor = irdl.base "!builtin.tensor"
    %x = irdl.base "!builtin.tensor"
    %eps = irdl.base "#builtin.float"
    irdl.operands(x: %x, gamma: %tensor)
    irdl.attributes { "epsilon" = %eps }
    irdl.results(out: %x)
  }

  // Rotary position embedding (rotate-half form, as in Llama) over heads of
  // `head_dim` packed along the last dimension; positions is tensor<S x i32>.
  irdl.operation @rope {
    %x = irdl.base "!builtin.tensor"
    %pos = irdl.base "!builtin.tensor"
    %int = irdl.base "#builtin.integer"
    %theta = irdl.base "#builtin.float"
    irdl.operands(x: %x, positions: %pos)
    irdl.attributes { "head_dim" = %int, "theta" = %theta }
    irdl.results(out: %x)
  }

  // Grouped-query causal attention for S new tokens at positions
  // [start, start + S): appends k and v to the caches at `start`, attends
  // over cache rows [0, start + S) with a causal mask, and returns the
  // attention output and the updated caches.
  irdl.operation @attention {
    %q = irdl.base "!builtin.tensor"
    %kv = irdl.base "!builtin.tensor"
    %cache = irdl.base "!builtin.tensor"
    %index = irdl.is index
    %heads = irdl.base "#builtin.integer"
    %kv_heads = irdl.base "#builtin.integer"
    %head_dim = irdl.base "#builtin.integer"
    irdl.operands(q: %q, k: %kv, v: %kv, k_cache: %cache, v_cache: %cache, start: %index)
    irdl.attributes { "num_heads" = %heads, "num_kv_heads" = %kv_heads, "head_dim" = %head_dim }
    irdl.results(out: %q, k_cache_out: %cache, v_cache_out: %cache)
  }

  // x * sigmoid(x).
  irdl.operation @silu {
    %x = irdl.base "!builtin.tensor"
    irdl.operands(x: %x)
    irdl.results(out: %x)
  }

  // The online incoherence transform Q x = H (s . x) / sqrt(n) over the
  // last dimension (inverse: Q^T x), H a Hadamard matrix of order n =
  // 12^a 2^b (a <= 2) and s fixed signs (q35_format::rotation). The
  // matrices reading a rotated input are stored rotated.
  irdl.operation @rotate {
    %x = irdl.base "!builtin.tensor"
    %inverse = irdl.base "#builtin.integer"
    irdl.operands(x: %x)
    irdl.attributes { "inverse" = %inverse }
    irdl.results(out: %x)
  }

  // silu(gate) * up: the gated MLP's activation.
  irdl.operation @swiglu {
    %x = irdl.base "!builtin.tensor"
    irdl.operands(gate: %x, up: %x)
    irdl.results(out: %x)
  }

  // Elementwise add (residual connections).
  irdl.operation @add {
    %x = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %x, rhs: %x)
    irdl.results(out: %x)
  }

  // Elementwise multiply.
  irdl.operation @mul {
    %x = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %x, rhs: %x)
    irdl.results(out: %x)
  }

  // out[m, n] = sum_k x[m, k] * dequant(w)[n, k], in f32: a linear layer
  // with the weight dequantized on the fly (never materialized).
  irdl.operation @dequant_matmul {
    %x = irdl.base "!builtin.tensor"
    %w = irdl.base @q35::@packed
    %out = irdl.base "!builtin.tensor"
    irdl.operands(x: %x, w: %w)
    irdl.results(out: %out)
  }

  // dequant_matmul with the residual add fused into its epilogue (made by
  // q35-fuse): out[m, n] = residual[m, n] + sum_k x[m, k] * dequant(w)[n, k].
  irdl.operation @dequant_matmul_add {
    %x = irdl.base "!builtin.tensor"
    %w = irdl.base @q35::@packed
    %out = irdl.base "!builtin.tensor"
    irdl.operands(x: %x, w: %w, residual: %out)
    irdl.results(out: %out)
  }

  // The gate and up projections of a SwiGLU MLP in one op (made by
  // q35-fuse): out = silu(x * dequant(gate)^T) * (x * dequant(up)^T). Both
  // weights have the same packed type.
  irdl.operation @dequant_matmul_swiglu {
    %x = irdl.base "!builtin.tensor"
    %w = irdl.base @q35::@packed
    %out = irdl.base "!builtin.tensor"
    irdl.operands(x: %x, gate: %w, up: %w)
    irdl.results(out: %out)
  }

  // Integer path for int8-activation hardware: x is int8 with one f32 scale
  // per row (x_scale), codes minus integer zero points are accumulated in
  // int32 over runs of `acc_len` terms, then scaled to f32.
  irdl.operation @dequant_matmul_i8 {
    %x = irdl.base "!builtin.tensor"
    %scale = irdl.base "!builtin.tensor"
    %w = irdl.base @q35::@packed
    %out = irdl.base "!builtin.tensor"
    %int = irdl.base "#builtin.integer"
    irdl.operands(x: %x, x_scale: %scale, w: %w)
    irdl.attributes { "acc_len" = %int }
    irdl.results(out: %out)
  }

  // One tile of a dequant_matmul, as produced by q35-tile: accumulates
  // x[:, k0:k0+tile_k] * dequant(w)[n0:n0+tile_n, k0:k0+tile_k]^T into acc
  // (tensor<M x tile_n>). Edge tiles are clipped to the weight's shape.
  irdl.operation @dequant_matmul_tile {
    %x = irdl.base "!builtin.tensor"
    %w = irdl.base @q35::@packed
    %acc = irdl.base "!builtin.tensor"
    %index = irdl.is index
    %tile_n = irdl.base "#builtin.integer"
    %tile_k = irdl.base "#builtin.integer"
    irdl.operands(x: %x, w: %w, acc: %acc, n0: %index, k0: %index)
    irdl.attributes { "tile_n" = %tile_n, "tile_k" = %tile_k }
    irdl.results(out: %acc)
  }

  // The execution plan left by q35-lower-to-kernels in place of the model
  // function: `buffers` lists every buffer (name, element, width, role) and
  // `dispatches` the kernel calls in order (kernel symbol, workgroup count
  // as workgroups + workgroups_per_token * tokens, bound buffers). The
  // compiler turns it into the artifact's manifest.
  irdl.operation @plan {
    %buffers = irdl.base "#builtin.array"
    %dispatches = irdl.base "#builtin.array"
    irdl.attributes { "buffers" = %buffers, "dispatches" = %dispatches }
  }
}
