/*
 * loss.cu — CUDA implementation of the training op family (ops_loss.h): the losses with their gradients and
 * the RAdam step. Per-element terms are computed in double exactly as cpu_loss.c; sums are block partials in
 * double (the backend's scratch) added in a fixed order by one block, and the loss value is formed on the
 * device into the caller's slot (nothing waits: a training step runs through to its one copy back). The
 * contrastive term's four similarity products are cuBLAS GEMMs.
 * DINO's ops follow cpu_loss.c the same way: its loss one block per row, the centre's column sums a block
 * per 32 columns, AdamW and the EMA elementwise with the CPU's roundings.
 */
#include "common.cuh"

namespace {

using lscuda::block_max;
using lscuda::block_sum;
using lscuda::kThreads;
using lscuda::st;
using lscuda::stream;

constexpr int kMaxBlocks = 1024;

unsigned nblocks(size_t n) {
    size_t b = (n + kThreads - 1) / kThreads;
    return (unsigned)(b < 1 ? 1 : b > kMaxBlocks ? kMaxBlocks : b);
}

__device__ inline double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
__device__ inline double sigmoid(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }

/* Writes the block's sums of up to 3 values to partials[block * nv + v]. */
__device__ void store_partials(double *partials, int nv, double a, double b, double c) {
    a = block_sum(a);
    if (nv > 1) b = block_sum(b);
    if (nv > 2) c = block_sum(c);
    if (threadIdx.x == 0) {
        double *p = partials + (size_t)blockIdx.x * nv;
        p[0] = a;
        if (nv > 1) p[1] = b;
        if (nv > 2) p[2] = c;
    }
}

/* Sums nv values over the blocks of the last kernel into the backend's results[0..nv) (device). */
double *sums(const ls_backend *be, unsigned blocks, int nv) {
    lscuda::finish_sums(be, st(be)->partials, (int)blocks, nv, st(be)->results);
    return st(be)->results;
}

/* out[v] = a[v] / n for v < nv: a loss's mean from its sum, on the device (the same division the CPU makes). */
__global__ void k_divide(const double *a, int nv, double n, double *out) {
    for (int v = 0; v < nv; v++) out[v] = a[v] / n;
}

void divide(const ls_backend *be, const double *a, int nv, double n, double *out) {
    k_divide<<<1, 1, 0, stream(be)>>>(a, nv, n, out);
    LS_LAUNCHED();
}

__global__ void k_focal(double *partials, const float *z, const float *t, size_t N, float gamma, float alpha,
                        float weight, float *dz) {
    double total = 0;
    LS_GRID_STRIDE(i, N) {
        double p = sigmoid(z[i]), y = t[i];
        double ce = softplus(z[i]) - z[i] * y;
        double pt = p * y + (1 - p) * (1 - y), q = 1 - pt;
        double mod = pow(q, (double)gamma), at = alpha >= 0 ? alpha * y + (1 - alpha) * (1 - y) : 1;
        total += at * ce * mod;
        double dmod = q > 0 ? gamma * pow(q, (double)gamma - 1) * -(p * (1 - p) * (2 * y - 1)) : 0;
        dz[i] += (float)(weight * at * ((p - y) * mod + ce * dmod) / (double)N);
    }
    store_partials(partials, 1, total, 0, 0);
}

void cu_focal(const ls_backend *be, const float *z, const float *t, size_t N, float gamma, float alpha, float weight,
              float *dz, double *out) {
    if (!N) {
        LS_CK(cudaMemsetAsync(out, 0, sizeof(double), stream(be)));
        return;
    }
    unsigned b = nblocks(N);
    k_focal<<<b, kThreads, 0, stream(be)>>>(st(be)->partials, z, t, N, gamma, alpha, weight, dz);
    LS_LAUNCHED();
    divide(be, sums(be, b, 1), 1, (double)N, out);
}

__global__ void k_soft_counts(double *partials, const float *z, const float *t, size_t N) {
    double a = 0, b = 0, c = 0;
    LS_GRID_STRIDE(i, N) {
        double p = sigmoid(z[i]);
        a += p * t[i], b += p, c += t[i];
    }
    store_partials(partials, 3, a, b, c);
}

/* Device counts {sum p t, sum p, sum t} (the backend's results, read by the kernels queued after). */
const double *soft_counts(const ls_backend *be, const float *z, const float *t, size_t N) {
    unsigned b = nblocks(N);
    k_soft_counts<<<b, kThreads, 0, stream(be)>>>(st(be)->partials, z, t, N);
    LS_LAUNCHED();
    return sums(be, b, 3);
}

/* Tversky's numerator and denominator from the counts, in cpu_tversky's operations. */
__device__ inline void tversky_terms(const double *c, double a, double b, double s, double *num, double *den) {
    double tp = c[0], fp = c[1] - tp, fn = c[2] - tp;
    *num = tp + s, *den = tp + a * fp + b * fn + s;
}

__global__ void k_tversky_value(const double *c, double a, double b, double s, double *out) {
    double num, den;
    tversky_terms(c, a, b, s, &num, &den);
    out[0] = 1 - num / den;
}

__global__ void k_tversky_grad(const float *z, const float *t, size_t N, double a, double b, double s, const double *c,
                               float weight, float *dz) {
    double num, den;
    tversky_terms(c, a, b, s, &num, &den);
    LS_GRID_STRIDE(i, N) {
        double p = sigmoid(z[i]), y = t[i];
        double dnum = y, dden = y + a * (1 - y) - b * y;
        double dp = -(dnum * den - num * dden) / (den * den);
        dz[i] += (float)(weight * dp * p * (1 - p));
    }
}

void cu_tversky(const ls_backend *be, const float *z, const float *t, size_t N, float a, float b, float s,
                float weight, float *dz, double *out) {
    const double *c = soft_counts(be, z, t, N);
    if (N) {
        k_tversky_grad<<<nblocks(N), kThreads, 0, stream(be)>>>(z, t, N, a, b, s, c, weight, dz);
        LS_LAUNCHED();
    }
    k_tversky_value<<<1, 1, 0, stream(be)>>>(c, a, b, s, out);
    LS_LAUNCHED();
}

__global__ void k_log_iou_value(const double *c, double s, double *out) {
    double inter = c[0], uni = c[1] + c[2] - inter;
    out[0] = log(uni + s) - log(inter + s);
}

__global__ void k_log_iou_grad(const float *z, const float *t, size_t N, const double *c, double s, float weight,
                               float *dz) {
    double inter = c[0], uni = c[1] + c[2] - inter;
    LS_GRID_STRIDE(i, N) {
        double p = sigmoid(z[i]), y = t[i];
        double dp = (1 - y) / (uni + s) - y / (inter + s);
        dz[i] += (float)(weight * dp * p * (1 - p));
    }
}

void cu_log_iou(const ls_backend *be, const float *z, const float *t, size_t N, float s, float weight, float *dz,
                double *out) {
    const double *c = soft_counts(be, z, t, N);
    if (N) {
        k_log_iou_grad<<<nblocks(N), kThreads, 0, stream(be)>>>(z, t, N, c, (double)s, weight, dz);
        LS_LAUNCHED();
    }
    k_log_iou_value<<<1, 1, 0, stream(be)>>>(c, (double)s, out);
    LS_LAUNCHED();
}

__global__ void k_entropy(double *partials, const float *z, size_t N, float eta, float weight, float *dz) {
    const double ln2 = 0.69314718055994531;
    double total = 0;
    LS_GRID_STRIDE(i, N) {
        double x = z[i], p = sigmoid(x);
        double h = (p * softplus(-x) + (1 - p) * softplus(x)) / ln2;
        double u = h * h + 1e-8;
        total += pow(u, (double)eta);
        double dh = -x * p * (1 - p) / ln2;
        dz[i] += (float)(weight * eta * pow(u, (double)eta - 1) * 2 * h * dh / (double)N);
    }
    store_partials(partials, 1, total, 0, 0);
}

void cu_entropy(const ls_backend *be, const float *z, size_t N, float eta, float weight, float *dz, double *out) {
    if (!N) {
        LS_CK(cudaMemsetAsync(out, 0, sizeof(double), stream(be)));
        return;
    }
    unsigned b = nblocks(N);
    k_entropy<<<b, kThreads, 0, stream(be)>>>(st(be)->partials, z, N, eta, weight, dz);
    LS_LAUNCHED();
    divide(be, sums(be, b, 1), 1, (double)N, out);
}

/* ---- contrastive term (cpu_loss.c's cpu_cd_term, same workspace layout) */

/* Columns of a[K,P] to unit length (eps 1e-12), norms kept when `norms`; one thread per column. */
__global__ void k_normalize_columns(const float *a, int K, int P, float *out, float *norms) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= P) return;
    double s = 0;
    for (int k = 0; k < K; k++) s += (double)a[(size_t)k * P + j] * a[(size_t)k * P + j];
    double n = sqrt(s);
    float inv = (float)(1.0 / (n > 1e-12 ? n : 1e-12));
    if (norms) norms[j] = (float)n;
    for (int k = 0; k < K; k++) out[(size_t)k * P + j] = a[(size_t)k * P + j] * inv;
}

__global__ void k_normalize_backward(const float *v, const float *dv, const float *norms, int K, int P, float weight,
                                     float *dg) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= P) return;
    double dot = 0;
    for (int k = 0; k < K; k++) dot += (double)v[(size_t)k * P + j] * dv[(size_t)k * P + j];
    double inv = 1.0 / (norms[j] > 1e-12f ? norms[j] : 1e-12);
    int clamped = norms[j] <= 1e-12f;
    for (int k = 0; k < K; k++) {
        size_t q = (size_t)k * P + j;
        dg[q] += (float)(weight * (dv[q] - (clamped ? 0 : v[q] * dot)) * inv);
    }
}

/* One block per row h of the P x P similarity matrices: centring, loss, mean similarity and dX. Partials
 * [h][2] = loss, sim of the row. */
__global__ void k_cd_rows(double *partials, const float *xf, const float *xc, float *dx, int P, float b) {
    int h = blockIdx.x;
    double PP = (double)P * P;
    double mean = 0;
    for (int j = threadIdx.x; j < P; j += blockDim.x) mean += xf[(size_t)h * P + j];
    mean = block_sum(mean) / P;
    double loss = 0, sim = 0;
    for (int j = threadIdx.x; j < P; j += blockDim.x) {
        size_t q = (size_t)h * P + j;
        double s = xf[q] - mean - b, c = xc[q];
        sim += c;
        loss += -s * (c > 0 ? c : 0);
        dx[q] = c > 0 ? (float)(-s / PP) : 0.0f;
    }
    loss = block_sum(loss);
    sim = block_sum(sim);
    if (threadIdx.x == 0) partials[2 * h] = loss, partials[2 * h + 1] = sim;
}

void cu_cd_term(const ls_backend *be, const float *fx, const float *fy, int C, const float *gx, const float *gy,
                int D, int P, float b, float weight, float *dgx, float *dgy, double *out, float *ws) {
    size_t PP = (size_t)P * P;
    float *nfx = ws, *nfy = nfx + (size_t)C * P, *ngx = nfy + (size_t)C * P, *ngy = ngx + (size_t)D * P;
    float *xf = ngy + (size_t)D * P, *xc = xf + PP, *dx = xc + PP, *dngx = dx + PP, *dngy = dngx + (size_t)D * P;
    float *normx = dngy + (size_t)D * P, *normy = normx + P;
    unsigned cb = (unsigned)((P + 127) / 128);
    cudaStream_t s = stream(be);
    k_normalize_columns<<<cb, 128, 0, s>>>(fx, C, P, nfx, nullptr);
    LS_LAUNCHED();
    k_normalize_columns<<<cb, 128, 0, s>>>(fy, C, P, nfy, nullptr);
    LS_LAUNCHED();
    k_normalize_columns<<<cb, 128, 0, s>>>(gx, D, P, ngx, normx);
    LS_LAUNCHED();
    k_normalize_columns<<<cb, 128, 0, s>>>(gy, D, P, ngy, normy);
    LS_LAUNCHED();
    lscuda::gemm(be, 1, 0, P, P, C, 1.0f, nfx, P, nfy, P, 0.0f, xf, P);
    lscuda::gemm(be, 1, 0, P, P, D, 1.0f, ngx, P, ngy, P, 0.0f, xc, P);
    LS_ASSERT((size_t)2 * P <= lscuda::kPartials);
    k_cd_rows<<<P, P >= 256 ? 256 : 128, 0, s>>>(st(be)->partials, xf, xc, dx, P, b);
    LS_LAUNCHED();
    lscuda::gemm(be, 0, 1, D, P, P, 1.0f, ngy, P, dx, P, 0.0f, dngx, P);
    lscuda::gemm(be, 0, 0, D, P, P, 1.0f, ngx, P, dx, P, 0.0f, dngy, P);
    k_normalize_backward<<<cb, 128, 0, s>>>(ngx, dngx, normx, D, P, weight, dgx);
    LS_LAUNCHED();
    k_normalize_backward<<<cb, 128, 0, s>>>(ngy, dngy, normy, D, P, weight, dgy);
    LS_LAUNCHED();
    divide(be, sums(be, (unsigned)P, 2), 2, (double)PP, out);
}

/* ---- RAdam */

__global__ void k_radam(float *param, const float *grad, float *m, float *v, size_t n, double bc1, float sbc2,
                        int rectify, float rect, float lr, float beta1, float beta2, float eps, float wd) {
    LS_GRID_STRIDE(i, n) {
        float g = grad[i] + wd * param[i];
        float mi = beta1 * m[i] + (1 - beta1) * g;
        float vi = beta2 * v[i] + (1 - beta2) * g * g;
        m[i] = mi, v[i] = vi;
        float mhat = (float)(mi / bc1);
        if (rectify) param[i] -= mhat * lr * (sbc2 / (sqrtf(vi) + eps)) * rect;
        else param[i] -= mhat * lr;
    }
}

void cu_radam_step(const ls_backend *be, float *param, const float *grad, float *m, float *v, size_t n, int step,
                   float lr, float beta1, float beta2, float eps, float weight_decay) {
    if (!n) return;
    double bc1 = 1 - pow(beta1, step), bc2 = 1 - pow(beta2, step);
    double rho_inf = 2 / (1 - (double)beta2) - 1;
    double rho_t = rho_inf - 2 * step * pow(beta2, step) / bc2;
    double rect = rho_t > 5 ? sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) : 0;
    k_radam<<<lscuda::blocks_for(n), kThreads, 0, stream(be)>>>(param, grad, m, v, n, bc1, (float)sqrt(bc2), rho_t > 5,
                                                               (float)rect, lr, beta1, beta2, eps, weight_decay);
    LS_LAUNCHED();
}

/* ---- DINO pretraining */

/* cpu_loss.c's softmax_row, one block per row of x[rows, K]: out = softmax((x - c) * inv), logp its log when
 * not NULL; max, sum and log-sum-exp in double. */
__global__ void k_dino_softmax(const float *x, const float *c, int K, double inv, float *out, float *logp) {
    size_t off = blockIdx.x * (size_t)K;
    const float *xr = x + off;
    double mx = -INFINITY;
    for (int k = threadIdx.x; k < K; k += blockDim.x) mx = fmax(mx, ((double)xr[k] - (c ? c[k] : 0)) * inv);
    mx = block_max(mx);
    double sum = 0;
    for (int k = threadIdx.x; k < K; k += blockDim.x) sum += exp(((double)xr[k] - (c ? c[k] : 0)) * inv - mx);
    double lse = mx + log(block_sum(sum));
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        double l = ((double)xr[k] - (c ? c[k] : 0)) * inv - lse;
        out[off + k] = (float)exp(l);
        if (logp) logp[off + k] = (float)l;
    }
}

/* One block per student row r (crop v = r / B, item b): partials[r] = -sum over teacher crops i != v of
 * q_i . logp_r, and ds_r = (m p - sum_i q_i) * scale over the m such crops, p the softmax already in ds. */
__global__ void k_dino_grad(double *partials, const float *q, const float *logp, float *ds, int B, int nt, int K,
                            double scale) {
    int r = blockIdx.x, v = r / B, b = r % B, m = 0;
    for (int i = 0; i < nt; i++) m += i != v;
    float *dr = ds + (size_t)r * K;
    const float *lr = logp + (size_t)r * K;
    double acc = 0;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        double qs = 0;
        for (int i = 0; i < nt; i++)
            if (i != v) {
                double qi = q[((size_t)i * B + b) * K + k];
                acc -= qi * lr[k];
                qs += qi;
            }
        dr[k] = (float)((m * (double)dr[k] - qs) * scale);
    }
    store_partials(partials, 1, acc, 0, 0);
}

void cu_dino_loss(const ls_backend *be, const float *s, const float *t, const float *c, int B, int ns, int nt, int K,
                  float tau_s, float tau_t, float *ds, float *ws, double *out) {
    float *q = ws, *logp = ws + (size_t)nt * B * K;
    int rows_t = nt * B, rows_s = ns * B, npairs = 0;
    for (int i = 0; i < nt; i++)
        for (int v = 0; v < ns; v++) npairs += v != i;
    unsigned th = lscuda::row_threads(K);
    cudaStream_t strm = stream(be);
    if (rows_s <= 0 || !npairs) LS_CK(cudaMemsetAsync(out, 0, sizeof(double), strm));
    if (rows_t > 0) {
        k_dino_softmax<<<(unsigned)rows_t, th, 0, strm>>>(t, c, K, 1.0 / tau_t, q, nullptr);
        LS_LAUNCHED();
    }
    if (rows_s > 0) {
        k_dino_softmax<<<(unsigned)rows_s, th, 0, strm>>>(s, nullptr, K, 1.0 / tau_s, ds, logp);
        LS_LAUNCHED();
        LS_ASSERT((size_t)rows_s <= lscuda::kPartials);
        k_dino_grad<<<(unsigned)rows_s, th, 0, strm>>>(st(be)->partials, q, logp, ds, B, nt, K,
                                            1.0 / ((double)tau_s * B * npairs));
        LS_LAUNCHED();
        if (npairs) divide(be, sums(be, (unsigned)rows_s, 1), 1, (double)B * npairs, out);
    }
}

/* A 32x8 block per 32 columns of t[rows, K], summing in double in a fixed order (as dense.cu's column sums). */
__global__ void k_center_update(float *c, const float *t, size_t rows, int K, float m) {
    __shared__ double part[8][33];
    size_t col = blockIdx.x * (size_t)32 + threadIdx.x;
    double s = 0;
    if (col < (size_t)K)
        for (size_t r = threadIdx.y; r < rows; r += 8) s += t[r * K + col];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && col < (size_t)K) {
        double sum = 0;
        for (int k = 0; k < 8; k++) sum += part[k][threadIdx.x];
        c[col] = (float)(c[col] * (double)m + sum / (double)rows * (1 - (double)m));
    }
}

void cu_center_update(const ls_backend *be, float *c, const float *t, size_t rows, int K, float m) {
    if (K <= 0) return;
    k_center_update<<<(unsigned)((K + 31) / 32), dim3(32, 8), 0, stream(be)>>>(c, t, rows, K, m);
    LS_LAUNCHED();
}

/* Products and sums rounded one by one (no FMA contraction), as cpu_loss.c's float arithmetic. */
__global__ void k_adamw(float *param, const float *grad, float *m, float *v, size_t n, float decay, float step_size,
                        float sbc2, float beta1, float beta2, float eps) {
    LS_GRID_STRIDE(i, n) {
        float g = grad[i], p = __fmul_rn(param[i], decay);
        float mi = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(1 - beta1, g));
        float vi = __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(1 - beta2, g), g));
        m[i] = mi, v[i] = vi;
        param[i] = __fsub_rn(p, __fmul_rn(step_size, mi) / (sqrtf(vi) / sbc2 + eps));
    }
}

void cu_adamw_step(const ls_backend *be, float *param, const float *grad, float *m, float *v, size_t n, int step,
                   float lr, float beta1, float beta2, float eps, float weight_decay) {
    if (!n) return;
    double bc1 = 1 - pow((double)beta1, step), bc2 = 1 - pow((double)beta2, step);
    float decay = (float)(1 - (double)lr * weight_decay), step_size = (float)(lr / bc1), sbc2 = (float)sqrt(bc2);
    k_adamw<<<lscuda::blocks_for(n), kThreads, 0, stream(be)>>>(param, grad, m, v, n, decay, step_size, sbc2, beta1,
                                                               beta2, eps);
    LS_LAUNCHED();
}

__global__ void k_ema(float *t, const float *s, size_t n, float mom, float a) {
    LS_GRID_STRIDE(i, n) t[i] = __fadd_rn(__fmul_rn(mom, t[i]), __fmul_rn(a, s[i])); /* no FMA, as the CPU */
}

void cu_ema(const ls_backend *be, float *t, const float *s, size_t n, float mom) {
    if (!n) return;
    k_ema<<<lscuda::blocks_for(n), kThreads, 0, stream(be)>>>(t, s, n, mom, 1 - mom);
    LS_LAUNCHED();
}

__global__ void k_sumsq(double *partials, const float *x, size_t n) {
    double s = 0;
    LS_GRID_STRIDE(i, n) s += (double)x[i] * x[i];
    store_partials(partials, 1, s, 0, 0);
}

/* x *= c where c = max_norm / (sqrt(*sumsq) + 1e-6) < 1; every thread forms c from the device's sum. */
__global__ void k_clip(float *x, size_t n, const double *sumsq, float max_norm) {
    double c = max_norm / (sqrt(*sumsq) + 1e-6);
    if (c >= 1) return;
    float a = (float)c;
    LS_GRID_STRIDE(i, n) x[i] *= a;
}

void cu_clip_norm(const ls_backend *be, float *x, size_t n, float max_norm) {
    if (!n) return;
    unsigned b = nblocks(n);
    k_sumsq<<<b, kThreads, 0, stream(be)>>>(st(be)->partials, x, n);
    LS_LAUNCHED();
    k_clip<<<lscuda::blocks_for(n), kThreads, 0, stream(be)>>>(x, n, sums(be, b, 1), max_norm);
    LS_LAUNCHED();
}

}  // namespace

/* Positional, in ops_loss.h's order. */
extern const ls_ops_loss ls_cuda_loss = {
    cu_focal, cu_tversky, cu_log_iou, cu_entropy, cu_cd_term, cu_radam_step,
    /* DINO pretraining */
    cu_dino_loss, cu_center_update, cu_adamw_step, cu_ema, cu_clip_norm,
};
