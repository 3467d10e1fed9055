// One Llama-style decoder layer of SmolLM2-135M's shape (hidden 576, 9
// heads / 3 KV heads of 64, FFN 1536) in the q35 dialect, with 3.5-bit
// weights referenced by name. `scripts/demo.sh` runs it through q35-opt
// until the full-model demo lands.
func.func @decoder_layer(%x: tensor<?x576xf32>, %pos: tensor<?xi32>, %start: index,
                         %k_cache: tensor<2048x192xf32>, %v_cache: tensor<2048x192xf32>)
    -> (tensor<?x576xf32>, tensor<2048x192xf32>, tensor<2048x192xf32>) {
  %ln1 = "q35.weight"() {name = "model.layers.0.input_layernorm.weight"} : () -> tensor<576xf32>
  %ln2 = "q35.weight"() {name = "model.layers.0.post_attention_layernorm.weight"} : () -> tensor<576xf32>
  %wq = "q35.weight"() {name = "model.layers.0.self_attn.q_proj.weight"} : () -> !q35.packed<576 : i64, 576 : i64, 128 : i64, "q35", "planar">
  %wk = "q35.weight"() {name = "model.layers.0.self_attn.k_proj.weight"} : () -> !q35.packed<192 : i64, 576 : i64, 128 : i64, "q35", "planar">
  %wv = "q35.weight"() {name = "model.layers.0.self_attn.v_proj.weight"} : () -> !q35.packed<192 : i64, 576 : i64, 128 : i64, "q35", "planar">
  %wo = "q35.weight"() {name = "model.layers.0.self_attn.o_proj.weight"} : () -> !q35.packed<576 : i64, 576 : i64, 128 : i64, "q35", "planar">
  %wg = "q35.weight"() {name = "model.layers.0.mlp.gate_proj.weight"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  %wu = "q35.weight"() {name = "model.layers.0.mlp.up_proj.weight"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  %wd = "q35.weight"() {name = "model.layers.0.mlp.down_proj.weight"} : () -> !q35.packed<576 : i64, 1536 : i64, 128 : i64, "q35", "planar">

  %n1 = "q35.rms_norm"(%x, %ln1) {epsilon = 1.0e-5 : f32} : (tensor<?x576xf32>, tensor<576xf32>) -> tensor<?x576xf32>
  %q = "q35.dequant_matmul"(%n1, %wq) : (tensor<?x576xf32>, !q35.packed<576 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<?x576xf32>
  %k = "q35.dequant_matmul"(%n1, %wk) : (tensor<?x576xf32>, !q35.packed<192 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<?x192xf32>
  %v = "q35.dequant_matmul"(%n1, %wv) : (tensor<?x576xf32>, !q35.packed<192 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<?x192xf32>
  %qr = "q35.rope"(%q, %pos) {head_dim = 64 : i64, theta = 1.0e5 : f32} : (tensor<?x576xf32>, tensor<?xi32>) -> tensor<?x576xf32>
  %kr = "q35.rope"(%k, %pos) {head_dim = 64 : i64, theta = 1.0e5 : f32} : (tensor<?x192xf32>, tensor<?xi32>) -> tensor<?x192xf32>
  %attn, %kc, %vc = "q35.attention"(%qr, %kr, %v, %k_cache, %v_cache, %start) {num_heads = 9 : i64, num_kv_heads = 3 : i64, head_dim = 64 : i64} : (tensor<?x576xf32>, tensor<?x192xf32>, tensor<?x192xf32>, tensor<2048x192xf32>, tensor<2048x192xf32>, index) -> (tensor<?x576xf32>, tensor<2048x192xf32>, tensor<2048x192xf32>)
  %o = "q35.dequant_matmul"(%attn, %wo) : (tensor<?x576xf32>, !q35.packed<576 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<?x576xf32>
  %h = "q35.add"(%x, %o) : (tensor<?x576xf32>, tensor<?x576xf32>) -> tensor<?x576xf32>

  %n2 = "q35.rms_norm"(%h, %ln2) {epsilon = 1.0e-5 : f32} : (tensor<?x576xf32>, tensor<576xf32>) -> tensor<?x576xf32>
  %gate = "q35.dequant_matmul"(%n2, %wg) : (tensor<?x576xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<?x1536xf32>
  %up = "q35.dequant_matmul"(%n2, %wu) : (tensor<?x576xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<?x1536xf32>
  %act = "q35.swiglu"(%gate, %up) : (tensor<?x1536xf32>, tensor<?x1536xf32>) -> tensor<?x1536xf32>
  %down = "q35.dequant_matmul"(%act, %wd) : (tensor<?x1536xf32>, !q35.packed<576 : i64, 1536 : i64, 128 : i64, "q35", "planar">) -> tensor<?x576xf32>
  %out = "q35.add"(%h, %down) : (tensor<?x576xf32>, tensor<?x576xf32>) -> tensor<?x576xf32>
  return %out, %kc, %vc : tensor<?x576xf32>, tensor<2048x192xf32>, tensor<2048x192xf32>
}
