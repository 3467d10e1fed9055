// q35-lower-to-kernels replaces the model function by kernels in upstream
// dialects and a q35.plan (buffers + dispatch list); the kernels then
// lower with upstream passes to the LLVM dialect.
// RUN: q35-opt %s --q35-lower-to-kernels | FileCheck %s
// RUN: q35-opt %s --q35-lower-to-kernels=16 | FileCheck %s --check-prefix=ROWS
// RUN: q35-opt %s --pass-pipeline='builtin.module(q35-lower-to-kernels,convert-scf-to-cf,convert-math-to-llvm,expand-strided-metadata,finalize-memref-to-llvm,convert-arith-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,reconcile-unrealized-casts)' | FileCheck %s --check-prefix=LLVM

// The plan: inputs, cache, weights, activations (reused once dead), and
// one dispatch per op, attention split into kv_update + attention. A
// dispatch that neither reads what the dispatches before it (back to the
// last unmarked one) write nor writes what they bind is `concurrent`:
// both matmuls of the norm's output run as one, and the SwiGLU with
// attention.
// CHECK: "q35.plan"() {buffers = [
// CHECK-SAME: {element = "i32", name = "tokens", role = "input", width = 1 : i64}
// CHECK-SAME: {element = "f32", name = "k_cache.0", role = "kv_cache", width = 1024 : i64}
// CHECK-SAME: name = "w", role = "weight", width = 4096 : i64}
// CHECK-SAME: dispatches = [
// CHECK-SAME: {buffers = ["tokens", "emb", "act{{[0-9]+}}"], kernel = @embedding_q35_128x32_g32, workgroups = 0 : i64, workgroups_per_token = 1 : i64}
// CHECK-SAME: kernel = @rms_norm_32_eps{{[^,]*}}, workgroups = 0 : i64, workgroups_per_token = 1 : i64}
// CHECK-SAME: {buffers = ["[[N:act[0-9]+]]", "w", "act{{[0-9]+}}"], kernel = @dequant_matmul_q35_128x32_g32_r64, workgroups = 2 : i64, workgroups_per_token = 0 : i64}
// CHECK-SAME: {buffers = ["[[N]]", "wq", "act{{[0-9]+}}"], concurrent, kernel = @dequant_matmul_int3_32x32_g32_r64,
// CHECK-SAME: {buffers = ["act{{[0-9]+}}", "positions", "act{{[0-9]+}}"], kernel = @rope_32_hd16_theta10000
// CHECK-SAME: {buffers = ["act{{[0-9]+}}", "act{{[0-9]+}}", "k_cache.0", "v_cache.0"], kernel = @kv_update_h2_kv2_hd16_c32
// CHECK-SAME: {buffers = ["act{{[0-9]+}}", "k_cache.0", "v_cache.0", "act{{[0-9]+}}"], kernel = @attention_h2_kv2_hd16_c32, workgroups = 2 : i64
// CHECK-SAME: concurrent, kernel = @swiglu_128
// CHECK-SAME: kernel = @add_32
// The model function is gone; kernels take (wg, tokens, start, buffers...).
// CHECK-NOT: func.func @forward
// Attention: the q·k dot products may reassociate (so they vectorize);
// the softmax's exp is inline arithmetic (Cephes' expf: round(x·log2 e),
// the polynomial, 2^n in the exponent bits), no libm call, and its sum
// may reassociate, so that loop vectorizes too.
// CHECK-LABEL: func.func @attention_h2_kv2_hd16_c32(
// CHECK: arith.mulf {{.*}} fastmath<reassoc,contract> : f32
// CHECK-NEXT: arith.addf {{.*}} fastmath<reassoc,contract> : f32
// CHECK-NOT: math.exp
// CHECK: arith.maximumf
// CHECK: math.roundeven %{{.*}} : f32
// CHECK: arith.shli %{{.*}} : i32
// CHECK: llvm.bitcast %{{.*}} : i32 to f32
// CHECK: arith.addf {{.*}} fastmath<reassoc,contract> : f32
// CHECK-NOT: math.exp
// The weighted sum of V rows carries its accumulator (head_dim 16: one
// vector) across positions and stores it once.
// CHECK: scf.for {{.*}} iter_args({{.*}}) -> (vector<16xf32>)
// CHECK: math.fma %{{.*}}, %{{.*}}, %{{.*}} : vector<16xf32>
// CHECK: llvm.store %{{.*}}, %{{.*}} {alignment = 4 : i64} : vector<16xf32>, !llvm.ptr
// CHECK-LABEL: func.func @dequant_matmul_q35_128x32_g32_r64(%arg0: index, %arg1: index, %arg2: index, %arg3: memref<?x32xf32>, %arg4: memref<?xi8>, %arg5: memref<?xf16>, %arg6: memref<?xi8>, %arg7: memref<?xf16>, %arg8: memref<?x128xf32>) attributes {llvm.emit_c_interface}
// CHECK: memref.alloca(){{.*}} : memref<{{[0-9]+}}xf32>
// CHECK: scf.for
// Dequantization is min + q * s with no fast-math: the reference's rounding
// (on AVX-512 hosts into a 16-lane table of weights, elsewhere one weight at
// a time).
// CHECK: %[[Q:.*]] = {{arith.uitofp .* : i32 to f32|arith.constant dense<\[0.000000e\+00, 1.000000e\+00.*> : vector<16xf32>}}
// CHECK-NEXT: %[[QS:.*]] = arith.mulf %[[Q]], %{{.*}} : [[T:f32|vector<16xf32>]]
// CHECK-NEXT: arith.addf %{{.*}}, %[[QS]] : [[T]]
// The dot products may reassociate and fuse.
// CHECK: {{arith.mulf .* fastmath<reassoc,contract>|math.fma}}
// RMSNorm's sum of squares may reassociate (so it vectorizes).
// CHECK-LABEL: func.func @rms_norm_32
// CHECK: arith.mulf {{.*}} fastmath<reassoc,contract> : f32
// CHECK-NEXT: arith.addf {{.*}} fastmath<reassoc,contract> : f32
// CHECK: math.sqrt
// CHECK-LABEL: func.func @rope_32_hd16_theta10000
// CHECK: math.cos %{{.*}} : f64
// CHECK: math.sin %{{.*}} : f64
// SwiGLU's silu takes the inline exp too.
// CHECK-LABEL: func.func @swiglu_128
// CHECK-NOT: math.exp
// CHECK: math.roundeven %{{.*}} : f32
// CHECK: arith.divf

// ROWS: kernel = @dequant_matmul_q35_128x32_g32_r16, workgroups = 8 : i64

// LLVM-NOT: scf.for
// LLVM-NOT: memref.load
// LLVM: llvm.func @_mlir_ciface_dequant_matmul_q35_128x32_g32_r64(%arg0: i64, %arg1: i64, %arg2: i64, %arg3: !llvm.ptr
func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>, %start: index,
                   %kc: tensor<32x32xf32>, %vc: tensor<32x32xf32>) -> (tensor<?x32xf32>, tensor<32x32xf32>, tensor<32x32xf32>) {
  %emb = "q35.weight"() {name = "emb"} : () -> !q35.packed<128 : i64, 32 : i64, 32 : i64, "q35", "planar">
  %g = "q35.weight"() {name = "g"} : () -> tensor<32xf32>
  %w = "q35.weight"() {name = "w"} : () -> !q35.packed<128 : i64, 32 : i64, 32 : i64, "q35", "planar">
  %wd = "q35.weight"() {name = "wd"} : () -> !q35.packed<32 : i64, 128 : i64, 32 : i64, "int4", "planar">
  %wq = "q35.weight"() {name = "wq"} : () -> !q35.packed<32 : i64, 32 : i64, 32 : i64, "int3", "planar">
  %x = "q35.embedding"(%tokens, %emb) : (tensor<?xi32>, !q35.packed<128 : i64, 32 : i64, 32 : i64, "q35", "planar">) -> tensor<?x32xf32>
  %n = "q35.rms_norm"(%x, %g) {epsilon = 1.0e-5 : f32} : (tensor<?x32xf32>, tensor<32xf32>) -> tensor<?x32xf32>
  %u = "q35.dequant_matmul"(%n, %w) : (tensor<?x32xf32>, !q35.packed<128 : i64, 32 : i64, 32 : i64, "q35", "planar">) -> tensor<?x128xf32>
  %q = "q35.dequant_matmul"(%n, %wq) : (tensor<?x32xf32>, !q35.packed<32 : i64, 32 : i64, 32 : i64, "int3", "planar">) -> tensor<?x32xf32>
  %qr = "q35.rope"(%q, %pos) {head_dim = 16 : i64, theta = 1.0e4 : f32} : (tensor<?x32xf32>, tensor<?xi32>) -> tensor<?x32xf32>
  %o, %kc2, %vc2 = "q35.attention"(%qr, %qr, %q, %kc, %vc, %start) {num_heads = 2 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>, tensor<32x32xf32>, tensor<32x32xf32>, index) -> (tensor<?x32xf32>, tensor<32x32xf32>, tensor<32x32xf32>)
  %s = "q35.swiglu"(%u, %u) : (tensor<?x128xf32>, tensor<?x128xf32>) -> tensor<?x128xf32>
  %d = "q35.dequant_matmul"(%s, %wd) : (tensor<?x128xf32>, !q35.packed<32 : i64, 128 : i64, 32 : i64, "int4", "planar">) -> tensor<?x32xf32>
  %h = "q35.add"(%o, %d) : (tensor<?x32xf32>, tensor<?x32xf32>) -> tensor<?x32xf32>
  return %h, %kc2, %vc2 : tensor<?x32xf32>, tensor<32x32xf32>, tensor<32x32xf32>
}
