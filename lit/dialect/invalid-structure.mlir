// MLIR itself (through the IRDL definition) rejects malformed q35 ops.
// RUN: q35-opt --split-input-file --verify-diagnostics %s

// An op name the dialect does not define.
// expected-error@+1 {{unregistered operation 'q35.dequant_matmul_fast' found in dialect ('q35')}}
"q35.dequant_matmul_fast"() : () -> ()

// -----

// Wrong operand count.
func.func @f(%x: tensor<1x576xf32>) {
  // expected-error@+1 {{'q35.dequant_matmul' op expects exactly 2 operands, but got 1}}
  %y = "q35.dequant_matmul"(%x) : (tensor<1x576xf32>) -> tensor<1x576xf32>
  return
}

// -----

// Wrong operand type: the weight must be a !q35.packed.
func.func @f(%x: tensor<1x576xf32>, %w: tensor<576x576xf32>) {
  // expected-error@+1 {{'q35.dequant_matmul' op expected base type 'q35.packed' but got 'builtin.tensor'}}
  %y = "q35.dequant_matmul"(%x, %w) : (tensor<1x576xf32>, tensor<576x576xf32>) -> tensor<1x576xf32>
  return
}

// -----

// Missing attribute.
func.func @f(%x: tensor<1x576xf32>, %g: tensor<576xf32>) {
  // expected-error@+1 {{'q35.rms_norm' op attribute "epsilon" is expected but not provided}}
  %y = "q35.rms_norm"(%x, %g) : (tensor<1x576xf32>, tensor<576xf32>) -> tensor<1x576xf32>
  return
}

// -----

// An attribute of the wrong kind.
func.func @f(%x: tensor<1x576xf32>, %p: tensor<1xi32>) {
  // expected-error@+1 {{'q35.rope' op expected base attribute 'builtin.integer' but got 'builtin.string'}}
  %y = "q35.rope"(%x, %p) {head_dim = "64", theta = 1.0e4 : f32} : (tensor<1x576xf32>, tensor<1xi32>) -> tensor<1x576xf32>
  return
}

// -----

// Elementwise operands and result must have one type.
func.func @f(%a: tensor<1x576xf32>, %b: tensor<1x192xf32>) {
  // expected-error@+1 {{'q35.add' op expected 'tensor<1x576xf32>' but got 'tensor<1x192xf32>'}}
  %y = "q35.add"(%a, %b) : (tensor<1x576xf32>, tensor<1x192xf32>) -> tensor<1x576xf32>
  return
}

// -----

// An unknown quantization in the packed type.
// expected-error@+1 {{'"int2"' does not satisfy the constraint}}
func.func private @f(!q35.packed<8 : i64, 64 : i64, 32 : i64, "int2", "planar">)

// -----

// A packed type with a parameter missing.
// expected-error@+1 {{expected 5 type arguments, but had 4}}
func.func private @f(!q35.packed<8 : i64, 64 : i64, 32 : i64, "q35">)

// -----

// The result count of attention is three.
func.func @f(%q: tensor<1x576xf32>, %k: tensor<1x192xf32>, %c: tensor<16x192xf32>, %s: index) {
  // expected-error@+1 {{'q35.attention' op expects exactly 3 results, but got 1}}
  %o = "q35.attention"(%q, %k, %k, %c, %c, %s) {num_heads = 9 : i64, num_kv_heads = 3 : i64, head_dim = 64 : i64} : (tensor<1x576xf32>, tensor<1x192xf32>, tensor<1x192xf32>, tensor<16x192xf32>, tensor<16x192xf32>, index) -> tensor<1x576xf32>
  return
}
