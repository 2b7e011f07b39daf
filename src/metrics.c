/*
 * metrics.c — see metrics.h. The distance transform runs only over the bounding box of both masks
 * (exact there, since every surface voxel lies inside it), one OpenMP thread per line of voxels.
 */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "volume.h"

/* 1-D squared distance transform of f (n values, spacing w) into d: d[p] = min_q w^2 (p-q)^2 + f[q].
 * v, z are scratch of n and n+1 entries. Infinite f are not sites. */
static void edt_line(const double *f, double *d, int n, double w, int *v, double *z) {
    double w2 = w * w;
    int k = -1;
    for (int q = 0; q < n; q++) {
        if (!isfinite(f[q])) continue;
        for (;;) {
            if (k < 0) {
                v[++k] = q;
                z[k] = -INFINITY;
                z[k + 1] = INFINITY;
                break;
            }
            int p = v[k];
            double s = ((f[q] + w2 * q * q) - (f[p] + w2 * (double)p * p)) / (2 * w2 * (q - p));
            if (s <= z[k]) {
                k--;
                continue;
            }
            v[++k] = q;
            z[k] = s;
            z[k + 1] = INFINITY;
            break;
        }
    }
    if (k < 0) {
        for (int p = 0; p < n; p++) d[p] = INFINITY;
        return;
    }
    for (int p = 0, j = 0; p < n; p++) {
        while (z[j + 1] < p) j++;
        double dp = p - v[j];
        d[p] = w2 * dp * dp + f[v[j]];
    }
}

/* One pass along `axis` of the box [lo, hi] of a dim-sized volume, in place. */
static void edt_pass(double *g, const int64_t dim[3], const int64_t lo[3], const int64_t hi[3], int axis, double w) {
    int a1 = (axis + 1) % 3, a2 = (axis + 2) % 3;
    int64_t n = hi[axis] - lo[axis] + 1, n1 = hi[a1] - lo[a1] + 1, n2 = hi[a2] - lo[a2] + 1;
    int64_t stride[3] = {1, dim[0], dim[0] * dim[1]};
#pragma omp parallel
    {
        double *f = malloc(sizeof(double) * (size_t)n), *d = malloc(sizeof(double) * (size_t)n);
        double *z = malloc(sizeof(double) * (size_t)(n + 1));
        int *v = malloc(sizeof(int) * (size_t)n);
#pragma omp for collapse(2) schedule(static)
        for (int64_t j = 0; j < n2; j++)
            for (int64_t i = 0; i < n1; i++) {
                int64_t base = (lo[a1] + i) * stride[a1] + (lo[a2] + j) * stride[a2] + lo[axis] * stride[axis];
                for (int64_t t = 0; t < n; t++) f[t] = g[base + t * stride[axis]];
                edt_line(f, d, (int)n, w, v, z);
                for (int64_t t = 0; t < n; t++) g[base + t * stride[axis]] = d[t];
            }
        free(f), free(d), free(z), free(v);
    }
}

static void edt_box(const uint8_t *feature, const int64_t dim[3], const double spacing[3], const int64_t lo[3],
                    const int64_t hi[3], double *out) {
    for (int64_t k = lo[2]; k <= hi[2]; k++)
        for (int64_t j = lo[1]; j <= hi[1]; j++)
            for (int64_t i = lo[0]; i <= hi[0]; i++) {
                int64_t p = i + dim[0] * (j + dim[1] * k);
                out[p] = feature[p] ? 0 : INFINITY;
            }
    for (int a = 0; a < 3; a++) edt_pass(out, dim, lo, hi, a, spacing[a]);
}

void ls_edt_sq(const uint8_t *feature, const int64_t dim[3], const double spacing[3], double *out) {
    int64_t lo[3] = {0, 0, 0}, hi[3] = {dim[0] - 1, dim[1] - 1, dim[2] - 1};
    edt_box(feature, dim, spacing, lo, hi, out);
}

void ls_mask_surface(const uint8_t *m, const int64_t d[3], uint8_t *s) {
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < d[2]; k++)
        for (int64_t j = 0; j < d[1]; j++)
            for (int64_t i = 0; i < d[0]; i++) {
                int64_t p = i + d[0] * (j + d[1] * k);
                if (!m[p]) {
                    s[p] = 0;
                    continue;
                }
                int edge = i == 0 || i == d[0] - 1 || j == 0 || j == d[1] - 1 || k == 0 || k == d[2] - 1;
                if (!edge)
                    edge = !m[p - 1] || !m[p + 1] || !m[p - d[0]] || !m[p + d[0]] || !m[p - d[0] * d[1]] ||
                           !m[p + d[0] * d[1]];
                s[p] = (uint8_t)edge;
            }
}

/* Mean and max over voxels of `from` of sqrt(dt). */
static void directed(const uint8_t *from, const double *dt, const int64_t d[3], const int64_t lo[3],
                     const int64_t hi[3], double *mean, double *max) {
    double s = 0, mx = 0;
    int64_t n = 0;
    for (int64_t k = lo[2]; k <= hi[2]; k++)
        for (int64_t j = lo[1]; j <= hi[1]; j++)
            for (int64_t i = lo[0]; i <= hi[0]; i++) {
                int64_t p = i + d[0] * (j + d[1] * k);
                if (!from[p]) continue;
                double v = sqrt(dt[p]);
                s += v, n++;
                mx = v > mx ? v : mx;
            }
    *mean = n ? s / (double)n : 0;
    *max = mx;
}

ls_status ls_metrics_masks(const uint8_t *pred, const uint8_t *ref, const int64_t d[3], const double spacing[3],
                           ls_metrics *m, ls_error *err) {
    memset(m, 0, sizeof *m);
    size_t n = (size_t)(d[0] * d[1] * d[2]);
    int64_t lo[3] = {d[0], d[1], d[2]}, hi[3] = {-1, -1, -1}, inter = 0;
    for (int64_t k = 0; k < d[2]; k++)
        for (int64_t j = 0; j < d[1]; j++)
            for (int64_t i = 0; i < d[0]; i++) {
                int64_t p = i + d[0] * (j + d[1] * k);
                m->pred_voxels += pred[p] != 0, m->ref_voxels += ref[p] != 0, inter += pred[p] && ref[p];
                if (pred[p] || ref[p]) {
                    int64_t idx[3] = {i, j, k};
                    for (int a = 0; a < 3; a++) {
                        if (idx[a] < lo[a]) lo[a] = idx[a];
                        if (idx[a] > hi[a]) hi[a] = idx[a];
                    }
                }
            }
    double vox_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0;
    m->pred_ml = (double)m->pred_voxels * vox_ml, m->ref_ml = (double)m->ref_voxels * vox_ml;
    m->diff_ml = m->pred_ml - m->ref_ml;
    m->diff_pct = m->ref_voxels ? 100.0 * m->diff_ml / m->ref_ml : NAN;
    if (!m->pred_voxels && !m->ref_voxels) {
        m->dice = 1;
        return LS_OK;
    }
    m->dice = 2.0 * (double)inter / (double)(m->pred_voxels + m->ref_voxels);
    if (!m->pred_voxels || !m->ref_voxels) {
        m->assd_mm = m->mssd_mm = NAN;
        return LS_OK;
    }
    uint8_t *sp = ls_calloc(n, 1, err), *sr = ls_calloc(n, 1, err);
    double *dt = ls_calloc(n, sizeof(double), err);
    if (!sp || !sr || !dt) {
        free(sp), free(sr), free(dt);
        return LS_ERR_NOMEM;
    }
    ls_mask_surface(pred, d, sp);
    ls_mask_surface(ref, d, sr);
    double m1, x1, m2, x2;
    edt_box(sr, d, spacing, lo, hi, dt);
    directed(sp, dt, d, lo, hi, &m1, &x1);
    edt_box(sp, d, spacing, lo, hi, dt);
    directed(sr, dt, d, lo, hi, &m2, &x2);
    m->assd_mm = (m1 + m2) / 2;
    m->mssd_mm = x1 > x2 ? x1 : x2;
    free(sp), free(sr), free(dt);
    return LS_OK;
}

ls_status ls_metrics_volumes(const ls_volume *pred, const ls_volume *ref, const char *pred_name, const char *ref_name,
                             ls_metrics *m, ls_error *err) {
    LS_TRY(ls_geom_same_grid(&pred->geom, &ref->geom, pred_name, ref_name, err));
    ls_orient op, orf;
    ls_orient_from_geom(&pred->geom, &op);
    ls_orient_from_geom(&ref->geom, &orf);
    ls_volume rp, rr;
    LS_TRY(ls_volume_to_ras(pred, &op, &rp, err));
    ls_status s = ls_volume_to_ras(ref, &orf, &rr, err);
    if (s) {
        ls_volume_free(&rp);
        return s;
    }
    size_t n = ls_volume_nvox(&rp);
    uint8_t *a = s ? NULL : ls_calloc(n, 1, err), *b = s ? NULL : ls_calloc(n, 1, err);
    if (!s && (!a || !b)) s = LS_ERR_NOMEM;
    if (!s) {
        for (size_t i = 0; i < n; i++) a[i] = rp.data[i] > 0.5f, b[i] = rr.data[i] > 0.5f;
        double sp[3];
        for (int j = 0; j < 3; j++)
            sp[j] = sqrt(rp.geom.affine[0][j] * rp.geom.affine[0][j] + rp.geom.affine[1][j] * rp.geom.affine[1][j] +
                         rp.geom.affine[2][j] * rp.geom.affine[2][j]);
        s = ls_metrics_masks(a, b, rp.geom.dim, sp, m, err);
    }
    free(a), free(b);
    ls_volume_free(&rp);
    ls_volume_free(&rr);
    return s;
}

/* Continued fraction of the incomplete beta function (modified Lentz). */
static double betacf(double a, double b, double x) {
    const double tiny = 1e-300;
    double qab = a + b, qap = a + 1, qam = a - 1, c = 1, d = 1 - qab * x / qap;
    if (fabs(d) < tiny) d = tiny;
    d = 1 / d;
    double h = d;
    for (int m = 1; m <= 300; m++) {
        int m2 = 2 * m;
        double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1 + aa * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1 + aa / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1 / d;
        h *= d * c;
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1 + aa * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1 + aa / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) < 1e-15) break;
    }
    return h;
}

double ls_betai(double a, double b, double x) {
    if (x <= 0) return 0;
    if (x >= 1) return 1;
    double front = exp(lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x));
    if (x < (a + 1) / (a + b + 2)) return front * betacf(a, b, x) / a;
    return 1 - front * betacf(b, a, 1 - x) / b;
}

int ls_mean_sd(const double *v, int n, double *mean, double *sd) {
    double s = 0, s2 = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) s += v[i], k++;
    *mean = k ? s / k : NAN;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) s2 += (v[i] - *mean) * (v[i] - *mean);
    *sd = k > 1 ? sqrt(s2 / (k - 1)) : NAN;
    return k;
}

double ls_ttest_paired(const double *a, const double *b, int n, double *t_out) {
    double mean = 0, ss = 0;
    for (int i = 0; i < n; i++) mean += a[i] - b[i];
    mean /= n;
    for (int i = 0; i < n; i++) ss += (a[i] - b[i] - mean) * (a[i] - b[i] - mean);
    double sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
    if (n < 2 || sd == 0) {
        if (t_out) *t_out = n < 2 || mean == 0 ? NAN : copysign(INFINITY, mean);
        return n < 2 || mean == 0 ? NAN : 0;
    }
    double t = mean / (sd / sqrt((double)n)), df = n - 1;
    if (t_out) *t_out = t;
    return ls_betai(df / 2, 0.5, df / (df + t * t));
}
