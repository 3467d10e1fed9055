// --verify-diagnostics fails when an expected diagnostic is not produced
// and when an unexpected one is, so the negative lit tests can fail.
// RUN: not q35-opt --verify-diagnostics %S/Inputs/wrong-expectation.mlir 2>&1 | FileCheck %s
// CHECK: diagnostics did not match expectations
// CHECK: line 3: expected error on line 4 containing `this text is not in the diagnostic` was not produced
// CHECK: unexpected error on line 4: 'q35.dequant_matmul' op x's last dimension (K) is 512, expected 576
