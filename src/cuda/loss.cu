/*
 * loss.cu — CUDA implementation of the training op family (ops_loss.h): the losses with their gradients and
 * the RAdam step. Per-element terms are computed in double exactly as cpu_loss.c; sums are block partials in
 * double (the backend's scratch) added in a fixed order by one block, and the scalar comes back to the host
 * (each loss waits for the stream). The contrastive term's four similarity products are cuBLAS GEMMs.
 */
#include "common.cuh"

namespace {

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

/* Sums nv values over the blocks of the last kernel and brings them to the host. */
void sums_to_host(const ls_backend *be, unsigned blocks, int nv, double *out) {
    lscuda::finish_sums(be, st(be)->partials, (int)blocks, nv, st(be)->results);
    lscuda::fetch(be, out, st(be)->results, nv);
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

double cu_focal(const ls_backend *be, const float *z, const float *t, size_t N, float gamma, float alpha, float weight,
                float *dz) {
    if (!N) return 0;
    unsigned b = nblocks(N);
    k_focal<<<b, kThreads, 0, stream(be)>>>(st(be)->partials, z, t, N, gamma, alpha, weight, dz);
    LS_LAUNCHED();
    double total;
    sums_to_host(be, b, 1, &total);
    return total / (double)N;
}

__global__ void k_soft_counts(double *partials, const float *z, const float *t, size_t N) {
    double a = 0, b = 0, c = 0;
    LS_GRID_STRIDE(i, N) {
        double p = sigmoid(z[i]);
        a += p * t[i], b += p, c += t[i];
    }
    store_partials(partials, 3, a, b, c);
}

void soft_counts(const ls_backend *be, const float *z, const float *t, size_t N, double *spt, double *sp, double *stt) {
    unsigned b = nblocks(N);
    k_soft_counts<<<b, kThreads, 0, stream(be)>>>(st(be)->partials, z, t, N);
    LS_LAUNCHED();
    double r[3];
    sums_to_host(be, b, 3, r);
    *spt = r[0], *sp = r[1], *stt = r[2];
}

__global__ void k_tversky_grad(const float *z, const float *t, size_t N, double a, double b, double num, double den,
                               float weight, float *dz) {
    LS_GRID_STRIDE(i, N) {
        double p = sigmoid(z[i]), y = t[i];
        double dnum = y, dden = y + a * (1 - y) - b * y;
        double dp = -(dnum * den - num * dden) / (den * den);
        dz[i] += (float)(weight * dp * p * (1 - p));
    }
}

double cu_tversky(const ls_backend *be, const float *z, const float *t, size_t N, float a, float b, float s,
                  float weight, float *dz) {
    double tp, sp, stt;
    soft_counts(be, z, t, N, &tp, &sp, &stt);
    double fp = sp - tp, fn = stt - tp, num = tp + s, den = tp + a * fp + b * fn + s;
    if (N) {
        k_tversky_grad<<<nblocks(N), kThreads, 0, stream(be)>>>(z, t, N, a, b, num, den, weight, dz);
        LS_LAUNCHED();
    }
    return 1 - num / den;
}

__global__ void k_log_iou_grad(const float *z, const float *t, size_t N, double inter, double uni, double s,
                               float weight, float *dz) {
    LS_GRID_STRIDE(i, N) {
        double p = sigmoid(z[i]), y = t[i];
        double dp = (1 - y) / (uni + s) - y / (inter + s);
        dz[i] += (float)(weight * dp * p * (1 - p));
    }
}

double cu_log_iou(const ls_backend *be, const float *z, const float *t, size_t N, float s, float weight, float *dz) {
    double inter, sp, stt;
    soft_counts(be, z, t, N, &inter, &sp, &stt);
    double uni = sp + stt - inter;
    if (N) {
        k_log_iou_grad<<<nblocks(N), kThreads, 0, stream(be)>>>(z, t, N, inter, uni, (double)s, weight, dz);
        LS_LAUNCHED();
    }
    return log(uni + s) - log(inter + s);
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

double cu_entropy(const ls_backend *be, const float *z, size_t N, float eta, float weight, float *dz) {
    if (!N) return 0;
    unsigned b = nblocks(N);
    k_entropy<<<b, kThreads, 0, stream(be)>>>(st(be)->partials, z, N, eta, weight, dz);
    LS_LAUNCHED();
    double total;
    sums_to_host(be, b, 1, &total);
    return total / (double)N;
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

double cu_cd_term(const ls_backend *be, const float *fx, const float *fy, int C, const float *gx, const float *gy,
                  int D, int P, float b, float weight, float *dgx, float *dgy, float *mean_sim, float *ws) {
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
    double r[2];
    sums_to_host(be, (unsigned)P, 2, r);
    if (mean_sim) *mean_sim = (float)(r[1] / (double)PP);
    return r[0] / (double)PP;
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

}  // namespace

/* Positional, in ops_loss.h's order. */
extern const ls_ops_loss ls_cuda_loss = {
    cu_focal, cu_tversky, cu_log_iou, cu_entropy, cu_cd_term, cu_radam_step,
    /* DINO pretraining's ops are not yet on CUDA; pretraining refuses this backend */
    nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
};
