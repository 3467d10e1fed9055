// Upstream and q35 passes mix in one pipeline, in command-line order;
// --mlir-print-ir-after-all and --timing report every step.
// RUN: q35-opt %s --pass-pipeline='builtin.module(q35-verify,canonicalize)' | FileCheck %s
// RUN: q35-opt %s -p cse --q35-verify -p 'func.func(canonicalize)' --mlir-print-ir-after-all --timing 2>&1 >/dev/null | FileCheck %s --check-prefix=TRACE

// canonicalize folds the arith constants; the q35 ops stay.
// CHECK-LABEL: func.func @f
// CHECK-NOT: arith.addi
// CHECK: %[[C:.*]] = arith.constant 5 : index
// CHECK: "q35.dequant_matmul"
// CHECK: return %[[C]],

// TRACE: // -----// IR Dump After cse //----- //
// TRACE: // -----// IR Dump After q35-verify //----- //
// TRACE: // -----// IR Dump After func.func(canonicalize) //----- //
// TRACE: q35 execution timing report
// TRACE: {{[0-9.]+}} {{ *[0-9.]+}}  cse
// TRACE-NEXT: {{[0-9.]+}} {{ *[0-9.]+}}  q35-verify
// TRACE-NEXT: {{[0-9.]+}} {{ *[0-9.]+}}  func.func(canonicalize)
// TRACE-NEXT: Total
func.func @f(%x: tensor<2x576xf32>) -> (index, tensor<2x1536xf32>) {
  %a = arith.constant 2 : index
  %b = arith.constant 3 : index
  %c = arith.addi %a, %b : index
  %w = "q35.weight"() {name = "up"} : () -> !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">
  %y = "q35.dequant_matmul"(%x, %w) : (tensor<2x576xf32>, !q35.packed<1536 : i64, 576 : i64, 128 : i64, "q35", "planar">) -> tensor<2x1536xf32>
  return %c, %y : index, tensor<2x1536xf32>
}
