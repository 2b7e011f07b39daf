/*
 * test_convert.c — tools/dino_to_safetensors.py on a DINO-style training checkpoint (prefixed keys,
 * teacher and student, a projection head): the result loads as a teacher with a custom configuration
 * and carries the teacher's values; the head is dropped; a non-checkpoint gives one clear line.
 */
#include <sys/stat.h>
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

/* A model over --max-shard-mib is split into STEM-0000i-of-0000M files, each under the limit, that load
 * as one through ls_st_set_open_model(first shard) with the same values. */
TEST(convert_sharded) {
    if (!test_python_has("torch")) SKIP("%s cannot import torch (install python3-torch or set LS_PYTHON)", test_python());
    const char *dir = test_tmpdir();
    char cmd[2048], path[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/sh && %s tests/ref/fake_dino_ckpt.py %s/sh %u && %s tools/dino_to_safetensors.py --max-shard-mib 0.25 %s/sh/dino.pth %s/sh/m.safetensors > /dev/null",
             dir, test_python(), dir, (unsigned)time(NULL), test_python(), dir, dir);
    REQUIRE(system(cmd) == 0, "conversion failed: %s", cmd);
    int m = 0;
    for (int k = 2; k < 100 && !m; k++) {
        snprintf(path, sizeof path, "%s/sh/m-00001-of-%05d.safetensors", dir, k);
        FILE *f = fopen(path, "rb");
        if (f) m = k, fclose(f);
    }
    REQUIRE(m >= 2, "no shards written in %s/sh", dir);
    for (int i = 1; i <= m; i++) {
        char p[600];
        struct stat st;
        snprintf(p, sizeof p, "%s/sh/m-%05d-of-%05d.safetensors", dir, i, m);
        CHECK(stat(p, &st) == 0 && st.st_size <= (1 << 18), "%s: missing or over 0.25 MiB", p);
    }
    snprintf(path, sizeof path, "%s/sh/m-00001-of-%05d.safetensors", dir, m);
    ls_st_set set;
    ls_error err = {0};
    REQUIRE(ls_st_set_open_model(path, &set, &err) == LS_OK, "%s", err.msg);
    CHECK(set.nfiles == m, "%d of %d shards opened", set.nfiles, m);
    CHECK(ls_st_set_meta(&set, "arch") && strcmp(ls_st_set_meta(&set, "arch"), "custom") == 0, "arch metadata");
    ls_vit_config cfg = {.name = "custom", .depth = 2, .dim = 64, .heads = 2, .patch = 16, .mlp_hidden = 256, .pos_grid = 14, .eps = 1e-6f};
    ls_backend be;
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 1, &err) == LS_OK, "%s", err.msg);
    ls_vit v;
    REQUIRE(ls_vit_load(&v, &be, &cfg, ls_st_set_source, &set, &err) == LS_OK, "%s", err.msg);
    struct { const char *name; const float *got; size_t n; } t[] = {
        {"pos_embed", v.pos, 197 * 64}, {"blocks.1.attn.qkv.weight", v.blocks[1].qkv_w, 192 * 64}, {"norm.bias", v.norm_b, 64}};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/sh/%s.bin", dir, t[i].name);
        float *want = test_read_f32(path, t[i].n);
        REQUIRE(want, "missing %s", path);
        CHECK(memcmp(want, t[i].got, t[i].n * sizeof(float)) == 0, "%s differs from the checkpoint's teacher", t[i].name);
        free(want);
    }
    ls_vit_free(&v);
    ls_st_set_close(&set);
    ls_backend_free(&be);
}

int main(void) {
    RUN(convert_dino_checkpoint);
    RUN(convert_sharded);
    return test_summary();
}
