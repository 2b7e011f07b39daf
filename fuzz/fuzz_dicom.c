/*
 * fuzz_dicom.c — libFuzzer harness for the DICOM path: each input becomes the only file of a
 * directory, read with ls_volume_read_dicom and listed with ls_dicom_list (whose names must come back
 * terminated and printable). GDCM itself runs in a child process (see dicom.cpp), so
 * this harness checks what livseg's own process does with whatever comes back: the pipe protocol,
 * the error paths, the volume assembly. Coverage guidance does not reach inside the child.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "livseg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[256], path[300];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/livseg-fuzz-dicom-%ld", tmp ? tmp : "/tmp", (long)getpid());
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/input.dcm", dir);
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    ls_volume v;
    ls_error err;
    if (ls_volume_read_dicom(dir, &v, &err) == LS_OK) {
        volatile float sum = 0;
        for (size_t i = 0; i < ls_volume_nvox(&v); i++) sum += v.data[i];
        ls_volume_free(&v);
    }
    ls_dicom_series *list;
    int n;
    if (ls_dicom_list(dir, &list, &n, &err) == LS_OK) {
        for (int i = 0; i < n; i++) {
            const char *names[4] = {list[i].uid, list[i].number, list[i].description, list[i].modality};
            size_t caps[4] = {sizeof list[i].uid, sizeof list[i].number, sizeof list[i].description, sizeof list[i].modality};
            for (int k = 0; k < 4; k++) {
                size_t len = strnlen(names[k], caps[k]);
                if (len == caps[k]) abort(); /* not terminated */
                for (size_t j = 0; j < len; j++)
                    if (names[k][j] < 0x20 || names[k][j] > 0x7e) abort();
            }
        }
        free(list);
    }
    unlink(path);
    rmdir(dir);
    return 0;
}
