/*
 * test_loss.c — the training ops against PyTorch (tests/ref/loss_ref.py, float64 autograd, fresh random
 * inputs every run): Focal (two settings), Tversky, log-IoU and the entropy regulariser with their
 * gradients; the contrastive-distillation term for a slice pair and for a slice with itself; 25 RAdam
 * steps; ReduceLROnPlateau's learning rates. LS_SEED=N repeats a run.
 *
 * Tolerances: losses and gradients |c - r| <= 1e-4 * max(|r|, 0.01 * max|r|) (the gradients of a mean
 * over N pixels are small numbers of one scale, so the floor is relative to their largest); the
 * contrastive term's two means (loss, mean similarity) within 1e-4 of the mean magnitude of the terms they
 * average, since their terms have both signs and may cancel far below float32's rounding of them; RAdam
 * parameters (standard normal) within 1e-5 * max(|r|, 0.1) after 25 float32 steps; the learning-rate
 * sequence exactly.
 */
#include <time.h>

#include "ops.h"
#include "optim.h"
#include "test.h"

static ls_backend be;

static float *load(const char *cas, const char *t, size_t n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s.%s.bin", test_tmpdir(), cas, t);
    return test_read_f32(path, n);
}

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

static void expect_close(const char *what, const float *got, const float *ref, size_t n) {
    double e = test_max_rel_err(got, ref, n, 0.01 * max_abs(ref, n) + 1e-30);
    CHECK(e <= 1e-4, "%s: max rel err %.3e", what, e);
}

#define NSUP (2 * 8 * 9)

static void supervised(const char *name, double loss) {
    float *ref = load(name, "loss", 1);
    REQUIRE(ref, "%s: no reference", name);
    float got = (float)loss;
    char what[64];
    snprintf(what, sizeof what, "%s value", name);
    expect_close(what, &got, ref, 1);
    free(ref);
}

TEST(losses_match_pytorch) {
    if (!test_python_has("torch")) SKIP("%s cannot import torch (install python3-torch or set LS_PYTHON)", test_python());
    unsigned seed = test_seed();
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s tests/ref/loss_ref.py %s %u", test_python(), test_tmpdir(), seed);
    REQUIRE(system(cmd) == 0, "reference failed: %s", cmd);
    float *z = load("sup", "z", NSUP), *t = load("sup", "t", NSUP);
    REQUIRE(z && t, "no inputs");
    struct { const char *name; int kind; float a, b; } cases[] = {
        {"focal", 0, 2.0f, 0.25f}, {"focal_g15_noalpha", 0, 1.5f, -1.0f}, {"tversky", 1, 0.3f, 0.7f},
        {"logiou", 2, 0, 0}, {"entropy", 3, 2.0f, 0}};
    for (int c = 0; c < 5; c++) {
        float dz[NSUP] = {0};
        double l = 0;
        /* Gradients add into dz: a second call must double them. */
        for (int rep = 0; rep < 2; rep++) switch (cases[c].kind) {
            case 0: be.loss->focal(&be, z, t, NSUP, cases[c].a, cases[c].b, 1.0f, dz, &l); break;
            case 1: be.loss->tversky(&be, z, t, NSUP, cases[c].a, cases[c].b, 1.0f, 1.0f, dz, &l); break;
            case 2: be.loss->log_iou(&be, z, t, NSUP, 1.0f, 1.0f, dz, &l); break;
            case 3: be.loss->entropy(&be, z, NSUP, cases[c].a, 1.0f, dz, &l); break;
            }
        for (int i = 0; i < NSUP; i++) dz[i] *= 0.5f;
        supervised(cases[c].name, l);
        float *rdz = load(cases[c].name, "dz", NSUP);
        REQUIRE(rdz, "%s: no gradient", cases[c].name);
        char what[64];
        snprintf(what, sizeof what, "%s gradient", cases[c].name);
        expect_close(what, dz, rdz, NSUP);
        free(rdz);
    }
    free(z), free(t);
}

/* A mean of terms of both signs, against the mean magnitude of those terms (scale). */
static void expect_mean_close(const char *what, double got, const float *ref, float scale) {
    double e = fabs(got - ref[0]) / fmax(fabs(ref[0]), scale);
    CHECK(e <= 1e-4, "%s: %.9g, PyTorch %.9g (terms of mean magnitude %.3g): rel err %.3e", what, got,
          (double)ref[0], (double)scale, e);
}

TEST(contrastive_term_matches_pytorch) {
    int C = 24, D = 10, P = 30;
    float *fx = load("cd", "fx", (size_t)C * P), *fy = load("cd", "fy", (size_t)C * P);
    float *gx = load("cd", "gx", (size_t)D * P), *gy = load("cd", "gy", (size_t)D * P);
    if (!fx) SKIP("no reference (PyTorch unavailable)");
    REQUIRE(fy && gx && gy, "inputs missing");
    float *ws = malloc(ls_cd_workspace(C, D, P) * sizeof(float));
    float dgx[300] = {0}, dgy[300] = {0};
    double out[2];
    be.loss->cd_term(&be, fx, fy, C, gx, gy, D, P, 0.12f, 1.0f, dgx, dgy, out, ws);
    float *rl = load("cd_pair", "loss", 1), *rs = load("cd_pair", "sim", 1), *rsc = load("cd_pair", "scales", 2);
    float *rgx = load("cd_pair", "dgx", 300), *rgy = load("cd_pair", "dgy", 300);
    REQUIRE(rl && rs && rsc && rgx && rgy, "pair reference missing");
    expect_mean_close("pair loss", out[0], rl, rsc[0]);
    expect_mean_close("pair mean similarity", out[1], rs, rsc[1]);
    expect_close("pair dL/dgx", dgx, rgx, 300);
    expect_close("pair dL/dgy", dgy, rgy, 300);
    /* Self term: one code tensor on both sides, both gradients into one buffer. */
    float dself[300] = {0};
    be.loss->cd_term(&be, fx, fx, C, gx, gx, D, P, 0.18f, 1.0f, dself, dself, out, ws);
    float *sl = load("cd_self", "loss", 1), *ss = load("cd_self", "sim", 1), *ssc = load("cd_self", "scales", 2);
    float *sg = load("cd_self", "dgx", 300);
    REQUIRE(sl && ss && ssc && sg, "self reference missing");
    expect_mean_close("self loss", out[0], sl, ssc[0]);
    expect_mean_close("self mean similarity", out[1], ss, ssc[1]);
    expect_close("self dL/dg", dself, sg, 300);
    free(fx), free(fy), free(gx), free(gy), free(ws), free(rl), free(rs), free(rsc), free(rgx), free(rgy);
    free(sl), free(ss), free(ssc), free(sg);
}

TEST(radam_matches_pytorch) {
    float *p0 = load("radam", "p0", 50), *grads = load("radam", "grads", 25 * 50), *want = load("radam", "p", 50);
    if (!p0) SKIP("no reference (PyTorch unavailable)");
    REQUIRE(grads && want, "radam reference missing");
    float m[50] = {0}, v[50] = {0};
    for (int k = 0; k < 25; k++)
        be.loss->radam_step(&be, p0, grads + 50 * k, m, v, 50, k + 1, 1e-2f, 0.9f, 0.999f, 1e-8f, 1e-2f);
    double e = test_max_rel_err(p0, want, 50, 0.1); /* parameters are N(0,1): 1e-5 of their scale */
    CHECK(e <= 1e-5, "parameters after 25 steps: max rel err %.3e", e);
    free(p0), free(grads), free(want);
}

TEST(plateau_matches_pytorch) {
    float *metric = load("plateau", "metric", 20), *lr = load("plateau", "lr", 20);
    if (!metric) SKIP("no reference (PyTorch unavailable)");
    REQUIRE(lr, "plateau reference missing");
    ls_plateau s;
    ls_plateau_init(&s, 1e-4, 3, 0.1);
    int reductions = 0;
    for (int i = 0; i < 20; i++) {
        reductions += ls_plateau_step(&s, metric[i]);
        CHECK(fabs(s.lr - lr[i]) <= 1e-6 * lr[i], "epoch %d: lr %g, PyTorch %g", i, s.lr, lr[i]);
    }
    CHECK(reductions >= 2, "the sequence should reduce the rate at least twice (%d)", reductions);
    free(metric), free(lr);
}

int main(void) {
    ls_error err = {0};
    if (ls_backend_init(&be, LS_DEV_CPU, 2, &err)) {
        printf("%s\n", err.msg);
        return 1;
    }
    RUN(losses_match_pytorch);
    RUN(contrastive_term_matches_pytorch);
    RUN(radam_matches_pytorch);
    RUN(plateau_matches_pytorch);
    ls_backend_free(&be);
    return test_summary();
}
