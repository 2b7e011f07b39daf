/*
 * fastmath.h — exp(x) for x <= 0 and erf(x) in plain float arithmetic, shared by the CPU row kernels
 * (cpu_dense.c, which need them to vectorise: no libm calls) and their CUDA twins (cuda/dense.cu), so that
 * both backends evaluate softmax and GELU with the same operations in the same order. With the CUDA build's
 * --fmad=false (no a*b+c contracted into an FMA, like ISO C on the CPU) they give the same bits.
 */
#ifndef LS_FASTMATH_H
#define LS_FASTMATH_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define LS_HD __host__ __device__
#else
#define LS_HD
#endif

/* Clamps through the float's bits, for the vectoriser: a float comparison may raise an FP exception
 * (GCC's default -ftrapping-math), so GCC will not if-convert `x < c ? c : x` into a vector select at
 * SSE2/AVX2 widths; integer comparisons it will. */
LS_HD static inline uint32_t f2u(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}
LS_HD static inline float u2f(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* exp(x) for x <= 0 (softmax arguments after the max is subtracted), vectorisable: x = n ln2 + r with
 * |r| <= ln2/2, e^r by a degree-6 Taylor polynomial (relative error < 2e-7 on that range), 2^n through the
 * exponent bits. n is rounded to nearest by adding and subtracting 1.5 * 2^23 (exact for |n| < 2^22), which
 * vectorises at any SIMD width where roundf needs SSE4.1 and is otherwise a libm call. Arguments below -87
 * (also -inf and negative NaNs) flush to e^-87 ~ 1.6e-38, as expf does to 0 to within float's range. */
LS_HD static inline float exp_neg(float x) {
    uint32_t u = f2u(x), lim = 0xC2AE0000u; /* -87.0f; as unsigned, negative floats order by magnitude */
    x = u2f(u > lim ? lim : u);
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f; /* ln2 split hi/lo */
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * u2f((uint32_t)((int32_t)n + 127) << 23);
}

/* erf as a rational function of x on [-4, 4] (beyond, erf is +-1 to float precision): the
 * approximation Eigen and TensorFlow use for float erf. Max abs error 4.2e-7 over the reals (measured
 * against math.erf on 200001 points), and it vectorises where libm's erff does not. */
LS_HD static inline float erf_rational(float x) {
    uint32_t u = f2u(x), mag = u & 0x7fffffffu, lim = 0x40800000u; /* 4.0f */
    x = u2f((u & 0x80000000u) | (mag > lim ? lim : mag));           /* clamp to [-4, 4] */
    float x2 = x * x;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 - 2.10102402082508e-06f;
    p = p * x2 - 5.69250639462346e-05f;
    p = p * x2 - 7.34990630326855e-04f;
    p = p * x2 - 2.95459980854025e-03f;
    p = p * x2 - 1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * x2 - 2.13374055278905e-04f;
    q = q * x2 - 1.68282697438203e-03f;
    q = q * x2 - 7.37332916720468e-03f;
    q = q * x2 - 1.42647390514189e-02f;
    return x * p / q;
}

#endif
