/*
 * safetensors.h — reading and writing the safetensors format (weights of the teacher and of trained
 * models): an 8-byte little-endian header length N, N bytes of JSON
 *     {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {..}}
 * and the tensor bytes. Parsing is bounds-checked throughout (offsets, sizes, overlaps, shapes, dtypes,
 * duplicate names); see docs/safetensors.md. Tensors are read as float32 from F32, F16 and BF16.
 */
#ifndef LS_SAFETENSORS_H
#define LS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "livseg.h"

#define LS_ST_MAX_DIMS 8

typedef enum { LS_ST_F32, LS_ST_F16, LS_ST_BF16, LS_ST_F64, LS_ST_I64, LS_ST_I32, LS_ST_I16, LS_ST_I8, LS_ST_U8,
               LS_ST_BOOL } ls_st_dtype;

typedef struct {
    char *name;
    ls_st_dtype dtype;
    int ndim;
    int64_t shape[LS_ST_MAX_DIMS];
    size_t numel;
    size_t begin, end; /* byte offsets into the data section */
} ls_st_tensor;

typedef struct {
    char *path;            /* for messages */
    unsigned char *buf;    /* whole file */
    size_t size;
    size_t data_start;     /* 8 + header length */
    ls_st_tensor *tensors;
    int ntensors;
    char **meta_keys, **meta_values;
    int nmeta;
} ls_st_file;

/* Reads and validates a whole file (at most 4 GiB). */
ls_status ls_st_open(const char *path, ls_st_file *f, ls_error *err);
/* Validates a buffer already in memory; takes ownership of `buf` (malloc'd) even on failure. */
ls_status ls_st_parse(unsigned char *buf, size_t size, const char *name, ls_st_file *f, ls_error *err);
void ls_st_close(ls_st_file *f);

const ls_st_tensor *ls_st_find(const ls_st_file *f, const char *name);
const char *ls_st_meta(const ls_st_file *f, const char *key);

/* Converts a tensor to float32 into dst (t->numel values). Integer and bool dtypes are refused. */
ls_status ls_st_read_f32(const ls_st_file *f, const ls_st_tensor *t, float *dst, ls_error *err);

/* Half-precision conversions (IEEE binary16 and bfloat16), exact both ways up to rounding to nearest
 * even on the way down; exposed for tests and for writing fp16 models. */
float ls_f16_to_f32(uint16_t h);
uint16_t ls_f32_to_f16(float f);
float ls_bf16_to_f32(uint16_t h);

/* Where model weights come from: fills `dst` (host memory, `numel` floats) with the tensor called `name`
 * if it exists with exactly that element count and returns LS_OK; returns LS_ERR_INPUT with a message
 * naming the tensor when it exists with another size or a non-float type; returns LS_TENSOR_MISSING
 * when it does not exist. Model loaders take any such source (a file, a set of shards, a test). */
#define LS_TENSOR_MISSING (-1)
typedef int (*ls_tensor_source)(void *ctx, const char *name, float *dst, size_t numel, ls_error *err);

/* The source over one open file (ctx is a const ls_st_file *). */
int ls_st_source(void *ctx, const char *name, float *dst, size_t numel, ls_error *err);

typedef struct {
    const char *name;
    const float *data;
    int ndim;
    int64_t shape[LS_ST_MAX_DIMS];
    int as_f16; /* store as F16 instead of F32 */
} ls_st_entry;

/* Writes tensors and string metadata (meta[2i] key, meta[2i+1] value) atomically. */
ls_status ls_st_write(const char *path, const ls_st_entry *e, int n, const char *const *meta, int nmeta,
                      const char *protect, ls_error *err);

#endif
