func.func @f(%x: tensor<2x512xf32>) {
  %w = "q35.weight"() {name = "up"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  // expected-error@+1 {{this text is not in the diagnostic}}
  %y = "q35.dequant_matmul"(%x, %w) : (tensor<2x512xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<2x1536xf32>
  return
}
