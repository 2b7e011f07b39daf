/*
 * probe.c — see probe.h. Layout: standardisation, objective and logits, one Newton step (gradient and
 * Hessian), the fit loop with backtracking, and the scores.
 */
#include "probe.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* LAPACK (in OpenBLAS, which already provides BLAS here): Cholesky solve of a symmetric positive
 * definite system, column-major (our matrix is symmetric, so the order does not matter). */
extern void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b,
                   const int *ldb, int *info);

enum { BLOCK = 2048 }; /* rows per Hessian block */

void ls_probe_free(ls_probe *p) {
    free(p->mean), free(p->scale), free(p->w);
    memset(p, 0, sizeof *p);
}

static void standardise_fit(const float *X, int64_t n, int d, double *mean, double *scale) {
    double *s = calloc((size_t)d, sizeof *s), *s2 = calloc((size_t)d, sizeof *s2);
    LS_ASSERT(s && s2);
    /* Shifting by the first row keeps the variance sum from cancelling when |mean| >> std. */
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            double v = (double)X[i * d + j] - X[j];
            s[j] += v, s2[j] += v * v;
        }
    for (int j = 0; j < d; j++) {
        double m = s[j] / n, var = fmax(s2[j] / n - m * m, 0);
        mean[j] = m + X[j];
        scale[j] = 1 / fmax(sqrt(var), 1e-6);
    }
    free(s), free(s2);
}

/* z = c0 + X v where v = w * scale and c0 = bias - sum(v * mean): the logits on raw features. */
static void logits_raw(const float *X, int64_t n, int d, const double *v, double c0, double *z) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *x = X + i * d;
        double a = c0;
        for (int j = 0; j < d; j++) a += v[j] * x[j];
        z[i] = a;
    }
}

static void fold(const ls_probe *p, const double *w, double bias, double *v, double *c0) {
    *c0 = bias;
    for (int j = 0; j < p->dim; j++) {
        v[j] = w[j] * p->scale[j];
        *c0 -= v[j] * p->mean[j];
    }
}

void ls_probe_logits(const ls_probe *p, const float *X, int64_t n, double *z) {
    double *v = malloc((size_t)p->dim * sizeof *v), c0;
    LS_ASSERT(v);
    fold(p, p->w, p->bias, v, &c0);
    logits_raw(X, n, p->dim, v, c0, z);
    free(v);
}

static double softplus(double z) { return z > 0 ? z + log1p(exp(-z)) : log1p(exp(z)); }

/* The objective at (w, bias); z receives the logits. */
static double objective(const ls_probe *p, const float *X, const uint8_t *y, int64_t n, const double *w, double bias,
                        double l2, double *v, double *z) {
    double c0, f = 0, r = 0;
    fold(p, w, bias, v, &c0);
    logits_raw(X, n, p->dim, v, c0, z);
#pragma omp parallel for reduction(+ : f) schedule(static)
    for (int64_t i = 0; i < n; i++) f += softplus(z[i]) - (y[i] ? z[i] : 0);
    for (int j = 0; j < p->dim; j++) r += w[j] * w[j];
    return f + 0.5 * l2 * r;
}

/* Gradient g [d + 1] (bias last) and Hessian H [(d + 1)^2] of the objective at logits z. */
static void derivatives(const ls_probe *p, const float *X, const uint8_t *y, int64_t n, const double *z,
                        const double *w, double l2, double *g, double *H) {
    int d = p->dim, m = d + 1;
    memset(g, 0, (size_t)m * sizeof *g);
    memset(H, 0, (size_t)m * m * sizeof *H);
    float *A = malloc((size_t)BLOCK * m * sizeof *A), *C = malloc((size_t)m * m * sizeof *C);
    LS_ASSERT(A && C);
    for (int64_t i0 = 0; i0 < n; i0 += BLOCK) {
        int rows = (int)(n - i0 < BLOCK ? n - i0 : BLOCK);
        for (int r = 0; r < rows; r++) {
            int64_t i = i0 + r;
            double q = 1 / (1 + exp(-z[i])), res = q - y[i], sw = sqrt(q * (1 - q));
            const float *x = X + i * d;
            float *a = A + (size_t)r * m;
            for (int j = 0; j < d; j++) {
                double xs = ((double)x[j] - p->mean[j]) * p->scale[j];
                g[j] += res * xs;
                a[j] = (float)(sw * xs);
            }
            g[d] += res;
            a[d] = (float)sw;
        }
        /* One block's sum in float32, the running sum over blocks in double. */
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, m, rows, 1.0f, A, m, 0.0f, C, m);
        for (int a = 0; a < m; a++)
            for (int b = a; b < m; b++) H[(size_t)a * m + b] += C[(size_t)a * m + b];
    }
    for (int a = 0; a < m; a++)
        for (int b = 0; b < a; b++) H[(size_t)a * m + b] = H[(size_t)b * m + a];
    for (int j = 0; j < d; j++) g[j] += l2 * w[j], H[(size_t)j * m + j] += l2;
    H[(size_t)d * m + d] += 1e-9 * (double)n; /* keeps H definite when every label is the same */
    free(A), free(C);
}

ls_status ls_probe_fit(const float *X, const uint8_t *y, int64_t n, int dim, double l2, int max_iter, ls_probe *p,
                       ls_error *err) {
    memset(p, 0, sizeof *p);
    if (n < 1 || dim < 1 || !(l2 >= 0)) return ls_fail(err, LS_ERR_INPUT, "linear probe: %lld tokens of %d features, l2 %g",
                                                   (long long)n, dim, l2);
    int m = dim + 1;
    p->dim = dim;
    p->mean = ls_calloc((size_t)dim, sizeof *p->mean, err);
    p->scale = ls_calloc((size_t)dim, sizeof *p->scale, err);
    p->w = ls_calloc((size_t)dim, sizeof *p->w, err);
    double *z = ls_calloc((size_t)n, sizeof *z, err), *g = ls_calloc((size_t)m, sizeof *g, err);
    double *H = ls_calloc((size_t)m * m, sizeof *H, err), *wt = ls_calloc((size_t)m, sizeof *wt, err);
    double *v = ls_calloc((size_t)dim, sizeof *v, err);
    ls_status st = p->mean && p->scale && p->w && z && g && H && wt && v ? LS_OK : LS_ERR_NOMEM;
    if (!st) standardise_fit(X, n, dim, p->mean, p->scale);
    double f = st ? 0 : objective(p, X, y, n, p->w, 0, l2, v, z);
    for (int it = 0; !st && it < max_iter; it++) {
        derivatives(p, X, y, n, z, p->w, l2, g, H);
        memcpy(wt, g, (size_t)m * sizeof *g);
        int one = 1, info = 0;
        dposv_("U", &m, &one, H, &m, wt, &m, &info); /* wt = H^-1 g */
        if (info) {
            st = ls_fail(err, LS_ERR_INTERNAL, "linear probe: Hessian not positive definite (LAPACK info %d)", info);
            break;
        }
        double decrement = 0;
        for (int j = 0; j < m; j++) decrement += g[j] * wt[j];
        if (decrement < 1e-14 * fmax(1, fabs(f))) break;
        /* Backtracking (Armijo): Newton's full step can overshoot far from the solution. */
        double t = 1, ft = f, *step = wt;
        double *w1 = ls_calloc((size_t)m, sizeof *w1, err);
        if (!w1) { st = LS_ERR_NOMEM; break; }
        for (; t > 1e-10; t *= 0.5) {
            for (int j = 0; j < m; j++) w1[j] = (j < dim ? p->w[j] : p->bias) - t * step[j];
            ft = objective(p, X, y, n, w1, w1[dim], l2, v, z);
            if (ft <= f - 1e-4 * t * decrement) break;
        }
        memcpy(p->w, w1, (size_t)dim * sizeof *w1);
        p->bias = w1[dim];
        free(w1);
        p->iterations = it + 1;
        int stalled = f - ft <= 1e-12 * fabs(f);
        f = ft;
        if (stalled) break;
    }
    p->objective = f;
    free(z), free(g), free(H), free(wt), free(v);
    if (st) ls_probe_free(p);
    return st;
}

typedef struct {
    double z;
    uint8_t y;
} scored;

static int by_logit(const void *a, const void *b) {
    double x = ((const scored *)a)->z, y = ((const scored *)b)->z;
    return (x > y) - (x < y);
}

ls_status ls_probe_evaluate(const double *z, const uint8_t *y, int64_t n, ls_probe_score *s, ls_error *err) {
    memset(s, 0, sizeof *s);
    s->n = n;
    int64_t tp = 0, fp = 0, fn = 0, correct = 0;
    for (int64_t i = 0; i < n; i++) {
        int pred = z[i] > 0, t = y[i] != 0;
        s->positives += t;
        tp += pred && t, fp += pred && !t, fn += !pred && t, correct += pred == t;
    }
    s->dice = tp + fp + fn ? 2.0 * tp / (2.0 * tp + fp + fn) : 1;
    s->accuracy = n ? (double)correct / n : NAN;
    int64_t neg = n - s->positives;
    s->auc = NAN;
    if (!s->positives || !neg) return LS_OK;
    scored *r = ls_calloc((size_t)n, sizeof *r, err);
    if (!r) return LS_ERR_NOMEM;
    for (int64_t i = 0; i < n; i++) r[i] = (scored){z[i], y[i] != 0};
    qsort(r, (size_t)n, sizeof *r, by_logit);
    /* Sum of the positives' ranks (1-based, tied runs given their mean rank). */
    double ranks = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i, pos = 0;
        while (j < n && r[j].z == r[i].z) pos += r[j++].y;
        ranks += pos * (i + 1 + j) / 2.0;
        i = j;
    }
    s->auc = (ranks - (double)s->positives * (s->positives + 1) / 2) / ((double)s->positives * neg);
    free(r);
    return LS_OK;
}
