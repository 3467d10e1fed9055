// q35-lower-to-gpu turns the kernels of q35-lower-to-kernels into GPU
// kernels in a gpu.module and gives every dispatch a launch configuration;
// upstream convert-gpu-to-nvvm then takes them to the LLVM + NVVM dialects.
// RUN: q35-opt %s --q35-lower-to-kernels --q35-lower-to-gpu | FileCheck %s
// RUN: q35-opt %s --q35-lower-to-kernels --q35-lower-to-gpu=8 | FileCheck %s --check-prefix=WARPS
// RUN: q35-opt %s --pass-pipeline='builtin.module(q35-lower-to-kernels,q35-lower-to-gpu,gpu.module(convert-scf-to-cf,convert-gpu-to-nvvm{index-bitwidth=64}),reconcile-unrealized-casts)' | FileCheck %s --check-prefix=NVVM
// RUN: not q35-opt %s --q35-lower-to-gpu 2>&1 | FileCheck %s --check-prefix=ORDER
// RUN: not q35-opt %s --q35-lower-to-kernels --q35-lower-to-gpu=0 2>&1 | FileCheck %s --check-prefix=BAD

// The plan keeps its buffers; every dispatch gets a block size. A matmul's
// workgroups become blocks of 4 warps, one output row per warp (N = 32
// rows: 8 blocks of 128 threads); row kernels run one warp per token;
// attention one warp per (token, head): 2 blocks per token instead of one
// workgroup per head; the embedding one warp per token.
// CHECK: module attributes {gpu.container_module}
// CHECK: "q35.plan"() {buffers = [{element = "i32", name = "tokens", role = "input", width = 1 : i64}
// CHECK-SAME: dispatches = [{block = array<i32: 32, 1, 1>, buffers = ["tokens", "emb", "act{{[0-9]+}}"], kernel = @embedding_q35_128x40_g32, workgroups = 0 : i64, workgroups_per_token = 1 : i64}
// CHECK-SAME: {block = array<i32: 32, 1, 1>, buffers = ["act{{[0-9]+}}", "g", "act{{[0-9]+}}"], kernel = @rms_norm_40_eps1e_5, workgroups = 0 : i64, workgroups_per_token = 1 : i64}
// CHECK-SAME: {block = array<i32: 128, 1, 1>, buffers = ["act{{[0-9]+}}", "wi", "act{{[0-9]+}}"], kernel = @dequant_matmul_q35_32x40_g32_r64, workgroups = 8 : i64, workgroups_per_token = 0 : i64}
// CHECK-SAME: {block = array<i32: 128, 1, 1>, buffers = ["act{{[0-9]+}}", "wq", "act{{[0-9]+}}"], kernel = @dequant_matmul_f16_32x32_g32_r64, workgroups = 8 : i64
// CHECK-SAME: {block = array<i32: 32, 1, 1>, buffers = ["act{{[0-9]+}}", "k_cache.0", "v_cache.0", "act{{[0-9]+}}"], kernel = @attention_h2_kv2_hd16_c32, workgroups = 0 : i64, workgroups_per_token = 2 : i64}
// CHECK-SAME: {block = array<i32: 128, 1, 1>, buffers = ["act{{[0-9]+}}", "wg", "wu", "act{{[0-9]+}}"], kernel = @dequant_matmul_int4_64x32_g32_r64_swiglu, workgroups = 16 : i64
// CHECK-SAME: {block = array<i32: 128, 1, 1>, buffers = ["act{{[0-9]+}}", "wd", "act{{[0-9]+}}", "act{{[0-9]+}}"], kernel = @dequant_matmul_int3_32x64_g64_r64_add, workgroups = 8 : i64
// CHECK: gpu.module @q35_kernels {
// A row kernel: block m is token m, its 32 lanes stride over the row.
// CHECK-LABEL: gpu.func @add_32(%arg0: index, %arg1: index, %arg2: memref<?x32xf32>, %arg3: memref<?x32xf32>, %arg4: memref<?x32xf32>) kernel attributes {known_block_size = array<i32: 32, 1, 1>}
// CHECK-NEXT: %[[TOK:.*]] = gpu.block_id x
// CHECK-NEXT: %[[L:.*]] = gpu.thread_id x
// CHECK: scf.for %[[I:.*]] = %[[L]] to %c32{{.*}} step %c32
// CHECK: arith.addf
// CHECK: memref.store %{{.*}}, %arg4[%[[TOK]], %[[I]]]
// Attention: block b is token b / 2, head b % 2; lane l owns dimension l
// of the head (16 of 32 lanes valid); one pass over the visible cache rows
// with an online softmax, the q.k dot summed across the warp.
// CHECK-LABEL: gpu.func @attention_h2_kv2_hd16_c32(
// CHECK-SAME: known_block_size = array<i32: 32, 1, 1>
// CHECK: %[[AB:.*]] = gpu.block_id x
// CHECK: %[[AM:.*]] = arith.divui %[[AB]], %c2
// CHECK: %[[VALID:.*]] = arith.cmpi ult, %{{.*}}, %c16
// CHECK: scf.for %{{.*}} = %c0 to %{{.*}} step %c1{{.*}} iter_args(%[[MAX:.*]] = %cst{{.*}}, %[[SUM:.*]] = %cst{{.*}}, %[[ACC:.*]] = %cst{{.*}}) -> (f32, f32, f32)
// CHECK: gpu.shuffle xor
// CHECK: %[[NEW:.*]] = arith.maxnumf %[[MAX]], %{{.*}} : f32
// CHECK: %[[DROP:.*]] = arith.subf %[[MAX]], %[[NEW]] : f32
// CHECK: math.exp %[[DROP]] : f32
// CHECK: scf.if %[[VALID]]
// CHECK: memref.store %{{.*}}, %arg5[%[[AM]], %{{.*}}] : memref<?x32xf32>
// The fused dequant GEMV for q35 weights with K = 40 (a full group of 32
// and a tail of 8): (tokens, start, x, codes, mins, range codes, range
// scale, out); warp w of block b takes row 4b + w.
// CHECK-LABEL: gpu.func @dequant_matmul_q35_32x40_g32_r64(%arg0: index, %arg1: index, %arg2: memref<?x40xf32>, %arg3: memref<?xi8>, %arg4: memref<?xf16>, %arg5: memref<?xi8>, %arg6: memref<?xf16>, %arg7: memref<?x32xf32>) kernel attributes {known_block_size = array<i32: 128, 1, 1>}
// CHECK: %[[TID:.*]] = gpu.thread_id x
// CHECK: %[[B:.*]] = gpu.block_id x
// CHECK: %[[WARP:.*]] = arith.divui %[[TID]], %c32
// CHECK: %[[LANE:.*]] = arith.remui %[[TID]], %c32
// CHECK: %[[ROW0:.*]] = arith.muli %[[B]], %c4
// CHECK: %[[N:.*]] = arith.addi %[[ROW0]], %[[WARP]]
// CHECK: arith.cmpi ult, %[[N]], %c32
// Tokens in tiles of 4 (a GEMM tiled over rows and tokens: each weight is
// decoded once per tile), then the rest one at a time.
// CHECK: %[[LEN:.*]] = arith.subi %arg0, %c0
// CHECK: %[[TILES:.*]] = arith.divui %[[LEN]], %[[C4:c4[_0-9]*]]
// CHECK: %[[SPAN:.*]] = arith.muli %[[TILES]], %[[C4]]
// CHECK: %[[TILED:.*]] = arith.addi %c0, %[[SPAN]]
// CHECK: scf.for %[[M0:.*]] = %c0 to %[[TILED]] step %[[C4]] {
// CHECK: %[[T0:.*]] = arith.addi %[[M0]], %c0
// CHECK: %[[M1:.*]] = arith.addi %[[M0]], %c1
// CHECK: %[[M2:.*]] = arith.addi %[[M0]], %c2
// CHECK: %[[M3:.*]] = arith.addi %[[M0]], %c3
// Per group: range = range_scale * range_code, s4 = range / 15, s3 = range / 7.
// CHECK: %[[RS:.*]] = arith.extf {{.*}} : f16 to f32
// CHECK: scf.for {{.*}} iter_args({{.*}}) -> (f32, f32, f32, f32)
// CHECK: %[[MIN:.*]] = arith.extf {{.*}} : f16 to f32
// CHECK: %[[CODE:.*]] = arith.uitofp {{.*}} : i8 to f32
// CHECK: %[[RANGE:.*]] = arith.mulf %[[RS]], %[[CODE]] : f32
// CHECK: %[[S4:.*]] = arith.divf %[[RANGE]], %cst{{.*}} : f32
// CHECK: %[[S3:.*]] = arith.divf %[[RANGE]], %cst{{.*}} : f32
// Lanes stride over the group's column pairs (16 pairs in the full group),
// with one partial dot per token of the tile.
// CHECK: scf.for %[[P:.*]] = %[[LANE]] to %c16 step %c32{{.*}} iter_args({{.*}}) -> (f32, f32, f32, f32)
// The 4-bit code of column 2p (nibble p % 2 of byte p / 2) and the 3-bit
// code of column 2p + 1 (lo2 bits | hi1 bit << 2), decoded in registers.
// CHECK: arith.andi %{{.*}}, %c15_i32 : i32
// CHECK: arith.andi %{{.*}}, %c3_i32 : i32
// CHECK: arith.andi %{{.*}}, %c1_i32{{.*}} : i32
// CHECK: %[[Q3:.*]] = arith.ori
// Dequantization is min + q * s with no fast-math (two f32 roundings, as
// the reference); only the dot product may contract.
// CHECK: %[[QF:.*]] = arith.uitofp %{{.*}} : i32 to f32
// CHECK-NEXT: %[[QS:.*]] = arith.mulf %[[QF]], %[[S4]] : f32
// CHECK-NEXT: %[[W0:.*]] = arith.addf %[[MIN]], %[[QS]] : f32
// CHECK: arith.mulf %{{.*}}, %[[S3]] : f32
// The decoded pair meets the activations of all four tokens.
// CHECK: memref.load %arg2[%[[T0]], %{{.*}}] : memref<?x40xf32>
// CHECK: arith.mulf %{{.*}}, %{{.*}} fastmath<contract> : f32
// CHECK: memref.load %arg2[%[[M1]], %{{.*}}] : memref<?x40xf32>
// CHECK: memref.load %arg2[%[[M2]], %{{.*}}] : memref<?x40xf32>
// CHECK: memref.load %arg2[%[[M3]], %{{.*}}] : memref<?x40xf32>
// The tail group of 8 columns: 4 pairs.
// CHECK: scf.for %{{.*}} = %[[LANE]] to %c4{{.*}} step %c32
// Warp reduction: five butterfly shuffles per token, then lane 0 stores.
// CHECK: gpu.shuffle xor %{{.*}}, %c16_i32, %c32_i32 : f32
// CHECK: gpu.shuffle xor %{{.*}}, %c8_i32, %c32_i32 : f32
// CHECK: gpu.shuffle xor %{{.*}}, %c4_i32, %c32_i32 : f32
// CHECK: gpu.shuffle xor %{{.*}}, %c2_i32, %c32_i32 : f32
// CHECK: %[[RED:.*]], %{{.*}} = gpu.shuffle xor %{{.*}}, %c1_i32, %c32_i32 : f32
// CHECK: %[[SUM:.*]] = arith.addf %{{.*}}, %[[RED]] : f32
// CHECK: arith.cmpi eq, %[[LANE]], %c0
// CHECK: memref.store %[[SUM]], %arg7[%[[T0]], %[[N]]] : memref<?x32xf32>
// CHECK: memref.store %{{.*}}, %arg7[%[[M3]], %[[N]]] : memref<?x32xf32>
// The remaining tokens, one at a time (decode).
// CHECK: scf.for %[[M:.*]] = %[[TILED]] to %arg0 step %c1
// CHECK: scf.for {{.*}} iter_args({{.*}}) -> (f32) {
// CHECK: memref.store %{{.*}}, %arg7[%[[M]], %[[N]]] : memref<?x32xf32>
// CHECK: gpu.return
// The embedding: block m is one warp that decodes row ids[m] with the
// GEMV's decode (lanes over the column pairs of each group) and stores it.
// CHECK-LABEL: gpu.func @embedding_q35_128x40_g32(%arg0: index, %arg1: index, %arg2: memref<?xi32>, %arg3: memref<?xi8>, %arg4: memref<?xf16>, %arg5: memref<?xi8>, %arg6: memref<?xf16>, %arg7: memref<?x40xf32>) kernel attributes {known_block_size = array<i32: 32, 1, 1>}
// CHECK-NEXT: %[[EM:.*]] = gpu.block_id x
// CHECK-NEXT: %[[ID:.*]] = memref.load %arg2[%[[EM]]] : memref<?xi32>
// CHECK-NEXT: %[[ROW:.*]] = arith.index_cast %[[ID]] : i32 to index
// CHECK-NEXT: %[[EL:.*]] = gpu.thread_id x
// CHECK: arith.divf %{{.*}}, %cst{{.*}} : f32
// CHECK: scf.for %{{.*}} = %[[EL]] to %c16{{.*}} step %c32
// CHECK: memref.store %{{.*}}, %arg7[%[[EM]], %{{.*}}] : memref<?x40xf32>
// CHECK: memref.store %{{.*}}, %arg7[%[[EM]], %{{.*}}] : memref<?x40xf32>
// CHECK: gpu.return
// No CPU loop nest is left behind.
// CHECK-NOT: embedding_q35_128x40_g32__body

// WARPS: dispatches =
// WARPS-SAME: {block = array<i32: 256, 1, 1>, buffers = ["act{{[0-9]+}}", "wi", "act{{[0-9]+}}"], kernel = @dequant_matmul_q35_32x40_g32_r64, workgroups = 4 : i64
// WARPS: gpu.func @dequant_matmul_q35_32x40_g32_r64({{.*}}) kernel attributes {known_block_size = array<i32: 256, 1, 1>}

// After convert-gpu-to-nvvm: kernels are llvm.func with gpu.kernel and
// nvvm.kernel, memrefs expanded to descriptor fields, ids are PTX special
// registers, shuffles are nvvm.shfl.sync, math is libdevice.
// NVVM: gpu.module @q35_kernels
// NVVM: llvm.func @__nv_expf(f32) -> f32
// NVVM-LABEL: llvm.func @dequant_matmul_q35_32x40_g32_r64(%arg0: i64, %arg1: i64, %arg2: !llvm.ptr, %arg3: !llvm.ptr, %arg4: i64, %arg5: i64, %arg6: i64, %arg7: i64, %arg8: i64, %arg9: !llvm.ptr,
// NVVM-SAME: gpu.kernel
// NVVM-SAME: nvvm.kernel
// NVVM-SAME: nvvm.maxntid = array<i32: 128, 1, 1>
// NVVM: nvvm.read.ptx.sreg.tid.x
// NVVM: nvvm.read.ptx.sreg.ctaid.x
// NVVM: nvvm.shfl.sync bfly
// NVVM-NOT: gpu.func
// NVVM-NOT: memref.load

// ORDER: pass `q35-lower-to-gpu` failed:
// ORDER-NEXT: no q35.plan: run q35-lower-to-kernels before q35-lower-to-gpu
// BAD: pass `q35-lower-to-gpu`: bad option `warps`: `0` is not a warp count from 1 to 32

func.func @forward(%tokens: tensor<?xi32>, %pos: tensor<?xi32>, %start: index,
                   %kc: tensor<32x32xf32>, %vc: tensor<32x32xf32>) -> (tensor<?x32xf32>, tensor<32x32xf32>, tensor<32x32xf32>) {
  %emb = "q35.weight"() {name = "emb"} : () -> !q35.packed<128 : i64, 40 : i64, 32 : i64, "q35", "planar">
  %g = "q35.weight"() {name = "g"} : () -> tensor<40xf32>
  %wi = "q35.weight"() {name = "wi"} : () -> !q35.packed<32 : i64, 40 : i64, 32 : i64, "q35", "planar">
  %wg = "q35.weight"() {name = "wg"} : () -> !q35.packed<64 : i64, 32 : i64, 32 : i64, "int4", "planar">
  %wu = "q35.weight"() {name = "wu"} : () -> !q35.packed<64 : i64, 32 : i64, 32 : i64, "int4", "planar">
  %wd = "q35.weight"() {name = "wd"} : () -> !q35.packed<32 : i64, 64 : i64, 64 : i64, "int3", "planar">
  %wq = "q35.weight"() {name = "wq"} : () -> !q35.packed<32 : i64, 32 : i64, 32 : i64, "f16", "planar">
  %x = "q35.embedding"(%tokens, %emb) : (tensor<?xi32>, !q35.packed<128 : i64, 40 : i64, 32 : i64, "q35", "planar">) -> tensor<?x40xf32>
  %n = "q35.rms_norm"(%x, %g) {epsilon = 1.0e-5 : f32} : (tensor<?x40xf32>, tensor<40xf32>) -> tensor<?x40xf32>
  %h = "q35.dequant_matmul"(%n, %wi) : (tensor<?x40xf32>, !q35.packed<32 : i64, 40 : i64, 32 : i64, "q35", "planar">) -> tensor<?x32xf32>
  %q = "q35.dequant_matmul"(%h, %wq) : (tensor<?x32xf32>, !q35.packed<32 : i64, 32 : i64, 32 : i64, "f16", "planar">) -> tensor<?x32xf32>
  %qr = "q35.rope"(%q, %pos) {head_dim = 16 : i64, theta = 1.0e4 : f32} : (tensor<?x32xf32>, tensor<?xi32>) -> tensor<?x32xf32>
  %o, %kc2, %vc2 = "q35.attention"(%qr, %qr, %q, %kc, %vc, %start) {num_heads = 2 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>, tensor<32x32xf32>, tensor<32x32xf32>, index) -> (tensor<?x32xf32>, tensor<32x32xf32>, tensor<32x32xf32>)
  %s = "q35.dequant_matmul_swiglu"(%o, %wg, %wu) : (tensor<?x32xf32>, !q35.packed<64 : i64, 32 : i64, 32 : i64, "int4", "planar">, !q35.packed<64 : i64, 32 : i64, 32 : i64, "int4", "planar">) -> tensor<?x64xf32>
  %d = "q35.dequant_matmul_add"(%s, %wd, %h) : (tensor<?x64xf32>, !q35.packed<32 : i64, 64 : i64, 64 : i64, "int3", "planar">, tensor<?x32xf32>) -> tensor<?x32xf32>
  %r = "q35.add"(%o, %d) : (tensor<?x32xf32>, tensor<?x32xf32>) -> tensor<?x32xf32>
  return %r, %kc2, %vc2 : tensor<?x32xf32>, tensor<32x32xf32>, tensor<32x32xf32>
}
