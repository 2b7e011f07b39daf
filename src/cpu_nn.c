/*
 * cpu_nn.c — CPU implementation of the convolutional op family (ops_nn.h). KxK convolutions are direct
 * (cpu_conv.c); 1x1 convolutions are one OpenBLAS GEMM per image; elementwise and per-channel work runs
 * under OpenMP with be->nthreads threads.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "cpu_conv.h"
#include "ops.h"

static size_t cpu_conv2d_workspace(int Ci, int H, int W, int Co, int K) {
    return K == 1 ? 0 : ls_cpu_conv_workspace(Ci, H, W, Co, K);
}

static void cpu_conv2d_fwd(const ls_backend *be, float *y, const float *x, const float *w, const float *b, int B, int Ci,
                           int H, int W, int Co, int K, float *ws) {
    int HW = H * W;
    if (K != 1) {
        ls_cpu_conv_fwd(be->nthreads, ls_cpu_vector_level(), y, x, w, b, B, Ci, H, W, Co, K, ws);
        return;
    }
    for (int n = 0; n < B; n++) {
        const float *xb = x + (size_t)n * Ci * HW;
        float *yb = y + (size_t)n * Co * HW;
        if (b)
            for (int o = 0; o < Co; o++)
                for (int i = 0; i < HW; i++) yb[(size_t)o * HW + i] = b[o];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Co, HW, Ci, 1.0f, w, Ci, xb, HW, b ? 1.0f : 0.0f, yb, HW);
    }
}

static void cpu_conv2d_bwd(const ls_backend *be, float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, int B, int Ci, int H, int W, int Co, int K, float *ws) {
    int HW = H * W;
    if (db) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
        for (int o = 0; o < Co; o++) {
            double s = 0;
            for (int n = 0; n < B; n++) {
                const float *g = dy + ((size_t)n * Co + o) * HW;
                for (int i0 = 0; i0 < HW; i0 += 4096) { /* float partial sums that vectorise, added in double */
                    int i1 = HW - i0 < 4096 ? HW : i0 + 4096;
                    float part = 0;
                    for (int i = i0; i < i1; i++) part += g[i];
                    s += part;
                }
            }
            db[o] += (float)s;
        }
    }
    if (K == 1) {
        for (int n = 0; n < B; n++) {
            const float *xb = x + (size_t)n * Ci * HW, *dyb = dy + (size_t)n * Co * HW;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Co, Ci, HW, 1.0f, dyb, HW, xb, HW, 1.0f, dw, Ci);
            if (dx)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Ci, HW, Co, 1.0f, w, Ci, dyb, HW, 0.0f,
                            dx + (size_t)n * Ci * HW, HW);
        }
        return;
    }
    /* dx first: it repacks the weights into ws, which the weight gradient does not read. */
    if (dx) ls_cpu_conv_bwd_dx(be->nthreads, ls_cpu_vector_level(), dx, dy, w, B, Ci, H, W, Co, K, ws);
    ls_cpu_conv_bwd_dw(be->nthreads, dw, dy, x, B, Ci, H, W, Co, K, ws);
}

/* Reductions over long channel planes: float partial sums of CHUNK elements (vectorised by `omp simd`),
 * accumulated in double, so the result is as good as a double loop without its scalar speed. */
#define CHUNK 1024

static double sum_f(const float *p, int n) {
    double s = 0;
    for (int i0 = 0; i0 < n; i0 += CHUNK) {
        int i1 = n - i0 < CHUNK ? n : i0 + CHUNK;
        float part = 0;
#pragma omp simd reduction(+ : part)
        for (int i = i0; i < i1; i++) part += p[i];
        s += part;
    }
    return s;
}

/* Sum of (p - m)^2. */
static double sumsq_dev(const float *p, int n, float m) {
    double s = 0;
    for (int i0 = 0; i0 < n; i0 += CHUNK) {
        int i1 = n - i0 < CHUNK ? n : i0 + CHUNK;
        float part = 0;
#pragma omp simd reduction(+ : part)
        for (int i = i0; i < i1; i++) part += (p[i] - m) * (p[i] - m);
        s += part;
    }
    return s;
}

/* Sums of g and of g * (p - m). */
static void sum_g_gdev(const float *g, const float *p, int n, float m, double *sg, double *sgd) {
    for (int i0 = 0; i0 < n; i0 += CHUNK) {
        int i1 = n - i0 < CHUNK ? n : i0 + CHUNK;
        float a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
        for (int i = i0; i < i1; i++) a += g[i], b += g[i] * (p[i] - m);
        *sg += a, *sgd += b;
    }
}

static void affine(float *q, const float *p, int n, float g, float sh) {
#pragma omp simd
    for (int i = 0; i < n; i++) q[i] = p[i] * g + sh;
}

/* Per-channel mean and biased variance over B*HW values (two passes; the deviations' sum in float
 * partials about a float mean, so no cancellation). */
static void channel_stats(const float *x, int B, int C, int HW, int c, double *mean, double *var) {
    double s = 0, s2 = 0;
    for (int n = 0; n < B; n++) s += sum_f(x + ((size_t)n * C + c) * HW, HW);
    double m = s / ((double)B * HW);
    for (int n = 0; n < B; n++) s2 += sumsq_dev(x + ((size_t)n * C + c) * HW, HW, (float)m);
    /* the float mean differs from m by d; sum (x-m)^2 = sum (x-mf)^2 - N d^2 */
    double d = (double)(float)m - m;
    *mean = m;
    *var = s2 / ((double)B * HW) - d * d;
    if (*var < 0) *var = 0;
}

static void cpu_bn_fwd_train(const ls_backend *be, float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, float *run_mean, float *run_var, int B, int C,
                             int HW, float momentum, float eps) {
    double n = (double)B * HW;
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int c = 0; c < C; c++) {
        double m, v;
        channel_stats(x, B, C, HW, c, &m, &v);
        float r = (float)(1.0 / sqrt(v + eps)), g = gamma[c] * r, sh = beta[c] - (float)m * g;
        for (int b = 0; b < B; b++) affine(y + ((size_t)b * C + c) * HW, x + ((size_t)b * C + c) * HW, HW, g, sh);
        mean[c] = (float)m, rstd[c] = r;
        run_mean[c] = (1 - momentum) * run_mean[c] + momentum * (float)m;
        run_var[c] = (1 - momentum) * run_var[c] + momentum * (float)(n > 1 ? v * n / (n - 1) : v);
    }
}

static void cpu_bn_fwd_eval(const ls_backend *be, float *y, const float *x, const float *gamma, const float *beta,
                            const float *run_mean, const float *run_var, int B, int C, int HW, float eps) {
#pragma omp parallel for collapse(2) schedule(static) num_threads(be->nthreads)
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float g = gamma[c] / sqrtf(run_var[c] + eps), sh = beta[c] - run_mean[c] * g;
            affine(y + ((size_t)b * C + c) * HW, x + ((size_t)b * C + c) * HW, HW, g, sh);
        }
}

static void cpu_bn_bwd(const ls_backend *be, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                       const float *mean, const float *rstd, const float *gamma, int B, int C, int HW) {
    double n = (double)B * HW;
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int c = 0; c < C; c++) {
        double sdy = 0, sdyx = 0;
        float m = mean[c], rs = rstd[c];
        for (int b = 0; b < B; b++)
            sum_g_gdev(dy + ((size_t)b * C + c) * HW, x + ((size_t)b * C + c) * HW, HW, m, &sdy, &sdyx);
        sdyx *= rs;
        dbeta[c] += (float)sdy;
        dgamma[c] += (float)sdyx;
        /* dx = k * (g - a - (x - m) * rs * bb) = k*g + (k*m*rs*bb - k*a) - k*rs*bb * x */
        float k = gamma[c] * rs, a = (float)(sdy / n), bb = (float)(sdyx / n), kx = k * rs * bb, k0 = k * (m * rs * bb - a);
        for (int b = 0; b < B; b++) {
            const float *g = dy + ((size_t)b * C + c) * HW, *p = x + ((size_t)b * C + c) * HW;
            float *q = dx + ((size_t)b * C + c) * HW;
#pragma omp simd
            for (int i = 0; i < HW; i++) q[i] = k * g[i] - kx * p[i] + k0;
        }
    }
}

static void cpu_relu_fwd(const ls_backend *be, float *y, const float *x, size_t n) {
#pragma omp parallel for simd schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
}

static void cpu_relu_bwd(const ls_backend *be, float *dx, const float *dy, const float *y, size_t n) {
#pragma omp parallel for simd schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < n; i++) dx[i] = y[i] > 0 ? dy[i] : 0.0f;
}

static void cpu_dropout2d(const ls_backend *be, float *y, const float *x, const float *keep, int B, int C, int HW) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int bc = 0; bc < B * C; bc++) {
        float k = keep[bc];
        const float *p = x + (size_t)bc * HW;
        float *q = y + (size_t)bc * HW;
#pragma omp simd
        for (int i = 0; i < HW; i++) q[i] = p[i] * k;
    }
}

/* Source taps of x2 upsampling along one axis: output o reads i0 and i1 with weights l0 and l1. */
static void taps(int o, int n, int *i0, int *i1, float *l0, float *l1) {
    float s = (o + 0.5f) * 0.5f - 0.5f;
    if (s < 0) s = 0;
    *i0 = (int)s;
    *i1 = *i0 + (*i0 < n - 1);
    *l1 = s - (float)*i0;
    *l0 = 1.0f - *l1;
}

/* Along an axis of n samples, x2 upsampling with align_corners=False is out[0] = in[0], out[2i] =
 * .25 in[i-1] + .75 in[i], out[2i+1] = .75 in[i] + .25 in[i+1], out[2n-1] = in[n-1] (what taps() gives).
 * Rows use taps(); columns use this form, a row segment at a time (UP_SEG columns, stack buffers). */
#define UP_SEG 256

static void cpu_upsample2x_fwd(const ls_backend *be, float *y, const float *x, int B, int C, int H, int W) {
    int OH = 2 * H, OW = 2 * W;
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int bc = 0; bc < B * C; bc++) {
        const float *p = x + (size_t)bc * H * W;
        float *q = y + (size_t)bc * OH * OW;
        float t[UP_SEG + 2];
        for (int oy = 0; oy < OH; oy++) {
            int y0, y1;
            float a0, a1;
            taps(oy, H, &y0, &y1, &a0, &a1);
            const float *r0 = p + (size_t)y0 * W, *r1 = p + (size_t)y1 * W;
            for (int s0 = 0; s0 < W; s0 += UP_SEG) {
                /* vertical blend of columns s0-1 .. s1 (clamped) into t, then the horizontal taps */
                int s1 = W - s0 < UP_SEG ? W : s0 + UP_SEG, lo = s0 > 0 ? s0 - 1 : 0, hi = s1 < W ? s1 + 1 : W;
#pragma omp simd
                for (int i = lo; i < hi; i++) t[i - lo] = a0 * r0[i] + a1 * r1[i];
                float *row = q + (size_t)oy * OW;
                for (int xx = s0; xx < s1; xx++) {
                    float l = t[(xx > 0 ? xx - 1 : 0) - lo], c = t[xx - lo], r = t[(xx < W - 1 ? xx + 1 : W - 1) - lo];
                    row[2 * xx] = xx > 0 ? 0.25f * l + 0.75f * c : c;
                    row[2 * xx + 1] = xx < W - 1 ? 0.75f * c + 0.25f * r : c;
                }
            }
        }
    }
}

/* The adjoint: dx row y collects the output rows whose taps read it (at most 2y-1 .. 2y+2), blended
 * vertically into v, then the columns' adjoint: dx[x] = wl v[2x-1] + c0 v[2x] + c1 v[2x+1] + wr v[2x+2]. */
static void cpu_upsample2x_bwd(const ls_backend *be, float *dx, const float *dy, int B, int C, int H, int W) {
    int OH = 2 * H, OW = 2 * W;
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int bc = 0; bc < B * C; bc++) {
        float *p = dx + (size_t)bc * H * W;
        const float *q = dy + (size_t)bc * OH * OW;
        float v[2 * UP_SEG + 4];
        for (int yy = 0; yy < H; yy++) {
            const float *rows[4];
            float wts[4];
            int nr = 0;
            for (int oy = 2 * yy - 1; oy <= 2 * yy + 2; oy++) {
                if (oy < 0 || oy >= OH) continue;
                int y0, y1;
                float a0, a1;
                taps(oy, H, &y0, &y1, &a0, &a1);
                float wgt = (y0 == yy ? a0 : 0.0f) + (y1 == yy ? a1 : 0.0f);
                if (wgt != 0.0f) rows[nr] = q + (size_t)oy * OW, wts[nr++] = wgt;
            }
            float *out = p + (size_t)yy * W;
            for (int s0 = 0; s0 < W; s0 += UP_SEG) {
                int s1 = W - s0 < UP_SEG ? W : s0 + UP_SEG;
                int lo = 2 * s0 > 0 ? 2 * s0 - 1 : 0, hi = 2 * s1 + 1 < OW ? 2 * s1 + 1 : OW; /* v covers [lo, hi) */
                for (int i = lo; i < hi; i++) v[i - lo] = 0.0f;
                for (int r = 0; r < nr; r++) {
                    const float *row = rows[r];
                    float wr = wts[r];
#pragma omp simd
                    for (int i = lo; i < hi; i++) v[i - lo] += wr * row[i];
                }
                for (int xx = s0; xx < s1; xx++) {
                    float c0 = xx > 0 ? 0.75f : 1.0f, c1 = xx < W - 1 ? 0.75f : 1.0f;
                    float acc = c0 * v[2 * xx - lo] + c1 * v[2 * xx + 1 - lo];
                    if (xx > 0) acc += 0.25f * v[2 * xx - 1 - lo];
                    if (xx < W - 1) acc += 0.25f * v[2 * xx + 2 - lo];
                    out[xx] = acc;
                }
            }
        }
    }
}

static void cpu_concat_fwd(const ls_backend *be, float *y, const float *a, const float *b, int B, int Ca, int Cb, int HW) {
    (void)be;
    for (int n = 0; n < B; n++) {
        memcpy(y + (size_t)n * (Ca + Cb) * HW, a + (size_t)n * Ca * HW, (size_t)Ca * HW * sizeof(float));
        memcpy(y + ((size_t)n * (Ca + Cb) + Ca) * HW, b + (size_t)n * Cb * HW, (size_t)Cb * HW * sizeof(float));
    }
}

static void cpu_concat_bwd(const ls_backend *be, float *da, float *db, const float *dy, int B, int Ca, int Cb, int HW) {
    (void)be;
    for (int n = 0; n < B; n++) {
        if (da) memcpy(da + (size_t)n * Ca * HW, dy + (size_t)n * (Ca + Cb) * HW, (size_t)Ca * HW * sizeof(float));
        if (db) memcpy(db + (size_t)n * Cb * HW, dy + ((size_t)n * (Ca + Cb) + Ca) * HW, (size_t)Cb * HW * sizeof(float));
    }
}

const ls_ops_nn ls_cpu_nn = {
    .conv2d_workspace = cpu_conv2d_workspace,
    .conv2d_fwd = cpu_conv2d_fwd,
    .conv2d_bwd = cpu_conv2d_bwd,
    .batchnorm_fwd_train = cpu_bn_fwd_train,
    .batchnorm_fwd_eval = cpu_bn_fwd_eval,
    .batchnorm_bwd = cpu_bn_bwd,
    .relu_fwd = cpu_relu_fwd,
    .relu_bwd = cpu_relu_bwd,
    .dropout2d = cpu_dropout2d,
    .upsample2x_fwd = cpu_upsample2x_fwd,
    .upsample2x_bwd = cpu_upsample2x_bwd,
    .concat_fwd = cpu_concat_fwd,
    .concat_bwd = cpu_concat_bwd,
};
