/*
 * fuzz_safetensors.c — libFuzzer harness for the safetensors reader: parse the input as a file and
 * convert every floating-point tensor it describes. LS_ERR_INPUT is the expected answer to garbage.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    ls_st_file f;
    ls_error err;
    if (ls_st_parse(buf, size, "fuzz.safetensors", &f, &err) != LS_OK) return 0;
    for (int i = 0; i < f.ntensors; i++) {
        const ls_st_tensor *t = &f.tensors[i];
        if (t->numel > (1u << 24)) continue;
        float *dst = malloc(t->numel * sizeof(float) + 4);
        if (dst) {
            ls_st_read_f32(&f, t, dst, &err);
            free(dst);
        }
        (void)ls_st_find(&f, t->name);
    }
    (void)ls_st_meta(&f, "format");
    ls_st_close(&f);
    return 0;
}
