/*
 * teacher.c — see teacher.h. (Not "features.h": that name belongs to glibc.)
 */
#include "teacher.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "rng.h"
#include "util.h"

/* ------------------------------------------------------------------ teacher */

/* 64-bit content key from zlib's two checksums. */
static uint64_t key_of(const void *buf, size_t n, uint64_t seed) {
    uLong c = crc32_z((uLong)(seed & 0xffffffffu), buf, n), a = adler32_z((uLong)((seed >> 32) | 1), buf, n);
    return ((uint64_t)c << 32) ^ (uint64_t)a;
}

ls_status ls_teacher_open(ls_teacher *t, const ls_backend *be, const char *weights, const char *arch, uint64_t seed,
                          int input_size, ls_error *err) {
    memset(t, 0, sizeof *t);
    t->input_size = input_size;
    ls_vit_config cfg;
    if (!weights) {
        LS_TRY(ls_vit_config_preset(arch, &cfg, err));
        ls_rng r = {seed};
        LS_TRY(ls_vit_load(&t->vit, be, &cfg, ls_vit_init_source, &r, err));
        snprintf(t->id, sizeof t->id, "%s:random:seed=%llu", arch, (unsigned long long)seed);
    } else {
        ls_st_set f; /* one file, or every shard of a "-00001-of-0000M" series (files stay < 16 MiB) */
        LS_TRY(ls_st_set_open_model(weights, &f, err));
        const char *meta_arch = ls_st_set_meta(&f, "arch");
        ls_status s = ls_vit_config_preset(meta_arch && strcmp(meta_arch, "custom") ? meta_arch : arch, &cfg, err);
        size_t held = 0; /* a file is untrusted: its architecture may not ask for more weights than it holds */
        for (int i = 0; i < f.nfiles; i++)
            for (int k = 0; k < f.files[i].ntensors; k++) held += f.files[i].tensors[k].numel;
        if (!s && ls_vit_nparams(&cfg) > held)
            s = ls_fail(err, LS_ERR_INPUT, "%s: architecture %s has %zu weights, the file holds %zu", weights, cfg.name,
                        ls_vit_nparams(&cfg), held);
        if (!s) s = ls_vit_load(&t->vit, be, &cfg, ls_st_set_source, &f, err);
        if (!s) {
            const char *base = strrchr(weights, '/');
            uint64_t key = 0;
            for (int i = 0; i < f.nfiles; i++) key = key_of(f.files[i].buf, f.files[i].size, key);
            snprintf(t->id, sizeof t->id, "%s:file=%.60s:%016llx", cfg.name, base ? base + 1 : weights,
                     (unsigned long long)key);
        }
        ls_st_set_close(&f);
        if (s) return s;
    }
    if (input_size < cfg.patch || input_size % cfg.patch) {
        ls_teacher_close(t);
        return ls_fail(err, LS_ERR_INPUT, "teacher input size %d is not a multiple of the patch size %d", input_size,
                       cfg.patch);
    }
    return LS_OK;
}

void ls_teacher_close(ls_teacher *t) {
    ls_vit_free(&t->vit);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------------ compute */

void ls_features_free(ls_features *f) {
    free(f->data);
    memset(f, 0, sizeof *f);
}

/* The slice loop of ls_features_compute, in ls_pipeline_run's two host sets (a batch's teacher inputs, then
 * its features): while the device runs batch i, the host resamples batch i+1 (one slice per thread) and
 * stores batch i-1's features. */
typedef struct {
    ls_teacher *t;
    const ls_volume *ras;
    const ls_prep *prep;
    int batch, nth;
    size_t in_per, out_per, plane;
    float *scratch, *dev_in, *dev_out;
    ls_arena arena;
    ls_features *out;
    ls_progress_fn progress;
    void *pctx;
} feat_loop;

static float *set_out(const feat_loop *L, float *set) { return set + (size_t)L->batch * L->in_per; }

static ls_status feat_prep(void *ctx, int k0, int nb, float *set, ls_error *err) {
    (void)err;
    feat_loop *L = ctx;
#pragma omp parallel for schedule(static) num_threads(L->nth)
    for (int b = 0; b < nb; b++)
        ls_prep_slice(L->prep, L->ras, k0 + b, L->scratch + (size_t)omp_get_thread_num() * L->plane,
                      set + (size_t)b * L->in_per);
    return LS_OK;
}

static ls_status feat_queue(void *ctx, int k0, int nb, float *set, ls_error *err) {
    (void)k0;
    feat_loop *L = ctx;
    const ls_backend *be = L->t->vit.be;
    int S = L->t->input_size;
    be->mem->to_device(be, L->dev_in, set, (size_t)nb * L->in_per * sizeof(float));
    ls_arena_reset(&L->arena);
    LS_TRY(ls_vit_forward(&L->t->vit, &L->arena, L->dev_in, nb, S, S, L->dev_out, NULL, err));
    be->mem->to_host_async(be, set_out(L, set), L->dev_out, (size_t)nb * L->out_per * sizeof(float));
    return LS_OK;
}

static ls_status feat_finish(void *ctx, int k0, int nb, float *set, ls_error *err) {
    (void)err;
    feat_loop *L = ctx;
    memcpy(L->out->data + (size_t)k0 * L->out_per, set_out(L, set), (size_t)nb * L->out_per * sizeof(float));
    if (L->progress) L->progress(L->pctx, k0 + nb, L->out->nslices);
    return LS_OK;
}

int ls_teacher_batch(const ls_teacher *t, int requested) {
    if (requested > 0) return requested;
    return t->vit.be->device == LS_DEV_CPU ? 8 : 32;
}

ls_status ls_features_compute(ls_teacher *t, const ls_volume *ras, const ls_prep *prep, int batch,
                              ls_progress_fn progress, void *pctx, ls_features *out, ls_error *err) {
    memset(out, 0, sizeof *out);
    const ls_backend *be = t->vit.be;
    const ls_vit_config *c = &t->vit.cfg;
    int S = t->input_size, g = S / c->patch;
    feat_loop L = {.t = t, .ras = ras, .prep = prep, .batch = ls_teacher_batch(t, batch),
                   .nth = be->nthreads, .in_per = (size_t)3 * S * S,
                   .out_per = (size_t)c->dim * g * g, .plane = (size_t)(ras->geom.dim[0] * ras->geom.dim[1]),
                   .out = out, .progress = progress, .pctx = pctx};
    out->nslices = (int)ras->geom.dim[2], out->dim = c->dim, out->gh = out->gw = g;
    out->data = ls_calloc((size_t)out->nslices * L.out_per, sizeof(float), err);
    L.scratch = ls_calloc((size_t)L.nth * L.plane, sizeof(float), err);
    ls_arena io = {0};
    ls_status s = out->data && L.scratch ? LS_OK : LS_ERR_NOMEM;
    if (!s) s = ls_arena_init(&L.arena, be, ls_vit_arena_floats(c, L.batch, S, S) * sizeof(float), err);
    if (!s) s = ls_arena_init(&io, be, ((size_t)L.batch * (L.in_per + L.out_per) + 32) * sizeof(float), err);
    if (!s) {
        L.dev_in = ls_arena_floats(&io, (size_t)L.batch * L.in_per);
        L.dev_out = ls_arena_floats(&io, (size_t)L.batch * L.out_per);
        ls_pipeline p = {feat_prep, feat_queue, feat_finish, &L};
        s = ls_pipeline_run(be, out->nslices, L.batch, (size_t)L.batch * (L.in_per + L.out_per), &p, err);
    }
    ls_arena_free(&L.arena);
    ls_arena_free(&io);
    free(L.scratch);
    if (s) ls_features_free(out);
    return s;
}

/* ------------------------------------------------------------------ cache */

static void describe(const ls_teacher *t, const ls_volume *ras, const ls_prep *prep, char *buf, size_t n) {
    const double(*A)[4] = ras->geom.affine;
    snprintf(buf, n, "%s|size=%d|%s|window=%.6g,%.6g|dims=%lldx%lldx%lld|affine=%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g",
             t->id, t->input_size, ls_modality_name(prep->modality), prep->lo, prep->hi, (long long)ras->geom.dim[0],
             (long long)ras->geom.dim[1], (long long)ras->geom.dim[2], A[0][0], A[0][1], A[0][2], A[0][3], A[1][0],
             A[1][1], A[1][2], A[1][3], A[2][0], A[2][1], A[2][2], A[2][3]);
    /* Only a gamma other than 1 and a padding enter the key, so the caches of the inputs without them (made
     * before either existed) stay valid. */
    size_t len = strlen(buf);
    if (prep->gamma != 1 && len < n) snprintf(buf + len, n - len, "|gamma=%.6g", prep->gamma);
    int py, px;
    ls_prep_padding(ras, t->input_size, t->input_size, &py, &px);
    len = strlen(buf);
    if ((py || px) && len < n) snprintf(buf + len, n - len, "|pad=%d,%d", py, px);
}

ls_status ls_features_cache_path(const char *dir, const ls_teacher *t, const ls_volume *ras, const ls_prep *prep,
                                 char *path, size_t n, ls_error *err) {
    LS_TRY(ls_make_dir(dir, "feature cache", err));
    char desc[1024];
    describe(t, ras, prep, desc, sizeof desc);
    uint64_t k = key_of(ras->data, ls_volume_nvox(ras) * sizeof(float), key_of(desc, strlen(desc), 0));
    snprintf(path, n, "%s/%016llx.safetensors", dir, (unsigned long long)k);
    return LS_OK;
}

/* A cache entry is used only when its description and shape match exactly. */
static int load_entry(const char *path, const char *desc, ls_features *out, ls_error *err) {
    ls_st_file f;
    ls_error ignore;
    if (ls_st_open(path, &f, &ignore) != LS_OK) return 0;
    const char *d = ls_st_meta(&f, "livseg_features");
    const ls_st_tensor *t = ls_st_find(&f, "features");
    int ok = d && strcmp(d, desc) == 0 && t && t->ndim == 4;
    if (ok) {
        out->nslices = (int)t->shape[0], out->dim = (int)t->shape[1], out->gh = (int)t->shape[2], out->gw = (int)t->shape[3];
        out->data = ls_calloc(t->numel, sizeof(float), err);
        ok = out->data && ls_st_read_f32(&f, t, out->data, err) == LS_OK;
        if (!ok) ls_features_free(out);
    }
    ls_st_close(&f);
    return ok;
}

ls_status ls_features_cached(ls_teacher *t, const ls_volume *ras, const ls_prep *prep, const char *cache_dir,
                             int batch, ls_progress_fn progress, void *pctx, ls_features *out, int *hit,
                             ls_error *err) {
    char path[4096], desc[1024];
    *hit = 0;
    LS_TRY(ls_features_cache_path(cache_dir, t, ras, prep, path, sizeof path, err));
    describe(t, ras, prep, desc, sizeof desc);
    if (load_entry(path, desc, out, err)) {
        *hit = 1;
        return LS_OK;
    }
    LS_TRY(ls_features_compute(t, ras, prep, batch, progress, pctx, out, err));
    /* The cache stores F16: round now, so a first run and a cached run see the same numbers. */
    size_t n = (size_t)out->nslices * out->dim * out->gh * out->gw;
    for (size_t i = 0; i < n; i++) out->data[i] = ls_f16_to_f32(ls_f32_to_f16(out->data[i]));
    ls_st_entry e = {"features", out->data, 4, {out->nslices, out->dim, out->gh, out->gw}, 1};
    const char *meta[2] = {"livseg_features", desc};
    return ls_st_write(path, &e, 1, meta, 1, NULL, err);
}
