#!/usr/bin/env bash
# experiments/teacher-variants/compare.sh — pairs runs with and without --teacher-variants case by case.
#
#   compare.sh models A.safetensors B.safetensors   segments the mixed protocol's 10 held-out cases and the 4
#                                                   external ones with both models, evaluates them and prints
#                                                   mean Dice/ASSD/MSSD and paired t-tests (A vs B)
#   compare.sh cases A/cases.csv B/cases.csv        the same tests on two `livseg experiment` reports' cases,
#                                                   per variant (cd, no_cd)
#
# Run from the repository root after `make`; D=DATA (default ../shared/data), OUT=DIR (default
# /tmp/livseg-tv-compare) holds the masks and metric files.
set -eu
D=${D:-../shared/data}
OUT=${OUT:-/tmp/livseg-tv-compare}
L=build/livseg
mkdir -p "$OUT"

ttests() { # ttests LABEL A.csv B.csv: the three metrics' paired tests
  for m in dice assd_mm mssd_mm; do echo "$1 $m: $($L eval --ttest "$2" "$3" --metric $m 2>&1 | tail -1)"; done
}

segment_all() { # segment_all KEY MODEL: masks and metrics of the held-out and external cases
  local k=$1 model=$2
  mkdir -p "$OUT/$k"
  echo "case,pred,ref" > "$OUT/$k/held.csv"
  echo "case,pred,ref" > "$OUT/$k/ext.csv"
  awk -F, 'NR>1 {print $1","$4","$5}' "$D/manifest.csv" | while IFS=, read -r c img lab; do
    case $c in btcv_2[5-9]|chaos_t2_3[4-9]) f=held ;; totalseg*|dcmqi*) f=ext ;; *) continue ;; esac
    [ -f "$OUT/$k/$c.nii.gz" ] || $L segment "$D/$img" -o "$OUT/$k/$c.nii.gz" --model "$model" -q
    echo "$c,$OUT/$k/$c.nii.gz,$(realpath "$D/$lab")" >> "$OUT/$k/$f.csv"
  done
  for f in held ext; do $L eval --pairs "$OUT/$k/$f.csv" --csv "$OUT/$k/$f-metrics.csv" > "$OUT/$k/$f.txt"; done
}

split_cases() { # split_cases CASES.csv KEY: one metrics file per variant, as `livseg eval --csv` writes
  awk -F, -v out="$OUT/$2" 'NR>1 {f = out "-" $3 ".csv"; if (!(f in seen)) {print "case,dice,assd_mm,mssd_mm" > f; seen[f]}
                                  print $1 "," $4 "," $5 "," $6 > f}' "$1"
}

case ${1:-} in
models)
  segment_all A "$2"
  segment_all B "$3"
  for f in held ext; do
    for k in A B; do echo "== $k $f"; tail -n +2 "$OUT/$k/$f.txt"; done
    ttests "$f A vs B" "$OUT/A/$f-metrics.csv" "$OUT/B/$f-metrics.csv"
  done ;;
cases)
  split_cases "$2" A
  split_cases "$3" B
  for v in cd no_cd; do
    [ -f "$OUT/A-$v.csv" ] && [ -f "$OUT/B-$v.csv" ] && ttests "$v A vs B" "$OUT/A-$v.csv" "$OUT/B-$v.csv"
  done ;;
*) sed -n 2,12p "$0"; exit 2 ;;
esac
