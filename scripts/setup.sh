#!/usr/bin/env bash
# Installs everything q35 needs to build and test, idempotently, and says
# nothing when it is all there already. Needs root for apt-get (as on the
# project's machines and CI); prints what it installs.
set -euo pipefail

# LLVM/MLIR 22 (Debian bookworm-security carries 22.1), the libraries that
# llvm-sys/mlir-sys link statically (Polly, zstd, z3, xml2, zlib), Coq with
# Flocq for proofs/, and z3 for the per-artifact obligations.
APT_PACKAGES=(
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools clang-22 libpolly-22-dev
  libzstd-dev libz3-dev libxml2-dev zlib1g-dev
  coq libcoq-flocq z3
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The toolchain the Cargo [env] in .cargo/config.toml points at.
for tool in /usr/lib/llvm-22/bin/FileCheck /usr/lib/llvm-22/bin/lit /usr/lib/llvm-22/bin/mlir-opt; do
  [ -x "$tool" ] || { echo "setup: $tool is missing after install" >&2; exit 1; }
done
command -v cargo >/dev/null || { echo "setup: cargo (Rust toolchain) is required" >&2; exit 1; }

# ptxas and libdevice for the NVPTX target (no GPU needed): NVIDIA's nvcc
# wheel from PyPI, unpacked into ~/.cache/q35/cuda. q35c links libdevice
# into the PTX; the tests assemble every PTX module with ptxas.
CUDA_DIR="${Q35_CUDA_DIR:-$HOME/.cache/q35/cuda}"
if [ ! -x "$CUDA_DIR/nvidia/cuda_nvcc/bin/ptxas" ] || [ ! -f "$CUDA_DIR/nvidia/cuda_nvcc/nvvm/libdevice/libdevice.10.bc" ]; then
  echo "setup: installing ptxas and libdevice (PyPI nvidia-cuda-nvcc-cu12) into $CUDA_DIR" >&2
  PYTHON="$(command -v python3 || true)"
  [ -n "$PYTHON" ] || { echo "setup: python3 with pip is required to install ptxas" >&2; exit 1; }
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --no-warn-script-location \
    --target "$CUDA_DIR" 'nvidia-cuda-nvcc-cu12>=12.4,<13' >/dev/null 2>&1 \
    || { echo "setup: pip could not install nvidia-cuda-nvcc-cu12 into $CUDA_DIR" >&2; exit 1; }
  [ -x "$CUDA_DIR/nvidia/cuda_nvcc/bin/ptxas" ] || { echo "setup: ptxas is missing after install" >&2; exit 1; }
fi
