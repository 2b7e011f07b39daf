#!/usr/bin/env bash
# The main job on a sample scan: `livseg segment` with the default model (models/default.safetensors)
# on a BTCV CT from ../shared/data (or the scan named as $1), writing demo-out/. The sample, btcv_29,
# is one of the cases the default model was NOT trained on (held out for validation).
set -euo pipefail
cd "$(dirname "$0")/.."
scan=${1:-../shared/data/btcv/btcv_29_ct.nii.gz}
if [ ! -e "$scan" ]; then
  echo "demo: sample scan $scan not found (pass a .nii.gz or DICOM directory as the first argument)" >&2
  exit 2
fi
mkdir -p demo-out
if [ -f models/default.safetensors ] && ./build/livseg segment --help >/dev/null 2>&1; then
  ./build/livseg segment "$scan" -o demo-out/liver.nii.gz --stats demo-out/stats.json --preview demo-out/preview.png
  echo "demo: mask in demo-out/liver.nii.gz, stats in demo-out/stats.json, preview in demo-out/preview.png"
  ref=${scan/_ct.nii.gz/_liver.nii.gz}
  if [ "$ref" != "$scan" ] && [ -f "$ref" ]; then
    echo "demo: compared with the manual mask $ref:"
    ./build/livseg eval demo-out/liver.nii.gz "$ref"
  fi
else
  echo "demo: no default model yet (models/default.safetensors); showing \`livseg info\` on the sample scan"
  ./build/livseg info "$scan"
fi
