// q35-opt reads stdin by default and writes stdout.
// RUN: q35-opt < %S/Inputs/ok.mlir | FileCheck %s
// RUN: q35-opt - -o - < %S/Inputs/ok.mlir | FileCheck %s
// CHECK-LABEL: func.func @f
// CHECK: "q35.dequant_matmul"
