/*
 * util.h — small internal helpers shared by every module: error reporting, checked allocation,
 * monotonic time, atomic file output, and same-file checks. Nothing here holds global state.
 *
 * Error idiom (the whole library follows it):
 *     ls_status st = something(..., err);
 *     if (st) return st;                       // or LS_TRY(something(..., err));
 *     return ls_fail(err, LS_ERR_INPUT, "%s: dims %lld exceed 4096", path, n);
 */
#ifndef LS_UTIL_H
#define LS_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "livseg.h"

#if defined(__GNUC__)
#define LS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LS_PRINTF(a, b)
#endif

/* Fills `err` (may be NULL) and returns `code`. */
ls_status ls_fail(ls_error *err, ls_status code, const char *fmt, ...) LS_PRINTF(3, 4);

/* Propagates a failure from a call that already filled err. */
#define LS_TRY(expr)                      \
    do {                                  \
        ls_status ls_try_st_ = (expr);    \
        if (ls_try_st_ != LS_OK) return ls_try_st_; \
    } while (0)

/* Called as long work proceeds (done of total: slices, files); may be NULL. */
typedef void (*ls_progress_fn)(void *ctx, int64_t done, int64_t total);

/* Bugs, not user errors: abort with file and line. */
#define LS_ASSERT(cond)                                                             \
    do {                                                                            \
        if (!(cond)) ls_die_internal(__FILE__, __LINE__, #cond);                    \
    } while (0)
#ifdef __cplusplus
[[noreturn]]
#else
_Noreturn
#endif
void ls_die_internal(const char *file, int line, const char *what);

/* calloc that reports the size it could not get. n*size overflow is a failure, not a wrap. */
void *ls_calloc(size_t n, size_t size, ls_error *err);
#define LS_CALLOC(ptr, n, err)                                                  \
    do {                                                                        \
        (ptr) = ls_calloc((n), sizeof *(ptr), (err));                           \
        if (!(ptr)) return LS_ERR_NOMEM;                                        \
    } while (0)

/* Aborting allocation for tools and tests, where failure is not recoverable; carries file:line. */
void *ls_xmalloc_at(size_t n, const char *file, int line);
#define ls_xmalloc(n) ls_xmalloc_at((n), __FILE__, __LINE__)

/* Seconds on a monotonic clock. */
double ls_now(void);

/* The machine's memory in bytes (SIZE_MAX when unknown): Linux grants more (overcommit), and the process
 * dies in the OOM killer once it touches it, so allocations that could never fit are refused up front. */
size_t ls_machine_bytes(void);

/* Atomic output: write everything to the temporary path from ls_atomic_begin, then ls_atomic_commit
 * renames it over `path` (or ls_atomic_abort removes it). The temporary lives in the same directory
 * and keeps the final suffix (".nii.gz" etc.) so libraries that choose a format by name still do. */
typedef struct {
    char final_path[4096];
    char tmp_path[4096];
} ls_atomic;
ls_status ls_atomic_begin(ls_atomic *a, const char *path, const char *protect, ls_error *err);
ls_status ls_atomic_commit(ls_atomic *a, ls_error *err);
void ls_atomic_abort(ls_atomic *a);

/* Checks, before long work, that `path` can be written as an output: not a directory, its directory
 * exists and takes a new file (a temporary is created there and removed). Same errors as ls_atomic_begin. */
ls_status ls_output_check(const char *path, ls_error *err);

/* Writes a whole buffer to `path` atomically. */
ls_status ls_write_file_atomic(const char *path, const void *buf, size_t n, const char *protect,
                               ls_error *err);
/* Reads a whole file (at most max_bytes) into a malloc'd buffer with a NUL appended. */
ls_status ls_read_file(const char *path, size_t max_bytes, char **buf, size_t *n, ls_error *err);

/* Creates a directory unless it exists (its parent must); `what` names it in the error ("output",
 * "feature cache"). A path that exists and is not a directory is an input error. */
ls_status ls_make_dir(const char *dir, const char *what, ls_error *err);

/* The output directory of a resumable run whose state is dir/state_name: a new run (resume 0) may not
 * start over one that is there (its files would be replaced); a resume needs it. Creates dir when
 * absent and sets *created, for ls_run_dir_abandon. */
ls_status ls_run_dir_open(const char *dir, const char *state_name, int resume, int *created, ls_error *err);
/* After a failed run: removes dir when this run created it and left nothing in it (rmdir fails otherwise). */
void ls_run_dir_abandon(const char *dir, int created);

/* 1 when both paths name the same existing file (inode), else 0. */
int ls_same_file(const char *a, const char *b);
/* 1 when two paths name one file, existing or not: the same inode, or the same name in the same directory
 * ("x" and "./x", or through a symbolic link to the directory). For outputs that do not exist yet. */
int ls_same_target(const char *a, const char *b);

/* Suffix test, case-sensitive. */
int ls_ends_with(const char *s, const char *suffix);

#endif
