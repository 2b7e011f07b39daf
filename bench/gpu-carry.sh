#!/usr/bin/env bash
# bench/gpu-carry.sh — runs bench/gpu-check.sh on a lent GPU machine that has the NVIDIA driver, CUDA 13
# and python3 but none of livseg's Debian packages (no headers there, so it cannot build).
#
#   bench/gpu-carry.sh pack [DIR]   here, after `make CUDA=1 BUILD=build-cuda`: writes into DIR (default
#       .gpu, which should be git-ignored) the CUDA build's binaries; the shared libraries they load that are
#       neither the C runtime, nor CUDA, nor among those the lent machines' CUDA image was seen to have
#       (OpenBLAS, zlib, libpng, jansson, libgomp, ...: xz-compressed, ~3 MB); DIR/data, three scans of
#       ../shared/data with a manifest (BTCV, CHAOS T2, TotalSegmentator CT: ~7 MB) and the shared
#       JPEG 2000 DICOM series (3 MB); and DIR/pt, every NIfTI
#       case at full in-plane resolution and every PT_Z-th slice (default 5: ~35 MB; PT_Z=0: none), for
#       `livseg train` and `livseg pretrain` there (bench/gpu-pretrain-data.py). The machine's working
#       tree is limited to 64 MiB, the repository's tracked files included: pack prints the total and
#       what to leave behind when it is over.
#   bench/gpu-carry.sh exec DIR CMD there: the same unpacking, then CMD runs with the libraries found
#       (bench/gpu-pretrain.sh runs so).
#   bench/gpu-carry.sh run [DIR]    there, from the repository root: unpacks, lets the loader find the
#       carried libraries that machine lacks (and cuBLAS wherever it keeps it), prints what each binary
#       loads, then runs PREBUILT=1 DATA=DIR/data TRAIN_DATA=DIR/pt bench/gpu-check.sh (extra environment
#       passes through, e.g. SYNTH_CPU=0) and exits with its status.
#
# The binaries are built on Debian 12 (glibc 2.36); they run on any newer glibc.
set -u -o pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
DIR=${2:-.gpu}
BINS="livseg tests/test_ops_cuda bench/gemm_cuda bench/network bench/host bench/dicom"
CASES="btcv_29 chaos_t2_15 totalseg_ct_sm"
# Seen present on the lent machines' CUDA image (2026-11-27): not carried.
ON_IMAGE='/lib(openblas|gfortran|quadmath|z|png16|jansson|gomp|uuid|expat|crypto)\.so'


pack() {
    local src=../shared/data b
    for b in $BINS; do [ -x "build-cuda/$b" ] || { echo "gpu-carry: build-cuda/$b missing (make CUDA=1 BUILD=build-cuda)"; exit 1; }; done
    [ -f "$src/manifest.csv" ] || { echo "gpu-carry: $src/manifest.csv not found"; exit 1; }
    rm -rf "$DIR" && mkdir -p "$DIR/data" "$DIR/libs"
    tar cJf "$DIR/bin.tar.xz" $(for b in $BINS; do echo "build-cuda/$b"; done)
    # Everything ldd resolves except the C runtime (the machine's own, newer one must be used) and CUDA.
    for b in $BINS; do ldd "build-cuda/$b"; done | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
        grep -Ev '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libcublas|libcublasLt|libcudart)\.so' |
        grep -Ev "$ON_IMAGE" |
        while read -r f; do cp -L "$f" "$DIR/libs/"; done
    tar cJf "$DIR/libs.tar.xz" -C "$DIR/libs" . && rm -rf "$DIR/libs"
    head -n 1 "$src/manifest.csv" > "$DIR/data/manifest.csv"
    local c row img lab
    for c in $CASES; do
        row=$(grep "^$c," "$src/manifest.csv") || { echo "gpu-carry: $c not in $src/manifest.csv"; exit 1; }
        echo "$row" >> "$DIR/data/manifest.csv"
        img=$(echo "$row" | cut -d, -f4); lab=$(echo "$row" | cut -d, -f5)
        mkdir -p "$DIR/data/$(dirname "$img")"
        cp "$src/$img" "$src/$lab" "$DIR/data/$(dirname "$img")/"
    done
    # A compressed DICOM series for bench/dicom (3 MB).
    mkdir -p "$DIR/data/dicom" && cp -r "$src/dicom/totalseg_ct_dicom" "$DIR/data/dicom/"
    if [ "${PT_Z:-5}" != 0 ]; then
        /usr/bin/python3 bench/gpu-pretrain-data.py "$src/manifest.csv" "$DIR/pt" 1 "${PT_Z:-5}" || exit 1
    fi
    du -sh "$DIR"/* | sed 's/^/gpu-carry: /'
    local tracked packed
    tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
    packed=$(du -sb "$DIR" | cut -f1)
    echo "gpu-carry: tracked files $((tracked >> 20)) MiB + $DIR $((packed >> 20)) MiB of the 64 MiB a lent machine takes"
    if [ $((tracked + packed)) -gt $((62 << 20)) ]; then
        echo "gpu-carry: too large: git rm -q models/teacher-gpu-0000* before the call (models/README.md), or PT_Z=0"
    fi
}

# Where this machine keeps the library named $1 (empty when nowhere).
find_lib() { find /usr/local /opt /usr/lib /usr/lib64 -name "$1" 2>/dev/null | head -n 1; }

# Links into $1 every library some binary cannot find: the carried copy, else one found on this machine.
resolve_libs() {
    local use=$1 all=$2 round l f missing
    for round in 1 2 3 4; do
        missing=$(for b in $BINS; do ldd "build-cuda/$b"; done 2>/dev/null | awk '/not found/ { print $1 }' | sort -u)
        [ -z "$missing" ] && return 0
        for l in $missing; do
            if [ -e "$all/$l" ]; then ln -sf "$all/$l" "$use/$l"; continue; fi
            f=$(find_lib "$l")
            if [ -n "$f" ]; then ln -sf "$f" "$use/$l"; else echo "gpu-carry: $l is needed and not found anywhere"; fi
        done
    done
}

setup() {
    local L=/tmp/livseg-libs
    tar xJf "$DIR/bin.tar.xz" || exit 1
    rm -rf "$L" && mkdir -p "$L/all" "$L/use" && tar xJf "$DIR/libs.tar.xz" -C "$L/all" || exit 1
    export LD_LIBRARY_PATH="$L/use${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    resolve_libs "$L/use" "$L/all"
    # cuBLAS is opened when a CUDA backend starts (dlopen), so ldd does not list it: where the build's run
    # path (/usr/local/cuda/lib64) and the loader's cache do not have it, link the copy found elsewhere.
    local l f
    for l in libcublas.so.13 libcublasLt.so.13; do
        [ -e "/usr/local/cuda/lib64/$l" ] || ldconfig -p 2>/dev/null | grep -q "$l" && continue
        f=$(find_lib "$l")
        if [ -n "$f" ]; then ln -sf "$f" "$L/use/$l"; else echo "gpu-carry: $l not found: --device cuda will say so"; fi
    done
}

case "$mode" in
    pack) pack ;;
    run)
        setup
        echo "== libraries (build-cuda/livseg)"
        ldd build-cuda/livseg | sed 's/^/  /'
        PREBUILT=1 DATA="$DIR/data" TRAIN_DATA="$([ -d "$DIR/pt" ] && echo "$DIR/pt")" bash bench/gpu-check.sh ;;
    exec) # bench/gpu-carry.sh exec DIR COMMAND [ARGS]: the unpacked build's environment for one command
        shift 2
        setup
        exec "$@" ;;
    *) echo "usage: bench/gpu-carry.sh pack|run [DIR] | exec DIR COMMAND [ARGS]"; exit 2 ;;
esac
