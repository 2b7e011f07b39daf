/*
 * bench/conv.c — the decoder's op shapes at batch 8 on this machine: conv2d forward and backward (dx, dw
 * and db), batch norm in training (forward and backward), x2 upsampling (forward and backward), then the
 * whole model's evaluation forward (what `livseg segment` runs per 8 slices) and a training forward +
 * backward. Convolutions are reported in GFLOP/s against the machine's sgemm rate measured in the same
 * run (2048^3, as bench/vit.c); the memory-bound ops in GB/s of tensors read and written. Not a test.
 *
 * usage: build/bench/conv [threads] [reps]   (each figure is the best of `reps` timed passes after a
 * warm-up pass)
 *
 * FLOPs on paper: conv forward 2*B*Co*Ci*K*K*H*W; backward twice that (dw and dx), a backward without dx
 * once. Bytes: batch norm forward reads x twice (statistics, then normalise) and writes y; backward reads
 * dy and x twice and writes dx; upsampling reads x once and writes y (4x), and the reverse.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ops.h"
#include "util.h"
#include "common.h"

static int reps = 5;

static float *randf(size_t n, unsigned seed, float scale) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = scale * ((float)(seed >> 8) / 16777216.0f - 0.5f);
    }
    return p;
}

/* Best wall time of `reps` passes after one warm-up. */
#define TIME_BEST(best, stmt)                                                                                          \
    do {                                                                                                               \
        best = 1e30;                                                                                                   \
        for (int r_ = 0; r_ <= reps; r_++) {                                                                           \
            double t0_ = ls_now();                                                                                     \
            stmt;                                                                                                      \
            double t_ = ls_now() - t0_;                                                                                \
            if (r_ && t_ < best) best = t_;                                                                            \
        }                                                                                                              \
    } while (0)

static void conv_shape(const ls_backend *be, int B, int Ci, int Co, int H, int K, double peak, double *tot_f,
                       double *tot_b) {
    int W = H;
    size_t nx = (size_t)B * Ci * H * W, ny = (size_t)B * Co * H * W, nw = (size_t)Co * Ci * K * K;
    float *x = randf(nx, 1, 2), *w = randf(nw, 2, 0.2f), *b = randf((size_t)Co, 3, 0.2f), *dy = randf(ny, 4, 2);
    float *y = malloc(ny * sizeof(float)), *dx = malloc(nx * sizeof(float)), *dw = calloc(nw, sizeof(float));
    float *db = calloc((size_t)Co, sizeof(float));
    float *ws = malloc((be->nn->conv2d_workspace(Ci, H, W, Co, K) + 1) * sizeof(float));
    double tf, tb, tw;
    TIME_BEST(tf, be->nn->conv2d_fwd(be, y, x, w, b, B, Ci, H, W, Co, K, ws));
    TIME_BEST(tb, be->nn->conv2d_bwd(be, dx, dw, db, dy, x, w, B, Ci, H, W, Co, K, ws));
    TIME_BEST(tw, be->nn->conv2d_bwd(be, NULL, dw, db, dy, x, w, B, Ci, H, W, Co, K, ws));
    double fl = 2.0 * B * Co * Ci * K * K * (double)H * W;
    printf("  conv%dx%d %3d->%-3d @%3d  fwd %8.1f ms %6.1f GFLOP/s %3.0f%% | bwd %8.1f ms %6.1f GFLOP/s %3.0f%% | "
           "bwd w/o dx %7.1f ms %6.1f GFLOP/s\n",
           K, K, Ci, Co, H, tf * 1e3, fl / tf / 1e9, 100 * fl / tf / 1e9 / peak, tb * 1e3, 2 * fl / tb / 1e9,
           100 * 2 * fl / tb / 1e9 / peak, tw * 1e3, fl / tw / 1e9);
    *tot_f += tf, *tot_b += tb;
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db), free(ws);
}

static void bn_shape(const ls_backend *be, int B, int C, int H) {
    int HW = H * H;
    size_t n = (size_t)B * C * HW;
    float *x = randf(n, 5, 2), *dy = randf(n, 6, 2), *y = malloc(n * sizeof(float)), *dx = malloc(n * sizeof(float));
    float *gamma = randf((size_t)C, 7, 1), *beta = randf((size_t)C, 8, 1), *mean = malloc(C * sizeof(float));
    float *rstd = malloc(C * sizeof(float)), *rm = calloc((size_t)C, sizeof(float)), *rv = calloc((size_t)C, sizeof(float));
    float *dg = calloc((size_t)C, sizeof(float)), *dbt = calloc((size_t)C, sizeof(float));
    double tf, tb, te;
    TIME_BEST(tf, be->nn->batchnorm_fwd_train(be, y, mean, rstd, x, gamma, beta, rm, rv, B, C, HW, 0.1f, 1e-5f));
    TIME_BEST(tb, be->nn->batchnorm_bwd(be, dx, dg, dbt, dy, x, mean, rstd, gamma, B, C, HW));
    TIME_BEST(te, be->nn->batchnorm_fwd_eval(be, y, x, gamma, beta, rm, rv, B, C, HW, 1e-5f));
    double bytes = 4.0 * n;
    printf("  batchnorm %3d @%3d         train fwd %7.1f ms %5.1f GB/s | bwd %7.1f ms %5.1f GB/s | eval %6.1f ms %5.1f GB/s\n",
           C, H, tf * 1e3, 3 * bytes / tf / 1e9, tb * 1e3, 5 * bytes / tb / 1e9, te * 1e3, 2 * bytes / te / 1e9);
    free(x), free(dy), free(y), free(dx), free(gamma), free(beta), free(mean), free(rstd), free(rm), free(rv), free(dg),
        free(dbt);
}

static void up_shape(const ls_backend *be, int B, int C, int H) {
    size_t n = (size_t)B * C * H * H;
    float *x = randf(n, 9, 2), *y = malloc(4 * n * sizeof(float)), *dy = randf(4 * n, 10, 2);
    float *dx = malloc(n * sizeof(float));
    double tf, tb, tr;
    TIME_BEST(tf, be->nn->upsample2x_fwd(be, y, x, B, C, H, H));
    TIME_BEST(tb, be->nn->upsample2x_bwd(be, dx, dy, B, C, H, H));
    TIME_BEST(tr, be->nn->relu_fwd(be, dy, dy, 4 * n));
    double bytes = 4.0 * 5 * n;
    printf("  upsample2x %3d @%3d->%-3d   fwd %7.1f ms %5.1f GB/s | bwd %7.1f ms %5.1f GB/s | relu in place (output) "
           "%6.1f ms\n",
           C, H, 2 * H, tf * 1e3, bytes / tf / 1e9, tb * 1e3, bytes / tb / 1e9, tr * 1e3);
    free(x), free(y), free(dy), free(dx);
}

static void model_pass(ls_backend *be, int B) {
    ls_error err = {0};
    ls_model m;
    ls_model_config cfg;
    ls_model_config_default(&cfg, 384, 14);
    ls_arena ar;
    if (ls_model_init(&m, be, &cfg, 1, &err) ||
        ls_arena_init(&ar, be, ls_model_arena_floats(&cfg, B) * sizeof(float), &err)) {
        fprintf(stderr, "bench/conv: %s\n", err.msg);
        exit(2);
    }
    int S = 14 * 32;
    float *feats = randf((size_t)B * 384 * 14 * 14, 11, 2), *img = randf((size_t)B * S * S, 12, 2);
    float *dlog = randf((size_t)B * S * S, 13, 0.01f);
    ls_model_acts a;
    double te, tt;
    TIME_BEST(te, (ls_arena_reset(&ar), ls_model_forward(&m, &ar, &a, feats, img, B, 0, NULL)));
    TIME_BEST(tt, (ls_arena_reset(&ar), ls_model_forward(&m, &ar, &a, feats, img, B, 1, NULL),
                   ls_model_backward(&m, &ar, &a, dlog, NULL)));
    printf("  model (default config, %dx%d output), batch %d: eval forward %.3f s (%.1f slices/s); training forward + "
           "backward %.3f s (%.1f slices/s)\n",
           S, S, B, te, B / te, tt, B / tt);
    free(feats), free(img), free(dlog);
    ls_arena_free(&ar);
    ls_model_free(&m);
}

int main(int argc, char **argv) {
    ls_process_tune(argv); /* the kernels and OpenMP waiting livseg runs with (ops.h), both sides */
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (argc > 2) reps = atoi(argv[2]);
    if (reps < 1) reps = 1;
    ls_error err = {0};
    ls_backend be;
    if (ls_backend_init(&be, LS_DEV_CPU, threads, &err)) {
        fprintf(stderr, "bench/conv: %s\n", err.msg);
        return 2;
    }
    double peak = bench_sgemm_gflops(threads);
    openblas_set_num_threads(threads);
    const char *wait = getenv("OMP_WAIT_POLICY");
    printf("decoder ops, batch 8, %d threads, OMP_WAIT_POLICY=%s, OpenBLAS %s kernels, best of %d; sgemm %.1f GFLOP/s "
           "measured (2048^3), %% = share of it\n",
           threads, wait ? wait : "unset", ls_blas_core(), reps, peak);
    int B = 8;
    /* The default decoder's convolutions (model.c): stages at 28..448, the two skip convs and the output
     * conv at 448, and the head's 1x1 convs on the 14x14 grid. */
    static const int shapes[][4] = {{384, 384, 14, 1}, {384, 70, 14, 1}, {70, 64, 28, 3},  {64, 48, 56, 3},
                                    {48, 32, 112, 3},  {32, 16, 224, 3}, {16, 16, 448, 3}, {17, 16, 448, 3},
                                    {16, 1, 448, 3}};
    double tf = 0, tb = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        conv_shape(&be, B, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], peak, &tf, &tb);
    printf("  conv sum over the shapes above (16->16 @448 once; the model has two): fwd %.3f s, bwd %.3f s\n", tf, tb);
    bn_shape(&be, B, 32, 112);
    bn_shape(&be, B, 16, 224);
    bn_shape(&be, B, 16, 448);
    up_shape(&be, B, 32, 112);
    up_shape(&be, B, 16, 224);
    model_pass(&be, B);
    ls_backend_free(&be);
    return 0;
}
