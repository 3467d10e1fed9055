// q35.rotate (the online incoherence transform of matrix inputs) lowers to
// one row kernel per width and direction, dispatched once per token like
// the norms, and the kernels go on to LLVM with upstream passes.
// RUN: q35-opt %s --q35-lower-to-kernels | FileCheck %s
// RUN: q35-opt %s --pass-pipeline='builtin.module(q35-lower-to-kernels,convert-scf-to-cf,convert-math-to-llvm,expand-strided-metadata,finalize-memref-to-llvm,convert-arith-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,reconcile-unrealized-casts)' | FileCheck %s --check-prefix=LLVM

func.func @forward(%x: tensor<?x576xf32>, %h: tensor<?x1536xf32>) -> (tensor<?x576xf32>, tensor<?x1536xf32>) {
  %a = "q35.rotate"(%x) {inverse = false} : (tensor<?x576xf32>) -> tensor<?x576xf32>
  %b = "q35.rotate"(%a) {inverse = true} : (tensor<?x576xf32>) -> tensor<?x576xf32>
  %c = "q35.rotate"(%h) {inverse = false} : (tensor<?x1536xf32>) -> tensor<?x1536xf32>
  return %b, %c : tensor<?x576xf32>, tensor<?x1536xf32>
}

// The kernels: sign pass (the format's index hash), two H12 stages of 576 =
// 12 · 12 · 4 as unrolled signed sums, then butterflies.
// CHECK: "q35.plan"()
// CHECK-SAME: kernel = @rotate_576
// CHECK-SAME: kernel = @rotate_inverse_576
// CHECK-SAME: kernel = @rotate_1536
// CHECK-SAME: kernels = {rotate_1536 = {linalg = false, op = "rotate", width = 1536 : i64}, rotate_576 = {{.*}}, rotate_inverse_576 = {linalg = false, op = "rotate_inverse", width = 576 : i64}}
// CHECK-DAG: func.func @rotate_576(%{{.*}}: index, %{{.*}}: index, %{{.*}}: index, %{{.*}}: memref<?x576xf32>, %{{.*}}: memref<?x576xf32>)
// CHECK-DAG: func.func @rotate_inverse_576(
// CHECK-DAG: func.func @rotate_1536(
// LLVM: llvm.func @rotate_576(
// LLVM: llvm.xor
// LLVM: llvm.fsub
