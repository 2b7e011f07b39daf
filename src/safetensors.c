/*
 * safetensors.c — see safetensors.h. The JSON header is parsed by jansson; everything it describes is
 * checked against the file before any tensor is handed out.
 */
#include "safetensors.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MAX_HEADER (100u << 20)
#define MAX_FILE ((size_t)4 << 30)

static const struct {
    const char *name;
    ls_st_dtype t;
    int size;
} dtypes[] = {{"F32", LS_ST_F32, 4},  {"F16", LS_ST_F16, 2}, {"BF16", LS_ST_BF16, 2}, {"F64", LS_ST_F64, 8},
              {"I64", LS_ST_I64, 8},  {"I32", LS_ST_I32, 4}, {"I16", LS_ST_I16, 2},   {"I8", LS_ST_I8, 1},
              {"U8", LS_ST_U8, 1},    {"BOOL", LS_ST_BOOL, 1}};

static int dtype_lookup(const char *s, ls_st_dtype *t, int *size) {
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++)
        if (strcmp(s, dtypes[i].name) == 0) {
            *t = dtypes[i].t;
            *size = dtypes[i].size;
            return 1;
        }
    return 0;
}

void ls_st_close(ls_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->ntensors; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->nmeta; i++) free(f->meta_keys[i]), free(f->meta_values[i]);
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->buf);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static ls_status parse_metadata(ls_st_file *f, json_t *meta, ls_error *err) {
    if (!json_is_object(meta)) return ls_fail(err, LS_ERR_INPUT, "%s: __metadata__ is not an object", f->path);
    size_t n = json_object_size(meta);
    f->meta_keys = calloc(n ? n : 1, sizeof(char *));
    f->meta_values = calloc(n ? n : 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_values) return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory", f->path);
    const char *key;
    json_t *val;
    json_object_foreach(meta, key, val) {
        if (!json_is_string(val))
            return ls_fail(err, LS_ERR_INPUT, "%s: metadata value of '%s' is not a string", f->path, key);
        f->meta_keys[f->nmeta] = dupstr(key);
        f->meta_values[f->nmeta] = dupstr(json_string_value(val));
        if (!f->meta_keys[f->nmeta] || !f->meta_values[f->nmeta]) {
            f->nmeta++;
            return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory", f->path);
        }
        f->nmeta++;
    }
    return LS_OK;
}

static ls_status parse_tensor(ls_st_file *f, const char *name, json_t *desc, size_t data_len, ls_st_tensor *t,
                              ls_error *err) {
    if (!json_is_object(desc)) return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' is not an object", f->path, name);
    json_t *dt = json_object_get(desc, "dtype"), *shape = json_object_get(desc, "shape"),
           *off = json_object_get(desc, "data_offsets");
    if (!json_is_string(dt) || !json_is_array(shape) || !json_is_array(off) || json_array_size(off) != 2)
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' needs dtype, shape and two data_offsets", f->path, name);
    int esize;
    if (!dtype_lookup(json_string_value(dt), &t->dtype, &esize))
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' has unknown dtype '%s'", f->path, name, json_string_value(dt));
    size_t nd = json_array_size(shape);
    if (nd > LS_ST_MAX_DIMS)
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' has %zu dimensions (at most %d)", f->path, name, nd,
                       LS_ST_MAX_DIMS);
    t->ndim = (int)nd;
    size_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' has an invalid dimension", f->path, name);
        uint64_t v = (uint64_t)json_integer_value(d);
        if (v && numel > MAX_FILE / v)
            return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' shape overflows", f->path, name);
        t->shape[i] = (int64_t)v;
        numel *= (size_t)v;
    }
    t->numel = numel;
    json_t *b = json_array_get(off, 0), *e = json_array_get(off, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b))
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' has invalid data_offsets", f->path, name);
    t->begin = (size_t)json_integer_value(b);
    t->end = (size_t)json_integer_value(e);
    if (t->end > data_len)
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' ends at byte %zu, past the %zu bytes of data", f->path,
                       name, t->end, data_len);
    if (t->end - t->begin != numel * (size_t)esize)
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' holds %zu bytes but its shape needs %zu", f->path, name,
                       t->end - t->begin, numel * (size_t)esize);
    t->name = dupstr(name);
    return t->name ? LS_OK : ls_fail(err, LS_ERR_NOMEM, "%s: out of memory", f->path);
}

static int cmp_begin(const void *a, const void *b) {
    const ls_st_tensor *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static ls_status parse_header(ls_st_file *f, json_t *root, size_t data_len, ls_error *err) {
    if (!json_is_object(root)) return ls_fail(err, LS_ERR_INPUT, "%s: header is not a JSON object", f->path);
    size_t n = json_object_size(root);
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors) return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory", f->path);
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            LS_TRY(parse_metadata(f, val, err));
            continue;
        }
        ls_status s = parse_tensor(f, key, val, data_len, &f->tensors[f->ntensors], err);
        if (s) return s;
        f->ntensors++;
    }
    /* Tensors may not share bytes. */
    ls_st_tensor *sorted = malloc(sizeof *sorted * (size_t)(f->ntensors ? f->ntensors : 1));
    if (!sorted) return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory", f->path);
    memcpy(sorted, f->tensors, sizeof *sorted * (size_t)f->ntensors);
    qsort(sorted, (size_t)f->ntensors, sizeof *sorted, cmp_begin);
    /* Compare each non-empty tensor with the furthest-reaching one before it, not just its neighbour:
     * an empty tensor sorted in between must not hide an overlap. */
    ls_status s = LS_OK;
    int reach = -1;
    for (int i = 0; i < f->ntensors && !s; i++) {
        if (sorted[i].begin == sorted[i].end) continue;
        if (reach >= 0 && sorted[i].begin < sorted[reach].end)
            s = ls_fail(err, LS_ERR_INPUT, "%s: tensors '%s' and '%s' overlap", f->path, sorted[reach].name,
                        sorted[i].name);
        if (reach < 0 || sorted[i].end > sorted[reach].end) reach = i;
    }
    free(sorted);
    return s;
}

ls_status ls_st_parse(unsigned char *buf, size_t size, const char *name, ls_st_file *f, ls_error *err) {
    memset(f, 0, sizeof *f);
    f->buf = buf;
    f->size = size;
    f->path = dupstr(name ? name : "safetensors");
    if (!f->path) {
        ls_st_close(f);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory");
    }
    ls_status s = LS_OK;
    uint64_t hlen = 0;
    if (size < 8) s = ls_fail(err, LS_ERR_INPUT, "%s: %zu bytes is too short for a safetensors file", f->path, size);
    if (!s) {
        for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
        if (hlen > MAX_HEADER || hlen > size - 8)
            s = ls_fail(err, LS_ERR_INPUT, "%s: header length %llu does not fit the file (%zu bytes)", f->path,
                        (unsigned long long)hlen, size);
    }
    if (!s) {
        json_error_t jerr;
        json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
        if (!root) s = ls_fail(err, LS_ERR_INPUT, "%s: header is not valid JSON (%s)", f->path, jerr.text);
        else {
            f->data_start = 8 + (size_t)hlen;
            s = parse_header(f, root, size - f->data_start, err);
            json_decref(root);
        }
    }
    if (s) ls_st_close(f);
    return s;
}

ls_status ls_st_open(const char *path, ls_st_file *f, ls_error *err) {
    char *buf;
    size_t n;
    memset(f, 0, sizeof *f);
    LS_TRY(ls_read_file(path, MAX_FILE, &buf, &n, err));
    return ls_st_parse((unsigned char *)buf, n, path, f, err);
}

const ls_st_tensor *ls_st_find(const ls_st_file *f, const char *name) {
    for (int i = 0; i < f->ntensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *ls_st_meta(const ls_st_file *f, const char *key) {
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

float ls_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) bits = sign | 0x7f800000u | (man << 13); /* inf, nan */
    else if (exp) bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (!man) bits = sign;
    else { /* subnormal: normalise */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t ls_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0));
    if (ax >= 0x477ff000) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (ax < 0x38800000) {                                   /* subnormal or zero in fp16 */
        if (ax < 0x33000000) return (uint16_t)sign;          /* < 2^-25: rounds to zero */
        uint32_t man = (ax & 0x7fffff) | 0x800000;
        int shift = 126 - (int)(ax >> 23); /* value / 2^-24 = man * 2^(e - 126) */
        uint32_t v = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (v & 1))) v++;
        return (uint16_t)(sign | v);
    }
    uint32_t v = ((ax - 0x38000000) >> 13), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (v & 1))) v++;
    return (uint16_t)(sign | v);
}

float ls_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

ls_status ls_st_read_f32(const ls_st_file *f, const ls_st_tensor *t, float *dst, ls_error *err) {
    const unsigned char *p = f->buf + f->data_start + t->begin;
    switch (t->dtype) {
    case LS_ST_F32: memcpy(dst, p, t->numel * 4); break;
    case LS_ST_F64:
        for (size_t i = 0; i < t->numel; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
    case LS_ST_F16:
    case LS_ST_BF16:
        for (size_t i = 0; i < t->numel; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            dst[i] = t->dtype == LS_ST_F16 ? ls_f16_to_f32(h) : ls_bf16_to_f32(h);
        }
        break;
    default: return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' is not floating point", f->path, t->name);
    }
    return LS_OK;
}

int ls_st_source(void *ctx, const char *name, float *dst, size_t numel, ls_error *err) {
    const ls_st_file *f = ctx;
    const ls_st_tensor *t = ls_st_find(f, name);
    if (!t) return LS_TENSOR_MISSING;
    if (t->numel != numel)
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' has %zu elements, expected %zu", f->path, name, t->numel, numel);
    return ls_st_read_f32(f, t, dst, err);
}

/* -------------------------------------------------------------------- writing */

ls_status ls_st_write(const char *path, const ls_st_entry *e, int n, const char *const *meta, int nmeta,
                      const char *protect, ls_error *err) {
    json_t *root = json_object(), *md = json_object();
    size_t offset = 0;
    for (int i = 0; i < nmeta; i++) json_object_set_new(md, meta[2 * i], json_string(meta[2 * i + 1]));
    json_object_set_new(root, "__metadata__", md);
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        json_t *shape = json_array();
        for (int d = 0; d < e[i].ndim; d++) {
            numel *= (size_t)e[i].shape[d];
            json_array_append_new(shape, json_integer(e[i].shape[d]));
        }
        size_t bytes = numel * (e[i].as_f16 ? 2 : 4);
        json_t *t = json_object();
        json_object_set_new(t, "dtype", json_string(e[i].as_f16 ? "F16" : "F32"));
        json_object_set_new(t, "shape", shape);
        json_object_set_new(t, "data_offsets", json_pack("[II]", (json_int_t)offset, (json_int_t)(offset + bytes)));
        json_object_set_new(root, e[i].name, t);
        offset += bytes;
    }
    char *hdr = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!hdr) return ls_fail(err, LS_ERR_NOMEM, "%s: cannot build the header", path);
    size_t hlen = strlen(hdr), padded = (hlen + 7) / 8 * 8;
    size_t total = 8 + padded + offset;
    unsigned char *buf = ls_calloc(total, 1, err);
    if (!buf) {
        free(hdr);
        return LS_ERR_NOMEM;
    }
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, hdr, hlen);
    memset(buf + 8 + hlen, ' ', padded - hlen);
    free(hdr);
    unsigned char *p = buf + 8 + padded;
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < e[i].ndim; d++) numel *= (size_t)e[i].shape[d];
        if (e[i].as_f16)
            for (size_t k = 0; k < numel; k++) {
                uint16_t h = ls_f32_to_f16(e[i].data[k]);
                *p++ = (unsigned char)h, *p++ = (unsigned char)(h >> 8);
            }
        else {
            memcpy(p, e[i].data, numel * 4);
            p += numel * 4;
        }
    }
    ls_status s = ls_write_file_atomic(path, buf, total, protect, err);
    free(buf);
    return s;
}

/* -------------------------------------------------------------------- sharded models */

void ls_st_set_close(ls_st_set *s) {
    if (!s) return;
    for (int i = 0; i < s->nfiles; i++) ls_st_close(&s->files[i]);
    free(s->files);
    memset(s, 0, sizeof *s);
}

const ls_st_tensor *ls_st_set_find(const ls_st_set *s, const char *name, const ls_st_file **file) {
    for (int i = 0; i < s->nfiles; i++) {
        const ls_st_tensor *t = ls_st_find(&s->files[i], name);
        if (t) {
            if (file) *file = &s->files[i];
            return t;
        }
    }
    return NULL;
}

const char *ls_st_set_meta(const ls_st_set *s, const char *key) {
    return s->nfiles ? ls_st_meta(&s->files[0], key) : NULL;
}

int ls_st_set_source(void *ctx, const char *name, float *dst, size_t numel, ls_error *err) {
    const ls_st_set *s = ctx;
    const ls_st_file *f;
    if (!ls_st_set_find(s, name, &f)) return LS_TENSOR_MISSING;
    return ls_st_source((void *)f, name, dst, numel, err);
}

/* A name of the new file already in an earlier one. */
static ls_status check_unique(const ls_st_set *s, const ls_st_file *f, ls_error *err) {
    for (int j = 0; j < f->ntensors; j++) {
        const ls_st_file *other = NULL;
        for (int i = 0; i < s->nfiles && !other; i++)
            if (&s->files[i] != f && ls_st_find(&s->files[i], f->tensors[j].name)) other = &s->files[i];
        if (other)
            return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' is also in %s", f->path, f->tensors[j].name,
                           other->path);
    }
    return LS_OK;
}

ls_status ls_st_set_open(const char *const *paths, int npaths, ls_st_set *s, ls_error *err) {
    memset(s, 0, sizeof *s);
    if (npaths <= 0) return ls_fail(err, LS_ERR_INPUT, "safetensors: no model files given");
    LS_CALLOC(s->files, (size_t)npaths, err);
    for (int i = 0; i < npaths; i++) {
        ls_status st = ls_st_open(paths[i], &s->files[i], err);
        if (!st) s->nfiles++;
        if (!st) st = check_unique(s, &s->files[i], err);
        if (st) {
            ls_st_set_close(s);
            return st;
        }
    }
    return LS_OK;
}

ls_status ls_st_set_open_model(const char *path, ls_st_set *s, ls_error *err) {
    static const char tail[] = "-00001-of-00000.safetensors"; /* only its length matters */
    size_t n = strlen(path), tl = sizeof tail - 1;
    unsigned idx = 0, total = 0;
    int used = 0;
    if (n <= tl || sscanf(path + n - tl, "-%5u-of-%5u.safetensors%n", &idx, &total, &used) != 2 ||
        (size_t)used != tl || idx < 1 || idx > total)
        return ls_st_set_open(&path, 1, s, err);
    if (total > 9999) return ls_fail(err, LS_ERR_INPUT, "%s: %u shards is implausible", path, total);
    char **names = ls_calloc(total, sizeof *names, err);
    if (!names) return LS_ERR_NOMEM;
    ls_status st = LS_OK;
    for (unsigned i = 0; !st && i < total; i++) {
        if (!(names[i] = ls_calloc(n + 1, 1, err))) st = LS_ERR_NOMEM;
        else snprintf(names[i], n + 1, "%.*s-%05u-of-%05u.safetensors", (int)(n - tl), path, i + 1, total);
    }
    if (!st) st = ls_st_set_open((const char *const *)names, (int)total, s, err);
    for (unsigned i = 0; i < total; i++) free(names[i]);
    free(names);
    return st;
}
