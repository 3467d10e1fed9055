#!/usr/bin/env bash
# Scores q35 builds of the example model on two texts nobody tuned on:
# the GNU GPL v3 (examples/smollm2/eval-text.sh; the quality figures in
# docs/quality.md) and Node.js's README (/usr/share/doc/nodejs/README.md,
# a different domain, when present). Perplexity is llama.cpp's method with
# windows of 512 (`q35-rt perplexity --ctx 512`); each build also answers
# the France prompt. Builds are cached in $Q35_CACHE/quality.
#
#   bash examples/smollm2/quality.sh [VARIANT...]
#
# VARIANTs: default (q35c's defaults: q35 g128, calibration, GPTQ),
# nearest (calibrated importance only), plain (--no-calibration), f16.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
bash scripts/setup.sh
cargo build --quiet --bin q35c --bin q35-rt
model=$(bash examples/smollm2/fetch.sh)
out="${Q35_CACHE:-$HOME/.cache/q35}/quality"
mkdir -p "$out"
texts=("$(bash examples/smollm2/eval-text.sh)")
[ -f /usr/share/doc/nodejs/README.md ] && texts+=(/usr/share/doc/nodejs/README.md)
variants=("$@")
((${#variants[@]})) || variants=(default nearest plain f16)
for v in "${variants[@]}"; do
  case "$v" in
    default) flags=() ;;
    nearest) flags=(--rounding nearest) ;;
    plain) flags=(--no-calibration) ;;
    f16) flags=(--quant f16) ;;
    *) echo "quality: unknown variant $v" >&2; exit 2 ;;
  esac
  artifact="$out/$v.q35"
  start=$SECONDS
  target/debug/q35c "$model" --target cpu "${flags[@]}" -o "$artifact" 2>/dev/null
  echo "== $v (q35c ${flags[*]:-(defaults)}): compiled in $((SECONDS - start)) s, $(target/debug/q35-rt info "$artifact" | grep -m1 '^quantization' | sed 's/^quantization: //' || true)"
  for text in "${texts[@]}"; do
    ppl=$(target/debug/q35-rt perplexity "$artifact" --text "$text" --ctx 512 2>/dev/null | tail -1)
    echo "   $(basename "$text"): $ppl"
  done
  answer=$(target/debug/q35-rt run "$artifact" --chat --prompt "What is the capital of France?" -n 24 2>/dev/null | tr '\n' ' ')
  echo "   France: $answer"
done
