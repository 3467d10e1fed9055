#!/usr/bin/env bash
# The benchmark harness behind docs/benchmarks.md: compiles SmolLM2 at each
# quantization, runs `q35-rt bench` (prefill/decode tok/s, weight bytes per
# token, memory bandwidth measured in the same run, roofline fraction) and
# the fused GEMV microbenchmark, with f32 and (where the CPU has VNNI) int8
# activations. Figures are medians; the machine is shared,
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

# quant, group, activations; the integer path (int8 activations) only where
# the host has AVX-512 VNNI and VBMI.
variants=("q35 128 f32" "q35 channel f32" "int4 128 f32" "f16 channel f32" "f32 channel f32")
if grep -qw avx512_vnni /proc/cpuinfo && grep -qw avx512vbmi /proc/cpuinfo; then
  variants+=("q35 128 int8" "q35 channel int8" "int4 128 int8")
fi
for v in "${variants[@]}"; do
  set -- $v
  artifact="$out/smollm2-$1-g$2-$3.q35"
  start=$(date +%s%N)
  target/debug/q35c "$model" --quant "$1" --group "$2" --activations "$3" --target cpu -o "$artifact" 2>/dev/null
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf "== %s g%s, %s activations (compile %d.%01d s)\n" "$1" "$2" "$3" $((ms / 1000)) $((ms % 1000 / 100))
  for t in "${threads[@]}"; do
    target/debug/q35-rt bench "$artifact" --threads "$t" | sed "s/^/  [$t thread] /"
  done
done

echo "== fused GEMV 4096x4096 q35 g128 (f32 and int8 activations)"
cargo bench --quiet -p q35-target-cpu --bench gemv 2>/dev/null
