/*
 * fuzz_nifti.c — libFuzzer harness for the NIfTI reader: each input is written to a file (named
 * .nii, or .nii.gz when it starts with the gzip magic) and read with ls_volume_read_nifti, and when that
 * succeeds, straight into RAS order with ls_volume_read_ras (whose voxel walk follows the header's affine),
 * which must then succeed too; and its volume 2, as a 4-D file's (ls_volume_read_nifti_volume, which
 * reads only that volume's bytes). Any crash, sanitizer report or leak is a finding; LS_ERR_INPUT is the
 * expected answer to garbage.
 */
#include "fuzz.h"
#include "livseg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[256];
    int gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    if (!fuzz_write(data, size, "nifti", gz ? ".nii.gz" : ".nii", path, sizeof path)) return 0;
    ls_volume v;
    ls_error err;
    if (ls_volume_read_nifti(path, &v, &err) == LS_OK) {
        /* Touch every voxel so out-of-bounds data would show. */
        volatile float sum = 0;
        for (size_t i = 0; i < ls_volume_nvox(&v); i++) sum += v.data[i];
        ls_volume_free(&v);
        ls_geom g;
        if (ls_volume_read_ras(path, &v, &g, &err) != LS_OK) __builtin_trap();
        for (size_t i = 0; i < ls_volume_nvox(&v); i++) sum += v.data[i];
        ls_volume_free(&v);
    }
    if (ls_volume_read_nifti_volume(path, 2, &v, &err) == LS_OK) {
        volatile float sum = 0;
        for (size_t i = 0; i < ls_volume_nvox(&v); i++) sum += v.data[i];
        ls_volume_free(&v);
    }
    unlink(path);
    return 0;
}
