/*
 * fuzz_model.c — libFuzzer harness for model files (`livseg segment --model`): each input is written to a
 * .safetensors file and loaded with ls_model_load on the CPU backend, which reads the configuration from
 * the metadata, sizes the head and decoder from it and reads every tensor. Any crash, sanitizer report,
 * leak or blow-up of memory (a configuration claiming more weights than the file holds) is a finding;
 * LS_ERR_INPUT is the expected answer to garbage.
 */
#include "fuzz.h"
#include "model.h"
#include "ops.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static ls_backend be;
    static int ready;
    ls_error err;
    if (!ready && ls_backend_init(&be, LS_DEV_CPU, 1, &err) != LS_OK) abort();
    ready = 1;
    char path[256];
    if (!fuzz_write(data, size, "model", ".safetensors", path, sizeof path)) return 0;
    ls_model m;
    ls_model_info info;
    if (ls_model_load(&m, &info, &be, path, &err) == LS_OK) ls_model_free(&m);
    unlink(path);
    return 0;
}
