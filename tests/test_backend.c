/*
 * test_backend.c — backend selection and the arena: the CPU backend opens with every op family, CUDA
 * without a GPU (or without a CUDA build) is refused with a message that says so; the CPU row kernels
 * (softmax's exp, GELU's erf, LayerNorm) against double precision, at lengths that exercise every SIMD
 * width's tail.
 */
#include <math.h>

#include "ops.h"
#include "test.h"

TEST(cpu_backend) {
    ls_backend be;
    ls_error err = {0};
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 2, &err) == LS_OK, "%s", err.msg);
    CHECK(be.mem && be.dense && be.nn && be.loss && be.nthreads == 2, "incomplete CPU backend");
    ls_arena a;
    REQUIRE(ls_arena_init(&a, &be, 1 << 16, &err) == LS_OK, "%s", err.msg);
    float *x = ls_arena_floats(&a, 3), *y = ls_arena_floats(&a, 100);
    CHECK(((uintptr_t)x & 63) == 0 && ((uintptr_t)y & 63) == 0 && y - x == 16, "arena alignment");
    CHECK(a.used == 64 + 448 && a.peak == a.used, "arena accounting %zu", a.used);
    ls_arena_reset(&a);
    CHECK(ls_arena_floats(&a, 1) == x, "reset does not rewind");
    ls_arena_free(&a);
    ls_backend_free(&be);
}

TEST(cuda_refused_without_gpu) {
    ls_backend be;
    ls_error err = {0};
    ls_status s = ls_backend_init(&be, LS_DEV_CUDA, 0, &err);
    if (s == LS_OK) {
        ls_backend_free(&be);
        SKIP("a CUDA GPU is present: nothing to refuse");
    }
    CHECK(s == LS_ERR_UNSUPPORTED, "status %d", s);
    CHECK(strstr(err.msg, "--device cuda") != NULL, "message: %s", err.msg);
    ls_device d;
    CHECK(ls_device_parse("cuda", &d, &err) == LS_OK && d == LS_DEV_CUDA, "parse cuda");
    CHECK(ls_device_parse("gpu", &d, &err) == LS_ERR_INPUT && strstr(err.msg, "gpu"), "parse gpu: %s", err.msg);
}

/* exp through softmax of [0, x]: the second probability is e^x / (1 + e^x). */
TEST(cpu_softmax_exp) {
    ls_backend be;
    ls_error err = {0};
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 2, &err) == LS_OK, "%s", err.msg);
    enum { NX = 20001 };
    float *x = malloc(sizeof(float) * 2 * NX);
    REQUIRE(x, "alloc");
    for (int i = 0; i < NX; i++) x[2 * i] = 0, x[2 * i + 1] = -100.0f * (float)i / (float)(NX - 1);
    be.dense->softmax(&be, x, NX, 2, 1.0f);
    double worst = 0, worst_tiny = 0;
    for (int i = 0; i < NX; i++) {
        double a = -100.0f * (float)i / (float)(NX - 1), e = exp(a);
        double r1 = e / (1 + e), r0 = 1 / (1 + e);
        double rel = fabs(x[2 * i + 1] - r1) / r1;
        if (a >= -87) worst = fmax(worst, fmax(rel, fabs(x[2 * i] - r0) / r0));
        else worst_tiny = fmax(worst_tiny, fabs(x[2 * i + 1] - r1));
    }
    printf("  exp via softmax on [-100, 0]: max rel err %.2e (>= -87), max abs err below %.2e\n", worst, worst_tiny);
    CHECK(worst <= 5e-7, "softmax/exp rel err %.3e", worst);
    CHECK(worst_tiny <= 2e-38, "softmax/exp abs err below -87: %.3e", worst_tiny);
    /* Rows of every tail length, scores spread over +-30 with a scale, against double. */
    double worst_row = 0;
    for (int n = 1; n <= 67; n++) {
        float row[67];
        double ref[67], mx = -INFINITY, sum = 0;
        for (int i = 0; i < n; i++) row[i] = 30.0f * sinf(1.7f * (float)(i * n + 1));
        for (int i = 0; i < n; i++) mx = fmax(mx, row[i]);
        for (int i = 0; i < n; i++) sum += ref[i] = exp(0.125 * (row[i] - mx));
        be.dense->softmax(&be, row, 1, n, 0.125f);
        for (int i = 0; i < n; i++) worst_row = fmax(worst_row, fabs(row[i] - ref[i] / sum) / fmax(ref[i] / sum, 1e-30));
    }
    CHECK(worst_row <= 1e-6, "softmax rows: rel err %.3e", worst_row);
    free(x);
    ls_backend_free(&be);
}

/* Exact-erf GELU with a bias, on a dense sweep of [-10, 10] and a few extremes. */
TEST(cpu_gelu_erf) {
    ls_backend be;
    ls_error err = {0};
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 2, &err) == LS_OK, "%s", err.msg);
    enum { NX = 200001, W = 37 }; /* rows of 37: every SIMD width has a tail */
    size_t rows = (NX + W - 1) / W, n = rows * W;
    float *x = malloc(sizeof(float) * n), *bias = malloc(sizeof(float) * W);
    REQUIRE(x && bias, "alloc");
    for (int i = 0; i < W; i++) bias[i] = 0.25f * (float)(i % 3) - 0.25f;
    double *v = malloc(sizeof(double) * n);
    REQUIRE(v, "alloc");
    for (size_t i = 0; i < n; i++) {
        x[i] = -10.0f + 20.0f * (float)i / (float)(n - 1);
        v[i] = (double)(x[i] + bias[i % W]); /* the sum is rounded to float, as the kernel's is */
    }
    x[0] = -1e30f, v[0] = -1e30f + bias[0], x[1] = 1e30f, v[1] = 1e30f + bias[1], x[2] = 0, v[2] = bias[2];
    be.dense->bias_gelu(&be, x, bias, rows, W);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double r = 0.5 * v[i] * (1 + erf(v[i] / sqrt(2.0)));
        worst = fmax(worst, fabs(x[i] - r) / fmax(1.0, fabs(r)));
    }
    printf("  GELU (exact erf) on [-10, 10]: max err %.2e (absolute, relative above 1)\n", worst);
    CHECK(worst <= 1.5e-6, "gelu err %.3e", worst); /* 1.24e-6 at v = -5.547 on a 2e6-point grid: erf's 4.2e-7 times |v|/2 */
    free(x), free(bias), free(v);
    ls_backend_free(&be);
}

/* LayerNorm rows of every tail length with a nonzero mean, in place, against double. */
TEST(cpu_layernorm_rows) {
    ls_backend be;
    ls_error err = {0};
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 2, &err) == LS_OK, "%s", err.msg);
    double worst = 0;
    for (int n = 1; n <= 67; n++) {
        float x[67], w[67], b[67];
        for (int i = 0; i < n; i++) {
            x[i] = 3.0f + 2.0f * sinf((float)(i * 7 + n));
            w[i] = 1.0f + 0.1f * cosf((float)i), b[i] = 0.01f * (float)i;
        }
        double mean = 0, var = 0, ref[67];
        for (int i = 0; i < n; i++) mean += x[i];
        mean /= n;
        for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
        for (int i = 0; i < n; i++) ref[i] = (x[i] - mean) / sqrt(var / n + 1e-6) * w[i] + b[i];
        be.dense->layernorm(&be, x, x, w, b, 1, n, 1e-6f);
        for (int i = 0; i < n; i++) worst = fmax(worst, fabs(x[i] - ref[i]) / fmax(1.0, fabs(ref[i])));
    }
    CHECK(worst <= 2e-6, "layernorm err %.3e", worst);
    ls_backend_free(&be);
}

int main(void) {
    RUN(cpu_backend);
    RUN(cpu_softmax_exp);
    RUN(cpu_gelu_erf);
    RUN(cpu_layernorm_rows);
    RUN(cuda_refused_without_gpu);
    return test_summary();
}
