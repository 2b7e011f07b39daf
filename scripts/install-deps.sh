#!/usr/bin/env bash
# Installs every Debian package livseg needs to build, run and test, on a fresh Debian 12 machine.
# Run as root (or with sudo available). Idempotent: re-running only checks that everything is there.
#
#   build:   gcc, make, pkg-config, nifticlib (NIfTI-1/2 headers), zlib + libdeflate (.nii.gz), GDCM (DICOM), OpenBLAS (GEMM),
#            (OpenMP build), jansson (JSON), libpng (preview images)
#   tests:   Debian's python3 with PyTorch, NumPy, SciPy, nibabel, pydicom (the independent references),
#            clang + libFuzzer runtime (fuzz harnesses)
set -euo pipefail

pkgs=(
  build-essential pkg-config
  libnifti2-dev zlib1g-dev libdeflate-dev
  libgdcm-dev
  libopenblas-openmp-dev
  libjansson-dev
  libpng-dev
  python3 python3-numpy python3-scipy python3-nibabel python3-torch python3-pydicom
  clang libclang-rt-14-dev
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
