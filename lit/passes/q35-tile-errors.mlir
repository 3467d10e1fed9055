// Bad tile options are refused with a message naming the option.
// RUN: not q35-opt %S/../driver/Inputs/ok.mlir --q35-tile=320 2>&1 | FileCheck %s --check-prefix=SHAPE
// SHAPE: pass `q35-tile`: bad option `tile`: tile `320` must be NxK, e.g. 320x320
// RUN: not q35-opt %S/../driver/Inputs/ok.mlir --q35-tile=0x320 2>&1 | FileCheck %s --check-prefix=ZERO
// ZERO: pass `q35-tile`: bad option `tile`: tile `0x320`: `0` is not a positive integer
// RUN: not q35-opt %S/../driver/Inputs/ok.mlir -p 'q35-tile{size=3x3}' 2>&1 | FileCheck %s --check-prefix=KEY
// KEY: pass `q35-tile` takes no option `size`
