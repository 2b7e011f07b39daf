/*
 * bench/gemm_cuda.cu — the GPU's measured cuBLAS GEMM rates, the yardstick for livseg's achieved TFLOP/s:
 * square n x n x n products in float32 (CUBLAS_DEFAULT_MATH, what the backend uses), TF32 tensor cores,
 * and bf16 inputs with float32 accumulation (cublasGemmEx). Best of 10 timed runs after a warm-up, timed
 * with CUDA events. Not a test. Built only with `make CUDA=1`.
 *
 * usage: build-cuda/bench/gemm_cuda [n]      (default 8192)
 * Prints one line per mode, "gemm MODE n N tflops X", and exits 2 (with a message) without a GPU.
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#define CK(call)                                                                                              \
    do {                                                                                                      \
        cudaError_t e_ = (call);                                                                              \
        if (e_ != cudaSuccess) {                                                                              \
            std::fprintf(stderr, "bench/gemm_cuda: %s failed at %s:%d: %s\n", #call, __FILE__, __LINE__,        \
                         cudaGetErrorString(e_));                                                             \
            std::exit(2);                                                                                     \
        }                                                                                                     \
    } while (0)
#define CB(call)                                                                                              \
    do {                                                                                                      \
        cublasStatus_t s_ = (call);                                                                           \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                    \
            std::fprintf(stderr, "bench/gemm_cuda: %s failed at %s:%d: status %d\n", #call, __FILE__, __LINE__, \
                         (int)s_);                                                                            \
            std::exit(2);                                                                                     \
        }                                                                                                     \
    } while (0)

__global__ void fill(float *p, size_t n, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = scale * (float)((i * 2654435761u) % 1000) / 1000.0f;
}
__global__ void to_bf16(__nv_bfloat16 *q, const float *p, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        q[i] = __float2bfloat16(p[i]);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? std::atoi(argv[1]) : 8192;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        std::fprintf(stderr, "bench/gemm_cuda: no CUDA device\n");
        return 2;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    size_t nn = (size_t)n * n;
    float *a, *b, *c;
    __nv_bfloat16 *ah, *bh;
    CK(cudaMalloc(&a, nn * sizeof(float)));
    CK(cudaMalloc(&b, nn * sizeof(float)));
    CK(cudaMalloc(&c, nn * sizeof(float)));
    CK(cudaMalloc(&ah, nn * sizeof(__nv_bfloat16)));
    CK(cudaMalloc(&bh, nn * sizeof(__nv_bfloat16)));
    fill<<<4096, 256>>>(a, nn, 1.0f);
    fill<<<4096, 256>>>(b, nn, 0.5f);
    to_bf16<<<4096, 256>>>(ah, a, nn);
    to_bf16<<<4096, 256>>>(bh, b, nn);
    CK(cudaGetLastError());
    cublasHandle_t h;
    CB(cublasCreate(&h));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    const float one = 1.0f, zero = 0.0f;
    std::printf("GPU %s, %d SMs; C[n,n] = A B at n = %d, best of 10\n", prop.name, prop.multiProcessorCount, n);
    const char *modes[] = {"fp32", "tf32", "bf16"};
    for (int m = 0; m < 3; m++) {
        CB(cublasSetMathMode(h, m == 1 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
        float best = 1e30f;
        for (int it = 0; it <= 10; it++) {
            CK(cudaEventRecord(e0));
            if (m < 2)
                CB(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, n, b, n, &zero, c, n));
            else
                CB(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, ah, CUDA_R_16BF, n, bh, CUDA_R_16BF, n,
                                &zero, c, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
            CK(cudaEventRecord(e1));
            CK(cudaEventSynchronize(e1));
            float ms;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            if (it && ms < best) best = ms;
        }
        std::printf("gemm %s n %d tflops %.1f (%.2f ms)\n", modes[m], n, 2.0 * n * n * (double)n / (best * 1e-3) / 1e12,
                    best);
    }
    cublasDestroy(h);
    cudaFree(a), cudaFree(b), cudaFree(c), cudaFree(ah), cudaFree(bh);
    return 0;
}
