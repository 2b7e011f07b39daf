/*
 * test_vit.c — the ViT forward against PyTorch (tests/ref/vit_ref.py, float64, fresh random weights
 * every run) for ViT-S/16 and ViT-S/8 at 224x224 and at 256x320 (resized position embeddings), batch 2,
 * weights under timm and Hugging Face names; plus the weight loader's errors.
 *
 * Tolerance: every output element within 1e-4 relative, |c - r| <= 1e-4 * max(|r|, 0.1), r the float64
 * answer. The features leave a LayerNorm (mean |r| about 0.8); below 0.1 the bound becomes an absolute
 * 1e-5, since float32 through 12 blocks leaves about 2e-6 of absolute error on every element whatever
 * its size. PyTorch's own float32 forward is measured against the same answer and printed beside ours.
 */
#include <time.h>

#include "ops.h"
#include "test.h"
#include "vit.h"

typedef struct {
    const char *name, *preset, *naming;
    int B, H, W;
} vit_case;

static const vit_case cases[] = {
    {"s16_224", "vits16", "timm", 2, 224, 224},
    {"s16_256x320", "vits16", "hf", 2, 256, 320},
    {"s8_224", "vits8", "hf", 2, 224, 224},
    {"s8_256x320", "vits8", "timm", 2, 256, 320},
};
static const int ncases = (int)(sizeof cases / sizeof *cases);
static int ref_ready;

static void make_reference(void) {
    unsigned seed = test_seed();
    char cmd[4096];
    int n = snprintf(cmd, sizeof cmd, "%s tests/ref/vit_ref.py %s %u", test_python(), test_tmpdir(), seed);
    for (int i = 0; i < ncases; i++)
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " %s:%s:%d:%d:%d:%s", cases[i].name, cases[i].preset, cases[i].B,
                      cases[i].H, cases[i].W, cases[i].naming);
    ref_ready = system(cmd) == 0;
}

static void run_case(const vit_case *c) {
    ls_backend be;
    ls_error err = {0};
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 2, &err) == LS_OK, "%s", err.msg);
    ls_vit_config cfg;
    REQUIRE(ls_vit_config_preset(c->preset, &cfg, &err) == LS_OK, "%s", err.msg);
    char path[700];
    snprintf(path, sizeof path, "%s/%s.safetensors", test_tmpdir(), c->name);
    ls_st_file st;
    REQUIRE(ls_st_open(path, &st, &err) == LS_OK, "%s", err.msg);
    ls_vit m;
    ls_status s = ls_vit_load(&m, &be, &cfg, ls_st_source, &st, &err);
    ls_st_close(&st);
    REQUIRE(s == LS_OK, "%s: %s", c->name, err.msg);
    int gh = c->H / cfg.patch, gw = c->W / cfg.patch;
    size_t nin = (size_t)c->B * 3 * c->H * c->W, nout = (size_t)c->B * cfg.dim * gh * gw;
    snprintf(path, sizeof path, "%s/%s.in.bin", test_tmpdir(), c->name);
    float *in = test_read_f32(path, nin);
    snprintf(path, sizeof path, "%s/%s.feat.bin", test_tmpdir(), c->name);
    float *ref = test_read_f32(path, nout);
    snprintf(path, sizeof path, "%s/%s.keys.bin", test_tmpdir(), c->name);
    float *refk = test_read_f32(path, nout);
    snprintf(path, sizeof path, "%s/%s.feat32.bin", test_tmpdir(), c->name);
    float *torch32 = test_read_f32(path, nout);
    float *feat = malloc(nout * sizeof(float)), *keys = malloc(nout * sizeof(float));
    ls_arena arena;
    REQUIRE(in && ref && refk && torch32, "%s: reference files missing", c->name);
    REQUIRE(ls_arena_init(&arena, &be, ls_vit_arena_floats(&cfg, c->B, c->H, c->W) * sizeof(float), &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_vit_forward(&m, &arena, in, c->B, c->H, c->W, feat, keys, &err) == LS_OK, "%s", err.msg);
    double ef = test_max_rel_err(feat, ref, nout, 0.1), ek = test_max_rel_err(keys, refk, nout, 0.1);
    double et = test_max_rel_err(torch32, ref, nout, 0.1);
    printf("  %s (%s, %s names, %dx%dx%d): max rel err features %.2e (PyTorch float32: %.2e), keys %.2e\n", c->name,
           c->preset, c->naming, c->B, c->H, c->W, ef, et, ek);
    CHECK(ef <= 1e-4, "%s: features max rel err %.3e", c->name, ef);
    CHECK(ek <= 1e-4, "%s: keys max rel err %.3e", c->name, ek);
    /* A second call reuses the cached position embeddings and must agree exactly. */
    ls_arena_reset(&arena);
    REQUIRE(ls_vit_forward(&m, &arena, in, c->B, c->H, c->W, keys, NULL, &err) == LS_OK, "%s", err.msg);
    CHECK(memcmp(keys, feat, nout * sizeof(float)) == 0, "%s: second forward differs", c->name);
    ls_arena_free(&arena);
    free(in), free(ref), free(refk), free(torch32), free(feat), free(keys);
    ls_vit_free(&m);
    ls_backend_free(&be);
}

TEST(vit_matches_pytorch) {
    if (!test_python_has("torch")) SKIP("%s cannot import torch (install python3-torch or set LS_PYTHON)", test_python());
    make_reference();
    REQUIRE(ref_ready, "tests/ref/vit_ref.py failed");
    for (int i = 0; i < ncases; i++) run_case(&cases[i]);
}

/* Errors name the tensor: missing, wrong size, wrong architecture, wrong input size. */
TEST(load_errors) {
    if (!ref_ready) SKIP("no reference weights (PyTorch unavailable)");
    ls_backend be;
    ls_error err = {0};
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 1, &err) == LS_OK, "%s", err.msg);
    char path[700];
    snprintf(path, sizeof path, "%s/s16_224.safetensors", test_tmpdir());
    ls_st_file st;
    REQUIRE(ls_st_open(path, &st, &err) == LS_OK, "%s", err.msg);
    ls_vit_config cfg;
    ls_vit m;
    ls_vit_config_preset("vitb16", &cfg, &err);
    CHECK(ls_vit_load(&m, &be, &cfg, ls_st_source, &st, &err) == LS_ERR_INPUT && strstr(err.msg, "cls_token"),
          "ViT-B/16 config on ViT-S/16 weights: %s", err.msg);
    /* Rename one tensor so it goes missing. */
    ls_vit_config_preset("vits16", &cfg, &err);
    ls_st_tensor *t = (ls_st_tensor *)ls_st_find(&st, "blocks.7.mlp.fc2.bias");
    REQUIRE(t != NULL, "tensor not found in reference file");
    t->name[0] = 'X';
    CHECK(ls_vit_load(&m, &be, &cfg, ls_st_source, &st, &err) == LS_ERR_INPUT && strstr(err.msg, "blocks.7.mlp.fc2.bias"),
          "missing tensor: %s", err.msg);
    t->name[0] = 'b';
    REQUIRE(ls_vit_load(&m, &be, &cfg, ls_st_source, &st, &err) == LS_OK, "%s", err.msg);
    ls_arena arena;
    REQUIRE(ls_arena_init(&arena, &be, 1 << 20, &err) == LS_OK, "%s", err.msg);
    float dummy[3];
    CHECK(ls_vit_forward(&m, &arena, dummy, 1, 100, 224, dummy, NULL, &err) == LS_ERR_INPUT && strstr(err.msg, "100x224"),
          "input not a multiple of the patch: %s", err.msg);
    ls_arena_free(&arena);
    ls_vit_free(&m);
    ls_st_close(&st);
    CHECK(ls_vit_config_preset("vit_huge", &cfg, &err) == LS_ERR_INPUT && strstr(err.msg, "vit_huge"), "preset: %s", err.msg);
    ls_backend_free(&be);
}

int main(void) {
    RUN(vit_matches_pytorch);
    RUN(load_errors);
    return test_summary();
}
