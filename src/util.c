/* util.c — see util.h. */
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

ls_status ls_fail(ls_error *err, ls_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

_Noreturn void ls_die_internal(const char *file, int line, const char *what) {
    fprintf(stderr, "livseg: internal error at %s:%d: %s\n", file, line, what);
    abort();
}

void *ls_calloc(size_t n, size_t size, ls_error *err) {
    if (size && n > SIZE_MAX / size) {
        ls_fail(err, LS_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", n, size);
        return NULL;
    }
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) ls_fail(err, LS_ERR_NOMEM, "out of memory allocating %zu bytes", n * size);
    return p;
}

void *ls_xmalloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "livseg: out of memory (%zu bytes) at %s:%d\n", n, file, line);
        exit(4);
    }
    return p;
}

double ls_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t ls_machine_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : SIZE_MAX;
}

int ls_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int ls_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (!a || !b || stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The directory part of `path` resolved (symbolic links, "."), into out; its last component into *base. */
static int resolve_dir(const char *path, char *out, const char **base) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path + (slash == path)) : 1, slash ? path : ".");
    *base = slash ? slash + 1 : path;
    return realpath(dir, out) != NULL;
}

int ls_same_target(const char *a, const char *b) {
    if (!a || !b) return 0;
    if (!strcmp(a, b) || ls_same_file(a, b)) return 1;
    char ra[PATH_MAX], rb[PATH_MAX];
    const char *ba, *bb;
    return resolve_dir(a, ra, &ba) && resolve_dir(b, rb, &bb) && !strcmp(ra, rb) && !strcmp(ba, bb);
}

/* The part of a file name that carries its format: ".nii.gz", ".nii", ".json", ... */
static const char *format_suffix(const char *base) {
    static const char *multi[] = {".nii.gz", ".tar.gz"};
    for (size_t i = 0; i < sizeof multi / sizeof *multi; i++)
        if (ls_ends_with(base, multi[i])) return base + strlen(base) - strlen(multi[i]);
    const char *dot = strrchr(base, '.');
    return dot ? dot : base + strlen(base);
}

ls_status ls_atomic_begin(ls_atomic *a, const char *path, const char *protect, ls_error *err) {
    if (strlen(path) >= sizeof a->final_path - 64)
        return ls_fail(err, LS_ERR_INPUT, "%s: output path too long", path);
    if (ls_same_target(path, protect))
        return ls_fail(err, LS_ERR_INPUT, "%s: refusing to write over the input", path);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return ls_fail(err, LS_ERR_INPUT, "%s: output path is a directory", path);
    snprintf(a->final_path, sizeof a->final_path, "%s", path);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    int dirlen = (int)(base - path);
    const char *suffix = format_suffix(base);
    int stemlen = (int)(suffix - base);
    /* Unique per process and per call: pid plus a stack address (no global counter). */
    snprintf(a->tmp_path, sizeof a->tmp_path, "%.*s.%.*s.tmp%ld-%lx%s", dirlen, path, stemlen, base,
             (long)getpid(), (unsigned long)(uintptr_t)a & 0xfffffful, suffix);
    FILE *probe = fopen(a->tmp_path, "wb");
    if (!probe)
        return ls_fail(err, LS_ERR_IO, "%s: cannot create output (%s)", path, strerror(errno));
    fclose(probe);
    return LS_OK;
}

ls_status ls_atomic_commit(ls_atomic *a, ls_error *err) {
    if (rename(a->tmp_path, a->final_path) != 0) {
        int e = errno;
        unlink(a->tmp_path);
        return ls_fail(err, LS_ERR_IO, "%s: cannot rename temporary file into place (%s)",
                       a->final_path, strerror(e));
    }
    return LS_OK;
}

void ls_atomic_abort(ls_atomic *a) { unlink(a->tmp_path); }

ls_status ls_output_check(const char *path, ls_error *err) {
    ls_atomic a;
    LS_TRY(ls_atomic_begin(&a, path, NULL, err));
    ls_atomic_abort(&a);
    return LS_OK;
}

ls_status ls_write_file_atomic(const char *path, const void *buf, size_t n, const char *protect,
                               ls_error *err) {
    ls_atomic a;
    LS_TRY(ls_atomic_begin(&a, path, protect, err));
    FILE *f = fopen(a.tmp_path, "wb");
    int ok = f && fwrite(buf, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) {
        ls_atomic_abort(&a);
        return ls_fail(err, LS_ERR_IO, "%s: write failed (%s)", path, strerror(errno));
    }
    return ls_atomic_commit(&a, err);
}

ls_status ls_read_file(const char *path, size_t max_bytes, char **buf, size_t *n, ls_error *err) {
    *buf = NULL;
    *n = 0;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return ls_fail(err, LS_ERR_INPUT, "%s: is a directory, not a file", path);
    FILE *f = fopen(path, "rb");
    if (!f) return ls_fail(err, LS_ERR_INPUT, "%s: cannot open (%s)", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return ls_fail(err, LS_ERR_INPUT, "%s: not a regular file", path);
    }
    long len = ftell(f);
    if (len < 0 || (size_t)len > max_bytes) {
        fclose(f);
        return ls_fail(err, LS_ERR_INPUT, "%s: size %ld is outside 0..%zu bytes", path, len, max_bytes);
    }
    rewind(f);
    char *p = ls_calloc((size_t)len + 1, 1, err);
    if (!p) {
        fclose(f);
        return LS_ERR_NOMEM;
    }
    size_t got = fread(p, 1, (size_t)len, f);
    fclose(f);
    if (got != (size_t)len) {
        free(p);
        return ls_fail(err, LS_ERR_IO, "%s: short read", path);
    }
    *buf = p;
    *n = got;
    return LS_OK;
}

ls_status ls_make_dir(const char *dir, const char *what, ls_error *err) {
    struct stat st;
    if (mkdir(dir, 0777) == 0) return LS_OK;
    if (errno != EEXIST)
        return ls_fail(err, LS_ERR_IO, "%s: cannot create the %s directory: %s", dir, what, strerror(errno));
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return ls_fail(err, LS_ERR_INPUT, "%s: exists and is not a directory (the %s directory)", dir, what);
    return LS_OK;
}

ls_status ls_run_dir_open(const char *dir, const char *state_name, int resume, int *created, ls_error *err) {
    char state[4200];
    struct stat st;
    snprintf(state, sizeof state, "%s/%s", dir, state_name);
    *created = stat(dir, &st) != 0;
    int has_state = !*created && stat(state, &st) == 0;
    if (!resume && has_state)
        return ls_fail(err, LS_ERR_INPUT, "%s: holds a run already (%s); continue it with --resume, or give another -o",
                       dir, state_name);
    if (resume && *created)
        return ls_fail(err, LS_ERR_INPUT, "%s: no such directory to resume (expected %s in it)", dir, state_name);
    return ls_make_dir(dir, "output", err);
}

void ls_run_dir_abandon(const char *dir, int created) {
    if (created) rmdir(dir);
}
