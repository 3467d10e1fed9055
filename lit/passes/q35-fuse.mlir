// q35-fuse folds a residual add and SwiGLU into the dequant_matmul that
// feeds them, when the epilogue is the matmul's only use.
// RUN: q35-opt %s --split-input-file -p q35-fuse | FileCheck %s
// RUN: q35-opt %s --split-input-file --pass-pipeline='builtin.module(q35-fuse,q35-verify,q35-lower-to-kernels)' | FileCheck %s --check-prefix=KERNELS

!w576 = !q35.packed<576 : i64, 576 : i64, 128 : i64, "q35", "planar">
!w1536 = !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
!wdown = !q35.packed<576 : i64, 1536 : i64, 128 : i64, "q35", "planar">

// One layer's MLP block: both residual adds and the SwiGLU fuse; the
// operand order of the add does not matter.
// CHECK-LABEL: func.func @mlp
// CHECK-SAME: (%[[H:.*]]: tensor<?x576xf32>)
// CHECK: %[[WO:.*]] = "q35.weight"() {name = "o"}
// CHECK: %[[WG:.*]] = "q35.weight"() {name = "gate"}
// CHECK: %[[WU:.*]] = "q35.weight"() {name = "up"}
// CHECK: %[[WD:.*]] = "q35.weight"() {name = "down"}
// CHECK-NOT: "q35.dequant_matmul"(
// CHECK: %[[H1:.*]] = "q35.dequant_matmul_add"(%[[H]], %[[WO]], %[[H]]) : (tensor<?x576xf32>, !q35.packed<576 : i64, 576 : i64, 128 : i64, "q35", "planar">, tensor<?x576xf32>) -> tensor<?x576xf32>
// CHECK-NEXT: %[[S:.*]] = "q35.dequant_matmul_swiglu"(%[[H1]], %[[WG]], %[[WU]]) : (tensor<?x576xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<?x1536xf32>
// CHECK-NEXT: %[[OUT:.*]] = "q35.dequant_matmul_add"(%[[S]], %[[WD]], %[[H1]])
// CHECK-NOT: "q35.add"
// CHECK-NOT: "q35.swiglu"
// CHECK: return %[[OUT]]

// What each dispatch binds (the residual after the weight, the up weight
// after the gate weight), then the fused kernels' signatures.
// KERNELS: "q35.plan"()
// KERNELS-SAME: {buffers = ["input0", "o", "input0", "act[[H1:[0-9]+]]"], kernel = @dequant_matmul_q35_576x576_g128_r64_add, workgroups = 9 : i64, workgroups_per_token = 0 : i64}
// KERNELS-SAME: {buffers = ["act[[H1]]", "gate", "up", "act[[S:[0-9]+]]"], kernel = @dequant_matmul_q35_1536x576_g128_r64_swiglu, workgroups = 24 : i64, workgroups_per_token = 0 : i64}
// KERNELS-SAME: {buffers = ["act[[S]]", "down", "act[[H1]]", "act{{[0-9]+}}"], kernel = @dequant_matmul_q35_576x1536_g128_r64_add, workgroups = 9 : i64, workgroups_per_token = 0 : i64}
// KERNELS-NOT: kernel = @add_
// KERNELS-NOT: kernel = @swiglu_
// KERNELS-LABEL: func.func @dequant_matmul_q35_1536x576_g128_r64_swiglu(%arg0: index, %arg1: index, %arg2: index, %arg3: memref<?x576xf32>, %arg4: memref<?xi8>, %arg5: memref<?xf16>, %arg6: memref<?xi8>, %arg7: memref<?xf16>, %arg8: memref<?xi8>, %arg9: memref<?xf16>, %arg10: memref<?xi8>, %arg11: memref<?xf16>, %arg12: memref<?x1536xf32>)
// KERNELS-LABEL: func.func @dequant_matmul_q35_576x1536_g128_r64_add(%arg0: index, %arg1: index, %arg2: index, %arg3: memref<?x1536xf32>, %arg4: memref<?xi8>, %arg5: memref<?xf16>, %arg6: memref<?xi8>, %arg7: memref<?xf16>, %arg8: memref<?x576xf32>, %arg9: memref<?x576xf32>)
// KERNELS-LABEL: func.func @dequant_matmul_q35_576x576_g128_r64_add(
func.func @mlp(%h: tensor<?x576xf32>) -> tensor<?x576xf32> {
  %wo = "q35.weight"() {name = "o"} : () -> !w576
  %wg = "q35.weight"() {name = "gate"} : () -> !w1536
  %wu = "q35.weight"() {name = "up"} : () -> !w1536
  %wd = "q35.weight"() {name = "down"} : () -> !wdown
  %o = "q35.dequant_matmul"(%h, %wo) : (tensor<?x576xf32>, !w576) -> tensor<?x576xf32>
  %h1 = "q35.add"(%h, %o) : (tensor<?x576xf32>, tensor<?x576xf32>) -> tensor<?x576xf32>
  %g = "q35.dequant_matmul"(%h1, %wg) : (tensor<?x576xf32>, !w1536) -> tensor<?x1536xf32>
  %u = "q35.dequant_matmul"(%h1, %wu) : (tensor<?x576xf32>, !w1536) -> tensor<?x1536xf32>
  %s = "q35.swiglu"(%g, %u) : (tensor<?x1536xf32>, tensor<?x1536xf32>) -> tensor<?x1536xf32>
  %d = "q35.dequant_matmul"(%s, %wd) : (tensor<?x1536xf32>, !wdown) -> tensor<?x576xf32>
  %out = "q35.add"(%d, %h1) : (tensor<?x576xf32>, tensor<?x576xf32>) -> tensor<?x576xf32>
  return %out : tensor<?x576xf32>
}

// -----

!w = !q35.packed<64 : i64, 64 : i64, 32 : i64, "q35", "planar">

// Not fused: the matmul's result has a second use; SwiGLU over
// projections of two different inputs.
// CHECK-LABEL: func.func @unfusable
// CHECK: %[[Y:.*]] = "q35.dequant_matmul"(%arg0, %{{.*}})
// CHECK: "q35.add"(%arg0, %[[Y]])
// CHECK: %[[G:.*]] = "q35.dequant_matmul"(%arg0, %{{.*}})
// CHECK: %[[U:.*]] = "q35.dequant_matmul"(%arg1, %{{.*}})
// CHECK: "q35.swiglu"(%[[G]], %[[U]])
// CHECK-NOT: dequant_matmul_add
// CHECK-NOT: dequant_matmul_swiglu
func.func @unfusable(%x: tensor<1x64xf32>, %z: tensor<1x64xf32>) -> (tensor<1x64xf32>, tensor<1x64xf32>, tensor<1x64xf32>) {
  %w = "q35.weight"() {name = "w"} : () -> !w
  %y = "q35.dequant_matmul"(%x, %w) : (tensor<1x64xf32>, !w) -> tensor<1x64xf32>
  %r = "q35.add"(%x, %y) : (tensor<1x64xf32>, tensor<1x64xf32>) -> tensor<1x64xf32>
  %g = "q35.dequant_matmul"(%x, %w) : (tensor<1x64xf32>, !w) -> tensor<1x64xf32>
  %u = "q35.dequant_matmul"(%z, %w) : (tensor<1x64xf32>, !w) -> tensor<1x64xf32>
  %s = "q35.swiglu"(%g, %u) : (tensor<1x64xf32>, tensor<1x64xf32>) -> tensor<1x64xf32>
  return %r, %y, %s : tensor<1x64xf32>, tensor<1x64xf32>, tensor<1x64xf32>
}
