#!/usr/bin/env bash
# bench/gpu-pretrain.sh — the GPU pretraining run of docs/pretraining.md ("On a GPU"), sized for a lent GPU
# session: `livseg pretrain --preset gpu` (ViT-S/16 at 224, batch 64, 2 global + 8 local crops, 65536
# prototypes, DINO's temperatures and momentum) with its schedules cut to EPOCHS (default 24: warm-up 3,
# teacher temperature warm-up 7) and stopped after SECONDS in any case (the epochs written by then stand),
# TF32 GEMMs, every 4th epoch's teacher kept; PRETRAIN_ARGS (environment) adds or overrides options, e.g.
# "--teacher-temp 0.01 --warmup-teacher-temp 0.01 --momentum-teacher 0.99 --lr 5e-4" (the second run of
# docs/pretraining.md). Then each kept teacher and the random ViT-S/16 are probed on
# BTCV (fitted on all but its last 5 cases, scored on those: the training domain only, as the CPU run's
# teacher was chosen) and the best by AUC goes to OUT as F16 shards (tools/safetensors_to_f16.py), with
# the run's log, the probe lines and its name (chosen.txt); the last epoch's teacher is put there first.
#
# usage: bench/gpu-pretrain.sh MANIFEST OUT [SECONDS] [EPOCHS]   from the repository root, after a CUDA build
#        (on a machine without the Debian packages: bench/gpu-carry.sh exec .gpu bench/gpu-pretrain.sh ...)
set -u -o pipefail
M=$1 OUT=$2 SECS=${3:-300} EPOCHS=${4:-24}
W=$(mktemp -d "${TMPDIR:-/tmp}/livseg-gpu-pretrain-XXXXXX")
mkdir -p "$OUT"
echo "== pretrain: $EPOCHS epochs, at most $SECS s"
LIVSEG_CUDA_TF32=1 timeout "$SECS" build-cuda/livseg pretrain "$M" --preset gpu --epochs "$EPOCHS" --warmup-epochs 3 \
    --warmup-teacher-temp-epochs 7 --keep-every 4 ${PRETRAIN_ARGS:-} --device cuda -o "$W/run" -q
echo "pretrain exit status $? (124: stopped at $SECS s)"
cp "$W/run/pretrain.jsonl" "$OUT/" || exit 1
# The last epoch's teacher first, so that a run stopped during the probes still brings one back.
last=$(ls "$W"/run/teacher-00001-of-*.safetensors "$W"/run/teacher.safetensors 2>/dev/null | head -n 1)
python3 tools/safetensors_to_f16.py "$last" "$OUT/teacher-gpu.safetensors" || exit 1

echo "== probes: fit on BTCV but its last 5 cases, scored on those"
probe() { timeout 90 build-cuda/livseg probe "$M" --fit btcv --test btcv --device cuda --cache "$W/cache" -q "$@" | tail -n 1; }
probe | tee "$OUT/probes.jsonl" # the random ViT-S/16 (seed 0)
for t in "$W"/run/teacher-e*-00001-of-*.safetensors "$W"/run/teacher-e???.safetensors; do
    [ -f "$t" ] && probe --teacher "$t" | tee -a "$OUT/probes.jsonl"
done
best=$(python3 -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
rows = [r for r in rows if 'random' not in r['teacher']]
print(max(rows, key=lambda r: r['test_auc'])['teacher'].split(':')[1][len('file='):] if rows else '')" "$OUT/probes.jsonl")
[ -n "$best" ] || { echo "no kept teacher to choose from"; exit 1; }
echo "== best by test AUC: $best -> $OUT/teacher-gpu*.safetensors (F16)"
if ! cmp -s "$W/run/$best" "$last"; then
    rm -f "$OUT"/teacher-gpu*.safetensors
    python3 tools/safetensors_to_f16.py "$W/run/$best" "$OUT/teacher-gpu.safetensors"
fi
echo "$best" > "$OUT/chosen.txt"
