#!/usr/bin/env bash
# Runs every test binary of the given build directories (default: build) and the Python-side tests,
# and closes with one line "N passed, N failed, N skipped". Exit status 1 when anything failed or
# crashed. Run from the repository root.
set -u
# Passive OpenMP waiting, as the livseg command chooses for itself (src/ops.h says why).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
cd "$(dirname "$0")/.."
dirs=("$@"); [ ${#dirs[@]} -gt 0 ] || dirs=(build)
# OpenBLAS's kernels as the livseg command picks them for itself (src/ops.h: on a CPU newer than OpenBLAS
# it otherwise runs its slowest ones, 6x slower).
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  core=$("${dirs[0]}/livseg" --version 2>/dev/null | sed -n 's/^OpenBLAS kernels: \([A-Za-z0-9]*\).*/\1/p')
  [ -z "$core" ] || export OPENBLAS_CORETYPE=$core
fi
pass=0; fail=0; skip=0; crashed=()
for d in "${dirs[@]}"; do
  for t in "$d"/tests/test_*; do
    [ -x "$t" ] || continue
    echo "== $t"
    out=$("$t" 2>&1); rc=$?
    echo "$out" | grep -v '^RESULT '
    res=$(echo "$out" | grep '^RESULT ' | tail -n 1)
    if [ -z "$res" ]; then
      echo "   $t exited with status $rc before reporting (crash?)"
      crashed+=("$t"); fail=$((fail + 1)); continue
    fi
    set -- $res
    pass=$((pass + $2)); fail=$((fail + $3)); skip=$((skip + $4))
    if [ "$rc" -ne 0 ] && [ "$3" -eq 0 ]; then
      echo "   $t exited with status $rc"; crashed+=("$t"); fail=$((fail + 1))
    fi
  done
done
[ ${#crashed[@]} -eq 0 ] || echo "crashed or failed to exit cleanly: ${crashed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
