/*
 * bench/vit.c — ViT teacher throughput on this machine, against PyTorch's forward of the same model
 * measured in the same run (bench/vit_torch.py, same batch and threads) and against the machine's
 * measured sgemm rate. Not a test: run `build/bench/vit [preset] [batch] [size] [threads]`.
 *
 * FLOPs counted on paper per image: patch embedding 2*N*3P^2*D, and per block the qkv, projection and
 * MLP products 24*T*D^2 plus attention 4*T^2*D (scores and weighted sum); LayerNorm, softmax and GELU
 * are not counted.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ops.h"
#include "util.h"
#include "vit.h"
#include "common.h"

/* Random weights of the right shapes: the benchmark needs no checkpoint. */
static int random_source(void *ctx, const char *name, float *dst, size_t n, ls_error *err) {
    (void)err;
    unsigned *state = ctx;
    int is_norm_w = strstr(name, "norm") && strstr(name, "weight");
    for (size_t i = 0; i < n; i++) {
        *state = *state * 1664525u + 1013904223u;
        float u = (float)(*state >> 8) / 16777216.0f - 0.5f;
        dst[i] = is_norm_w ? 1.0f + 0.1f * u : 0.04f * u;
    }
    return LS_OK;
}

int main(int argc, char **argv) {
    ls_process_tune(argv); /* the kernels and OpenMP waiting livseg runs with (ops.h), both sides */
    const char *preset = argc > 1 ? argv[1] : "vits16";
    int B = argc > 2 ? atoi(argv[2]) : 8, S = argc > 3 ? atoi(argv[3]) : 224, threads = argc > 4 ? atoi(argv[4]) : 2;
    int iters = 10;
    ls_error err = {0};
    ls_backend be;
    ls_vit_config cfg;
    ls_vit m;
    ls_arena arena;
    unsigned seed = 1;
    if (ls_backend_init(&be, LS_DEV_CPU, threads, &err) || ls_vit_config_preset(preset, &cfg, &err) ||
        ls_vit_load(&m, &be, &cfg, random_source, &seed, &err) ||
        ls_arena_init(&arena, &be, ls_vit_arena_floats(&cfg, B, S, S) * sizeof(float), &err)) {
        fprintf(stderr, "bench/vit: %s\n", err.msg);
        return 2;
    }
    size_t nin = (size_t)B * 3 * S * S, nout = (size_t)B * cfg.dim * (S / cfg.patch) * (S / cfg.patch);
    float *in = malloc(nin * sizeof(float)), *out = malloc(nout * sizeof(float));
    for (size_t i = 0; i < nin; i++) in[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    double best = 1e30;
    for (int it = 0; it <= iters; it++) {
        ls_arena_reset(&arena);
        double t0 = ls_now();
        if (ls_vit_forward(&m, &arena, in, B, S, S, out, NULL, &err)) {
            fprintf(stderr, "bench/vit: %s\n", err.msg);
            return 2;
        }
        double t = ls_now() - t0;
        if (it && t < best) best = t; /* the first pass warms caches and page tables */
    }
    double N = (double)(S / cfg.patch) * (S / cfg.patch), T = N + 1, D = cfg.dim;
    double flops = B * (2 * N * 3 * cfg.patch * cfg.patch * D + cfg.depth * (24 * T * D * D + 4 * T * T * D));
    double c_rate = B / best, gflops = flops / best / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = ru.ru_maxrss / 1024.0;
    double paper_mb = (m.nparams + ls_vit_arena_floats(&cfg, B, S, S) + nin + nout) * 4.0 / 1048576.0;
    double peak = bench_sgemm_gflops(threads);

    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s bench/vit_torch.py %s %d %d %d %d", getenv("LS_PYTHON") ? getenv("LS_PYTHON") : "/usr/bin/python3",
             preset, B, S, threads, iters);
    double torch_rate = 0;
    FILE *p = popen(cmd, "r");
    if (p) {
        char line[256];
        while (fgets(line, sizeof line, p)) sscanf(line, "torch_slices_per_s %lf", &torch_rate);
        pclose(p);
    }
    const char *wait = getenv("OMP_WAIT_POLICY");
    printf("ViT %s, batch %d at %dx%d, %d threads, OMP_WAIT_POLICY=%s, OpenBLAS %s kernels (apply to both)\n", preset, B,
           S, S, threads, wait ? wait : "unset", ls_blas_core());
    printf("  livseg   %8.2f slices/s  (%.3f s per batch, %.1f GFLOP/s)\n", c_rate, best, gflops);
    if (torch_rate > 0) printf("  PyTorch  %8.2f slices/s  -> livseg/PyTorch = %.2fx (target >= 1.3x)\n", torch_rate, c_rate / torch_rate);
    else printf("  PyTorch  unavailable (%s)\n", cmd);
    printf("  sgemm    %8.1f GFLOP/s measured (2048^3) -> %.0f%% of it (target >= 70%%)\n", peak, 100 * gflops / peak);
    printf("  memory   peak RSS %.0f MB; weights + arena + input/output on paper %.0f MB -> %.2fx (target < 1.5x)\n",
           rss_mb, paper_mb, rss_mb / paper_mb);
    free(in), free(out);
    ls_arena_free(&arena);
    ls_vit_free(&m);
    ls_backend_free(&be);
    return 0;
}
