/*
 * nn.cu — CUDA implementation of the convolutional op family (ops_nn.h).
 *
 * Convolutions: 1x1 are one strided-batched cuBLAS GEMM over the batch (the weight shared at stride 0).
 * 3x3 (every KxK layer of the model) run as a direct kernel, k_conv3x3, with no workspace. Other KxK
 * (K > 1) are im2col + cuBLAS: when the im2col of whole images fits the workspace, a chunk of images is
 * unfolded at once and multiplied by one strided-batched GEMM; otherwise each image is unfolded a tile of
 * pixels at a time (one GEMM per tile, writing into the output at leading dimension H*W). The input gradient
 * is the forward convolution of dy with the flipped, transposed kernel (no col2im, as on the CPU); the
 * weight gradient accumulates dy_tile . cols_tile^T with beta = 1 per image or tile.
 *
 * Workspace: never more than the CPU family's for the same shape (model.c sizes arenas from ls_cpu_nn's
 * conv2d_workspace and asserts the backend in use needs no more): [flipped kernel Ci*Co*K*K][cols budget
 * 16 * max(max(Ci, Co)*K*K, 128 Ki) floats]; 1x1 convolutions need none.
 *
 * Per-channel reductions (batch norm statistics, bias gradients) run as (split x channel) blocks writing
 * partial sums in double to the backend's scratch, then one block per channel adds them in a fixed order:
 * deterministic, and as exact as cpu_nn.c's double accumulation.
 */
#include "common.cuh"

namespace {

using lscuda::block_sum;
using lscuda::blocks_for;
using lscuda::kThreads;
using lscuda::st;
using lscuda::stream;

constexpr size_t kTileFloats = 128 * 1024; /* as cpu_conv.c's CONV_TILE_FLOATS */
constexpr size_t kSlots = 16;              /* as cpu_conv.c's CONV_SLOTS */

size_t cols_budget(int Ci, int Co, int K) {
    size_t c = (size_t)(Ci > Co ? Ci : Co) * K * K;
    return kSlots * (c > kTileFloats ? c : kTileFloats);
}

size_t cu_conv2d_workspace(int Ci, int H, int W, int Co, int K) {
    (void)H, (void)W;
    if (K == 1) return 0;
    return (size_t)Ci * Co * K * K + cols_budget(Ci, Co, K);
}

/* cols[img][(c*K + ky)*K + kx][j] = x[img][c][y + ky - K/2][x + kx - K/2] for pixel p0 + j (j < len), zero
 * outside the image; one thread per cols element. */
__global__ void k_im2col(float *cols, const float *x, int nimg, int C, int H, int W, int K, int p0, int len) {
    int KK = K * K, pad = K / 2;
    size_t per = (size_t)C * KK * len, total = (size_t)nimg * per, HW = (size_t)H * W;
    LS_GRID_STRIDE(i, total) {
        int img = (int)(i / per);
        size_t r = (i % per) / len;
        int j = (int)(i % len), c = (int)(r / KK), ky = (int)(r % KK) / K, kx = (int)(r % K);
        int p = p0 + j, y = p / W + ky - pad, xx = p % W + kx - pad;
        cols[i] = y >= 0 && y < H && xx >= 0 && xx < W ? x[((size_t)img * C + c) * HW + (size_t)y * W + xx] : 0.0f;
    }
}

void im2col(const ls_backend *be, float *cols, const float *x, int nimg, int C, int H, int W, int K, int p0, int len) {
    size_t total = (size_t)nimg * C * K * K * len;
    k_im2col<<<blocks_for(total), kThreads, 0, stream(be)>>>(cols, x, nimg, C, H, W, K, p0, len);
    LS_LAUNCHED();
}

/* y[n, o, :] = b[o] over the batch. */
__global__ void k_fill_bias(float *y, const float *b, size_t total, int Co, size_t HW) {
    LS_GRID_STRIDE(i, total) y[i] = b[(i / HW) % Co];
}

/* Direct 3x3 convolution (no workspace), for the decoder's thin layers: im2col + GEMM there is a skinny
 * GEMM (M = Co <= 64 rows) over a cols buffer 9*Ci times the image, cut into many tiles by the workspace
 * bound. A block computes a 16-row x 64-column output tile for 16 output channels of one image: each
 * thread 4 pixels (16 columns apart, so a warp reads consecutive shared-memory words) x 16 channels in
 * registers. Input channels are staged 8 at a time: their 18 x 66 halo tile and their 16 x 8 x 9 weights in
 * shared memory. Sums run over (ci, ky, kx) in FMA, so the result differs from the CPU's (blocked BLAS
 * sums) by the GEMM bound. y = acc + beta * y. */
constexpr int kDX = 16, kDY = 16, kDP = 4, kDCo = 16, kDCi = 8;
constexpr int kDTileW = kDX * kDP, kDHaloW = kDTileW + 2, kDHaloH = kDY + 2;

__global__ void __launch_bounds__(kDX * kDY) k_conv3x3(float *y, const float *x, const float *w, float beta, int Ci,
                                                        int H, int W, int Co) {
    __shared__ float sx[kDCi][kDHaloH][kDHaloW];
    __shared__ float sw[kDCi][9][kDCo];
    int groups = (Co + kDCo - 1) / kDCo, n = blockIdx.z / groups, co0 = (blockIdx.z % groups) * kDCo;
    int tx = threadIdx.x % kDX, ty = threadIdx.x / kDX, ox0 = blockIdx.x * kDTileW, oy0 = blockIdx.y * kDY;
    size_t HW = (size_t)H * W;
    const float *xn = x + (size_t)n * Ci * HW;
    float acc[kDP][kDCo];
#pragma unroll
    for (int p = 0; p < kDP; p++)
#pragma unroll
        for (int o = 0; o < kDCo; o++) acc[p][o] = 0.0f;
    for (int ci0 = 0; ci0 < Ci; ci0 += kDCi) {
        for (int i = threadIdx.x; i < kDCi * kDHaloH * kDHaloW; i += kDX * kDY) {
            int c = i / (kDHaloH * kDHaloW), r = (i / kDHaloW) % kDHaloH, col = i % kDHaloW;
            int gy = oy0 + r - 1, gx = ox0 + col - 1;
            bool in = ci0 + c < Ci && gy >= 0 && gy < H && gx >= 0 && gx < W;
            sx[c][r][col] = in ? xn[(size_t)(ci0 + c) * HW + (size_t)gy * W + gx] : 0.0f;
        }
        for (int i = threadIdx.x; i < kDCi * 9 * kDCo; i += kDX * kDY) {
            int c = i / (9 * kDCo), k = (i / kDCo) % 9, o = i % kDCo;
            bool in = ci0 + c < Ci && co0 + o < Co;
            sw[c][k][o] = in ? w[((size_t)(co0 + o) * Ci + ci0 + c) * 9 + k] : 0.0f;
        }
        __syncthreads();
        for (int c = 0; c < kDCi; c++)
#pragma unroll
            for (int ky = 0; ky < 3; ky++)
#pragma unroll
                for (int kx = 0; kx < 3; kx++) {
                    float v[kDP];
#pragma unroll
                    for (int p = 0; p < kDP; p++) v[p] = sx[c][ty + ky][tx + p * kDX + kx];
#pragma unroll
                    for (int o = 0; o < kDCo; o++) {
                        float wv = sw[c][ky * 3 + kx][o];
#pragma unroll
                        for (int p = 0; p < kDP; p++) acc[p][o] = __fmaf_rn(wv, v[p], acc[p][o]);
                    }
                }
        __syncthreads();
    }
    int gy = oy0 + ty;
    if (gy >= H) return;
#pragma unroll
    for (int o = 0; o < kDCo; o++)
#pragma unroll
        for (int p = 0; p < kDP; p++) {
            int gx = ox0 + tx + p * kDX;
            if (co0 + o >= Co || gx >= W) continue;
            float *q = y + ((size_t)n * Co + co0 + o) * HW + (size_t)gy * W + gx;
            *q = beta != 0.0f ? acc[p][o] + beta * *q : acc[p][o];
        }
}

void conv3x3(const ls_backend *be, float *y, const float *x, const float *w, float beta, int B, int Ci, int H, int W,
             int Co) {
    dim3 grid((unsigned)((W + kDTileW - 1) / kDTileW), (unsigned)((H + kDY - 1) / kDY),
              (unsigned)(B * ((Co + kDCo - 1) / kDCo)));
    k_conv3x3<<<grid, kDX * kDY, 0, stream(be)>>>(y, x, w, beta, Ci, H, W, Co);
    LS_LAUNCHED();
}

/* y (+)= conv(x, w) for K > 1, beta 0 or 1 (y already holding the bias). */
void conv_kxk(const ls_backend *be, float *y, const float *x, const float *w, float beta, int B, int Ci, int H, int W,
              int Co, int K, float *cols, size_t budget) {
    if (K == 3) {
        conv3x3(be, y, x, w, beta, B, Ci, H, W, Co);
        return;
    }
    int HW = H * W, CKK = Ci * K * K;
    size_t img_cols = (size_t)CKK * HW;
    if (img_cols <= budget) {
        int per = (int)(budget / img_cols);
        for (int n0 = 0; n0 < B; n0 += per) {
            int nb = B - n0 < per ? B - n0 : per;
            im2col(be, cols, x + (size_t)n0 * Ci * HW, nb, Ci, H, W, K, 0, HW);
            lscuda::gemm_strided(be, 0, 0, Co, HW, CKK, 1.0f, w, CKK, 0, cols, HW, (long long)img_cols, beta,
                                 y + (size_t)n0 * Co * HW, HW, (long long)Co * HW, nb);
        }
        return;
    }
    int tile = (int)(budget / CKK);
    for (int n = 0; n < B; n++)
        for (int p0 = 0; p0 < HW; p0 += tile) {
            int len = HW - p0 < tile ? HW - p0 : tile;
            im2col(be, cols, x + (size_t)n * Ci * HW, 1, Ci, H, W, K, p0, len);
            lscuda::gemm(be, 0, 0, Co, len, CKK, 1.0f, w, CKK, cols, len, beta, y + (size_t)n * Co * HW + p0, HW);
        }
}

void cu_conv2d_fwd(const ls_backend *be, float *y, const float *x, const float *w, const float *b, int B, int Ci, int H,
                   int W, int Co, int K, float *ws) {
    size_t HW = (size_t)H * W, ny = (size_t)B * Co * HW;
    if (!ny) return;
    if (b) {
        k_fill_bias<<<blocks_for(ny), kThreads, 0, stream(be)>>>(y, b, ny, Co, HW);
        LS_LAUNCHED();
    }
    float beta = b ? 1.0f : 0.0f;
    if (K == 1) {
        lscuda::gemm_strided(be, 0, 0, Co, (int)HW, Ci, 1.0f, w, Ci, 0, x, (int)HW, (long long)Ci * HW, beta, y,
                             (int)HW, (long long)Co * HW, B);
        return;
    }
    size_t wk = (size_t)Ci * Co * K * K;
    conv_kxk(be, y, x, w, beta, B, Ci, H, W, Co, K, ws + wk, cols_budget(Ci, Co, K));
}

/* ---- per-channel reductions over NCHW: (split, channel) blocks, partials [c][split][nv] */

enum { R_SUM = 0, R_SUMSQ_DEV = 1, R_G_GDEV = 2 };

/* mode R_SUM: sum a; R_SUMSQ_DEV: sum (a - mf)^2, mf the float mean from res[c] / N; R_G_GDEV: sums of a and
 * a * (b - mean[c]). */
__global__ void k_chan_partial(double *partials, const float *a, const float *b, const double *res, const float *mean,
                               int B, int C, int HW, int mode) {
    int c = blockIdx.y, split = blockIdx.x, nsplit = gridDim.x;
    size_t N = (size_t)B * HW;
    float m = 0.0f;
    if (mode == R_SUMSQ_DEV) m = (float)(res[c] / (double)N);
    if (mode == R_G_GDEV) m = mean[c];
    double s0 = 0, s1 = 0;
    for (size_t e = (size_t)split * blockDim.x + threadIdx.x; e < N; e += (size_t)nsplit * blockDim.x) {
        size_t n = e / HW, i = e % HW, q = (n * C + c) * HW + i;
        float v = a[q];
        if (mode == R_SUM) s0 += v;
        else if (mode == R_SUMSQ_DEV) s0 += (double)((v - m) * (v - m));
        else s0 += v, s1 += (double)v * (b[q] - m);
    }
    s0 = block_sum(s0);
    if (mode == R_G_GDEV) s1 = block_sum(s1);
    if (threadIdx.x == 0) {
        int nv = mode == R_G_GDEV ? 2 : 1;
        double *p = partials + ((size_t)c * nsplit + split) * nv;
        p[0] = s0;
        if (nv == 2) p[1] = s1;
    }
}

/* res[c * nv + v] = sum over splits, one block per channel. */
__global__ void k_chan_finish(double *res, const double *partials, int nsplit, int nv) {
    int c = blockIdx.x;
    for (int v = 0; v < nv; v++) {
        double s = 0;
        for (int k = threadIdx.x; k < nsplit; k += blockDim.x) s += partials[((size_t)c * nsplit + k) * nv + v];
        s = block_sum(s);
        if (threadIdx.x == 0) res[(size_t)c * nv + v] = s;
    }
}

/* Channel sums into res (device doubles, C * nv of them, at `res`). */
void chan_reduce(const ls_backend *be, double *res, const float *a, const float *b, const double *prev, const float *mean,
                 int B, int C, int HW, int mode) {
    int nv = mode == R_G_GDEV ? 2 : 1;
    size_t N = (size_t)B * HW, want = (N + kThreads * 16 - 1) / (kThreads * 16);
    size_t cap = lscuda::kPartials / ((size_t)C * nv);
    int nsplit = (int)(want < 1 ? 1 : want > cap ? cap : want > 1024 ? 1024 : want);
    LS_ASSERT(cap >= 1 && (size_t)C * nv * 2 <= lscuda::kResults);
    k_chan_partial<<<dim3(nsplit, C), kThreads, 0, stream(be)>>>(st(be)->partials, a, b, prev, mean, B, C, HW, mode);
    LS_LAUNCHED();
    k_chan_finish<<<C, kThreads, 0, stream(be)>>>(res, st(be)->partials, nsplit, nv);
    LS_LAUNCHED();
}

__global__ void k_add_sums(float *acc, const double *res, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < C) acc[c] += (float)res[c];
}

__global__ void k_flip_kernel(float *wf, const float *w, int Ci, int Co, int KK) {
    size_t total = (size_t)Ci * Co * KK;
    LS_GRID_STRIDE(i, total) {
        int k = (int)(i % KK), o = (int)((i / KK) % Co), c = (int)(i / ((size_t)KK * Co));
        wf[i] = w[((size_t)o * Ci + c) * KK + KK - 1 - k];
    }
}

void cu_conv2d_bwd(const ls_backend *be, float *dx, float *dw, float *db, const float *dy, const float *x,
                   const float *w, int B, int Ci, int H, int W, int Co, int K, float *ws) {
    int HW = H * W, CKK = Ci * K * K;
    if (!B || !HW) return;
    if (db) {
        double *res = st(be)->results;
        chan_reduce(be, res, dy, nullptr, nullptr, nullptr, B, Co, HW, R_SUM);
        k_add_sums<<<(Co + kThreads - 1) / kThreads, kThreads, 0, stream(be)>>>(db, res, Co);
        LS_LAUNCHED();
    }
    if (K == 1) {
        for (int n = 0; n < B; n++)
            lscuda::gemm(be, 0, 1, Co, Ci, HW, 1.0f, dy + (size_t)n * Co * HW, HW, x + (size_t)n * Ci * HW, HW, 1.0f,
                         dw, Ci);
        if (dx)
            lscuda::gemm_strided(be, 1, 0, Ci, HW, Co, 1.0f, w, Ci, 0, dy, HW, (long long)Co * HW, 0.0f, dx, HW,
                                 (long long)Ci * HW, B);
        return;
    }
    size_t wk = (size_t)Ci * Co * K * K, budget = cols_budget(Ci, Co, K);
    float *cols = ws + wk;
    if (dx) {
        k_flip_kernel<<<blocks_for(wk), kThreads, 0, stream(be)>>>(ws, w, Ci, Co, K * K);
        LS_LAUNCHED();
        conv_kxk(be, dx, dy, ws, 0.0f, B, Co, H, W, Ci, K, cols, budget);
    }
    /* dw[Co, CKK] += dy[Co, pixels] . cols[CKK, pixels]^T, per image (or tile of one). */
    size_t img_cols = (size_t)CKK * HW;
    if (img_cols <= budget) {
        int per = (int)(budget / img_cols);
        for (int n0 = 0; n0 < B; n0 += per) {
            int nb = B - n0 < per ? B - n0 : per;
            im2col(be, cols, x + (size_t)n0 * Ci * HW, nb, Ci, H, W, K, 0, HW);
            for (int i = 0; i < nb; i++)
                lscuda::gemm(be, 0, 1, Co, CKK, HW, 1.0f, dy + (size_t)(n0 + i) * Co * HW, HW, cols + i * img_cols, HW,
                             1.0f, dw, CKK);
        }
        return;
    }
    int tile = (int)(budget / CKK);
    for (int n = 0; n < B; n++)
        for (int p0 = 0; p0 < HW; p0 += tile) {
            int len = HW - p0 < tile ? HW - p0 : tile;
            im2col(be, cols, x + (size_t)n * Ci * HW, 1, Ci, H, W, K, p0, len);
            lscuda::gemm(be, 0, 1, Co, CKK, len, 1.0f, dy + (size_t)n * Co * HW + p0, HW, cols, len, 1.0f, dw, CKK);
        }
}

/* ---- batch norm */

/* Per channel, from the sums of x (res[c]) and of (x - mf)^2 (res[C + c]): mean, rstd and running stats, as
 * cpu_nn.c's channel_stats and cpu_bn_fwd_train. */
__global__ void k_bn_stats(float *mean, float *rstd, float *run_mean, float *run_var, const double *res, int C, double n,
                           float momentum, float eps) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double m = res[c] / n;
    double d = (double)(float)m - m, v = res[C + c] / n - d * d;
    if (v < 0) v = 0;
    float r = (float)(1.0 / sqrt(v + eps));
    mean[c] = (float)m, rstd[c] = r;
    run_mean[c] = (1 - momentum) * run_mean[c] + momentum * (float)m;
    run_var[c] = (1 - momentum) * run_var[c] + momentum * (float)(n > 1 ? v * n / (n - 1) : v);
}

/* y = x * g + sh per channel; g, sh from (gamma, rstd, mean) in training or (gamma, run_var, run_mean) in eval. */
__global__ void k_bn_affine(float *y, const float *x, const float *gamma, const float *beta, const float *m,
                            const float *s, int eval, float eps, int C, size_t HW, size_t total) {
    LS_GRID_STRIDE(i, total) {
        int c = (int)((i / HW) % C);
        float g = eval ? gamma[c] / sqrtf(s[c] + eps) : gamma[c] * s[c];
        float sh = beta[c] - m[c] * g;
        y[i] = x[i] * g + sh;
    }
}

void cu_bn_fwd_train(const ls_backend *be, float *y, float *mean, float *rstd, const float *x, const float *gamma,
                     const float *beta, float *run_mean, float *run_var, int B, int C, int HW, float momentum,
                     float eps) {
    size_t total = (size_t)B * C * HW;
    if (!total) return;
    double *res = st(be)->results;
    chan_reduce(be, res, x, nullptr, nullptr, nullptr, B, C, HW, R_SUM);
    chan_reduce(be, res + C, x, nullptr, res, nullptr, B, C, HW, R_SUMSQ_DEV);
    k_bn_stats<<<(C + kThreads - 1) / kThreads, kThreads, 0, stream(be)>>>(mean, rstd, run_mean, run_var, res, C,
                                                                          (double)B * HW, momentum, eps);
    LS_LAUNCHED();
    k_bn_affine<<<blocks_for(total), kThreads, 0, stream(be)>>>(y, x, gamma, beta, mean, rstd, 0, eps, C, (size_t)HW,
                                                               total);
    LS_LAUNCHED();
}

void cu_bn_fwd_eval(const ls_backend *be, float *y, const float *x, const float *gamma, const float *beta,
                    const float *run_mean, const float *run_var, int B, int C, int HW, float eps) {
    size_t total = (size_t)B * C * HW;
    if (!total) return;
    k_bn_affine<<<blocks_for(total), kThreads, 0, stream(be)>>>(y, x, gamma, beta, run_mean, run_var, 1, eps, C,
                                                               (size_t)HW, total);
    LS_LAUNCHED();
}

/* From res[2c] = sum dy, res[2c+1] = sum dy (x - mean): parameter gradients and the dx coefficients
 * coef[3c..3c+2] = k, kx, k0 (cpu_nn.c's cpu_bn_bwd). */
__global__ void k_bn_bwd_coef(float *dgamma, float *dbeta, float *coef, const double *res, const float *mean,
                              const float *rstd, const float *gamma, int C, double n) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float m = mean[c], rs = rstd[c];
    double sdy = res[2 * c], sdyx = res[2 * c + 1] * rs;
    dbeta[c] += (float)sdy;
    dgamma[c] += (float)sdyx;
    float k = gamma[c] * rs, a = (float)(sdy / n), bb = (float)(sdyx / n), kx = k * rs * bb, k0 = k * (m * rs * bb - a);
    coef[3 * c] = k, coef[3 * c + 1] = kx, coef[3 * c + 2] = k0;
}

__global__ void k_bn_bwd_dx(float *dx, const float *dy, const float *x, const float *coef, int C, size_t HW,
                            size_t total) {
    LS_GRID_STRIDE(i, total) {
        int c = (int)((i / HW) % C);
        dx[i] = coef[3 * c] * dy[i] - coef[3 * c + 1] * x[i] + coef[3 * c + 2];
    }
}

void cu_bn_bwd(const ls_backend *be, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
               const float *mean, const float *rstd, const float *gamma, int B, int C, int HW) {
    size_t total = (size_t)B * C * HW;
    if (!total) return;
    double *res = st(be)->results;
    float *coef = reinterpret_cast<float *>(res + 2 * (size_t)C);
    chan_reduce(be, res, dy, x, nullptr, mean, B, C, HW, R_G_GDEV);
    k_bn_bwd_coef<<<(C + kThreads - 1) / kThreads, kThreads, 0, stream(be)>>>(dgamma, dbeta, coef, res, mean, rstd,
                                                                             gamma, C, (double)B * HW);
    LS_LAUNCHED();
    k_bn_bwd_dx<<<blocks_for(total), kThreads, 0, stream(be)>>>(dx, dy, x, coef, C, (size_t)HW, total);
    LS_LAUNCHED();
}

/* ---- elementwise */

__global__ void k_relu_fwd(float *y, const float *x, size_t n) {
    LS_GRID_STRIDE(i, n) y[i] = x[i] > 0 ? x[i] : 0.0f;
}
__global__ void k_relu_bwd(float *dx, const float *dy, const float *y, size_t n) {
    LS_GRID_STRIDE(i, n) dx[i] = y[i] > 0 ? dy[i] : 0.0f;
}

void cu_relu_fwd(const ls_backend *be, float *y, const float *x, size_t n) {
    if (!n) return;
    k_relu_fwd<<<blocks_for(n), kThreads, 0, stream(be)>>>(y, x, n);
    LS_LAUNCHED();
}
void cu_relu_bwd(const ls_backend *be, float *dx, const float *dy, const float *y, size_t n) {
    if (!n) return;
    k_relu_bwd<<<blocks_for(n), kThreads, 0, stream(be)>>>(dx, dy, y, n);
    LS_LAUNCHED();
}

__global__ void k_dropout2d(float *y, const float *x, const float *keep, size_t HW, size_t total) {
    LS_GRID_STRIDE(i, total) y[i] = x[i] * keep[i / HW];
}

void cu_dropout2d(const ls_backend *be, float *y, const float *x, const float *keep, int B, int C, int HW) {
    size_t total = (size_t)B * C * HW;
    if (!total) return;
    k_dropout2d<<<blocks_for(total), kThreads, 0, stream(be)>>>(y, x, keep, (size_t)HW, total);
    LS_LAUNCHED();
}

/* Source taps of x2 upsampling along one axis (cpu_nn.c's taps). */
__device__ void taps(int o, int n, int *i0, int *i1, float *l0, float *l1) {
    float s = (o + 0.5f) * 0.5f - 0.5f;
    if (s < 0) s = 0;
    *i0 = (int)s;
    *i1 = *i0 + (*i0 < n - 1);
    *l1 = s - (float)*i0;
    *l0 = 1.0f - *l1;
}

/* One thread per output pixel. The CPU blends rows first (t = a0 r0 + a1 r1), then columns with the same
 * weights: the same expression order here. */
__global__ void k_upsample_fwd(float *y, const float *x, int H, int W, size_t total) {
    int OH = 2 * H, OW = 2 * W;
    LS_GRID_STRIDE(i, total) {
        int ox = (int)(i % OW), oy = (int)((i / OW) % OH);
        size_t bc = i / ((size_t)OW * OH);
        const float *p = x + bc * H * W;
        int y0, y1, x0, x1;
        float a0, a1, b0, b1;
        taps(oy, H, &y0, &y1, &a0, &a1);
        taps(ox, W, &x0, &x1, &b0, &b1);
        float t0 = a0 * p[(size_t)y0 * W + x0] + a1 * p[(size_t)y1 * W + x0];
        float t1 = a0 * p[(size_t)y0 * W + x1] + a1 * p[(size_t)y1 * W + x1];
        y[i] = x0 == x1 ? t0 : b0 * t0 + b1 * t1;
    }
}

void cu_upsample2x_fwd(const ls_backend *be, float *y, const float *x, int B, int C, int H, int W) {
    size_t total = (size_t)B * C * 4 * H * W;
    if (!total) return;
    k_upsample_fwd<<<blocks_for(total), kThreads, 0, stream(be)>>>(y, x, H, W, total);
    LS_LAUNCHED();
}

/* The adjoint as a gather (no atomics), in cpu_nn.c's order: the four output columns 2xx-1 .. 2xx+2 are
 * first blended over the output rows that read input row yy (v[k] += wy * dy, rows in ascending order),
 * then combined as c0 v[1] + c1 v[2] (+ .25 v[0]) (+ .25 v[3]). With --fmad=false this gives the CPU's bits. */
__global__ void k_upsample_bwd(float *dx, const float *dy, int H, int W, size_t total) {
    int OH = 2 * H, OW = 2 * W;
    LS_GRID_STRIDE(i, total) {
        int xx = (int)(i % W), yy = (int)((i / W) % H);
        size_t bc = i / ((size_t)W * H);
        const float *q = dy + bc * OH * OW;
        float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int oy = 2 * yy - 1; oy <= 2 * yy + 2; oy++) {
            if (oy < 0 || oy >= OH) continue;
            int y0, y1;
            float a0, a1;
            taps(oy, H, &y0, &y1, &a0, &a1);
            float wy = (y0 == yy ? a0 : 0.0f) + (y1 == yy ? a1 : 0.0f);
            if (wy == 0.0f) continue;
            for (int k = 0; k < 4; k++) {
                int ox = 2 * xx - 1 + k;
                if (ox >= 0 && ox < OW) v[k] += wy * q[(size_t)oy * OW + ox];
            }
        }
        float c0 = xx > 0 ? 0.75f : 1.0f, c1 = xx < W - 1 ? 0.75f : 1.0f;
        float acc = c0 * v[1] + c1 * v[2];
        if (xx > 0) acc += 0.25f * v[0];
        if (xx < W - 1) acc += 0.25f * v[3];
        dx[i] = acc;
    }
}

void cu_upsample2x_bwd(const ls_backend *be, float *dx, const float *dy, int B, int C, int H, int W) {
    size_t total = (size_t)B * C * H * W;
    if (!total) return;
    k_upsample_bwd<<<blocks_for(total), kThreads, 0, stream(be)>>>(dx, dy, H, W, total);
    LS_LAUNCHED();
}

/* Concatenation and its split as 2-D copies (one per source), through cudaMemcpy2DAsync. */
void cu_concat_fwd(const ls_backend *be, float *y, const float *a, const float *b, int B, int Ca, int Cb, int HW) {
    size_t fl = sizeof(float), row = (size_t)(Ca + Cb) * HW * fl;
    if (!B || !HW) return;
    if (Ca)
        LS_CK(cudaMemcpy2DAsync(y, row, a, (size_t)Ca * HW * fl, (size_t)Ca * HW * fl, B, cudaMemcpyDeviceToDevice,
                                stream(be)));
    if (Cb)
        LS_CK(cudaMemcpy2DAsync(y + (size_t)Ca * HW, row, b, (size_t)Cb * HW * fl, (size_t)Cb * HW * fl, B,
                                cudaMemcpyDeviceToDevice, stream(be)));
}

void cu_concat_bwd(const ls_backend *be, float *da, float *db, const float *dy, int B, int Ca, int Cb, int HW) {
    size_t fl = sizeof(float), row = (size_t)(Ca + Cb) * HW * fl;
    if (!B || !HW) return;
    if (da && Ca)
        LS_CK(cudaMemcpy2DAsync(da, (size_t)Ca * HW * fl, dy, row, (size_t)Ca * HW * fl, B, cudaMemcpyDeviceToDevice,
                                stream(be)));
    if (db && Cb)
        LS_CK(cudaMemcpy2DAsync(db, (size_t)Cb * HW * fl, dy + (size_t)Ca * HW, row, (size_t)Cb * HW * fl, B,
                                cudaMemcpyDeviceToDevice, stream(be)));
}

}  // namespace

/* Positional, in ops_nn.h's order. */
extern const ls_ops_nn ls_cuda_nn = {
    cu_conv2d_workspace,
    cu_conv2d_fwd,
    cu_conv2d_bwd,
    cu_bn_fwd_train,
    cu_bn_fwd_eval,
    cu_bn_bwd,
    cu_relu_fwd,
    cu_relu_bwd,
    cu_dropout2d,
    cu_upsample2x_fwd,
    cu_upsample2x_bwd,
    cu_concat_fwd,
    cu_concat_bwd,
};
