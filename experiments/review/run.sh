#!/bin/bash
# Segments every case of the shared data's manifest with a model (default: the shipped one), keeps each
# --stats file, and writes cases.csv: the case, its split for the default model (train / held out /
# external), Dice against the reference, the liver volume and the review's flags and figures.
# Usage: experiments/review/run.sh [OUT_DIR] [--model FILE]   (from the repository root, after make)
set -euo pipefail
out=${1:-review-out}; shift || true
data=${LIVSEG_DATA:-../shared/data}
[ -f "$data/manifest.csv" ] || { echo "run.sh: $data/manifest.csv not found (set LIVSEG_DATA)" >&2; exit 2; }
mkdir -p "$out"
pairs="$out/pairs.csv"
echo "case,pred,ref" > "$pairs"
tail -n +2 "$data/manifest.csv" | while IFS=, read -r case ds mod img lab rest; do
    [ -f "$out/$case.json" ] || build/livseg segment "$data/$img" -o "$out/$case.nii.gz" --stats "$out/$case.json" -q "$@"
    echo "$case,$(realpath "$out/$case.nii.gz"),$(realpath "$data/$lab")" >> "$pairs"
done
build/livseg eval --pairs "$pairs" --csv "$out/eval.csv" > /dev/null
/usr/bin/python3 - "$out" <<'PY'
import csv, json, sys
out = sys.argv[1]
# The default model's held-out cases (experiments/teacher-variants/mixed-20-epochs/cases.csv).
held = {'btcv_25', 'btcv_26', 'btcv_27', 'btcv_28', 'btcv_29',
        'chaos_t2_34', 'chaos_t2_36', 'chaos_t2_37', 'chaos_t2_38', 'chaos_t2_39'}
rows = []
for e in csv.DictReader(open(f'{out}/eval.csv')):
    c = e['case']
    st = json.load(open(f'{out}/{c}.json'))
    rv = st['review']
    split = 'held_out' if c in held else 'train' if c.startswith(('btcv', 'chaos')) else 'external'
    r = rv['right_mm']
    rows.append([c, split, f"{float(e['dice']):.3f}", f"{st['liver_volume_ml']:.0f}",
                 ' '.join(rv['flags']) or '-', f"{rv['end_area'][0]:.2f}", f"{rv['end_area'][1]:.2f}",
                 'null' if r is None else f'{r:.0f}',
                 'null' if rv['spine_mm'] is None else f"{rv['spine_mm']:.0f}",
                 f"{rv['kept_fraction']:.3f}", f"{rv['unsure_fraction']:.3f}"])
with open(f'{out}/cases.csv', 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['case', 'split', 'dice', 'volume_ml', 'flags', 'end_area_inferior', 'end_area_superior',
                'right_mm', 'spine_mm', 'kept_fraction', 'unsure_fraction'])
    w.writerows(rows)
flagged = [r for r in rows if r[4] != '-']
print(f'{len(rows)} cases, {len(flagged)} flagged:')
for r in flagged:
    print(f'  {r[0]} ({r[1]}, Dice {r[2]}): {r[4]}')
PY
