/*
 * cpu_dense.c — CPU implementation of the dense op family (ops_dense.h): GEMMs through OpenBLAS,
 * elementwise and row ops with OpenMP over rows, be->nthreads threads.
 *
 * Batched GEMMs (attention: one small problem per batch item and head) run one problem per OpenMP
 * thread; OpenBLAS's OpenMP build then runs single-threaded inside each, instead of every call fanning
 * out over all cores.
 *
 * The backward ops sit in their own block at the end of the file (before the op table).
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "fastmath.h"
#include "ops.h"

static void sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                  float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
                B, ldb, beta, C, ldc);
}

/* Products of at least GEMM_SPLIT_FLOPS run as one block of C's rows (or columns, when C is wider than tall)
 * per OpenMP thread, each a single-threaded OpenBLAS call (its OpenMP build does not fan out inside a
 * parallel region). On the ViT's shapes (1576 x 384..1536 x 384..1536) this gave 87-91 GFLOP/s per core of
 * CPU time against 70-89 for OpenBLAS's own threading over the whole product on the 2-vCPU development
 * machine; blocks start at multiples of 16 (OpenBLAS's register tile). */
#define GEMM_SPLIT_FLOPS ((double)(1 << 24))

static void cpu_gemm(const ls_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    int nt = be->nthreads, rows = M >= N, len = rows ? M : N;
    if (nt > len / 16) nt = len / 16;
    if (nt < 2 || omp_in_parallel() || 2.0 * M * N * K < GEMM_SPLIT_FLOPS) {
        sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        int i0 = (int)((long long)len * t / n) & ~15, i1 = t == n - 1 ? len : (int)((long long)len * (t + 1) / n) & ~15;
        if (i1 > i0) {
            if (rows) /* rows i0..i1 of op(A) and C */
                sgemm(ta, tb, i1 - i0, N, K, alpha, ta ? A + i0 : A + (size_t)i0 * lda, lda, B, ldb, beta,
                      C + (size_t)i0 * ldc, ldc);
            else /* columns i0..i1 of op(B) and C */
                sgemm(ta, tb, M, i1 - i0, K, alpha, A, lda, tb ? B + (size_t)i0 * ldb : B + i0, ldb, beta, C + i0,
                      ldc);
        }
    }
}

static void cpu_gemm_batched(const ls_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                             int lda, size_t sA, const float *B, int ldb, size_t sB, float beta, float *C, int ldc,
                             size_t sC, int batch) {
#pragma omp parallel for schedule(dynamic) num_threads(be->nthreads)
    for (int i = 0; i < batch; i++)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha,
                    A + (size_t)i * sA, lda, B + (size_t)i * sB, ldb, beta, C + (size_t)i * sC, ldc);
}

/* The row kernels below (LayerNorm, softmax, GELU) are plain C loops written so that GCC vectorises
 * them (no libm calls, no reassociation beyond `omp simd` reductions). On x86-64 with glibc each is
 * compiled three times, for AVX-512, AVX2 and the baseline (SSE2), and the loader picks the widest the CPU
 * has (GCC's target_clones, an ifunc): the generic x86-64 binary still runs everywhere. Elsewhere they
 * are compiled once for the build's target. No clone contracts a*b+c into an FMA (ISO C mode sets
 * -ffp-contract=off), so the clones differ only in the order of their sum reductions. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#define LS_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), noinline))
#else
#define LS_SIMD_CLONES
#endif

LS_SIMD_CLONES
static void layernorm_row(float *yr, const float *xr, const float *w, const float *b, int n, float eps) {
    /* Two passes in double: the variance of features with a large mean stays exact. yr may equal xr
     * (the last loop reads each element before writing it). */
    double mean = 0, var = 0;
#pragma omp simd reduction(+ : mean)
    for (int i = 0; i < n; i++) mean += xr[i];
    mean /= n;
#pragma omp simd reduction(+ : var)
    for (int i = 0; i < n; i++) var += ((double)xr[i] - mean) * ((double)xr[i] - mean);
    float rstd = (float)(1.0 / sqrt(var / n + eps)), m = (float)mean;
#pragma omp simd
    for (int i = 0; i < n; i++) yr[i] = (xr[i] - m) * rstd * w[i] + b[i];
}

static void cpu_layernorm(const ls_backend *be, float *y, const float *x, const float *w, const float *b, size_t rows,
                          int n, float eps) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t r = 0; r < rows; r++) layernorm_row(y + r * (size_t)n, x + r * (size_t)n, w, b, n, eps);
}

/* x[:] = softmax(scale * x[:]) for one row. */
LS_SIMD_CLONES
static void softmax_row(float *xr, int n, float scale) {
    float mx = -INFINITY, sum = 0;
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < n; i++) mx = xr[i] > mx ? xr[i] : mx;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; i++) {
        xr[i] = exp_neg(scale * (xr[i] - mx));
        sum += xr[i];
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int i = 0; i < n; i++) xr[i] *= inv;
}

static void cpu_softmax(const ls_backend *be, float *x, size_t rows, int n, float scale) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t r = 0; r < rows; r++) softmax_row(x + r * (size_t)n, n, scale);
}

/* x[:] = gelu(x[:] + bias[:]) for one row; bias may be NULL. */
LS_SIMD_CLONES
static void bias_gelu_row(float *restrict xr, const float *restrict bias, int n) {
    if (bias) {
#pragma omp simd
        for (int i = 0; i < n; i++) {
            float v = xr[i] + bias[i];
            xr[i] = 0.5f * v * (1.0f + erf_rational(v * 0.70710678118654752f));
        }
    } else {
#pragma omp simd
        for (int i = 0; i < n; i++) {
            float v = xr[i];
            xr[i] = 0.5f * v * (1.0f + erf_rational(v * 0.70710678118654752f));
        }
    }
}

static void cpu_bias_gelu(const ls_backend *be, float *x, const float *bias, size_t rows, int n) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t r = 0; r < rows; r++) bias_gelu_row(x + r * (size_t)n, bias, n);
}

static void cpu_add_bias(const ls_backend *be, float *y, const float *bias, size_t rows, int n) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t r = 0; r < rows; r++) {
        float *yr = y + r * (size_t)n;
        for (int i = 0; i < n; i++) yr[i] += bias[i];
    }
}

static void cpu_fill_rows(const ls_backend *be, float *y, const float *row, size_t rows, int n) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t r = 0; r < rows; r++) memcpy(y + r * (size_t)n, row, (size_t)n * sizeof(float));
}

static void cpu_patchify(const ls_backend *be, float *cols, const float *img, int B, int C, int H, int W, int P) {
    int gh = H / P, gw = W / P, rowlen = C * P * P;
#pragma omp parallel for collapse(2) schedule(static) num_threads(be->nthreads)
    for (int b = 0; b < B; b++)
        for (int py = 0; py < gh; py++)
            for (int px = 0; px < gw; px++) {
                float *row = cols + ((size_t)(b * gh + py) * gw + px) * rowlen;
                for (int c = 0; c < C; c++)
                    for (int y = 0; y < P; y++)
                        memcpy(row + (c * P + y) * P, img + (((size_t)b * C + c) * H + py * P + y) * W + px * P,
                               (size_t)P * sizeof(float));
            }
}

static void cpu_embed_tokens(const ls_backend *be, float *x, const float *patches, const float *bias, const float *cls,
                             const float *pos, int B, int T, int D) {
#pragma omp parallel for collapse(2) schedule(static) num_threads(be->nthreads)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *xr = x + ((size_t)b * T + t) * D;
            const float *pr = pos + (size_t)t * D;
            if (t == 0)
                for (int i = 0; i < D; i++) xr[i] = cls[i] + pr[i];
            else {
                const float *src = patches + ((size_t)b * (T - 1) + t - 1) * D;
                for (int i = 0; i < D; i++) xr[i] = src[i] + bias[i] + pr[i];
            }
        }
}

static void cpu_split_heads(const ls_backend *be, float *q, float *k, float *v, const float *qkv, const float *bias,
                            int B, int T, int NH, int HS) {
    int D = NH * HS;
    float *dst[3] = {q, k, v};
#pragma omp parallel for collapse(2) schedule(static) num_threads(be->nthreads)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *src = qkv + ((size_t)b * T + t) * 3 * D;
            for (int s = 0; s < 3; s++)
                for (int h = 0; h < NH; h++) {
                    float *o = dst[s] + (((size_t)b * NH + h) * T + t) * HS;
                    const float *in = src + s * D + h * HS, *bb = bias + s * D + h * HS;
                    for (int i = 0; i < HS; i++) o[i] = in[i] + bb[i];
                }
        }
}

static void cpu_merge_heads(const ls_backend *be, float *y, const float *o, int B, int T, int NH, int HS) {
#pragma omp parallel for collapse(2) schedule(static) num_threads(be->nthreads)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++)
                memcpy(y + ((size_t)b * T + t) * NH * HS + h * HS, o + (((size_t)b * NH + h) * T + t) * HS,
                       (size_t)HS * sizeof(float));
}

/* One (image, head) pair per OpenMP thread: its T x T scores stay in the thread's slot of scratch (in cache
 * while they are normalised), q, k and v are read in place through the leading dimension 3D, and the result
 * lands in the head's columns of o (leading dimension D), so no split or merge copies are made. The scale is
 * applied by the first product. OpenBLAS's OpenMP build runs single-threaded inside the parallel region. */
static void cpu_attention(const ls_backend *be, float *o, const float *qkv, float *scratch, size_t slots, int B,
                          int T, int NH, int HS, float scale) {
    int D = NH * HS, ld = 3 * D, pairs = B * NH;
    int nt = (size_t)be->nthreads < slots ? be->nthreads : (int)slots;
#pragma omp parallel num_threads(nt)
    {
        float *s = scratch + (size_t)omp_get_thread_num() * T * T;
#pragma omp for schedule(dynamic)
        for (int p = 0; p < pairs; p++) {
            int b = p / NH, h = p % NH;
            const float *q = qkv + (size_t)b * T * ld + h * HS, *k = q + D, *v = q + 2 * D;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HS, scale, q, ld, k, ld, 0.0f, s, T);
            for (int t = 0; t < T; t++) softmax_row(s + (size_t)t * T, T, 1.0f);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HS, T, 1.0f, s, T, v, ld, 0.0f,
                        o + (size_t)b * T * D + h * HS, D);
        }
    }
}

static void cpu_tokens_to_grid(const ls_backend *be, float *grid, const float *x, int B, int T, int D, int gh, int gw) {
    (void)gh;
#pragma omp parallel for collapse(2) schedule(static) num_threads(be->nthreads)
    for (int b = 0; b < B; b++)
        for (int d = 0; d < D; d++) {
            float *g = grid + ((size_t)b * D + d) * (size_t)(T - 1);
            const float *src = x + (size_t)b * T * D + D + d; /* token 1, channel d */
            for (int t = 0; t < T - 1; t++) g[t] = src[(size_t)t * D];
        }
    (void)gw;
}

/* ================================================================== backward
 * The backward ops (training the teacher), kept in one block apart from the forward kernels above.
 * Row reductions (bias and LayerNorm parameter gradients) run over blocks of columns, each summing all
 * rows in double: no atomics, no per-thread copies, the same bits for any thread count. */

#define COL_BLOCK 64

/* acc[i] += sum over r < rows of x[r * stride + i], for i < n. */
static void col_sum(const ls_backend *be, float *acc, const float *x, size_t rows, size_t stride, size_t n) {
    size_t nblk = (n + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t blk = 0; blk < nblk; blk++) {
        size_t i0 = blk * COL_BLOCK, m = n - i0 < COL_BLOCK ? n - i0 : COL_BLOCK;
        double s[COL_BLOCK] = {0};
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * stride + i0;
            for (size_t i = 0; i < m; i++) s[i] += xr[i];
        }
        for (size_t i = 0; i < m; i++) acc[i0 + i] += (float)s[i];
    }
}

static void cpu_add(const ls_backend *be, float *y, const float *x, size_t n) {
#pragma omp parallel for simd schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static void cpu_bias_grad(const ls_backend *be, float *db, const float *dy, size_t rows, int n) {
    col_sum(be, db, dy, rows, (size_t)n, (size_t)n);
}

/* Row statistics exactly as cpu_layernorm computes them, so xhat matches the forward's. */
static void ln_stats(const float *xr, int n, float eps, float *mean, float *rstd) {
    double m = 0, var = 0;
    for (int i = 0; i < n; i++) m += xr[i];
    m /= n;
    for (int i = 0; i < n; i++) var += ((double)xr[i] - m) * ((double)xr[i] - m);
    *rstd = (float)(1.0 / sqrt(var / n + eps)), *mean = (float)m;
}

static void cpu_layernorm_bwd(const ls_backend *be, float *dx, float *dw, float *db, const float *dy, const float *x,
                              const float *w, size_t rows, int n, float eps, float *ws) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * (size_t)n, *dyr = dy + r * (size_t)n;
        float *dxr = dx + r * (size_t)n, m, rstd;
        ln_stats(xr, n, eps, &m, &rstd);
        ws[2 * r] = m, ws[2 * r + 1] = rstd;
        double s1 = 0, s2 = 0; /* sum g, sum g*xhat with g = dy*w */
        for (int i = 0; i < n; i++) {
            double g = (double)dyr[i] * w[i];
            s1 += g, s2 += g * ((xr[i] - m) * rstd);
        }
        float a = (float)(s1 / n), c = (float)(s2 / n);
        for (int i = 0; i < n; i++) dxr[i] = rstd * (dyr[i] * w[i] - a - (xr[i] - m) * rstd * c);
    }
    size_t nblk = ((size_t)n + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t blk = 0; blk < nblk; blk++) {
        size_t i0 = blk * COL_BLOCK, m = (size_t)n - i0 < COL_BLOCK ? (size_t)n - i0 : COL_BLOCK;
        double sw[COL_BLOCK] = {0}, sb[COL_BLOCK] = {0};
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * (size_t)n + i0, *dyr = dy + r * (size_t)n + i0;
            float mean = ws[2 * r], rstd = ws[2 * r + 1];
            for (size_t i = 0; i < m; i++) sw[i] += (double)dyr[i] * ((xr[i] - mean) * rstd), sb[i] += dyr[i];
        }
        for (size_t i = 0; i < m; i++) dw[i0 + i] += (float)sw[i], db[i0 + i] += (float)sb[i];
    }
}

static void cpu_softmax_bwd(const ls_backend *be, float *ds, const float *y, const float *dy, size_t rows, int n,
                            float scale) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t r = 0; r < rows; r++) {
        const float *yr = y + r * (size_t)n, *dyr = dy + r * (size_t)n;
        float *dsr = ds + r * (size_t)n;
        double dot = 0;
        for (int i = 0; i < n; i++) dot += (double)yr[i] * dyr[i];
        float d = (float)dot;
#pragma omp simd
        for (int i = 0; i < n; i++) dsr[i] = scale * yr[i] * (dyr[i] - d);
    }
}

static void cpu_gelu_bwd(const ls_backend *be, float *dx, const float *dy, const float *a, size_t n) {
#pragma omp parallel for simd schedule(static) num_threads(be->nthreads)
    for (size_t i = 0; i < n; i++) {
        float v = a[i];
        float cdf = 0.5f * (1.0f + erf_rational(v * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * exp_neg(-0.5f * v * v);
        dx[i] = dy[i] * (cdf + v * pdf);
    }
}

static void cpu_patchify_bwd(const ls_backend *be, float *dimg, const float *dcols, int B, int C, int H, int W, int P) {
    int gh = H / P, gw = W / P, rowlen = C * P * P;
#pragma omp parallel for collapse(2) schedule(static) num_threads(be->nthreads)
    for (int b = 0; b < B; b++)
        for (int py = 0; py < gh; py++)
            for (int px = 0; px < gw; px++) {
                const float *row = dcols + ((size_t)(b * gh + py) * gw + px) * rowlen;
                for (int c = 0; c < C; c++)
                    for (int y = 0; y < P; y++)
                        memcpy(dimg + (((size_t)b * C + c) * H + py * P + y) * W + px * P, row + (c * P + y) * P,
                               (size_t)P * sizeof(float));
            }
}

static void cpu_embed_tokens_bwd(const ls_backend *be, float *dpatches, float *dbias, float *dcls, float *dpos,
                                 const float *dx, int B, int T, int D) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (int b = 0; b < B; b++)
        memcpy(dpatches + (size_t)b * (T - 1) * D, dx + ((size_t)b * T + 1) * D, (size_t)(T - 1) * D * sizeof(float));
    size_t TD = (size_t)T * D;
    col_sum(be, dbias, dpatches, (size_t)B * (T - 1), (size_t)D, (size_t)D);
    col_sum(be, dcls, dx, (size_t)B, TD, (size_t)D);
    col_sum(be, dpos, dx, (size_t)B, TD, TD); /* every token row summed over the batch */
}

static void cpu_split_heads_bwd(const ls_backend *be, float *dqkv, float *dbias, const float *dq, const float *dk,
                                const float *dv, int B, int T, int NH, int HS) {
    int D = NH * HS;
    const float *src[3] = {dq, dk, dv};
#pragma omp parallel for collapse(2) schedule(static) num_threads(be->nthreads)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *dst = dqkv + ((size_t)b * T + t) * 3 * D;
            for (int s = 0; s < 3; s++)
                for (int h = 0; h < NH; h++)
                    memcpy(dst + s * D + h * HS, src[s] + (((size_t)b * NH + h) * T + t) * HS, (size_t)HS * sizeof(float));
        }
    col_sum(be, dbias, dqkv, (size_t)B * T, 3 * (size_t)D, 3 * (size_t)D);
}

static void cpu_merge_heads_bwd(const ls_backend *be, float *d_o, const float *dy, int B, int T, int NH, int HS) {
#pragma omp parallel for collapse(2) schedule(static) num_threads(be->nthreads)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++)
                memcpy(d_o + (((size_t)b * NH + h) * T + t) * HS, dy + ((size_t)b * T + t) * NH * HS + h * HS,
                       (size_t)HS * sizeof(float));
}

static void cpu_tokens_to_grid_bwd(const ls_backend *be, float *dx, const float *dgrid, const float *dcls, int B, int T,
                                   int D, int gh, int gw) {
    (void)gh, (void)gw;
    size_t N = (size_t)T - 1;
#pragma omp parallel for collapse(2) schedule(static) num_threads(be->nthreads)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *xr = dx + ((size_t)b * T + t) * D;
            if (t > 0 && dgrid)
                for (int d = 0; d < D; d++) xr[d] = dgrid[((size_t)b * D + d) * N + (size_t)(t - 1)];
            else if (t == 0 && dcls)
                memcpy(xr, dcls + (size_t)b * D, (size_t)D * sizeof(float));
            else
                memset(xr, 0, (size_t)D * sizeof(float));
        }
}

/* ---- DINO's projection head */

static void cpu_l2norm(const ls_backend *be, float *y, float *norms, const float *x, size_t rows, int n, float eps) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * (size_t)n;
        float *yr = y + r * (size_t)n;
        double s = 0;
        for (int i = 0; i < n; i++) s += (double)xr[i] * xr[i];
        double nrm = sqrt(s);
        norms[r] = (float)nrm;
        float inv = (float)(1.0 / (nrm > eps ? nrm : eps));
        for (int i = 0; i < n; i++) yr[i] = xr[i] * inv;
    }
}

static void cpu_l2norm_bwd(const ls_backend *be, float *dx, const float *dy, const float *y, const float *norms,
                           size_t rows, int n, float eps) {
#pragma omp parallel for schedule(static) num_threads(be->nthreads)
    for (size_t r = 0; r < rows; r++) {
        const float *yr = y + r * (size_t)n, *dyr = dy + r * (size_t)n;
        float *dxr = dx + r * (size_t)n;
        int clamped = !(norms[r] > eps);
        double dot = 0;
        if (!clamped)
            for (int i = 0; i < n; i++) dot += (double)yr[i] * dyr[i];
        float d = (float)dot, inv = (float)(1.0 / (clamped ? eps : norms[r]));
        for (int i = 0; i < n; i++) dxr[i] = (dyr[i] - yr[i] * d) * inv;
    }
}

const ls_ops_dense ls_cpu_dense = {
    .gemm = cpu_gemm,
    .gemm_batched = cpu_gemm_batched,
    .layernorm = cpu_layernorm,
    .softmax = cpu_softmax,
    .attention = cpu_attention,
    .bias_gelu = cpu_bias_gelu,
    .add_bias = cpu_add_bias,
    .fill_rows = cpu_fill_rows,
    .patchify = cpu_patchify,
    .embed_tokens = cpu_embed_tokens,
    .split_heads = cpu_split_heads,
    .merge_heads = cpu_merge_heads,
    .tokens_to_grid = cpu_tokens_to_grid,
    /* backward */
    .add = cpu_add,
    .bias_grad = cpu_bias_grad,
    .layernorm_bwd = cpu_layernorm_bwd,
    .softmax_bwd = cpu_softmax_bwd,
    .gelu_bwd = cpu_gelu_bwd,
    .patchify_bwd = cpu_patchify_bwd,
    .embed_tokens_bwd = cpu_embed_tokens_bwd,
    .split_heads_bwd = cpu_split_heads_bwd,
    .merge_heads_bwd = cpu_merge_heads_bwd,
    .tokens_to_grid_bwd = cpu_tokens_to_grid_bwd,
    /* DINO head */
    .l2norm = cpu_l2norm,
    .l2norm_bwd = cpu_l2norm_bwd,
};
