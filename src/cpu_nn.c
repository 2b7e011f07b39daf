/*
 * cpu_nn.c — CPU implementation of the convolutional op family (ops_nn.h). KxK convolutions are tiled
 * im2col + GEMM over the whole batch (see conv_tiled_fwd); 1x1 convolutions are one OpenBLAS GEMM per
 * image without im2col; elementwise and per-channel work runs under OpenMP with be->nthreads threads.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "ops.h"

/* KxK convolutions (K > 1) run as tiles: a tile is a run of at most CONV_TILE_FLOATS / (Ci*K*K) consecutive
 * pixels of one image, im2col'ed into a per-thread buffer small enough to stay in L2 and multiplied by one
 * single-threaded GEMM (OpenBLAS runs single-threaded inside our OpenMP regions); the threads split the
 * B * tiles tasks. So the whole batch is one parallel loop with no im2col of a full image (which at 16
 * channels and 448x448 is 115 MB, far out of cache). The input gradient is the forward convolution of dy
 * with the flipped, transposed kernel (stride 1, padding K/2), so backward needs no col2im; the weight
 * gradient is accumulated per thread slot (transposed) and summed at the end.
 *
 * Workspace layout (floats): [flipped kernel Ci*Co*K*K] then CONV_SLOTS slots of [cols CONV_TILE_FLOATS or
 * one pixel's worth, whichever is larger][dw^T partial Ci*K*K x Co]. It depends on the shape only, not on the
 * thread count: at most CONV_SLOTS threads work on a convolution. 1x1 convolutions need none. */
#define CONV_SLOTS 16
#define CONV_TILE_FLOATS (128 * 1024)

static size_t conv_slot_cols(int Ci, int Co, int K) {
    size_t c = (size_t)(Ci > Co ? Ci : Co) * K * K; /* the tile holds at least one pixel */
    return c > CONV_TILE_FLOATS ? c : CONV_TILE_FLOATS;
}

static size_t cpu_conv2d_workspace(int Ci, int H, int W, int Co, int K) {
    (void)H, (void)W;
    if (K == 1) return 0;
    size_t wk = (size_t)Ci * Co * K * K;
    return wk + CONV_SLOTS * (conv_slot_cols(Ci, Co, K) + wk);
}

static int conv_threads(const ls_backend *be) { return be->nthreads < CONV_SLOTS ? be->nthreads : CONV_SLOTS; }

/* Pixels per tile for a CKK-row im2col. */
static int tile_pixels(int CKK, int HW) {
    int n = CONV_TILE_FLOATS / CKK;
    return n < 1 ? 1 : n > HW ? HW : n;
}

/* im2col of pixels [p0, p0+n) of one image: cols[(c*K + ky)*K + kx][p - p0] = x[c][y + ky - K/2][x + kx - K/2],
 * zero outside; cols rows are n floats apart. */
static void im2col_tile(float *cols, const float *x, int C, int H, int W, int K, int p0, int n) {
    int p = K / 2;
    for (int c = 0; c < C; c++) {
        const float *plane = x + (size_t)c * H * W;
        for (int ky = 0; ky < K; ky++)
            for (int kx = 0; kx < K; kx++) {
                float *out = cols + ((size_t)(c * K + ky) * K + kx) * n;
                int q = p0, end = p0 + n;
                while (q < end) {
                    int y = q / W, x0 = q - y * W, x1 = W < x0 + (end - q) ? W : x0 + (end - q);
                    int sy = y + ky - p, len = x1 - x0;
                    if (sy < 0 || sy >= H) {
                        memset(out, 0, (size_t)len * sizeof(float));
                    } else {
                        /* source columns x0+kx-p .. x1-1+kx-p, clipped to [0, W) */
                        int lo = x0 + kx - p, hi = x1 + kx - p, a = lo < 0 ? -lo : 0, b = hi > W ? hi - W : 0;
                        const float *src = plane + (size_t)sy * W + lo;
                        for (int i = 0; i < a; i++) out[i] = 0.0f;
                        memcpy(out + a, src + a, (size_t)(len - a - b) * sizeof(float));
                        for (int i = len - b; i < len; i++) out[i] = 0.0f;
                    }
                    out += len, q += len;
                }
            }
    }
}

/* y = conv(x, w) + b for K > 1 over the whole batch, tiled (see above). */
static void conv_tiled_fwd(const ls_backend *be, float *y, const float *x, const float *w, const float *b, int B,
                           int Ci, int H, int W, int Co, int K, float *slots, size_t slot_stride) {
    int HW = H * W, CKK = Ci * K * K, N = tile_pixels(CKK, HW), tiles = (HW + N - 1) / N;
#pragma omp parallel num_threads(conv_threads(be))
    {
        float *cols = slots + (size_t)omp_get_thread_num() * slot_stride;
#pragma omp for schedule(static)
        for (int t = 0; t < B * tiles; t++) {
            int n = t / tiles, p0 = (t % tiles) * N, len = HW - p0 < N ? HW - p0 : N;
            const float *xb = x + (size_t)n * Ci * HW;
            float *yt = y + (size_t)n * Co * HW + p0;
            im2col_tile(cols, xb, Ci, H, W, K, p0, len);
            if (b)
                for (int o = 0; o < Co; o++)
                    for (int i = 0; i < len; i++) yt[(size_t)o * HW + i] = b[o];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Co, len, CKK, 1.0f, w, CKK, cols, len,
                        b ? 1.0f : 0.0f, yt, HW);
        }
    }
}

static void cpu_conv2d_fwd(const ls_backend *be, float *y, const float *x, const float *w, const float *b, int B, int Ci,
                           int H, int W, int Co, int K, float *ws) {
    int HW = H * W;
    if (K != 1) {
        size_t wk = (size_t)Ci * Co * K * K;
        conv_tiled_fwd(be, y, x, w, b, B, Ci, H, W, Co, K, ws + wk, conv_slot_cols(Ci, Co, K) + wk);
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
    int HW = H * W, CKK = Ci * K * K;
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
    size_t wk = (size_t)Ci * Co * K * K, stride = conv_slot_cols(Ci, Co, K) + wk;
    float *slots = ws + wk;
    if (dx) {
        /* wf[ci][co][ky][kx] = w[co][ci][K-1-ky][K-1-kx]: dx = conv(dy, wf) with the same padding. */
        float *wf = ws;
        int KK = K * K;
        for (int o = 0; o < Co; o++)
            for (int c = 0; c < Ci; c++)
                for (int k = 0; k < KK; k++) wf[((size_t)c * Co + o) * KK + k] = w[((size_t)o * Ci + c) * KK + KK - 1 - k];
        conv_tiled_fwd(be, dx, dy, wf, NULL, B, Co, H, W, Ci, K, slots, stride);
    }
    /* dw: per-slot partial sums of dy_tile . cols_tile^T, then summed into dw in slot order. */
    int N = tile_pixels(CKK, HW), tiles = (HW + N - 1) / N, nt = conv_threads(be);
    for (int s = 0; s < nt; s++) memset(slots + (size_t)s * stride + stride - wk, 0, wk * sizeof(float));
#pragma omp parallel num_threads(nt)
    {
        float *cols = slots + (size_t)omp_get_thread_num() * stride, *part = cols + stride - wk;
#pragma omp for schedule(static)
        for (int t = 0; t < B * tiles; t++) {
            int n = t / tiles, p0 = (t % tiles) * N, len = HW - p0 < N ? HW - p0 : N;
            im2col_tile(cols, x + (size_t)n * Ci * HW, Ci, H, W, K, p0, len);
            /* dw^T[CKK][Co] += cols . dy_tile^T: the long pixel axis is the reduction, the larger of CKK
             * and Co the rows (OpenBLAS runs this shape about 1.6x faster than dy_tile . cols^T) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, CKK, Co, len, 1.0f, cols, len,
                        dy + (size_t)n * Co * HW + p0, HW, 1.0f, part, Co);
        }
    }
    for (int s = 0; s < nt; s++) {
        const float *part = slots + (size_t)s * stride + stride - wk;
        for (int o = 0; o < Co; o++)
            for (int r = 0; r < CKK; r++) dw[(size_t)o * CKK + r] += part[(size_t)r * Co + o];
    }
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
