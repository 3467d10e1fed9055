#!/usr/bin/env bash
# Installs llama-cpp-python (it builds llama.cpp from source, CPU only:
# about 9 minutes on 2 cores, once per machine type) and gguf into a venv,
# $Q35_CACHE/llamacpp-venv (default ~/.cache/q35), quiet when it is there,
# and prints the venv's path. Used by llamacpp-check.sh and quality.sh.
set -euo pipefail
cache="${Q35_CACHE:-$HOME/.cache/q35}"
venv="$cache/llamacpp-venv"
llama_cpp_version=0.3.36
gguf_version=0.19.0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo

# llama.cpp is built for this CPU's instruction sets, named one by one
# from /proc/cpuinfo (GGML_NATIVE would also compile AMX tile code, which
# dies with SIGILL where the kernel or hypervisor does not grant AMX, as on
# these VMs); a venv built on a machine with other instruction sets dies
# the same way, so the flags are stamped into it and a change rebuilds it.
cpu=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' || true)
isa="-DGGML_NATIVE=OFF"
for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C avx_vnni:AVX_VNNI avx512f:AVX512 avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
  if grep -qx "${pair%%:*}" <<< "$cpu"; then isa="$isa -DGGML_${pair#*:}=ON"; fi
done
cpu_flags=$(echo "$isa" | sha256sum | cut -c1-16)

installed() {
  [ "$(cat "$venv/q35-cpu-flags" 2>/dev/null)" = "$cpu_flags" ] || return 1
  "$venv/bin/python" - "$llama_cpp_version" "$gguf_version" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(version("llama-cpp-python") != sys.argv[1] or version("gguf") != sys.argv[2])
PY
}

if ! installed; then
  echo "llamacpp-venv: installing llama-cpp-python $llama_cpp_version into $venv" \
    "(builds llama.cpp from source; ~9 min on 2 cores)" >&2
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null || ! command -v c++ >/dev/null; then
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -qq -y python3-venv python3-pip g++ >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  # CPU only, no BLAS or OpenMP (ggml's own threads), and only the library
  # the Python package loads: no tests, examples, tools or server. No
  # cache: pip's wheel cache would hand back a build for another CPU.
  CMAKE_ARGS="$isa -DGGML_BLAS=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
    "llama-cpp-python==$llama_cpp_version" "gguf==$gguf_version" >&2
  echo "$cpu_flags" > "$venv/q35-cpu-flags"
  installed || { echo "llamacpp-venv: the install in $venv failed" >&2; exit 1; }
fi
echo "$venv"
