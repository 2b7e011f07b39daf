/*
 * fuzz_manifest.c — libFuzzer harness for the manifest reader (training, experiments, pretraining and
 * probes read it): each input is written to a .csv file and read with ls_manifest_read, then every case
 * is looked at and selected by its dataset as training does. Any crash, sanitizer report or leak is a
 * finding; LS_ERR_INPUT is the expected answer to garbage.
 */
#include <string.h>

#include "fuzz.h"
#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[256];
    if (!fuzz_write(data, size, "manifest", ".csv", path, sizeof path)) return 0;
    ls_manifest m;
    ls_error err;
    if (ls_manifest_read(path, &m, &err) == LS_OK) {
        volatile size_t sum = 0;
        for (int i = 0; i < m.n; i++) sum += strlen(m.cases[i].id) + strlen(m.cases[i].image) + strlen(m.cases[i].label);
        int *a = calloc((size_t)m.n + 1, sizeof(int)), *b = calloc((size_t)m.n + 1, sizeof(int)), na, nb;
        if (a && b && m.n) (void)ls_manifest_select(&m, m.cases[0].dataset, 1, 0, a, &na, b, &nb, &err);
        free(a), free(b);
        ls_manifest_free(&m);
    }
    unlink(path);
    return 0;
}
