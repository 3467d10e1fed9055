// q35-tile splits dequant_matmul into 320x320 tiles (or --q35-tile=NxK),
// full tiles in scf.for loops, remainders peeled into static edge tiles.
// RUN: q35-opt %s --split-input-file --q35-tile | FileCheck %s
// RUN: q35-opt %s --split-input-file --q35-tile=64x128 -p canonicalize | FileCheck %s --check-prefix=SMALL
// RUN: q35-opt %s --split-input-file --pass-pipeline='builtin.module(q35-tile{tile=320x320},canonicalize)' | FileCheck %s --check-prefix=CANON

// N = 1536 = 4*320 + 256 and K = 576 = 320 + 256, tokens dynamic.
// CHECK-LABEL: func.func @up_proj
// CHECK-NOT: "q35.dequant_matmul"(
// CHECK: %[[DIM:.*]] = tensor.dim %arg0, %{{.*}} : tensor<?x576xf32>
// CHECK: %[[INIT:.*]] = tensor.splat %{{.*}}[%[[DIM]]] : tensor<?x1536xf32>
// CHECK: %[[FULL:.*]] = scf.for %[[N0:.*]] = %{{.*}} to %c1280 step %c320 iter_args(%[[OUT:.*]] = %[[INIT]]) -> (tensor<?x1536xf32>)
// CHECK:   %[[ACC:.*]] = tensor.splat %{{.*}}[%[[DIM]]] : tensor<?x320xf32>
// CHECK:   %[[KLOOP:.*]] = scf.for %[[K0:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%[[A:.*]] = %[[ACC]]) -> (tensor<?x320xf32>)
// CHECK:     "q35.dequant_matmul_tile"(%arg0, %{{.*}}, %[[A]], %[[N0]], %[[K0]]) {tile_k = 320 : i64, tile_n = 320 : i64}
// CHECK:   %[[EDGE_K:.*]] = "q35.dequant_matmul_tile"(%arg0, %{{.*}}, %[[KLOOP]], %[[N0]], %{{.*}}) {tile_k = 256 : i64, tile_n = 320 : i64}
// CHECK:   tensor.insert_slice %[[EDGE_K]] into %[[OUT]][0, %[[N0]]] [%[[DIM]], 320] [1, 1] : tensor<?x320xf32> into tensor<?x1536xf32>
// The 256-row edge tile at n0 = 1280.
// CHECK: "q35.dequant_matmul_tile"({{.*}}) {tile_k = 320 : i64, tile_n = 256 : i64} {{.*}} -> tensor<?x256xf32>
// CHECK: %[[LAST:.*]] = "q35.dequant_matmul_tile"({{.*}}) {tile_k = 256 : i64, tile_n = 256 : i64}
// CHECK: %[[RES:.*]] = tensor.insert_slice %[[LAST]] into %[[FULL]][0, %c1280{{.*}}] [%[[DIM]], 256] [1, 1]
// CHECK: return %[[RES]]

// SMALL-LABEL: func.func @up_proj
// 1536 = 24 * 64 (no N remainder), 576 = 4 * 128 + 64.
// SMALL: scf.for %{{.*}} = %c0 to %c1536 step %c64
// SMALL: scf.for %{{.*}} = %c0 to %c512 step %c128
// SMALL: {tile_k = 128 : i64, tile_n = 64 : i64}
// SMALL: {tile_k = 64 : i64, tile_n = 64 : i64}
// SMALL-NOT: tile_n = 0
// SMALL: return

// CANON-LABEL: func.func @up_proj
// CANON-COUNT-4: "q35.dequant_matmul_tile"
// CANON-NOT: "q35.dequant_matmul_tile"
// CANON: return
func.func @up_proj(%x: tensor<?x576xf32>) -> tensor<?x1536xf32> {
  %w = "q35.weight"() {name = "model.layers.0.mlp.up_proj.weight"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  %y = "q35.dequant_matmul"(%x, %w) : (tensor<?x576xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<?x1536xf32>
  return %y : tensor<?x1536xf32>
}

// -----

// A static token count and shapes smaller than one tile: one edge tile.
// CHECK-LABEL: func.func @small
// CHECK-NOT: scf.for
// CHECK-NOT: tensor.dim
// CHECK: %[[INIT1:[^ ]*]] = tensor.splat %{{.*}} : tensor<1x96xf32>
// CHECK: %[[Z:[^ ]*]] = tensor.splat %{{.*}} : tensor<1x96xf32>
// CHECK: %[[T:.*]] = "q35.dequant_matmul_tile"(%arg0, %{{.*}}, %[[Z]], %{{.*}}, %{{.*}}) {tile_k = 64 : i64, tile_n = 96 : i64}
// CHECK: tensor.insert_slice %[[T]] into %[[INIT1]][0, %{{.*}}] [1, 96] [1, 1] : tensor<1x96xf32> into tensor<1x96xf32>
// SMALL-LABEL: func.func @small
// SMALL: {tile_k = 64 : i64, tile_n = 64 : i64}
// SMALL: {tile_k = 64 : i64, tile_n = 32 : i64}
// CANON-LABEL: func.func @small
func.func @small(%x: tensor<1x64xf32>) -> tensor<1x96xf32> {
  %w = "q35.weight"() {name = "w"} : () -> !q35.packed<96 : i64, 64 : i64, 32 : i64, "int4", "planar">
  %y = "q35.dequant_matmul"(%x, %w) : (tensor<1x64xf32>, !q35.packed<96 : i64, 64 : i64, 32 : i64, "int4", "planar">) -> tensor<1x96xf32>
  return %y : tensor<1x96xf32>
}
