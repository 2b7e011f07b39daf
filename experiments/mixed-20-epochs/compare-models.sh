#!/usr/bin/env bash
# experiments/mixed-20-epochs/compare-models.sh — segments the mixed protocol's 10 held-out cases and the 4
# external ones with each of three models (A, B, C: their best.safetensors, as env variables; defaults are
# the development VM's paths), evaluates them and prints paired t-tests (comparison.md). Run from the
# repository root after `make`; D=DATA (default ../shared/data), OUT=DIR (default /tmp/livseg-compare).
set -u
D=${D:-../shared/data}
OUT=${OUT:-/tmp/livseg-compare}
mkdir -p $OUT
declare -A M=([A]=${A:-/work/runs/mixed/cd/model/best.safetensors} [B]=${B:-/work/runs/mixed-long/cd/model/best.safetensors}
              [C]=${C:-/work/runs/mixed-bal/cd/model/best.safetensors})
for k in A B C; do
  mkdir -p $OUT/$k
  echo "case,pred,ref" > $OUT/$k/held.csv
  echo "case,pred,ref" > $OUT/$k/ext.csv
  awk -F, 'NR>1 {print $1","$4","$5}' $D/manifest.csv | while IFS=, read -r c img lab; do
    case $c in btcv_2[5-9]|chaos_t2_3[4-9]) f=held ;; totalseg*|dcmqi*) f=ext ;; *) continue ;; esac
    [ -f $OUT/$k/$c.nii.gz ] || build/livseg segment $D/$img -o $OUT/$k/$c.nii.gz --model ${M[$k]} -q || echo "FAIL $k $c"
    echo "$c,$OUT/$k/$c.nii.gz,$(realpath $D/$lab)" >> $OUT/$k/$f.csv
  done
  for f in held ext; do build/livseg eval --pairs $OUT/$k/$f.csv --csv $OUT/$k/$f-metrics.csv > $OUT/$k/$f.txt; done
done
for f in held ext; do for p in "A B" "A C" "B C"; do set -- $p
  for m in dice assd_mm mssd_mm; do echo "$f $1 vs $2 $m: $(build/livseg eval --ttest $OUT/$1/$f-metrics.csv $OUT/$2/$f-metrics.csv --metric $m 2>&1 | tail -1)"; done
done; done
