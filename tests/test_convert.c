/*
 * test_convert.c — tools/dino_to_safetensors.py on a DINO-style training checkpoint (prefixed keys,
 * teacher and student, a projection head): the result loads as a teacher with a custom configuration
 * and carries the teacher's values; the head is dropped; a non-checkpoint gives one clear line. Then
 * tools/safetensors_to_f16.py: its shards load as the same teacher to F16's rounding, and a value beyond
 * F16's range stops it with one line.
 */
#include <math.h>
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
             test_python(), dir, test_seed(), test_python(), dir, dir);
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
/* M when STEM-00001-of-0000M.safetensors exists (M from 2 to 99), else 0. */
static int shard_count(const char *stem) {
    for (int k = 2; k < 100; k++) {
        char path[700];
        struct stat st;
        snprintf(path, sizeof path, "%s-00001-of-%05d.safetensors", stem, k);
        if (stat(path, &st) == 0) return k;
    }
    return 0;
}

/* Opens the (sharded) model at `first` as the fake checkpoint's teacher and compares three of its tensors with
 * the checkpoint's values in dir/NAME.bin: |got - want| <= rel |want| + abs (0, 0: equal). */
static void check_teacher(const char *first, const char *dir, double rel, double abs, int nfiles) {
    ls_st_set set;
    ls_error err = {0};
    REQUIRE(ls_st_set_open_model(first, &set, &err) == LS_OK, "%s", err.msg);
    CHECK(set.nfiles == nfiles, "%d of %d shards opened", set.nfiles, nfiles);
    CHECK(ls_st_set_meta(&set, "arch") && strcmp(ls_st_set_meta(&set, "arch"), "custom") == 0, "arch metadata");
    ls_vit_config cfg = {.name = "custom", .depth = 2, .dim = 64, .heads = 2, .patch = 16, .mlp_hidden = 256, .pos_grid = 14, .eps = 1e-6f};
    ls_backend be;
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 1, &err) == LS_OK, "%s", err.msg);
    ls_vit v;
    REQUIRE(ls_vit_load(&v, &be, &cfg, ls_st_set_source, &set, &err) == LS_OK, "%s", err.msg);
    struct { const char *name; const float *got; size_t n; } t[] = {
        {"pos_embed", v.pos, 197 * 64}, {"blocks.1.attn.qkv.weight", v.blocks[1].qkv_w, 192 * 64}, {"norm.bias", v.norm_b, 64}};
    for (int i = 0; i < 3; i++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s.bin", dir, t[i].name);
        float *want = test_read_f32(path, t[i].n);
        REQUIRE(want, "missing %s", path);
        double worst = 0;
        for (size_t j = 0; j < t[i].n; j++) {
            double e = fabs((double)t[i].got[j] - want[j]) - (rel * fabs(want[j]) + abs);
            worst = e > worst ? e : worst;
        }
        CHECK(worst <= 0, "%s: off the checkpoint's values by %.3g beyond the bound", t[i].name, worst);
        free(want);
    }
    ls_vit_free(&v);
    ls_st_set_close(&set);
    ls_backend_free(&be);
}

TEST(convert_sharded) {
    if (!test_python_has("torch")) SKIP("%s cannot import torch (install python3-torch or set LS_PYTHON)", test_python());
    const char *dir = test_tmpdir();
    char cmd[2048], path[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/sh && %s tests/ref/fake_dino_ckpt.py %s/sh %u && %s tools/dino_to_safetensors.py --max-shard-mib 0.25 %s/sh/dino.pth %s/sh/m.safetensors > /dev/null",
             dir, test_python(), dir, test_seed(), test_python(), dir, dir);
    REQUIRE(system(cmd) == 0, "conversion failed: %s", cmd);
    snprintf(path, sizeof path, "%s/sh/m", dir);
    int m = shard_count(path);
    REQUIRE(m >= 2, "no shards written in %s/sh", dir);
    for (int i = 1; i <= m; i++) {
        char p[600];
        struct stat st;
        snprintf(p, sizeof p, "%s/sh/m-%05d-of-%05d.safetensors", dir, i, m);
        CHECK(stat(p, &st) == 0 && st.st_size <= (1 << 18), "%s: missing or over 0.25 MiB", p);
    }
    snprintf(path, sizeof path, "%s/sh/m-00001-of-%05d.safetensors", dir, m);
    char bins[600];
    snprintf(bins, sizeof bins, "%s/sh", dir);
    check_teacher(path, bins, 0, 0, m);
}

/* tools/safetensors_to_f16.py on a converted checkpoint, in shards of at most 0.1 MiB. */
TEST(convert_to_f16) {
    if (!test_python_has("torch")) SKIP("%s cannot import torch (install python3-torch or set LS_PYTHON)", test_python());
    const char *dir = test_tmpdir();
    char cmd[2048], path[600];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/h && %s tests/ref/fake_dino_ckpt.py %s/h %u && %s tools/dino_to_safetensors.py %s/h/dino.pth %s/h/f32.safetensors > /dev/null"
             " && %s tools/safetensors_to_f16.py %s/h/f32.safetensors %s/h/f16.safetensors --max-mib 0.1 > /dev/null",
             dir, test_python(), dir, test_seed(), test_python(), dir, dir, test_python(), dir, dir);
    REQUIRE(system(cmd) == 0, "conversion failed: %s", cmd);
    snprintf(path, sizeof path, "%s/h/f16", dir);
    int m = shard_count(path);
    REQUIRE(m >= 2, "no F16 shards written in %s/h", dir);
    snprintf(path, sizeof path, "%s/h/f16-00001-of-%05d.safetensors", dir, m);
    ls_st_set set;
    ls_error err = {0};
    REQUIRE(ls_st_set_open_model(path, &set, &err) == LS_OK, "%s", err.msg);
    const ls_st_tensor *qkv = ls_st_set_find(&set, "blocks.1.attn.qkv.weight", NULL);
    CHECK(qkv && qkv->dtype == LS_ST_F16, "qkv weight not stored as F16");
    ls_st_set_close(&set);
    /* round to nearest F16: relative error <= 2^-11 for normal values, 2^-25 absolute below them */
    char bins[600];
    snprintf(bins, sizeof bins, "%s/h", dir);
    check_teacher(path, bins, 0x1p-11, 0x1p-25, m);
    struct stat st;
    /* a value F16 cannot hold */
    snprintf(cmd, sizeof cmd,
             "cd tools && %s -c 'import sys; from safetensors_write import write_safetensors as w; w(sys.argv[1], {\"big\": [1.0, 1e5]})' %s/h/big.safetensors"
             " && cd .. && %s tools/safetensors_to_f16.py %s/h/big.safetensors %s/h/big16.safetensors > %s/h/big.txt 2>&1",
             test_python(), dir, test_python(), dir, dir, dir);
    CHECK(system(cmd) != 0, "a value of 1e5 was converted to F16");
    snprintf(path, sizeof path, "%s/h/big16.safetensors", dir);
    CHECK(stat(path, &st) != 0, "%s written despite the failure", path);
    snprintf(cmd, sizeof cmd, "grep -q \"tensor big has values beyond F16's range\" %s/h/big.txt", dir);
    CHECK(system(cmd) == 0, "no clear message in %s/h/big.txt", dir);
}

int main(void) {
    RUN(convert_dino_checkpoint);
    RUN(convert_sharded);
    RUN(convert_to_f16);
    return test_summary();
}
