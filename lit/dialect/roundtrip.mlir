// Every q35 op and the packed type parse, verify, print, and parse again.
// RUN: q35-opt %s | q35-opt | FileCheck %s

// CHECK-LABEL: func.func @layer
func.func @layer(%tokens: tensor<?xi32>, %pos: tensor<?xi32>, %start: index,
                 %kc: tensor<2048x192xf32>, %vc: tensor<2048x192xf32>) -> tensor<?x576xf32> {
  // CHECK: %[[EMB:.*]] = "q35.weight"() {name = "model.embed_tokens.weight"} : () -> !q35.packed<49152 : i64, 576 : i64, 128 : i64, "q35", "planar">
  %emb = "q35.weight"() {name = "model.embed_tokens.weight"} : () -> !q35.packed<49152 : i64, 576 : i64, 128 : i64, "q35", "planar">
  // CHECK: "q35.weight"() {name = "model.norm.weight"} : () -> tensor<576xf32>
  %g = "q35.weight"() {name = "model.norm.weight"} : () -> tensor<576xf32>
  // CHECK: !q35.packed<576 : i64, 576 : i64, 576 : i64, "int4", "planar">
  %wq = "q35.weight"() {name = "q"} : () -> !q35.packed<576 : i64, 576 : i64, 576 : i64, "int4", "planar">
  // CHECK: !q35.packed<192 : i64, 576 : i64, 32 : i64, "int3", "planar">
  %wk = "q35.weight"() {name = "k"} : () -> !q35.packed<192 : i64, 576 : i64, 32 : i64, "int3", "planar">
  // CHECK: !q35.packed<192 : i64, 576 : i64, 64 : i64, "f16", "planar">
  %wv = "q35.weight"() {name = "v"} : () -> !q35.packed<192 : i64, 576 : i64, 64 : i64, "f16", "planar">
  // CHECK: !q35.packed<1536 : i64, 576 : i64, 256 : i64, "f32", "planar">
  %wg = "q35.weight"() {name = "gate"} : () -> !q35.packed<1536 : i64, 576 : i64, 256 : i64, "f32", "planar">
  // CHECK: %[[X:.*]] = "q35.embedding"(%{{.*}}, %[[EMB]]) : (tensor<?xi32>, !q35.packed<49152 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<?x576xf32>
  %x = "q35.embedding"(%tokens, %emb) : (tensor<?xi32>, !q35.packed<49152 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<?x576xf32>
  // CHECK: "q35.rms_norm"(%[[X]], %{{.*}}) {epsilon = 9.99999974E-6 : f32}
  %n = "q35.rms_norm"(%x, %g) {epsilon = 1.0e-5 : f32} : (tensor<?x576xf32>, tensor<576xf32>) -> tensor<?x576xf32>
  // CHECK: "q35.dequant_matmul"
  %q = "q35.dequant_matmul"(%n, %wq) : (tensor<?x576xf32>, !q35.packed<576 : i64, 576 : i64, 576 : i64, "int4", "planar">) -> tensor<?x576xf32>
  %k = "q35.dequant_matmul"(%n, %wk) : (tensor<?x576xf32>, !q35.packed<192 : i64, 576 : i64, 32 : i64, "int3", "planar">) -> tensor<?x192xf32>
  %v = "q35.dequant_matmul"(%n, %wv) : (tensor<?x576xf32>, !q35.packed<192 : i64, 576 : i64, 64 : i64, "f16", "planar">) -> tensor<?x192xf32>
  // CHECK: "q35.rope"(%{{.*}}, %{{.*}}) {head_dim = 64 : i64, theta = 1.000000e+05 : f32}
  %qr = "q35.rope"(%q, %pos) {head_dim = 64 : i64, theta = 1.0e5 : f32} : (tensor<?x576xf32>, tensor<?xi32>) -> tensor<?x576xf32>
  %kr = "q35.rope"(%k, %pos) {head_dim = 64 : i64, theta = 1.0e5 : f32} : (tensor<?x192xf32>, tensor<?xi32>) -> tensor<?x192xf32>
  // CHECK: "q35.attention"({{.*}}) {head_dim = 64 : i64, num_heads = 9 : i64, num_kv_heads = 3 : i64}
  %o, %kc2, %vc2 = "q35.attention"(%qr, %kr, %v, %kc, %vc, %start) {num_heads = 9 : i64, num_kv_heads = 3 : i64, head_dim = 64 : i64} : (tensor<?x576xf32>, tensor<?x192xf32>, tensor<?x192xf32>, tensor<2048x192xf32>, tensor<2048x192xf32>, index) -> (tensor<?x576xf32>, tensor<2048x192xf32>, tensor<2048x192xf32>)
  // CHECK: "q35.add"
  %h = "q35.add"(%x, %o) : (tensor<?x576xf32>, tensor<?x576xf32>) -> tensor<?x576xf32>
  %gt = "q35.dequant_matmul"(%h, %wg) : (tensor<?x576xf32>, !q35.packed<1536 : i64, 576 : i64, 256 : i64, "f32", "planar">) -> tensor<?x1536xf32>
  // CHECK: "q35.silu"
  %s = "q35.silu"(%gt) : (tensor<?x1536xf32>) -> tensor<?x1536xf32>
  // CHECK: "q35.swiglu"
  %sw = "q35.swiglu"(%gt, %s) : (tensor<?x1536xf32>, tensor<?x1536xf32>) -> tensor<?x1536xf32>
  // CHECK: "q35.mul"
  %m = "q35.mul"(%sw, %s) : (tensor<?x1536xf32>, tensor<?x1536xf32>) -> tensor<?x1536xf32>
  return %h : tensor<?x576xf32>
}

// CHECK-LABEL: func.func @integer_and_tiles
func.func @integer_and_tiles(%x: tensor<4x576xi8>, %s: tensor<4xf32>, %xf: tensor<4x576xf32>,
                             %acc: tensor<4x320xf32>, %n0: index, %k0: index) -> (tensor<4x1536xf32>, tensor<4x320xf32>) {
  %w = "q35.weight"() {name = "up"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  // CHECK: "q35.dequant_matmul_i8"(%{{.*}}, %{{.*}}, %{{.*}}) {acc_len = 128 : i64}
  %y = "q35.dequant_matmul_i8"(%x, %s, %w) {acc_len = 128 : i64} : (tensor<4x576xi8>, tensor<4xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<4x1536xf32>
  // CHECK: "q35.dequant_matmul_tile"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) {tile_k = 320 : i64, tile_n = 320 : i64}
  %t = "q35.dequant_matmul_tile"(%xf, %w, %acc, %n0, %k0) {tile_n = 320 : i64, tile_k = 320 : i64} : (tensor<4x576xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">, tensor<4x320xf32>, index, index) -> tensor<4x320xf32>
  return %y, %t : tensor<4x1536xf32>, tensor<4x320xf32>
}

// CHECK-LABEL: func.func @fused
func.func @fused(%x: tensor<?x576xf32>) -> (tensor<?x576xf32>, tensor<?x1536xf32>) {
  %wo = "q35.weight"() {name = "o"} : () -> !q35.packed<576 : i64, 576 : i64, 128 : i64, "q35", "planar">
  %wg = "q35.weight"() {name = "gate"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  %wu = "q35.weight"() {name = "up"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  // CHECK: "q35.dequant_matmul_add"(%arg0, %{{.*}}, %arg0) : (tensor<?x576xf32>, !q35.packed<576 : i64, 576 : i64, 128 : i64, "q35", "planar">, tensor<?x576xf32>) -> tensor<?x576xf32>
  %h = "q35.dequant_matmul_add"(%x, %wo, %x) : (tensor<?x576xf32>, !q35.packed<576 : i64, 576 : i64, 128 : i64, "q35", "planar">, tensor<?x576xf32>) -> tensor<?x576xf32>
  // CHECK: "q35.dequant_matmul_swiglu"(%{{.*}}, %{{.*}}, %{{.*}}) : (tensor<?x576xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<?x1536xf32>
  %s = "q35.dequant_matmul_swiglu"(%h, %wg, %wu) : (tensor<?x576xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<?x1536xf32>
  return %h, %s : tensor<?x576xf32>, tensor<?x1536xf32>
}
