#!/usr/bin/env bash
# Coverage-guided fuzzing of the readers of untrusted input, with libFuzzer
# on stable Rust (fuzz/; docs/reliability.md):
#
#   bash scripts/fuzz.sh [TARGET...] [--seconds N]
#
# TARGETs: safetensors, gguf, tokenizer, artifact (default: all four), each
# run for N seconds (default 60), one after the other. Sets up what it needs
# (scripts/setup.sh), builds fuzz/ instrumented, writes seeds from the tiny
# test models (fuzz/make_seeds.py) and keeps each target's corpus outside
# git, in $Q35_FUZZ_CORPUS/<target> (default ~/.cache/q35/fuzz/<target>).
# A panic, abort, OOM (over 2 GB RSS) or timeout (10 s on one input) is a
# failure: the input is saved under target/fuzz/artifacts/<target>/ and
# its path printed. Exits non-zero if any target failed; the last line is
# `fuzz: N passed, M failed`.
#
# Environment: Q35C (a q35c binary for the seeds; default: `cargo build
# -p q35c --bin q35c`, which scripts/test.sh has already done),
# Q35_FUZZ_CORPUS, Q35_FUZZ_TARGET_DIR (the instrumented build; default
# target/fuzz, apart from the main build), FUZZ_ARGS (more libFuzzer
# flags, e.g. "-use_value_profile=1").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

ALL=(safetensors gguf tokenizer artifact)
seconds=60
targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
    --seconds=*) seconds="${1#--seconds=}"; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz: unknown option $1" >&2; exit 2 ;;
    *)
      if [[ " ${ALL[*]} " != *" $1 "* ]]; then
        echo "fuzz: unknown target $1 (targets: ${ALL[*]})" >&2; exit 2
      fi
      targets+=("$1"); shift ;;
  esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] && ((seconds > 0)) || { echo "fuzz: --seconds needs a positive number" >&2; exit 2; }
((${#targets[@]})) || targets=("${ALL[@]}")

# LLVM/MLIR for building q35c, and the rest of the toolchain; libFuzzer's
# C++ needs a C++ compiler, the seed writer python3.
bash scripts/setup.sh
command -v c++ >/dev/null || command -v g++ >/dev/null || command -v clang++ >/dev/null \
  || { echo "fuzz: a C++ compiler (g++ or clang++) is needed for libFuzzer" >&2; exit 1; }
command -v python3 >/dev/null || { echo "fuzz: python3 is needed to write the seeds" >&2; exit 1; }

fuzz_target_dir="${Q35_FUZZ_TARGET_DIR:-$root/target/fuzz}"
triple=$(rustc -vV | sed -n 's/^host: //p')
# What cargo-fuzz passes (SanitizerCoverage: inline 8-bit counters, PC
# table, compare tracing, stack depth; no branch folding; --cfg fuzzing),
# without its nightly-only -Zsanitizer=address. Debug assertions and
# overflow checks are on in fuzz/Cargo.toml's release profile. `--target`
# keeps these flags off build scripts and proc macros.
sancov="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
sancov+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
sancov+=" -Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth"
sancov+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0 --cfg fuzzing"
echo "== fuzz: building fuzz/ ($triple, into $fuzz_target_dir)"
started=$(date +%s)
if ! RUSTFLAGS="$sancov ${RUSTFLAGS:-}" CARGO_TARGET_DIR="$fuzz_target_dir" cargo build --quiet --manifest-path fuzz/Cargo.toml \
  --release --target "$triple" --bins; then
  echo "fuzz: building fuzz/ failed"
  echo "fuzz: 0 passed, ${#targets[@]} failed"
  exit 1
fi
echo "fuzz: built in $(($(date +%s) - started)) s"
bindir="$fuzz_target_dir/$triple/release"

# Seeds, written fresh from the tiny test models by this tree's q35c.
q35c="${Q35C:-}"
if [ -z "$q35c" ]; then
  cargo build --quiet -p q35c --bin q35c
  q35c="${CARGO_TARGET_DIR:-$root/target}/debug/q35c"
fi
scratch=$(mktemp -d -p /dev/shm q35-fuzz.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 fuzz/make_seeds.py --q35c "$q35c" --out "$scratch/seeds"
export Q35_FUZZ_TMP="$scratch/files"
mkdir -p "$Q35_FUZZ_TMP"

corpus_root="${Q35_FUZZ_CORPUS:-$HOME/.cache/q35/fuzz}"
logs="$fuzz_target_dir/logs"
mkdir -p "$logs"
passed=0
failed=0
for t in "${targets[@]}"; do
  corpus="$corpus_root/$t"
  crashes="$fuzz_target_dir/artifacts/$t"
  log="$logs/$t.log"
  mkdir -p "$corpus" "$crashes"
  echo "== fuzz: $t for $seconds s (corpus $corpus)"
  rc=0
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  "$bindir/$t" "$corpus" "$scratch/seeds/$t" -dict=fuzz/fuzz.dict \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$crashes/" -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ -z "$execs" ]; then
    execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -1)
  fi
  inputs=$(find "$corpus" -type f | wc -l)
  if ((rc == 0)) && ! grep -q '^==[0-9]*== ERROR: libFuzzer' "$log"; then
    echo "fuzz: $t: ${execs:-?} executions in $seconds s, no crash (corpus: $inputs inputs)"
    passed=$((passed + 1))
  else
    kind=$(sed -n 's/^==[0-9]*== ERROR: libFuzzer: \(.*\)/\1/p' "$log" | head -1)
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    echo "fuzz: $t: FAILED (${kind:-exit status $rc}) after ${execs:-?} executions; log: $log"
    # The panic message and where (printed by the target before it aborts).
    awk '/panicked at/ { p = 1 } p { if ($0 ~ /^(stack backtrace|note:)/ || n++ > 3) exit; print "fuzz:   " $0 }' "$log"
    grep -m 2 -E "memory allocation of|has overflowed its stack" "$log" | sed 's/^/fuzz:   /' || true
    if [ -n "$input" ]; then
      echo "fuzz: $t: crashing input: $input"
      echo "fuzz: $t: reproduce: $bindir/$t $input"
    fi
    failed=$((failed + 1))
  fi
done
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
