#!/bin/bash
# Segments crops.py's scans (OUT_DIR) with build/livseg and compares the cut scans with the hand-padded
# ones, case by case (paired t-test of Dice). Run from the repository root after make:
#   experiments/letterbox/crops.py /tmp/lb75 0.75 && experiments/letterbox/run.sh /tmp/lb75
set -euo pipefail
dir=$1; shift
L=$PWD/build/livseg
for v in crop pad; do
  echo "case,pred,ref" > "$dir/$v.csv"
  for f in "$dir"/*_${v}_img.nii.gz; do
    c=$(basename "${f%_${v}_img.nii.gz}")
    [ -f "$dir/${c}_${v}_pred.nii.gz" ] || "$L" segment "$f" -o "$dir/${c}_${v}_pred.nii.gz" -q "$@" 2>/dev/null
    echo "$c,${c}_${v}_pred.nii.gz,${c}_${v}_liver.nii.gz" >> "$dir/$v.csv"
  done
  "$L" eval --pairs "$dir/$v.csv" --csv "$dir/$v-metrics.csv" > /dev/null
done
"$L" eval --ttest "$dir/crop-metrics.csv" "$dir/pad-metrics.csv"
