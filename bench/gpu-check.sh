#!/usr/bin/env bash
# bench/gpu-check.sh — everything the CUDA backend needs checked on a GPU, in one run (< 8 minutes on an
# H100): build with CUDA, the CUDA-vs-CPU parity test, the cuBLAS GEMM yardstick, the network benchmarks,
# and `livseg segment --device cuda` end to end on a synthetic 512x512x300 CT (plus the same run on the CPU
# and the Dice between the two masks), and with DATA on a real scan resampled to that size. Ends with a short table. Run from anywhere; exit status 1 when any
# step failed or was missing (each says so on a line starting with "FAIL"), 0 otherwise.
#
# Untrained weights for the benchmarks (speed does not depend on them). With DATA=DIR (a folder holding a
# manifest.csv in ../shared/data's layout; default ../shared/data when present) it also runs the checks that
# need real scans: the shipped default model on three scans on both devices (Dice between the masks, which
# fails below 0.999), the default model end to end on btcv_29 resampled to 512x512x300 and the host stages
# alone (bench/host), reading the shared JPEG 2000 DICOM series with 1..10 decoder processes (bench/dicom),
# `livseg train --device cuda` (seconds per epoch, paper preset) and `livseg pretrain
# --device cuda` (one short epoch of the gpu preset: images/s), these two on TRAIN_DATA=DIR when set
# (default DATA). PREBUILT=1 skips the build and uses the binaries in build-cuda/ (for a GPU machine
# without the Debian packages: bench/gpu-carry.sh). BUDGET_S=N skips the stages that would start after N
# seconds; with OUT set (the device tool's output folder) the logs and the summary so far go to
# $OUT/gpu-check-logs after every stage.
set -u -o pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
SLICES=${SLICES:-300}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/livseg-gpu-check-XXXXXX")
LOG=${OUT:+$OUT/gpu-check-logs}  # the device tool brings $OUT back; the masks and scans in $WORK stay
LOG=${LOG:-$WORK/log}
mkdir -p "$LOG"
BUDGET_S=${BUDGET_S:-0}
failures=0
declare -A R

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T0=$(now)
# Stages after the first four start only while the run is within BUDGET_S seconds (0: no budget), so that a
# lent machine's time limit cuts off stages, not the summary. A skipped stage counts as a failure.
late() {
  if [ "$BUDGET_S" != 0 ] && awk -v e="$(elapsed "$T0")" -v b="$BUDGET_S" 'BEGIN { exit !(e > b) }'; then
    fail "$1: skipped, $(elapsed "$T0") s is past BUDGET_S=$BUDGET_S"; return 0
  fi
  return 1
}
v() { echo "${R[$1]:-MISSING}"; }
ratio() { awk -v a="${R[$1]:-}" -v b="${R[$2]:-}" 'BEGIN { if (a == "" || b == "" || b == 0) print "?"; else printf "%.0f%%", 100 * a / b }'; }
# The table, printed last and rewritten to $LOG/summary.txt after every stage: a run stopped from outside
# (a device time limit) still leaves what it measured there.
summary() {
  echo
  echo "== summary ($(elapsed "$T0") s; logs in $LOG)"
  printf '| %-44s | %-48s | %s\n' "check" "result" "target"
  printf '| %-44s | %-48s | %s\n' "CUDA build" "$(v build)" ""
  printf '| %-44s | %-48s | %s\n' "parity test_ops_cuda" "$(v parity)" "19 passed, 0 failed, 0 skipped"
  printf '| %-44s | %-48s | %s\n' "cuBLAS GEMM 8192^3 fp32 / tf32 / bf16 TFLOP/s" "$(v gemm_fp32) / $(v gemm_tf32) / $(v gemm_bf16)" ""
  printf '| %-44s | %-48s | %s\n' "ViT-S/16 224 batch 8: slices/s, TFLOP/s" "$(v vits16_224_slices_per_s), $(v vits16_224_tflops) ($(ratio vits16_224_tflops gemm_fp32) of fp32, $(ratio vits16_224_tflops gemm_bf16) of bf16 GEMM)" ""
  printf '| %-44s | %-48s | %s\n' "  unfused attention (before); batch 32 fused" "$(v vits16_224_unfused_slices_per_s); $(v vits16_224_b32_slices_per_s) slices/s" ""
  printf '| %-44s | %-48s | %s\n' "ViT-B/8 224 batch 8: slices/s, TFLOP/s" "$(v vitb8_224_slices_per_s), $(v vitb8_224_tflops) ($(ratio vitb8_224_tflops gemm_fp32) of fp32, $(ratio vitb8_224_tflops gemm_bf16) of bf16 GEMM)" ""
  printf '| %-44s | %-48s | %s\n' "decoder 448 batch 8: slices/s, TFLOP/s" "$(v decoder_448_slices_per_s), $(v decoder_448_tflops) ($(ratio decoder_448_tflops gemm_fp32) of fp32, $(ratio decoder_448_tflops gemm_bf16) of bf16 GEMM)" ""
  printf '| %-44s | %-48s | %s\n' "network for 300 slices (teacher+decoder), ms" "$(v volume300_ms)" "< 150 ms"
  printf '| %-44s | %-48s | %s\n' "  with TF32: ViT-S/16 slices/s; 300 slices, ms" "$(v tf32_vits16_224_slices_per_s); $(v tf32_volume300_ms)" "< 150 ms"
  printf '| %-44s | %-48s | %s\n' "  with TF32 rn: ViT-S/16 slices/s; 300 slices, ms" "$(v tf32rn_vits16_224_slices_per_s); $(v tf32rn_volume300_ms)" "< 150 ms"
  printf '| %-44s | %-48s | %s\n' "  with BF16: ViT-S/16 slices/s; 300 slices, ms" "$(v bf16_vits16_224_slices_per_s); $(v bf16_volume300_ms)" "< 150 ms"
  printf '| %-44s | %-48s | %s\n' "shipped default decoder (224) slices/s" "$(v decoder_shipped_224_slices_per_s), $(v decoder_shipped_tflops) TFLOP/s" ""
  printf '| %-44s | %-48s | %s\n' "network 300 slices, shipped model, ms" "$(v volume300_shipped_ms); TF32: $(v tf32_volume300_shipped_ms); rn: $(v tf32rn_volume300_shipped_ms); BF16: $(v bf16_volume300_shipped_ms)" "< 150 ms"
  printf '| %-44s | %-48s | %s\n' "  the same at batch 32 (segment's), ms" "$(v volume300_shipped_b32_ms); TF32: $(v tf32_volume300_shipped_b32_ms); rn: $(v tf32rn_volume300_shipped_b32_ms); BF16: $(v bf16_volume300_shipped_b32_ms)" "< 150 ms"
  printf '| %-44s | %-48s | %s\n' "training step head+decoder batch 8, ms" "$(v train_step_batch8_ms)" ""
  printf '| %-44s | %-48s | %s\n' "livseg segment 512x512x$SLICES --device cuda, fp32, s" "$(v seg_cuda)" ""
  printf '| %-44s | %-48s | %s\n' "  the same with --batch 8, s" "$(v seg_cuda8)" ""
  printf '| %-44s | %-48s | %s\n' "livseg segment 512x512x$SLICES --device cpu, s" "$(v seg_cpu)" ""
  printf '| %-44s | %-48s | %s\n' "Dice CUDA mask vs CPU mask (untrained model)" "$(v seg_dice)" ">= 0.999"
  printf '| %-44s | %-48s | %s\n' "Dice CUDA vs CPU mask, default model, real" "$(v real)" ">= 0.999 each"
  printf '| %-44s | %-48s | %s\n' "  the same with TF32 (segment's default)" "$(v real_tf32)" ">= 0.999 each"
  printf '| %-44s | %-48s | %s\n' "  the same with TF32, operands rounded (rn)" "$(v real_tf32rn)" "(reported)"
  printf '| %-44s | %-48s | %s\n' "  the same with BF16" "$(v real_bf16)" "(reported)"
  printf '| %-44s | %-48s | %s\n' "segment btcv_29 at 512x512x300 --device cuda" "$(v e2e_runs) s wall (3 runs, TF32); last: $(v e2e_stages)" "< 1 s end to end"
  printf '| %-44s | %-48s | %s\n' "  the same in fp32" "$(v e2e_fp32)" ""
  printf '| %-44s | %-48s | %s\n' "  the same with TF32 rn" "$(v e2e_tf32rn)" "< 1 s end to end"
  printf '| %-44s | %-48s | %s\n' "  the same with BF16" "$(v e2e_bf16)" "< 1 s end to end"
  printf '| %-44s | %-48s | %s\n' "host stages (bench/host, $JOBS threads), s" "$(v host)" ""
  printf '| %-44s | %-48s | %s\n' "DICOM read, 20 JPEG 2000 slices (bench/dicom)" "$(v dicom)" "(reported)"
  printf '| %-44s | %-48s | %s\n' "features --device cuda vs cpu (btcv_29)" "$(v features)" "rel <= 1e-2"
  printf '| %-44s | %-48s | %s\n' "train --device cuda --preset paper, s/epoch" "$(v train_epoch)" ""
  printf '| %-44s | %-48s | %s\n' "experiment --device cuda (tiny)" "$(v experiment)" "runs"
  printf '| %-44s | %-48s | %s\n' "pretrain --device cuda --preset gpu, 1 epoch" "$(v pretrain)" ""
}
checkpoint() { summary > "$LOG/summary.txt"; }

echo "== device"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || fail "nvidia-smi cannot query the GPU"
else
  fail "nvidia-smi not found: no NVIDIA driver on this machine"
fi

echo "== build (make CUDA=1 BUILD=build-cuda, -j$JOBS)"
t=$(now)
if [ "${PREBUILT:-0}" = 1 ]; then
  for b in livseg tests/test_ops_cuda bench/gemm_cuda bench/network bench/host bench/dicom; do
    [ -x "build-cuda/$b" ] || { fail "PREBUILT=1 but build-cuda/$b is missing"; echo "$failures failure(s)"; exit 1; }
  done
  R[build]="prebuilt"
elif ! command -v nvcc >/dev/null; then
  fail "nvcc not found: cannot build the CUDA backend (PREBUILT=1 uses build-cuda/ as it is)"
  echo "$failures failure(s)"; exit 1
elif make -j"$JOBS" CUDA=1 BUILD=build-cuda > "$LOG/build.txt" 2>&1; then
  R[build]="ok ($(elapsed "$t") s)"
else
  tail -n 30 "$LOG/build.txt"
  fail "CUDA build failed (log above)"
  echo "$failures failure(s)"; exit 1
fi

echo "== parity: build-cuda/tests/test_ops_cuda"
t=$(now)
timeout 200 build-cuda/tests/test_ops_cuda 2>&1 | tee "$LOG/parity.txt"
res=$(grep '^RESULT ' "$LOG/parity.txt" | tail -n 1)
if [ -z "$res" ]; then
  fail "test_ops_cuda crashed before reporting"; R[parity]="CRASHED"
else
  set -- $res
  if [ "$4" -gt 0 ]; then fail "test_ops_cuda skipped $4 test(s): no CUDA device seen"; fi
  if [ "$3" -gt 0 ]; then fail "test_ops_cuda: $3 test(s) failed"; fi
  R[parity]="$2 passed, $3 failed, $4 skipped ($(elapsed "$t") s, seed $(sed -n 's/.*seed \([0-9]*\).*/\1/p' "$LOG/parity.txt" | head -n 1))"
fi
if [ "${R[parity]#* passed, 0 failed}" = "${R[parity]}" ] && command -v compute-sanitizer >/dev/null; then
  echo "== parity failed: the same seed under compute-sanitizer (memcheck), at most 90 s"
  seed=$(sed -n 's/.*seed \([0-9]*\).*/\1/p' "$LOG/parity.txt" | head -n 1)
  LS_SEED=$seed timeout 90 compute-sanitizer --tool memcheck --print-limit 20 build-cuda/tests/test_ops_cuda 2>&1 |
    grep -v '^  ok' | tail -n 60
fi

checkpoint

echo "== cuBLAS GEMM yardstick: build-cuda/bench/gemm_cuda"
if timeout 60 build-cuda/bench/gemm_cuda 8192 2>&1 | tee "$LOG/gemm.txt"; then
  for m in fp32 tf32 bf16; do R[gemm_$m]=$(awk -v m="$m" '$1 == "gemm" && $2 == m { print $6 }' "$LOG/gemm.txt"); done
else
  fail "bench/gemm_cuda failed"
fi

checkpoint

echo "== networks: build-cuda/bench/network cuda"
if timeout 150 build-cuda/bench/network cuda 2>&1 | tee "$LOG/network.txt"; then
  while read -r _ k v; do R[$k]=$v; done < <(grep '^network ' "$LOG/network.txt" | grep -v '^network inputs')
else
  fail "bench/network cuda failed"
fi

checkpoint

# The tensor-core modes: cuBLAS's TF32, TF32 with operands rounded to nearest first, bfloat16; fp32 (and
# cuda) full float32. Anything else: the command's own choice (segment: TF32; the rest: fp32).
prec_env() { case $1 in tf32) echo LIVSEG_CUDA_TF32=1 ;; tf32rn) echo LIVSEG_CUDA_TF32=rn ;; bf16) echo LIVSEG_CUDA_BF16=1 ;;
  fp32|cuda|cuda8) echo LIVSEG_CUDA_TF32=0 ;; *) echo LIVSEG_NONE=1 ;; esac; }
# The precision a segment run reports in its --stats file.
stats_precision() { python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('precision', '?'))" "$1" 2>/dev/null || echo "?"; }
if ! late "networks in the tensor-core modes"; then
  for p in tf32 tf32rn bf16; do
    echo "== networks with $(prec_env $p): outside the fp32 parity bounds; the real scans below check the masks"
    if env "$(prec_env $p)" timeout 150 build-cuda/bench/network cuda > "$LOG/network_$p.txt" 2>&1; then
      while read -r _ k v; do R[${p}_$k]=$v; done < <(grep '^network ' "$LOG/network_$p.txt" | grep -v '^network inputs')
      grep '^network ' "$LOG/network_$p.txt"
    else
      cat "$LOG/network_$p.txt"; fail "bench/network cuda with $(prec_env $p) failed"
    fi
  done
fi
checkpoint

if ! late "segment, synthetic CT"; then
  echo "== segment end to end: livseg segment --device cuda on a synthetic 512x512x${SLICES} CT"
  if build-cuda/bench/network --make-inputs "$WORK" "$SLICES" > "$LOG/inputs.txt" 2>&1; then
    # cuda8: --batch 8 (slices per teacher and decoder pass; the default on a GPU is 32). Both in float32,
    # to compare with the CPU: an untrained model's logits sit near the threshold. SYNTH_CPU=0 skips
    # the CPU run (~50 s on 16 cores; the real scans below compare the devices too).
    for dev in cuda cuda8 $([ "${SYNTH_CPU:-1}" = 1 ] && echo cpu); do
      t=$(now)
      if env "$(prec_env $dev)" timeout 180 build-cuda/livseg segment "$WORK/ct.nii.gz" -o "$WORK/mask_$dev.nii.gz" --model "$WORK/model.safetensors" \
           --device "${dev%8}" $([ "$dev" = cuda8 ] && echo --batch 8) --stats "$WORK/stats_$dev.json" -q > "$LOG/segment_$dev.txt" 2>&1; then
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
fi
checkpoint

DATA=${DATA:-../shared/data}
if [ -f "$DATA/manifest.csv" ]; then
  if ! late "real scans"; then
    echo "== real scans ($DATA): the default model on both devices, CUDA mask vs CPU mask"
    # The first BTCV, CHAOS T2 and TotalSegmentator CT case of the manifest that is present.
    scans=$(awk -F, 'NR > 1 && ($2 == "btcv" || $2 == "chaos_t2" || $1 == "totalseg_ct_sm") && !seen[$2]++ { print $1 "," $4 "," $5 }' "$DATA/manifest.csv")
    n_scans=0
    for row in $scans; do
      IFS=, read -r case img lab <<< "$row"
      [ -f "$DATA/$img" ] || continue
      # cuda: float32 (prec_env); default: segment's own choice, which must be TF32; then the other modes
      for dev in cuda cpu default tf32rn bf16; do
        t=$(now)
        if ! env "$(prec_env $dev)" timeout 180 build-cuda/livseg segment "$DATA/$img" --stats "$WORK/${case}_$dev.json" \
             -o "$WORK/${case}_$dev.nii.gz" --device "$([ "$dev" = cpu ] && echo cpu || echo cuda)" -q > "$LOG/seg_${case}_$dev.txt" 2>&1; then
          cat "$LOG/seg_${case}_$dev.txt"; fail "livseg segment --device $dev on $case failed"; continue 2
        fi
        echo "  $case $dev: $(elapsed "$t") s, $(stats_precision "$WORK/${case}_$dev.json")"
      done
      pr=$(stats_precision "$WORK/${case}_default.json")
      [ "$pr" = tf32 ] || fail "$case: segment --device cuda ran in $pr, not its default tf32"
      mv "$WORK/${case}_default.nii.gz" "$WORK/${case}_tf32.nii.gz"
      d=$(build-cuda/livseg eval "$WORK/${case}_cuda.nii.gz" "$WORK/${case}_cpu.nii.gz" --json "$WORK/d.json" > /dev/null 2>&1 &&
          python3 -c "import json,sys; print('%.5f' % json.load(open(sys.argv[1]))['dice'])" "$WORK/d.json")
      g=$(build-cuda/livseg eval "$WORK/${case}_cuda.nii.gz" "$DATA/$lab" --json "$WORK/g.json" > /dev/null 2>&1 &&
          python3 -c "import json,sys; print('%.4f' % json.load(open(sys.argv[1]))['dice'])" "$WORK/g.json")
      for p in tf32 tf32rn bf16; do
        dp=$(build-cuda/livseg eval "$WORK/${case}_$p.nii.gz" "$WORK/${case}_cpu.nii.gz" --json "$WORK/d_$p.json" > /dev/null 2>&1 &&
             python3 -c "import json,sys; print('%.5f' % json.load(open(sys.argv[1]))['dice'])" "$WORK/d_$p.json")
        R[real_$p]="${R[real_$p]:+${R[real_$p]}, }$case ${dp:-?}"
        [ "$p" != tf32 ] || awk -v d="${dp:-0}" 'BEGIN { exit !(d >= 0.999) }' ||
          fail "$case: segment's default TF32 mask differs from the CPU's (Dice ${dp:-?} < 0.999)"
      done
      echo "  $case: Dice CUDA vs CPU mask ${d:-?}, CUDA mask vs label ${g:-?}; tensor-core modes vs CPU: tf32 ${R[real_tf32]##* }, tf32rn ${R[real_tf32rn]##* }, bf16 ${R[real_bf16]##* }"
      awk -v d="${d:-0}" 'BEGIN { exit !(d >= 0.999) }' || fail "$case: CUDA and CPU masks differ (Dice ${d:-?} < 0.999)"
      R[real]="${R[real]:+${R[real]}, }$case ${d:-?}"
      n_scans=$((n_scans + 1))
    done
    [ "$n_scans" -eq 3 ] || fail "$n_scans of 3 real scans segmented on both devices"
  fi
  checkpoint

  if ! late "features"; then
    echo "== features --device cuda against --device cpu on btcv_29 (F16 cache files; bound 1e-2 of the largest value)"
    img=$(awk -F, '$1 == "btcv_29" { print $4 }' "$DATA/manifest.csv")
    if [ -n "$img" ] && timeout 90 build-cuda/livseg features --cache "$WORK/fc_cpu" -q "$DATA/$img" > "$LOG/features_cpu.txt" 2>&1 &&
       timeout 90 build-cuda/livseg features --cache "$WORK/fc_cuda" --device cuda -q "$DATA/$img" > "$LOG/features_cuda.txt" 2>&1; then
      R[features]=$(python3 bench/compare_features.py "$WORK"/fc_cpu/*.safetensors "$WORK"/fc_cuda/*.safetensors 2>&1 | cut -d' ' -f2-)
      echo "  ${R[features]}"
      awk -v r="$(echo "${R[features]}" | awk '{ print $NF }')" 'BEGIN { exit !(r != "" && r + 0 <= 1e-2) }' ||
        fail "features: CUDA and CPU caches differ (${R[features]})"
    else
      cat "$LOG/features_cpu.txt" "$LOG/features_cuda.txt" 2>/dev/null | tail -n 5; fail "livseg features on btcv_29 failed"
    fi
  fi
  checkpoint

  if ! late "real-sized scan end to end"; then
    echo "== real-sized scan end to end: btcv_29 resampled to 512x512x300 (bench/host --make-ct), default model, 3 runs"
    if build-cuda/bench/host --make-ct "$DATA" btcv_29 "$WORK/ct512.nii.gz" > "$LOG/ct512.txt" 2>&1; then
      for run in 1 2 3 fp32 tf32rn bf16; do  # segment's default (TF32) 3 times, then once in each other mode
        t=$(now)
        if env "$(prec_env $run)" timeout 120 build-cuda/livseg segment "$WORK/ct512.nii.gz" -o "$WORK/ct512_mask.nii.gz" --device cuda \
             --stats "$WORK/ct512_$run.json" -q > "$LOG/ct512_$run.txt" 2>&1; then
          w=$(elapsed "$t")
          st=$(python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['seconds']; print(', '.join('%s %.3f' % (k, v) for k, v in s.items()))" "$WORK/ct512_$run.json" 2>/dev/null || echo "?")
          st="$(stats_precision "$WORK/ct512_$run.json"): $st"
          echo "  run $run: $w s wall; $st"
          case $run in
            fp32|tf32rn|bf16) R[e2e_$run]="$w s wall; $st" ;;
            *) R[e2e_runs]="${R[e2e_runs]:+${R[e2e_runs]} / }$w"; R[e2e_stages]=$st ;;
          esac
        else
          cat "$LOG/ct512_$run.txt"; fail "livseg segment --device cuda on the 512x512x300 CT failed"; break
        fi
      done
    else
      cat "$LOG/ct512.txt"; fail "bench/host --make-ct failed"
  fi
  checkpoint
  fi
  if ! late "host stages"; then
    echo "== host stages alone: build-cuda/bench/host $DATA $JOBS btcv_29 (no scipy reference here unless installed)"
    if timeout 120 build-cuda/bench/host "$DATA" "$JOBS" btcv_29 > "$LOG/host.txt" 2>&1; then
      grep -v '^host ' "$LOG/host.txt"
      R[host]=$(awk '$1 == "host" && $3 == "threads" { printf "read %.3f, clean-up %.3f, write %.3f, total %.3f", $5, $11, $19, $23 }' "$LOG/host.txt")
    else
      cat "$LOG/host.txt"; fail "bench/host failed"
    fi
  fi
  checkpoint
  # Decoder processes on this machine's cores (docs/dicom.md: on 2 cores JPEG 2000 gained nothing).
  SERIES="$DATA/dicom/totalseg_ct_dicom"
  if [ ! -d "$SERIES" ]; then
    echo "== DICOM decoders: skipped ($SERIES not found)"
  elif ! late "DICOM decoders"; then
    echo "== DICOM decoders: build-cuda/bench/dicom $SERIES (1 to $((JOBS < 10 ? JOBS : 10)) decoders, best of 3)"
    if timeout 90 build-cuda/bench/dicom "$SERIES" $((JOBS < 10 ? JOBS : 10)) 3 > "$LOG/dicom.txt" 2>&1; then
      cat "$LOG/dicom.txt"
      R[dicom]=$(awk '$1 ~ /^[0-9]+$/ { if ($1 == 1) one = $2; if ($4 + 0 > best) { best = $4 + 0; at = $1; t = $2 } }
                      END { printf "1: %.3f s; best %d: %.3f s (%.2fx)", one, at, t, best }' "$LOG/dicom.txt")
    else
      cat "$LOG/dicom.txt"; fail "bench/dicom failed"
    fi
  fi
  checkpoint

  TRAIN_DATA=${TRAIN_DATA:-$DATA}
  if ! late "training"; then
    echo "== training: livseg train --device cuda --preset paper on $TRAIN_DATA (2 epochs of at most 800 slices)"
    if timeout 200 build-cuda/livseg train "$TRAIN_DATA/manifest.csv" --preset paper --train btcv --epochs 2 \
         --device cuda --cache "$WORK/cache" -o "$WORK/train" -q > "$LOG/train.txt" 2>&1; then
      R[train_epoch]=$(python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print('%.1f (train %.1f), val Dice %.3f' % (r[-1]['seconds'], r[-1]['train_seconds'], r[-1]['val_dice']))" "$WORK/train/train.jsonl" 2>/dev/null || echo "?")
      tail -n 4 "$LOG/train.txt"
    else
      tail -n 20 "$LOG/train.txt"; fail "livseg train --device cuda failed"
    fi
  fi
  checkpoint

  if ! late "experiment"; then
    echo "== experiment: livseg experiment --device cuda, btcv -> chaos_t2, 1 epoch of 64 slices, 4 training cases"
    t=$(now)
    if timeout 150 build-cuda/livseg experiment "$TRAIN_DATA/manifest.csv" --train btcv --test chaos_t2 --limit 4 --val-split 2 \
         --epochs 1 --slices-per-epoch 64 --device cuda --cache "$WORK/cache" -o "$WORK/exp" -q > "$LOG/experiment.txt" 2>&1; then
      R[experiment]="ran in $(elapsed "$t") s; $(grep -m1 -i 'dice' "$WORK/exp/report.md" 2>/dev/null | cut -c1-60)"
      echo "  ${R[experiment]}"
    else
      tail -n 20 "$LOG/experiment.txt"; fail "livseg experiment --device cuda failed"
    fi
  fi
  checkpoint

  if ! late "pretraining"; then
    echo "== pretraining: livseg pretrain --device cuda --preset gpu (one epoch of 640 slices)"
    if timeout 150 build-cuda/livseg pretrain "$TRAIN_DATA/manifest.csv" --preset gpu --until 1 --slices-per-epoch 640 \
         --device cuda -o "$WORK/pretrain" -q > "$LOG/pretrain.txt" 2>&1; then
      R[pretrain]=$(python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print('%.1f s, %.1f images/s, loss %.3f' % (r[-1]['seconds'], r[-1]['images_per_s'], r[-1]['loss']))" "$WORK/pretrain/pretrain.jsonl" 2>/dev/null || echo "?")
      tail -n 3 "$LOG/pretrain.txt"
    else
      tail -n 20 "$LOG/pretrain.txt"; fail "livseg pretrain --device cuda failed"
    fi
  fi
  checkpoint
else
  echo "== real scans: skipped ($DATA/manifest.csv not found; set DATA=DIR)"
fi

checkpoint
summary
if [ "$failures" -gt 0 ]; then echo "FAILED: $failures step(s) failed or were missing (lines starting with FAIL above)"; exit 1; fi
echo "all steps ran (targets are compared by eye above; this script fails only on missing or failing steps)"
