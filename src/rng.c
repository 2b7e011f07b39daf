/*
 * rng.c — truncated-normal floats in bulk, bit for bit what ls_rng_normal_at gives one at a time.
 *
 * A random teacher (the default model's) is 22 M truncated normals, and libm's scalar log and cos made
 * drawing them most of a CPU run's start (0.5 s of it on 2 threads). glibc's vector math library (libmvec,
 * which libm's linker script pulls in) evaluates 4 of each at once with AVX2, within a few ulp of libm but
 * not always to the same bits. (Its AVX-512 variants were no faster on the development machine's Zen 4.)
 * A float taken from a vector normal z is kept only when it cannot depend on that difference: every double
 * within a relative 2^-36 of z (thousands of ulp, far beyond libmvec's error bound) must fall on the same
 * side of the cut and round to the same float. Otherwise the scalar formula decides: for about 1 draw in
 * 3000, and for all of them without AVX2 or glibc.
 */
#include <math.h>
#include <stddef.h>

#include "rng.h"

#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__)
#include <immintrin.h>
#define LS_LIBMVEC 1
/* libmvec's AVX2 entry points, named by the x86-64 vector function ABI ('d': AVX2, 4 doubles); no glibc
 * header declares them. */
__attribute__((target("avx2"))) __m256d _ZGVdN4v_log(__m256d);
__attribute__((target("avx2"))) __m256d _ZGVdN4v_cos(__m256d);

__attribute__((target("avx2"))) static void box_muller_4(const double *u1, const double *u2, double *z) {
    __m256d r = _mm256_sqrt_pd(_mm256_mul_pd(_mm256_set1_pd(-2.0), _ZGVdN4v_log(_mm256_loadu_pd(u1))));
    __m256d c = _ZGVdN4v_cos(_mm256_mul_pd(_mm256_set1_pd(6.283185307179586), _mm256_loadu_pd(u2)));
    _mm256_storeu_pd(z, _mm256_mul_pd(r, c));
}
#endif

/* The float the scalar path gives for the j-th normal: (float)(z * std) when |z| <= cut, else NaN. */
static float exact(uint64_t state, uint64_t j, double std, double cut) {
    double z = ls_rng_normal_at(state, j);
    return fabs(z) <= cut ? (float)(z * std) : NAN;
}

/* The same from an approximation z of that normal, where the margin proves it (see the top); tiny |z| goes
 * to the scalar path too, so that nothing rests on the vector cos's accuracy near its zeros. */
static float settle(double z, uint64_t state, uint64_t j, double std, double cut) {
    double a = fabs(z), e = a * 0x1p-36;
    if (a > 0x1p-20) {
        if (a - e > cut) return NAN;
        if (a + e < cut) {
            float lo = (float)((z - e) * std), hi = (float)((z + e) * std);
            if (lo == hi) return lo;
        }
    }
    return exact(state, j, std, cut);
}

enum { BLOCK = 8 };

static void draw_block(uint64_t state, uint64_t first, size_t n, double std, double cut, int level, float *out) {
#ifdef LS_LIBMVEC
    if (level >= 2) {
        double u1[BLOCK], u2[BLOCK], z[BLOCK];
        for (size_t k = 0; k < BLOCK; k++) {
            uint64_t j = first + k;
            u1[k] = ls_rng_unit(ls_rng_mix(state + (2 * j + 1) * LS_RNG_GAMMA));
            u2[k] = ls_rng_unit(ls_rng_mix(state + (2 * j + 2) * LS_RNG_GAMMA));
        }
        box_muller_4(u1, u2, z), box_muller_4(u1 + 4, u2 + 4, z + 4);
        for (size_t k = 0; k < n; k++) out[k] = settle(z[k], state, first + k, std, cut);
        return;
    }
#else
    (void)level;
#endif
    for (size_t k = 0; k < n; k++) out[k] = exact(state, first + k, std, cut);
}

void ls_rng_trunc_normals_at(uint64_t state, uint64_t first, size_t n, double std, double cut, int level,
                             float *out) {
    size_t blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < blocks; b++) {
        size_t i = b * BLOCK, m = n - i < BLOCK ? n - i : BLOCK;
        draw_block(state, first + i, m, std, cut, level, out + i);
    }
}
