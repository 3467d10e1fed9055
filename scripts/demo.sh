#!/usr/bin/env bash
# The main job on the embedded default example: set up, build, and run it.
# For now: verify and transform one SmolLM2-shaped decoder layer
# (examples/decoder-layer.mlir) with q35-opt, printing the IR and the time
# per pass. The full-model demo (compile SmolLM2, generate text) replaces it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --quiet --bin q35-opt
exec target/debug/q35-opt examples/decoder-layer.mlir \
  --pass-pipeline='builtin.module(q35-verify,canonicalize,cse)' --timing "$@"
