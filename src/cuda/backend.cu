/*
 * backend.cu — the CUDA backend's device selection, memory table and shared helpers (see ops.h and
 * common.cuh). Built only with `make CUDA=1`. Device memory is plain cudaMalloc (256-byte aligned, so the
 * 64-byte contract holds); copies and ops run on the backend's one stream, in order.
 *
 * The op families live in dense.cu, nn.cu and loss.cu. GEMMs run in full float32 unless a command prefers
 * otherwise (ls_backend_prefer: segment takes TF32) or the environment sets LIVSEG_CUDA_TF32=1 (TF32 tensor
 * cores: faster, about 1e-3 relative error, outside the parity bounds of tests/test_ops_cuda.c; =rn rounds
 * the operands to TF32 to nearest first, whatever cuBLAS's own conversion does; =0 float32) or
 * LIVSEG_CUDA_BF16=1.
 *
 * cuBLAS is opened with dlopen while the device context is created, on a second thread: its static
 * constructors fault in ~200 MB and took 60-80 ms at every start of a linked livseg (measured on the CPU
 * machine, `livseg --version`: 0.16 s against 0.04 s without CUDA), before main, CPU runs included.
 */
#include <dlfcn.h>
#include <pthread.h>

#include <cstdlib>
#include <cstring>

#include "common.cuh"

extern "C" ls_status ls_cuda_backend_init(ls_backend *be, int nthreads, ls_error *err);
extern "C" void ls_cuda_backend_free(ls_backend *be);
extern "C" void ls_cuda_set_precision(ls_backend *be, ls_precision p);
extern "C" ls_status ls_cuda_blas_check(ls_error *err);

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

/* In LS_PREC_BF16 float GEMMs go through GemmEx with CUBLAS_COMPUTE_32F_FAST_16BF: float in and out,
 * products of bfloat16-rounded inputs on tensor cores, float accumulation. */
void gemm(const ls_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (be->precision == LS_PREC_TF32_RN && K > 0)
        round_operands(be, &A, span(ta ? K : M, ta ? M : K, lda, 0, 1), &B, span(tb ? N : K, tb ? K : N, ldb, 0, 1));
    if (be->precision == LS_PREC_BF16)
        LS_CB(st(be)->cb.gemm_ex(st(be)->blas, op(tb), op(ta), N, M, K, &alpha, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda,
                                 &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT));
    else
        LS_CB(st(be)->cb.sgemm(st(be)->blas, op(tb), op(ta), N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc));
}

void gemm_strided(const ls_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  long long sA, const float *B, int ldb, long long sB, float beta, float *C, int ldc, long long sC,
                  int batch) {
    if (M <= 0 || N <= 0 || batch <= 0) return;
    if (be->precision == LS_PREC_TF32_RN && K > 0)
        round_operands(be, &A, span(ta ? K : M, ta ? M : K, lda, sA, batch), &B,
                       span(tb ? N : K, tb ? K : N, ldb, sB, batch));
    if (be->precision == LS_PREC_BF16)
        LS_CB(st(be)->cb.gemm_strided_ex(st(be)->blas, op(tb), op(ta), N, M, K, &alpha, B, CUDA_R_32F, ldb, sB, A,
                                         CUDA_R_32F, lda, sA, &beta, C, CUDA_R_32F, ldc, sC, batch,
                                         CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT));
    else
        LS_CB(st(be)->cb.sgemm_strided(st(be)->blas, op(tb), op(ta), N, M, K, &alpha, B, ldb, sB, A, lda, sA, &beta,
                                       C, ldc, sC, batch));
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

#define LS_STR_(x) #x
#define LS_STR(x) LS_STR_(x) /* the name after macro expansion: cublasCreate is cublasCreate_v2 */

/* p as the function pointer type of *f. */
template <class F> bool resolve(void *lib, const char *name, F *f) {
    void *p = dlsym(lib, name);
    *f = reinterpret_cast<F>(p);
    return p != nullptr;
}

/* cuBLAS of the major version we were compiled against, by its soname (the build's run path finds it
 * where it was linked from), with every entry point; why says what failed. The library stays loaded:
 * unloading it while the runtime holds its registered kernels is not safe, and a second backend finds it
 * open. */
struct blas_loader {
    lscuda::blas_api cb;
    char why[600];
    int ok;
};

void *blas_open(void *arg) {
    blas_loader *L = static_cast<blas_loader *>(arg);
    const char *name = "libcublas.so." LS_STR(CUBLAS_VER_MAJOR);
    void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        std::snprintf(L->why, sizeof L->why, "cannot load %s (%s)", name, dlerror());
        return nullptr;
    }
    lscuda::blas_api &c = L->cb;
    const char *missing = nullptr;
#define LS_RESOLVE(field, fn) \
    if (!missing && !resolve(lib, LS_STR(fn), &c.field)) missing = LS_STR(fn)
    LS_RESOLVE(create, cublasCreate);
    LS_RESOLVE(destroy, cublasDestroy);
    LS_RESOLVE(set_stream, cublasSetStream);
    LS_RESOLVE(set_math_mode, cublasSetMathMode);
    LS_RESOLVE(sgemm, cublasSgemm);
    LS_RESOLVE(sgemm_strided, cublasSgemmStridedBatched);
    LS_RESOLVE(gemm_ex, cublasGemmEx);
    LS_RESOLVE(gemm_strided_ex, cublasGemmStridedBatchedEx);
#undef LS_RESOLVE
    if (missing) std::snprintf(L->why, sizeof L->why, "%s has no %s", name, missing);
    L->ok = !missing;
    return nullptr;
}

void destroy(lscuda::state *s) {
    if (s->rounded) cudaFree(s->rounded);
    if (s->partials) cudaFree(s->partials);
    if (s->results) cudaFree(s->results);
    if (s->blas) s->cb.destroy(s->blas);
    if (s->stream) cudaStreamDestroy(s->stream);
    delete s;
}

/* LIVSEG_CUDA_TF32 and LIVSEG_CUDA_BF16 into *p; 0 when neither is set, -1 (and err) for a value that means
 * nothing. */
int precision_from_env(ls_precision *p, ls_error *err) {
    const char *tf = getenv("LIVSEG_CUDA_TF32"), *bf = getenv("LIVSEG_CUDA_BF16");
    if (tf && std::strcmp(tf, "0") && std::strcmp(tf, "1") && std::strcmp(tf, "rn")) {
        ls_fail(err, LS_ERR_INPUT, "LIVSEG_CUDA_TF32=%.40s: expected 0, 1 or rn", tf);
        return -1;
    }
    if (bf && std::strcmp(bf, "0") && std::strcmp(bf, "1")) {
        ls_fail(err, LS_ERR_INPUT, "LIVSEG_CUDA_BF16=%.40s: expected 0 or 1", bf);
        return -1;
    }
    if (!tf && !bf) return 0;
    *p = bf && !std::strcmp(bf, "1") ? LS_PREC_BF16
         : tf && !std::strcmp(tf, "rn") ? LS_PREC_TF32_RN
         : tf && !std::strcmp(tf, "1") ? LS_PREC_TF32
                                       : LS_PREC_F32;
    return 1;
}

/* The stream and the scratch: the first calls that need the device's context, so its creation (tenths of a
 * second) runs while the loader opens cuBLAS. */
const char *open_stream(lscuda::state *s) {
    if (cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking) != cudaSuccess) return "cannot create a CUDA stream";
    if (cudaMalloc(&s->partials, lscuda::kPartials * sizeof(double)) != cudaSuccess ||
        cudaMalloc(&s->results, lscuda::kResults * sizeof(double)) != cudaSuccess)
        return "cannot allocate the backend's scratch";
    return nullptr;
}

/* The cuBLAS handle on the stream, once the loader has finished. */
const char *open_blas(lscuda::state *s, const blas_loader *L) {
    if (!L->ok) return L->why;
    s->cb = L->cb;
    if (s->cb.create(&s->blas) != CUBLAS_STATUS_SUCCESS) return "cannot create a cuBLAS handle";
    if (s->cb.set_stream(s->blas, s->stream) != CUBLAS_STATUS_SUCCESS) return "cannot configure the cuBLAS handle";
    return nullptr;
}

}  // namespace

extern "C" void ls_cuda_set_precision(ls_backend *be, ls_precision p) {
    lscuda::state *s = lscuda::st(be);
    int tf32 = p == LS_PREC_TF32 || p == LS_PREC_TF32_RN; /* BF16 is chosen per GEMM (GemmEx's compute type) */
    LS_CB(s->cb.set_math_mode(s->blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    be->precision = p;
}

/* For tests/test_ops_cuda.c, which runs it without a GPU: cuBLAS loads and has every entry point. */
extern "C" ls_status ls_cuda_blas_check(ls_error *err) {
    blas_loader L{};
    blas_open(&L);
    return L.ok ? LS_OK : ls_fail(err, LS_ERR_UNSUPPORTED, "%s", L.why);
}

extern "C" ls_status ls_cuda_backend_init(ls_backend *be, int nthreads, ls_error *err) {
    (void)nthreads;
    ls_precision prec = LS_PREC_F32;
    int from_env = precision_from_env(&prec, err);
    if (from_env < 0) return LS_ERR_INPUT;
    blas_loader L{};
    pthread_t th;
    int threaded = pthread_create(&th, nullptr, blas_open, &L) == 0;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    lscuda::state *s = nullptr;
    const char *why = nullptr;
    if (e == cudaSuccess && n > 0) {
        s = new lscuda::state();
        std::memset(s, 0, sizeof *s);
        why = open_stream(s);
    }
    if (threaded) pthread_join(th, nullptr);
    if (e != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        return ls_fail(err, LS_ERR_UNSUPPORTED, "--device cuda: no CUDA GPU available (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (!threaded) blas_open(&L);
    if (!why) why = open_blas(s, &L);
    if (why) {
        ls_status st = ls_fail(err, LS_ERR_UNSUPPORTED, "--device cuda: %s", why);
        (void)cudaGetLastError();
        destroy(s);
        return st;
    }
    be->impl = s;
    be->mem = &cuda_mem;
    be->dense = &ls_cuda_dense;
    be->nn = &ls_cuda_nn;
    be->loss = &ls_cuda_loss;
    be->precision_from_env = from_env;
    ls_cuda_set_precision(be, prec);
    return LS_OK;
}

extern "C" void ls_cuda_backend_free(ls_backend *be) {
    lscuda::state *s = static_cast<lscuda::state *>(be->impl);
    if (!s) return;
    cudaStreamSynchronize(s->stream);
    destroy(s);
    be->impl = nullptr;
}
