// q35-lower-to-kernels{activations=int8}: coded matmuls take the integer
// path (int8 activations per weight group, u8 codes scaled to a common
// step times i8 activations in i32 with vpdpbusd); the embedding and f16
// weights keep f32. Each input is quantized once, by its own kernel, for
// every integer-path matmul that reads it.
// REQUIRES: int8-path
// RUN: q35-opt %s --pass-pipeline='builtin.module(q35-lower-to-kernels{activations=int8})' | FileCheck %s
// RUN: not q35-opt %s --pass-pipeline='builtin.module(q35-lower-to-kernels{activations=int4})' 2>&1 | FileCheck %s --check-prefix=BAD

// The codes are an i8 activation buffer; one quantize dispatch serves
// both matmuls of %x, which run as one concurrent group (neither writes
// what the other binds).
// CHECK: "q35.plan"() {buffers = [
// CHECK-SAME: {element = "i8", name = "{{act[0-9]+}}", role = "activation", width = 256 : i64}
// CHECK-SAME: kernel = @embedding_q35_128x32_g32,
// CHECK-SAME: {buffers = ["{{act[0-9]+}}", "[[CODES:act[0-9]+]]"], kernel = @quantize_activations_q35_32_g32,
// CHECK-SAME: {buffers = ["[[CODES]]", "w", "{{act[0-9]+}}"], kernel = @dequant_matmul_i8_q35_128x32_g32_r64,
// CHECK-SAME: {buffers = ["[[CODES]]", "w2", "{{act[0-9]+}}"], concurrent, kernel = @dequant_matmul_i8_q35_128x32_g32_r64,
// CHECK-SAME: kernel = @add_128,
// CHECK-SAME: kernel = @quantize_activations_int4_128_g32,
// CHECK-SAME: kernel = @dequant_matmul_i8_int4_32x128_g32_r64,
// CHECK-SAME: kernel = @[[F16:dequant_matmul_f16_32x32_g[^_]*_r64]],
// CHECK: func.func @[[F16]](
// CHECK-NOT: vpdpbusd
// CHECK-LABEL: func.func @dequant_matmul_i8_int4_32x128_g32_r64(%{{.*}}: index, %{{.*}}: index, %{{.*}}: index, %{{.*}}: memref<?x384xi8>,
// Each group's scale is range·fl(sx/105): range = range_scale·code, exact
// in f32, times the quantize kernel's sx/105.
// CHECK: %[[CODES:.*]] = arith.uitofp %{{.*}} : vector<{{[0-9]+}}xi8> to vector<{{[0-9]+}}xf32>
// CHECK: %[[RANGE:.*]] = arith.mulf %{{.*}}, %[[CODES]] : vector<{{[0-9]+}}xf32>
// CHECK: arith.mulf %[[RANGE]], %{{.*}} : vector<{{[0-9]+}}xf32>
// Codes: 4-bit planes shifted by 0 and 4 in 16-bit lanes, then scaled to
// the common step (7·q) by a byte lookup that repeats every 16.
// CHECK: arith.shrui %{{.*}} : vector<32xi16>
// CHECK: arith.constant dense<[0, 7, 14, 21, 28, 35, 42, 49, 56, 63, 70, 77, 84, 91, 98, 105, 0, 7,
// CHECK: llvm.call_intrinsic "llvm.x86.avx512.permvar.qi.512"
// Integer dot products into one accumulator per group, scaled once.
// CHECK: llvm.call_intrinsic "llvm.x86.avx512.vpdpbusd.512"(%{{.*}}) : (vector<16xi32>, vector<64xi8>, vector<64xi8>) -> vector<16xi32>
// CHECK: arith.sitofp %{{.*}} : vector<16xi32> to vector<16xf32>
// CHECK: math.fma
// CHECK-LABEL: func.func @dequant_matmul_i8_q35_128x32_g32_r64(
// 3-bit planes: lo2 and hi1 bytes gathered per quadword, two multishifts,
// then 15·q by a lookup that repeats every 8; both planes in one chain.
// CHECK: llvm.call_intrinsic "llvm.x86.avx512.pmultishift.qb.512"
// CHECK: llvm.call_intrinsic "llvm.x86.avx512.pmultishift.qb.512"
// CHECK: arith.constant dense<[0, 15, 30, 45, 60, 75, 90, 105, 0, 15,
// CHECK: llvm.call_intrinsic "llvm.x86.avx512.permvar.qi.512"
// CHECK: %[[D4:.*]] = llvm.call_intrinsic "llvm.x86.avx512.vpdpbusd.512"
// CHECK: llvm.call_intrinsic "llvm.x86.avx512.vpdpbusd.512"(%[[D4]],
// CHECK-LABEL: func.func @embedding_q35_128x32_g32(
// CHECK-NOT: vpdpbusd
// Activations: |x| max per group, 127/max, round half to even, to i8,
// permuted into the decode's lane order.
// CHECK-LABEL: func.func @quantize_activations_int4_128_g32(%{{.*}}: index, %{{.*}}: index, %{{.*}}: index, %{{.*}}: memref<?x128xf32>, %{{.*}}: memref<?x384xi8>)
// CHECK: llvm.intr.vector.reduce.fmax
// CHECK: arith.divf
// CHECK: math.roundeven %{{.*}} : vector<64xf32>
// CHECK: arith.fptosi %{{.*}} : vector<64xf32> to vector<64xi32>
// CHECK: arith.trunci %{{.*}} : vector<64xi32> to vector<64xi8>
// CHECK: %[[C105:.*]] = arith.constant 1.050000e+02 : f32
// CHECK: arith.divf %{{.*}}, %[[C105]] : f32
// CHECK: llvm.shufflevector
// CHECK-NOT: vpdpbusd

// BAD: pass `q35-lower-to-kernels`: bad option `activations`: `int4` is neither f32 nor int8

func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>, %start: index) -> tensor<?x32xf32> {
  %emb = "q35.weight"() {name = "emb"} : () -> !q35.packed<128 : i64, 32 : i64, 32 : i64, "q35", "planar">
  %w = "q35.weight"() {name = "w"} : () -> !q35.packed<128 : i64, 32 : i64, 32 : i64, "q35", "planar">
  %w2 = "q35.weight"() {name = "w2"} : () -> !q35.packed<128 : i64, 32 : i64, 32 : i64, "q35", "planar">
  %wd = "q35.weight"() {name = "wd"} : () -> !q35.packed<32 : i64, 128 : i64, 32 : i64, "int4", "planar">
  %wf = "q35.weight"() {name = "wf"} : () -> !q35.packed<32 : i64, 32 : i64, 32 : i64, "f16", "planar">
  %x = "q35.embedding"(%tokens, %emb) : (tensor<?xi32>, !q35.packed<128 : i64, 32 : i64, 32 : i64, "q35", "planar">) -> tensor<?x32xf32>
  %u = "q35.dequant_matmul"(%x, %w) : (tensor<?x32xf32>, !q35.packed<128 : i64, 32 : i64, 32 : i64, "q35", "planar">) -> tensor<?x128xf32>
  %u2 = "q35.dequant_matmul"(%x, %w2) : (tensor<?x32xf32>, !q35.packed<128 : i64, 32 : i64, 32 : i64, "q35", "planar">) -> tensor<?x128xf32>
  %s = "q35.add"(%u, %u2) : (tensor<?x128xf32>, tensor<?x128xf32>) -> tensor<?x128xf32>
  %d = "q35.dequant_matmul"(%s, %wd) : (tensor<?x128xf32>, !q35.packed<32 : i64, 128 : i64, 32 : i64, "int4", "planar">) -> tensor<?x32xf32>
  %f = "q35.dequant_matmul"(%d, %wf) : (tensor<?x32xf32>, !q35.packed<32 : i64, 32 : i64, 32 : i64, "f16", "planar">) -> tensor<?x32xf32>
  return %f : tensor<?x32xf32>
}
