/*
 * cpu_nn.c — CPU implementation of the convolutional op family (ops_nn.h). Convolutions are im2col
 * followed by one OpenBLAS GEMM per image (1x1 convolutions skip im2col); elementwise and per-channel
 * work runs under OpenMP with be->nthreads threads.
 */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "ops.h"

static size_t cpu_conv2d_workspace(int Ci, int H, int W, int K) {
    return K == 1 ? 0 : (size_t)Ci * K * K * H * W;
}

/* cols[(c*K + ky)*K + kx][y*W + x] = x[c][y + ky - K/2][x + kx - K/2], zero outside. */
static void im2col(const ls_backend *be, float *cols, const float *x, int C, int H, int W, int K) {
    int p = K / 2;
#pragma omp parallel for collapse(2) schedule(static) num_threads(be->nthreads)
    for (int c = 0; c < C; c++)
        for (int k = 0; k < K * K; k++) {
            int ky = k / K, kx = k % K;
            float *row = cols + ((size_t)c * K * K + k) * H * W;
            const float *plane = x + (size_t)c * H * W;
            for (int y = 0; y < H; y++) {
                int sy = y + ky - p;
                float *out = row + (size_t)y * W;
                if (sy < 0 || sy >= H) {
                    memset(out, 0, (size_t)W * sizeof(float));
                    continue;
                }
                for (int xx = 0; xx < W; xx++) {
                    int sx = xx + kx - p;
                    out[xx] = sx >= 0 && sx < W ? plane[(size_t)sy * W + sx] : 0.0f;
                }
            }
        }
}

/* The adjoint of im2col: dx[c][sy][sx] = sum of the column entries that read it. */
static void col2im(const ls_backend *be, float *dx, const float *cols, int C, int H, int W, int K) {
    int p = K / 2;
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int c = 0; c < C; c++) {
        float *plane = dx + (size_t)c * H * W;
        memset(plane, 0, (size_t)H * W * sizeof(float));
        for (int k = 0; k < K * K; k++) {
            int ky = k / K, kx = k % K;
            const float *row = cols + ((size_t)c * K * K + k) * H * W;
            for (int y = 0; y < H; y++) {
                int sy = y + ky - p;
                if (sy < 0 || sy >= H) continue;
                for (int xx = 0; xx < W; xx++) {
                    int sx = xx + kx - p;
                    if (sx >= 0 && sx < W) plane[(size_t)sy * W + sx] += row[(size_t)y * W + xx];
                }
            }
        }
    }
}

static void cpu_conv2d_fwd(const ls_backend *be, float *y, const float *x, const float *w, const float *b, int B, int Ci,
                           int H, int W, int Co, int K, float *ws) {
    int HW = H * W, CKK = Ci * K * K;
    for (int n = 0; n < B; n++) {
        const float *xb = x + (size_t)n * Ci * HW;
        float *yb = y + (size_t)n * Co * HW;
        const float *cols = xb;
        if (K != 1) {
            im2col(be, ws, xb, Ci, H, W, K);
            cols = ws;
        }
        if (b)
            for (int o = 0; o < Co; o++)
                for (int i = 0; i < HW; i++) yb[(size_t)o * HW + i] = b[o];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Co, HW, CKK, 1.0f, w, CKK, cols, HW, b ? 1.0f : 0.0f,
                    yb, HW);
    }
}

static void cpu_conv2d_bwd(const ls_backend *be, float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, int B, int Ci, int H, int W, int Co, int K, float *ws) {
    int HW = H * W, CKK = Ci * K * K;
    for (int n = 0; n < B; n++) {
        const float *xb = x + (size_t)n * Ci * HW, *dyb = dy + (size_t)n * Co * HW;
        const float *cols = xb;
        if (K != 1) {
            im2col(be, ws, xb, Ci, H, W, K);
            cols = ws;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Co, CKK, HW, 1.0f, dyb, HW, cols, HW, 1.0f, dw, CKK);
        if (db)
            for (int o = 0; o < Co; o++) {
                double s = 0;
                for (int i = 0; i < HW; i++) s += dyb[(size_t)o * HW + i];
                db[o] += (float)s;
            }
        if (!dx) continue;
        float *dxb = dx + (size_t)n * Ci * HW;
        if (K == 1) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Ci, HW, Co, 1.0f, w, Ci, dyb, HW, 0.0f, dxb, HW);
        } else {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, CKK, HW, Co, 1.0f, w, CKK, dyb, HW, 0.0f, ws, HW);
            col2im(be, dxb, ws, Ci, H, W, K);
        }
    }
}

/* Per-channel mean and biased variance over B*HW values, in double. */
static void channel_stats(const float *x, int B, int C, int HW, int c, double *mean, double *var) {
    double s = 0, s2 = 0;
    for (int n = 0; n < B; n++) {
        const float *p = x + ((size_t)n * C + c) * HW;
        for (int i = 0; i < HW; i++) s += p[i];
    }
    double m = s / ((double)B * HW);
    for (int n = 0; n < B; n++) {
        const float *p = x + ((size_t)n * C + c) * HW;
        for (int i = 0; i < HW; i++) s2 += (p[i] - m) * (p[i] - m);
    }
    *mean = m;
    *var = s2 / ((double)B * HW);
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
        for (int b = 0; b < B; b++) {
            const float *p = x + ((size_t)b * C + c) * HW;
            float *q = y + ((size_t)b * C + c) * HW;
            for (int i = 0; i < HW; i++) q[i] = p[i] * g + sh;
        }
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
            const float *p = x + ((size_t)b * C + c) * HW;
            float *q = y + ((size_t)b * C + c) * HW;
            for (int i = 0; i < HW; i++) q[i] = p[i] * g + sh;
        }
}

static void cpu_bn_bwd(const ls_backend *be, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                       const float *mean, const float *rstd, const float *gamma, int B, int C, int HW) {
    double n = (double)B * HW;
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int c = 0; c < C; c++) {
        double sdy = 0, sdyx = 0;
        for (int b = 0; b < B; b++) {
            const float *g = dy + ((size_t)b * C + c) * HW, *p = x + ((size_t)b * C + c) * HW;
            for (int i = 0; i < HW; i++) {
                sdy += g[i];
                sdyx += g[i] * (p[i] - mean[c]) * rstd[c];
            }
        }
        dbeta[c] += (float)sdy;
        dgamma[c] += (float)sdyx;
        float k = gamma[c] * rstd[c], a = (float)(sdy / n), bb = (float)(sdyx / n);
        for (int b = 0; b < B; b++) {
            const float *g = dy + ((size_t)b * C + c) * HW, *p = x + ((size_t)b * C + c) * HW;
            float *q = dx + ((size_t)b * C + c) * HW;
            for (int i = 0; i < HW; i++) q[i] = k * (g[i] - a - (p[i] - mean[c]) * rstd[c] * bb);
        }
    }
}

static void cpu_relu_fwd(const ls_backend *be, float *y, const float *x, size_t n) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
}

static void cpu_relu_bwd(const ls_backend *be, float *dx, const float *dy, const float *y, size_t n) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < n; i++) dx[i] = y[i] > 0 ? dy[i] : 0.0f;
}

static void cpu_dropout2d(const ls_backend *be, float *y, const float *x, const float *keep, int B, int C, int HW) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int bc = 0; bc < B * C; bc++)
        for (int i = 0; i < HW; i++) y[(size_t)bc * HW + i] = x[(size_t)bc * HW + i] * keep[bc];
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

static void cpu_upsample2x_fwd(const ls_backend *be, float *y, const float *x, int B, int C, int H, int W) {
    int OH = 2 * H, OW = 2 * W;
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int bc = 0; bc < B * C; bc++) {
        const float *p = x + (size_t)bc * H * W;
        float *q = y + (size_t)bc * OH * OW;
        for (int oy = 0; oy < OH; oy++) {
            int y0, y1;
            float a0, a1;
            taps(oy, H, &y0, &y1, &a0, &a1);
            for (int ox = 0; ox < OW; ox++) {
                int x0, x1;
                float b0, b1;
                taps(ox, W, &x0, &x1, &b0, &b1);
                q[(size_t)oy * OW + ox] = a0 * (b0 * p[(size_t)y0 * W + x0] + b1 * p[(size_t)y0 * W + x1]) +
                                          a1 * (b0 * p[(size_t)y1 * W + x0] + b1 * p[(size_t)y1 * W + x1]);
            }
        }
    }
}

static void cpu_upsample2x_bwd(const ls_backend *be, float *dx, const float *dy, int B, int C, int H, int W) {
    int OH = 2 * H, OW = 2 * W;
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int bc = 0; bc < B * C; bc++) {
        float *p = dx + (size_t)bc * H * W;
        const float *q = dy + (size_t)bc * OH * OW;
        memset(p, 0, (size_t)H * W * sizeof(float));
        for (int oy = 0; oy < OH; oy++) {
            int y0, y1;
            float a0, a1;
            taps(oy, H, &y0, &y1, &a0, &a1);
            for (int ox = 0; ox < OW; ox++) {
                int x0, x1;
                float b0, b1;
                taps(ox, W, &x0, &x1, &b0, &b1);
                float g = q[(size_t)oy * OW + ox];
                p[(size_t)y0 * W + x0] += a0 * b0 * g;
                p[(size_t)y0 * W + x1] += a0 * b1 * g;
                p[(size_t)y1 * W + x0] += a1 * b0 * g;
                p[(size_t)y1 * W + x1] += a1 * b1 * g;
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
