#!/usr/bin/env bash
# Runs every libFuzzer harness in DIR for SECONDS each, starting from a scratch copy of its seed corpus
# fuzz/corpus/NAME/ (so the repository is not modified), with ASan + UBSan as built by `make fuzz`.
# Prints one line per harness; exits 1 if any harness found a crash (its reproducer path is printed).
#   usage: fuzz/run.sh build-fuzz/fuzz 60
set -u
cd "$(dirname "$0")/.."
dir=${1:?usage: fuzz/run.sh DIR SECONDS}
secs=${2:-60}
work=$(mktemp -d "${TMPDIR:-/tmp}/livseg-fuzz-XXXXXX")
status=0
for h in "$dir"/fuzz_*; do
  [ -x "$h" ] || continue
  name=$(basename "$h"); seeds=fuzz/corpus/${name#fuzz_}
  corpus=$work/$name; mkdir -p "$corpus"
  [ -d "$seeds" ] && cp "$seeds"/* "$corpus"/ 2>/dev/null
  log=$work/$name.log
  "$h" -max_total_time="$secs" -rss_limit_mb=4096 -timeout=30 -artifact_prefix="$work/$name-" "$corpus" >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -n 1)
  if [ $rc -ne 0 ]; then
    status=1
    echo "fuzz: $name FOUND A CRASH (exit $rc); reproducer: $(ls "$work/$name-"* 2>/dev/null | head -n 1)"
    grep -E 'ERROR|SUMMARY' "$log" | head -n 5
  else
    echo "fuzz: $name ${runs:-no runs reported} in ${secs}s, no crash"
  fi
done
[ $status -eq 0 ] && rm -rf "$work"
exit $status
