/*
 * common.cuh — what the CUDA op families share: the backend state behind be->impl, error checking, launch
 * helpers, block reductions in double, and the row-major GEMM wrapper over cuBLAS.
 *
 * Error policy: ops never fail at run time (ops.h), so a failing CUDA or cuBLAS call inside an op is a bug
 * or a dead device: LS_CK / LS_CB print the call, file and line and abort(). Kernel launches are checked
 * with LS_CK(cudaGetLastError()) right after the launch (asynchronous faults surface at the next checked
 * call, usually the next copy or sync).
 */
#ifndef LS_CUDA_COMMON_CUH
#define LS_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>

extern "C" {
#include "ops.h"
#include "util.h"
}

namespace lscuda {

/* Scratch the ops keep for reductions: partial sums per block, per-channel and per-row results (a loss's
 * value before it reaches the caller's slot, a gradient's norm). Allocated once in ls_cuda_backend_init;
 * ops on one stream run in order, so reusing it from op to op is safe. */
constexpr size_t kPartials = size_t(1) << 19; /* doubles: per-block partial sums */
constexpr size_t kResults = size_t(1) << 16;  /* doubles: per-channel / per-row results */

/* cublasGemmEx and cublasGemmStridedBatchedEx are overloaded in C++ (inline ones taking the compute type as
 * a cudaDataType): these are the exported ones. sizeof checks them against the header without using them. */
using gemm_ex_fn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                                      const void *, cudaDataType, int, const void *, cudaDataType, int, const void *,
                                      void *, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
using gemm_strided_ex_fn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                              const void *, const void *, cudaDataType, int, long long, const void *,
                                              cudaDataType, int, long long, const void *, void *, cudaDataType, int,
                                              long long, int, cublasComputeType_t, cublasGemmAlgo_t);
static_assert(sizeof(static_cast<gemm_ex_fn>(&cublasGemmEx)) > 0, "cublasGemmEx");
static_assert(sizeof(static_cast<gemm_strided_ex_fn>(&cublasGemmStridedBatchedEx)) > 0, "cublasGemmStridedBatchedEx");

/* The cuBLAS entry points we call, resolved from libcublas at backend start (blas_open in backend.cu)
 * rather than linked: linking ran cuBLAS's static constructors at every process start, the CPU's too. */
struct blas_api {
    decltype(&cublasCreate) create;
    decltype(&cublasDestroy) destroy;
    decltype(&cublasSetStream) set_stream;
    decltype(&cublasSetMathMode) set_math_mode;
    decltype(&cublasSgemm) sgemm;
    decltype(&cublasSgemmStridedBatched) sgemm_strided;
    gemm_ex_fn gemm_ex;
    gemm_strided_ex_fn gemm_strided_ex;
};

struct state {
    cudaStream_t stream;
    blas_api cb;
    cublasHandle_t blas;
    double *partials;  /* device, kPartials */
    double *results;   /* device, kResults */
    float *rounded;    /* device: LS_PREC_TF32_RN's copies of a GEMM's operands, grown to the largest pair */
    size_t rounded_cap;
};

inline state *st(const ls_backend *be) { return static_cast<state *>(be->impl); }
inline cudaStream_t stream(const ls_backend *be) { return st(be)->stream; }

[[noreturn]] inline void die(const char *what, const char *call, const char *file, int line) {
    std::fprintf(stderr, "livseg: CUDA failure %s in %s at %s:%d\n", what, call, file, line);
    std::abort();
}

const char *cublas_name(cublasStatus_t s);

}  // namespace lscuda

#define LS_CK(call)                                                                                         \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) lscuda::die(cudaGetErrorString(e_), #call, __FILE__, __LINE__);             \
    } while (0)

#define LS_CB(call)                                                                                         \
    do {                                                                                                    \
        cublasStatus_t s_ = (call);                                                                         \
        if (s_ != CUBLAS_STATUS_SUCCESS) lscuda::die(lscuda::cublas_name(s_), #call, __FILE__, __LINE__);  \
    } while (0)

/* Checks the launch just made. */
#define LS_LAUNCHED() LS_CK(cudaGetLastError())

namespace lscuda {

constexpr int kThreads = 256;

/* Blocks for n elements at kThreads each, capped for grid-stride loops. */
inline unsigned blocks_for(size_t n, size_t cap = 65535u * 8u) {
    size_t b = (n + kThreads - 1) / kThreads;
    if (b < 1) b = 1;
    return (unsigned)(b > cap ? cap : b);
}

/* Threads for one block per row of width n: a warp for narrow rows, at most kThreads. */
inline unsigned row_threads(int n) { return n >= 256 ? 256 : n > 64 ? 128 : 32; }

#define LS_GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* Sum of v over the block (blockDim.x a multiple of 32, at most 1024); the result is valid in every thread.
 * Fixed order for a fixed block size, so results are reproducible run to run. */
__device__ inline double block_sum(double v) {
    __shared__ double warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads(); /* warp_sums may still be read by a previous call */
    if (lane == 0) warp_sums[wid] = v;
    __syncthreads();
    double s = 0;
    if (wid == 0) {
        s = lane < nw ? warp_sums[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (lane == 0) warp_sums[0] = s;
    }
    __syncthreads();
    return warp_sums[0];
}

__device__ inline float max_of(float a, float b) { return fmaxf(a, b); }
__device__ inline double max_of(double a, double b) { return fmax(a, b); }

/* Max of v over the block, as block_sum (float for the softmax rows, double for DINO's). */
template <typename T>
__device__ inline T block_max(T v) {
    __shared__ T warp_max[32];
    for (int o = 16; o > 0; o >>= 1) v = max_of(v, __shfl_down_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) warp_max[wid] = v;
    __syncthreads();
    if (wid == 0) {
        T m = lane < nw ? warp_max[lane] : (T)-INFINITY;
        for (int o = 16; o > 0; o >>= 1) m = max_of(m, __shfl_down_sync(0xffffffffu, m, o));
        if (lane == 0) warp_max[0] = m;
    }
    __syncthreads();
    return warp_max[0];
}

/* Row-major GEMM (ops_dense.h's contract) through cuBLAS's column-major API: C^T = op(B)^T op(A)^T, so the
 * operands swap and M/N swap; the transpose flags stay with their operands. */
void gemm(const ls_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc);
void gemm_strided(const ls_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  long long sA, const float *B, int ldb, long long sB, float beta, float *C, int ldc, long long sC,
                  int batch);

/* Sums `nv` values per block written as partials[block * nv + v] by a kernel with `nblocks` blocks, into
 * out[v] (device), in a fixed order. */
void finish_sums(const ls_backend *be, const double *partials, int nblocks, int nv, double *out);

}  // namespace lscuda

#endif
