/*
 * test_convert.c — tools/dino_to_safetensors.py on a DINO-style training checkpoint (prefixed keys,
 * teacher and student, a projection head): the result loads as a teacher with a custom configuration
 * and carries the teacher's values; the head is dropped; a non-checkpoint gives one clear line.
 */
#include <time.h>

#include "ops.h"
#include "test.h"
#include "vit.h"

TEST(convert_dino_checkpoint) {
    if (!test_python_has("torch")) SKIP("%s cannot import torch (install python3-torch or set LS_PYTHON)", test_python());
    const char *dir = test_tmpdir();
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s tests/ref/fake_dino_ckpt.py %s %u && %s tools/dino_to_safetensors.py %s/dino.pth %s/dino.safetensors > /dev/null",
             test_python(), dir, (unsigned)time(NULL), test_python(), dir, dir);
    REQUIRE(system(cmd) == 0, "conversion failed: %s", cmd);
    char path[600];
    snprintf(path, sizeof path, "%s/dino.safetensors", dir);
    ls_st_file st;
    ls_error err = {0};
    REQUIRE(ls_st_open(path, &st, &err) == LS_OK, "%s", err.msg);
    CHECK(ls_st_meta(&st, "arch") && strcmp(ls_st_meta(&st, "arch"), "custom") == 0, "arch metadata");
    CHECK(ls_st_find(&st, "head.mlp.0.weight") == NULL && ls_st_find(&st, "module.head.mlp.0.weight") == NULL, "head kept");
    ls_vit_config cfg = {.name = "custom", .depth = 2, .dim = 64, .heads = 2, .patch = 16, .mlp_hidden = 256, .pos_grid = 14, .eps = 1e-6f};
    ls_backend be;
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 1, &err) == LS_OK, "%s", err.msg);
    ls_vit m;
    REQUIRE(ls_vit_load(&m, &be, &cfg, ls_st_source, &st, &err) == LS_OK, "%s", err.msg);
    struct { const char *name; const float *got; size_t n; } t[] = {
        {"pos_embed", m.pos, 197 * 64}, {"blocks.1.attn.qkv.weight", m.blocks[1].qkv_w, 192 * 64}, {"norm.bias", m.norm_b, 64}};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s.bin", dir, t[i].name);
        float *want = test_read_f32(path, t[i].n);
        REQUIRE(want, "missing %s", path);
        CHECK(memcmp(want, t[i].got, t[i].n * sizeof(float)) == 0, "%s differs from the checkpoint's teacher", t[i].name);
        free(want);
    }
    ls_vit_free(&m);
    ls_st_close(&st);
    ls_backend_free(&be);
    /* Not a checkpoint: one line, non-zero exit. */
    snprintf(path, sizeof path, "%s/junk.pth", dir);
    FILE *f = fopen(path, "w");
    fputs("junk", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s tools/dino_to_safetensors.py %s %s/x.safetensors 2> %s/err.txt", test_python(), path, dir, dir);
    CHECK(system(cmd) != 0, "converter accepted junk");
}

int main(void) {
    RUN(convert_dino_checkpoint);
    return test_summary();
}
