/*
 * cpu_loss.c — CPU implementation of the training op family (ops_loss.h). Sums run in double; the
 * logistic terms use log-sigmoid forms that stay finite for any logit.
 */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "ops.h"

static inline double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static inline double sigmoid(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }

static void cpu_focal(const ls_backend *be, const float *z, const float *t, size_t N, float gamma, float alpha,
                      float weight, float *dz, double *out) {
    double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < N; i++) {
        double p = sigmoid(z[i]), y = t[i];
        double ce = softplus(z[i]) - z[i] * y; /* BCE with logits */
        double pt = p * y + (1 - p) * (1 - y), q = 1 - pt;
        double mod = pow(q, gamma), at = alpha >= 0 ? alpha * y + (1 - alpha) * (1 - y) : 1;
        total += at * ce * mod;
        /* d/dz: (p - y) q^g + ce * g q^(g-1) * (-dpt/dz), dpt/dz = p (1 - p) (2y - 1). */
        double dmod = q > 0 ? gamma * pow(q, gamma - 1) * -(p * (1 - p) * (2 * y - 1)) : 0;
        dz[i] += (float)(weight * at * ((p - y) * mod + ce * dmod) / (double)N);
    }
    out[0] = N ? total / (double)N : 0;
}

/* Soft counts: sum p t, sum p, sum t. */
static void soft_counts(const ls_backend *be, const float *z, const float *t, size_t N, double *spt, double *sp,
                        double *st) {
    double a = 0, b = 0, c = 0;
#pragma omp parallel for reduction(+ : a, b, c) schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < N; i++) {
        double p = sigmoid(z[i]);
        a += p * t[i], b += p, c += t[i];
    }
    *spt = a, *sp = b, *st = c;
}

static void cpu_tversky(const ls_backend *be, const float *z, const float *t, size_t N, float a, float b, float s,
                        float weight, float *dz, double *out) {
    double tp, sp, st;
    soft_counts(be, z, t, N, &tp, &sp, &st);
    double fp = sp - tp, fn = st - tp, num = tp + s, den = tp + a * fp + b * fn + s;
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < N; i++) {
        double p = sigmoid(z[i]), y = t[i];
        double dnum = y, dden = y + a * (1 - y) - b * y; /* d/dp of num and den */
        double dp = -(dnum * den - num * dden) / (den * den);
        dz[i] += (float)(weight * dp * p * (1 - p));
    }
    out[0] = 1 - num / den;
}

static void cpu_log_iou(const ls_backend *be, const float *z, const float *t, size_t N, float s, float weight,
                        float *dz, double *out) {
    double inter, sp, st;
    soft_counts(be, z, t, N, &inter, &sp, &st);
    double uni = sp + st - inter;
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < N; i++) {
        double p = sigmoid(z[i]), y = t[i];
        double dp = (1 - y) / (uni + s) - y / (inter + s);
        dz[i] += (float)(weight * dp * p * (1 - p));
    }
    out[0] = log(uni + s) - log(inter + s);
}

static void cpu_entropy(const ls_backend *be, const float *z, size_t N, float eta, float weight, float *dz, double *out) {
    double total = 0;
    const double ln2 = 0.69314718055994531;
#pragma omp parallel for reduction(+ : total) schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < N; i++) {
        double x = z[i], p = sigmoid(x);
        /* -(p ln p + (1-p) ln(1-p)) with ln p = -softplus(-x), ln(1-p) = -softplus(x). */
        double h = (p * softplus(-x) + (1 - p) * softplus(x)) / ln2;
        double u = h * h + 1e-8;
        total += pow(u, eta);
        /* dH/dz = -z p (1 - p) / ln 2, since ln(p / (1 - p)) = z. */
        double dh = -x * p * (1 - p) / ln2;
        dz[i] += (float)(weight * eta * pow(u, eta - 1) * 2 * h * dh / (double)N);
    }
    out[0] = N ? total / (double)N : 0;
}

size_t ls_cd_workspace(int C, int D, int P) {
    return 2 * (size_t)C * P + 4 * (size_t)D * P + 3 * (size_t)P * P + 2 * (size_t)P;
}

/* Columns of a[K,P] scaled to unit length (F.normalize(dim=channels), eps 1e-12); norms kept. */
static void normalize_columns(const float *a, int K, int P, float *out, float *norms) {
    for (int j = 0; j < P; j++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += (double)a[(size_t)k * P + j] * a[(size_t)k * P + j];
        double n = sqrt(s);
        float inv = (float)(1.0 / (n > 1e-12 ? n : 1e-12));
        if (norms) norms[j] = (float)n;
        for (int k = 0; k < K; k++) out[(size_t)k * P + j] = a[(size_t)k * P + j] * inv;
    }
}

/* dg[:,j] += (dv - v (v . dv)) / max(|g_j|, eps) for v the normalised column: the normalisation's adjoint. */
static void normalize_backward(const float *v, const float *dv, const float *norms, int K, int P, float weight,
                               float *dg) {
    for (int j = 0; j < P; j++) {
        double dot = 0;
        for (int k = 0; k < K; k++) dot += (double)v[(size_t)k * P + j] * dv[(size_t)k * P + j];
        double inv = 1.0 / (norms[j] > 1e-12f ? norms[j] : 1e-12);
        int clamped = norms[j] <= 1e-12f; /* then the map is a plain scaling */
        for (int k = 0; k < K; k++) {
            size_t q = (size_t)k * P + j;
            dg[q] += (float)(weight * (dv[q] - (clamped ? 0 : v[q] * dot)) * inv);
        }
    }
}

static void cpu_cd_term(const ls_backend *be, const float *fx, const float *fy, int C, const float *gx,
                        const float *gy, int D, int P, float b, float weight, float *dgx, float *dgy, double *out,
                        float *ws) {
    (void)be;
    size_t PP = (size_t)P * P;
    float *nfx = ws, *nfy = nfx + (size_t)C * P, *ngx = nfy + (size_t)C * P, *ngy = ngx + (size_t)D * P;
    float *xf = ngy + (size_t)D * P, *xc = xf + PP, *dx = xc + PP, *dngx = dx + PP, *dngy = dngx + (size_t)D * P;
    float *normx = dngy + (size_t)D * P, *normy = normx + P;
    normalize_columns(fx, C, P, nfx, NULL);
    normalize_columns(fy, C, P, nfy, NULL);
    normalize_columns(gx, D, P, ngx, normx);
    normalize_columns(gy, D, P, ngy, normy);
    /* X[hw, ij] = v_x[:, hw] . v_y[:, ij] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, P, P, C, 1.0f, nfx, P, nfy, P, 0.0f, xf, P);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, P, P, D, 1.0f, ngx, P, ngy, P, 0.0f, xc, P);
    double loss = 0, sim = 0;
    for (int h = 0; h < P; h++) {
        double mean = 0;
        for (int j = 0; j < P; j++) mean += xf[(size_t)h * P + j];
        mean /= P;
        for (int j = 0; j < P; j++) {
            size_t q = (size_t)h * P + j;
            double s = xf[q] - mean - b, c = xc[q];
            sim += c;
            loss += -s * (c > 0 ? c : 0);
            dx[q] = c > 0 ? (float)(-s / (double)PP) : 0.0f;
        }
    }
    /* dL/dv_x = v_y dX^T, dL/dv_y = v_x dX. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, D, P, P, 1.0f, ngy, P, dx, P, 0.0f, dngx, P);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, P, P, 1.0f, ngx, P, dx, P, 0.0f, dngy, P);
    normalize_backward(ngx, dngx, normx, D, P, weight, dgx);
    normalize_backward(ngy, dngy, normy, D, P, weight, dgy);
    out[0] = loss / (double)PP;
    out[1] = sim / (double)PP;
}

static void cpu_radam_step(const ls_backend *be, float *param, const float *grad, float *m, float *v, size_t n,
                           int step, float lr, float beta1, float beta2, float eps, float weight_decay) {
    double bc1 = 1 - pow(beta1, step), bc2 = 1 - pow(beta2, step);
    double rho_inf = 2 / (1 - (double)beta2) - 1;
    double rho_t = rho_inf - 2 * step * pow(beta2, step) / bc2;
    double rect = rho_t > 5 ? sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) : 0;
    float sbc2 = (float)sqrt(bc2);
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] + weight_decay * param[i];
        m[i] = beta1 * m[i] + (1 - beta1) * g;
        v[i] = beta2 * v[i] + (1 - beta2) * g * g;
        float mhat = (float)(m[i] / bc1);
        if (rho_t > 5) param[i] -= mhat * lr * (sbc2 / (sqrtf(v[i]) + eps)) * (float)rect;
        else param[i] -= mhat * lr;
    }
}

/* ---- DINO pretraining */

/* Row-wise softmax of (x - c) * inv into out (double sums); when logp != NULL it receives the log. */
static void softmax_row(const float *x, const float *c, int K, double inv, float *out, float *logp) {
    double mx = -INFINITY;
    for (int k = 0; k < K; k++) {
        double v = ((double)x[k] - (c ? c[k] : 0)) * inv;
        mx = v > mx ? v : mx;
    }
    double sum = 0;
    for (int k = 0; k < K; k++) sum += exp(((double)x[k] - (c ? c[k] : 0)) * inv - mx);
    double lse = mx + log(sum);
    for (int k = 0; k < K; k++) {
        double l = ((double)x[k] - (c ? c[k] : 0)) * inv - lse;
        out[k] = (float)exp(l);
        if (logp) logp[k] = (float)l;
    }
}

static void cpu_dino_loss(const ls_backend *be, const float *s, const float *t, const float *c, int B, int ns,
                          int nt, int K, float tau_s, float tau_t, float *ds, float *ws, double *out) {
    size_t BK = (size_t)B * K;
    float *q = ws, *logp = ws + (size_t)nt * BK;
    int rows_t = nt * B, rows_s = ns * B;
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int r = 0; r < rows_t; r++) softmax_row(t + (size_t)r * K, c, K, 1.0 / tau_t, q + (size_t)r * K, NULL);
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int r = 0; r < rows_s; r++)
        softmax_row(s + (size_t)r * K, NULL, K, 1.0 / tau_s, ds + (size_t)r * K, logp + (size_t)r * K);
    int npairs = 0;
    for (int i = 0; i < nt; i++)
        for (int v = 0; v < ns; v++) npairs += v != i;
    /* dL/ds[v,b] = sum over teacher crops i != v of (p - q_i) / (tau_s B npairs). */
    double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static) num_threads(be->nthreads)
    for (int r = 0; r < rows_s; r++) {
        int v = r / B, b = r % B, m = 0;
        float *dr = ds + (size_t)r * K;
        const float *lr = logp + (size_t)r * K;
        double acc = 0, scale = 1.0 / ((double)tau_s * B * npairs);
        for (int i = 0; i < nt; i++)
            if (i != v) {
                const float *qr = q + ((size_t)i * B + b) * K;
                for (int k = 0; k < K; k++) acc -= (double)qr[k] * lr[k];
                m++;
            }
        for (int k = 0; k < K; k++) {
            double qs = 0;
            for (int i = 0; i < nt; i++)
                if (i != v) qs += q[((size_t)i * B + b) * K + k];
            dr[k] = (float)((m * (double)dr[k] - qs) * scale);
        }
        total += acc;
    }
    out[0] = npairs ? total / ((double)B * npairs) : 0;
}

static void cpu_center_update(const ls_backend *be, float *c, const float *t, size_t rows, int K, float m) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int k = 0; k < K; k++) {
        double s = 0;
        for (size_t r = 0; r < rows; r++) s += t[r * (size_t)K + k];
        c[k] = (float)(c[k] * (double)m + s / (double)rows * (1 - (double)m));
    }
}

static void cpu_adamw_step(const ls_backend *be, float *param, const float *grad, float *m, float *v, size_t n,
                           int step, float lr, float beta1, float beta2, float eps, float weight_decay) {
    double bc1 = 1 - pow(beta1, step), bc2 = 1 - pow(beta2, step);
    float decay = (float)(1 - (double)lr * weight_decay), step_size = (float)(lr / bc1), sbc2 = (float)sqrt(bc2);
#pragma omp parallel for simd schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        param[i] *= decay;
        m[i] = beta1 * m[i] + (1 - beta1) * g;
        v[i] = beta2 * v[i] + (1 - beta2) * g * g;
        param[i] -= step_size * m[i] / (sqrtf(v[i]) / sbc2 + eps);
    }
}

static void cpu_ema(const ls_backend *be, float *t, const float *s, size_t n, float mom) {
    float a = 1 - mom;
#pragma omp parallel for simd schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < n; i++) t[i] = mom * t[i] + a * s[i];
}

static void cpu_clip_norm(const ls_backend *be, float *x, size_t n, float max_norm) {
    double s = 0; /* one thread: the same sum whatever the thread count (the norm decides clipping) */
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    double c = max_norm / (sqrt(s) + 1e-6);
    if (c >= 1) return;
    float a = (float)c;
#pragma omp parallel for simd schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < n; i++) x[i] *= a;
}

const ls_ops_loss ls_cpu_loss = {
    .focal = cpu_focal,
    .tversky = cpu_tversky,
    .log_iou = cpu_log_iou,
    .entropy = cpu_entropy,
    .cd_term = cpu_cd_term,
    .radam_step = cpu_radam_step,
    /* DINO */
    .dino_loss = cpu_dino_loss,
    .center_update = cpu_center_update,
    .adamw_step = cpu_adamw_step,
    .ema = cpu_ema,
    .clip_norm = cpu_clip_norm,
};
