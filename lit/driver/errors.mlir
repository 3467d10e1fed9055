// Bad input gets one clear message and a non-zero exit, never a panic.
// RUN: not q35-opt %S/Inputs/does-not-exist.mlir 2>&1 | FileCheck %s --check-prefix=MISSING
// MISSING: failed to read {{.*}}does-not-exist.mlir
// RUN: not q35-opt %S/Inputs/ok.mlir -p no-such-pass 2>&1 | FileCheck %s --check-prefix=UNKNOWN
// UNKNOWN: invalid upstream pass `no-such-pass`
// UNKNOWN: 'no-such-pass' does not refer to a registered pass or pass pipeline
// RUN: not q35-opt %S/Inputs/ok.mlir -p q35-frobnicate 2>&1 | FileCheck %s --check-prefix=Q35UNKNOWN
// Q35UNKNOWN: unknown q35 pass `q35-frobnicate` (known: q35-verify
// RUN: not q35-opt %S/Inputs/ok.mlir --pass-pipeline='builtin.module(cse' 2>&1 | FileCheck %s --check-prefix=SYNTAX
// SYNTAX: invalid pass pipeline `builtin.module(cse`: missing `)` closing builtin.module(
// RUN: not q35-opt %S/Inputs/ok.mlir -p 'q35-verify{strict=1}' 2>&1 | FileCheck %s --check-prefix=OPTION
// OPTION: pass `q35-verify` takes no option `strict`
// RUN: printf 'func.func @f( {' | not q35-opt 2>&1 | FileCheck %s --check-prefix=SYNTAXERR
// SYNTAXERR: <stdin>: invalid MLIR:
// SYNTAXERR-NEXT: <stdin>:1:14: error: expected non-function type
// RUN: printf 'module {}\0' | not q35-opt 2>&1 | FileCheck %s --check-prefix=NUL
// NUL: <stdin>: input contains a NUL byte at offset 9
