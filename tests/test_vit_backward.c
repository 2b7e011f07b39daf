/*
 * test_vit_backward.c — the ViT training pass (vit_train.c: ls_vit_forward_train, ls_vit_backward) against
 * PyTorch autograd (tests/ref/vit_bwd_ref.py, float64, fresh random weights, inputs and upstream gradients
 * every run, seed printed): a depth-2, width-64, 4-head, patch-8 ViT, batch 2, at 32x48 (a 4x6 token grid
 * from a 5x5 position table: the bicubic resize and its transpose, as a matrix) and at 40x40 (the native grid). For
 * L = sum(features * dF) + sum(cls * dC), and for the class token's term alone (DINO's loss, dF = NULL):
 * the forward outputs, the gradient of every weight tensor and of the input image.
 *
 * Tolerance: |c - r| <= 1e-4 * max(|r|, f) for every element, r the float64 answer (test_max_rel_err, as
 * test_vit.c), with the floor f = 0.1 * max(1, rms(r)) per tensor. The plain f = 0.1 of test_vit.c assumes
 * values of order 1; these gradients are sums over tokens with rms up to ~13 (max ~60) for N(0,1) upstream
 * gradients, and float32 cancellation leaves ~1e-6 of the tensor's rms on elements near zero: about 2e-4
 * under the plain floor, for us and for PyTorch's own float32 backward alike (both printed). Scaling the
 * floor with the tensor keeps the bound relative to what float32 can resolve; for gradients of order 1 it
 * is the plain floor. PyTorch's float32 gradients are measured against the same answer and printed beside.
 *
 * Needing no PyTorch: the training forward equals ls_vit_forward to 1e-5, central finite differences
 * of L on a tiny ViT agree with the backward for weights of every tensor and for image pixels, and the
 * resized position table (a GEMM with the resize's matrix) equals ls_bicubic_resize of the table and follows
 * the weights when told they changed.
 */
#include <time.h>

#include "ops.h"
#include "rng.h"
#include "test.h"
#include "vit.h"
#include "vit_internal.h"

typedef struct {
    const char *name;
    int depth, dim, heads, patch, grid, B, H, W;
} bwd_case;

static const bwd_case cases[] = {
    {"resized_32x48", 2, 64, 4, 8, 5, 2, 32, 48},
    {"native_40x40", 2, 64, 4, 8, 5, 2, 40, 40},
};
static const int ncases = (int)(sizeof cases / sizeof *cases);

static ls_vit_config config_of(int depth, int dim, int heads, int patch, int grid) {
    ls_vit_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "custom");
    c.depth = depth, c.dim = dim, c.heads = heads, c.patch = patch, c.mlp_hidden = 4 * dim, c.pos_grid = grid;
    c.eps = 1e-6f;
    return c;
}

/* One weight tensor of ls_vit: its name and place in m->params (and so in m->grads). */
typedef struct {
    char name[40];
    size_t off, n;
} tensor_ref;

static int param_table(const ls_vit *m, tensor_ref *t) {
    const ls_vit_config *c = &m->cfg;
    size_t D = (size_t)c->dim, P = (size_t)c->patch, G = (size_t)c->pos_grid, Hd = (size_t)c->mlp_hidden;
    int n = 0;
#define ADD(label, ptr, count) \
    (snprintf(t[n].name, sizeof t[n].name, "%s", label), t[n].off = (size_t)((ptr)-m->params), t[n++].n = (count))
    ADD("cls_token", m->cls, D);
    ADD("pos_embed", m->pos, (1 + G * G) * D);
    ADD("patch_embed.weight", m->patch_w, D * 3 * P * P);
    ADD("patch_embed.bias", m->patch_b, D);
    ADD("norm.weight", m->norm_w, D);
    ADD("norm.bias", m->norm_b, D);
    for (int i = 0; i < c->depth; i++) {
        const ls_vit_block *b = &m->blocks[i];
        const struct {
            const char *s;
            const float *p;
            size_t n;
        } bt[] = {{"norm1.w", b->ln1_w, D},   {"norm1.b", b->ln1_b, D},   {"qkv.w", b->qkv_w, 3 * D * D},
                  {"qkv.b", b->qkv_b, 3 * D}, {"proj.w", b->proj_w, D * D}, {"proj.b", b->proj_b, D},
                  {"norm2.w", b->ln2_w, D},   {"norm2.b", b->ln2_b, D},   {"fc1.w", b->fc1_w, Hd * D},
                  {"fc1.b", b->fc1_b, Hd},    {"fc2.w", b->fc2_w, D * Hd}, {"fc2.b", b->fc2_b, D}};
        for (size_t k = 0; k < sizeof bt / sizeof *bt; k++) {
            char label[40];
            snprintf(label, sizeof label, "blocks.%d.%s", i, bt[k].s);
            ADD(label, bt[k].p, bt[k].n);
        }
    }
#undef ADD
    return n;
}

/* ------------------------------------------------------------ against PyTorch */

static int make_reference(void) {
    unsigned seed = test_seed();
    char cmd[4096];
    int n = snprintf(cmd, sizeof cmd, "%s tests/ref/vit_bwd_ref.py %s %u", test_python(), test_tmpdir(), seed);
    for (int i = 0; i < ncases; i++) {
        const bwd_case *c = &cases[i];
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " %s:%d:%d:%d:%d:%d:%d:%d:%d", c->name, c->depth, c->dim,
                      c->heads, c->patch, c->grid, c->B, c->H, c->W);
    }
    return system(cmd) == 0;
}

static float *read_ref(const char *name, const char *what, size_t n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s.%s.bin", test_tmpdir(), name, what);
    return test_read_f32(path, n);
}

/* Root mean square of n floats, in double. */
static double rms_of(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return n ? sqrt(s / n) : 0;
}

/* Compares every weight tensor's gradient (and PyTorch's float32 one, when given, for scale) with the
 * floor 0.1 * max(1, rms of the tensor's reference); also prints the plain 0.1 floor's figure. */
static void check_grads(const ls_vit *m, const float *grads, const float *ref, const float *torch32, const char *what) {
    tensor_ref t[6 + 12 * 8];
    int nt = param_table(m, t);
    double worst = 0, worst_fixed = 0, worst32 = 0, worst32_fixed = 0, big = 0;
    const char *wname = "";
    for (int i = 0; i < nt; i++) {
        const float *c = grads + t[i].off, *r = ref + t[i].off;
        double rms = rms_of(r, t[i].n), floor = 0.1 * fmax(1.0, rms);
        double e = test_max_rel_err(c, r, t[i].n, floor);
        CHECK(e <= 1e-4, "%s: gradient of %s (rms %.3g): max rel err %.3e", what, t[i].name, rms, e);
        if (e >= worst) worst = e, wname = t[i].name;
        worst_fixed = fmax(worst_fixed, test_max_rel_err(c, r, t[i].n, 0.1));
        big = fmax(big, rms);
        if (torch32) {
            worst32 = fmax(worst32, test_max_rel_err(torch32 + t[i].off, r, t[i].n, floor));
            worst32_fixed = fmax(worst32_fixed, test_max_rel_err(torch32 + t[i].off, r, t[i].n, 0.1));
        }
    }
    printf("    %-4s weight gradients (rms up to %.3g): max rel err %.2e (worst tensor %s); with the floor 0.1: %.2e\n",
           what, big, worst, wname, worst_fixed);
    if (torch32) printf("         PyTorch float32 on the same measures: %.2e; with the floor 0.1: %.2e\n", worst32, worst32_fixed);
}

typedef struct {
    float *in, *dfeat, *dcls, *feat, *cls, *g_both, *di_both, *g_cls, *di_cls, *g32;
} ref_data;

static int load_ref(const bwd_case *c, const ls_vit *m, ref_data *r) {
    int gh = c->H / c->patch, gw = c->W / c->patch;
    size_t nin = (size_t)c->B * 3 * c->H * c->W, nf = (size_t)c->B * c->dim * gh * gw, nc = (size_t)c->B * c->dim;
    r->in = read_ref(c->name, "in", nin), r->dfeat = read_ref(c->name, "dfeat", nf);
    r->dcls = read_ref(c->name, "dcls", nc), r->feat = read_ref(c->name, "feat", nf), r->cls = read_ref(c->name, "cls", nc);
    r->g_both = read_ref(c->name, "grads_both", m->nparams), r->di_both = read_ref(c->name, "dimg_both", nin);
    r->g_cls = read_ref(c->name, "grads_cls", m->nparams), r->di_cls = read_ref(c->name, "dimg_cls", nin);
    r->g32 = read_ref(c->name, "grads32", m->nparams);
    return r->in && r->dfeat && r->dcls && r->feat && r->cls && r->g_both && r->di_both && r->g_cls && r->di_cls && r->g32;
}

static void free_ref(ref_data *r) {
    free(r->in), free(r->dfeat), free(r->dcls), free(r->feat), free(r->cls);
    free(r->g_both), free(r->di_both), free(r->g_cls), free(r->di_cls), free(r->g32);
}

/* Forward, then backward with (dF, dC) and with (NULL, dC), each from zeroed gradients. */
static void run_case(ls_backend *be, const bwd_case *c) {
    ls_error err = {0};
    ls_vit_config cfg = config_of(c->depth, c->dim, c->heads, c->patch, c->grid);
    char path[700];
    snprintf(path, sizeof path, "%s/%s.safetensors", test_tmpdir(), c->name);
    ls_st_file st;
    REQUIRE(ls_st_open(path, &st, &err) == LS_OK, "%s", err.msg);
    ls_vit m;
    ls_status s = ls_vit_load(&m, be, &cfg, ls_st_source, &st, &err);
    ls_st_close(&st);
    REQUIRE(s == LS_OK, "%s: %s", c->name, err.msg);
    ref_data r;
    int have = load_ref(c, &m, &r);
    size_t nin = (size_t)c->B * 3 * c->H * c->W, nf = (size_t)c->B * c->dim * (c->H / c->patch) * (c->W / c->patch);
    size_t nc = (size_t)c->B * c->dim;
    float *feat = malloc(nf * sizeof(float)), *cls = malloc(nc * sizeof(float)), *dimg = malloc(nin * sizeof(float));
    ls_arena arena;
    ls_vit_acts acts;
    if (!have || ls_vit_alloc_grads(&m, &err) ||
        ls_arena_init(&arena, be, ls_vit_train_arena_floats(&cfg, c->B, c->H, c->W) * sizeof(float), &err)) {
        CHECK(0, "%s: reference files missing or setup failed (%s)", c->name, err.msg);
        goto done;
    }
    REQUIRE(ls_vit_forward_train(&m, &arena, &acts, r.in, c->B, c->H, c->W, feat, cls, &err) == LS_OK, "%s", err.msg);
    double ef = test_max_rel_err(feat, r.feat, nf, 0.1), ec = test_max_rel_err(cls, r.cls, nc, 0.1);
    printf("  %s (depth %d, D %d, %d heads, patch %d, %dx%d from a %dx%d table, batch %d)\n", c->name, c->depth,
           c->dim, c->heads, c->patch, c->H / c->patch, c->W / c->patch, c->grid, c->grid, c->B);
    printf("    forward: max rel err features %.2e, class token %.2e\n", ef, ec);
    CHECK(ef <= 1e-4 && ec <= 1e-4, "%s: forward max rel err %.3e / %.3e", c->name, ef, ec);
    size_t used = arena.used;
    REQUIRE(ls_vit_backward(&m, &arena, &acts, r.dfeat, r.dcls, dimg, &err) == LS_OK, "%s", err.msg);
    check_grads(&m, m.grads, r.g_both, r.g32, "both");
    double ei = test_max_rel_err(dimg, r.di_both, nin, 0.1 * fmax(1.0, rms_of(r.di_both, nin)));
    printf("    both image gradient (rms %.3g): max rel err %.2e\n", rms_of(r.di_both, nin), ei);
    CHECK(ei <= 1e-4, "%s: image gradient max rel err %.3e", c->name, ei);

    /* DINO's case: only the class token carries a gradient. */
    arena.used = used;
    REQUIRE(ls_vit_alloc_grads(&m, &err) == LS_OK, "%s", err.msg); /* zeroes */
    REQUIRE(ls_vit_backward(&m, &arena, &acts, NULL, r.dcls, dimg, &err) == LS_OK, "%s", err.msg);
    check_grads(&m, m.grads, r.g_cls, NULL, "cls");
    ei = test_max_rel_err(dimg, r.di_cls, nin, 0.1 * fmax(1.0, rms_of(r.di_cls, nin)));
    printf("    cls  image gradient (rms %.3g): max rel err %.2e\n", rms_of(r.di_cls, nin), ei);
    CHECK(ei <= 1e-4, "%s: class-token image gradient max rel err %.3e", c->name, ei);
    ls_arena_free(&arena);
done:
    free(feat), free(cls), free(dimg);
    free_ref(&r);
    ls_vit_free(&m);
}

TEST(backward_matches_pytorch) {
    if (!test_python_has("torch")) SKIP("%s cannot import torch (install python3-torch or set LS_PYTHON)", test_python());
    REQUIRE(make_reference(), "tests/ref/vit_bwd_ref.py failed");
    ls_backend be;
    ls_error err = {0};
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 2, &err) == LS_OK, "%s", err.msg);
    for (int i = 0; i < ncases; i++) run_case(&be, &cases[i]);
    ls_backend_free(&be);
}

/* ------------------------------------------------------------ without PyTorch */

/* A tensor source of random weights: LayerNorm weights near 1, the rest normal with a per-name scale. */
static int random_source(void *ctx, const char *name, float *dst, size_t numel, ls_error *err) {
    (void)err;
    ls_rng *r = ctx;
    int ln_w = strstr(name, "norm") && strstr(name, "weight");
    double std = strstr(name, "pos_embed") || strstr(name, "cls_token") ? 0.5 : strstr(name, "bias") ? 0.1 : 0.3;
    for (size_t i = 0; i < numel; i++) dst[i] = (float)((ln_w ? 1.0 : 0.0) + (ln_w ? 0.1 : std) * ls_rng_normal(r));
    return LS_OK;
}

typedef struct {
    ls_vit m;
    ls_arena arena;
    ls_vit_acts acts;
    int B, H, W;
    size_t nf, nc;
    float *in, *dfeat, *dcls, *feat, *cls;
} tiny_vit;

/* L = sum(features * dF) + sum(cls * dC), in double, from a fresh training forward. */
static double tiny_loss(tiny_vit *t) {
    ls_error err = {0};
    ls_arena_reset(&t->arena);
    if (ls_vit_forward_train(&t->m, &t->arena, &t->acts, t->in, t->B, t->H, t->W, t->feat, t->cls, &err)) return NAN;
    double l = 0;
    for (size_t i = 0; i < t->nf; i++) l += (double)t->feat[i] * t->dfeat[i];
    for (size_t i = 0; i < t->nc; i++) l += (double)t->cls[i] * t->dcls[i];
    return l;
}

/* Central difference of L in one float (a weight or a pixel). */
static double central_diff(tiny_vit *t, float *x, float h) {
    float keep = *x;
    *x = keep + h;
    double lp = tiny_loss(t);
    *x = keep - h;
    double lm = tiny_loss(t);
    *x = keep;
    return (lp - lm) / (2.0 * h);
}

/* A depth-2, width-16 ViT, 8x12 input (a 2x3 grid resized from 3x3): every weight tensor gets 3 probes
 * (first, middle, last element), plus 8 image pixels. The training forward must also reproduce
 * ls_vit_forward to float32 rounding. */
TEST(finite_differences) {
    ls_backend be;
    ls_error err = {0};
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 1, &err) == LS_OK, "%s", err.msg);
    tiny_vit t = {.B = 2, .H = 8, .W = 12};
    ls_vit_config cfg = config_of(2, 16, 2, 4, 3);
    ls_rng rng = {12345};
    REQUIRE(ls_vit_load(&t.m, &be, &cfg, random_source, &rng, &err) == LS_OK, "%s", err.msg);
    size_t nin = (size_t)t.B * 3 * t.H * t.W;
    t.nf = (size_t)t.B * cfg.dim * (t.H / cfg.patch) * (t.W / cfg.patch), t.nc = (size_t)t.B * cfg.dim;
    t.in = malloc(nin * sizeof(float)), t.dfeat = malloc(t.nf * sizeof(float)), t.dcls = malloc(t.nc * sizeof(float));
    t.feat = malloc(t.nf * sizeof(float)), t.cls = malloc(t.nc * sizeof(float));
    float *ref = malloc(t.nf * sizeof(float)), *dimg = malloc(nin * sizeof(float));
    for (size_t i = 0; i < nin; i++) t.in[i] = (float)ls_rng_normal(&rng);
    for (size_t i = 0; i < t.nf; i++) t.dfeat[i] = (float)ls_rng_normal(&rng);
    for (size_t i = 0; i < t.nc; i++) t.dcls[i] = (float)ls_rng_normal(&rng);
    REQUIRE(ls_arena_init(&t.arena, &be, ls_vit_train_arena_floats(&cfg, t.B, t.H, t.W) * sizeof(float), &err) == LS_OK,
            "%s", err.msg);
    REQUIRE(ls_vit_forward(&t.m, &t.arena, t.in, t.B, t.H, t.W, ref, NULL, &err) == LS_OK, "%s", err.msg);
    double l0 = tiny_loss(&t);
    /* The inference forward fuses attention and adds biases ahead of its GEMMs, so the two round differently;
     * they must agree to float32 rounding of this small model's features. */
    double fe = test_max_rel_err(t.feat, ref, t.nf, 0.1);
    CHECK(fe <= 1e-5, "training forward differs from ls_vit_forward by %.2e relative", fe);
    REQUIRE(ls_vit_alloc_grads(&t.m, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_vit_backward(&t.m, &t.arena, &t.acts, t.dfeat, t.dcls, dimg, &err) == LS_OK, "%s", err.msg);

    tensor_ref tab[6 + 12 * 2];
    int nt = param_table(&t.m, tab);
    const float h = 1e-2f;
    double worst = 0;
    char wname[64] = "";
    for (int i = 0; i < nt; i++)
        for (int j = 0; j < 3; j++) {
            size_t k = tab[i].off + (j == 0 ? 0 : j == 1 ? tab[i].n / 2 : tab[i].n - 1);
            double fd = central_diff(&t, t.m.params + k, h), an = t.m.grads[k];
            double e = fabs(fd - an) / fmax(fabs(an), 1.0);
            if (e > worst) worst = e, snprintf(wname, sizeof wname, "%.39s[%zu]", tab[i].name, k - tab[i].off);
        }
    for (size_t p = 0; p < nin; p += nin / 8) {
        double fd = central_diff(&t, t.in + p, h), e = fabs(fd - dimg[p]) / fmax(fabs(dimg[p]), 1.0);
        if (e > worst) worst = e, snprintf(wname, sizeof wname, "image[%zu]", p);
    }
    printf("  finite differences (h = %g, L = %.3f): max |fd - backward| / max(|backward|, 1) = %.2e at %s\n", h, l0,
           worst, wname);
    CHECK(worst <= 2e-3, "finite differences disagree with the backward by %.3e at %s", worst, wname);
    ls_arena_free(&t.arena);
    free(t.in), free(t.dfeat), free(t.dcls), free(t.feat), free(t.cls), free(ref), free(dimg);
    ls_vit_free(&t.m);
    ls_backend_free(&be);
}

/* The resize of the table on the host, [1 + oh*ow, D], for comparison with ls_vit_positions. */
static void host_positions(const ls_vit *m, int oh, int ow, float *out) {
    int G = m->cfg.pos_grid, D = m->cfg.dim, N = oh * ow;
    float *chw = malloc((size_t)G * G * D * sizeof(float)), *rs = malloc((size_t)N * D * sizeof(float));
    for (int t = 0; t < G * G; t++)
        for (int d = 0; d < D; d++) chw[(size_t)d * G * G + t] = m->pos[(size_t)(1 + t) * D + d];
    ls_bicubic_resize(chw, D, G, G, rs, oh, ow);
    memcpy(out, m->pos, (size_t)D * sizeof(float));
    for (int t = 0; t < N; t++)
        for (int d = 0; d < D; d++) out[(size_t)(1 + t) * D + d] = rs[(size_t)d * N + t];
    free(chw), free(rs);
}

/* ls_vit_positions (the resize as a matrix, a GEMM) against ls_bicubic_resize of the table, up and down,
 * across grid changes; after the weights change it keeps the cached table until ls_vit_params_changed. */
TEST(positions_follow_weights) {
    ls_backend be;
    ls_error err = {0};
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 1, &err) == LS_OK, "%s", err.msg);
    ls_vit m;
    ls_vit_config cfg = config_of(1, 16, 2, 4, 5);
    ls_rng rng = {424242};
    REQUIRE(ls_vit_load(&m, &be, &cfg, random_source, &rng, &err) == LS_OK, "%s", err.msg);
    static const int grids[][2] = {{4, 6}, {7, 3}, {4, 6}, {2, 2}};
    float want[(1 + 7 * 6) * 16];
    const float *pos;
    for (int k = 0; k < 4; k++) {
        int oh = grids[k][0], ow = grids[k][1];
        size_t n = (size_t)(1 + oh * ow) * 16;
        REQUIRE(ls_vit_positions(&m, oh, ow, &pos, &err) == LS_OK, "%s", err.msg);
        host_positions(&m, oh, ow, want);
        double e = test_max_rel_err(pos, want, n, 0.1);
        CHECK(e <= 1e-6, "%dx%d: resized table max rel err %.3e", oh, ow, e);
        for (size_t i = 0; i < (size_t)(1 + 5 * 5) * 16; i++) m.pos[i] += 0.5f; /* an optimiser step */
        REQUIRE(ls_vit_positions(&m, oh, ow, &pos, &err) == LS_OK, "%s", err.msg);
        CHECK(test_max_rel_err(pos, want, n, 0.1) <= 1e-6, "%dx%d: the cached table changed without notice", oh, ow);
        ls_vit_params_changed(&m);
        REQUIRE(ls_vit_positions(&m, oh, ow, &pos, &err) == LS_OK, "%s", err.msg);
        host_positions(&m, oh, ow, want);
        e = test_max_rel_err(pos, want, n, 0.1);
        CHECK(e <= 1e-6, "%dx%d after the weights changed: max rel err %.3e", oh, ow, e);
    }
    REQUIRE(ls_vit_positions(&m, 5, 5, &pos, &err) == LS_OK && pos == m.pos, "the native grid is not the table");
    ls_vit_free(&m);
    ls_backend_free(&be);
}

int main(void) {
    RUN(backward_matches_pytorch);
    RUN(finite_differences);
    RUN(positions_follow_weights);
    return test_summary();
}
