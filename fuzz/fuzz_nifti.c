/*
 * fuzz_nifti.c — libFuzzer harness for the NIfTI reader: each input is written to a file (named
 * .nii, or .nii.gz when it starts with the gzip magic) and read with ls_volume_read_nifti. Any crash,
 * sanitizer report or leak is a finding; LS_ERR_INPUT is the expected answer to garbage.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "livseg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[256];
    const char *tmp = getenv("TMPDIR");
    int gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    snprintf(path, sizeof path, "%s/livseg-fuzz-nifti-%ld.nii%s", tmp ? tmp : "/tmp", (long)getpid(), gz ? ".gz" : "");
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    ls_volume v;
    ls_error err;
    if (ls_volume_read_nifti(path, &v, &err) == LS_OK) {
        /* Touch every voxel so out-of-bounds data would show. */
        volatile float sum = 0;
        for (size_t i = 0; i < ls_volume_nvox(&v); i++) sum += v.data[i];
        ls_volume_free(&v);
    }
    unlink(path);
    return 0;
}
