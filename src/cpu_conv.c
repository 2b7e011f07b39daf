/*
 * cpu_conv.c — KxK convolutions for the CPU op family (K odd, stride 1, zero padding K/2, NCHW).
 *
 * Forward and input gradient are direct. The decoder's convolutions have few channels (16-64) on large
 * planes, where im2col + GEMM spent as long packing as multiplying (a 16->16 3x3 layer at 448x448 ran at
 * ~50% of the machine's sgemm rate, the 16->1 output layer at 12%: docs/benchmarks.md). Here each thread
 * copies a band of input rows, zero-padded on all sides, into its own buffer, and a register-blocked kernel
 * (cpu_conv_kern.h, compiled for AVX-512, AVX2 + FMA and plain vectors, picked at run time) reads it. Work
 * splits into (image, band of output rows) tasks under one static OpenMP loop, so each output is computed
 * by one thread in a fixed order: its bits do not depend on the thread count. The input gradient is the
 * forward convolution of dy with the flipped, transposed kernel.
 *
 * The weight gradient stays im2col + GEMM: there the pixels are the GEMM's long reduction and OpenBLAS
 * packs dy once per tile, which a direct kernel tried here did not match on the 28-224 layers (76-113
 * against 144-154 GFLOP/s). A tile is a run of at most CONV_TILE_FLOATS / (Ci*K*K) pixels of one image,
 * im2col'ed into a per-thread buffer that stays in L2; the threads split the (image, tile) tasks and sum
 * dw^T per thread slot, the slots added in order at the end.
 *
 * Workspace (floats): [repacked weights Ci*Co*K*K] then CONV_SLOTS slots, each the largest of: a forward
 * band, an input-gradient band, or [im2col tile][dw^T partial Ci*K*K x Co]. Sizes come from the shape
 * alone, not the thread count (at most CONV_SLOTS threads work on a convolution).
 */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "cpu_conv.h"
#include "ops.h"

#define CONV_SLOTS 16
#define CONV_BAND_FLOATS (64 * 1024) /* one band: 256 KB, to stay in L2 while its rows are reused */
#define VLMAX 16                     /* widest vector of any kernel: sizes are rounded to it */
#define NVMAX 3                      /* pixel vectors per forward block */

/* One convolution pass as the kernel sees it: ci channels read, co written (for the input gradient, the
 * layer's Co and Ci); band rows of Wp floats (W rounded up to whole vectors, plus the taps' reach); at most
 * R output rows per band. */
typedef struct {
    int ci, co, H, W, K, Wp, R;
} conv_geom;

static conv_geom conv_plan(int ci, int co, int H, int W, int K) {
    conv_geom g = {.ci = ci, .co = co, .H = H, .W = W, .K = K};
    g.Wp = (W + VLMAX - 1) / VLMAX * VLMAX + K - 1;
    long R = (CONV_BAND_FLOATS - (long)ci * (K - 1) * g.Wp) / ((long)ci * g.Wp);
    g.R = R < 1 ? 1 : R > H ? H : (int)R;
    return g;
}

static size_t band_floats(const conv_geom *g, int rows) { return (size_t)g->ci * (rows + g->K - 1) * g->Wp; }

/* The weight gradient's im2col tile: pixels per tile, and its floats (at least one pixel's worth). */
#define CONV_TILE_FLOATS (128 * 1024)
static int tile_pixels(int CKK, int HW) {
    int n = CONV_TILE_FLOATS / CKK;
    return n < 1 ? 1 : n > HW ? HW : n;
}

static size_t slot_stride(int Ci, int H, int W, int Co, int K) {
    conv_geom f = conv_plan(Ci, Co, H, W, K), d = conv_plan(Co, Ci, H, W, K);
    size_t CKK = (size_t)Ci * K * K, s = band_floats(&f, f.R), t = band_floats(&d, d.R);
    size_t u = (CKK > CONV_TILE_FLOATS ? CKK : CONV_TILE_FLOATS) + CKK * Co;
    s = s > t ? s : t;
    return s > u ? s : u;
}

size_t ls_cpu_conv_workspace(int Ci, int H, int W, int Co, int K) {
    return (size_t)Ci * Co * K * K + CONV_SLOTS * slot_stride(Ci, H, W, Co, K);
}

/* band[c][i][j] = x[c][y0 - K/2 + i][j - K/2] for i < rows + K - 1, j < Wp; zero outside the image. */
static void pad_band(float *band, const float *x, const conv_geom *g, int y0, int rows) {
    int p = g->K / 2, n = rows + g->K - 1;
    for (int c = 0; c < g->ci; c++)
        for (int i = 0; i < n; i++) {
            float *d = band + ((size_t)c * n + i) * g->Wp;
            int sy = y0 - p + i;
            if (sy < 0 || sy >= g->H) {
                memset(d, 0, (size_t)g->Wp * sizeof(float));
                continue;
            }
            memset(d, 0, (size_t)p * sizeof(float));
            memcpy(d + p, x + ((size_t)c * g->H + sy) * g->W, (size_t)g->W * sizeof(float));
            memset(d + p + g->W, 0, (size_t)(g->Wp - p - g->W) * sizeof(float));
        }
}

/* The kernels, once per instruction set. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define KSUF avx512
#define KTARGET __attribute__((target("avx512f,avx2,fma")))
#define V __m512
#define VL 16
#define COBMAX 8
#define V_LOADU(p) _mm512_loadu_ps(p)
#define V_STOREU(p, v) _mm512_storeu_ps(p, v)
#define V_SET1(s) _mm512_set1_ps(s)
#define V_ZERO() _mm512_setzero_ps()
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#include "cpu_conv_kern.h"

#define KSUF avx2
#define KTARGET __attribute__((target("avx2,fma")))
#define V __m256
#define VL 8
#define COBMAX 4
#define V_LOADU(p) _mm256_loadu_ps(p)
#define V_STOREU(p, v) _mm256_storeu_ps(p, v)
#define V_SET1(s) _mm256_set1_ps(s)
#define V_ZERO() _mm256_setzero_ps()
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#include "cpu_conv_kern.h"
#define LS_CONV_X86 1
#endif

/* Plain vectors (SSE2 on x86-64, whatever the target has elsewhere); no fused multiply-add. */
typedef float vgen __attribute__((vector_size(16)));
typedef float vgen_u __attribute__((vector_size(16), aligned(4), may_alias));
#define KSUF generic
#define KTARGET
#define V vgen
#define VL 4
#define COBMAX 4
#define V_LOADU(p) (*(const vgen_u *)(p))
#define V_STOREU(p, v) (*(vgen_u *)(p) = (v))
#define V_SET1(s) ((vgen){0, 0, 0, 0} + (s))
#define V_ZERO() ((vgen){0, 0, 0, 0})
#define V_FMA(a, b, c) ((a) * (b) + (c))
#include "cpu_conv_kern.h"

typedef void (*fwd_band_fn)(const conv_geom *, float *, const float *, const float *, const float *, int, int);

/* The widest kernel for a vector level (ls_cpu_vector_level's scale, which asks for more of AVX-512 than
 * the kernel uses). */
static fwd_band_fn pick_kernel(int level) {
#ifdef LS_CONV_X86
    if (level >= 3) return fwd_band_avx512;
    if (level >= 2) return fwd_band_avx2;
#else
    (void)level;
#endif
    return fwd_band_generic;
}

/* wt[((c*K + ky)*K + kx)*co + o]: the weight of input channel c for output o. Forward: w[o][c][ky][kx].
 * Input gradient (the pass reads dy, so c runs over the layer's Co and o over its Ci): the flipped kernel
 * w[c][o][K-1-ky][K-1-kx]. */
static void repack(float *wt, const float *w, int Ci, int Co, int K, int flip) {
    int KK = K * K;
    for (int o = 0; o < Co; o++)
        for (int c = 0; c < Ci; c++)
            for (int k = 0; k < KK; k++) {
                float v = w[((size_t)o * Ci + c) * KK + k];
                if (flip)
                    wt[((size_t)o * KK + KK - 1 - k) * Ci + c] = v;
                else
                    wt[((size_t)c * KK + k) * Co + o] = v;
            }
}

/* Band height for a pass: the plan's, lowered so that each thread gets about four tasks. */
static int band_rows(const conv_geom *g, int B, int nt) {
    int want = (B * g->H + 4 * nt - 1) / (4 * nt);
    return want < g->R ? (want < 1 ? 1 : want) : g->R;
}

/* y[B][co][H][W] = conv(x[B][ci][H][W]) with repacked weights wt (+ b). */
static void conv_pass(int nt, int level, float *y, const float *x, const float *wt, const float *b, int B,
                      const conv_geom *g, float *slots, size_t stride) {
    fwd_band_fn fwd_band = pick_kernel(level);
    int R = band_rows(g, B, nt), bands = (g->H + R - 1) / R;
    size_t in = (size_t)g->ci * g->H * g->W, out = (size_t)g->co * g->H * g->W;
#pragma omp parallel num_threads(nt)
    {
        float *band = slots + (size_t)omp_get_thread_num() * stride;
#pragma omp for schedule(static)
        for (int t = 0; t < B * bands; t++) {
            int n = t / bands, y0 = (t % bands) * R, rows = g->H - y0 < R ? g->H - y0 : R;
            pad_band(band, x + n * in, g, y0, rows);
            fwd_band(g, y + n * out, band, wt, b, y0, rows);
        }
    }
}

static int conv_threads(int nthreads) { return nthreads < CONV_SLOTS ? nthreads : CONV_SLOTS; }

void ls_cpu_conv_fwd(int nthreads, int level, float *y, const float *x, const float *w, const float *b, int B, int Ci,
                     int H, int W, int Co, int K, float *ws) {
    conv_geom g = conv_plan(Ci, Co, H, W, K);
    repack(ws, w, Ci, Co, K, 0);
    conv_pass(conv_threads(nthreads), level, y, x, ws, b, B, &g, ws + (size_t)Ci * Co * K * K,
              slot_stride(Ci, H, W, Co, K));
}

void ls_cpu_conv_bwd_dx(int nthreads, int level, float *dx, const float *dy, const float *w, int B, int Ci, int H,
                        int W, int Co, int K, float *ws) {
    conv_geom g = conv_plan(Co, Ci, H, W, K);
    repack(ws, w, Ci, Co, K, 1);
    conv_pass(conv_threads(nthreads), level, dx, dy, ws, NULL, B, &g, ws + (size_t)Ci * Co * K * K,
              slot_stride(Ci, H, W, Co, K));
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

void ls_cpu_conv_bwd_dw(int nthreads, float *dw, const float *dy, const float *x, int B, int Ci, int H, int W, int Co,
                        int K, float *ws) {
    int HW = H * W, CKK = Ci * K * K, N = tile_pixels(CKK, HW), tiles = (HW + N - 1) / N, nt = conv_threads(nthreads);
    size_t wk = (size_t)CKK * Co, stride = slot_stride(Ci, H, W, Co, K), part_at = stride - wk;
    float *slots = ws + wk;
    for (int s = 0; s < nt; s++) memset(slots + s * stride + part_at, 0, wk * sizeof(float));
#pragma omp parallel num_threads(nt)
    {
        float *cols = slots + (size_t)omp_get_thread_num() * stride, *part = cols + part_at;
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
        const float *part = slots + s * stride + part_at;
        for (int o = 0; o < Co; o++)
            for (int r = 0; r < CKK; r++) dw[(size_t)o * CKK + r] += part[(size_t)r * Co + o];
    }
}
