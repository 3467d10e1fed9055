#!/usr/bin/env bash
# Clean build of the q35 proofs, then an audit:
#   1. no Admitted/admit and no added Axiom/Parameter/Conjecture/Hypothesis/Variable
#      (nor unsafe flags) in the sources;
#   2. every `Theorem` of theories/ is listed in Assumptions.v;
#   3. `Print Assumptions` (run by compiling Assumptions.v) shows no axiom other
#      than the ones Coq's Reals library (and Flocq) rely on, listed in ALLOWED.
# Exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")"

ALLOWED="
ClassicalDedekindReals.sig_forall_dec
ClassicalDedekindReals.sig_not_dec
FunctionalExtensionality.functional_extensionality_dep
Classical_Prop.classic
"

fail=0
err() { echo "check.sh: FAIL: $*" >&2; fail=1; }

echo "== clean build"
start=$(date +%s)
make clean >/dev/null 2>&1
if ! make; then
  echo "check.sh: FAIL: build failed" >&2
  exit 1
fi
echo "build time: $(( $(date +%s) - start ))s"

echo "== source scan"
sources=(theories/*.v Assumptions.v)
forbidden='\b(Admitted|admit|Axioms?|Parameters?|Conjectures?|Hypothes[ie]s|Variables?)\b|Unset +(Guard|Positivity|Universe) +Checking|bypass_check'
if grep -nE "$forbidden" "${sources[@]}"; then
  err "forbidden keyword in a proof source (see above)"
fi

echo "== coverage of Assumptions.v"
for f in theories/*.v; do
  mod=$(basename "$f" .v)
  for thm in $(sed -nE 's/^Theorem[[:space:]]+([A-Za-z0-9_'"'"']+).*/\1/p' "$f"); do
    if ! grep -qE "^Print Assumptions Q35\.$mod\.$thm\.$" Assumptions.v; then
      err "theorem Q35.$mod.$thm is not audited in Assumptions.v"
    fi
  done
done

echo "== Print Assumptions"
if ! coqc -R theories Q35 Assumptions.v > assumptions.out 2> assumptions.err; then
  cat assumptions.err >&2
  err "Assumptions.v does not compile"
elif [ -s assumptions.err ]; then
  cat assumptions.err >&2
  err "Assumptions.v printed warnings or errors"
fi
rm -f assumptions.err

expected=$(grep -cE '^Print Assumptions ' Assumptions.v)
seen=$(grep -cE '^== ' assumptions.out || true)
if [ "$expected" != "$seen" ]; then
  err "expected $expected Print Assumptions reports, got $seen"
fi

# Parse the reports: "== name" starts a theorem, then either
# "Closed under the global context" or "Axioms:" and one unindented line per axiom
# (its type continues on indented lines). Anything else unindented is unexpected.
report=$(awk -v allowed="$ALLOWED" '
  BEGIN { n = split(allowed, a, /[ \n]+/); for (i = 1; i <= n; i++) if (a[i] != "") ok[a[i]] = 1;
          bad = 0 }
  /^== /      { thm = $2; axioms[thm] = ""; order[++nt] = thm; mode = ""; next }
  /^Closed under the global context$/ { axioms[thm] = "(none)"; next }
  /^Axioms:$/ { mode = "ax"; next }
  /^[ \t]/    { next }
  /^$/        { next }
  {
    name = $1
    if (mode == "ax" && (name in ok)) { axioms[thm] = axioms[thm] " " name; used[name] = 1; next }
    printf "UNEXPECTED in %s: %s\n", thm, $0; bad = 1
  }
  END {
    for (i = 1; i <= nt; i++) printf "  %-48s %s\n", order[i], axioms[order[i]]
    printf "axioms used overall:"; for (u in used) printf " %s", u; printf "\n"
    exit bad
  }' assumptions.out)
status=$?
echo "$report"
if [ $status -ne 0 ]; then
  err "Print Assumptions shows an axiom that is not allowed (see UNEXPECTED above)"
fi

if [ $fail -ne 0 ]; then
  echo "check.sh: proofs NOT ok" >&2
  exit 1
fi
echo "check.sh: all proofs checked, only allowed axioms"
