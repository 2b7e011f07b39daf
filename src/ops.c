/* ops.c — backend selection, the CPU memory table, and the arena (see ops.h). */
#include "ops.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "util.h"

extern const ls_ops_dense ls_cpu_dense;
extern const ls_ops_nn ls_cpu_nn;
extern const ls_ops_loss ls_cpu_loss;

#ifdef LS_WITH_CUDA
ls_status ls_cuda_backend_init(ls_backend *be, int nthreads, ls_error *err);
void ls_cuda_backend_free(ls_backend *be);
void ls_cuda_set_precision(ls_backend *be, ls_precision p);
#endif

static void *cpu_alloc(const ls_backend *be, size_t bytes) {
    (void)be;
    void *p = NULL;
    size_t n = (bytes + 63) / 64 * 64;
    if (n > ls_machine_bytes()) return NULL; /* it could never be touched (util.h) */
    return posix_memalign(&p, 64, n ? n : 64) == 0 ? p : NULL;
}
static void cpu_free(const ls_backend *be, void *p) { (void)be; free(p); }
static void cpu_copy(const ls_backend *be, void *dst, const void *src, size_t n) {
    (void)be;
    if (n) memcpy(dst, src, n);
}
static void cpu_zero(const ls_backend *be, void *p, size_t n) {
    (void)be;
    if (n) memset(p, 0, n);
}
static void cpu_sync(const ls_backend *be) { (void)be; }

static const ls_ops_mem cpu_mem = {cpu_alloc, cpu_free, cpu_copy, cpu_copy, cpu_copy, cpu_zero, cpu_sync,
                                   cpu_alloc, cpu_free, cpu_copy};

const char *ls_device_name(ls_device dev) { return dev == LS_DEV_CUDA ? "cuda" : "cpu"; }

ls_status ls_device_parse(const char *s, ls_device *dev, ls_error *err) {
    if (strcmp(s, "cpu") == 0) *dev = LS_DEV_CPU;
    else if (strcmp(s, "cuda") == 0) *dev = LS_DEV_CUDA;
    else return ls_fail(err, LS_ERR_INPUT, "--device %s: expected cpu or cuda", s);
    return LS_OK;
}

const char *ls_blas_core_for(const char *core, int level) {
    /* OpenBLAS x86-64 core names by the extension their single-precision kernels need. */
    static const struct {
        const char *name;
        int level;
    } cores[] = {{"Prescott", 0},  {"Core2", 0},       {"Penryn", 0},     {"Dunnington", 0}, {"Nehalem", 0},
                 {"Atom", 0},      {"Opteron", 0},     {"Barcelona", 0},  {"Bobcat", 0},     {"Sandybridge", 1},
                 {"Bulldozer", 1}, {"Piledriver", 1},  {"Steamroller", 1}, {"Excavator", 1},  {"Haswell", 2},
                 {"Zen", 2},       {"SkylakeX", 3},    {"Cooperlake", 3}, {"SapphireRapids", 3}};
    static const char *const best[] = {NULL, "Sandybridge", "Haswell", "SkylakeX"};
    if (!core || level < 1 || level > 3) return NULL;
    for (size_t i = 0; i < sizeof cores / sizeof *cores; i++)
        if (!strcasecmp(core, cores[i].name)) return cores[i].level < level ? best[level] : NULL;
    return NULL;
}

int ls_cpu_vector_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        return 3;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 2;
    return __builtin_cpu_supports("avx") ? 1 : 0;
}

const char *ls_blas_core(void) { return openblas_get_corename(); }

const char *ls_blas_better_core(void) {
    const char *set = getenv("OPENBLAS_CORETYPE");
    return set && *set ? NULL : ls_blas_core_for(ls_blas_core(), ls_cpu_vector_level());
}

void ls_process_tune(char **argv) {
    int again = 0;
    if (!getenv("OMP_WAIT_POLICY")) again = !setenv("OMP_WAIT_POLICY", "passive", 1);
    const char *core = ls_blas_better_core();
    if (core) again |= !setenv("OPENBLAS_CORETYPE", core, 1);
    if (again) execv("/proc/self/exe", argv); /* returns only on failure: then run on as we are */
}

ls_status ls_backend_init(ls_backend *be, ls_device dev, int nthreads, ls_error *err) {
    memset(be, 0, sizeof *be);
#ifdef _OPENMP
    if (nthreads <= 0) nthreads = omp_get_num_procs();
#else
    if (nthreads <= 0) nthreads = 1;
#endif
    be->device = dev;
    be->nthreads = nthreads;
    if (dev == LS_DEV_CUDA) {
#ifdef LS_WITH_CUDA
        return ls_cuda_backend_init(be, nthreads, err);
#else
        return ls_fail(err, LS_ERR_UNSUPPORTED,
                       "--device cuda: this livseg was built without CUDA (rebuild with make CUDA=1)");
#endif
    }
    openblas_set_num_threads(nthreads);
    be->mem = &cpu_mem;
    be->dense = &ls_cpu_dense;
    be->nn = &ls_cpu_nn;
    be->loss = &ls_cpu_loss;
    return LS_OK;
}

void ls_backend_free(ls_backend *be) {
#ifdef LS_WITH_CUDA
    if (be->device == LS_DEV_CUDA) ls_cuda_backend_free(be);
#endif
    memset(be, 0, sizeof *be);
}

void ls_backend_prefer(ls_backend *be, ls_precision p) {
    if (be->device != LS_DEV_CUDA || be->precision_from_env) return;
#ifdef LS_WITH_CUDA
    ls_cuda_set_precision(be, p);
#else
    (void)p;
#endif
}

const char *ls_precision_name(ls_precision p) {
    static const char *const names[] = {"fp32", "tf32", "tf32-rn", "bf16"};
    return (unsigned)p < 4 ? names[p] : "?";
}

ls_status ls_arena_init(ls_arena *a, const ls_backend *be, size_t bytes, ls_error *err) {
    memset(a, 0, sizeof *a);
    a->be = be;
    a->base = be->mem->alloc(be, bytes);
    if (!a->base)
        return ls_fail(err, LS_ERR_NOMEM, "cannot allocate %.2f GB of %s memory for the network's activations (this "
                       "machine has %.1f GB): a smaller --batch or model", bytes / 1e9, ls_device_name(be->device),
                       ls_machine_bytes() / 1e9);
    a->cap = bytes;
    return LS_OK;
}

float *ls_arena_floats(ls_arena *a, size_t n) {
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    LS_ASSERT(a->used + bytes <= a->cap);
    float *p = (float *)(a->base + a->used);
    a->used += bytes;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

void ls_arena_reset(ls_arena *a) { a->used = 0; }

void ls_arena_free(ls_arena *a) {
    if (a->base) a->be->mem->free(a->be, a->base);
    memset(a, 0, sizeof *a);
}

/* Calls f on batch i of the pipeline. */
static ls_status on_batch(ls_batch_fn f, void *ctx, int i, int batch, int total, float *const set[2], ls_error *err) {
    int k0 = i * batch, nb = total - k0 < batch ? total - k0 : batch;
    return f(ctx, k0, nb, set[i & 1], err);
}

ls_status ls_pipeline_run(const ls_backend *be, int total, int batch, size_t set_floats, const ls_pipeline *p,
                          ls_error *err) {
    float *set[2] = {be->mem->host_alloc(be, set_floats * sizeof(float)), be->mem->host_alloc(be, set_floats * sizeof(float))};
    ls_status s = set[0] && set[1] ? LS_OK
                                   : ls_fail(err, LS_ERR_NOMEM, "cannot allocate %zu MB of host buffers",
                                             2 * set_floats * sizeof(float) >> 20);
    int n = (total + batch - 1) / batch;
    if (!s && n > 0) s = on_batch(p->prep, p->ctx, 0, batch, total, set, err);
    for (int i = 0; !s && i < n; i++) {
        s = on_batch(p->queue, p->ctx, i, batch, total, set, err);
        if (!s && i + 1 < n) s = on_batch(p->prep, p->ctx, i + 1, batch, total, set, err);
        if (!s && i > 0) s = on_batch(p->finish, p->ctx, i - 1, batch, total, set, err);
        be->mem->sync(be);
    }
    if (!s && n > 0) s = on_batch(p->finish, p->ctx, n - 1, batch, total, set, err);
    be->mem->sync(be);
    for (int k = 0; k < 2; k++)
        if (set[k]) be->mem->host_free(be, set[k]);
    return s;
}
