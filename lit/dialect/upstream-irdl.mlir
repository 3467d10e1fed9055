// Upstream mlir-opt loads our IRDL file on its own, so the dialect
// definition is checked independently of q35's tools.
// RUN: mlir-opt --irdl-file=%q35_irdl %S/../driver/Inputs/ok.mlir | FileCheck %s
// CHECK: "q35.dequant_matmul"
//
// IRDL alone cannot see a K mismatch (512 against a weight of K = 576):
// upstream accepts it, q35-opt's verifier does not. That gap is why the
// Rust-side verifier exists.
// RUN: mlir-opt --irdl-file=%q35_irdl %S/../driver/Inputs/wrong-expectation.mlir | FileCheck %s --check-prefix=GAP
// GAP: "q35.dequant_matmul"(%{{.*}}, %{{.*}}) : (tensor<2x512xf32>
// RUN: not q35-opt %S/../driver/Inputs/wrong-expectation.mlir 2>&1 | FileCheck %s --check-prefix=OURS
// OURS: error: 'q35.dequant_matmul' op x's last dimension (K) is 512, expected 576
