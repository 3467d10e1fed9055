// q35-lower-to-kernels{kernels=linalg}: every kernel but the KV update is
// linalg.generic ops on strided views (memref.reinterpret_cast) of its
// buffers: the packed weight's rows, groups and code planes are indexed by
// affine maps and each code is decoded inside the reduction, so no
// dequantized matrix exists.
// Upstream passes then write the loops and reach the LLVM dialect.
// RUN: q35-opt %s --split-input-file --pass-pipeline='builtin.module(q35-fuse,q35-lower-to-kernels{kernels=linalg})' | FileCheck %s
// RUN: q35-opt %s --split-input-file --pass-pipeline='builtin.module(q35-fuse,q35-lower-to-kernels{kernels=linalg},convert-linalg-to-loops,lower-affine,convert-scf-to-cf,convert-math-to-llvm,expand-strided-metadata,finalize-memref-to-llvm,convert-arith-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,reconcile-unrealized-casts)' | FileCheck %s --check-prefix=LLVM
// RUN: not q35-opt %s --pass-pipeline='builtin.module(q35-lower-to-kernels{kernels=loops})' 2>&1 | FileCheck %s --check-prefix=BAD

!w = !q35.packed<96 : i64, 200 : i64, 64 : i64, "q35", "planar">

// K = 200 = 3 groups of 64 (28-byte blocks) and a short group of 8 (a
// 4-byte block): 88-byte rows, two reductions, then the residual add.
// CHECK-DAG: #[[NIB:.*]] = affine_map<(d0, d1, d2, d3) -> (d1, d2, d3 floordiv 2)>
// CHECK-DAG: #[[LO2:.*]] = affine_map<(d0, d1, d2, d3) -> (d1, d2, d3 floordiv 4 + 16)>
// CHECK-DAG: #[[HI1:.*]] = affine_map<(d0, d1, d2, d3) -> (d1, d2, d3 floordiv 8 + 24)>
// CHECK-DAG: #[[TAIL_HI1:.*]] = affine_map<(d0, d1, d2) -> (d1, d2 floordiv 8 + 3)>
// CHECK: kernel = @dequant_matmul_q35_96x200_g64_r64_linalg_add
// CHECK-LABEL: func.func @dequant_matmul_q35_96x200_g64_r64_linalg_add(
// CHECK-SAME: %[[CODES:arg4]]: memref<?xi8>
// The dot accumulates in scratch (the residual may be the output).
// CHECK: %[[SUM:.*]] = memref.alloca(%arg1, %{{.*}}) : memref<?x?xf32>
// CHECK: linalg.generic {{.*}} outs(%[[SUM]] : memref<?x?xf32>)
// CHECK: linalg.yield %{{.*}} : f32
// The full groups: codes viewed as [rows, 3 groups, 28 bytes].
// CHECK: %[[BLOCKS:.*]] = memref.reinterpret_cast %[[CODES]] to offset: [%{{.*}}], sizes: [%{{.*}}, 3, 28], strides: [88, 28, 1]
// CHECK: linalg.generic {indexing_maps = [#{{.*}}, #{{.*}}, #[[NIB]], #[[LO2]], #[[HI1]], {{.*}}], iterator_types = ["parallel", "parallel", "reduction", "reduction"]} ins({{.*}}%[[BLOCKS]], %[[BLOCKS]], %[[BLOCKS]]
// CHECK: linalg.index 3 : index
// Each weight is fl(min + fl(q·fl(range/L))): no fma, never stored.
// CHECK: %[[RANGE:.*]] = arith.mulf
// CHECK: %[[STEP:.*]] = arith.divf %[[RANGE]], %{{.*}} : f32
// CHECK: %[[QS:.*]] = arith.mulf %{{.*}}, %[[STEP]] : f32
// CHECK: %[[W:.*]] = arith.addf %{{.*}}, %[[QS]] : f32
// CHECK: arith.mulf %{{.*}}, %[[W]] : f32
// CHECK-NOT: memref.store
// The short last group: [rows, 4 bytes] at byte 84 of each row.
// CHECK: memref.reinterpret_cast %[[CODES]] to offset: [%{{.*}}], sizes: [%{{.*}}, 4], strides: [88, 1]
// CHECK: linalg.generic {indexing_maps = [{{.*}}#[[TAIL_HI1]]{{.*}}], iterator_types = ["parallel", "parallel", "reduction"]}
// Then out = residual + dot.
// CHECK: linalg.generic {{.*}} ins(%{{.*}}, %[[SUM]] : {{.*}}) outs(
// CHECK: arith.addf %{{.*}}, %{{.*}} : f32
// CHECK: return

// LLVM-LABEL: llvm.func @dequant_matmul_q35_96x200_g64_r64_linalg_add(
// LLVM-NOT: linalg.
// LLVM-NOT: memref.
// LLVM: llvm.return
func.func @residual(%x: tensor<?x200xf32>, %r: tensor<?x96xf32>) -> tensor<?x96xf32> {
  %w = "q35.weight"() {name = "w"} : () -> !w
  %y = "q35.dequant_matmul"(%x, %w) : (tensor<?x200xf32>, !w) -> tensor<?x96xf32>
  %z = "q35.add"(%r, %y) : (tensor<?x96xf32>, tensor<?x96xf32>) -> tensor<?x96xf32>
  return %z : tensor<?x96xf32>
}

// -----

// SwiGLU: the gate's dot in scratch, the up projection's in the output,
// then out = silu(gate)·up. f16 weights: one generic over (m, n, k).
// CHECK-LABEL: func.func @dequant_matmul_f16_64x32_g32_r64_linalg_swiglu(
// CHECK: %[[GATE:.*]] = memref.alloca
// CHECK: linalg.generic {indexing_maps = [#{{.*}}, #{{.*}}, #{{.*}}], iterator_types = ["parallel", "parallel", "reduction"]} ins(%{{.*}}, %{{.*}} : memref<?x32xf32, strided<[32, 1], offset: ?>>, memref<?x32xf16, strided<[32, 1], offset: ?>>) outs(%[[GATE]] : memref<?x?xf32>)
// CHECK: arith.extf %{{.*}} : f16 to f32
// CHECK: linalg.generic {{.*}} ins(%[[GATE]], %{{.*}} : memref<?x?xf32>, {{.*}})
// CHECK: math.exp
// LLVM-LABEL: llvm.func @dequant_matmul_f16_64x32_g32_r64_linalg_swiglu(
// LLVM-NOT: linalg.
func.func @mlp(%x: tensor<?x32xf32>) -> tensor<?x64xf32> {
  %gv = "q35.weight"() {name = "gate16"} : () -> !q35.packed<64 : i64, 32 : i64, 32 : i64, "f16", "planar">
  %uv = "q35.weight"() {name = "up16"} : () -> !q35.packed<64 : i64, 32 : i64, 32 : i64, "f16", "planar">
  %a = "q35.dequant_matmul"(%x, %gv) : (tensor<?x32xf32>, !q35.packed<64 : i64, 32 : i64, 32 : i64, "f16", "planar">) -> tensor<?x64xf32>
  %b = "q35.dequant_matmul"(%x, %uv) : (tensor<?x32xf32>, !q35.packed<64 : i64, 32 : i64, 32 : i64, "f16", "planar">) -> tensor<?x64xf32>
  %s = "q35.swiglu"(%a, %b) : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return %s : tensor<?x64xf32>
}

// -----

// Row kernels (one workgroup per token): the token's row as a view, one
// elementwise generic; RMSNorm first reduces the sum of squares into a
// rank-0 scratch.
// (Kernels print in name order.)
// CHECK-LABEL: func.func @add_64_linalg(
// CHECK: arith.addf
// CHECK-LABEL: func.func @rms_norm_64_eps1e_5_linalg(
// CHECK: %[[ROW:.*]] = memref.reinterpret_cast %arg3 to offset: [%{{.*}}], sizes: [64], strides: [1]
// CHECK: %[[TOTAL:.*]] = memref.alloca() : memref<f32>
// CHECK: linalg.generic {indexing_maps = [#{{.*}}, #{{.*}}], iterator_types = ["reduction"]} ins(%[[ROW]] : {{.*}}) outs(%[[TOTAL]] : memref<f32>)
// CHECK: math.sqrt
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel"]
// CHECK-LABEL: func.func @swiglu_64_linalg(
// CHECK: linalg.generic
// CHECK: math.exp
// LLVM-LABEL: llvm.func @rms_norm_64_eps1e_5_linalg(
// LLVM-NOT: linalg.
func.func @rows(%x: tensor<?x64xf32>, %y: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %g = "q35.weight"() {name = "g"} : () -> tensor<64xf32>
  %n = "q35.rms_norm"(%x, %g) {epsilon = 1.0e-5 : f32} : (tensor<?x64xf32>, tensor<64xf32>) -> tensor<?x64xf32>
  %s = "q35.swiglu"(%n, %y) : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  %a = "q35.add"(%s, %x) : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return %a : tensor<?x64xf32>
}

// -----

// Attention (one workgroup per head; per new token, on views of the
// visible cache rows of its KV head): the scores' dot, scale, max,
// exponentials and sum, then the weighted sum of V rows. The embedding
// decodes its token's table row into the output row; RoPE rotates each
// head's two halves in one generic. The KV update stays a copy loop.
// CHECK-LABEL: func.func @attention_h4_kv2_hd16_c16_linalg(
// CHECK: %[[SCORES:.*]] = memref.alloca() : memref<16xf32>
// CHECK: scf.for %[[M:.*]] = %{{.*}} to %arg1
// CHECK: %[[KEYS:.*]] = memref.reinterpret_cast %arg4 to offset: [%{{.*}}], sizes: [%[[VISIBLE:.*]], 16], strides: [32, 1]
// CHECK: %[[VALUES:.*]] = memref.reinterpret_cast %arg5 to offset: [%{{.*}}], sizes: [%[[VISIBLE]], 16], strides: [32, 1]
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "reduction"]} ins(%{{.*}}, %[[KEYS]] :
// CHECK: iterator_types = ["reduction"]
// CHECK: math.exp
// CHECK: iterator_types = ["reduction"]
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "reduction"]} ins(%{{.*}}, %[[VALUES]] :
// CHECK-LABEL: func.func @embedding_q35_100x64_g32_linalg(
// CHECK: memref.load %arg3
// CHECK: memref.reinterpret_cast %arg4 to offset: [%{{.*}}], sizes: [1, 2, 14], strides: [28, 14, 1]
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel"]
// CHECK: arith.select
// CHECK-LABEL: func.func @kv_update_h4_kv2_hd16_c16(
// CHECK-NOT: linalg.generic
// CHECK-LABEL: func.func @rope_64_hd16_theta10000_linalg(
// CHECK-COUNT-4: memref.reinterpret_cast
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "parallel"]
// CHECK: math.cos %{{.*}} : f64
// CHECK: linalg.yield %{{.*}}, %{{.*}} : f32, f32
// LLVM-LABEL: llvm.func @attention_h4_kv2_hd16_c16_linalg(
// LLVM-NOT: linalg.
!emb = !q35.packed<100 : i64, 64 : i64, 32 : i64, "q35", "planar">
func.func @attend(%tokens: tensor<?xi32>, %pos: tensor<?xi32>, %start: index, %k: tensor<?x32xf32>, %v: tensor<?x32xf32>, %kc: tensor<16x32xf32>, %vc: tensor<16x32xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>, tensor<16x32xf32>, tensor<16x32xf32>) {
  %e = "q35.weight"() {name = "embed"} : () -> !emb
  %x = "q35.embedding"(%tokens, %e) : (tensor<?xi32>, !emb) -> tensor<?x64xf32>
  %q = "q35.rope"(%x, %pos) {head_dim = 16 : i64, theta = 1.0e4 : f32} : (tensor<?x64xf32>, tensor<?xi32>) -> tensor<?x64xf32>
  %o, %kc2, %vc2 = "q35.attention"(%q, %k, %v, %kc, %vc, %start) {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>, tensor<16x32xf32>, tensor<16x32xf32>, index) -> (tensor<?x64xf32>, tensor<16x32xf32>, tensor<16x32xf32>)
  return %o, %x, %kc2, %vc2 : tensor<?x64xf32>, tensor<?x64xf32>, tensor<16x32xf32>, tensor<16x32xf32>
}

// BAD: kernels{{.*}}neither native nor linalg
