/*
 * safetensors.h — reading and writing the safetensors format (model weights and checkpoints).
 *
 * Format: 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string", ...}}
 * then the byte buffer; offsets are relative to the first byte after the header.
 *
 * Contract
 *  - ls_st_open / ls_st_open_memory validate the whole header up front, so every tensor of an open
 *    file is in bounds and well-formed; a malformed file fails with LS_ERR_INPUT and one line naming
 *    the file and (where one is at fault) the tensor. Checks: header length vs file size and vs
 *    LS_ST_MAX_HEADER, JSON syntax, duplicate keys, object types, dtype name, shape dims >= 0 with no
 *    overflow of their product, data_offsets in range with begin <= end and end-begin equal to
 *    prod(shape)*dtype size, no two tensors overlapping, metadata values strings.
 *  - All listed dtypes are accepted at open; only F32/F16/BF16 convert to float (ls_st_get_f32
 *    fails with LS_ERR_INPUT for the others). Conversions are exact (subnormals, inf, nan).
 *  - An ls_st_file owns a private copy of the bytes; tensors' `data` point into it (not aligned: read
 *    with memcpy) and stay valid until ls_st_close. Files are limited to LS_ST_MAX_FILE bytes.
 *  - Models larger than one file (the project keeps each file < 16 MiB) are split into shards; an
 *    ls_st_set searches several files as one, refusing a tensor name present in two shards.
 */
#ifndef LS_SAFETENSORS_H
#define LS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "livseg.h"

#define LS_ST_MAX_DIMS 8
#define LS_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
#define LS_ST_MAX_FILE ((size_t)4 << 30)

typedef enum {
    LS_ST_F32, LS_ST_F16, LS_ST_BF16, LS_ST_F64,
    LS_ST_I64, LS_ST_I32, LS_ST_I16, LS_ST_I8, LS_ST_U8, LS_ST_BOOL,
    LS_ST_NDTYPE
} ls_st_dtype;

const char *ls_st_dtype_name(ls_st_dtype t);
size_t ls_st_dtype_size(ls_st_dtype t);

typedef struct {
    char *name;
    ls_st_dtype dtype;
    int ndim;
    int64_t shape[LS_ST_MAX_DIMS];
    size_t nelem;
    size_t nbytes;
    const void *data;   /* nbytes bytes inside the file's buffer, possibly unaligned */
} ls_st_tensor;

typedef struct {
    char *path;         /* the name used in error messages */
    unsigned char *buf; /* whole file */
    size_t size;
    ls_st_tensor *tensors; /* in header order */
    int ntensors;
    char **meta;        /* 2*nmeta strings: key0, value0, key1, value1, ... */
    int nmeta;
} ls_st_file;

ls_status ls_st_open(const char *path, ls_st_file *f, ls_error *err);
/* Parses a copy of buf[0..n); name_for_errors names it in messages. */
ls_status ls_st_open_memory(const void *buf, size_t n, const char *name_for_errors, ls_st_file *f,
                            ls_error *err);
void ls_st_close(ls_st_file *f);

/* NULL when absent. */
const ls_st_tensor *ls_st_find(const ls_st_file *f, const char *name);
/* NULL when absent. */
const char *ls_st_meta(const ls_st_file *f, const char *key);

/* Copies tensor `name` as float32 into dst (its nelem floats). When expect_shape is non-NULL the
 * tensor must have exactly ndim dims equal to it. LS_ERR_INPUT names the file and tensor. */
ls_status ls_st_get_f32(const ls_st_file *f, const char *name, const int64_t *expect_shape, int ndim,
                        float *dst, ls_error *err);
/* Same for a tensor already found. */
ls_status ls_st_tensor_f32(const ls_st_file *f, const ls_st_tensor *t, float *dst, ls_error *err);

/* Exact scalar conversions (f32 -> f16 rounds to nearest even, overflow -> inf, nan stays nan). */
float ls_f16_to_f32(uint16_t h);
uint16_t ls_f32_to_f16(float x);
float ls_bf16_to_f32(uint16_t h);

/* ------------------------------------------------------------- writing */

typedef struct {
    const char *name;
    ls_st_dtype dtype;   /* LS_ST_F32 or LS_ST_F16 (converted from data on write) */
    int ndim;
    int64_t shape[LS_ST_MAX_DIMS];
    const float *data;   /* prod(shape) floats */
} ls_st_entry;

/* Writes n tensors (offsets in the given order) and nmeta key/value pairs meta_kv[2i], meta_kv[2i+1]
 * atomically to `path`, refusing to write over `protect` (may be NULL). The header is padded with
 * spaces so the data starts 8-byte aligned. */
ls_status ls_st_write(const char *path, const ls_st_entry *tensors, int n, const char *const *meta_kv,
                      int nmeta, const char *protect, ls_error *err);
/* The same bytes into a malloc'd buffer (*out, *nout) — for tests and fuzz seeds. */
ls_status ls_st_serialize(const ls_st_entry *tensors, int n, const char *const *meta_kv, int nmeta,
                          unsigned char **out, size_t *nout, ls_error *err);

/* ------------------------------------------------------------- sharded models */

typedef struct {
    ls_st_file *files;
    int nfiles;
} ls_st_set;

/* Opens every path; fails (closing what it opened) if any fails or a tensor name repeats. */
ls_status ls_st_set_open(const char *const *paths, int npaths, ls_st_set *s, ls_error *err);
/* Opens `path`; when it names shard 1 of a "stem-00001-of-0000M.safetensors" series the other M-1
 * shards next to it are opened too. */
ls_status ls_st_set_open_model(const char *path, ls_st_set *s, ls_error *err);
void ls_st_set_close(ls_st_set *s);
/* The tensor and (if file != NULL) the file holding it; NULL when absent. */
const ls_st_tensor *ls_st_set_find(const ls_st_set *s, const char *name, const ls_st_file **file);
ls_status ls_st_set_get_f32(const ls_st_set *s, const char *name, const int64_t *expect_shape,
                            int ndim, float *dst, ls_error *err);
/* The first file's value for key (metadata is kept in shard 1); NULL when absent. */
const char *ls_st_set_meta(const ls_st_set *s, const char *key);

#endif
