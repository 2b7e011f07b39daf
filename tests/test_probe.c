/*
 * test_probe.c — the linear probe (src/probe.c) and its token data (ls_train_tokens):
 *  - the fitted weights, bias and objective against PyTorch (tests/ref/probe_ref.py: float64 L-BFGS on
 *    the same standardised objective, fresh random data every run, seed printed): within 1e-6 relative
 *    (measured 2e-8 - 6e-8, about the float32 the reference's values are passed in; the C Hessian's
 *    float32 blocks change only the path, not the point), and the logits of unfitted rows within 1e-6 relative
 *    of their scale (measured 4e-8 - 9e-8; the reference computes them from the float32 rows the test reads);
 *  - the AUC with ties against a count over every (positive, negative) pair; Dice and accuracy by hand;
 *  - on a shared BTCV scan: each token row holds the teacher's feature of that slice and grid cell, and
 *    the liver tokens cover about the mask's share of the slices.
 */
#include <math.h>
#include <time.h>

#include "manifest.h"
#include "probe.h"
#include "test.h"
#include "train.h"

static float *load(const char *name, size_t n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s.bin", test_tmpdir(), name);
    return test_read_f32(path, n);
}

static double rel(double a, double b, double floor) { return fabs(a - b) / fmax(fabs(b), floor); }

TEST(fit_matches_pytorch) {
    if (!test_python_has("torch,numpy")) SKIP("%s cannot import torch (install python3-torch or set LS_PYTHON)", test_python());
    unsigned seed = test_seed();
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s tests/ref/probe_ref.py %s %u", test_python(), test_tmpdir(), seed);
    REQUIRE(system(cmd) == 0, "reference failed: %s", cmd);
    enum { N = 3000, D = 12, NT = 500 };
    float *X = load("X", (size_t)N * D), *yf = load("y", N), *w = load("w", D), *b = load("bias", 1);
    float *f = load("objective", 1), *Xt = load("Xt", (size_t)NT * D), *zt = load("zt", NT);
    REQUIRE(X && yf && w && b && f && Xt && zt, "reference files missing");
    uint8_t y[N];
    for (int i = 0; i < N; i++) y[i] = yf[i] > 0.5f;
    ls_probe p;
    ls_error err = {0};
    REQUIRE(!ls_probe_fit(X, y, N, D, 1.5, 50, &p, &err), "fit: %s", err.msg);
    double ew = 0, wmax = 0;
    for (int j = 0; j < D; j++) wmax = fmax(wmax, fabs(w[j]));
    for (int j = 0; j < D; j++) ew = fmax(ew, fabs(p.w[j] - w[j]) / wmax);
    double eb = rel(p.bias, b[0], 1), ef = rel(p.objective, f[0], 1);
    printf("  %d Newton steps; weights %.2g, bias %.2g, objective %.2g relative\n", p.iterations, ew, eb, ef);
    CHECK(ew < 1e-6 && eb < 1e-6, "weights %.3g / bias %.3g from PyTorch's optimum", ew, eb);
    CHECK(ef < 1e-6, "objective %.9g vs %.9g", p.objective, f[0]);
    double z[NT], scale = 0, ez = 0;
    ls_probe_logits(&p, Xt, NT, z);
    for (int i = 0; i < NT; i++) scale = fmax(scale, fabs(zt[i]));
    for (int i = 0; i < NT; i++) ez = fmax(ez, fabs(z[i] - zt[i]) / scale);
    printf("  logits of unfitted rows %.2g relative to their scale\n", ez);
    CHECK(ez < 1e-6, "logits of unfitted rows %.3g from PyTorch's", ez);
    ls_probe_free(&p);

    float *s = load("auc_scores", 400), *lab = load("auc_labels", 400), *auc = load("auc", 1);
    REQUIRE(s && lab && auc, "AUC reference missing");
    double zs[400];
    uint8_t ys[400];
    for (int i = 0; i < 400; i++) zs[i] = s[i], ys[i] = lab[i] > 0.5f;
    ls_probe_score sc;
    REQUIRE(!ls_probe_evaluate(zs, ys, 400, &sc, &err), "%s", err.msg);
    CHECK(fabs(sc.auc - auc[0]) < 1e-6, "AUC %.8f vs pairwise %.8f", sc.auc, auc[0]);
    free(X), free(yf), free(w), free(b), free(f), free(Xt), free(zt), free(s), free(lab), free(auc);
}

TEST(scores_by_hand) {
    /* Predictions z > 0: TP 2 (0.5, 3), FP 1 (1), FN 1 (-2), TN 2. */
    double z[6] = {0.5, 3, 1, -2, -1, 0};
    uint8_t y[6] = {1, 1, 0, 1, 0, 0};
    ls_probe_score s;
    ls_error err = {0};
    REQUIRE(!ls_probe_evaluate(z, y, 6, &s, &err), "%s", err.msg);
    CHECK(fabs(s.dice - 4.0 / 6) < 1e-12 && fabs(s.accuracy - 4.0 / 6) < 1e-12, "Dice %g accuracy %g", s.dice, s.accuracy);
    /* Positives 3, 0.5, -2 against negatives 1, 0, -1: 3 + 2 + 0 of 9 pairs. */
    CHECK(fabs(s.auc - 5.0 / 9) < 1e-12, "AUC %g, want 5/9", s.auc);
    uint8_t none[6] = {0};
    REQUIRE(!ls_probe_evaluate(z, none, 6, &s, &err), "%s", err.msg);
    CHECK(isnan(s.auc) && s.positives == 0, "one class: AUC %g (want NaN)", s.auc);
    ls_probe p;
    CHECK(ls_probe_fit(NULL, y, 0, 3, 1, 10, &p, &err) == LS_ERR_INPUT, "no tokens must be refused");
}

TEST(tokens_of_a_real_scan) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA)");
    char path[1024];
    snprintf(path, sizeof path, "%s/manifest.csv", data);
    ls_manifest m;
    ls_error err = {0};
    REQUIRE(!ls_manifest_read(path, &m, &err), "%s", err.msg);
    int idx = -1;
    for (int i = 0; i < m.n; i++)
        if (!strcmp(m.cases[i].id, "btcv_00")) idx = i;
    REQUIRE(idx >= 0, "btcv_00 not in the manifest");
    ls_backend be;
    ls_teacher t;
    REQUIRE(!ls_backend_init(&be, LS_DEV_CPU, 2, &err), "%s", err.msg);
    REQUIRE(!ls_teacher_open(&t, &be, NULL, "d2w32h2p16", 3, 112, &err), "%s", err.msg);
    float *X;
    uint8_t *y;
    int64_t n;
    int dim, stride = 5;
    REQUIRE(!ls_train_tokens(&m, &idx, 1, &t, test_tmpdir(), stride, NULL, &X, &y, &n, &dim, &err), "%s", err.msg);
    /* The same features straight from the cache, and the mask from the volume. */
    ls_volume img, ras, lab, lab_ras;
    ls_orient o;
    REQUIRE(!ls_volume_read(m.cases[idx].image, &img, &err) && !ls_volume_read(m.cases[idx].label, &lab, &err), "%s", err.msg);
    ls_orient_from_geom(&img.geom, &o);
    REQUIRE(!ls_volume_to_ras(&img, &o, &ras, &err) && !ls_volume_to_ras(&lab, &o, &lab_ras, &err), "%s", err.msg);
    ls_prep prep;
    ls_features f;
    int hit;
    REQUIRE(!ls_prep_init(&prep, &ras, m.cases[idx].modality, 112, 112, &err), "%s", err.msg);
    REQUIRE(!ls_features_cached(&t, &ras, &prep, test_tmpdir(), 8, NULL, NULL, &f, &hit, &err), "%s", err.msg);
    int Z = f.nslices, g = f.gh, kept = (Z + stride - 1) / stride;
    CHECK(hit, "the features should have come from the cache ls_train_tokens filled");
    REQUIRE(dim == 32 && g == 7 && n == (int64_t)kept * g * g, "%lld tokens of %d features, want %d x %d of 32", (long long)n, dim,
            kept, g * g);
    int64_t bad = 0, liver = 0;
    for (int64_t r = 0; r < n; r++) {
        int k = (int)(r / (g * g)) * stride, cell = (int)(r % (g * g));
        for (int c = 0; c < dim; c++) bad += X[r * dim + c] != f.data[((size_t)k * dim + c) * g * g + cell];
        liver += y[r];
    }
    CHECK(bad == 0, "%lld feature values are not the teacher's at their slice and cell", (long long)bad);
    /* Liver share of the kept slices' pixels versus of their tokens (the tokens' 50% rule and the
     * resize blur the edge; agree within 25%). */
    size_t plane = (size_t)ras.geom.dim[0] * ras.geom.dim[1];
    double vox = 0;
    for (int k = 0; k < Z; k += stride)
        for (size_t i = 0; i < plane; i++) vox += lab_ras.data[(size_t)k * plane + i] > 0.5f;
    double share_vox = vox / ((double)kept * plane), share_tok = (double)liver / n;
    printf("  liver: %.4f of the pixels, %.4f of the tokens\n", share_vox, share_tok);
    CHECK(share_vox > 0.01 && fabs(share_tok / share_vox - 1) < 0.25, "token share %.4f vs pixel share %.4f", share_tok,
          share_vox);
    free(X), free(y);
    ls_features_free(&f);
    ls_volume_free(&img), ls_volume_free(&ras), ls_volume_free(&lab), ls_volume_free(&lab_ras);
    ls_teacher_close(&t);
    ls_backend_free(&be);
    ls_manifest_free(&m);
}

int main(void) {
    RUN(fit_matches_pytorch);
    RUN(scores_by_hand);
    RUN(tokens_of_a_real_scan);
    return test_summary();
}
