#!/usr/bin/env bash
# The benchmark harness behind docs/benchmarks.md: compiles SmolLM2 at each
# quantization, runs `q35-rt bench` (prefill/decode tok/s, weight bytes per
# token, memory bandwidth measured in the same run, roofline fraction) and
# the fused GEMV microbenchmark. Figures are medians; the machine is shared,
# so compare ratios from one run.
#
#   bash scripts/bench.sh [THREADS...]    (default: 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --quiet --bin q35c --bin q35-rt
model=$(bash examples/smollm2/fetch.sh)
out="${Q35_CACHE:-$HOME/.cache/q35}/bench"
mkdir -p "$out"
threads=("${@:-1 2}")
threads=(${threads[*]})

variants=("q35 128" "q35 channel" "int4 128" "f16 channel" "f32 channel")
for v in "${variants[@]}"; do
  set -- $v
  artifact="$out/smollm2-$1-g$2.q35"
  start=$(date +%s%N)
  target/debug/q35c "$model" --quant "$1" --group "$2" --target cpu -o "$artifact" 2>/dev/null
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf "== %s g%s (compile %d.%01d s)\n" "$1" "$2" $((ms / 1000)) $((ms % 1000 / 100))
  for t in "${threads[@]}"; do
    target/debug/q35-rt bench "$artifact" --threads "$t" | sed "s/^/  [$t thread] /"
  done
done

echo "== fused GEMV 4096x4096 q35 g128"
cargo bench --quiet -p q35c --bench gemv 2>/dev/null
