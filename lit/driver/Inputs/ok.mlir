func.func @f(%x: tensor<2x576xf32>, %g: tensor<576xf32>) -> tensor<2x1536xf32> {
  %w = "q35.weight"() {name = "layers.0.mlp.up_proj.weight"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  %n = "q35.rms_norm"(%x, %g) {epsilon = 1.0e-5 : f32} : (tensor<2x576xf32>, tensor<576xf32>) -> tensor<2x576xf32>
  %y = "q35.dequant_matmul"(%n, %w) : (tensor<2x576xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<2x1536xf32>
  return %y : tensor<2x1536xf32>
}
