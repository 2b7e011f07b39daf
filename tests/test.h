/*
 * test.h — the minimal test framework every tests/test_*.c uses.
 *
 * A test binary defines tests with TEST(name) { ... CHECK(cond, fmt, ...); ... }, lists them in
 * main() with RUN(name), and ends with `return test_summary();`. Each CHECK failure prints the file,
 * line and message; a test passes when none of its CHECKs failed, and SKIP(...) marks it skipped with
 * a reason (missing shared data, missing PyTorch). The binary's last line is "RESULT p f s", which
 * tests/run.sh adds up into the suite's closing "N passed, N failed, N skipped".
 */
#ifndef LS_TEST_H
#define LS_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int pass, fail, skip;
    int cur_failed, cur_skipped;
    const char *cur_name;
    char tmpdir[256]; /* test_tmpdir's directory, once made */
} test_state;

static test_state T;

#define TEST(name) static void name(void)

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            T.cur_failed++;                                                           \
            fprintf(stdout, "  %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            fprintf(stdout, __VA_ARGS__);                                             \
            fputc('\n', stdout);                                                      \
        }                                                                             \
    } while (0)

/* Like CHECK but leaves the test at once (for checks later code depends on). */
#define REQUIRE(cond, ...)                 \
    do {                                   \
        int before_ = T.cur_failed;        \
        CHECK(cond, __VA_ARGS__);          \
        if (T.cur_failed != before_) return; \
    } while (0)

#define SKIP(...)                                             \
    do {                                                      \
        T.cur_skipped = 1;                                    \
        fprintf(stdout, "  skip %s: ", T.cur_name);           \
        fprintf(stdout, __VA_ARGS__);                         \
        fputc('\n', stdout);                                  \
        return;                                               \
    } while (0)

#define RUN(name)                                                            \
    do {                                                                     \
        if (getenv("LS_TEST_ONLY") && !strstr(#name, getenv("LS_TEST_ONLY"))) \
            break; /* a developer's filter: run only the named tests */       \
        T.cur_failed = 0; T.cur_skipped = 0; T.cur_name = #name;             \
        fflush(stdout);                                                      \
        name();                                                              \
        if (T.cur_failed) { T.fail++; printf("FAIL %s\n", #name); }          \
        else if (T.cur_skipped) { T.skip++; }                                \
        else { T.pass++; printf("ok   %s\n", #name); }                        \
        fflush(stdout);                                                      \
    } while (0)

/* rm -rf DIR, run without a shell (no quoting of $TMPDIR to get wrong); 0 on success. (Not readdir:
 * <dirent.h>'s DT_UNKNOWN clashes with nifti1.h's, which test_volume includes.) */
static inline int test_remove_tree(const char *dir) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", "--", dir, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* The scratch directory goes when every test passed (each `make check` would otherwise leave up to
 * hundreds of MB in $TMPDIR); a failure, or LS_TEST_KEEP=1, keeps it for a look and says where. */
static inline int test_summary(void) {
    if (T.tmpdir[0]) {
        const char *keep = getenv("LS_TEST_KEEP");
        if (T.fail || (keep && strcmp(keep, "0")))
            printf("  scratch files kept in %s\n", T.tmpdir);
        else if (test_remove_tree(T.tmpdir))
            printf("  could not remove all of %s\n", T.tmpdir);
    }
    printf("RESULT %d %d %d\n", T.pass, T.fail, T.skip);
    return T.fail ? 1 : 0;
}

/* ../shared/data, or $LIVSEG_DATA; NULL when absent (tests then SKIP saying so). */
static inline const char *test_data_dir(void) {
    const char *d = getenv("LIVSEG_DATA");
    if (!d) d = "../shared/data";
    struct stat st;
    return stat(d, &st) == 0 && S_ISDIR(st.st_mode) ? d : NULL;
}

/* A fresh scratch directory under $TMPDIR for this binary's files (removed by test_summary). */
static inline const char *test_tmpdir(void) {
    if (!T.tmpdir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(T.tmpdir, sizeof T.tmpdir, "%s/livseg-test-XXXXXX", t ? t : "/tmp");
        if (!mkdtemp(T.tmpdir)) { perror("mkdtemp"); exit(2); }
    }
    return T.tmpdir;
}

/* The seed of a run's fresh random inputs: $LS_SEED when set (to repeat a failed run: every test that
 * draws one prints it), else the clock. */
static inline unsigned test_seed(void) {
    const char *env = getenv("LS_SEED");
    unsigned seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
    printf("  seed %u (LS_SEED=%u repeats this run)\n", seed, seed);
    return seed;
}

/* The Python with the references' packages: $LS_PYTHON, else Debian's /usr/bin/python3. */
static inline const char *test_python(void) {
    const char *p = getenv("LS_PYTHON");
    return p ? p : "/usr/bin/python3";
}

/* 1 when `import MODULES` (comma-separated) works in test_python(). */
static inline int test_python_has(const char *modules) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s -c 'import %s' > /dev/null 2>&1", test_python(), modules);
    return system(cmd) == 0;
}

/* Reads n float32 values from a raw file; returns a malloc'd buffer or NULL. */
static inline float *test_read_f32(const char *path, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    float *buf = malloc(n * sizeof(float) + 1);
    size_t got = fread(buf, sizeof(float), n + 1, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* The livseg binary beside a test binary: BUILD/tests/test_x -> BUILD/livseg. */
static inline void test_livseg_path(const char *argv0, char *out, size_t n) {
    const char *slash = strrchr(argv0, '/');
    if (slash) snprintf(out, n, "%.*s/../livseg", (int)(slash - argv0), argv0);
    else snprintf(out, n, "../livseg");
}

/* Runs `livseg ARGS`; stdout goes to a file in the scratch directory, stderr into err_out (n bytes).
 * Returns the exit status (-1 if it did not exit normally). */
static inline int test_run_livseg(const char *livseg, const char *args, char *err_out, size_t n) {
    char cmd[8192], errf[512];
    snprintf(errf, sizeof errf, "%s/stderr.txt", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s %s > %s/stdout.txt 2> %s", livseg, args, test_tmpdir(), errf);
    int st = system(cmd);
    if (err_out) {
        err_out[0] = 0;
        FILE *f = fopen(errf, "r");
        if (f) {
            size_t got = fread(err_out, 1, n - 1, f);
            err_out[got] = 0;
            fclose(f);
        }
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Seconds on a monotonic clock (timings printed by tests, never asserted). */
static inline double ls_now_for_tests(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Max |a-b| / max(|b|, floor) over n values: the relative error used against PyTorch references. */
static inline double test_max_rel_err(const float *a, const float *b, size_t n, double floor) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        double s = fabs((double)b[i]);
        double r = d / (s > floor ? s : floor);
        if (r > m || r != r) m = r != r ? INFINITY : r;
    }
    return m;
}

#endif
