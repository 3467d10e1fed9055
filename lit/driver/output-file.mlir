// -o writes the result to a file; a failing run leaves no file behind.
// RUN: rm -f %t.out.mlir
// RUN: q35-opt %S/Inputs/ok.mlir -o %t.out.mlir
// RUN: FileCheck %s < %t.out.mlir
// RUN: rm -f %t.bad.mlir
// RUN: not q35-opt %S/Inputs/wrong-expectation.mlir -o %t.bad.mlir
// RUN: not test -e %t.bad.mlir
// CHECK: "q35.rms_norm"
