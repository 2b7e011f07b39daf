/*
 * backend.cu — the CUDA backend's device selection, memory table and shared helpers (see ops.h and
 * common.cuh). Built only with `make CUDA=1`. Device memory is plain cudaMalloc (256-byte aligned, so the
 * 64-byte contract holds); copies and ops run on the backend's one stream, in order.
 *
 * The op families live in dense.cu, nn.cu and loss.cu. GEMMs run in full float32 unless the environment
 * sets LIVSEG_CUDA_TF32=1 (TF32 tensor cores: faster, about 1e-3 relative error, outside the parity bounds
 * of tests/test_ops_cuda.c; =rn rounds the operands to TF32 to nearest first, whatever cuBLAS's own
 * conversion does) or LIVSEG_CUDA_BF16=1.
 */
#include <cstdlib>
#include <cstring>

#include "common.cuh"

extern "C" ls_status ls_cuda_backend_init(ls_backend *be, int nthreads, ls_error *err);
extern "C" void ls_cuda_backend_free(ls_backend *be);

extern const ls_ops_dense ls_cuda_dense;
extern const ls_ops_nn ls_cuda_nn;
extern const ls_ops_loss ls_cuda_loss;

namespace lscuda {

const char *cublas_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
    }
}

static cublasOperation_t op(int t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

/* x to TF32 (10 mantissa bits), to nearest with ties to even, as a float the tensor cores read exactly. */
__global__ void k_round_tf32(float *out, const float *in, size_t n) {
    LS_GRID_STRIDE(i, n) {
        unsigned u = __float_as_uint(in[i]);
        if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu; /* not inf, NaN */
        out[i] = __uint_as_float(u);
    }
}

/* Elements from the first to the last one a GEMM operand reads: `batch` matrices (stride s; 0: one shared)
 * of `rows` rows of `cols` at leading dimension ld. */
static size_t span(int rows, int cols, int ld, long long s, int batch) {
    return (size_t)(batch - 1) * (size_t)s + (size_t)(rows - 1) * (size_t)ld + (size_t)cols;
}

/* LIVSEG_CUDA_TF32=rn: *A (na elements) and *B (nb) replaced by rounded copies in the backend's scratch,
 * which grows when a GEMM needs more (the first batch of a run sizes it). */
static void round_operands(const ls_backend *be, const float **A, size_t na, const float **B, size_t nb) {
    state *s = st(be);
    size_t off = (na + 63) / 64 * 64; /* B 256-byte aligned */
    if (off + nb > s->rounded_cap) {
        LS_CK(cudaStreamSynchronize(s->stream)); /* queued GEMMs may still read the old copies */
        if (s->rounded) LS_CK(cudaFree(s->rounded));
        s->rounded = nullptr, s->rounded_cap = 0;
        LS_CK(cudaMalloc(&s->rounded, (off + nb) * sizeof(float)));
        s->rounded_cap = off + nb;
    }
    k_round_tf32<<<blocks_for(na), kThreads, 0, s->stream>>>(s->rounded, *A, na);
    LS_LAUNCHED();
    k_round_tf32<<<blocks_for(nb), kThreads, 0, s->stream>>>(s->rounded + off, *B, nb);
    LS_LAUNCHED();
    *A = s->rounded, *B = s->rounded + off;
}

/* With LIVSEG_CUDA_BF16=1 float GEMMs go through GemmEx with CUBLAS_COMPUTE_32F_FAST_16BF: float in and out,
 * products of bfloat16-rounded inputs on tensor cores, float accumulation. */
void gemm(const ls_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (st(be)->tf32_round && K > 0)
        round_operands(be, &A, span(ta ? K : M, ta ? M : K, lda, 0, 1), &B, span(tb ? N : K, tb ? K : N, ldb, 0, 1));
    if (st(be)->bf16)
        LS_CB(cublasGemmEx(st(be)->blas, op(tb), op(ta), N, M, K, &alpha, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta,
                           C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT));
    else
        LS_CB(cublasSgemm(st(be)->blas, op(tb), op(ta), N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc));
}

void gemm_strided(const ls_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  long long sA, const float *B, int ldb, long long sB, float beta, float *C, int ldc, long long sC,
                  int batch) {
    if (M <= 0 || N <= 0 || batch <= 0) return;
    if (st(be)->tf32_round && K > 0)
        round_operands(be, &A, span(ta ? K : M, ta ? M : K, lda, sA, batch), &B,
                       span(tb ? N : K, tb ? K : N, ldb, sB, batch));
    if (st(be)->bf16)
        LS_CB(cublasGemmStridedBatchedEx(st(be)->blas, op(tb), op(ta), N, M, K, &alpha, B, CUDA_R_32F, ldb, sB, A,
                                         CUDA_R_32F, lda, sA, &beta, C, CUDA_R_32F, ldc, sC, batch,
                                         CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT));
    else
        LS_CB(cublasSgemmStridedBatched(st(be)->blas, op(tb), op(ta), N, M, K, &alpha, B, ldb, sB, A, lda, sA, &beta, C,
                                        ldc, sC, batch));
}

/* One block: out[v] = sum over b < nblocks of partials[b * nv + v], thread-strided then block_sum. */
__global__ void k_finish_sums(const double *partials, int nblocks, int nv, double *out) {
    for (int v = 0; v < nv; v++) {
        double s = 0;
        for (int b = threadIdx.x; b < nblocks; b += blockDim.x) s += partials[(size_t)b * nv + v];
        s = block_sum(s);
        if (threadIdx.x == 0) out[v] = s;
    }
}

void finish_sums(const ls_backend *be, const double *partials, int nblocks, int nv, double *out) {
    k_finish_sums<<<1, kThreads, 0, stream(be)>>>(partials, nblocks, nv, out);
    LS_LAUNCHED();
}

}  // namespace lscuda

namespace {

using lscuda::stream;

void *cu_alloc(const ls_backend *, size_t bytes) {
    void *p = nullptr;
    if (cudaMalloc(&p, bytes ? bytes : 64) != cudaSuccess) {
        (void)cudaGetLastError(); /* an out-of-memory is reported through NULL, not left sticky */
        return nullptr;
    }
    return p;
}
void cu_free(const ls_backend *be, void *p) {
    if (!p) return;
    LS_CK(cudaStreamSynchronize(stream(be))); /* ops still queued may read it */
    LS_CK(cudaFree(p));
}
void cu_to_device(const ls_backend *be, void *dst, const void *src, size_t n) {
    if (n) LS_CK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream(be)));
}
void cu_to_host(const ls_backend *be, void *dst, const void *src, size_t n) {
    if (n) LS_CK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream(be)));
    LS_CK(cudaStreamSynchronize(stream(be)));
}
void cu_copy(const ls_backend *be, void *dst, const void *src, size_t n) {
    if (n) LS_CK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream(be)));
}
void cu_zero(const ls_backend *be, void *p, size_t n) {
    if (n) LS_CK(cudaMemsetAsync(p, 0, n, stream(be)));
}
void cu_sync(const ls_backend *be) { LS_CK(cudaStreamSynchronize(stream(be))); }
void *cu_host_alloc(const ls_backend *, size_t bytes) {
    void *p = nullptr;
    if (cudaMallocHost(&p, bytes ? bytes : 64) != cudaSuccess) {
        (void)cudaGetLastError();
        return nullptr;
    }
    return p;
}
void cu_host_free(const ls_backend *be, void *p) {
    if (!p) return;
    LS_CK(cudaStreamSynchronize(stream(be))); /* a copy still queued may use it */
    LS_CK(cudaFreeHost(p));
}
void cu_to_host_async(const ls_backend *be, void *dst, const void *src, size_t n) {
    if (n) LS_CK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream(be)));
}

const ls_ops_mem cuda_mem = {cu_alloc,  cu_free, cu_to_device,  cu_to_host,  cu_copy,
                             cu_zero,   cu_sync, cu_host_alloc, cu_host_free, cu_to_host_async};

void destroy(lscuda::state *s) {
    if (s->rounded) cudaFree(s->rounded);
    if (s->partials) cudaFree(s->partials);
    if (s->results) cudaFree(s->results);
    if (s->blas) cublasDestroy(s->blas);
    if (s->stream) cudaStreamDestroy(s->stream);
    delete s;
}

}  // namespace

extern "C" ls_status ls_cuda_backend_init(ls_backend *be, int nthreads, ls_error *err) {
    (void)nthreads;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        return ls_fail(err, LS_ERR_UNSUPPORTED, "--device cuda: no CUDA GPU available (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    lscuda::state *s = new lscuda::state();
    std::memset(s, 0, sizeof *s);
    const char *why = nullptr;
    if (cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking) != cudaSuccess) why = "cannot create a CUDA stream";
    else if (cublasCreate(&s->blas) != CUBLAS_STATUS_SUCCESS) why = "cannot create a cuBLAS handle";
    else if (cudaMalloc(&s->partials, lscuda::kPartials * sizeof(double)) != cudaSuccess ||
             cudaMalloc(&s->results, lscuda::kResults * sizeof(double)) != cudaSuccess)
        why = "cannot allocate the backend's scratch";
    if (!why) {
        const char *tf = getenv("LIVSEG_CUDA_TF32"), *bf = getenv("LIVSEG_CUDA_BF16");
        s->tf32_round = tf && !std::strcmp(tf, "rn");
        s->tf32 = s->tf32_round || (tf && !std::strcmp(tf, "1"));
        s->bf16 = bf && !std::strcmp(bf, "1");
        if (cublasSetStream(s->blas, s->stream) != CUBLAS_STATUS_SUCCESS ||
            cublasSetMathMode(s->blas, s->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH) !=
                CUBLAS_STATUS_SUCCESS)
            why = "cannot configure the cuBLAS handle";
    }
    if (why) {
        (void)cudaGetLastError();
        destroy(s);
        return ls_fail(err, LS_ERR_UNSUPPORTED, "--device cuda: %s", why);
    }
    be->impl = s;
    be->mem = &cuda_mem;
    be->dense = &ls_cuda_dense;
    be->nn = &ls_cuda_nn;
    be->loss = &ls_cuda_loss;
    return LS_OK;
}

extern "C" void ls_cuda_backend_free(ls_backend *be) {
    lscuda::state *s = static_cast<lscuda::state *>(be->impl);
    if (!s) return;
    cudaStreamSynchronize(s->stream);
    destroy(s);
    be->impl = nullptr;
}
