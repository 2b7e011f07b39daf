/*
 * dense.cu — CUDA implementation of the dense op family (ops_dense.h). GEMMs through cuBLAS (common.cuh);
 * LayerNorm, softmax and their backward one block per row with the row statistics in double (as
 * cpu_dense.c); layout changes one thread per element; column sums (bias and LayerNorm parameter
 * gradients) one block per 32 columns, in double and in a fixed order, so they are deterministic. DINO's
 * l2norm and its backward are row ops too (norms and dot products in double). Attention is fused (one
 * flash-style kernel per layer, scores never stored) for head widths 32, 64, 96 and 128.
 */
#include "common.cuh"
#include "fastmath.h"

namespace {

using lscuda::block_max;
using lscuda::block_sum;
using lscuda::blocks_for;
using lscuda::kThreads;
using lscuda::stream;

void cu_gemm(const ls_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc) {
    lscuda::gemm(be, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void cu_gemm_batched(const ls_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     size_t sA, const float *B, int ldb, size_t sB, float beta, float *C, int ldc, size_t sC,
                     int batch) {
    lscuda::gemm_strided(be, ta, tb, M, N, K, alpha, A, lda, (long long)sA, B, ldb, (long long)sB, beta, C, ldc,
                         (long long)sC, batch);
}

/* Mean and 1/sqrt(var + eps) of one row, two passes in double (as cpu_dense.c's ln_stats). */
__device__ void row_stats(const float *xr, int n, float eps, float *mean, float *rstd) {
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += xr[i];
    double m = block_sum(s) / n;
    double v = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) v += ((double)xr[i] - m) * ((double)xr[i] - m);
    v = block_sum(v);
    *rstd = (float)(1.0 / sqrt(v / n + eps));
    *mean = (float)m;
}

__global__ void k_layernorm(float *y, const float *x, const float *w, const float *b, int n, float eps) {
    const float *xr = x + blockIdx.x * (size_t)n;
    float *yr = y + blockIdx.x * (size_t)n;
    float m, rstd;
    row_stats(xr, n, eps, &m, &rstd);
    for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = (xr[i] - m) * rstd * w[i] + b[i];
}

/* Rows run on blockIdx.x (up to 2^31-1 rows). */
void cu_layernorm(const ls_backend *be, float *y, const float *x, const float *w, const float *b, size_t rows, int n,
                  float eps) {
    if (!rows) return;
    k_layernorm<<<(unsigned)rows, kThreads, 0, stream(be)>>>(y, x, w, b, n, eps);
    LS_LAUNCHED();
}

__global__ void k_softmax(float *x, int n, float scale) {
    float *xr = x + blockIdx.x * (size_t)n;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, xr[i]);
    mx = block_max(mx);
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float e = exp_neg(scale * (xr[i] - mx));
        xr[i] = e;
        s += e;
    }
    float inv = 1.0f / (float)block_sum(s);
    for (int i = threadIdx.x; i < n; i += blockDim.x) xr[i] *= inv;
}

void cu_softmax(const ls_backend *be, float *x, size_t rows, int n, float scale) {
    if (!rows) return;
    k_softmax<<<(unsigned)rows, n >= 256 ? 256 : n > 64 ? 128 : 32, 0, stream(be)>>>(x, n, scale);
    LS_LAUNCHED();
}

__global__ void k_bias_gelu(float *x, const float *bias, size_t total, int n) {
    LS_GRID_STRIDE(i, total) {
        float v = x[i] + (bias ? bias[i % n] : 0.0f);
        x[i] = 0.5f * v * (1.0f + erf_rational(v * 0.70710678118654752f));
    }
}

void cu_bias_gelu(const ls_backend *be, float *x, const float *bias, size_t rows, int n) {
    size_t total = rows * (size_t)n;
    if (!total) return;
    k_bias_gelu<<<blocks_for(total), kThreads, 0, stream(be)>>>(x, bias, total, n);
    LS_LAUNCHED();
}

__global__ void k_add_bias(float *y, const float *bias, size_t total, size_t n) {
    LS_GRID_STRIDE(i, total) y[i] += bias[i % n];
}

void cu_add_bias(const ls_backend *be, float *y, const float *bias, size_t rows, int n) {
    size_t total = rows * (size_t)n;
    if (!total) return;
    k_add_bias<<<blocks_for(total), kThreads, 0, stream(be)>>>(y, bias, total, (size_t)n);
    LS_LAUNCHED();
}

/* One thread per cols element; `back` scatters the other way (patchify_bwd). */
__global__ void k_patchify(float *cols, float *img, int B, int C, int H, int W, int P, int back) {
    int gh = H / P, gw = W / P, rowlen = C * P * P;
    size_t total = (size_t)B * gh * gw * rowlen;
    LS_GRID_STRIDE(i, total) {
        size_t row = i / rowlen;
        int r = (int)(i % rowlen), c = r / (P * P), y = (r / P) % P, xx = r % P;
        int px = (int)(row % gw), py = (int)((row / gw) % gh), b = (int)(row / ((size_t)gw * gh));
        size_t src = (((size_t)b * C + c) * H + py * P + y) * W + px * P + xx;
        if (back) img[src] = cols[i];
        else cols[i] = img[src];
    }
}

void cu_patchify(const ls_backend *be, float *cols, const float *img, int B, int C, int H, int W, int P) {
    size_t total = (size_t)B * (H / P) * (W / P) * C * P * P;
    if (!total) return;
    k_patchify<<<blocks_for(total), kThreads, 0, stream(be)>>>(cols, const_cast<float *>(img), B, C, H, W, P, 0);
    LS_LAUNCHED();
}

__global__ void k_embed_tokens(float *x, const float *patches, const float *bias, const float *cls, const float *pos,
                               int B, int T, int D) {
    size_t total = (size_t)B * T * D;
    LS_GRID_STRIDE(i, total) {
        int d = (int)(i % D);
        size_t bt = i / D;
        int t = (int)(bt % T), b = (int)(bt / T);
        float p = pos[(size_t)t * D + d];
        x[i] = t == 0 ? cls[d] + p : patches[((size_t)b * (T - 1) + t - 1) * D + d] + bias[d] + p;
    }
}

void cu_embed_tokens(const ls_backend *be, float *x, const float *patches, const float *bias, const float *cls,
                     const float *pos, int B, int T, int D) {
    size_t total = (size_t)B * T * D;
    if (!total) return;
    k_embed_tokens<<<blocks_for(total), kThreads, 0, stream(be)>>>(x, patches, bias, cls, pos, B, T, D);
    LS_LAUNCHED();
}

/* One thread per element of q/k/v [3][B,NH,T,HS]; `back` gathers dq/dk/dv into dqkv instead. */
__global__ void k_split_heads(float *q, float *k, float *v, float *qkv, const float *bias, int B, int T, int NH,
                              int HS, int back) {
    size_t per = (size_t)B * NH * T * HS, total = 3 * per;
    int D = NH * HS;
    LS_GRID_STRIDE(i, total) {
        int s = (int)(i / per);
        size_t j = i % per;
        int e = (int)(j % HS), t = (int)((j / HS) % T), h = (int)((j / ((size_t)HS * T)) % NH);
        int b = (int)(j / ((size_t)HS * T * NH));
        size_t src = ((size_t)b * T + t) * 3 * D + s * D + h * HS + e;
        float *dst = s == 0 ? q : s == 1 ? k : v;
        if (back) qkv[src] = dst[j];
        else dst[j] = qkv[src] + bias[s * D + h * HS + e];
    }
}

void cu_split_heads(const ls_backend *be, float *q, float *k, float *v, const float *qkv, const float *bias, int B,
                    int T, int NH, int HS) {
    size_t total = 3 * (size_t)B * NH * T * HS;
    if (!total) return;
    k_split_heads<<<blocks_for(total), kThreads, 0, stream(be)>>>(q, k, v, const_cast<float *>(qkv), bias, B, T, NH,
                                                                 HS, 0);
    LS_LAUNCHED();
}

/* y[B,T,NH*HS] <-> o[B,NH,T,HS], one thread per element of y. */
__global__ void k_merge_heads(float *y, float *o, int B, int T, int NH, int HS, int back) {
    size_t total = (size_t)B * T * NH * HS;
    LS_GRID_STRIDE(i, total) {
        int e = (int)(i % HS), h = (int)((i / HS) % NH), t = (int)((i / ((size_t)HS * NH)) % T);
        int b = (int)(i / ((size_t)HS * NH * T));
        size_t oi = (((size_t)b * NH + h) * T + t) * HS + e;
        if (back) o[oi] = y[i];
        else y[i] = o[oi];
    }
}

void cu_merge_heads(const ls_backend *be, float *y, const float *o, int B, int T, int NH, int HS) {
    size_t total = (size_t)B * T * NH * HS;
    if (!total) return;
    k_merge_heads<<<blocks_for(total), kThreads, 0, stream(be)>>>(y, const_cast<float *>(o), B, T, NH, HS, 0);
    LS_LAUNCHED();
}

/* grid[B,D,T-1] from x[B,T,D] (tokens 1..), one thread per grid element. */
__global__ void k_tokens_to_grid(float *grid, const float *x, int B, int T, int D) {
    size_t N = (size_t)T - 1, total = (size_t)B * D * N;
    LS_GRID_STRIDE(i, total) {
        size_t t = i % N;
        int d = (int)((i / N) % D), b = (int)(i / (N * D));
        grid[i] = x[((size_t)b * T + 1 + t) * D + d];
    }
}

void cu_tokens_to_grid(const ls_backend *be, float *grid, const float *x, int B, int T, int D, int gh, int gw) {
    (void)gh, (void)gw;
    size_t total = (size_t)B * D * (size_t)(T - 1);
    if (!total) return;
    k_tokens_to_grid<<<blocks_for(total), kThreads, 0, stream(be)>>>(grid, x, B, T, D);
    LS_LAUNCHED();
}

/* y[r,:] = row[:]: the bias as the C of the GEMM that follows (beta = 1). */
__global__ void k_fill_rows(float *y, const float *row, size_t total, size_t n) {
    LS_GRID_STRIDE(i, total) y[i] = row[i % n];
}

void cu_fill_rows(const ls_backend *be, float *y, const float *row, size_t rows, int n) {
    size_t total = rows * (size_t)n;
    if (!total) return;
    k_fill_rows<<<blocks_for(total), kThreads, 0, stream(be)>>>(y, row, total, (size_t)n);
    LS_LAUNCHED();
}

/* ------------------------------------------------------------------ fused attention
 * Flash-style, one warp per kAttnRows query rows: keys and values pass through shared memory kAttnKeys
 * (= 32, a key per lane) at a time, and each row keeps a running maximum m, normaliser l and output (HS / 32
 * values per lane), rescaled by exp(m_old - m_new) when the maximum grows, so the T x T scores never reach
 * global memory and the split/merge copies of the unfused path are not made. A block serves
 * kAttnWarps x kAttnRows query rows of one (image, head) pair (blockIdx.y). The warp's rows share every
 * shared-memory read: a lane's key is read as float4s once for the four rows' scores, a value row once for
 * their outputs. The exponential is the CPU softmax's (fastmath.h); the sums run in float in another order
 * than the CPU's GEMMs, so results agree to rounding (the parity test's bound). */
constexpr int kAttnWarps = 4, kAttnRows = 4, kAttnKeys = 32;

template <int W> /* HS = 32 W */
__global__ void __launch_bounds__(kAttnWarps * 32)
    k_attention(float *o, const float *qkv, int T, int NH, int pair0, float scale) {
    constexpr int HS = 32 * W, KP = HS + 4; /* KP: a key row padded so 8 lanes' float4s hit 32 banks */
    __shared__ __align__(16) float ks[kAttnKeys][KP];
    __shared__ __align__(16) float vs[kAttnKeys][HS];
    __shared__ __align__(16) float qs[kAttnWarps][kAttnRows][HS];
    const unsigned all = 0xffffffffu;
    int pair = pair0 + (int)blockIdx.y, b = pair / NH, h = pair % NH, D = NH * HS, ld = 3 * D;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *base = qkv + (size_t)b * T * ld + h * HS; /* q of token 0; its k at + D, v at + 2D */
    int row0 = (blockIdx.x * kAttnWarps + warp) * kAttnRows;
    for (int r = 0; r < kAttnRows; r++)
        for (int d = lane; d < HS; d += 32) qs[warp][r][d] = row0 + r < T ? base[(size_t)(row0 + r) * ld + d] : 0.0f;
    float m[kAttnRows], l[kAttnRows], acc[kAttnRows][W];
#pragma unroll
    for (int r = 0; r < kAttnRows; r++) {
        m[r] = -INFINITY, l[r] = 0.0f;
#pragma unroll
        for (int w = 0; w < W; w++) acc[r][w] = 0.0f;
    }
    for (int k0 = 0; k0 < T; k0 += kAttnKeys) {
        __syncthreads(); /* every warp is done with the previous tile (and, the first time, wrote its q rows) */
        for (int i = threadIdx.x; i < kAttnKeys * HS; i += blockDim.x) {
            int j = i / HS, d = i % HS, in = k0 + j < T;
            const float *kr = base + (size_t)(in ? k0 + j : 0) * ld + D + d;
            ks[j][d] = in ? kr[0] : 0.0f;
            vs[j][d] = in ? kr[D] : 0.0f;
        }
        __syncthreads();
        float s[kAttnRows], p[kAttnRows];
#pragma unroll
        for (int r = 0; r < kAttnRows; r++) s[r] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < HS; d += 4) { /* scores: this lane's key against the warp's rows */
            float4 k4 = *reinterpret_cast<const float4 *>(&ks[lane][d]);
#pragma unroll
            for (int r = 0; r < kAttnRows; r++) {
                float4 q4 = *reinterpret_cast<const float4 *>(&qs[warp][r][d]);
                s[r] += q4.x * k4.x, s[r] += q4.y * k4.y, s[r] += q4.z * k4.z, s[r] += q4.w * k4.w;
            }
        }
        int valid = k0 + lane < T; /* lane 0 always is: the tile's maximum is finite */
#pragma unroll
        for (int r = 0; r < kAttnRows; r++) {
            float x = valid ? scale * s[r] : -INFINITY, mt = x;
            for (int off = 16; off > 0; off >>= 1) mt = fmaxf(mt, __shfl_xor_sync(all, mt, off));
            float mn = fmaxf(m[r], mt), corr = exp_neg(m[r] - mn); /* first tile: l and acc are 0 */
            p[r] = valid ? exp_neg(x - mn) : 0.0f;
            float ps = p[r];
            for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(all, ps, off);
            l[r] = l[r] * corr + ps, m[r] = mn;
#pragma unroll
            for (int w = 0; w < W; w++) acc[r][w] *= corr;
        }
#pragma unroll 4
        for (int j = 0; j < kAttnKeys; j++) { /* outputs: value row j, weighted by each row's p_j */
            float v[W];
#pragma unroll
            for (int w = 0; w < W; w++) v[w] = vs[j][lane + 32 * w];
#pragma unroll
            for (int r = 0; r < kAttnRows; r++) {
                float pj = __shfl_sync(all, p[r], j);
#pragma unroll
                for (int w = 0; w < W; w++) acc[r][w] += pj * v[w];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < kAttnRows; r++) {
        if (row0 + r >= T) continue;
#pragma unroll
        for (int w = 0; w < W; w++) o[((size_t)b * T + row0 + r) * D + h * HS + lane + 32 * w] = acc[r][w] / l[r];
    }
}

template <int W>
void attention_fused(const ls_backend *be, float *o, const float *qkv, int B, int T, int NH, float scale) {
    unsigned tiles = (unsigned)((T + kAttnWarps * kAttnRows - 1) / (kAttnWarps * kAttnRows));
    int pairs = B * NH;
    for (int p0 = 0; p0 < pairs; p0 += 65535) { /* gridDim.y's limit */
        unsigned np = (unsigned)(pairs - p0 < 65535 ? pairs - p0 : 65535);
        k_attention<W><<<dim3(tiles, np), kAttnWarps * 32, 0, stream(be)>>>(o, qkv, T, NH, p0, scale);
        LS_LAUNCHED();
    }
}

/* Head widths the kernel does not take: per image, up to `slots` heads at once, scores into scratch by a
 * strided-batched GEMM (q and k read in place at leading dimension 3D, heads HS apart), softmax, and a second
 * GEMM into the heads' columns of o. */
void attention_gemm(const ls_backend *be, float *o, const float *qkv, float *scratch, size_t slots, int B, int T,
                    int NH, int HS, float scale) {
    int D = NH * HS, ld = 3 * D, chunk = slots < (size_t)NH ? (int)slots : NH;
    long long tt = (long long)T * T;
    for (int b = 0; b < B; b++)
        for (int h0 = 0; h0 < NH; h0 += chunk) {
            int n = NH - h0 < chunk ? NH - h0 : chunk;
            const float *q = qkv + (size_t)b * T * ld + h0 * HS, *k = q + D, *v = q + 2 * D;
            lscuda::gemm_strided(be, 0, 1, T, T, HS, scale, q, ld, HS, k, ld, HS, 0.0f, scratch, T, tt, n);
            cu_softmax(be, scratch, (size_t)n * T, T, 1.0f);
            lscuda::gemm_strided(be, 0, 0, T, HS, T, 1.0f, scratch, T, tt, v, ld, HS, 0.0f,
                                 o + (size_t)b * T * D + h0 * HS, D, HS, n);
        }
}

void cu_attention(const ls_backend *be, float *o, const float *qkv, float *scratch, size_t slots, int B, int T,
                  int NH, int HS, float scale) {
    if (B <= 0 || T <= 0) return;
    switch (HS) {
    case 32: attention_fused<1>(be, o, qkv, B, T, NH, scale); break;
    case 64: attention_fused<2>(be, o, qkv, B, T, NH, scale); break;
    case 96: attention_fused<3>(be, o, qkv, B, T, NH, scale); break;
    case 128: attention_fused<4>(be, o, qkv, B, T, NH, scale); break;
    default: attention_gemm(be, o, qkv, scratch, slots ? slots : 1, B, T, NH, HS, scale);
    }
}

/* ================================================================== backward */

/* acc[i] += sum over r < rows of x[r * stride + i], i < n: a block of 32 x 8 threads per 32 columns, each of
 * the 8 rows of threads summing every 8th row in double, then the 8 partials added in order. */
__global__ void k_col_sum(float *acc, const float *x, size_t rows, size_t stride, size_t n) {
    __shared__ double part[8][33];
    size_t col = blockIdx.x * (size_t)32 + threadIdx.x;
    double s = 0;
    if (col < n)
        for (size_t r = threadIdx.y; r < rows; r += 8) s += x[r * stride + col];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && col < n) {
        double t = 0;
        for (int k = 0; k < 8; k++) t += part[k][threadIdx.x];
        acc[col] += (float)t;
    }
}

void col_sum(const ls_backend *be, float *acc, const float *x, size_t rows, size_t stride, size_t n) {
    if (!n) return;
    k_col_sum<<<(unsigned)((n + 31) / 32), dim3(32, 8), 0, stream(be)>>>(acc, x, rows, stride, n);
    LS_LAUNCHED();
}

__global__ void k_add(float *y, const float *x, size_t n) {
    LS_GRID_STRIDE(i, n) y[i] += x[i];
}

void cu_add(const ls_backend *be, float *y, const float *x, size_t n) {
    if (!n) return;
    k_add<<<blocks_for(n), kThreads, 0, stream(be)>>>(y, x, n);
    LS_LAUNCHED();
}

void cu_bias_grad(const ls_backend *be, float *db, const float *dy, size_t rows, int n) {
    col_sum(be, db, dy, rows, (size_t)n, (size_t)n);
}

__global__ void k_layernorm_bwd_rows(float *dx, const float *dy, const float *x, const float *w, int n, float eps,
                                     float *ws) {
    size_t r = blockIdx.x;
    const float *xr = x + r * n, *dyr = dy + r * n;
    float *dxr = dx + r * n, m, rstd;
    row_stats(xr, n, eps, &m, &rstd);
    double s1 = 0, s2 = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        double g = (double)dyr[i] * w[i];
        s1 += g, s2 += g * ((xr[i] - m) * rstd);
    }
    s1 = block_sum(s1);
    s2 = block_sum(s2);
    float a = (float)(s1 / n), c = (float)(s2 / n);
    for (int i = threadIdx.x; i < n; i += blockDim.x) dxr[i] = rstd * (dyr[i] * w[i] - a - (xr[i] - m) * rstd * c);
    if (threadIdx.x == 0) ws[2 * r] = m, ws[2 * r + 1] = rstd;
}

/* dw += sum_rows dy * xhat, db += sum_rows dy, blocks of 32 columns as k_col_sum. */
__global__ void k_layernorm_bwd_params(float *dw, float *db, const float *dy, const float *x, const float *ws,
                                       size_t rows, int n) {
    __shared__ double pw[8][33], pb[8][33];
    size_t col = blockIdx.x * (size_t)32 + threadIdx.x;
    double sw = 0, sb = 0;
    if (col < (size_t)n)
        for (size_t r = threadIdx.y; r < rows; r += 8) {
            float g = dy[r * n + col];
            sw += (double)g * ((x[r * n + col] - ws[2 * r]) * ws[2 * r + 1]);
            sb += g;
        }
    pw[threadIdx.y][threadIdx.x] = sw, pb[threadIdx.y][threadIdx.x] = sb;
    __syncthreads();
    if (threadIdx.y == 0 && col < (size_t)n) {
        double a = 0, b = 0;
        for (int k = 0; k < 8; k++) a += pw[k][threadIdx.x], b += pb[k][threadIdx.x];
        dw[col] += (float)a, db[col] += (float)b;
    }
}

void cu_layernorm_bwd(const ls_backend *be, float *dx, float *dw, float *db, const float *dy, const float *x,
                      const float *w, size_t rows, int n, float eps, float *ws) {
    if (!rows) return;
    k_layernorm_bwd_rows<<<(unsigned)rows, kThreads, 0, stream(be)>>>(dx, dy, x, w, n, eps, ws);
    LS_LAUNCHED();
    k_layernorm_bwd_params<<<(unsigned)((n + 31) / 32), dim3(32, 8), 0, stream(be)>>>(dw, db, dy, x, ws, rows, n);
    LS_LAUNCHED();
}

__global__ void k_softmax_bwd(float *ds, const float *y, const float *dy, int n, float scale) {
    size_t r = blockIdx.x;
    const float *yr = y + r * n, *dyr = dy + r * n;
    float *dsr = ds + r * n;
    double dot = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) dot += (double)yr[i] * dyr[i];
    float d = (float)block_sum(dot);
    for (int i = threadIdx.x; i < n; i += blockDim.x) dsr[i] = scale * yr[i] * (dyr[i] - d);
}

void cu_softmax_bwd(const ls_backend *be, float *ds, const float *y, const float *dy, size_t rows, int n, float scale) {
    if (!rows) return;
    k_softmax_bwd<<<(unsigned)rows, n >= 256 ? 256 : n > 64 ? 128 : 32, 0, stream(be)>>>(ds, y, dy, n, scale);
    LS_LAUNCHED();
}

__global__ void k_gelu_bwd(float *dx, const float *dy, const float *a, size_t n) {
    LS_GRID_STRIDE(i, n) {
        float v = a[i];
        float cdf = 0.5f * (1.0f + erf_rational(v * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * exp_neg(-0.5f * v * v);
        dx[i] = dy[i] * (cdf + v * pdf);
    }
}

void cu_gelu_bwd(const ls_backend *be, float *dx, const float *dy, const float *a, size_t n) {
    if (!n) return;
    k_gelu_bwd<<<blocks_for(n), kThreads, 0, stream(be)>>>(dx, dy, a, n);
    LS_LAUNCHED();
}

void cu_patchify_bwd(const ls_backend *be, float *dimg, const float *dcols, int B, int C, int H, int W, int P) {
    size_t total = (size_t)B * (H / P) * (W / P) * C * P * P;
    if (!total) return;
    k_patchify<<<blocks_for(total), kThreads, 0, stream(be)>>>(const_cast<float *>(dcols), dimg, B, C, H, W, P, 1);
    LS_LAUNCHED();
}

__global__ void k_copy_rows(float *dst, const float *src, int B, size_t per, size_t src_stride) {
    size_t total = (size_t)B * per;
    LS_GRID_STRIDE(i, total) dst[i] = src[(i / per) * src_stride + i % per];
}

void cu_embed_tokens_bwd(const ls_backend *be, float *dpatches, float *dbias, float *dcls, float *dpos,
                         const float *dx, int B, int T, int D) {
    size_t TD = (size_t)T * D, per = (size_t)(T - 1) * D;
    if (per && B) {
        k_copy_rows<<<blocks_for((size_t)B * per), kThreads, 0, stream(be)>>>(dpatches, dx + D, B, per, TD);
        LS_LAUNCHED();
    }
    col_sum(be, dbias, dpatches, (size_t)B * (T - 1), (size_t)D, (size_t)D);
    col_sum(be, dcls, dx, (size_t)B, TD, (size_t)D);
    col_sum(be, dpos, dx, (size_t)B, TD, TD);
}

void cu_split_heads_bwd(const ls_backend *be, float *dqkv, float *dbias, const float *dq, const float *dk,
                        const float *dv, int B, int T, int NH, int HS) {
    size_t total = 3 * (size_t)B * NH * T * HS;
    int D = NH * HS;
    if (total) {
        k_split_heads<<<blocks_for(total), kThreads, 0, stream(be)>>>(const_cast<float *>(dq), const_cast<float *>(dk),
                                                                     const_cast<float *>(dv), dqkv, nullptr, B, T, NH,
                                                                     HS, 1);
        LS_LAUNCHED();
    }
    col_sum(be, dbias, dqkv, (size_t)B * T, 3 * (size_t)D, 3 * (size_t)D);
}

void cu_merge_heads_bwd(const ls_backend *be, float *d_o, const float *dy, int B, int T, int NH, int HS) {
    size_t total = (size_t)B * T * NH * HS;
    if (!total) return;
    k_merge_heads<<<blocks_for(total), kThreads, 0, stream(be)>>>(const_cast<float *>(dy), d_o, B, T, NH, HS, 1);
    LS_LAUNCHED();
}

__global__ void k_tokens_to_grid_bwd(float *dx, const float *dgrid, const float *dcls, int B, int T, int D) {
    size_t total = (size_t)B * T * D, N = (size_t)T - 1;
    LS_GRID_STRIDE(i, total) {
        int d = (int)(i % D), t = (int)((i / D) % T), b = (int)(i / ((size_t)D * T));
        float v = 0.0f;
        if (t > 0 && dgrid) v = dgrid[((size_t)b * D + d) * N + (size_t)(t - 1)];
        else if (t == 0 && dcls) v = dcls[(size_t)b * D + d];
        dx[i] = v;
    }
}

void cu_tokens_to_grid_bwd(const ls_backend *be, float *dx, const float *dgrid, const float *dcls, int B, int T, int D,
                           int gh, int gw) {
    (void)gh, (void)gw;
    size_t total = (size_t)B * T * D;
    if (!total) return;
    k_tokens_to_grid_bwd<<<blocks_for(total), kThreads, 0, stream(be)>>>(dx, dgrid, dcls, B, T, D);
    LS_LAUNCHED();
}

/* ================================================================== DINO's projection head */

/* One block per row, the squared norm in double as cpu_dense.c; in place is safe: each thread rewrites only
 * the elements it read. */
__global__ void k_l2norm(float *y, float *norms, const float *x, int n, float eps) {
    size_t r = blockIdx.x;
    const float *xr = x + r * n;
    float *yr = y + r * n;
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += (double)xr[i] * xr[i];
    double nrm = sqrt(block_sum(s));
    float inv = (float)(1.0 / (nrm > eps ? nrm : eps));
    for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] * inv;
    if (threadIdx.x == 0) norms[r] = (float)nrm;
}

void cu_l2norm(const ls_backend *be, float *y, float *norms, const float *x, size_t rows, int n, float eps) {
    if (!rows) return;
    k_l2norm<<<(unsigned)rows, lscuda::row_threads(n), 0, stream(be)>>>(y, norms, x, n, eps);
    LS_LAUNCHED();
}

/* The dot product y . dy in double; y * d rounded before the subtraction (no FMA), as the CPU computes it. */
__global__ void k_l2norm_bwd(float *dx, const float *dy, const float *y, const float *norms, int n, float eps) {
    size_t r = blockIdx.x;
    const float *yr = y + r * n, *dyr = dy + r * n;
    float *dxr = dx + r * n;
    int clamped = !(norms[r] > eps);
    double dot = 0;
    if (!clamped)
        for (int i = threadIdx.x; i < n; i += blockDim.x) dot += (double)yr[i] * dyr[i];
    float d = (float)block_sum(dot), inv = (float)(1.0 / (clamped ? eps : norms[r]));
    for (int i = threadIdx.x; i < n; i += blockDim.x) dxr[i] = (dyr[i] - __fmul_rn(yr[i], d)) * inv;
}

void cu_l2norm_bwd(const ls_backend *be, float *dx, const float *dy, const float *y, const float *norms, size_t rows,
                   int n, float eps) {
    if (!rows) return;
    k_l2norm_bwd<<<(unsigned)rows, lscuda::row_threads(n), 0, stream(be)>>>(dx, dy, y, norms, n, eps);
    LS_LAUNCHED();
}

}  // namespace

/* Positional, in ops_dense.h's order (designated initialisers are C++20). */
extern const ls_ops_dense ls_cuda_dense = {
    cu_gemm,
    cu_gemm_batched,
    cu_layernorm,
    cu_softmax,
    cu_attention,
    cu_bias_gelu,
    cu_add_bias,
    cu_fill_rows,
    cu_patchify,
    cu_embed_tokens,
    cu_split_heads,
    cu_merge_heads,
    cu_tokens_to_grid,
    /* backward */
    cu_add,
    cu_bias_grad,
    cu_layernorm_bwd,
    cu_softmax_bwd,
    cu_gelu_bwd,
    cu_patchify_bwd,
    cu_embed_tokens_bwd,
    cu_split_heads_bwd,
    cu_merge_heads_bwd,
    cu_tokens_to_grid_bwd,
    /* DINO head */
    cu_l2norm,
    cu_l2norm_bwd,
};
