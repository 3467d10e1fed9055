#!/usr/bin/env bash
# Checks that the CSL q35c emits parses as CSL: the insta snapshots of the
# CSL target hold the emitted files byte for byte (the snapshot tests fail
# if the emitter's output differs), so their bodies are what is checked,
# with csl_check.py --strict (Zig's parser with CSL's rewrites, calibrated
# on Cerebras's csl-examples; README.md beside it). The Zig toolchain comes
# from PyPI (`ziglang`, pinned) into a venv under ~/.cache/q35.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${Q35_CSL_VENV:-$HOME/.cache/q35/cslvenv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import ziglang' 2>/dev/null; then
  echo "csl-check: installing ziglang 0.17.1 into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check ziglang==0.17.1 >/dev/null
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for snap in targets/csl/src/snapshots/*.snap; do
  name=$(basename "$snap" .snap)
  # The body follows the second `---` line of insta's header.
  awk 'c >= 2 { print } /^---$/ { c++ }' "$snap" > "$out/${name#q35_target_csl__tests__}.csl"
done
"$venv/bin/python" scripts/csl-check/csl_check.py --strict "$out"
