/*
 * test_nn.c — the convolutional ops (ops_nn.h), forward and backward, against PyTorch autograd
 * (tests/ref/nn_ref.py, float64, fresh random inputs every run): conv2d 3x3, 5x5 and 1x1 with and without
 * bias (the direct kernel of every vector extension this CPU has), batch norm in training (outputs,
 * gradients, running statistics) and evaluation, ReLU with channel dropout, x2 bilinear upsampling, concatenation; plus a finite-difference check that needs no PyTorch.
 *
 * Tolerance: |c - r| <= 1e-4 * max(|r|, 0.1) for every element (r the float64 answer; values are of
 * order 1, so below 0.1 the bound is an absolute 1e-5). The 1x1 batch-norm case uses 4 images: with 2,
 * each channel normalises to +-1 whatever its values, the input gradient is a cancellation to ~0, and
 * float32 cannot meet an absolute 1e-5 on it. Convolution outputs sum up to Ci*K*K = 1260 products here,
 * weight and bias gradients up to B*H*W = 3220; for them the bound is the larger of that and 1e-5 of the
 * sum of absolute products (expect_conv_close, expect_dw_close, expect_db_close).
 */
#include <math.h>
#include <time.h>

#include "cpu_conv.h"
#include "ops.h"
#include "test.h"

static ls_backend be;

static float *load(const char *cas, const char *t, size_t n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s.%s.bin", test_tmpdir(), cas, t);
    return test_read_f32(path, n);
}

static void expect_close(const char *what, const float *got, const float *ref, size_t n) {
    double e = test_max_rel_err(got, ref, n, 0.1);
    CHECK(e <= 1e-4, "%s: max rel err %.3e", what, e);
}

/* A convolution output sums Ci*K*K products; float32 leaves an error that grows with their absolute sum S,
 * not with the (possibly cancelled) result. Each element must meet 1e-4 * max(|r|, 0.1) or, when the sum is
 * long, 1e-5 * S (about 150 float32 roundings of its largest possible size). S is the same convolution of
 * |x| with |w| and |b|. */
static void expect_conv_close(const char *what, const float *got, const float *ref, const float *x, const float *w,
                              const float *b, int B, int Ci, int Co, int H, int W, int K) {
    size_t nx = (size_t)B * Ci * H * W, nw = (size_t)Co * Ci * K * K, ny = (size_t)B * Co * H * W;
    float *ax = malloc(nx * sizeof(float)), *aw = malloc(nw * sizeof(float)), *ab = b ? malloc(Co * sizeof(float)) : NULL;
    float *S = malloc(ny * sizeof(float)), *ws = calloc(be.nn->conv2d_workspace(Ci, H, W, Co, K) + 1, sizeof(float));
    for (size_t i = 0; i < nx; i++) ax[i] = fabsf(x[i]);
    for (size_t i = 0; i < nw; i++) aw[i] = fabsf(w[i]);
    for (int i = 0; b && i < Co; i++) ab[i] = fabsf(b[i]);
    be.nn->conv2d_fwd(&be, S, ax, aw, ab, B, Ci, H, W, Co, K, ws);
    double worst = 0;
    for (size_t i = 0; i < ny; i++) {
        double d = fabs((double)got[i] - ref[i]);
        double bound = fmax(1e-4 * fmax(fabs(ref[i]), 0.1), 1e-5 * S[i]);
        worst = fmax(worst, d / bound);
    }
    CHECK(worst <= 1, "%s: error %.2f times its bound (max rel err %.3e)", what, worst,
          test_max_rel_err(got, ref, ny, 0.1));
    free(ax), free(aw), free(ab), free(S), free(ws);
}

/* The weight gradient sums B*H*W products: the same bound with S the weight gradient of |x| and |dy|. */
static void expect_dw_close(const char *what, const float *got, const float *ref, const float *x, const float *g,
                            const float *w, int B, int Ci, int Co, int H, int W, int K) {
    size_t nx = (size_t)B * Ci * H * W, ny = (size_t)B * Co * H * W, nw = (size_t)Co * Ci * K * K;
    float *ax = malloc(nx * sizeof(float)), *ag = malloc(ny * sizeof(float)), *S = calloc(nw, sizeof(float));
    float *ws = calloc(be.nn->conv2d_workspace(Ci, H, W, Co, K) + 1, sizeof(float));
    for (size_t i = 0; i < nx; i++) ax[i] = fabsf(x[i]);
    for (size_t i = 0; i < ny; i++) ag[i] = fabsf(g[i]);
    be.nn->conv2d_bwd(&be, NULL, S, NULL, ag, ax, w, B, Ci, H, W, Co, K, ws);
    double worst = 0;
    for (size_t i = 0; i < nw; i++)
        worst = fmax(worst, fabs((double)got[i] - ref[i]) / fmax(1e-4 * fmax(fabs(ref[i]), 0.1), 1e-5 * S[i]));
    CHECK(worst <= 1, "%s: error %.2f times its bound (max rel err %.3e)", what, worst,
          test_max_rel_err(got, ref, nw, 0.1));
    free(ax), free(ag), free(S), free(ws);
}

/* The bias gradient sums B*H*W values of dy: the same bound with S the sum of |dy| over the channel. */
static void expect_db_close(const char *what, const float *got, const float *ref, const float *g, int B, int Co, int HW) {
    double worst = 0;
    for (int o = 0; o < Co; o++) {
        double S = 0;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < HW; i++) S += fabs(g[((size_t)b * Co + o) * HW + i]);
        worst = fmax(worst, fabs((double)got[o] - ref[o]) / fmax(1e-4 * fmax(fabs(ref[o]), 0.1), 1e-5 * S));
    }
    CHECK(worst <= 1, "%s: error %.2f times its bound (max rel err %.3e)", what, worst,
          test_max_rel_err(got, ref, (size_t)Co, 0.1));
}

static void conv_case(const char *name, int B, int Ci, int Co, int H, int W, int K, int bias) {
    size_t nx = (size_t)B * Ci * H * W, ny = (size_t)B * Co * H * W, nw = (size_t)Co * Ci * K * K;
    float *x = load(name, "x", nx), *w = load(name, "w", nw), *g = load(name, "g", ny), *y = load(name, "y", ny);
    float *dx = load(name, "dx", nx), *dw = load(name, "dw", nw);
    float *b = bias ? load(name, "b", (size_t)Co) : NULL, *db = bias ? load(name, "db", (size_t)Co) : NULL;
    REQUIRE(x && w && g && y && dx && dw && (!bias || (b && db)), "%s: reference files missing", name);
    float *ws = calloc(be.nn->conv2d_workspace(Ci, H, W, Co, K) + 1, sizeof(float));
    float *cy = malloc(ny * sizeof(float)), *cdx = malloc(nx * sizeof(float)), *cdw = calloc(nw, sizeof(float));
    float *cdb = calloc((size_t)Co, sizeof(float));
    be.nn->conv2d_fwd(&be, cy, x, w, b, B, Ci, H, W, Co, K, ws);
    be.nn->conv2d_bwd(&be, cdx, cdw, bias ? cdb : NULL, g, x, w, B, Ci, H, W, Co, K, ws);
    char what[64];
    snprintf(what, sizeof what, "%s y", name), expect_conv_close(what, cy, y, x, w, b, B, Ci, Co, H, W, K);
    snprintf(what, sizeof what, "%s dx", name), expect_close(what, cdx, dx, nx);
    snprintf(what, sizeof what, "%s dw", name), expect_dw_close(what, cdw, dw, x, g, w, B, Ci, Co, H, W, K);
    if (bias) snprintf(what, sizeof what, "%s db", name), expect_db_close(what, cdb, db, g, B, Co, H * W);
    /* The direct kernels for lesser CPUs (AVX2, plain vectors), where this one runs them. */
    for (int level = 0; K > 1 && level < ls_cpu_vector_level(); level += level ? 1 : 2) {
        ls_cpu_conv_fwd(be.nthreads, level, cy, x, w, b, B, Ci, H, W, Co, K, ws);
        ls_cpu_conv_bwd_dx(be.nthreads, level, cdx, g, w, B, Ci, H, W, Co, K, ws);
        snprintf(what, sizeof what, "%s y (level %d)", name, level);
        expect_conv_close(what, cy, y, x, w, b, B, Ci, Co, H, W, K);
        snprintf(what, sizeof what, "%s dx (level %d)", name, level), expect_close(what, cdx, dx, nx);
    }
    /* Parameter gradients accumulate: a second backward doubles them. */
    be.nn->conv2d_bwd(&be, NULL, cdw, NULL, g, x, w, B, Ci, H, W, Co, K, ws);
    for (size_t i = 0; i < nw; i++) cdw[i] *= 0.5f;
    snprintf(what, sizeof what, "%s dw accumulated", name);
    expect_dw_close(what, cdw, dw, x, g, w, B, Ci, Co, H, W, K);
    free(x), free(w), free(g), free(y), free(dx), free(dw), free(b), free(db), free(ws), free(cy), free(cdx), free(cdw), free(cdb);
}

static void bn_case(const char *name, int B, int C, int H, int W) {
    size_t n = (size_t)B * C * H * W;
    int HW = H * W;
    float *x = load(name, "x", n), *gamma = load(name, "gamma", C), *beta = load(name, "beta", C);
    float *rm = load(name, "rm0", C), *rv = load(name, "rv0", C), *y = load(name, "y", n), *g = load(name, "g", n);
    float *dx = load(name, "dx", n), *dgamma = load(name, "dgamma", C), *dbeta = load(name, "dbeta", C);
    float *rm1 = load(name, "rm", C), *rv1 = load(name, "rv", C), *yeval = load(name, "yeval", n);
    REQUIRE(x && gamma && beta && rm && rv && y && g && dx && dgamma && dbeta && rm1 && rv1 && yeval, "%s: files missing", name);
    float *cy = malloc(n * sizeof(float)), *cdx = malloc(n * sizeof(float)), *mean = malloc(C * sizeof(float));
    float *rstd = malloc(C * sizeof(float)), *cdg = calloc(C, sizeof(float)), *cdb = calloc(C, sizeof(float));
    be.nn->batchnorm_fwd_train(&be, cy, mean, rstd, x, gamma, beta, rm, rv, B, C, HW, 0.1f, 1e-5f);
    be.nn->batchnorm_bwd(&be, cdx, cdg, cdb, g, x, mean, rstd, gamma, B, C, HW);
    char what[64];
    snprintf(what, sizeof what, "%s y", name), expect_close(what, cy, y, n);
    snprintf(what, sizeof what, "%s dx", name), expect_close(what, cdx, dx, n);
    snprintf(what, sizeof what, "%s dgamma", name), expect_close(what, cdg, dgamma, C);
    snprintf(what, sizeof what, "%s dbeta", name), expect_close(what, cdb, dbeta, C);
    snprintf(what, sizeof what, "%s running mean", name), expect_close(what, rm, rm1, C);
    snprintf(what, sizeof what, "%s running var", name), expect_close(what, rv, rv1, C);
    be.nn->batchnorm_fwd_eval(&be, cy, x, gamma, beta, rm, rv, B, C, HW, 1e-5f);
    snprintf(what, sizeof what, "%s eval", name), expect_close(what, cy, yeval, n);
    free(x), free(gamma), free(beta), free(rm), free(rv), free(y), free(g), free(dx), free(dgamma), free(dbeta);
    free(rm1), free(rv1), free(yeval), free(cy), free(cdx), free(mean), free(rstd), free(cdg), free(cdb);
}

static void up_case(const char *name, int B, int C, int H, int W) {
    size_t nx = (size_t)B * C * H * W, ny = nx * 4;
    float *x = load(name, "x", nx), *y = load(name, "y", ny), *g = load(name, "g", ny), *dx = load(name, "dx", nx);
    REQUIRE(x && y && g && dx, "%s: files missing", name);
    float *cy = malloc(ny * sizeof(float)), *cdx = malloc(nx * sizeof(float));
    be.nn->upsample2x_fwd(&be, cy, x, B, C, H, W);
    be.nn->upsample2x_bwd(&be, cdx, g, B, C, H, W);
    char what[64];
    snprintf(what, sizeof what, "%s y", name), expect_close(what, cy, y, ny);
    snprintf(what, sizeof what, "%s dx", name), expect_close(what, cdx, dx, nx);
    free(x), free(y), free(g), free(dx), free(cy), free(cdx);
}

TEST(layers_match_pytorch) {
    if (!test_python_has("torch")) SKIP("%s cannot import torch (install python3-torch or set LS_PYTHON)", test_python());
    unsigned seed = test_seed();
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s tests/ref/nn_ref.py %s %u", test_python(), test_tmpdir(), seed);
    REQUIRE(system(cmd) == 0, "reference failed: %s", cmd);
    conv_case("conv3", 2, 5, 7, 9, 11, 3, 1);
    conv_case("conv3nb", 3, 4, 6, 6, 5, 3, 0);
    conv_case("conv1", 3, 6, 4, 5, 8, 1, 1);
    conv_case("conv3big", 2, 16, 8, 14, 14, 3, 1);
    conv_case("conv3tiles", 1, 140, 4, 11, 12, 3, 1); /* two im2col tiles per image (cpu_conv.c) */
    conv_case("conv3wide", 2, 6, 13, 23, 70, 3, 1);  /* every block shape of the direct kernels */
    conv_case("conv5", 1, 3, 2, 40, 40, 5, 1);
    bn_case("bn", 3, 4, 5, 6);
    bn_case("bn1", 4, 3, 1, 1);
    up_case("up", 2, 3, 5, 7);
    up_case("up1", 1, 2, 1, 3);
    up_case("upwide", 1, 2, 3, 300); /* more than one 256-column segment (cpu_nn.c) */
    /* ReLU then channel dropout, and their backward, in place. */
    size_t n = 2 * 6 * 4 * 5;
    float *x = load("relu_drop", "x", n), *keep = load("relu_drop", "keep", 12), *y = load("relu_drop", "y", n);
    float *g = load("relu_drop", "g", n), *dx = load("relu_drop", "dx", n);
    REQUIRE(x && keep && y && g && dx, "relu_drop files missing");
    float *r = malloc(n * sizeof(float)), *d = malloc(n * sizeof(float));
    be.nn->relu_fwd(&be, r, x, n);
    float *relu_out = malloc(n * sizeof(float));
    memcpy(relu_out, r, n * sizeof(float));
    be.nn->dropout2d(&be, r, r, keep, 2, 6, 20);
    expect_close("relu+dropout y", r, y, n);
    be.nn->dropout2d(&be, d, g, keep, 2, 6, 20);
    be.nn->relu_bwd(&be, d, d, relu_out, n);
    expect_close("relu+dropout dx", d, dx, n);
    free(x), free(keep), free(y), free(g), free(dx), free(r), free(d), free(relu_out);
}

TEST(concat_roundtrip) {
    float a[2 * 2 * 3], b[2 * 1 * 3], y[2 * 3 * 3], da[12], db[6];
    for (int i = 0; i < 12; i++) a[i] = (float)i;
    for (int i = 0; i < 6; i++) b[i] = 100.0f + i;
    be.nn->concat_fwd(&be, y, a, b, 2, 2, 1, 3);
    float want[18] = {0, 1, 2, 3, 4, 5, 100, 101, 102, 6, 7, 8, 9, 10, 11, 103, 104, 105};
    CHECK(memcmp(y, want, sizeof want) == 0, "concat layout");
    be.nn->concat_bwd(&be, da, db, y, 2, 2, 1, 3);
    CHECK(memcmp(da, a, sizeof a) == 0 && memcmp(db, b, sizeof b) == 0, "concat backward");
}

/* Central differences of L = sum(conv(x) * g) in double-checked float: no PyTorch needed. */
TEST(conv_finite_differences) {
    int B = 1, Ci = 2, Co = 3, H = 4, W = 5, K = 3;
    size_t nx = (size_t)B * Ci * H * W, ny = (size_t)B * Co * H * W, nw = (size_t)Co * Ci * K * K;
    float x[40], w[54], b[3], g[60], y[60], dx[40], dw[54], db[3] = {0};
    float *ws = malloc((be.nn->conv2d_workspace(Ci, H, W, Co, K) + 1) * sizeof(float));
    unsigned s = 7;
    for (size_t i = 0; i < nx; i++) x[i] = (float)((s = s * 1103515245u + 12345u) >> 16 & 1023) / 512.0f - 1;
    for (size_t i = 0; i < nw; i++) w[i] = (float)((s = s * 1103515245u + 12345u) >> 16 & 1023) / 1024.0f - 0.5f;
    for (size_t i = 0; i < ny; i++) g[i] = (float)((s = s * 1103515245u + 12345u) >> 16 & 1023) / 512.0f - 1;
    for (int i = 0; i < 3; i++) b[i] = 0.1f * i;
    memset(dw, 0, sizeof dw);
    be.nn->conv2d_bwd(&be, dx, dw, db, g, x, w, B, Ci, H, W, Co, K, ws);
    double worst = 0;
    for (size_t i = 0; i < nx; i += 3) {
        float keep = x[i];
        double l[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            x[i] = keep + (sgn ? 1e-2f : -1e-2f);
            be.nn->conv2d_fwd(&be, y, x, w, b, B, Ci, H, W, Co, K, ws);
            l[sgn] = 0;
            for (size_t j = 0; j < ny; j++) l[sgn] += (double)y[j] * g[j];
        }
        x[i] = keep;
        worst = fmax(worst, fabs((l[1] - l[0]) / 2e-2 - dx[i]));
    }
    CHECK(worst < 1e-3, "finite differences disagree with dx by %g", worst);
    free(ws);
}

int main(void) {
    ls_error err = {0};
    if (ls_backend_init(&be, LS_DEV_CPU, 2, &err)) {
        printf("%s\n", err.msg);
        return 1;
    }
    RUN(layers_match_pytorch);
    RUN(concat_roundtrip);
    RUN(conv_finite_differences);
    ls_backend_free(&be);
    return test_summary();
}
