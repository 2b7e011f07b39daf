/*
 * test_safetensors.c — the safetensors reader and writer: round trips, half-precision conversions
 * against the compiler's _Float16, files written by Python (F32/F16/BF16), and every parse error path.
 */
#include <stdint.h>

#include <time.h>

#include "safetensors.h"
#include "test.h"

static void write_file(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
}

/* A file made of a header text and `data_len` zero bytes of tensor data. */
static void write_with_header(const char *path, const char *json, size_t data_len) {
    size_t h = strlen(json);
    unsigned char *buf = calloc(8 + h + data_len, 1);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, json, h);
    write_file(path, buf, 8 + h + data_len);
    free(buf);
}

TEST(roundtrip_f32_f16_meta) {
    float a[6] = {1, -2, 3.5f, 1e-3f, 65504, -0.0f}, b[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    ls_st_entry e[2] = {{"layer.a", a, 2, {2, 3}, 0}, {"layer.b", b, 1, {4}, 1}};
    const char *meta[4] = {"format", "pt", "teacher", "vits16"};
    char path[600];
    snprintf(path, sizeof path, "%s/rt.safetensors", test_tmpdir());
    ls_error err = {0};
    REQUIRE(ls_st_write(path, e, 2, meta, 2, NULL, &err) == LS_OK, "%s", err.msg);
    ls_st_file f;
    REQUIRE(ls_st_open(path, &f, &err) == LS_OK, "%s", err.msg);
    CHECK(f.ntensors == 2 && f.data_start % 8 == 0, "%d tensors, data at %zu", f.ntensors, f.data_start);
    const ls_st_tensor *ta = ls_st_find(&f, "layer.a"), *tb = ls_st_find(&f, "layer.b");
    REQUIRE(ta && tb, "tensors missing");
    CHECK(ta->ndim == 2 && ta->shape[0] == 2 && ta->shape[1] == 3 && ta->dtype == LS_ST_F32, "layer.a shape/type");
    CHECK(tb->dtype == LS_ST_F16 && tb->numel == 4, "layer.b type");
    float ra[6], rb[4];
    REQUIRE(ls_st_read_f32(&f, ta, ra, &err) == LS_OK && ls_st_read_f32(&f, tb, rb, &err) == LS_OK, "%s", err.msg);
    CHECK(memcmp(ra, a, sizeof a) == 0, "F32 values changed");
    for (int i = 0; i < 4; i++) CHECK(rb[i] == (float)(_Float16)b[i], "F16 value %d: %g", i, rb[i]);
    CHECK(ls_st_meta(&f, "teacher") && strcmp(ls_st_meta(&f, "teacher"), "vits16") == 0, "metadata");
    CHECK(ls_st_meta(&f, "nothing") == NULL, "absent metadata");
    ls_st_close(&f);
    CHECK(ls_st_write(path, e, 2, meta, 2, path, &err) == LS_ERR_INPUT, "overwrote a protected file");
}

/* Every half: our decoder against the compiler's; encoding round-trips; rounding of floats in between. */
TEST(half_precision_exact) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        _Float16 ref;
        uint16_t hh = (uint16_t)h;
        memcpy(&ref, &hh, 2);
        float want = (float)ref, got = ls_f16_to_f32(hh);
        if (want != want) {
            bad += got == got;
            continue;
        }
        bad += memcmp(&want, &got, 4) != 0;
        uint16_t back = ls_f32_to_f16(got);
        bad += back != hh;
    }
    CHECK(bad == 0, "%d of 65536 halves decode or re-encode wrongly", bad);
    unsigned s = 12345;
    int wrong = 0;
    for (int i = 0; i < 200000; i++) {
        s = s * 1103515245u + 12345u;
        uint32_t bits = s ^ (s << 13);
        float f;
        memcpy(&f, &bits, 4);
        if (f != f) continue;
        _Float16 r = (_Float16)f;
        uint16_t want;
        memcpy(&want, &r, 2);
        wrong += ls_f32_to_f16(f) != want;
    }
    CHECK(wrong == 0, "%d random floats round differently from the compiler", wrong);
    CHECK(ls_bf16_to_f32(0x3f80) == 1.0f && ls_bf16_to_f32(0xc040) == -3.0f, "bf16");
}

TEST(python_written_file) {
    if (!test_python_has("numpy")) SKIP("%s has no numpy (set LS_PYTHON)", test_python());
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "%s -c \"import sys; sys.path.insert(0, 'tests/ref'); from common import write_safetensors as w; import numpy as np; "
             "v = np.array([0.5, -1.25, 3.0, 1e-4, -2.0, 100.0]); "
             "w('%s/py32.safetensors', {'t': v.reshape(2, 3)}, {'a': 'b'}); "
             "w('%s/py16.safetensors', {'t': v.reshape(2, 3)}, None, 'F16'); "
             "w('%s/pybf.safetensors', {'t': v.reshape(2, 3)}, None, 'BF16')\"",
             test_python(), test_tmpdir(), test_tmpdir(), test_tmpdir());
    REQUIRE(system(cmd) == 0, "python writer failed");
    const char *names[3] = {"py32", "py16", "pybf"};
    float want[6] = {0.5f, -1.25f, 3.0f, 1e-4f, -2.0f, 100.0f};
    for (int k = 0; k < 3; k++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s.safetensors", test_tmpdir(), names[k]);
        ls_st_file f;
        ls_error err = {0};
        REQUIRE(ls_st_open(path, &f, &err) == LS_OK, "%s", err.msg);
        float got[6];
        const ls_st_tensor *t = ls_st_find(&f, "t");
        REQUIRE(t && t->numel == 6 && ls_st_read_f32(&f, t, got, &err) == LS_OK, "%s: %s", names[k], err.msg);
        for (int i = 0; i < 6; i++) {
            double tol = k == 0 ? 0 : k == 1 ? 1e-3 : 1e-2; /* fp16 / bf16 precision */
            CHECK(fabs(got[i] - want[i]) <= tol * fabs(want[i]), "%s[%d] = %g, want %g", names[k], i, got[i], want[i]);
        }
        ls_st_close(&f);
    }
}

/* The same conversions against numpy (tests/ref/f16_ref.py), with fresh random inputs each run. */
TEST(half_precision_matches_numpy) {
    if (!test_python_has("numpy")) SKIP("%s cannot import numpy (set LS_PYTHON)", test_python());
    unsigned seed = test_seed();
    char cmd[1024], path[600];
    snprintf(cmd, sizeof cmd, "%s tests/ref/f16_ref.py %s %u", test_python(), test_tmpdir(), seed);
    REQUIRE(system(cmd) == 0, "failed: %s", cmd);
    snprintf(path, sizeof path, "%s/h.f32", test_tmpdir());
    float *h = test_read_f32(path, 65536);
    REQUIRE(h, "missing %s", path);
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        float got = ls_f16_to_f32((uint16_t)i);
        bad += h[i] != h[i] ? got == got : memcmp(&got, &h[i], 4) != 0;
    }
    free(h);
    CHECK(bad == 0, "%d of 65536 halves decode differently from numpy", bad);
    snprintf(path, sizeof path, "%s/x.f32", test_tmpdir());
    struct stat st;
    REQUIRE(stat(path, &st) == 0, "missing %s", path);
    size_t n = (size_t)st.st_size / 4;
    float *x = test_read_f32(path, n);
    snprintf(path, sizeof path, "%s/x.f16", test_tmpdir());
    uint16_t *want = (uint16_t *)test_read_f32(path, n / 2);
    REQUIRE(x && want, "missing x.f32 / x.f16");
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t got = ls_f32_to_f16(x[i]);
        if (got != want[i] && wrong++ < 5) printf("  %a -> %04x, numpy %04x\n", (double)x[i], got, want[i]);
    }
    CHECK(wrong == 0, "%zu of %zu floats round to F16 differently from numpy (seed %u)", wrong, n, seed);
    free(x);
    free(want);
}

TEST(parse_errors) {
    struct {
        const char *what, *json, *needle;
        size_t data;
    } cases[] = {
        {"invalid JSON", "{\"a\": ", "not valid JSON", 0},
        {"header not an object", "[1, 2, 3]", "not a JSON object", 0},
        {"tensor not an object", "{\"a\": 5}", "'a' is not an object", 0},
        {"missing dtype", "{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", "'a' needs", 4},
        {"missing shape", "{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", "'a' needs", 4},
        {"missing offsets", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", "'a' needs", 4},
        {"one offset", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", "'a' needs", 4},
        {"unknown dtype", "{\"a\": {\"dtype\": \"Q8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", "unknown dtype 'Q8'", 1},
        {"too many dims", "{\"a\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}", "9 dimensions", 1},
        {"negative dim", "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", "invalid dimension", 4},
        {"non-integer dim", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", "invalid dimension", 4},
        {"shape overflow", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], \"data_offsets\": [0, 4]}}", "overflows", 4},
        {"reversed offsets", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", "invalid data_offsets", 4},
        {"negative offset", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", "invalid data_offsets", 4},
        {"past the data", "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", "past the 4 bytes", 4},
        {"size mismatch", "{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", "needs 12", 8},
        {"overlap", "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", "overlap", 12},
        /* an empty tensor sorted between two overlapping ones must not hide the overlap */
        {"overlap behind an empty tensor", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}, \"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 4]}, \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}", "'a' and 'b' overlap", 16},
        {"overlap inside a long tensor", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}, \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}, \"c\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [12, 16]}}", "overlap", 16},
        {"duplicate name", "{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}, \"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}", "not valid JSON", 2},
        {"metadata not an object", "{\"__metadata__\": [1]}", "__metadata__ is not an object", 0},
        {"metadata value not a string", "{\"__metadata__\": {\"k\": 1}}", "'k' is not a string", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char path[600];
        snprintf(path, sizeof path, "%s/bad%zu.safetensors", test_tmpdir(), i);
        write_with_header(path, cases[i].json, cases[i].data);
        ls_st_file f;
        ls_error err = {0};
        ls_status s = ls_st_open(path, &f, &err);
        CHECK(s == LS_ERR_INPUT, "%s: status %d", cases[i].what, s);
        CHECK(strstr(err.msg, path) && strstr(err.msg, cases[i].needle), "%s: message '%s'", cases[i].what, err.msg);
        if (s == LS_OK) ls_st_close(&f);
    }
    /* Length field problems. */
    char path[600];
    ls_st_file f;
    ls_error err = {0};
    snprintf(path, sizeof path, "%s/short.safetensors", test_tmpdir());
    write_file(path, "\x10\0\0", 3);
    CHECK(ls_st_open(path, &f, &err) == LS_ERR_INPUT && strstr(err.msg, "too short"), "3-byte file: %s", err.msg);
    unsigned char big[16] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}'};
    write_file(path, big, sizeof big);
    CHECK(ls_st_open(path, &f, &err) == LS_ERR_INPUT && strstr(err.msg, "does not fit"), "huge header: %s", err.msg);
    snprintf(path, sizeof path, "%s/missing.safetensors", test_tmpdir());
    CHECK(ls_st_open(path, &f, &err) == LS_ERR_INPUT && strstr(err.msg, path), "missing file: %s", err.msg);
    /* Integer tensors parse but do not convert to float. */
    snprintf(path, sizeof path, "%s/int.safetensors", test_tmpdir());
    write_with_header(path, "{\"i\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8);
    REQUIRE(ls_st_open(path, &f, &err) == LS_OK, "%s", err.msg);
    float out[2];
    CHECK(ls_st_read_f32(&f, ls_st_find(&f, "i"), out, &err) == LS_ERR_INPUT && strstr(err.msg, "'i'"), "I32 as float: %s", err.msg);
    CHECK(ls_st_source(&f, "i", out, 3, &err) == LS_ERR_INPUT && strstr(err.msg, "expected 3"), "wrong size: %s", err.msg);
    CHECK(ls_st_source(&f, "nope", out, 2, &err) == LS_TENSOR_MISSING, "missing tensor");
    ls_st_close(&f);
}

/* Shard sets: found across files, metadata from the first, a name in two files and a missing shard
 * refused with the file named. */
TEST(shard_sets) {
    char p[3][600];
    float x[4] = {1, 2, 3, 4};
    ls_error err = {0};
    for (int i = 0; i < 3; i++) {
        snprintf(p[i], sizeof p[i], "%s/model-%05d-of-00003.safetensors", test_tmpdir(), i + 1);
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        ls_st_entry e = {name, x, 1, {4}, i == 2};
        const char *meta[] = {"arch", "vits16"};
        REQUIRE(ls_st_write(p[i], &e, 1, meta, i == 0, NULL, &err) == LS_OK, "%s", err.msg);
    }
    ls_st_set s;
    REQUIRE(ls_st_set_open_model(p[0], &s, &err) == LS_OK, "%s", err.msg);
    CHECK(s.nfiles == 3, "%d files", s.nfiles);
    float r[4] = {0};
    CHECK(ls_st_set_source(&s, "t2", r, 4, &err) == LS_OK && r[3] == 4.0f, "t2 from shard 3: %s", err.msg);
    CHECK(ls_st_set_source(&s, "t9", r, 4, &err) == LS_TENSOR_MISSING, "absent tensor");
    CHECK(ls_st_set_source(&s, "t1", r, 5, &err) == LS_ERR_INPUT && strstr(err.msg, p[1]), "wrong size: %s", err.msg);
    CHECK(ls_st_set_meta(&s, "arch") && strcmp(ls_st_set_meta(&s, "arch"), "vits16") == 0, "metadata of shard 1");
    ls_st_set_close(&s);
    /* naming any shard opens the series; a plain file is a set of one */
    REQUIRE(ls_st_set_open_model(p[1], &s, &err) == LS_OK && s.nfiles == 3, "from shard 2: %s", err.msg);
    ls_st_set_close(&s);
    char plain[600];
    snprintf(plain, sizeof plain, "%s/plain-00001-of-x.safetensors", test_tmpdir());
    ls_st_entry e = {"p", x, 1, {4}, 0};
    REQUIRE(ls_st_write(plain, &e, 1, NULL, 0, NULL, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_st_set_open_model(plain, &s, &err) == LS_OK && s.nfiles == 1, "plain file: %s", err.msg);
    ls_st_set_close(&s);
    const char *twice[2] = {p[0], p[0]};
    CHECK(ls_st_set_open(twice, 2, &s, &err) == LS_ERR_INPUT && strstr(err.msg, "'t0' is also in"), "duplicate: %s",
          err.msg);
    remove(p[2]);
    CHECK(ls_st_set_open_model(p[0], &s, &err) == LS_ERR_INPUT && strstr(err.msg, "00003-of-00003"), "missing shard: %s",
          err.msg);
}

int main(void) {
    RUN(roundtrip_f32_f16_meta);
    RUN(half_precision_exact);
    RUN(half_precision_matches_numpy);
    RUN(python_written_file);
    RUN(parse_errors);
    RUN(shard_sets);
    return test_summary();
}
