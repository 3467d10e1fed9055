#!/usr/bin/env bash
# Checks that the CSL q35c emits parses as CSL, with csl_check.py --strict
# (Zig's parser with CSL's rewrites, calibrated on Cerebras's csl-examples;
# README.md beside it): the CSL target's snapshots (a single matmul's files,
# byte for byte what the emitter writes) and a whole tiny model's program
# (`q35c --target csl --emit csl -o DIR/`). The Zig toolchain comes from PyPI
# (`ziglang`, pinned) into a venv under ~/.cache/q35. Needs target/debug/q35c.
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
mkdir -p "$out/snapshots" "$out/tiny"
for snap in targets/csl/src/snapshots/*.snap; do
  name=$(basename "$snap" .snap)
  # The body follows the second `---` line of insta's header.
  awk 'c >= 2 { print } /^---$/ { c++ }' "$snap" > "$out/snapshots/${name#q35_target_csl__tests__}.csl"
done
target/debug/q35c tiny-model -o "$out/model" > /dev/null
# -o DIR/: the files themselves, as a user gets them.
target/debug/q35c "$out/model" --target csl --emit csl -o "$out/tiny/" 2> /dev/null
ls "$out/tiny" | grep -q pe_program_attention.csl
"$venv/bin/python" scripts/csl-check/csl_check.py --strict "$out/snapshots" "$out/tiny"
