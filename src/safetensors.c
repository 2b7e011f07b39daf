/*
 * safetensors.c — safetensors reader/writer (see safetensors.h for the format and the checks).
 *
 * Contract: ls_st_open* either returns a fully validated file (every tensor in bounds, sizes
 * consistent, no overlaps) or LS_ERR_INPUT with "<file>: tensor '<name>': <problem>" and nothing to
 * free. Readers never trust the header: all arithmetic on its numbers is overflow-checked.
 */
#include "safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const struct {
    const char *name;
    size_t size;
} dtypes[LS_ST_NDTYPE] = {
    [LS_ST_F32] = {"F32", 4}, [LS_ST_F16] = {"F16", 2}, [LS_ST_BF16] = {"BF16", 2},
    [LS_ST_F64] = {"F64", 8}, [LS_ST_I64] = {"I64", 8}, [LS_ST_I32] = {"I32", 4},
    [LS_ST_I16] = {"I16", 2}, [LS_ST_I8] = {"I8", 1},   [LS_ST_U8] = {"U8", 1},
    [LS_ST_BOOL] = {"BOOL", 1},
};

const char *ls_st_dtype_name(ls_st_dtype t) { return t < LS_ST_NDTYPE ? dtypes[t].name : "?"; }
size_t ls_st_dtype_size(ls_st_dtype t) { return t < LS_ST_NDTYPE ? dtypes[t].size : 0; }

static int dtype_parse(const char *s, ls_st_dtype *t) {
    for (int i = 0; i < LS_ST_NDTYPE; i++)
        if (strcmp(s, dtypes[i].name) == 0) {
            *t = (ls_st_dtype)i;
            return 1;
        }
    return 0;
}

/* ------------------------------------------------------------- scalar conversions */

static uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

float ls_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf, nan keeps payload */
    if (exp == 0) /* zero or subnormal: man * 2^-24 is exact in float */
        return bits_f32(sign | f32_bits((float)man * 0x1p-24f));
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

float ls_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

/* Rounds m >> shift to nearest, ties to even (shift >= 1). */
static uint32_t shift_round_even(uint32_t m, int shift) {
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    return q + (rem > half || (rem == half && (q & 1u)));
}

uint16_t ls_f32_to_f16(float x) {
    uint32_t f = f32_bits(x);
    uint16_t sign = (uint16_t)((f >> 16) & 0x8000u);
    uint32_t exp = (f >> 23) & 0xffu, man = f & 0x7fffffu;
    if (exp == 0xff) { /* inf, or nan with its top payload bits (never turned into inf) */
        uint32_t m = man >> 13;
        return (uint16_t)(sign | 0x7c00u | (man ? (m ? m : 1u) : 0u));
    }
    int e = (int)exp - 112; /* half-precision biased exponent */
    if (e >= 31) return sign | 0x7c00u;
    if (e <= 0) { /* half subnormal: value = M * 2^(exp-150) = m * 2^-24 with m = M >> (126-exp) */
        int shift = 126 - (int)exp;
        if (exp == 0 || shift > 24) return sign; /* below half the smallest subnormal */
        return (uint16_t)(sign | shift_round_even(man | 0x800000u, shift));
    }
    /* carry out of the mantissa correctly bumps the exponent (up to inf) */
    return (uint16_t)(sign | (((uint32_t)e << 10) + shift_round_even(man, 13)));
}

/* ------------------------------------------------------------- parsing */

void ls_st_close(ls_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->ntensors; i++) free(f->tensors[i].name);
    for (int i = 0; i < 2 * f->nmeta; i++) free(f->meta[i]);
    free(f->tensors);
    free(f->meta);
    free(f->buf);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static char *dup_str(const char *s, ls_error *err) {
    size_t n = strlen(s) + 1;
    char *p = ls_calloc(n, 1, err);
    if (p) memcpy(p, s, n);
    return p;
}

/* A JSON integer in [0, max], else -1. */
static int64_t json_count(const json_t *v, int64_t max) {
    if (!json_is_integer(v)) return -1;
    json_int_t x = json_integer_value(v);
    return x < 0 || x > max ? -1 : (int64_t)x;
}

static ls_status parse_meta(ls_st_file *f, json_t *obj, ls_error *err) {
    if (!json_is_object(obj))
        return ls_fail(err, LS_ERR_INPUT, "%s: __metadata__ is not an object", f->path);
    size_t n = json_object_size(obj);
    LS_CALLOC(f->meta, 2 * n + 1, err);
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        if (!json_is_string(v))
            return ls_fail(err, LS_ERR_INPUT, "%s: metadata '%s' is not a string", f->path, k);
        char *ks = dup_str(k, err), *vs = ks ? dup_str(json_string_value(v), err) : NULL;
        if (!vs) {
            free(ks);
            return LS_ERR_NOMEM;
        }
        f->meta[2 * f->nmeta] = ks;
        f->meta[2 * f->nmeta + 1] = vs;
        f->nmeta++;
    }
    return LS_OK;
}

static ls_status parse_shape(const ls_st_file *f, const char *name, const json_t *shape, ls_st_tensor *t,
                             ls_error *err) {
    if (!json_is_array(shape))
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s': missing or non-array shape", f->path, name);
    size_t nd = json_array_size(shape);
    if (nd > LS_ST_MAX_DIMS)
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s': %zu dims (at most %d)", f->path, name, nd,
                       LS_ST_MAX_DIMS);
    t->ndim = (int)nd;
    t->nelem = 1;
    for (size_t i = 0; i < nd; i++) {
        int64_t d = json_count(json_array_get(shape, i), INT64_MAX);
        if (d < 0)
            return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s': shape[%zu] is not an integer >= 0",
                           f->path, name, i);
        t->shape[i] = d;
        if (d != 0 && t->nelem > SIZE_MAX / ls_st_dtype_size(t->dtype) / (size_t)d)
            return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s': shape product overflows", f->path, name);
        t->nelem *= (size_t)d;
    }
    t->nbytes = t->nelem * ls_st_dtype_size(t->dtype);
    return LS_OK;
}

static ls_status parse_tensor(ls_st_file *f, const char *name, const json_t *obj, const unsigned char *data,
                              size_t ndata, ls_st_tensor *t, size_t offs[2], ls_error *err) {
    if (!json_is_object(obj))
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s': entry is not an object", f->path, name);
    const json_t *dt = json_object_get(obj, "dtype");
    if (!json_is_string(dt))
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s': missing or non-string dtype", f->path, name);
    if (!dtype_parse(json_string_value(dt), &t->dtype))
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s': unknown dtype '%.32s'", f->path, name,
                       json_string_value(dt));
    LS_TRY(parse_shape(f, name, json_object_get(obj, "shape"), t, err));
    const json_t *o = json_object_get(obj, "data_offsets");
    if (!json_is_array(o) || json_array_size(o) != 2)
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s': data_offsets is not [begin, end]", f->path,
                       name);
    int64_t b = json_count(json_array_get(o, 0), INT64_MAX), e = json_count(json_array_get(o, 1), INT64_MAX);
    if (b < 0 || e < 0 || b > e || (uint64_t)e > ndata)
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s': data_offsets [%lld, %lld] outside 0..%zu",
                       f->path, name, (long long)b, (long long)e, ndata);
    if ((size_t)(e - b) != t->nbytes)
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s': %lld data bytes, shape and dtype need %zu",
                       f->path, name, (long long)(e - b), t->nbytes);
    offs[0] = (size_t)b;
    offs[1] = (size_t)e;
    t->data = data + b;
    return LS_OK;
}

typedef struct {
    size_t begin, end;
    int idx;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : x->end < y->end ? -1 : x->end > y->end;
}

/* Non-empty tensors must not share bytes. */
static ls_status check_overlap(ls_st_file *f, span *sp, int n, ls_error *err) {
    qsort(sp, (size_t)n, sizeof *sp, span_cmp);
    size_t last_end = 0;
    int last = -1;
    for (int i = 0; i < n; i++) {
        if (sp[i].begin == sp[i].end) continue;
        if (last >= 0 && sp[i].begin < last_end)
            return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s': data overlaps tensor '%s'", f->path,
                           f->tensors[sp[i].idx].name, f->tensors[last].name);
        last_end = sp[i].end;
        last = sp[i].idx;
    }
    return LS_OK;
}

static ls_status parse_header(ls_st_file *f, json_t *root, size_t hdr_end, ls_error *err) {
    if (!json_is_object(root)) return ls_fail(err, LS_ERR_INPUT, "%s: header is not a JSON object", f->path);
    size_t n = json_object_size(root);
    LS_CALLOC(f->tensors, n + 1, err);
    span *sp = ls_calloc(n + 1, sizeof *sp, err);
    if (!sp) return LS_ERR_NOMEM;
    const unsigned char *data = f->buf + hdr_end;
    size_t ndata = f->size - hdr_end;
    ls_status st = LS_OK;
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
        if (strcmp(k, "__metadata__") == 0) {
            if ((st = parse_meta(f, v, err))) break;
            continue;
        }
        ls_st_tensor *t = &f->tensors[f->ntensors];
        size_t offs[2] = {0, 0};
        if ((st = parse_tensor(f, k, v, data, ndata, t, offs, err))) break;
        if (!(t->name = dup_str(k, err))) {
            st = LS_ERR_NOMEM;
            break;
        }
        sp[f->ntensors] = (span){offs[0], offs[1], f->ntensors};
        f->ntensors++;
    }
    if (!st) st = check_overlap(f, sp, f->ntensors, err);
    free(sp);
    return st;
}

/* Takes ownership of buf (malloc'd, n bytes). */
static ls_status open_owned(unsigned char *buf, size_t n, const char *name, ls_st_file *f, ls_error *err) {
    memset(f, 0, sizeof *f);
    f->buf = buf;
    f->size = n;
    if (!(f->path = dup_str(name ? name : "(memory)", err))) {
        ls_st_close(f);
        return LS_ERR_NOMEM;
    }
    ls_status st = LS_OK;
    uint64_t hl = 0;
    for (int i = 7; n >= 8 && i >= 0; i--) hl = hl << 8 | buf[i];
    if (n < 8)
        st = ls_fail(err, LS_ERR_INPUT, "%s: %zu bytes, too short for a safetensors header", f->path, n);
    else if (hl > LS_ST_MAX_HEADER)
        st = ls_fail(err, LS_ERR_INPUT, "%s: header length %llu exceeds %llu bytes", f->path,
                     (unsigned long long)hl, (unsigned long long)LS_ST_MAX_HEADER);
    else if (hl > n - 8)
        st = ls_fail(err, LS_ERR_INPUT, "%s: header length %llu is longer than the file (%zu bytes)",
                     f->path, (unsigned long long)hl, n);
    if (!st) {
        json_error_t je;
        json_t *root = json_loadb((const char *)buf + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &je);
        if (!root)
            st = ls_fail(err, LS_ERR_INPUT, "%s: header is not valid JSON (%s at byte %d)", f->path, je.text,
                         je.position);
        else
            st = parse_header(f, root, 8 + (size_t)hl, err);
        json_decref(root);
    }
    if (st) ls_st_close(f);
    return st;
}

ls_status ls_st_open_memory(const void *buf, size_t n, const char *name_for_errors, ls_st_file *f,
                            ls_error *err) {
    memset(f, 0, sizeof *f);
    unsigned char *copy = ls_calloc(n + 1, 1, err);
    if (!copy) return LS_ERR_NOMEM;
    if (n) memcpy(copy, buf, n);
    return open_owned(copy, n, name_for_errors, f, err);
}

ls_status ls_st_open(const char *path, ls_st_file *f, ls_error *err) {
    memset(f, 0, sizeof *f);
    char *buf;
    size_t n;
    LS_TRY(ls_read_file(path, LS_ST_MAX_FILE, &buf, &n, err));
    return open_owned((unsigned char *)buf, n, path, f, err);
}

const ls_st_tensor *ls_st_find(const ls_st_file *f, const char *name) {
    for (int i = 0; i < f->ntensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *ls_st_meta(const ls_st_file *f, const char *key) {
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

ls_status ls_st_tensor_f32(const ls_st_file *f, const ls_st_tensor *t, float *dst, ls_error *err) {
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case LS_ST_F32:
        if (t->nbytes) memcpy(dst, p, t->nbytes); /* little-endian host assumed (x86, arm64) */
        return LS_OK;
    case LS_ST_F16:
    case LS_ST_BF16:
        for (size_t i = 0; i < t->nelem; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            dst[i] = t->dtype == LS_ST_F16 ? ls_f16_to_f32(h) : ls_bf16_to_f32(h);
        }
        return LS_OK;
    default:
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s': dtype %s cannot be read as float32", f->path,
                       t->name, ls_st_dtype_name(t->dtype));
    }
}

static ls_status check_shape(const ls_st_file *f, const ls_st_tensor *t, const int64_t *expect, int ndim,
                             ls_error *err) {
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == expect[i];
    if (ok) return LS_OK;
    char got[160] = "", want[160] = "";
    for (int i = 0; i < t->ndim; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)t->shape[i]);
    for (int i = 0; i < ndim && i < LS_ST_MAX_DIMS; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "", (long long)expect[i]);
    return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s': shape [%s], expected [%s]", f->path, t->name, got, want);
}

ls_status ls_st_get_f32(const ls_st_file *f, const char *name, const int64_t *expect_shape, int ndim,
                        float *dst, ls_error *err) {
    const ls_st_tensor *t = ls_st_find(f, name);
    if (!t) return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' is missing", f->path, name);
    if (expect_shape) LS_TRY(check_shape(f, t, expect_shape, ndim, err));
    return ls_st_tensor_f32(f, t, dst, err);
}

/* ------------------------------------------------------------- writing */

static ls_status build_header(const ls_st_entry *ts, int n, const char *const *kv, int nmeta, char **json,
                              size_t *data_bytes, ls_error *err) {
    json_t *root = json_object();
    size_t off = 0;
    ls_status st = root ? LS_OK : ls_fail(err, LS_ERR_NOMEM, "safetensors: out of memory building header");
    if (!st && nmeta > 0) {
        json_t *m = json_object();
        for (int i = 0; m && i < nmeta; i++) json_object_set_new(m, kv[2 * i], json_string(kv[2 * i + 1]));
        json_object_set_new(root, "__metadata__", m);
    }
    for (int i = 0; !st && i < n; i++) {
        const ls_st_entry *e = &ts[i];
        if ((e->dtype != LS_ST_F32 && e->dtype != LS_ST_F16) || e->ndim < 0 || e->ndim > LS_ST_MAX_DIMS ||
            !e->name || strcmp(e->name, "__metadata__") == 0 || json_object_get(root, e->name)) {
            st = ls_fail(err, LS_ERR_INPUT, "safetensors: tensor '%s': bad dtype, ndim, or duplicate name",
                         e->name ? e->name : "(null)");
            break;
        }
        size_t ne = 1;
        json_t *shape = json_array();
        for (int d = 0; d < e->ndim; d++) {
            LS_ASSERT(e->shape[d] >= 0); /* caller's tensors, not file input */
            ne *= (size_t)e->shape[d];
            json_array_append_new(shape, json_integer(e->shape[d]));
        }
        size_t nb = ne * ls_st_dtype_size(e->dtype);
        json_t *o = json_pack("{s:s, s:o, s:[I,I]}", "dtype", ls_st_dtype_name(e->dtype), "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + nb));
        json_object_set_new(root, e->name, o);
        off += nb;
    }
    *json = st ? NULL : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!st && !*json) st = ls_fail(err, LS_ERR_NOMEM, "safetensors: cannot serialise header");
    *data_bytes = off;
    return st;
}

ls_status ls_st_serialize(const ls_st_entry *ts, int n, const char *const *kv, int nmeta, unsigned char **out,
                          size_t *nout, ls_error *err) {
    char *json;
    size_t nd;
    *out = NULL;
    *nout = 0;
    LS_TRY(build_header(ts, n, kv, nmeta, &json, &nd, err));
    size_t hl = strlen(json), padded = (hl + 7) / 8 * 8; /* 8 + padded is a multiple of 8 */
    unsigned char *buf = ls_calloc(8 + padded + nd, 1, err);
    if (!buf) {
        free(json);
        return LS_ERR_NOMEM;
    }
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, json, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    free(json);
    unsigned char *p = buf + 8 + padded;
    for (int i = 0; i < n; i++) {
        size_t ne = 1;
        for (int d = 0; d < ts[i].ndim; d++) ne *= (size_t)ts[i].shape[d];
        if (ts[i].dtype == LS_ST_F32) {
            if (ne) memcpy(p, ts[i].data, ne * 4);
            p += ne * 4;
        } else {
            for (size_t j = 0; j < ne; j++, p += 2) {
                uint16_t h = ls_f32_to_f16(ts[i].data[j]);
                p[0] = (unsigned char)(h & 0xff);
                p[1] = (unsigned char)(h >> 8);
            }
        }
    }
    *out = buf;
    *nout = 8 + padded + nd;
    return LS_OK;
}

ls_status ls_st_write(const char *path, const ls_st_entry *ts, int n, const char *const *kv, int nmeta,
                      const char *protect, ls_error *err) {
    unsigned char *buf;
    size_t nb;
    ls_error e2 = {0};
    ls_status st = ls_st_serialize(ts, n, kv, nmeta, &buf, &nb, &e2);
    if (st) return ls_fail(err, st, "%s: %s", path, e2.msg);
    st = ls_write_file_atomic(path, buf, nb, protect, err);
    free(buf);
    return st;
}

/* ------------------------------------------------------------- sets of shards */

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

ls_status ls_st_set_open(const char *const *paths, int npaths, ls_st_set *s, ls_error *err) {
    memset(s, 0, sizeof *s);
    if (npaths <= 0) return ls_fail(err, LS_ERR_INPUT, "safetensors: no model files given");
    LS_CALLOC(s->files, (size_t)npaths, err);
    for (int i = 0; i < npaths; i++) {
        ls_st_file *f = &s->files[i];
        ls_status st = ls_st_open(paths[i], f, err);
        if (st) {
            ls_st_set_close(s);
            return st;
        }
        s->nfiles++;
        for (int j = 0; j < f->ntensors; j++) {
            const ls_st_file *other;
            const ls_st_tensor *t = ls_st_set_find(s, f->tensors[j].name, &other);
            if (other != f) {
                st = ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' is also in %s", f->path, t->name, other->path);
                ls_st_set_close(s);
                return st;
            }
        }
    }
    return LS_OK;
}

ls_status ls_st_set_open_model(const char *path, ls_st_set *s, ls_error *err) {
    size_t n = strlen(path);
    const char *tail = "-00001-of-00000.safetensors"; /* digits checked by sscanf below */
    size_t tl = strlen(tail);
    int idx = 0, total = 0;
    char end[16] = "";
    if (n <= tl || sscanf(path + n - tl, "-%5d-of-%5d%15s", &idx, &total, end) != 3 ||
        strcmp(end, ".safetensors") != 0 || idx != 1 || total < 1)
        return ls_st_set_open(&path, 1, s, err);
    if (total > 999) return ls_fail(err, LS_ERR_INPUT, "%s: %d shards is implausible", path, total);
    char **names = ls_calloc((size_t)total, sizeof *names, err);
    if (!names) return LS_ERR_NOMEM;
    ls_status st = LS_OK;
    for (int i = 0; !st && i < total; i++) {
        if (!(names[i] = ls_calloc(n + 1, 1, err))) st = LS_ERR_NOMEM;
        else snprintf(names[i], n + 1, "%.*s-%05d-of-%05d.safetensors", (int)(n - tl), path, i + 1, total);
    }
    if (!st) st = ls_st_set_open((const char *const *)names, total, s, err);
    for (int i = 0; i < total; i++) free(names[i]);
    free(names);
    return st;
}

ls_status ls_st_set_get_f32(const ls_st_set *s, const char *name, const int64_t *expect_shape, int ndim,
                            float *dst, ls_error *err) {
    const ls_st_file *f;
    if (!ls_st_set_find(s, name, &f))
        return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' is missing", s->nfiles ? s->files[0].path : "model",
                       name);
    return ls_st_get_f32(f, name, expect_shape, ndim, dst, err);
}

const char *ls_st_set_meta(const ls_st_set *s, const char *key) {
    return s->nfiles ? ls_st_meta(&s->files[0], key) : NULL;
}
