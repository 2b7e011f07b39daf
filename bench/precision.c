/*
 * bench/precision.c — what tensor-core GEMMs would do to the masks, estimated on the CPU. With
 * LIVSEG_CUDA_TF32=1 (or _BF16=1) the CUDA backend runs every cuBLAS GEMM on tensor cores: the teacher's
 * linear layers and patch embedding (dense->gemm) and the 1x1 convolutions of the head (nn->conv2d_fwd, K = 1);
 * the fused attention and the decoder's 3x3 convolutions are its own float32 kernels. This benchmark
 * wraps those two ops of the CPU backend so that their inputs are first rounded to TF32 (10-bit mantissa;
 * to nearest, and toward zero, which bracket what the tensor cores do) or to bfloat16 (7-bit, to nearest),
 * products still summed in float as tensor cores do, and segments real scans with the default model in
 * each mode: Dice of each mask against the float32 one, voxels that changed, the largest probability change.
 * A prediction for the TF32-by-default decision of docs/gpu.md, which bench/gpu-check.sh settles on a GPU.
 * Not a test.
 *
 * usage: build/bench/precision [DATA_DIR] [threads] [MODEL] [CASE...]
 *        (cases default to the three bench/gpu-check.sh uses: the first btcv and chaos_t2, totalseg_ct_sm)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"
#include "segment.h"
#include "ops.h"
#include "util.h"

typedef enum { FP32, TF32_NEAREST, TF32_TOWARD_ZERO, BF16_NEAREST, NMODES } mode;
static const char *const mode_name[NMODES] = {"fp32", "tf32 nearest", "tf32 toward 0", "bf16 nearest"};

/* The wrapped backend's state (its impl): the CPU backend the ops forward to, and the rounding. */
typedef struct {
    const ls_backend *cpu;
    mode m;
} emu_ctx;

/* x with its mantissa cut to `keep` bits (of 23), to nearest (ties to even) or toward zero. */
static float round_mantissa(float x, int keep, int nearest) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u) return x; /* inf, NaN */
    int drop = 23 - keep;
    uint32_t mask = (1u << drop) - 1;
    if (nearest) u += (mask >> 1) + ((u >> drop) & 1);
    u &= ~mask;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* A rows x cols matrix at leading dimension ld, rounded, packed (leading dimension cols). */
static float *rounded(const emu_ctx *c, const float *a, size_t rows, size_t cols, size_t ld) {
    float *out = malloc(rows * cols * sizeof(float));
    if (!out) abort();
    int keep = c->m == BF16_NEAREST ? 7 : 10, nearest = c->m != TF32_TOWARD_ZERO;
    for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < cols; k++) out[r * cols + k] = round_mantissa(a[r * ld + k], keep, nearest);
    return out;
}

static void emu_gemm(const ls_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    const emu_ctx *c = be->impl;
    int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    float *a = rounded(c, A, ar, ac, lda), *b = rounded(c, B, br, bc, ldb);
    c->cpu->dense->gemm(c->cpu, ta, tb, M, N, K, alpha, a, ac, b, bc, beta, C, ldc);
    free(a), free(b);
}

static void emu_conv2d_fwd(const ls_backend *be, float *y, const float *x, const float *w, const float *b, int B,
                           int Ci, int H, int W, int Co, int K, float *ws) {
    const emu_ctx *c = be->impl;
    if (K != 1) { /* CUDA's direct 3x3 kernel: float32 */
        c->cpu->nn->conv2d_fwd(c->cpu, y, x, w, b, B, Ci, H, W, Co, K, ws);
        return;
    }
    float *xr = rounded(c, x, (size_t)B * Ci, (size_t)H * W, (size_t)H * W), *wr = rounded(c, w, Co, Ci, Ci);
    c->cpu->nn->conv2d_fwd(c->cpu, y, xr, wr, b, B, Ci, H, W, Co, K, ws);
    free(xr), free(wr);
}

/* The cases to run: those named, else the first btcv and chaos_t2 and totalseg_ct_sm. */
static int pick_cases(const ls_manifest *mf, char **names, int nnames, int *idx) {
    int n = 0;
    if (nnames) {
        for (int k = 0; k < nnames; k++)
            for (int i = 0; i < mf->n; i++)
                if (!strcmp(mf->cases[i].id, names[k])) idx[n++] = i;
        return n;
    }
    int btcv = 0, chaos = 0;
    for (int i = 0; i < mf->n && n < 3; i++) {
        const ls_case *cs = &mf->cases[i];
        if ((!strcmp(cs->dataset, "btcv") && !btcv++) || (!strcmp(cs->dataset, "chaos_t2") && !chaos++) ||
            !strcmp(cs->id, "totalseg_ct_sm"))
            idx[n++] = i;
    }
    return n;
}

int main(int argc, char **argv) {
    ls_process_tune(argv); /* the kernels and OpenMP waiting livseg runs with (ops.h), both sides */
    const char *data = argc > 1 ? argv[1] : "../shared/data";
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    const char *model = argc > 3 ? argv[3] : "models/default.safetensors";
    char path[4200];
    snprintf(path, sizeof path, "%s/manifest.csv", data);
    ls_error err = {0};
    ls_manifest mf;
    ls_backend cpu;
    if (ls_manifest_read(path, &mf, &err) || ls_backend_init(&cpu, LS_DEV_CPU, threads, &err)) {
        fprintf(stderr, "bench/precision: %s\n", err.msg);
        return 2;
    }
    emu_ctx ctx = {&cpu, FP32};
    ls_ops_dense dense = *cpu.dense;
    ls_ops_nn nn = *cpu.nn;
    dense.gemm = emu_gemm, nn.conv2d_fwd = emu_conv2d_fwd;
    ls_backend emu = cpu; /* its tables are switched per mode; the model and teacher keep a pointer to it */
    emu.impl = &ctx;
    ls_model m;
    ls_model_info info;
    ls_teacher t;
    if (ls_model_load(&m, &info, &emu, model, &err) || ls_segment_teacher(&t, &emu, &m, &info, NULL, model, &err)) {
        fprintf(stderr, "bench/precision: %s\n", err.msg);
        return 2;
    }
    int *idx = calloc((size_t)mf.n, sizeof(int)), n = pick_cases(&mf, argv + 4, argc > 4 ? argc - 4 : 0, idx);
    printf("precision: model %s (teacher %s), %d threads; GEMM inputs rounded as tensor cores would\n", model, t.id,
           threads);
    printf("%-16s %-14s %8s %10s %12s %8s\n", "case", "mode", "Dice", "changed", "max |dprob|", "seconds");
    double worst[NMODES] = {1, 1, 1, 1};
    for (int k = 0; k < n; k++) {
        const ls_case *cs = &mf.cases[idx[k]];
        ls_volume v;
        if (ls_volume_read(cs->image, &v, &err)) {
            fprintf(stderr, "bench/precision: %s\n", err.msg);
            return 2;
        }
        ls_segment_result ref = {0};
        for (int md = FP32; md < NMODES; md++) {
            ctx.m = (mode)md;
            emu.dense = md == FP32 ? cpu.dense : &dense;
            emu.nn = md == FP32 ? cpu.nn : &nn;
            ls_segment_opts o;
            ls_segment_opts_default(&o);
            ls_segment_result r;
            double t0 = ls_now();
            if (ls_segment_volume(&v, &t, &m, &o, NULL, NULL, &r, &err)) {
                fprintf(stderr, "bench/precision: %s: %s\n", cs->id, err.msg);
                return 2;
            }
            double secs = ls_now() - t0;
            if (md == FP32) {
                ref = r;
                printf("%-16s %-14s %8s %10s %12s %8.1f   (%lld liver voxels)\n", cs->id, mode_name[md], "-", "-", "-",
                       secs, (long long)r.stats.voxels);
                continue;
            }
            size_t nv = (size_t)v.geom.dim[0] * v.geom.dim[1] * v.geom.dim[2], both = 0, a = 0, b = 0, changed = 0;
            double dp = 0;
            for (size_t i = 0; i < nv; i++) {
                both += r.mask[i] && ref.mask[i], a += r.mask[i] != 0, b += ref.mask[i] != 0;
                changed += (r.mask[i] != 0) != (ref.mask[i] != 0);
                double d = fabs((double)r.prob.data[i] - ref.prob.data[i]);
                if (d > dp) dp = d;
            }
            double dice = a + b ? 2.0 * both / (double)(a + b) : 1.0;
            if (dice < worst[md]) worst[md] = dice;
            printf("%-16s %-14s %8.5f %10zu %12.2e %8.1f\n", cs->id, mode_name[md], dice, changed, dp, secs);
            ls_segment_result_free(&r);
        }
        ls_segment_result_free(&ref);
        ls_volume_free(&v);
    }
    printf("worst Dice against float32: tf32 nearest %.5f, tf32 toward 0 %.5f, bf16 nearest %.5f (the bar: 0.999)\n",
           worst[TF32_NEAREST], worst[TF32_TOWARD_ZERO], worst[BF16_NEAREST]);
    free(idx);
    ls_teacher_close(&t);
    ls_model_free(&m);
    ls_backend_free(&cpu);
    ls_manifest_free(&mf);
    return 0;
}
