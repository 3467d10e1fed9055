#!/usr/bin/env bash
# Prints the path of the importance file for the example model (the input
# of `q35c --quant-importance`), making it first if it is not cached:
#
#   1. compile SmolLM2 with f16 weights (`q35c --quant f16`, cached),
#   2. `q35-rt calibrate` it on 512 tokens of the Apache License 2.0
#      (/usr/share/common-licenses/Apache-2.0 from Debian's base-files), a
#      different document from the evaluation text (examples/smollm2/eval-text.sh,
#      the GPL v3).
#
# Everything goes to $Q35_CACHE/demo (default ~/.cache/q35/demo); delete
# importance.json there to recompute it. Progress goes to stderr; stdout is
# only the path.
#
#   bash examples/smollm2/calibrate.sh [model.safetensors]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
q35c="${Q35C:-$root/target/debug/q35c}"
q35rt="${Q35RT:-$root/target/debug/q35-rt}"
model="${1:-$(bash "$root/examples/smollm2/fetch.sh")}"
out="${Q35_CACHE:-$HOME/.cache/q35}/demo"
importance="$out/importance.json"
f16="$out/smollm2-f16.q35"
text=/usr/share/common-licenses/Apache-2.0
mkdir -p "$out"

if [ -f "$importance" ]; then
  echo "$importance"
  exit 0
fi
if [ ! -f "$text" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  $sudo apt-get install -qq -y --reinstall base-files >/dev/null 2>&1
fi
[ -f "$text" ] || { echo "calibrate.sh: $text not found" >&2; exit 1; }

# A cached f16 build that this q35-rt cannot load (older artifact version,
# another CPU) is rebuilt.
if [ ! -f "$f16" ] || [ "$model" -nt "$f16" ] || ! "$q35rt" info "$f16" >/dev/null 2>&1; then
  echo "calibrate: compiling $model with f16 weights" >&2
  "$q35c" "$model" --quant f16 --target cpu -o "$f16" >&2
fi
echo "calibrate: $f16 on 512 tokens of $text" >&2
"$q35rt" calibrate "$f16" --text "$text" --tokens 512 -o "$importance" >&2
echo "$importance"
