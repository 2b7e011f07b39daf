/*
 * test_ops_cuda.c — the CUDA backend against the CPU backend, op by op (every op of ops_dense.h, ops_nn.h
 * and ops_loss.h, forward and backward), then one whole training step of head + decoder (model.c forward,
 * the five losses, backward, RAdam) on both, a whole ViT's forward and backward (resized position tables
 * included), the pinned host memory, and ls_segment_volume's pipelined slice loop against the CPU's. Fresh random inputs every run; the seed is printed, and
 * LS_SEED=N repeats a run.
 *
 * Without CUDA in the build, or without a CUDA device, every test SKIPs saying which.
 *
 * Error measure: max over elements of |g - c| / max(|c|, floor), g the CUDA result, c the CPU one, floor 1%
 * of the largest |c| of that tensor (values near zero are judged against the tensor's scale, as float32
 * cancellation leaves ~1e-7 of the scale on them whatever the order of summation). Bounds per op:
 *
 *   0      data movement, single additions and products (patchify, embed_tokens, split/merge_heads,
 *          tokens_to_grid, add, add_bias, fill_rows, relu, dropout2d, concat and their backward copies):
 *          IEEE add, multiply and copies are exact.
 *   2e-6   elementwise formulas written in the CPU's order (upsampling, batch-norm eval, RAdam, AdamW, the
 *          teacher EMA): the CUDA build contracts nothing into FMA (--fmad=false), so they are equal unless
 *          the compilers differ; l2norm and its norms, DINO's centre update and gradient clipping (a sum in
 *          double in another order, rounded to float, then one product or update: a few ulps).
 *   1e-5   transcendental row/element ops (softmax, GELU and its backward, LayerNorm forward): both backends
 *          use fastmath.h's polynomial exp and rational erf; softmax's row sum is float on the CPU and
 *          double on the GPU. (With CUDA's expf/erff instead, GELU missed this bound: 1.07e-5 on an H200,
 *          the erf approximations' 4e-7 difference amplified by the cancellation in 1 + erf(x) for x < 0.)
 *   1e-4   GEMMs, attention, convolutions, batch norm training/backward, LayerNorm/softmax/l2norm backward,
 *          column sums, cd_term: float32 products summed in another order (cuBLAS's blocking vs OpenBLAS's;
 *          the fused attention's running softmax), or a dot product rounded to float before a cancelling
 *          subtraction.
 *   1e-6   loss values (sums in double on both sides, another order); 1e-5 their gradients dz
 *          and DINO's ds (softmax in double on both sides, rounded to float).
 *   2e-4   the training step (logits, codes, loss, every gradient, running statistics, parameters after
 *          RAdam) with the floor at 5% of the tensor's largest value, as tests/test_model.c: each backend is
 *          within 1e-4 of the float64 answer there, so they are within 2e-4 of each other.
 *
 *   5e-3   of the tensor's largest value: GEMMs on TF32 tensor cores (LIVSEG_CUDA_TF32=1), gemm_tf32 only;
 *   1e-4   LIVSEG_CUDA_TF32=rn against the CPU's GEMM of operands rounded to TF32 the same way (products of
 *          TF32 values are exact in float), gemm_tf32_rounding;
 *   2e-2   of the same, GEMMs on bfloat16 tensor cores (LIVSEG_CUDA_BF16=1), gemm_bf16 only.
 *
 * cuBLAS runs in full float32 elsewhere: TF32 would fail the 1e-4 bounds by design, so the test unsets it
 * except for gemm_tf32's own backend.
 */
#include <stdint.h>
#include <time.h>

#include "model.h"
#include "segment.h"
#include "ops.h"
#include "rng.h"
#include "test.h"
#include "util.h"
#include "vit.h"

static const char *skip_reason; /* set when there is nothing to compare against */
static ls_backend cpu, gpu;
static ls_rng rng;

#ifdef LS_WITH_CUDA
static int cublas_mapped_at_start = -1; /* libcublas in this process before any backend opened (main) */
ls_status ls_cuda_blas_check(ls_error *err); /* src/cuda/backend.cu */

/* 1 when a library whose name contains `name` is mapped into this process, 0 when not, -1 unknown. */
static int library_mapped(const char *name) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, name) != NULL;
    fclose(f);
    return found;
}
#endif

/* Needs no GPU. cuBLAS is not linked (its constructors cost every start 60-80 ms and ~200 MB, the CPU's
 * runs too) but opened when a CUDA backend starts: it must not be in the process before that, must load
 * with every entry point the backend calls, and a precision variable with a meaningless value is refused
 * before the device is touched. */
static void cublas_loading(void) {
#ifndef LS_WITH_CUDA
    SKIP("no CUDA in this build (make CUDA=1 BUILD=build-cuda)");
#else
    CHECK(cublas_mapped_at_start == 0, "libcublas was mapped before any backend opened (%d): is it linked again?",
          cublas_mapped_at_start);
    ls_error err = {0};
    CHECK(ls_cuda_blas_check(&err) == LS_OK, "%s", err.msg);
    CHECK(library_mapped("libcublas.so") == 1, "libcublas is not mapped after loading it");
    const char *vars[] = {"LIVSEG_CUDA_TF32", "LIVSEG_CUDA_BF16"};
    for (int i = 0; i < 2; i++) {
        setenv(vars[i], "yes", 1);
        ls_backend b;
        ls_status s = ls_backend_init(&b, LS_DEV_CUDA, 0, &err);
        unsetenv(vars[i]);
        CHECK(s == LS_ERR_INPUT && strstr(err.msg, vars[i]) && strstr(err.msg, "=yes: expected"),
              "%s=yes: status %d, '%s'", vars[i], (int)s, err.msg);
        if (s == LS_OK) ls_backend_free(&b);
    }
#endif
}

#define NEED_GPU()                                 \
    do {                                           \
        if (skip_reason) SKIP("%s", skip_reason);  \
    } while (0)

/* ------------------------------------------------------------ buffers */

#define MAX_DEV 256
static void *dev_ptrs[MAX_DEV];
static int ndev;
static void *host_ptrs[4 * MAX_DEV];
static int nhost;

static float *hkeep(float *p) {
    LS_ASSERT(nhost < 4 * MAX_DEV);
    return host_ptrs[nhost++] = p;
}

/* Host array of n normals times `scale`. */
static float *rnd(size_t n, double scale) {
    float *p = hkeep(malloc((n ? n : 1) * sizeof(float)));
    for (size_t i = 0; i < n; i++) p[i] = (float)(scale * ls_rng_normal(&rng));
    return p;
}

/* Host array of n values in {0, 1} (probability q of 1). */
static float *bits(size_t n, double q) {
    float *p = hkeep(malloc((n ? n : 1) * sizeof(float)));
    for (size_t i = 0; i < n; i++) p[i] = ls_rng_uniform(&rng) < q ? 1.0f : 0.0f;
    return p;
}

static float *hcopy(const float *h, size_t n) {
    float *p = hkeep(malloc((n ? n : 1) * sizeof(float)));
    memcpy(p, h, n * sizeof(float));
    return p;
}

static float *hzeros(size_t n) { return hkeep(calloc(n ? n : 1, sizeof(float))); }

/* A device copy of host data. */
static float *up(const float *h, size_t n) {
    LS_ASSERT(ndev < MAX_DEV);
    float *d = gpu.mem->alloc(&gpu, (n ? n : 1) * sizeof(float));
    LS_ASSERT(d);
    if (n) gpu.mem->to_device(&gpu, d, h, n * sizeof(float));
    return dev_ptrs[ndev++] = d;
}

/* A zeroed device buffer. */
static float *dzeros(size_t n) {
    LS_ASSERT(ndev < MAX_DEV);
    float *d = gpu.mem->alloc(&gpu, (n ? n : 1) * sizeof(float));
    LS_ASSERT(d);
    gpu.mem->zero(&gpu, d, (n ? n : 1) * sizeof(float));
    return dev_ptrs[ndev++] = d;
}

/* A host copy of device data. */
static float *down(const float *d, size_t n) {
    float *h = hkeep(malloc((n ? n : 1) * sizeof(float)));
    if (n) gpu.mem->to_host(&gpu, h, d, n * sizeof(float));
    return h;
}

/* n zeroed device doubles: slots for the loss ops' values. */
static double *dslots(int n) {
    LS_ASSERT(ndev < MAX_DEV);
    double *d = gpu.mem->alloc(&gpu, (size_t)n * sizeof(double));
    LS_ASSERT(d);
    gpu.mem->zero(&gpu, d, (size_t)n * sizeof(double));
    return dev_ptrs[ndev++] = d;
}

/* Slot i of device doubles d, on the host (waits for the stream). */
static double dget(const double *d, int i) {
    double v;
    gpu.mem->to_host(&gpu, &v, d + i, sizeof v);
    return v;
}

static void release(void) {
    for (int i = 0; i < ndev; i++) gpu.mem->free(&gpu, dev_ptrs[i]);
    for (int i = 0; i < nhost; i++) free(host_ptrs[i]);
    ndev = nhost = 0;
}

/* ------------------------------------------------------------ comparison */

static double rel_err(const float *g, const float *c, size_t n, double floor_frac) {
    double mx = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(c[i]));
    return test_max_rel_err(g, c, n, floor_frac * mx + 1e-30);
}

/* Compares n values of device buffer d against host reference c. */
static void expect(const char *op, const char *what, const float *d, const float *c, size_t n, double bound) {
    const float *g = down(d, n);
    double e = rel_err(g, c, n, 0.01);
    if (e > bound || getenv("LS_VERBOSE")) printf("  %-22s %-10s max rel err %.2e (bound %.0e)\n", op, what, e, bound);
    CHECK(e <= bound, "%s %s: max rel err %.3e > %.0e", op, what, e, bound);
}

static void expect_scalar(const char *op, double g, double c, double bound) {
    double e = fabs(g - c) / fmax(fabs(c), 1e-30);
    if (e > bound || getenv("LS_VERBOSE")) printf("  %-22s %-10s rel err %.2e (bound %.0e)\n", op, "value", e, bound);
    CHECK(e <= bound, "%s value: %.17g vs CPU %.17g (rel err %.3e > %.0e)", op, g, c, e, bound);
}

#define EXACT 0.0
#define ELEM 2e-6
#define SPECIAL 1e-5
#define REDUCE 1e-4
#define LOSS 1e-6
#define LOSS_GRAD 1e-5
#define STEP 2e-4

/* ------------------------------------------------------------ dense */

TEST(gemm) {
    NEED_GPU();
    int M = 67, N = 45, K = 129;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
            size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
            float *A = rnd(na, 1), *B = rnd(nb, 1), *C = rnd(nc, 1);
            float *dA = up(A, na), *dB = up(B, nb), *dC = up(C, nc);
            cpu.dense->gemm(&cpu, ta, tb, M, N, K, 0.7f, A, lda, B, ldb, 0.3f, C, ldc);
            gpu.dense->gemm(&gpu, ta, tb, M, N, K, 0.7f, dA, lda, dB, ldb, 0.3f, dC, ldc);
            char what[64];
            snprintf(what, sizeof what, "ta%d tb%d", ta, tb);
            expect("gemm", what, dC, C, nc, REDUCE);
        }
    /* batched, with padding between problems */
    int batch = 5;
    for (int ta = 0; ta < 2; ta++) {
        int tb = !ta, lda = ta ? M : K, ldb = tb ? K : N, ldc = N;
        size_t sA = (size_t)M * K + 7, sB = (size_t)K * N + 3, sC = (size_t)M * N + 11;
        float *A = rnd(sA * batch, 1), *B = rnd(sB * batch, 1), *C = rnd(sC * batch, 1);
        float *dA = up(A, sA * batch), *dB = up(B, sB * batch), *dC = up(C, sC * batch);
        cpu.dense->gemm_batched(&cpu, ta, tb, M, N, K, 1.3f, A, lda, sA, B, ldb, sB, 1.0f, C, ldc, sC, batch);
        gpu.dense->gemm_batched(&gpu, ta, tb, M, N, K, 1.3f, dA, lda, sA, dB, ldb, sB, 1.0f, dC, ldc, sC, batch);
        expect("gemm_batched", ta ? "ta1 tb0" : "ta0 tb1", dC, C, sC * batch, REDUCE);
    }
    release();
}

/* Tensor-core GEMMs have their own bounds, against the tensor's largest value (the fp32 bound's floor would
 * judge near-zero sums against 1% of it, where these errors are larger): inputs rounded to 10 mantissa
 * bits (TF32, LIVSEG_CUDA_TF32=1; each product within ~1e-3) or to 7 (bfloat16, LIVSEG_CUDA_BF16=1; ~8e-3),
 * a sum of K such products within about that of the result's scale. */
#define TF32_SCALE 5e-3
#define BF16_SCALE 2e-2

static void expect_scale(const char *op, const char *what, const float *d, const float *c, size_t n, double bound) {
    const float *g = down(d, n);
    double e = rel_err(g, c, n, 1.0);
    if (e > bound || getenv("LS_VERBOSE")) printf("  %-22s %-10s max err %.2e of the scale (bound %.0e)\n", op, what, e, bound);
    CHECK(e <= bound, "%s %s: max err %.3e of the largest value > %.0e", op, what, e, bound);
}

/* ViT-S shapes (a token block times qkv, K = 384, and fc2, K = 1536; one batched) on a backend opened with
 * environment variable `env` = 1. */
static void gemm_fast(const char *env, const char *name, double bound) {
    ls_backend fast;
    ls_error err = {0};
    setenv(env, "1", 1);
    ls_status s = ls_backend_init(&fast, LS_DEV_CUDA, 0, &err);
    unsetenv(env);
    REQUIRE(s == LS_OK, "%s", err.msg);
    const int shapes[2][3] = {{197, 1152, 384}, {197, 384, 1536}};
    for (int k = 0; k < 2; k++) {
        int M = shapes[k][0], N = shapes[k][1], K = shapes[k][2];
        float *A = rnd((size_t)M * K, 1), *B = rnd((size_t)N * K, 0.05), *C = hzeros((size_t)M * N);
        float *dA = up(A, (size_t)M * K), *dB = up(B, (size_t)N * K), *dC = dzeros((size_t)M * N);
        gpu.mem->sync(&gpu); /* the two backends have their own streams */
        cpu.dense->gemm(&cpu, 0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
        fast.dense->gemm(&fast, 0, 1, M, N, K, 1.0f, dA, K, dB, K, 0.0f, dC, N);
        fast.mem->sync(&fast);
        expect_scale(name, k ? "fc2" : "qkv", dC, C, (size_t)M * N, bound);
    }
    int M = 49, N = 64, K = 197, batch = 6; /* attention-like: scores times values, per head */
    size_t sA = (size_t)M * K, sB = (size_t)K * N, sC = (size_t)M * N;
    float *A = rnd(sA * batch, 1), *B = rnd(sB * batch, 0.1), *C = hzeros(sC * batch);
    float *dA = up(A, sA * batch), *dB = up(B, sB * batch), *dC = dzeros(sC * batch);
    gpu.mem->sync(&gpu);
    cpu.dense->gemm_batched(&cpu, 0, 0, M, N, K, 1.0f, A, K, sA, B, N, sB, 0.0f, C, N, sC, batch);
    fast.dense->gemm_batched(&fast, 0, 0, M, N, K, 1.0f, dA, K, sA, dB, N, sB, 0.0f, dC, N, sC, batch);
    fast.mem->sync(&fast);
    expect_scale(name, "batched", dC, C, sC * batch, bound);
    ls_backend_free(&fast);
    release();
}

TEST(gemm_tf32) {
    NEED_GPU();
    gemm_fast("LIVSEG_CUDA_TF32", "gemm tf32", TF32_SCALE);
}

/* Host copy of n floats rounded to TF32 (10 mantissa bits): to nearest, ties to even, or toward zero. */
static float *tf32_of(const float *x, size_t n, int nearest) {
    float *r = hkeep(malloc((n ? n : 1) * sizeof(float)));
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        if ((u & 0x7f800000u) != 0x7f800000u) u = (u + (nearest ? 0xfffu + ((u >> 13) & 1u) : 0)) & ~0x1fffu;
        memcpy(&r[i], &u, sizeof u);
    }
    return r;
}

/* TF32 GEMMs against the CPU's on operands rounded on the host: LIVSEG_CUDA_TF32=rn rounds them to nearest
 * itself (held to the float32 GEMM bound against operands rounded so; products of TF32 values are exact in
 * float). For =1, which rounding cuBLAS applies is printed (the reference rounded the same way agrees to
 * float32 summation error, ~1e-6; the others differ by ~1e-3): bench/precision shows what it does to masks.
 * Shapes: ViT-S's qkv, and a batch of 1x1 convolutions (one weight at stride 0, as nn.cu runs them). */
TEST(gemm_tf32_rounding) {
    NEED_GPU();
    static const char *const modes[] = {"1", "rn"};
    for (int md = 0; md < 2; md++) {
        ls_backend fast;
        ls_error err = {0};
        setenv("LIVSEG_CUDA_TF32", modes[md], 1);
        ls_status st = ls_backend_init(&fast, LS_DEV_CUDA, 0, &err);
        unsetenv("LIVSEG_CUDA_TF32");
        REQUIRE(st == LS_OK, "%s", err.msg);
        for (int k = 0; k < 2; k++) {
            int M = k ? 64 : 197, N = k ? 196 : 1152, K = 384, batch = k ? 4 : 1;
            size_t sA = k ? 0 : (size_t)M * K, sB = (size_t)K * N, sC = (size_t)M * N, na = (size_t)M * K + sA * (batch - 1);
            float *A = rnd(na, 1), *B = rnd(sB * batch, 0.05), *dC = dzeros(sC * batch), *ref[3];
            for (int r = 0; r < 3; r++) { /* operands as they are, rounded to nearest, toward zero */
                const float *a = r ? tf32_of(A, na, r == 1) : A, *b = r ? tf32_of(B, sB * batch, r == 1) : B;
                ref[r] = hzeros(sC * batch);
                cpu.dense->gemm_batched(&cpu, 0, 0, M, N, K, 1.0f, a, K, sA, b, N, sB, 0.0f, ref[r], N, sC, batch);
            }
            float *dA = up(A, na), *dB = up(B, sB * batch); /* queued on gpu's stream: */
            gpu.mem->sync(&gpu); /* fast has its own, and must not read them before they land */
            fast.dense->gemm_batched(&fast, 0, 0, M, N, K, 1.0f, dA, K, sA, dB, N, sB, 0.0f, dC, N, sC, batch);
            fast.mem->sync(&fast);
            const float *g = down(dC, sC * batch);
            double e[3];
            for (int r = 0; r < 3; r++) e[r] = rel_err(g, ref[r], sC * batch, 0.01);
            printf("  LIVSEG_CUDA_TF32=%-2s %-6s max rel err against operands as they are %.2e, rounded to nearest "
                   "%.2e, toward zero %.2e\n", modes[md], k ? "conv1x1" : "qkv", e[0], e[1], e[2]);
            if (md == 1) CHECK(e[1] <= REDUCE, "TF32=rn %s: %.3e from the GEMM of rounded operands", k ? "conv1x1" : "qkv", e[1]);
        }
        ls_backend_free(&fast);
    }
    release();
}

TEST(gemm_bf16) {
    NEED_GPU();
    gemm_fast("LIVSEG_CUDA_BF16", "gemm bf16", BF16_SCALE);
}

TEST(row_ops) {
    NEED_GPU();
    /* widths below a warp, between, and above the 256-thread block (ViT-S rows are 384, attention rows T) */
    const int widths[] = {20, 100, 384, 785};
    for (int k = 0; k < 4; k++) {
        int n = widths[k];
        size_t rows = 37, tot = rows * n;
        float *x = rnd(tot, 2), *w = rnd(n, 1), *b = rnd(n, 1);
        for (size_t i = 0; i < tot; i++) x[i] += 3.0f; /* a mean far from 0, as LayerNorm inputs have */
        float *dx = up(x, tot), *dw = up(w, n), *db = up(b, n);
        float *y = hzeros(tot), *dy = dzeros(tot);
        cpu.dense->layernorm(&cpu, y, x, w, b, rows, n, 1e-6f);
        gpu.dense->layernorm(&gpu, dy, dx, dw, db, rows, n, 1e-6f);
        expect("layernorm", "y", dy, y, tot, SPECIAL);
        /* in place (y == x) */
        float *xi = hcopy(x, tot), *dxi = up(x, tot);
        cpu.dense->layernorm(&cpu, xi, xi, w, b, rows, n, 1e-6f);
        gpu.dense->layernorm(&gpu, dxi, dxi, dw, db, rows, n, 1e-6f);
        expect("layernorm", "in place", dxi, xi, tot, SPECIAL);

        /* backward: dx overwritten, dw/db accumulated onto random values */
        float *g = rnd(tot, 1), *gw = rnd(n, 1), *gb = rnd(n, 1), *gx = rnd(tot, 1);
        float *dg = up(g, tot), *dgw = up(gw, n), *dgb = up(gb, n), *dgx = up(gx, tot);
        float *ws = hzeros(2 * rows), *dws = dzeros(2 * rows);
        cpu.dense->layernorm_bwd(&cpu, gx, gw, gb, g, x, w, rows, n, 1e-6f, ws);
        gpu.dense->layernorm_bwd(&gpu, dgx, dgw, dgb, dg, dx, dw, rows, n, 1e-6f, dws);
        expect("layernorm_bwd", "dx", dgx, gx, tot, REDUCE);
        expect("layernorm_bwd", "dw", dgw, gw, n, REDUCE);
        expect("layernorm_bwd", "db", dgb, gb, n, REDUCE);

        /* softmax (scaled, in place) and its backward (ds == dy allowed: tested in place) */
        float *s = rnd(tot, 3), *ds = up(s, tot);
        cpu.dense->softmax(&cpu, s, rows, n, 0.125f);
        gpu.dense->softmax(&gpu, ds, rows, n, 0.125f);
        expect("softmax", "y", ds, s, tot, SPECIAL);
        float *sy = down(ds, tot); /* both backwards from the same y */
        float *gy = rnd(tot, 1), *dgy = up(gy, tot), *dsy = up(sy, tot);
        cpu.dense->softmax_bwd(&cpu, gy, sy, gy, rows, n, 0.125f);
        gpu.dense->softmax_bwd(&gpu, dgy, dsy, dgy, rows, n, 0.125f);
        expect("softmax_bwd", "ds", dgy, gy, tot, REDUCE);

        /* GELU with and without bias, and its backward */
        float *a = rnd(tot, 2), *da = up(a, tot), *a2 = hcopy(a, tot), *da2 = up(a, tot);
        cpu.dense->bias_gelu(&cpu, a, b, rows, n);
        gpu.dense->bias_gelu(&gpu, da, db, rows, n);
        expect("bias_gelu", "bias", da, a, tot, SPECIAL);
        cpu.dense->bias_gelu(&cpu, a2, NULL, rows, n);
        gpu.dense->bias_gelu(&gpu, da2, NULL, rows, n);
        expect("bias_gelu", "no bias", da2, a2, tot, SPECIAL);
        float *pre = rnd(tot, 2), *dpre = up(pre, tot), *u = rnd(tot, 1), *du = up(u, tot), *o = hzeros(tot);
        float *dout = dzeros(tot);
        cpu.dense->gelu_bwd(&cpu, o, u, pre, tot);
        gpu.dense->gelu_bwd(&gpu, dout, du, dpre, tot);
        expect("gelu_bwd", "dx", dout, o, tot, SPECIAL);

        /* add_bias, add, bias_grad */
        float *yb = rnd(tot, 1), *dyb = up(yb, tot);
        cpu.dense->add_bias(&cpu, yb, b, rows, n);
        gpu.dense->add_bias(&gpu, dyb, db, rows, n);
        expect("add_bias", "y", dyb, yb, tot, EXACT);
        float *fr = hzeros(tot), *dfr = dzeros(tot);
        cpu.dense->fill_rows(&cpu, fr, b, rows, n);
        gpu.dense->fill_rows(&gpu, dfr, db, rows, n);
        expect("fill_rows", "y", dfr, fr, tot, EXACT);
        cpu.dense->add(&cpu, yb, x, tot);
        gpu.dense->add(&gpu, dyb, dx, tot);
        expect("add", "y", dyb, yb, tot, EXACT);
        float *acc = rnd(n, 1), *dacc = up(acc, n);
        cpu.dense->bias_grad(&cpu, acc, x, rows, n);
        gpu.dense->bias_grad(&gpu, dacc, dx, rows, n);
        expect("bias_grad", "db", dacc, acc, n, REDUCE);
        release();
    }
}

TEST(token_ops) {
    NEED_GPU();
    int B = 2, C = 3, P = 4, gh = 4, gw = 5, H = gh * P, W = gw * P, NH = 4, HS = 12, D = NH * HS, T = 1 + gh * gw;
    size_t nimg = (size_t)B * C * H * W, ncols = (size_t)B * gh * gw * C * P * P, nx = (size_t)B * T * D;
    float *img = rnd(nimg, 1), *dimg = up(img, nimg), *cols = hzeros(ncols), *dcols = dzeros(ncols);
    cpu.dense->patchify(&cpu, cols, img, B, C, H, W, P);
    gpu.dense->patchify(&gpu, dcols, dimg, B, C, H, W, P);
    expect("patchify", "cols", dcols, cols, ncols, EXACT);
    float *gc = rnd(ncols, 1), *dgc = up(gc, ncols), *gi = hzeros(nimg), *dgi = dzeros(nimg);
    cpu.dense->patchify_bwd(&cpu, gi, gc, B, C, H, W, P);
    gpu.dense->patchify_bwd(&gpu, dgi, dgc, B, C, H, W, P);
    expect("patchify_bwd", "dimg", dgi, gi, nimg, EXACT);

    size_t np = (size_t)B * (T - 1) * D;
    float *pt = rnd(np, 1), *bias = rnd(D, 1), *cls = rnd(D, 1), *pos = rnd((size_t)T * D, 1), *x = hzeros(nx);
    float *dpt = up(pt, np), *dbias = up(bias, D), *dcls = up(cls, D), *dpos = up(pos, (size_t)T * D), *dx = dzeros(nx);
    cpu.dense->embed_tokens(&cpu, x, pt, bias, cls, pos, B, T, D);
    gpu.dense->embed_tokens(&gpu, dx, dpt, dbias, dcls, dpos, B, T, D);
    expect("embed_tokens", "x", dx, x, nx, EXACT);
    float *g = rnd(nx, 1), *dg = up(g, nx), *gp = hzeros(np), *dgp = dzeros(np);
    float *gb = rnd(D, 1), *gcl = rnd(D, 1), *gpos = rnd((size_t)T * D, 1);
    float *dgb = up(gb, D), *dgcl = up(gcl, D), *dgpos = up(gpos, (size_t)T * D);
    cpu.dense->embed_tokens_bwd(&cpu, gp, gb, gcl, gpos, g, B, T, D);
    gpu.dense->embed_tokens_bwd(&gpu, dgp, dgb, dgcl, dgpos, dg, B, T, D);
    expect("embed_tokens_bwd", "dpatches", dgp, gp, np, EXACT);
    expect("embed_tokens_bwd", "dbias", dgb, gb, D, REDUCE);
    expect("embed_tokens_bwd", "dcls", dgcl, gcl, D, REDUCE);
    expect("embed_tokens_bwd", "dpos", dgpos, gpos, (size_t)T * D, REDUCE);

    size_t nq = (size_t)B * NH * T * HS, nqkv = 3 * nx;
    float *qkv = rnd(nqkv, 1), *qb = rnd(3 * (size_t)D, 1), *dqkv = up(qkv, nqkv), *dqb = up(qb, 3 * (size_t)D);
    float *q = hzeros(nq), *k = hzeros(nq), *v = hzeros(nq), *dq = dzeros(nq), *dk = dzeros(nq), *dv = dzeros(nq);
    cpu.dense->split_heads(&cpu, q, k, v, qkv, qb, B, T, NH, HS);
    gpu.dense->split_heads(&gpu, dq, dk, dv, dqkv, dqb, B, T, NH, HS);
    expect("split_heads", "q", dq, q, nq, EXACT);
    expect("split_heads", "k", dk, k, nq, EXACT);
    expect("split_heads", "v", dv, v, nq, EXACT);
    float *gq = rnd(nq, 1), *gk = rnd(nq, 1), *gv = rnd(nq, 1), *gqkv = hzeros(nqkv), *gqb = rnd(3 * (size_t)D, 1);
    float *dgq = up(gq, nq), *dgk = up(gk, nq), *dgv = up(gv, nq), *dgqkv = dzeros(nqkv), *dgqb = up(gqb, 3 * (size_t)D);
    cpu.dense->split_heads_bwd(&cpu, gqkv, gqb, gq, gk, gv, B, T, NH, HS);
    gpu.dense->split_heads_bwd(&gpu, dgqkv, dgqb, dgq, dgk, dgv, B, T, NH, HS);
    expect("split_heads_bwd", "dqkv", dgqkv, gqkv, nqkv, EXACT);
    expect("split_heads_bwd", "dbias", dgqb, gqb, 3 * (size_t)D, REDUCE);

    float *y = hzeros(nx), *dy = dzeros(nx);
    cpu.dense->merge_heads(&cpu, y, q, B, T, NH, HS);
    gpu.dense->merge_heads(&gpu, dy, dq, B, T, NH, HS);
    expect("merge_heads", "y", dy, y, nx, EXACT);
    float *go = hzeros(nq), *dgo = dzeros(nq);
    cpu.dense->merge_heads_bwd(&cpu, go, g, B, T, NH, HS);
    gpu.dense->merge_heads_bwd(&gpu, dgo, dg, B, T, NH, HS);
    expect("merge_heads_bwd", "do", dgo, go, nq, EXACT);

    size_t ngrid = (size_t)B * D * gh * gw;
    float *grid = hzeros(ngrid), *dgrid = dzeros(ngrid);
    cpu.dense->tokens_to_grid(&cpu, grid, x, B, T, D, gh, gw);
    gpu.dense->tokens_to_grid(&gpu, dgrid, dx, B, T, D, gh, gw);
    expect("tokens_to_grid", "grid", dgrid, grid, ngrid, EXACT);
    float *gg = rnd(ngrid, 1), *gcls = rnd((size_t)B * D, 1), *dgg = up(gg, ngrid), *dgcls = up(gcls, (size_t)B * D);
    for (int mode = 0; mode < 3; mode++) { /* both, grid only, class token only */
        const float *cg = mode == 2 ? NULL : gg, *cc = mode == 1 ? NULL : gcls;
        const float *ug = mode == 2 ? NULL : dgg, *uc = mode == 1 ? NULL : dgcls;
        float *gx = rnd(nx, 1), *dgx = up(gx, nx); /* overwritten, NaN-free garbage before */
        cpu.dense->tokens_to_grid_bwd(&cpu, gx, cg, cc, B, T, D, gh, gw);
        gpu.dense->tokens_to_grid_bwd(&gpu, dgx, ug, uc, B, T, D, gh, gw);
        expect("tokens_to_grid_bwd", mode == 0 ? "both" : mode == 1 ? "grid only" : "cls only", dgx, gx, nx, EXACT);
    }
    release();
}

/* The fused attention against the CPU's (per (image, head), scores through OpenBLAS, then softmax and a second
 * GEMM): q, k, v read in place from qkv[B,T,3,NH,HS], the result in o[B,T,NH*HS]. */
static void attention_case(int B, int T, int NH, int HS, size_t slots, float scale) {
    size_t D = (size_t)NH * HS, nqkv = (size_t)B * T * 3 * D, no = (size_t)B * T * D, ns = slots * T * T;
    float *qkv = rnd(nqkv, 1), *dqkv = up(qkv, nqkv), *o = hzeros(no), *dout = dzeros(no);
    float *scr = hzeros(ns), *dscr = dzeros(ns);
    cpu.dense->attention(&cpu, o, qkv, scr, slots, B, T, NH, HS, scale);
    gpu.dense->attention(&gpu, dout, dqkv, dscr, slots, B, T, NH, HS, scale);
    char what[64];
    snprintf(what, sizeof what, "T%d HS%d x%g", T, HS, scale);
    expect("attention", what, dout, o, no, REDUCE);
}

/* ViT-S/16 at 224 (T 197, HS 64: the kernel with key tiles ragged at the end), ViT-x/8's token count (785),
 * a scale that makes the rows peaked (logits of SD 4: the running maximum grows tile after tile; a float32
 * emulation of the kernel put it 3e-5 from the CPU's order there, 7e-5 at SD 8, where both are 1.4e-4 from
 * float64), T below one key tile and
 * below one block of query rows, every head width the kernel takes (32..128), and two it does not (12, 48:
 * batched GEMMs through the scratch, 2 heads at a time). */
TEST(attention) {
    NEED_GPU();
    attention_case(2, 197, 6, 64, 4, 0.125f);
    attention_case(1, 785, 2, 64, 2, 0.125f);
    attention_case(2, 197, 3, 64, 2, 0.5f);
    attention_case(3, 5, 2, 32, 2, 0.2f);
    attention_case(2, 50, 2, 96, 2, 0.1f);
    attention_case(1, 70, 3, 128, 2, 0.09f);
    attention_case(2, 33, 3, 12, 2, 0.3f);
    attention_case(1, 197, 5, 48, 2, 0.15f);
    release();
}

/* One width of l2norm and its backward: `clamp` scales the inputs below eps (every row clamped, row 0 all zeros)
 * so the clamped branch is compared on its own scale. The backward starts from the CPU's y and norms. */
static void l2norm_case(size_t rows, int n, int clamp) {
    char what[48];
    snprintf(what, sizeof what, "l2norm n%d%s", n, clamp ? " clamped" : "");
    float eps = clamp ? 1e-3f : 1e-12f;
    size_t tot = rows * n;
    float *x = rnd(tot, clamp ? 1e-6 : 2);
    if (clamp) memset(x, 0, (size_t)n * sizeof(float));
    float *dx = up(x, tot), *y = hzeros(tot), *nrm = hzeros(rows), *dy = dzeros(tot), *dnrm = dzeros(rows);
    cpu.dense->l2norm(&cpu, y, nrm, x, rows, n, eps);
    gpu.dense->l2norm(&gpu, dy, dnrm, dx, rows, n, eps);
    expect(what, "y", dy, y, tot, ELEM);
    expect(what, "norms", dnrm, nrm, rows, ELEM);
    float *xi = hcopy(x, tot), *dxi = up(x, tot), *ni = hzeros(rows), *dni = dzeros(rows);
    cpu.dense->l2norm(&cpu, xi, ni, xi, rows, n, eps);
    gpu.dense->l2norm(&gpu, dxi, dni, dxi, rows, n, eps);
    expect(what, "y in place", dxi, xi, tot, ELEM);

    float *uy = up(y, tot), *un = up(nrm, rows);
    float *g = rnd(tot, 1), *gx = rnd(tot, 1), *dg = up(g, tot), *dgx = up(gx, tot); /* dx overwritten */
    cpu.dense->l2norm_bwd(&cpu, gx, g, y, nrm, rows, n, eps);
    gpu.dense->l2norm_bwd(&gpu, dgx, dg, uy, un, rows, n, eps);
    expect(what, "dx", dgx, gx, tot, REDUCE);
    cpu.dense->l2norm_bwd(&cpu, g, g, y, nrm, rows, n, eps); /* dx == dy */
    gpu.dense->l2norm_bwd(&gpu, dg, dg, uy, un, rows, n, eps);
    expect(what, "dx in place", dg, g, tot, REDUCE);
    release();
}

TEST(dino_head) {
    NEED_GPU();
    /* below a warp, DINO's bottlenecks (CPU and GPU presets), above a 256-thread block */
    const int widths[] = {20, 128, 256, 300};
    for (int k = 0; k < 4; k++) {
        l2norm_case(37, widths[k], 0);
        l2norm_case(9, widths[k], 1);
    }
}

/* ------------------------------------------------------------ nn */

static void conv_case(int B, int Ci, int Co, int H, int W, int K, int bias, int with_dx) {
    int HW = H * W;
    size_t nx = (size_t)B * Ci * HW, ny = (size_t)B * Co * HW, nw = (size_t)Co * Ci * K * K;
    size_t wsc = cpu.nn->conv2d_workspace(Ci, H, W, Co, K), wsg = gpu.nn->conv2d_workspace(Ci, H, W, Co, K);
    char what[64];
    snprintf(what, sizeof what, "conv%dx%d %d->%d @%dx%d B%d", K, K, Ci, Co, H, W, B);
    /* model.c sizes its arenas with the CPU workspace */
    CHECK(wsg <= wsc, "%s: CUDA workspace %zu > CPU %zu", what, wsg, wsc);
    float *x = rnd(nx, 1), *w = rnd(nw, 0.3), *b = bias ? rnd(Co, 1) : NULL, *y = hzeros(ny);
    float *dx = up(x, nx), *dw = up(w, nw), *db = bias ? up(b, Co) : NULL, *dy = dzeros(ny);
    float *ws = hzeros(wsc + 1), *dws = dzeros(wsg + 1);
    cpu.nn->conv2d_fwd(&cpu, y, x, w, b, B, Ci, H, W, Co, K, ws);
    gpu.nn->conv2d_fwd(&gpu, dy, dx, dw, db, B, Ci, H, W, Co, K, dws);
    expect(what, "y", dy, y, ny, REDUCE);
    float *g = rnd(ny, 1), *gx = rnd(nx, 1), *gw = rnd(nw, 1), *gb = rnd(Co, 1);
    float *dg = up(g, ny), *dgx = up(gx, nx), *dgw = up(gw, nw), *dgb = up(gb, Co);
    cpu.nn->conv2d_bwd(&cpu, with_dx ? gx : NULL, gw, bias ? gb : NULL, g, x, w, B, Ci, H, W, Co, K, ws);
    gpu.nn->conv2d_bwd(&gpu, with_dx ? dgx : NULL, dgw, bias ? dgb : NULL, dg, dx, dw, B, Ci, H, W, Co, K, dws);
    if (with_dx) expect(what, "dx", dgx, gx, nx, REDUCE);
    expect(what, "dw", dgw, gw, nw, REDUCE);
    if (bias) expect(what, "db", dgb, gb, Co, REDUCE);
    release();
}

TEST(conv2d) {
    NEED_GPU();
    /* 3x3: the direct kernel (channel chunks of 8 and groups of 16 partly filled, tiles cut by the edges) */
    conv_case(3, 5, 7, 9, 11, 3, 1, 1);
    conv_case(2, 16, 16, 128, 128, 3, 1, 1);
    /* 5x5: im2col + GEMM, whole images per chunk, then pixel tiles (an image's im2col exceeds the workspace) */
    conv_case(3, 5, 7, 9, 11, 5, 1, 1);
    conv_case(2, 16, 16, 96, 96, 5, 1, 1);
    conv_case(2, 16, 1, 64, 64, 3, 1, 1);    /* the output layer's shape (one channel) */
    conv_case(2, 70, 64, 14, 14, 3, 0, 1);   /* first decoder stage, no bias */
    conv_case(3, 6, 4, 8, 8, 1, 1, 1);       /* 1x1 */
    conv_case(2, 24, 10, 7, 7, 1, 1, 0);     /* 1x1 without dx (the head's first layer) */
}

static void bn_case(int B, int C, int HW) {
    size_t n = (size_t)B * C * HW;
    char what[48];
    snprintf(what, sizeof what, "batchnorm B%d C%d HW%d", B, C, HW);
    float *x = rnd(n, 2), *gamma = rnd(C, 1), *beta = rnd(C, 1), *rm = rnd(C, 0.1), *rv = rnd(C, 0.1);
    for (size_t i = 0; i < n; i++) x[i] += 1.5f;
    for (int c = 0; c < C; c++) rv[c] = 1.0f + fabsf(rv[c]);
    float *dx = up(x, n), *dgamma = up(gamma, C), *dbeta = up(beta, C), *drm = up(rm, C), *drv = up(rv, C);
    float *y = hzeros(n), *mean = hzeros(C), *rstd = hzeros(C), *dy = dzeros(n), *dmean = dzeros(C), *drstd = dzeros(C);
    cpu.nn->batchnorm_fwd_train(&cpu, y, mean, rstd, x, gamma, beta, rm, rv, B, C, HW, 0.1f, 1e-5f);
    gpu.nn->batchnorm_fwd_train(&gpu, dy, dmean, drstd, dx, dgamma, dbeta, drm, drv, B, C, HW, 0.1f, 1e-5f);
    expect(what, "y", dy, y, n, REDUCE);
    expect(what, "mean", dmean, mean, C, REDUCE);
    expect(what, "rstd", drstd, rstd, C, REDUCE);
    expect(what, "run_mean", drm, rm, C, REDUCE);
    expect(what, "run_var", drv, rv, C, REDUCE);
    /* backward from the CPU's saved statistics on both sides, so only the backward is compared */
    float *umean = up(mean, C), *urstd = up(rstd, C);
    float *g = rnd(n, 1), *gx = hzeros(n), *gg = rnd(C, 1), *gb = rnd(C, 1);
    float *dg = up(g, n), *dgx = dzeros(n), *dgg = up(gg, C), *dgb = up(gb, C);
    cpu.nn->batchnorm_bwd(&cpu, gx, gg, gb, g, x, mean, rstd, gamma, B, C, HW);
    gpu.nn->batchnorm_bwd(&gpu, dgx, dgg, dgb, dg, dx, umean, urstd, dgamma, B, C, HW);
    expect(what, "dx", dgx, gx, n, REDUCE);
    expect(what, "dgamma", dgg, gg, C, REDUCE);
    expect(what, "dbeta", dgb, gb, C, REDUCE);
    float *ye = hzeros(n), *dye = dzeros(n), *urm = up(rm, C), *urv = up(rv, C);
    cpu.nn->batchnorm_fwd_eval(&cpu, ye, x, gamma, beta, rm, rv, B, C, HW, 1e-5f);
    gpu.nn->batchnorm_fwd_eval(&gpu, dye, dx, dgamma, dbeta, urm, urv, B, C, HW, 1e-5f);
    expect(what, "eval y", dye, ye, n, ELEM);
    release();
}

TEST(batchnorm) {
    NEED_GPU();
    bn_case(3, 5, 63);
    bn_case(2, 4, 128 * 128); /* several partial-sum blocks per channel */
    bn_case(8, 64, 28 * 28);
}

TEST(elementwise_nn) {
    NEED_GPU();
    int B = 2, C = 5, H = 6, W = 7, HW = H * W;
    size_t n = (size_t)B * C * HW;
    float *x = rnd(n, 1), *dx = up(x, n), *y = hzeros(n), *dy = dzeros(n);
    cpu.nn->relu_fwd(&cpu, y, x, n);
    gpu.nn->relu_fwd(&gpu, dy, dx, n);
    expect("relu_fwd", "y", dy, y, n, EXACT);
    float *g = rnd(n, 1), *dg = up(g, n);
    cpu.nn->relu_bwd(&cpu, g, g, y, n); /* in place */
    gpu.nn->relu_bwd(&gpu, dg, dg, dy, n);
    expect("relu_bwd", "dx", dg, g, n, EXACT);
    float *keep = hzeros((size_t)B * C);
    for (int i = 0; i < B * C; i++) keep[i] = ls_rng_uniform(&rng) < 0.3 ? 0.0f : 1.0f / 0.7f;
    float *dkeep = up(keep, (size_t)B * C);
    cpu.nn->dropout2d(&cpu, x, x, keep, B, C, HW);
    gpu.nn->dropout2d(&gpu, dx, dx, dkeep, B, C, HW);
    expect("dropout2d", "y", dx, x, n, EXACT);

    const int shapes[][2] = {{6, 7}, {1, 3}, {1, 1}, {17, 9}};
    for (int s = 0; s < 4; s++) {
        int h = shapes[s][0], w = shapes[s][1];
        size_t ni = (size_t)B * C * h * w, no = 4 * ni;
        float *a = rnd(ni, 1), *da = up(a, ni), *o = hzeros(no), *dout = dzeros(no);
        char what[32];
        snprintf(what, sizeof what, "%dx%d", h, w);
        cpu.nn->upsample2x_fwd(&cpu, o, a, B, C, h, w);
        gpu.nn->upsample2x_fwd(&gpu, dout, da, B, C, h, w);
        expect("upsample2x_fwd", what, dout, o, no, ELEM);
        float *go = rnd(no, 1), *dgo = up(go, no), *gi = hzeros(ni), *dgi = dzeros(ni);
        cpu.nn->upsample2x_bwd(&cpu, gi, go, B, C, h, w);
        gpu.nn->upsample2x_bwd(&gpu, dgi, dgo, B, C, h, w);
        expect("upsample2x_bwd", what, dgi, gi, ni, ELEM);
    }

    int Ca = 4, Cb = 1;
    size_t na = (size_t)B * Ca * HW, nb = (size_t)B * Cb * HW, nc = na + nb;
    float *a = rnd(na, 1), *b = rnd(nb, 1), *c = hzeros(nc), *da = up(a, na), *db = up(b, nb), *dc = dzeros(nc);
    cpu.nn->concat_fwd(&cpu, c, a, b, B, Ca, Cb, HW);
    gpu.nn->concat_fwd(&gpu, dc, da, db, B, Ca, Cb, HW);
    expect("concat_fwd", "y", dc, c, nc, EXACT);
    float *gc = rnd(nc, 1), *dgc = up(gc, nc), *ga = hzeros(na), *gb = hzeros(nb), *dga = dzeros(na), *dgb = dzeros(nb);
    cpu.nn->concat_bwd(&cpu, ga, gb, gc, B, Ca, Cb, HW);
    gpu.nn->concat_bwd(&gpu, dga, dgb, dgc, B, Ca, Cb, HW);
    expect("concat_bwd", "da", dga, ga, na, EXACT);
    expect("concat_bwd", "db", dgb, gb, nb, EXACT);
    float *ga2 = rnd(na, 1), *dga2 = up(ga2, na);
    cpu.nn->concat_bwd(&cpu, ga2, NULL, gc, B, Ca, Cb, HW); /* the model's use: db NULL */
    gpu.nn->concat_bwd(&gpu, dga2, NULL, dgc, B, Ca, Cb, HW);
    expect("concat_bwd", "da only", dga2, ga2, na, EXACT);
    release();
}

/* ------------------------------------------------------------ loss */

TEST(losses) {
    NEED_GPU();
    size_t N = (size_t)3 * 37 * 41;
    float *z = rnd(N, 3), *t = bits(N, 0.3), *dz0 = rnd(N, 0.01);
    float *dzz = up(z, N), *dt = up(t, N);
    struct {
        const char *name;
        int kind;
        float p1, p2, p3, w;
    } cases[] = {
        {"focal", 0, 2.0f, 0.25f, 0, 0.7f}, {"focal alpha<0", 0, 2.0f, -1.0f, 0, 1.0f},
        {"focal gamma 0.5", 0, 0.5f, 0.25f, 0, 1.0f}, {"tversky", 1, 0.3f, 0.7f, 1.0f, 0.5f},
        {"log_iou", 2, 1.0f, 0, 0, 0.9f}, {"entropy", 3, 2.0f, 0, 0, 0.1f}, {"entropy eta 0.5", 3, 0.5f, 0, 0, 1.0f},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        float *dz = hcopy(dz0, N), *ddz = up(dz0, N);
        double lc = 0, *slot = dslots(1);
        switch (cases[k].kind) {
        case 0:
            cpu.loss->focal(&cpu, z, t, N, cases[k].p1, cases[k].p2, cases[k].w, dz, &lc);
            gpu.loss->focal(&gpu, dzz, dt, N, cases[k].p1, cases[k].p2, cases[k].w, ddz, slot);
            break;
        case 1:
            cpu.loss->tversky(&cpu, z, t, N, cases[k].p1, cases[k].p2, cases[k].p3, cases[k].w, dz, &lc);
            gpu.loss->tversky(&gpu, dzz, dt, N, cases[k].p1, cases[k].p2, cases[k].p3, cases[k].w, ddz, slot);
            break;
        case 2:
            cpu.loss->log_iou(&cpu, z, t, N, cases[k].p1, cases[k].w, dz, &lc);
            gpu.loss->log_iou(&gpu, dzz, dt, N, cases[k].p1, cases[k].w, ddz, slot);
            break;
        default:
            cpu.loss->entropy(&cpu, z, N, cases[k].p1, cases[k].w, dz, &lc);
            gpu.loss->entropy(&gpu, dzz, N, cases[k].p1, cases[k].w, ddz, slot);
        }
        expect_scalar(cases[k].name, dget(slot, 0), lc, LOSS);
        expect(cases[k].name, "dz", ddz, dz, N, LOSS_GRAD);
    }
    release();
}

static void cd_case(int C, int D, int P, int same) {
    char what[48];
    snprintf(what, sizeof what, "cd_term C%d D%d P%d%s", C, D, P, same ? " x=y" : "");
    size_t nf = (size_t)C * P, ng = (size_t)D * P, nws = ls_cd_workspace(C, D, P);
    float *fx = rnd(nf, 1), *fy = same ? fx : rnd(nf, 1), *gx = rnd(ng, 1), *gy = same ? gx : rnd(ng, 1);
    float *dgx = rnd(ng, 0.01), *dgy = same ? dgx : rnd(ng, 0.01);
    float *ufx = up(fx, nf), *ufy = same ? ufx : up(fy, nf), *ugx = up(gx, ng), *ugy = same ? ugx : up(gy, ng);
    float *udgx = up(dgx, ng), *udgy = same ? udgx : up(dgy, ng);
    float *ws = hzeros(nws), *uws = dzeros(nws);
    double c[2], *g = dslots(2);
    cpu.loss->cd_term(&cpu, fx, fy, C, gx, gy, D, P, 0.2f, 0.7f, dgx, dgy, c, ws);
    gpu.loss->cd_term(&gpu, ufx, ufy, C, ugx, ugy, D, P, 0.2f, 0.7f, udgx, udgy, g, uws);
    /* the loss is a mean of products of float32 similarities: the GEMMs' order shows in it */
    expect_scalar(what, dget(g, 0), c[0], REDUCE);
    expect_scalar(what, dget(g, 1), c[1], REDUCE);
    expect(what, "dgx", udgx, dgx, ng, REDUCE);
    if (!same) expect(what, "dgy", udgy, dgy, ng, REDUCE);
    release();
}

TEST(cd_term) {
    NEED_GPU();
    cd_case(24, 7, 49, 0);
    cd_case(24, 7, 49, 1);
    cd_case(384, 70, 196, 0); /* ViT-S/16 at 224: a 14x14 grid */
    cd_case(64, 16, 400, 1);  /* rows wider than a 256-thread block's first pass */
}

TEST(radam) {
    NEED_GPU();
    size_t n = 1000;
    float *p = rnd(n, 1), *m = hzeros(n), *v = hzeros(n), *up_ = up(p, n), *um = dzeros(n), *uv = dzeros(n);
    for (int step = 1; step <= 8; step++) { /* steps 1-5 unrectified, 6-8 rectified (beta2 0.999) */
        float *g = rnd(n, 0.1), *ug = up(g, n);
        cpu.loss->radam_step(&cpu, p, g, m, v, n, step, 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-4f);
        gpu.loss->radam_step(&gpu, up_, ug, um, uv, n, step, 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-4f);
    }
    expect("radam_step", "param", up_, p, n, ELEM);
    expect("radam_step", "m", um, m, n, ELEM);
    expect("radam_step", "v", uv, v, n, ELEM);
    release();
}

static void dino_loss_case(int B, int ns, int nt, int K) {
    char what[48];
    snprintf(what, sizeof what, "dino_loss B%d %d/%d crops K%d", B, ns, nt, K);
    size_t ns_ = (size_t)ns * B * K, nt_ = (size_t)nt * B * K, nws = ns_ + nt_;
    float *s = rnd(ns_, 1), *t = rnd(nt_, 1), *c = rnd(K, 0.1), *ds = rnd(ns_, 1), *ws = hzeros(nws);
    float *us = up(s, ns_), *ut = up(t, nt_), *uc = up(c, K), *uds = up(ds, ns_), *uws = dzeros(nws); /* ds written */
    double lc, *slot = dslots(1);
    cpu.loss->dino_loss(&cpu, s, t, c, B, ns, nt, K, 0.1f, 0.04f, ds, ws, &lc);
    gpu.loss->dino_loss(&gpu, us, ut, uc, B, ns, nt, K, 0.1f, 0.04f, uds, uws, slot);
    expect_scalar(what, dget(slot, 0), lc, LOSS);
    expect(what, "ds", uds, ds, ns_, LOSS_GRAD);
    release();
}

static void center_case(size_t rows, int K) {
    char what[48];
    snprintf(what, sizeof what, "center_update %zux%d", rows, K);
    float *c = rnd(K, 0.5), *t = rnd(rows * K, 2), *uc = up(c, K), *ut = up(t, rows * K);
    cpu.loss->center_update(&cpu, c, t, rows, K, 0.9f);
    gpu.loss->center_update(&gpu, uc, ut, rows, K, 0.9f);
    expect(what, "c", uc, c, K, ELEM);
    release();
}

TEST(dino_training) {
    NEED_GPU();
    dino_loss_case(3, 6, 2, 37);     /* rows narrower than a 256-thread block */
    dino_loss_case(3, 2, 2, 1000);   /* global crops only: each teacher crop against the other */
    dino_loss_case(2, 10, 2, 65536); /* the GPU preset's crops and prototypes */
    center_case(6, 37);
    center_case(128, 65536);

    size_t n = 1000;
    float *p = rnd(n, 1), *m = hzeros(n), *v = hzeros(n), *up_ = up(p, n), *um = dzeros(n), *uv = dzeros(n);
    for (int step = 1; step <= 8; step++) { /* decayed (a weight) on odd steps, not on even ones (a bias) */
        float *g = rnd(n, 0.1), *ug = up(g, n), wd = step % 2 ? 0.04f : 0.0f;
        cpu.loss->adamw_step(&cpu, p, g, m, v, n, step, 1e-3f, 0.9f, 0.999f, 1e-8f, wd);
        gpu.loss->adamw_step(&gpu, up_, ug, um, uv, n, step, 1e-3f, 0.9f, 0.999f, 1e-8f, wd);
    }
    expect("adamw_step", "param", up_, p, n, ELEM);
    expect("adamw_step", "m", um, m, n, ELEM);
    expect("adamw_step", "v", uv, v, n, ELEM);

    float *t = rnd(n, 1), *s = rnd(n, 1), *ut = up(t, n), *us = up(s, n);
    cpu.loss->ema(&cpu, t, s, n, 0.996f);
    gpu.loss->ema(&gpu, ut, us, n, 0.996f);
    cpu.loss->ema(&cpu, t, s, n, 0.5f);
    gpu.loss->ema(&gpu, ut, us, n, 0.5f);
    expect("ema", "t", ut, t, n, ELEM);

    /* clip_norm: one element to many partial-sum blocks, each below and above the bound (norm ~ sqrt(n)) */
    const size_t sizes[] = {1, 1000, ((size_t)1 << 20) + 7};
    for (int k = 0; k < 3; k++)
        for (int above = 0; above < 2; above++) {
            size_t nk = sizes[k];
            float *x = rnd(nk, 1), *ux = up(x, nk), *x0 = hzeros(nk), bound = (float)sqrt((double)nk) * (above ? 0.5f : 4.0f);
            memcpy(x0, x, nk * sizeof(float));
            cpu.loss->clip_norm(&cpu, x, nk, bound);
            gpu.loss->clip_norm(&gpu, ux, nk, bound);
            if (nk > 1) /* one N(0,1) value may fall on either side */
                CHECK((memcmp(x, x0, nk * sizeof(float)) != 0) == above, "clip_norm: n %zu bound %g %s", nk,
                      (double)bound, above ? "not clipped" : "clipped");
            expect("clip_norm", "x", ux, x, nk, ELEM);
        }
    gpu.loss->clip_norm(&gpu, us, 0, 1.0f); /* no values: nothing to launch */
    release();
}

/* ------------------------------------------------------------ training step */

static void step_expect(const char *what, const float *d, const float *c, size_t n) {
    const float *g = down(d, n);
    double e = rel_err(g, c, n, 0.05);
    printf("  %-26s max rel err %.2e (bound %.0e)\n", what, e, STEP);
    CHECK(e <= STEP, "%s: max rel err %.3e > %.0e", what, e, STEP);
}

/* One model and its inputs on one backend. */
typedef struct {
    ls_backend *be;
    ls_model m;
    ls_arena arena, harena;
    float *feats, *image, *target, *extra, *dz, *dcodes, *dextra, *ws, *mom, *vel;
    const float *logits, *codes; /* in the arena, intact after backward */
    double loss;
} side;

static int run_side(side *s, const ls_model_config *cfg, uint64_t seed, const float *feats, const float *image,
                    const float *target, const float *extra, float *const *keep, int B) {
    ls_backend *be = s->be;
    ls_error err = {0};
    int G = cfg->grid, S = ls_model_out_side(cfg), C = cfg->feat_dim, K = cfg->code_dim, P = G * G;
    size_t nf = (size_t)B * C * P, ni = (size_t)B * S * S, nc = (size_t)B * K * P;
    if (ls_model_init(&s->m, be, cfg, seed, &err) ||
        ls_arena_init(&s->arena, be, ls_model_arena_floats(cfg, B) * sizeof(float), &err) ||
        ls_arena_init(&s->harena, be, ls_model_head_arena_floats(&s->m, 1) * sizeof(float), &err)) {
        printf("  %s\n", err.msg);
        return 0;
    }
    /* inputs and buffers in this backend's memory */
    size_t sizes[] = {nf, ni, ni, (size_t)C * P, ni, nc, (size_t)K * P, ls_cd_workspace(C, K, P), s->m.nparams,
                      s->m.nparams};
    float **bufs[] = {&s->feats, &s->image, &s->target, &s->extra, &s->dz, &s->dcodes, &s->dextra, &s->ws, &s->mom,
                      &s->vel};
    const float *src[] = {feats, image, target, extra, NULL, NULL, NULL, NULL, NULL, NULL};
    for (int i = 0; i < 10; i++) {
        *bufs[i] = be->mem->alloc(be, sizes[i] * sizeof(float));
        LS_ASSERT(*bufs[i]);
        if (src[i]) be->mem->to_device(be, *bufs[i], src[i], sizes[i] * sizeof(float));
        else be->mem->zero(be, *bufs[i], sizes[i] * sizeof(float));
    }
    ls_model_acts a, ha;
    ls_model_forward(&s->m, &s->arena, &a, s->feats, s->image, B, 1, keep);
    /* Every value into its own slot of this backend's memory, queued with the rest: one copy back at the end,
     * as train.c does. Slots 0-3 the supervised losses, then two per contrastive term. */
    double *v = be->mem->alloc(be, (4 + 2 * ((size_t)B + 2)) * sizeof(double)), h[32];
    LS_ASSERT(v && 4 + 2 * (B + 2) <= 32);
    be->loss->focal(be, a.logits, s->target, ni, 2.0f, 0.25f, 1.0f, s->dz, v);
    be->loss->tversky(be, a.logits, s->target, ni, 0.5f, 0.5f, 1.0f, 1.0f, s->dz, v + 1);
    be->loss->log_iou(be, a.logits, s->target, ni, 1.0f, 1.0f, s->dz, v + 2);
    be->loss->entropy(be, a.logits, ni, 2.0f, 0.1f, s->dz, v + 3);
    for (int b = 0; b < B; b++)
        be->loss->cd_term(be, s->feats + (size_t)b * C * P, s->feats + (size_t)b * C * P, C, a.codes + (size_t)b * K * P,
                          a.codes + (size_t)b * K * P, K, P, 0.18f, 1.0f, s->dcodes + (size_t)b * K * P,
                          s->dcodes + (size_t)b * K * P, v + 4 + 2 * b, s->ws);
    be->loss->cd_term(be, s->feats, s->feats + (size_t)C * P, C, a.codes, a.codes + (size_t)K * P, K, P, 0.12f, 1.0f,
                      s->dcodes, s->dcodes + (size_t)K * P, v + 4 + 2 * B, s->ws);
    ls_model_head_forward(&s->m, &s->harena, &ha, s->extra, 1);
    be->loss->cd_term(be, s->feats, s->extra, C, a.codes, ha.codes, K, P, 0.46f, 0.5f, s->dcodes, s->dextra,
                      v + 6 + 2 * B, s->ws);
    ls_model_backward(&s->m, &s->arena, &a, s->dz, s->dcodes);
    ls_model_head_backward(&s->m, &s->harena, &ha, s->dextra);
    be->mem->to_host(be, h, v, (4 + 2 * ((size_t)B + 2)) * sizeof(double));
    be->mem->free(be, v);
    double loss = h[0] + h[1] + h[2] + 0.1 * h[3];
    for (int b = 0; b < B; b++) loss += h[4 + 2 * b];
    s->loss = loss + h[4 + 2 * B] + 0.5 * h[6 + 2 * B];
    s->logits = a.logits, s->codes = a.codes;
    return 1;
}

static void free_side(side *s) {
    float *bufs[] = {s->feats, s->image, s->target, s->extra, s->dz, s->dcodes, s->dextra, s->ws, s->mom, s->vel};
    for (int i = 0; i < 10; i++)
        if (bufs[i]) s->be->mem->free(s->be, bufs[i]);
    ls_arena_free(&s->arena);
    ls_arena_free(&s->harena);
    ls_model_free(&s->m);
}

static void one_step(int G, int up_stages, uint64_t seed) {
    ls_model_config cfg = {.feat_dim = 12, .head_hidden = 10, .code_dim = 6, .grid = G, .widths = {8, 8, 6, 6, 4},
                           .skip_width = 5, .up_stages = up_stages, .dropout = 0.2f, .bn_momentum = 0.1f,
                           .bn_eps = 1e-5f};
    int B = 2, S = ls_model_out_side(&cfg), C = 12, P = G * G;
    printf("  training step: grid %d, %d upsampling stages, output %dx%d\n", G, up_stages, S, S);
    size_t nf = (size_t)B * C * P, ni = (size_t)B * S * S;
    float *feats = rnd(nf, 1), *image = hzeros(ni), *target = hzeros(ni), *extra = rnd((size_t)C * P, 1);
    for (size_t i = 0; i < ni; i++) image[i] = (float)ls_rng_uniform(&rng);
    for (int b = 0; b < B; b++)
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                target[(size_t)b * S * S + y * S + x] =
                    (x - S / 3 - S / 6 * b) * (x - S / 3 - S / 6 * b) + (y - S / 2) * (y - S / 2) < S * S / 20;
    float *keep[LS_DEC_STAGES];
    for (int s = 0; s < LS_DEC_STAGES; s++) {
        keep[s] = hzeros((size_t)B * cfg.widths[s]);
        for (int i = 0; i < B * cfg.widths[s]; i++) keep[s][i] = ls_rng_uniform(&rng) < 0.2 ? 0.0f : 1.0f / 0.8f;
    }
    side c = {.be = &cpu}, g = {.be = &gpu};
    int ok = run_side(&c, &cfg, seed, feats, image, target, extra, keep, B) &&
             run_side(&g, &cfg, seed, feats, image, target, extra, keep, B);
    CHECK(ok, "could not set the step up");
    if (ok) {
        expect_scalar("training step loss", g.loss, c.loss, STEP);
        step_expect("codes", g.codes, c.codes, (size_t)B * cfg.code_dim * P);
        step_expect("logits", g.logits, c.logits, ni);
        step_expect("dL/dlogits", g.dz, c.dz, ni);
        step_expect("dL/dcodes", g.dcodes, c.dcodes, (size_t)B * cfg.code_dim * P);
        step_expect("gradients", g.m.grads, c.m.grads, c.m.nparams);
        step_expect("running statistics", g.m.running, c.m.running, c.m.nrunning);
        cpu.loss->radam_step(&cpu, c.m.params, c.m.grads, c.mom, c.vel, c.m.nparams, 1, 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-5f);
        gpu.loss->radam_step(&gpu, g.m.params, g.m.grads, g.mom, g.vel, g.m.nparams, 1, 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-5f);
        step_expect("params after RAdam", g.m.params, c.m.params, c.m.nparams);
    }
    free_side(&c);
    free_side(&g);
    release();
}

TEST(training_step_parity) {
    NEED_GPU();
    one_step(2, 5, ls_rng_next(&rng)); /* the paper's decoder: every stage upsamples */
    one_step(4, 3, ls_rng_next(&rng)); /* a CPU preset's: the first stages keep the token grid */
}

/* ------------------------------------------------------------ the ViT, whole */

/* Weights for vit_training: LayerNorm weights near 1, the rest N(0, 0.3) (the position table included, so
 * its resize shows in the features). */
/* Weights at timm's ViT initialisation scale (0.02). At 0.3, as first written, the network amplified a
 * 1e-7 relative change of its input into 3.9e-4 of its features (measured on the CPU), so two float32
 * implementations summing in different orders differed by 1.5e-4 to 1.2e-3 on an H200: the bound then
 * measured the network's conditioning, not the backends. At 0.02 the same change moves them 1.9e-5. */
static int vit_source(void *ctx, const char *name, float *dst, size_t n, ls_error *err) {
    (void)err;
    int ln_w = strstr(name, "norm") && strstr(name, "weight");
    for (size_t i = 0; i < n; i++) dst[i] = (float)((ln_w ? 1.0 : 0.0) + (ln_w ? 0.1 : 0.02) * ls_rng_normal(ctx));
    return LS_OK;
}

/* One ViT (depth 2, width 128, 2 heads of 64: the fused attention's width; patch 8, a 5x5 table) on both
 * backends with the same weights, batch 2, at the trained grid and at grids the table is resized to (a GEMM
 * with the resize's matrix; its gradient through the transpose), one of them again after a weight change
 * (the cached matrix, the table recomputed): the inference forward, then the training forward and
 * backward. Features, class tokens and every gradient at the training step's bound, the position table's
 * gradient at the GEMMs'. */
TEST(vit_training) {
    NEED_GPU();
    ls_error err = {0};
    ls_vit_config c = {.depth = 2, .dim = 128, .heads = 2, .patch = 8, .mlp_hidden = 512, .pos_grid = 5, .eps = 1e-6f};
    snprintf(c.name, sizeof c.name, "custom");
    ls_vit mc, mg;
    uint64_t seed = ls_rng_next(&rng);
    ls_rng r1 = {seed}, r2 = {seed};
    REQUIRE(ls_vit_load(&mc, &cpu, &c, vit_source, &r1, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_vit_load(&mg, &gpu, &c, vit_source, &r2, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_vit_alloc_grads(&mc, &err) == LS_OK && ls_vit_alloc_grads(&mg, &err) == LS_OK, "%s", err.msg);
    static const int sizes[][2] = {{40, 40}, {32, 48}, {24, 24}, {32, 48}};
    int B = 2, D = c.dim;
    size_t npos = (size_t)(1 + c.pos_grid * c.pos_grid) * D, off = (size_t)(mc.pos - mc.params);
    for (int k = 0; k < 4; k++) {
        int H = sizes[k][0], W = sizes[k][1];
        char what[64];
        snprintf(what, sizeof what, "vit %dx%d", H, W);
        if (k == 3) { /* an optimiser step's worth of change, then the notice */
            float *dp = rnd(mc.nparams, 0.01);
            cpu.dense->add(&cpu, mc.params, dp, mc.nparams);
            gpu.dense->add(&gpu, mg.params, up(dp, mc.nparams), mc.nparams);
            ls_vit_params_changed(&mc), ls_vit_params_changed(&mg);
        }
        size_t nin = (size_t)B * 3 * H * W, nf = (size_t)B * D * (H / 8) * (W / 8), nc = (size_t)B * D;
        size_t arena = ls_vit_train_arena_floats(&c, B, H, W) * sizeof(float);
        ls_arena ac, ag;
        REQUIRE(ls_arena_init(&ac, &cpu, arena, &err) == LS_OK && ls_arena_init(&ag, &gpu, arena, &err) == LS_OK, "%s",
                err.msg);
        float *img = rnd(nin, 1), *dimg = up(img, nin), *fc = hzeros(nf), *fg = dzeros(nf);
        float *cc = hzeros(nc), *cg = dzeros(nc), *dF = rnd(nf, 1), *dC = rnd(nc, 1);
        REQUIRE(ls_vit_forward(&mc, &ac, img, B, H, W, fc, NULL, &err) == LS_OK, "%s", err.msg);
        REQUIRE(ls_vit_forward(&mg, &ag, dimg, B, H, W, fg, NULL, &err) == LS_OK, "%s", err.msg);
        expect(what, "inference", fg, fc, nf, REDUCE);
        ls_vit_acts xc, xg;
        ls_arena_reset(&ac), ls_arena_reset(&ag);
        REQUIRE(ls_vit_forward_train(&mc, &ac, &xc, img, B, H, W, fc, cc, &err) == LS_OK, "%s", err.msg);
        REQUIRE(ls_vit_forward_train(&mg, &ag, &xg, dimg, B, H, W, fg, cg, &err) == LS_OK, "%s", err.msg);
        expect(what, "features", fg, fc, nf, REDUCE);
        expect(what, "cls", cg, cc, nc, REDUCE);
        cpu.mem->zero(&cpu, mc.grads, mc.nparams * sizeof(float));
        gpu.mem->zero(&gpu, mg.grads, mg.nparams * sizeof(float));
        REQUIRE(ls_vit_backward(&mc, &ac, &xc, dF, dC, NULL, &err) == LS_OK, "%s", err.msg);
        REQUIRE(ls_vit_backward(&mg, &ag, &xg, up(dF, nf), up(dC, nc), NULL, &err) == LS_OK, "%s", err.msg);
        snprintf(what, sizeof what, "vit %dx%d gradients", H, W);
        step_expect(what, mg.grads, mc.grads, mc.nparams);
        expect(what, "pos_embed", mg.grads + off, mc.grads + off, npos, REDUCE);
        ls_arena_free(&ac), ls_arena_free(&ag);
    }
    ls_vit_free(&mc), ls_vit_free(&mg);
    release();
}

/* ------------------------------------------------------------ host memory and the segment pipeline */

/* Pinned host buffers: to the device, back with the asynchronous copy, read after sync. */
TEST(host_memory) {
    NEED_GPU();
    size_t n = 3 * 1000 * 1000 + 7;
    float *a = gpu.mem->host_alloc(&gpu, n * sizeof(float)), *b = gpu.mem->host_alloc(&gpu, n * sizeof(float));
    REQUIRE(a && b, "host_alloc failed");
    for (size_t i = 0; i < n; i++) a[i] = (float)ls_rng_normal(&rng), b[i] = 0;
    float *d = dzeros(n);
    gpu.mem->to_device(&gpu, d, a, n * sizeof(float));
    gpu.mem->to_host_async(&gpu, b, d, n * sizeof(float));
    gpu.mem->sync(&gpu);
    CHECK(memcmp(a, b, n * sizeof(float)) == 0, "pinned round trip changed the data");
    gpu.mem->host_free(&gpu, a), gpu.mem->host_free(&gpu, b);
    release();
}

/* ls_segment_volume's batch pipeline (pinned double buffers, the device's work overlapping the host's
 * resampling) against the CPU's plain order: a random ViT-S/16 at 32x32 and a small random head +
 * decoder, 21 slices in batches of 8 (the last one partial). Probabilities within 1e-4 (absolute; the
 * networks' float32 sums in another order); masks thresholded without clean-up differ only where the
 * CPU's probability is that close to the threshold. */
TEST(segment_pipeline) {
    NEED_GPU();
    ls_error err = {0};
    ls_model_config c;
    ls_model_config_default(&c, 384, 2);
    c.head_hidden = 32, c.code_dim = 8;
    c.widths[0] = 8, c.widths[1] = 8, c.widths[2] = 4, c.widths[3] = 4, c.widths[4] = 4, c.skip_width = 4;
    ls_model mc, mg;
    ls_model_info info = {.input_size = 32}, back;
    snprintf(info.teacher_id, sizeof info.teacher_id, "vits16:random:seed=5");
    snprintf(info.teacher_arch, sizeof info.teacher_arch, "vits16");
    char path[600];
    snprintf(path, sizeof path, "%s/pipeline.safetensors", test_tmpdir());
    REQUIRE(ls_model_init(&mc, &cpu, &c, ls_rng_next(&rng), &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_model_save(&mc, &info, path, 0, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_model_load(&mg, &back, &gpu, path, &err) == LS_OK, "%s", err.msg);
    ls_teacher tc, tg;
    REQUIRE(ls_teacher_open(&tc, &cpu, NULL, "vits16", 5, 32, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_teacher_open(&tg, &gpu, NULL, "vits16", 5, 32, &err) == LS_OK, "%s", err.msg);
    ls_volume v = {0};
    int64_t d[3] = {40, 36, 21};
    double aff[4][4] = {{0.8, 0, 0, 0}, {0, 0.8, 0, 0}, {0, 0, 2.5, 0}, {0, 0, 0, 1}};
    ls_geom_from_affine(&v.geom, d, aff);
    size_t n = 40 * 36 * 21;
    v.data = hkeep(malloc(n * sizeof(float)));
    for (size_t i = 0; i < n; i++) {
        double x = (double)(i % 40) - 22, y = (double)(i / 40 % 36) - 15, z = (double)(i / 1440) - 10;
        v.data[i] = (float)((x * x + y * y + 4 * z * z < 150 ? 60 : -900) + 20 * ls_rng_normal(&rng));
    }
    ls_segment_opts o;
    ls_segment_opts_default(&o);
    o.modality = LS_MOD_CT, o.keep_largest = 0, o.fill_holes = 0, o.batch = 8;
    ls_segment_result rc, rg;
    REQUIRE(ls_segment_volume(&v, &tc, &mc, &o, NULL, NULL, &rc, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_segment_volume(&v, &tg, &mg, &o, NULL, NULL, &rg, &err) == LS_OK, "%s", err.msg);
    double worst = 0;
    size_t flips = 0, explained = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(rg.prob.data[i] - rc.prob.data[i]);
        worst = fmax(worst, e);
        if (rg.mask[i] != rc.mask[i]) flips++, explained += fabs(rc.prob.data[i] - 0.5) <= 1e-4;
    }
    if (worst > 1e-4 || getenv("LS_VERBOSE")) printf("  %-22s %-10s max abs err %.2e (bound 1e-04)\n", "segment", "prob", worst);
    CHECK(worst <= 1e-4, "probabilities differ by %.3e > 1e-4", worst);
    CHECK(flips == explained, "%zu mask voxels differ, %zu of them at the threshold", flips, explained);
    ls_segment_result_free(&rc), ls_segment_result_free(&rg);
    ls_teacher_close(&tc), ls_teacher_close(&tg);
    ls_model_free(&mc), ls_model_free(&mg);
    release();
}

int main(void) {
    const char *env = getenv("LS_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    printf("  seed %llu (LS_SEED=%llu repeats this run)\n", (unsigned long long)seed, (unsigned long long)seed);
    rng.state = seed;
    ls_error err = {0};
#ifndef LS_WITH_CUDA
    skip_reason = "no CUDA in this build (make CUDA=1 BUILD=build-cuda)";
#else
    cublas_mapped_at_start = library_mapped("libcublas.so");
    unsetenv("LIVSEG_CUDA_TF32"); /* full float32 GEMMs: see the header */
    unsetenv("LIVSEG_CUDA_BF16");
    if (ls_backend_init(&cpu, LS_DEV_CPU, 0, &err) != LS_OK) {
        printf("  cannot open the CPU backend: %s\n", err.msg);
        return 1;
    }
    static char why[1100];
    if (ls_backend_init(&gpu, LS_DEV_CUDA, 0, &err) != LS_OK) {
        snprintf(why, sizeof why, "no CUDA device (%s)", err.msg);
        skip_reason = why;
    }
#endif
    (void)err;
    RUN(cublas_loading);
    RUN(gemm);
    RUN(gemm_tf32);
    RUN(gemm_bf16);
    RUN(gemm_tf32_rounding);
    RUN(row_ops);
    RUN(token_ops);
    RUN(attention);
    RUN(dino_head);
    RUN(conv2d);
    RUN(batchnorm);
    RUN(elementwise_nn);
    RUN(losses);
    RUN(cd_term);
    RUN(radam);
    RUN(dino_training);
    RUN(training_step_parity);
    RUN(vit_training);
    RUN(host_memory);
    RUN(segment_pipeline);
#ifdef LS_WITH_CUDA
    if (!skip_reason) ls_backend_free(&gpu);
    ls_backend_free(&cpu);
#endif
    return test_summary();
}
