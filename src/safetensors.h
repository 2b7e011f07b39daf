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

/* ------------------------------------------------------------ sharded models
 * The project keeps every file under 16 MiB, so larger models (a ViT-S/16 teacher is 87 MB in F32) are
 * split into "STEM-00001-of-0000M.safetensors" ... "STEM-0000M-of-0000M.safetensors" (as
 * tools/dino_to_safetensors.py writes them). A set searches its files as one; a tensor name in two
 * files is refused. Metadata is read from the first file. */
typedef struct {
    ls_st_file *files;
    int nfiles;
} ls_st_set;

/* Opens every path (closing what it opened on failure). */
ls_status ls_st_set_open(const char *const *paths, int npaths, ls_st_set *s, ls_error *err);
/* Opens `path`; when it names any shard of an M-shard series all M files beside it are opened (in
 * order), and any of them missing is an error. */
ls_status ls_st_set_open_model(const char *path, ls_st_set *s, ls_error *err);
void ls_st_set_close(ls_st_set *s);
/* The tensor and (file != NULL) the file holding it; NULL when absent. */
const ls_st_tensor *ls_st_set_find(const ls_st_set *s, const char *name, const ls_st_file **file);
const char *ls_st_set_meta(const ls_st_set *s, const char *key);
/* ls_tensor_source over a set (ctx is a const ls_st_set *). */
int ls_st_set_source(void *ctx, const char *name, float *dst, size_t numel, ls_error *err);

#endif
