/*
 * test_safetensors.c — the safetensors reader/writer: round trips, every header error path (each
 * must give LS_ERR_INPUT naming the file and, where one is at fault, the tensor), shard sets, and a
 * file written by Python (tests/ref/st_write.py) with numpy's F16/BF16 conversions as reference.
 */
#include <stdint.h>
#include <time.h>

#include "safetensors.h"
#include "test.h"
#include "util.h"

static unsigned seed_;

static float frand(void) { return (float)rand_r(&seed_) / (float)RAND_MAX * 2.0f - 1.0f; }

/* A file image: u64 header length + json + data bytes of `ndata` zeros. */
static unsigned char *make_file(const char *json, size_t ndata, size_t *n) {
    size_t hl = strlen(json);
    *n = 8 + hl + ndata;
    unsigned char *b = calloc(*n + 1, 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, hl);
    return b;
}

/* Expects the image to be rejected with LS_ERR_INPUT and a message containing every `want`. */
static void expect_reject(const unsigned char *b, size_t n, const char *what, const char *want1,
                          const char *want2) {
    ls_st_file f;
    ls_error err = {0};
    ls_status st = ls_st_open_memory(b, n, "bad.safetensors", &f, &err);
    CHECK(st == LS_ERR_INPUT, "%s: status %d (msg '%s')", what, st, err.msg);
    CHECK(strstr(err.msg, "bad.safetensors") != NULL, "%s: message lacks the file: '%s'", what, err.msg);
    if (want1) CHECK(strstr(err.msg, want1) != NULL, "%s: message lacks '%s': '%s'", what, want1, err.msg);
    if (want2) CHECK(strstr(err.msg, want2) != NULL, "%s: message lacks '%s': '%s'", what, want2, err.msg);
    if (st == LS_OK) ls_st_close(&f);
}

static void reject_json(const char *json, size_t ndata, const char *what, const char *w1, const char *w2) {
    size_t n;
    unsigned char *b = make_file(json, ndata, &n);
    expect_reject(b, n, what, w1, w2);
    free(b);
}

TEST(error_paths) {
    unsigned char shortb[5] = {1, 0, 0, 0, 0};
    expect_reject(shortb, sizeof shortb, "truncated header length", "too short", NULL);
    size_t n;
    unsigned char *b = make_file("{}", 0, &n);
    b[0] = 200; /* header longer than the file */
    expect_reject(b, n, "header longer than file", "longer than the file", NULL);
    b[0] = 0; b[5] = 1; /* 2^40: absurd */
    expect_reject(b, n, "absurd header length", "exceeds", NULL);
    free(b);
    reject_json("{\"a\": {", 0, "invalid JSON", "not valid JSON", NULL);
    reject_json("[1,2]", 0, "non-object", "not a JSON object", NULL);
    reject_json("{\"t1\": 5}", 0, "entry not object", "t1", NULL);
    reject_json("{\"t1\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "missing dtype", "t1", "dtype");
    reject_json("{\"t1\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, "missing shape", "t1", "shape");
    reject_json("{\"t1\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, "missing offsets", "t1", "data_offsets");
    reject_json("{\"t1\": {\"dtype\": \"Q7\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "bad dtype", "t1",
                "unknown dtype");
    reject_json("{\"t1\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 4,
                "offsets out of range", "t1", "outside");
    reject_json("{\"t1\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", 4,
                "begin > end", "t1", "outside");
    reject_json("{\"t1\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4,
                "negative offset", "t1", "outside");
    reject_json("{\"t1\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 8, "size mismatch",
                "t1", "need 8");
    reject_json("{\"t1\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                " \"t2\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                12, "overlapping", "overlaps", "t1");
    reject_json("{\"t1\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4, "negative dim",
                "t1", "shape[0]");
    reject_json("{\"t1\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4,
                "non-integer dim", "t1", "shape[0]");
    reject_json("{\"t1\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4], \"data_offsets\": [0, 4]}}",
                4, "shape overflow", "t1", "overflow");
    reject_json("{\"t1\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}", 4,
                "too many dims", "t1", "dims");
    reject_json("{\"t1\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                " \"t1\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
                4, "duplicate keys", "JSON", "t1");
    reject_json("{\"__metadata__\": {\"k\": 3}}", 0, "metadata not string", "metadata", "'k'");
    reject_json("{\"__metadata__\": [1]}", 0, "metadata not object", "__metadata__", NULL);
}

TEST(accepts_edge_cases) {
    /* zero-size tensors may share an offset; a scalar has shape []; non-float dtypes open. */
    size_t n;
    unsigned char *b = make_file("{\"e1\": {\"dtype\": \"F32\", \"shape\": [0, 3], \"data_offsets\": [0, 0]},"
                                 " \"e2\": {\"dtype\": \"F16\", \"shape\": [4, 0], \"data_offsets\": [0, 0]},"
                                 " \"s\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]},"
                                 " \"i\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [4, 12]}}",
                                 12, &n);
    ls_st_file f;
    ls_error err = {0};
    REQUIRE(ls_st_open_memory(b, n, "edge", &f, &err) == LS_OK, "%s", err.msg);
    CHECK(f.ntensors == 4, "%d tensors", f.ntensors);
    float v = 1;
    CHECK(ls_st_get_f32(&f, "s", NULL, 0, &v, &err) == LS_OK && v == 0.0f, "scalar %g %s", v, err.msg);
    CHECK(ls_st_get_f32(&f, "i", NULL, 0, &v, &err) == LS_ERR_INPUT && strstr(err.msg, "'i'"), "I64 as f32: %s",
          err.msg);
    CHECK(ls_st_get_f32(&f, "zz", NULL, 0, &v, &err) == LS_ERR_INPUT && strstr(err.msg, "'zz'"), "missing: %s",
          err.msg);
    int64_t want[1] = {2};
    CHECK(ls_st_get_f32(&f, "s", want, 1, &v, &err) == LS_ERR_INPUT && strstr(err.msg, "expected [2]"),
          "shape check: %s", err.msg);
    ls_st_close(&f);
    free(b);
}

TEST(round_trip) {
    const char *dir = test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", dir);
    enum { N1 = 3 * 5 * 7, N2 = 64 };
    float a[N1], h[N2];
    for (int i = 0; i < N1; i++) a[i] = frand() * 100.0f;
    for (int i = 0; i < N2; i++) h[i] = frand();
    h[0] = 70000.0f; /* beyond fp16: inf */
    h[1] = 1e-8f;    /* rounds to fp16 zero */
    ls_st_entry e[3] = {{"w.a", LS_ST_F32, 3, {3, 5, 7}, a}, {"w.h", LS_ST_F16, 2, {8, 8}, h},
                        {"empty", LS_ST_F32, 1, {0}, a}};
    const char *meta[] = {"format", "pt", "arch", "vit_small"};
    ls_error err = {0};
    REQUIRE(ls_st_write(path, e, 3, meta, 2, NULL, &err) == LS_OK, "%s", err.msg);
    ls_st_file f;
    REQUIRE(ls_st_open(path, &f, &err) == LS_OK, "%s", err.msg);
    size_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | f.buf[i];
    CHECK((8 + hl) % 8 == 0, "data not 8-aligned: header %zu", hl);
    CHECK(ls_st_meta(&f, "arch") && strcmp(ls_st_meta(&f, "arch"), "vit_small") == 0, "meta arch");
    CHECK(ls_st_meta(&f, "format") && strcmp(ls_st_meta(&f, "format"), "pt") == 0, "meta format");
    CHECK(ls_st_meta(&f, "nope") == NULL, "absent meta");
    float ra[N1], rh[N2];
    int64_t sa[3] = {3, 5, 7}, sh[2] = {8, 8};
    CHECK(ls_st_get_f32(&f, "w.a", sa, 3, ra, &err) == LS_OK && memcmp(a, ra, sizeof a) == 0, "f32 round trip");
    CHECK(ls_st_get_f32(&f, "w.h", sh, 2, rh, &err) == LS_OK, "%s", err.msg);
    CHECK(isinf(rh[0]) && rh[1] == 0.0f, "fp16 overflow/underflow: %g %g", rh[0], rh[1]);
    double m = 0;
    for (int i = 2; i < N2; i++) m = fmax(m, fabs(rh[i] - h[i]) / fmax(fabs(h[i]), 6.1e-5));
    CHECK(m <= 1.0 / 2048, "fp16 rel err %g > 2^-11", m);
    CHECK(ls_st_find(&f, "empty") && ls_st_find(&f, "empty")->nbytes == 0, "empty tensor");
    ls_st_close(&f);
    CHECK(ls_st_write(path, e, 3, meta, 2, path, &err) == LS_ERR_INPUT, "protect ignored");
}

TEST(shards) {
    const char *dir = test_tmpdir();
    char p[3][512];
    float x[4] = {1, 2, 3, 4};
    ls_error err = {0};
    for (int i = 0; i < 3; i++) {
        snprintf(p[i], sizeof p[i], "%s/model-%05d-of-00003.safetensors", dir, i + 1);
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        ls_st_entry e = {name, LS_ST_F32, 1, {4}, x};
        const char *meta[] = {"format", "pt"};
        REQUIRE(ls_st_write(p[i], &e, 1, meta, i == 0, NULL, &err) == LS_OK, "%s", err.msg);
    }
    ls_st_set s;
    REQUIRE(ls_st_set_open_model(p[0], &s, &err) == LS_OK, "%s", err.msg);
    CHECK(s.nfiles == 3, "%d files", s.nfiles);
    float r[4];
    CHECK(ls_st_set_get_f32(&s, "t2", NULL, 0, r, &err) == LS_OK && r[3] == 4.0f, "t2 from shard 3");
    CHECK(ls_st_set_meta(&s, "format") != NULL, "meta from shard 1");
    CHECK(ls_st_set_get_f32(&s, "t9", NULL, 0, r, &err) == LS_ERR_INPUT, "missing tensor");
    ls_st_set_close(&s);
    /* the same tensor name in two files is refused */
    const char *two[2] = {p[0], p[0]};
    CHECK(ls_st_set_open(two, 2, &s, &err) == LS_ERR_INPUT && strstr(err.msg, "'t0'"), "duplicate: %s", err.msg);
    remove(p[2]);
    CHECK(ls_st_set_open_model(p[0], &s, &err) == LS_ERR_INPUT && strstr(err.msg, "00003-of"),
          "missing shard: %s", err.msg);
}

static float *read_f32(const char *dir, const char *name, size_t *n) {
    char path[512], *buf;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ls_error err;
    if (ls_read_file(path, (size_t)1 << 30, &buf, n, &err)) return NULL;
    *n /= 4;
    return (float *)buf;
}

static int run_python(const char *script, const char *dir, unsigned seed) {
    const char *py = getenv("LS_PYTHON");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s -c 'import numpy' 2>/dev/null", py ? py : "/usr/bin/python3");
    if (system(cmd) != 0) return -1;
    snprintf(cmd, sizeof cmd, "%s %s %s %u", py ? py : "/usr/bin/python3", script, dir, seed);
    return system(cmd) == 0 ? 0 : 1;
}

static int same_f32(float a, float b) { return (isnan(a) && isnan(b)) || memcmp(&a, &b, 4) == 0; }

TEST(python_file) {
    const char *dir = test_tmpdir();
    int rc = run_python("tests/ref/st_write.py", dir, seed_);
    if (rc < 0) SKIP("numpy not importable by /usr/bin/python3 (set LS_PYTHON)");
    REQUIRE(rc == 0, "st_write.py failed");
    char path[512];
    snprintf(path, sizeof path, "%s/py.safetensors", dir);
    ls_st_file f;
    ls_error err = {0};
    REQUIRE(ls_st_open(path, &f, &err) == LS_OK, "%s", err.msg);
    CHECK(ls_st_meta(&f, "format") && strcmp(ls_st_meta(&f, "format"), "pt") == 0, "meta");
    const char *names[3] = {"a", "h", "b"}, *refs[3] = {"a.f32", "h.f32", "b.f32"};
    for (int k = 0; k < 3; k++) {
        size_t n;
        float *ref = read_f32(dir, refs[k], &n);
        const ls_st_tensor *t = ls_st_find(&f, names[k]);
        REQUIRE(ref && t && t->nelem == n, "%s: tensor or reference missing", names[k]);
        float *got = malloc(n * sizeof *got);
        CHECK(ls_st_tensor_f32(&f, t, got, &err) == LS_OK, "%s", err.msg);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += !same_f32(got[i], ref[i]);
        CHECK(bad == 0, "%s (%s): %zu of %zu values differ from numpy", names[k], ls_st_dtype_name(t->dtype), bad, n);
        free(got);
        free(ref);
    }
    ls_st_close(&f);
    /* float32 -> float16 rounding against numpy's astype */
    size_t nx, nh;
    float *x = read_f32(dir, "x.f32", &nx);
    uint16_t *h = (uint16_t *)read_f32(dir, "x.f16", &nh);
    REQUIRE(x && h && nh * 2 == nx, "x references");
    size_t bad = 0;
    for (size_t i = 0; i < nx; i++) {
        uint16_t g = ls_f32_to_f16(x[i]);
        int both_nan = isnan(x[i]) && (g & 0x7c00) == 0x7c00 && (g & 0x3ff) && (h[i] & 0x3ff);
        if (g != h[i] && !both_nan && bad++ < 5) printf("  f32 %a -> f16 %04x, numpy %04x\n", x[i], g, h[i]);
    }
    CHECK(bad == 0, "%zu of %zu f32->f16 conversions differ from numpy", bad, nx);
    free(x);
    free(h);
}

int main(void) {
    seed_ = (unsigned)time(NULL);
    printf("seed %u\n", seed_);
    RUN(error_paths);
    RUN(accepts_edge_cases);
    RUN(round_trip);
    RUN(shards);
    RUN(python_file);
    return test_summary();
}
