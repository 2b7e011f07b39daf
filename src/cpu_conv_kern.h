/*
 * cpu_conv_kern.h — the register-blocked inner kernel of the direct KxK convolution (cpu_conv.c), written
 * once and included there once per instruction set. Not a header of its own: the includer defines
 *
 *   KSUF     name suffix (avx512, avx2, generic)     KTARGET  function attribute (target ISA, or nothing)
 *   V        vector of VL floats                     COBMAX   output channels held in registers (8 or 4)
 *   V_LOADU(p) V_STOREU(p, v) V_SET1(s) V_ZERO() V_FMA(a, b, c) = a*b + c
 *
 * and gets KN(fwd_band); the parameters are undefined at the end, ready for the next inclusion.
 *
 * Blocking: a block keeps COB output channels x NV vectors of one row's pixels in registers (8 x 3 = 24 of
 * AVX-512's 32) and walks the Ci*K*K taps, loading NV input vectors and COB broadcast weights per tap. It
 * reads the padded band (cpu_conv.c), so no tap ever tests a border.
 */
#define KN(n) KN_(n, KSUF)
#define KN_(n, s) KN__(n, s)
#define KN__(n, s) n##_##s

/* COB x NV outputs: y[j][v*VL + i] for j < COB, v < NV; `n` of the NV*VL pixels are inside the image. */
KTARGET static inline __attribute__((always_inline)) void KN(fwd_block)(float *y, size_t ys, int n, const float *xr,
                                                                       size_t cs, int Wp, const float *wt, int Co,
                                                                       const float *b, int Ci, int K, const int COB,
                                                                       const int NV) {
    V acc[COBMAX][NVMAX];
#pragma GCC unroll 8
    for (int j = 0; j < COB; j++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[j][v] = b ? V_SET1(b[j]) : V_ZERO();
    for (int c = 0; c < Ci; c++)
        for (int ky = 0; ky < K; ky++) {
            const float *xk = xr + c * cs + (size_t)ky * Wp, *wk = wt + (size_t)(c * K + ky) * K * Co;
            for (int kx = 0; kx < K; kx++, wk += Co) {
                V xv[NVMAX];
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) xv[v] = V_LOADU(xk + kx + v * VL);
#pragma GCC unroll 8
                for (int j = 0; j < COB; j++) {
                    V wv = V_SET1(wk[j]);
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++) acc[j][v] = V_FMA(wv, xv[v], acc[j][v]);
                }
            }
        }
#pragma GCC unroll 8
    for (int j = 0; j < COB; j++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            float *p = y + j * ys + v * VL;
            int m = n - v * VL;
            if (m >= VL) {
                V_STOREU(p, acc[j][v]);
            } else if (m > 0) {
                float t[VL];
                V_STOREU(t, acc[j][v]);
                memcpy(p, t, (size_t)m * sizeof(float));
            }
        }
}

/* Output rows [y0, y0 + rows) of one image, all g->co channels; y is the image's output, band its padded
 * input rows, wt the repacked weights [ci][ky][kx][co]. */
KTARGET static void KN(fwd_band)(const conv_geom *g, float *y, const float *band, const float *wt, const float *b,
                                 int y0, int rows) {
    size_t cs = (size_t)(rows + g->K - 1) * g->Wp, ys = (size_t)g->H * g->W;
    int Wv = (g->W + VL - 1) / VL * VL, Co = g->co;
    for (int r = 0; r < rows; r++)
        for (int x0 = 0; x0 < Wv; x0 += NVMAX * VL) {
            int nv = (Wv - x0) / VL < NVMAX ? (Wv - x0) / VL : NVMAX, n = g->W - x0 < nv * VL ? g->W - x0 : nv * VL;
            const float *xr = band + (size_t)r * g->Wp + x0;
            float *yr = y + (size_t)(y0 + r) * g->W + x0;
            for (int o0 = 0; o0 < Co;) {
                int left = Co - o0, cob = left >= COBMAX ? COBMAX : left >= 4 ? 4 : left >= 2 ? 2 : 1;
                float *yo = yr + o0 * ys;
                const float *bo = b ? b + o0 : NULL, *wo = wt + o0;
#define FWD(C, N)                                                                                                      \
    case C * 4 + N:                                                                                                    \
        KN(fwd_block)(yo, ys, n, xr, cs, g->Wp, wo, Co, bo, g->ci, g->K, C, N);                                        \
        break;
                switch (cob * 4 + nv) {
#if COBMAX == 8
                    FWD(8, 3) FWD(8, 2) FWD(8, 1)
#endif
                    FWD(4, 3) FWD(4, 2) FWD(4, 1) FWD(2, 3) FWD(2, 2) FWD(2, 1) FWD(1, 3) FWD(1, 2) FWD(1, 1)
                }
#undef FWD
                o0 += cob;
            }
        }
}

#undef KN
#undef KN_
#undef KN__
#undef KSUF
#undef KTARGET
#undef V
#undef VL
#undef COBMAX
#undef V_LOADU
#undef V_STOREU
#undef V_SET1
#undef V_ZERO
#undef V_FMA
