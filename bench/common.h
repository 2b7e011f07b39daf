/*
 * bench/common.h — what the CPU benchmarks share: the machine's measured sgemm rate, the reference
 * their ratios are printed against.
 */
#ifndef LS_BENCH_COMMON_H
#define LS_BENCH_COMMON_H

#include <cblas.h>
#include <stdlib.h>

#include "util.h"

/* Best of 3 timed 2048^3 sgemms after a warm-up, in GFLOP/s, at `threads` OpenBLAS threads. */
static inline double bench_sgemm_gflops(int threads) {
    int n = 2048;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
    openblas_set_num_threads(threads);
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        double t0 = ls_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double t = ls_now() - t0;
        if (r && t < best) best = t;
    }
    free(a), free(b), free(c);
    return 2.0 * n * n * n / best / 1e9;
}

#endif
