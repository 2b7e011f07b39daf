#!/usr/bin/env bash
# seed-sweep.sh — runs test binaries over many seeds to find tolerances that a rare draw breaks.
#
#   tests/seed-sweep.sh [-n SEEDS] [-s FIRST] BUILD/tests/test_x ...
#
# Every test with fresh random inputs takes its seed from LS_SEED (tests/test.h: test_seed). A CI run
# draws one seed per test; a tolerance that fails one draw in a few hundred fails CI now and then, which
# this finds beforehand. Prints each failing seed with the failing check and a count per binary; exits 1
# if any seed failed. Run from the repository root (the tests find tests/ref/ from there).
set -u
n=100 first=1
while getopts n:s: opt; do
    case $opt in
    n) n=$OPTARG ;;
    s) first=$OPTARG ;;
    *) echo "usage: $0 [-n SEEDS] [-s FIRST] TEST_BINARY..." >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: $0 [-n SEEDS] [-s FIRST] TEST_BINARY..." >&2; exit 2; }
log=$(mktemp) || exit 2
trap 'rm -f "$log"' EXIT
status=0
for bin in "$@"; do
    [ -x "$bin" ] || { echo "$bin: not an executable test binary" >&2; exit 2; }
    failed=0
    for ((seed = first; seed < first + n; seed++)); do
        if ! LS_SEED=$seed "$bin" > "$log" 2>&1; then
            failed=$((failed + 1))
            echo "$bin LS_SEED=$seed: $(grep -m1 -E 'failed|FAIL' "$log")"
        fi
    done
    echo "$bin: $failed of $n seeds failed (LS_SEED=$first..$((first + n - 1)))"
    [ $failed -eq 0 ] || status=1
done
exit $status
