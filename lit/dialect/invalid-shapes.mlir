// The q35 verifier (dialect/src/verify.rs) rejects what IRDL cannot
// express; every tool runs it right after MLIR's verifier.
// RUN: q35-opt --split-input-file --verify-diagnostics %s

func.func @k_mismatch(%x: tensor<2x512xf32>) {
  %w = "q35.weight"() {name = "up"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  // expected-error@+1 {{'q35.dequant_matmul' op x's last dimension (K) is 512, expected 576}}
  %y = "q35.dequant_matmul"(%x, %w) : (tensor<2x512xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<2x1536xf32>
  return
}

// -----

func.func @n_mismatch(%x: tensor<2x576xf32>) {
  %w = "q35.weight"() {name = "up"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  // expected-error@+1 {{result's last dimension (N) is 576, expected 1536}}
  %y = "q35.dequant_matmul"(%x, %w) : (tensor<2x576xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<2x576xf32>
  return
}

// -----

func.func @rows_mismatch(%x: tensor<2x576xf32>) {
  %w = "q35.weight"() {name = "up"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  // expected-error@+1 {{x and result: leading dimensions [2] and [3] disagree}}
  %y = "q35.dequant_matmul"(%x, %w) : (tensor<2x576xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<3x1536xf32>
  return
}

// -----

func.func @element_type(%x: tensor<2x576xf16>) {
  %w = "q35.weight"() {name = "up"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  // expected-error@+1 {{x must have f32 elements, got f16}}
  %y = "q35.dequant_matmul"(%x, %w) : (tensor<2x576xf16>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<2x1536xf32>
  return
}

// -----

func.func @bad_group() {
  // expected-error@+1 {{'q35.weight' op weight `up`: group size 100 is not one of 32, 64, 128, 256 or the row length 576}}
  %w = "q35.weight"() {name = "up"} : () -> !q35.packed<1536 : i64, 576 : i64, 100 : i64, "q35", "planar">
  return
}

// -----

func.func @empty_name() {
  // expected-error@+1 {{attribute `name` must name a weight (it is empty)}}
  %w = "q35.weight"() {name = ""} : () -> tensor<576xf32>
  return
}

// -----

func.func @gamma(%x: tensor<2x576xf32>, %g: tensor<512xf32>) {
  // expected-error@+1 {{'q35.rms_norm' op gamma length 512 differs from the normalized dimension 576}}
  %y = "q35.rms_norm"(%x, %g) {epsilon = 1.0e-5 : f32} : (tensor<2x576xf32>, tensor<512xf32>) -> tensor<2x576xf32>
  return
}

// -----

func.func @epsilon(%x: tensor<2x576xf32>, %g: tensor<576xf32>) {
  // expected-error@+1 {{attribute `epsilon` must be a positive finite number, got 0}}
  %y = "q35.rms_norm"(%x, %g) {epsilon = 0.0 : f32} : (tensor<2x576xf32>, tensor<576xf32>) -> tensor<2x576xf32>
  return
}

// -----

func.func @rope_odd(%x: tensor<2x576xf32>, %p: tensor<2xi32>) {
  // expected-error@+1 {{'q35.rope' op head_dim must be even to rotate halves, got 63}}
  %y = "q35.rope"(%x, %p) {head_dim = 63 : i64, theta = 1.0e4 : f32} : (tensor<2x576xf32>, tensor<2xi32>) -> tensor<2x576xf32>
  return
}

// -----

func.func @rope_positions(%x: tensor<2x576xf32>, %p: tensor<3xi32>) {
  // expected-error@+1 {{positions must have one entry per row of x}}
  %y = "q35.rope"(%x, %p) {head_dim = 64 : i64, theta = 1.0e4 : f32} : (tensor<2x576xf32>, tensor<3xi32>) -> tensor<2x576xf32>
  return
}

// -----

func.func @gqa(%q: tensor<1x576xf32>, %k: tensor<1x256xf32>, %c: tensor<16x256xf32>, %s: index) {
  // expected-error@+1 {{'q35.attention' op num_heads 9 is not a multiple of num_kv_heads 4}}
  %o, %kc, %vc = "q35.attention"(%q, %k, %k, %c, %c, %s) {num_heads = 9 : i64, num_kv_heads = 4 : i64, head_dim = 64 : i64} : (tensor<1x576xf32>, tensor<1x256xf32>, tensor<1x256xf32>, tensor<16x256xf32>, tensor<16x256xf32>, index) -> (tensor<1x576xf32>, tensor<16x256xf32>, tensor<16x256xf32>)
  return
}

// -----

func.func @kv_width(%q: tensor<1x576xf32>, %k: tensor<1x128xf32>, %c: tensor<16x128xf32>, %s: index) {
  // expected-error@+1 {{k/v width (num_kv_heads * head_dim) is 128, expected 192}}
  %o, %kc, %vc = "q35.attention"(%q, %k, %k, %c, %c, %s) {num_heads = 9 : i64, num_kv_heads = 3 : i64, head_dim = 64 : i64} : (tensor<1x576xf32>, tensor<1x128xf32>, tensor<1x128xf32>, tensor<16x128xf32>, tensor<16x128xf32>, index) -> (tensor<1x576xf32>, tensor<16x128xf32>, tensor<16x128xf32>)
  return
}

// -----

func.func @embedding_tokens(%t: tensor<4xi64>) {
  %e = "q35.weight"() {name = "emb"} : () -> !q35.packed<100 : i64, 64 : i64, 32 : i64, "q35", "planar">
  // expected-error@+1 {{'q35.embedding' op tokens must have i32 elements, got i64}}
  %x = "q35.embedding"(%t, %e) : (tensor<4xi64>, !q35.packed<100 : i64, 64 : i64, 32 : i64, "q35", "planar">) -> tensor<4x64xf32>
  return
}

// -----

func.func @i8_on_floats(%x: tensor<2x64xi8>, %s: tensor<2xf32>) {
  %w = "q35.weight"() {name = "w"} : () -> !q35.packed<8 : i64, 64 : i64, 32 : i64, "f16", "planar">
  // expected-error@+1 {{the integer path needs integer codes, but w is f16}}
  %y = "q35.dequant_matmul_i8"(%x, %s, %w) {acc_len = 32 : i64} : (tensor<2x64xi8>, tensor<2xf32>, !q35.packed<8 : i64, 64 : i64, 32 : i64, "f16", "planar">) -> tensor<2x8xf32>
  return
}

// -----

func.func @i8_acc_len(%x: tensor<2x64xi8>, %s: tensor<2xf32>) {
  %w = "q35.weight"() {name = "w"} : () -> !q35.packed<8 : i64, 64 : i64, 32 : i64, "q35", "planar">
  // expected-error@+1 {{acc_len 128 exceeds K = 64}}
  %y = "q35.dequant_matmul_i8"(%x, %s, %w) {acc_len = 128 : i64} : (tensor<2x64xi8>, tensor<2xf32>, !q35.packed<8 : i64, 64 : i64, 32 : i64, "q35", "planar">) -> tensor<2x8xf32>
  return
}

// -----

func.func @tile_too_wide(%x: tensor<4x576xf32>, %acc: tensor<4x400xf32>, %n0: index, %k0: index) {
  %w = "q35.weight"() {name = "up"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  // expected-error@+1 {{'q35.dequant_matmul_tile' op acc width 400 exceeds the tile (tile_n = 320, N = 1536)}}
  %t = "q35.dequant_matmul_tile"(%x, %w, %acc, %n0, %k0) {tile_n = 320 : i64, tile_k = 320 : i64} : (tensor<4x576xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">, tensor<4x400xf32>, index, index) -> tensor<4x400xf32>
  return
}

// -----

func.func @tile_zero(%x: tensor<4x576xf32>, %acc: tensor<4x320xf32>, %n0: index, %k0: index) {
  %w = "q35.weight"() {name = "up"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  // expected-error@+1 {{attribute `tile_k` must be positive, got 0}}
  %t = "q35.dequant_matmul_tile"(%x, %w, %acc, %n0, %k0) {tile_n = 320 : i64, tile_k = 0 : i64} : (tensor<4x576xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">, tensor<4x320xf32>, index, index) -> tensor<4x320xf32>
  return
}

// -----

func.func @fused_add_k(%x: tensor<2x32xf32>) {
  %w = "q35.weight"() {name = "w"} : () -> !q35.packed<32 : i64, 64 : i64, 32 : i64, "q35", "planar">
  // expected-error@+1 {{'q35.dequant_matmul_add' op x's last dimension (K) is 32, expected 64}}
  %y = "q35.dequant_matmul_add"(%x, %w, %x) : (tensor<2x32xf32>, !q35.packed<32 : i64, 64 : i64, 32 : i64, "q35", "planar">, tensor<2x32xf32>) -> tensor<2x32xf32>
  return
}

// -----

// q35.rotate is defined for widths 12^a · 2^b (a ≤ 2), at least 16.
func.func @rotate_width(%x: tensor<2x80xf32>) {
  // expected-error@+1 {{rotates a last dimension of 80, which is not 12^a · 2^b (a ≤ 2, at least 16)}}
  %y = "q35.rotate"(%x) {inverse = false} : (tensor<2x80xf32>) -> tensor<2x80xf32>
  return
}
