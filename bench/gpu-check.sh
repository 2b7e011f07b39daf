#!/usr/bin/env bash
# bench/gpu-check.sh — everything the CUDA backend needs checked on a GPU, in one run (< 8 minutes on an
# H100): build with CUDA, the CUDA-vs-CPU parity test, the cuBLAS GEMM yardstick, the network benchmarks,
# and `livseg segment --device cuda` end to end on a synthetic 512x512x300 CT (plus the same run on the CPU
# and the Dice between the two masks). Ends with a short table. Run from anywhere; exit status 1 when any
# step failed or was missing (each says so on a line starting with "FAIL"), 0 otherwise.
#
# Untrained weights throughout (no trained model is needed for speed or for CPU/CUDA agreement); the Dice
# >= 0.999 check on real scans with a trained model is separate (docs/gpu.md).
set -u -o pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
SLICES=${SLICES:-300}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/livseg-gpu-check-XXXXXX")
LOG="$WORK/log"
mkdir -p "$LOG"
failures=0
declare -A R

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T0=$(now)

echo "== device"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || fail "nvidia-smi cannot query the GPU"
else
  fail "nvidia-smi not found: no NVIDIA driver on this machine"
fi
command -v nvcc >/dev/null || { fail "nvcc not found: cannot build the CUDA backend"; echo "$failures failure(s)"; exit 1; }

echo "== build (make CUDA=1 BUILD=build-cuda, -j$JOBS)"
t=$(now)
if make -j"$JOBS" CUDA=1 BUILD=build-cuda > "$LOG/build.txt" 2>&1; then
  R[build]="ok ($(elapsed "$t") s)"
else
  tail -n 30 "$LOG/build.txt"
  fail "CUDA build failed (log above)"
  echo "$failures failure(s)"; exit 1
fi

echo "== parity: build-cuda/tests/test_ops_cuda"
t=$(now)
build-cuda/tests/test_ops_cuda 2>&1 | tee "$LOG/parity.txt"
res=$(grep '^RESULT ' "$LOG/parity.txt" | tail -n 1)
if [ -z "$res" ]; then
  fail "test_ops_cuda crashed before reporting"; R[parity]="CRASHED"
else
  set -- $res
  if [ "$4" -gt 0 ]; then fail "test_ops_cuda skipped $4 test(s): no CUDA device seen"; fi
  if [ "$3" -gt 0 ]; then fail "test_ops_cuda: $3 test(s) failed"; fi
  R[parity]="$2 passed, $3 failed, $4 skipped ($(elapsed "$t") s, seed $(sed -n 's/.*seed \([0-9]*\).*/\1/p' "$LOG/parity.txt" | head -n 1))"
fi

echo "== cuBLAS GEMM yardstick: build-cuda/bench/gemm_cuda"
if build-cuda/bench/gemm_cuda 8192 2>&1 | tee "$LOG/gemm.txt"; then
  for m in fp32 tf32 bf16; do R[gemm_$m]=$(awk -v m="$m" '$1 == "gemm" && $2 == m { print $6 }' "$LOG/gemm.txt"); done
else
  fail "bench/gemm_cuda failed"
fi

echo "== networks: build-cuda/bench/network cuda"
if build-cuda/bench/network cuda 2>&1 | tee "$LOG/network.txt"; then
  while read -r _ k v; do R[$k]=$v; done < <(grep '^network ' "$LOG/network.txt" | grep -v '^network inputs')
else
  fail "bench/network cuda failed"
fi

echo "== segment end to end: livseg segment --device cuda on a synthetic 512x512x${SLICES} CT"
if build-cuda/bench/network --make-inputs "$WORK" "$SLICES" > "$LOG/inputs.txt" 2>&1; then
  for dev in cuda cpu; do
    t=$(now)
    if build-cuda/livseg segment "$WORK/ct.nii.gz" -o "$WORK/mask_$dev.nii.gz" --model "$WORK/model.safetensors" \
         --device "$dev" --stats "$WORK/stats_$dev.json" -q > "$LOG/segment_$dev.txt" 2>&1; then
      R[seg_$dev]=$(elapsed "$t")
      R[seg_${dev}_stages]=$(python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['seconds']; print(', '.join('%s %.3f' % (k, v) for k, v in s.items()))" "$WORK/stats_$dev.json" 2>/dev/null || echo "?")
      echo "  $dev: ${R[seg_$dev]} s wall; ${R[seg_${dev}_stages]}"
    else
      cat "$LOG/segment_$dev.txt"
      fail "livseg segment --device $dev failed (message above)"
    fi
  done
  if [ -f "$WORK/mask_cuda.nii.gz" ] && [ -f "$WORK/mask_cpu.nii.gz" ]; then
    if build-cuda/livseg eval "$WORK/mask_cuda.nii.gz" "$WORK/mask_cpu.nii.gz" --json "$WORK/dice.json" > /dev/null 2>&1; then
      R[seg_dice]=$(python3 -c "import json,sys; print('%.5f' % json.load(open(sys.argv[1]))['dice'])" "$WORK/dice.json" 2>/dev/null || echo "?")
    else
      fail "livseg eval of the CUDA mask against the CPU mask failed"
    fi
  fi
else
  cat "$LOG/inputs.txt"; fail "could not write the synthetic CT and model"
fi

v() { echo "${R[$1]:-MISSING}"; }
ratio() { awk -v a="${R[$1]:-}" -v b="${R[$2]:-}" 'BEGIN { if (a == "" || b == "" || b == 0) print "?"; else printf "%.0f%%", 100 * a / b }'; }
echo
echo "== summary ($(elapsed "$T0") s; logs in $LOG)"
printf '| %-44s | %-40s | %s\n' "check" "result" "target"
printf '| %-44s | %-40s | %s\n' "CUDA build" "$(v build)" ""
printf '| %-44s | %-40s | %s\n' "parity test_ops_cuda" "$(v parity)" "12 passed, 0 failed, 0 skipped"
printf '| %-44s | %-40s | %s\n' "cuBLAS GEMM 8192^3 fp32 / tf32 / bf16 TFLOP/s" "$(v gemm_fp32) / $(v gemm_tf32) / $(v gemm_bf16)" ""
printf '| %-44s | %-40s | %s\n' "ViT-S/16 224 batch 8: slices/s, TFLOP/s" "$(v vits16_224_slices_per_s), $(v vits16_224_tflops) ($(ratio vits16_224_tflops gemm_fp32) of fp32 GEMM)" ""
printf '| %-44s | %-40s | %s\n' "ViT-B/8 224 batch 8: slices/s, TFLOP/s" "$(v vitb8_224_slices_per_s), $(v vitb8_224_tflops) ($(ratio vitb8_224_tflops gemm_fp32) of fp32 GEMM)" ""
printf '| %-44s | %-40s | %s\n' "decoder 448 batch 8: slices/s, TFLOP/s" "$(v decoder_448_slices_per_s), $(v decoder_448_tflops) ($(ratio decoder_448_tflops gemm_fp32) of fp32 GEMM)" ""
printf '| %-44s | %-40s | %s\n' "network for 300 slices (teacher+decoder), ms" "$(v volume300_ms)" "< 150 ms"
printf '| %-44s | %-40s | %s\n' "training step head+decoder batch 8, ms" "$(v train_step_batch8_ms)" ""
printf '| %-44s | %-40s | %s\n' "livseg segment 512x512x$SLICES --device cuda, s" "$(v seg_cuda)" "< 1 s end to end"
printf '| %-44s | %-40s | %s\n' "livseg segment 512x512x$SLICES --device cpu, s" "$(v seg_cpu)" ""
printf '| %-44s | %-40s | %s\n' "Dice CUDA mask vs CPU mask (untrained model)" "$(v seg_dice)" ">= 0.999"
if [ "$failures" -gt 0 ]; then echo "FAILED: $failures step(s) failed or were missing (lines starting with FAIL above)"; exit 1; fi
echo "all steps ran (targets are compared by eye above; this script fails only on missing or failing steps)"
