/*
 * test_backend.c — backend selection and the arena: the CPU backend opens with every op family, CUDA
 * without a GPU (or without a CUDA build) is refused with a message that says so.
 */
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

int main(void) {
    RUN(cpu_backend);
    RUN(cuda_refused_without_gpu);
    return test_summary();
}
