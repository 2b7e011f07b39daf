/*
 * ops.h — the backend interface: every numeric kernel the models need, behind one table per backend,
 * so vit.c, head.c, decoder.c, loss.c and train.c are written once for the CPU and for CUDA.
 *
 * Contract
 *  - All tensor pointers passed to an op live in the backend's memory (host memory for the CPU,
 *    device memory for CUDA), are float32, densely packed, row-major, and are allocated through
 *    be->mem (usually from an ls_arena, so hot loops never allocate).
 *  - Ops never fail at run time: shapes are checked by the model code that calls them, and a broken
 *    invariant is a bug (LS_ASSERT). Ops may run asynchronously on CUDA; be->mem->sync waits.
 *  - The op families live in their own headers and are filled by their own files:
 *        ops_dense.h  GEMM, LayerNorm, softmax, GELU, attention helpers   (cpu_dense.c)
 *        ops_nn.h     conv2d, batch norm, ReLU, dropout, upsampling, concat (cpu_nn.c, cpu_conv.c)
 *        ops_loss.h   the training losses and the optimiser step          (cpu_loss.c)
 *
 * Dimension legend used across the op headers:
 *   B batch (slices), T tokens, C channels, H/W height/width, NH heads, HS head size, K kernel size.
 */
#ifndef LS_OPS_H
#define LS_OPS_H

#include <stddef.h>

#include "livseg.h"

typedef enum { LS_DEV_CPU = 0, LS_DEV_CUDA = 1 } ls_device;

typedef struct ls_backend ls_backend;

/* What float GEMMs compute in: float32, TF32 tensor cores (cuBLAS rounds the operands to nearest; _RN
 * rounds them in a kernel of ours first, whatever cuBLAS does), or bfloat16 tensor cores. Float in and out,
 * float accumulation in every mode; the CPU is always LS_PREC_F32. */
typedef enum { LS_PREC_F32 = 0, LS_PREC_TF32, LS_PREC_TF32_RN, LS_PREC_BF16 } ls_precision;

/* Memory of a backend. */
typedef struct {
    void *(*alloc)(const ls_backend *be, size_t bytes); /* NULL on failure, 64-byte aligned */
    void (*free)(const ls_backend *be, void *p);
    void (*to_device)(const ls_backend *be, void *dst, const void *host_src, size_t bytes);
    void (*to_host)(const ls_backend *be, void *host_dst, const void *src, size_t bytes);
    void (*copy)(const ls_backend *be, void *dst, const void *src, size_t bytes); /* same backend */
    void (*zero)(const ls_backend *be, void *p, size_t bytes);
    void (*sync)(const ls_backend *be);
    /* Host buffers the device copies to and from at full speed, without staging (pinned on CUDA, so a
     * copy can overlap the host's work); NULL on failure. */
    void *(*host_alloc)(const ls_backend *be, size_t bytes);
    void (*host_free)(const ls_backend *be, void *p);
    /* to_host that may return before the copy ends (CUDA, into a host_alloc buffer): read host_dst only
     * after sync. The CPU copies at once. */
    void (*to_host_async)(const ls_backend *be, void *host_dst, const void *src, size_t bytes);
} ls_ops_mem;

#include "ops_dense.h"
#include "ops_nn.h"
#include "ops_loss.h"

struct ls_backend {
    ls_device device;
    int nthreads;      /* CPU worker threads (OpenMP and BLAS), at least 1 */
    void *impl;        /* backend-private state (CUDA stream, cuBLAS handle) */
    ls_precision precision;
    int precision_from_env; /* 1: LIVSEG_CUDA_TF32 / LIVSEG_CUDA_BF16 chose it (ls_backend_prefer leaves it) */
    const ls_ops_mem *mem;
    const ls_ops_dense *dense;
    const ls_ops_nn *nn;
    const ls_ops_loss *loss;
};

/* Opens a backend. `nthreads` <= 0 means all cores. CUDA without a GPU (or without CUDA in this
 * build) fails with LS_ERR_UNSUPPORTED and a message saying which. */
ls_status ls_backend_init(ls_backend *be, ls_device dev, int nthreads, ls_error *err);
void ls_backend_free(ls_backend *be);
/* A command's choice of GEMM precision on CUDA (segment: TF32; training stays float32), taken unless the
 * environment chose one (LIVSEG_CUDA_TF32=0|1|rn, LIVSEG_CUDA_BF16=0|1, read by ls_backend_init). The CPU
 * ignores it. */
void ls_backend_prefer(ls_backend *be, ls_precision p);
/* "fp32", "tf32", "tf32-rn", "bf16". */
const char *ls_precision_name(ls_precision p);
const char *ls_device_name(ls_device dev);
/* "cpu" / "cuda" -> device; LS_ERR_INPUT for anything else. */
ls_status ls_device_parse(const char *s, ls_device *dev, ls_error *err);

/* OpenBLAS picks its kernels by CPU model when it loads, and a model newer than the library falls back to
 * old ones: Debian 12's 0.3.21 runs Prescott's SSE3 kernels on a Xeon of model 207 (Emerald Rapids), six
 * times slower than its AVX-512 ones there (docs/benchmarks.md). `level` is a CPU's best vector extension:
 * 0 SSE, 1 AVX, 2 AVX2 with FMA, 3 AVX-512 (F, BW, DQ, VL). ls_blas_core_for gives the OPENBLAS_CORETYPE
 * that uses it when `core` (OpenBLAS's choice) is a lesser one, and NULL when that choice stands (as good,
 * or a name not known here). ls_blas_better_core asks it of this process's OpenBLAS and CPU, and is NULL
 * also when OPENBLAS_CORETYPE is set: the user chose. The variable is read only when OpenBLAS loads, so a
 * program acting on it must set it and execute itself again (ls_process_tune). */
const char *ls_blas_core_for(const char *core, int level);
int ls_cpu_vector_level(void);
const char *ls_blas_better_core(void);
/* The kernels OpenBLAS runs in this process ("SkylakeX", ...). */
const char *ls_blas_core(void);
/* For a program's main: when the user has not chosen them, sets OPENBLAS_CORETYPE (as above) and
 * OMP_WAIT_POLICY=passive (OpenMP threads that busy-wait between parallel regions, libgomp's default, lose
 * 5-15x of their speed as soon as anything else wants the same cores: measured with one competing process
 * on 2 cores, a training epoch 1.4 s passive, 24-34 s active), then executes the program again with argv,
 * as both are read only when their libraries load. Returns only when nothing changed or the exec failed. */
void ls_process_tune(char **argv);

/* A bump allocator over one block of backend memory: one per forward/backward, reset between
 * batches, so the hot loop allocates nothing. Allocations are 64-byte aligned. */
typedef struct {
    const ls_backend *be;
    char *base;
    size_t cap, used, peak;
} ls_arena;

ls_status ls_arena_init(ls_arena *a, const ls_backend *be, size_t bytes, ls_error *err);
float *ls_arena_floats(ls_arena *a, size_t n); /* LS_ASSERTs on overflow: size arenas up front */
void ls_arena_reset(ls_arena *a);
void ls_arena_free(ls_arena *a);

/* A two-set software pipeline over items 0..total-1 in batches of `batch` (segment's and features' slice
 * loops). It owns two host sets of set_floats floats from mem->host_alloc (pinned on CUDA). For the batch of
 * nb items from k0: prep fills a set; queue queues the batch's device work, its results copied back into the
 * set asynchronously (mem->to_host_async); finish uses them, after the wait. While the device runs batch i
 * the host preps batch i+1 and finishes batch i-1, then waits for batch i; on the CPU, where ops run as they
 * are called, that is the plain order. Stops at the first failure. */
typedef ls_status (*ls_batch_fn)(void *ctx, int k0, int nb, float *set, ls_error *err);
typedef struct {
    ls_batch_fn prep, queue, finish;
    void *ctx;
} ls_pipeline;

ls_status ls_pipeline_run(const ls_backend *be, int total, int batch, size_t set_floats, const ls_pipeline *p,
                          ls_error *err);

#endif
