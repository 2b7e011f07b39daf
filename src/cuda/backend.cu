/*
 * backend.cu — the CUDA backend's device selection and memory table (see ops.h). Built only with
 * `make CUDA=1`. Device memory is plain cudaMalloc; copies run on the backend's stream.
 *
 * The op families (dense, nn, loss) are not yet implemented for CUDA, so opening the backend on a
 * machine with a GPU still fails with LS_ERR_UNSUPPORTED and says so, instead of handing out a table
 * with holes.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

extern "C" {
#include "ops.h"
#include "util.h"
}

extern "C" ls_status ls_cuda_backend_init(ls_backend *be, int nthreads, ls_error *err);
extern "C" void ls_cuda_backend_free(ls_backend *be);

namespace {

struct cuda_state {
    cudaStream_t stream;
    cublasHandle_t blas;
};

cudaStream_t stream_of(const ls_backend *be) { return static_cast<cuda_state *>(be->impl)->stream; }

void *cu_alloc(const ls_backend *, size_t bytes) {
    void *p = nullptr;
    return cudaMalloc(&p, bytes ? bytes : 64) == cudaSuccess ? p : nullptr;
}
void cu_free(const ls_backend *, void *p) { cudaFree(p); }
void cu_to_device(const ls_backend *be, void *dst, const void *src, size_t n) {
    cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream_of(be));
}
void cu_to_host(const ls_backend *be, void *dst, const void *src, size_t n) {
    cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream_of(be));
    cudaStreamSynchronize(stream_of(be));
}
void cu_copy(const ls_backend *be, void *dst, const void *src, size_t n) {
    cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream_of(be));
}
void cu_zero(const ls_backend *be, void *p, size_t n) { cudaMemsetAsync(p, 0, n, stream_of(be)); }
void cu_sync(const ls_backend *be) { cudaStreamSynchronize(stream_of(be)); }

const ls_ops_mem cuda_mem = {cu_alloc, cu_free, cu_to_device, cu_to_host, cu_copy, cu_zero, cu_sync};

}  // namespace

extern "C" ls_status ls_cuda_backend_init(ls_backend *be, int nthreads, ls_error *err) {
    (void)nthreads;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return ls_fail(err, LS_ERR_UNSUPPORTED, "--device cuda: no CUDA GPU available (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    cuda_state *st = new cuda_state();
    if (cudaStreamCreate(&st->stream) != cudaSuccess || cublasCreate(&st->blas) != CUBLAS_STATUS_SUCCESS) {
        delete st;
        return ls_fail(err, LS_ERR_UNSUPPORTED, "--device cuda: cannot create a CUDA stream or cuBLAS handle");
    }
    cublasSetStream(st->blas, st->stream);
    be->impl = st;
    be->mem = &cuda_mem;
    ls_cuda_backend_free(be);
    return ls_fail(err, LS_ERR_UNSUPPORTED, "--device cuda: the CUDA kernels are not implemented yet (CPU only)");
}

extern "C" void ls_cuda_backend_free(ls_backend *be) {
    cuda_state *st = static_cast<cuda_state *>(be->impl);
    if (!st) return;
    cublasDestroy(st->blas);
    cudaStreamDestroy(st->stream);
    delete st;
    be->impl = nullptr;
}
