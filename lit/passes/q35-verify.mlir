// q35-verify leaves valid IR unchanged and fails, naming op and location,
// on IR that IRDL accepts but whose shapes disagree.
// RUN: q35-opt %S/../driver/Inputs/ok.mlir --q35-verify | FileCheck %s
// RUN: q35-opt %S/../driver/Inputs/ok.mlir --pass-pipeline='builtin.module(q35-verify)' | FileCheck %s
// CHECK-LABEL: func.func @f
// CHECK-NEXT: %[[W:.*]] = "q35.weight"() {name = "layers.0.mlp.up_proj.weight"}
// CHECK-NEXT: %[[N:.*]] = "q35.rms_norm"
// CHECK-NEXT: "q35.dequant_matmul"(%[[N]], %[[W]])
//
// With the implicit verification off, the pass itself reports the problem.
// RUN: q35-opt --verify-each=false %S/../driver/Inputs/wrong-expectation.mlir | FileCheck %s --check-prefix=UNCHECKED
// UNCHECKED: tensor<2x512xf32>
// RUN: not q35-opt --verify-each=false --q35-verify %S/../driver/Inputs/wrong-expectation.mlir 2>&1 | FileCheck %s --check-prefix=FAIL
// FAIL: pass `q35-verify` failed:
// FAIL-NEXT: {{.*}}wrong-expectation.mlir:4:8: error: 'q35.dequant_matmul' op x's last dimension (K) is 512, expected 576
