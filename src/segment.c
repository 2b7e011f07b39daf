/*
 * segment.c — see segment.h. Slices go through the teacher `batch` at a time and through the decoder
 * two at a time (its activations at 32x the token grid dominate memory).
 */
#include "segment.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "volume.h"

/* Slices per decoder pass on the CPU, where two keep the arena of 448x448 activations small. On a GPU
 * the decoder takes the teacher's whole batch (fewer, larger launches). */
#define CPU_DECODER_BATCH 2

void ls_segment_opts_default(ls_segment_opts *o) {
    *o = (ls_segment_opts){.modality = -1, .threshold = 0.5f, .keep_largest = 1, .fill_holes = 1, .batch = 0, .keep_prob = 1};
}

void ls_segment_result_free(ls_segment_result *r) {
    free(r->mask);
    ls_volume_free(&r->prob);
    ls_volume_free(&r->ras);
    free(r->ras_mask);
    memset(r, 0, sizeof *r);
}

ls_status ls_segment_write_mask(const char *path, const ls_segment_result *r, const char *protect, ls_error *err) {
    return ls_nifti_write_raw(path, &r->geom, LS_DT_U8, r->mask, 0, 0, "livseg " LIVSEG_VERSION, protect, err);
}

ls_status ls_segment_mask_volume(const ls_segment_result *r, ls_volume *out, ls_error *err) {
    memset(out, 0, sizeof *out);
    out->geom = r->geom;
    size_t n = ls_volume_nvox(out);
    LS_CALLOC(out->data, n, err);
    for (size_t i = 0; i < n; i++) out->data[i] = r->mask[i];
    snprintf(out->format, sizeof out->format, "NIfTI-1");
    return LS_OK;
}

/* Two ids of file teachers name the same weights when their architectures and content keys agree: the
 * file may have been renamed or moved since training. */
static int same_weights(const char *a, const char *b) {
    const char *ka = strrchr(a, ':'), *kb = strrchr(b, ':'), *ca = strchr(a, ':'), *cb = strchr(b, ':');
    return ka && kb && ca && cb && ca - a == cb - b && !strncmp(a, b, (size_t)(ca - a)) && !strcmp(ka, kb);
}

/* The file a teacher id names ("ARCH:file=NAME:KEY"), looked for in the model's directory. */
static int teacher_beside(const char *id, const char *model_path, char *out, size_t n) {
    const char *name = strstr(id, ":file="), *key = strrchr(id, ':');
    if (!name || !model_path || key <= name + 6) return 0;
    name += 6;
    const char *slash = strrchr(model_path, '/');
    int dir = slash ? (int)(slash - model_path + 1) : 0;
    snprintf(out, n, "%.*s%.*s", dir, model_path, (int)(key - name), name);
    return access(out, R_OK) == 0;
}

/* Whether a teacher of configuration vc at input side S gives what model configuration mc takes. */
static ls_status teacher_fits(const ls_model_config *mc, const ls_vit_config *vc, int S, ls_error *err) {
    int g = S / vc->patch;
    if (mc->grid != g || mc->feat_dim != vc->dim)
        return ls_fail(err, LS_ERR_INPUT, "model expects %d teacher channels on a %dx%d grid; the teacher gives %d on %dx%d",
                       mc->feat_dim, mc->grid, mc->grid, vc->dim, g, g);
    return LS_OK;
}

ls_status ls_segment_teacher(ls_teacher *t, const ls_backend *be, const ls_model *m, const ls_model_info *info,
                             const char *teacher_path, const char *model_path, ls_error *err) {
    unsigned long long seed;
    char arch[16], beside[4096];
    if (sscanf(info->teacher_id, "%15[^:]:random:seed=%llu", arch, &seed) == 2) {
        if (teacher_path)
            return ls_fail(err, LS_ERR_INPUT, "%s: model was trained with the random teacher %s; --teacher %s does not apply",
                           model_path, info->teacher_id, teacher_path);
        ls_vit_config vc; /* checked before the weights are drawn: the model file is untrusted */
        if (ls_vit_config_preset(arch, &vc, err) || teacher_fits(&m->cfg, &vc, info->input_size, err)) {
            char why[sizeof err->msg];
            snprintf(why, sizeof why, "%s", err->msg);
            return ls_fail(err, LS_ERR_INPUT, "%s: %.900s", model_path, why);
        }
        return ls_teacher_open(t, be, NULL, arch, seed, info->input_size, err);
    }
    if (!teacher_path && teacher_beside(info->teacher_id, model_path, beside, sizeof beside)) teacher_path = beside;
    if (!teacher_path)
        return ls_fail(err, LS_ERR_INPUT,
                       "%s: model was trained with teacher %s; put that file beside the model or pass it with --teacher",
                       model_path, info->teacher_id);
    LS_TRY(ls_teacher_open(t, be, teacher_path, info->teacher_arch, 0, info->input_size, err));
    if (!same_weights(t->id, info->teacher_id)) {
        ls_status s = ls_fail(err, LS_ERR_INPUT, "%s: model was trained with teacher %s, but %s is %s", model_path,
                              info->teacher_id, teacher_path, t->id);
        ls_teacher_close(t);
        return s;
    }
    return LS_OK;
}

static float sigmoidf_(float x) { return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x)); }

/* Sizes of one slice's host buffers, and the per-thread scratch of the resampling. */
typedef struct {
    const ls_volume *ras;
    const ls_prep *prep;
    int S, Sd, nth;
    size_t in_per, img_per, plane;
    float *scratch; /* two slice planes per thread */
} host_side;

/* The teacher's input and the decoder's grey image of slices k0..k0+nb-1, one slice per thread. */
static void prep_batch(const host_side *h, int k0, int nb, float *in, float *img) {
#pragma omp parallel for schedule(static) num_threads(h->nth)
    for (int b = 0; b < nb; b++) {
        float *sc = h->scratch + 2 * (size_t)omp_get_thread_num() * h->plane;
        ls_prep_slice(h->prep, h->ras, k0 + b, sc, in + (size_t)b * h->in_per);
        ls_prep_grey(h->prep, h->ras, k0 + b, sc, img + (size_t)b * h->img_per, h->Sd, h->Sd);
    }
}

/* Logits of slices k0.. -> probabilities on each slice's grid (into prob_ras, or scratch when NULL),
 * thresholded at th into mask_ras; counts[2k], counts[2k+1]: slice k's voxels above th, and of probability
 * in (0.25, 0.75) (for the review). */
static void unprep_batch(const host_side *h, int k0, int nb, float *logit, float th, float *prob_ras, uint8_t *mask_ras,
                         int64_t *counts) {
#pragma omp parallel for schedule(static) num_threads(h->nth)
    for (int b = 0; b < nb; b++) {
        float *pr = logit + (size_t)b * h->img_per, *sc = h->scratch + 2 * (size_t)omp_get_thread_num() * h->plane;
        size_t k = (size_t)(k0 + b);
        float *slice = prob_ras ? prob_ras + k * h->plane : sc + h->plane;
        uint8_t *mk = mask_ras + k * h->plane;
        for (size_t i = 0; i < h->img_per; i++) pr[i] = sigmoidf_(pr[i]);
        ls_unprep_plane(pr, h->Sd, h->Sd, h->ras, sc, slice);
        int64_t above = 0, unsure = 0;
        for (size_t i = 0; i < h->plane; i++) {
            mk[i] = slice[i] >= th;
            above += mk[i];
            unsure += slice[i] > 0.25f && slice[i] < 0.75f;
        }
        counts[2 * k] = above, counts[2 * k + 1] = unsure;
    }
}

/* The slice loop's state: batches of `batch` slices through teacher and decoder, in ls_pipeline_run's two
 * host sets, each holding a batch's teacher inputs, decoder images and logits. */
typedef struct {
    host_side h;
    ls_teacher *t;
    ls_model *m;
    int batch, dbatch;
    size_t f_per;
    float *dev_in, *dev_feat, *dev_img;
    ls_arena va, ma;
    float th, *prob_ras;
    uint8_t *mask_ras;
    int64_t *counts; /* per slice: above the threshold, unsure (unprep_batch) */
    ls_progress_fn progress;
    void *pctx;
    ls_segment_result *r;
} slice_loop;

static float *set_img(const slice_loop *L, float *set) { return set + (size_t)L->batch * L->h.in_per; }
static float *set_logit(const slice_loop *L, float *set) { return set_img(L, set) + (size_t)L->batch * L->h.img_per; }

static ls_status loop_prep(void *ctx, int k0, int nb, float *set, ls_error *err) {
    (void)err;
    slice_loop *L = ctx;
    double t0 = ls_now();
    prep_batch(&L->h, k0, nb, set, set_img(L, set));
    L->r->seconds_resample += ls_now() - t0;
    return LS_OK;
}

static ls_status loop_queue(void *ctx, int k0, int nb, float *set, ls_error *err) {
    (void)k0;
    slice_loop *L = ctx;
    const ls_backend *be = L->m->be;
    int S = L->h.S;
    double t0 = ls_now();
    be->mem->to_device(be, L->dev_in, set, (size_t)nb * L->h.in_per * sizeof(float));
    be->mem->to_device(be, L->dev_img, set_img(L, set), (size_t)nb * L->h.img_per * sizeof(float));
    ls_arena_reset(&L->va);
    LS_TRY(ls_vit_forward(&L->t->vit, &L->va, L->dev_in, nb, S, S, L->dev_feat, NULL, err));
    double t1 = ls_now();
    L->r->seconds_teacher += t1 - t0;
    for (int d0 = 0; d0 < nb; d0 += L->dbatch) {
        int nd = nb - d0 < L->dbatch ? nb - d0 : L->dbatch;
        ls_model_acts acts;
        ls_arena_reset(&L->ma);
        ls_model_forward(L->m, &L->ma, &acts, L->dev_feat + (size_t)d0 * L->f_per, L->dev_img + (size_t)d0 * L->h.img_per,
                         nd, 0, NULL);
        be->mem->to_host_async(be, set_logit(L, set) + (size_t)d0 * L->h.img_per, acts.logits,
                               (size_t)nd * L->h.img_per * sizeof(float));
    }
    L->r->seconds_decoder += ls_now() - t1;
    return LS_OK;
}

static ls_status loop_finish(void *ctx, int k0, int nb, float *set, ls_error *err) {
    (void)err;
    slice_loop *L = ctx;
    double t0 = ls_now();
    unprep_batch(&L->h, k0, nb, set_logit(L, set), L->th, L->prob_ras, L->mask_ras, L->counts);
    L->r->seconds_resample += ls_now() - t0;
    if (L->progress) L->progress(L->pctx, k0 + nb, L->h.ras->geom.dim[2]);
    return LS_OK;
}

/* Every RAS slice thresholded at th into mask_ras, and its probabilities into prob_ras unless that is NULL
 * (both x fastest, like the volume), through ls_pipeline_run: while the device runs batch i (copies in,
 * teacher, decoder, logits out), the host resamples batch i+1 and maps batch i-1 back. */
static ls_status predict(const ls_volume *ras, const ls_prep *prep, ls_teacher *t, ls_model *m, int batch,
                         ls_progress_fn progress, void *pctx, float th, float *prob_ras, uint8_t *mask_ras,
                         ls_segment_result *r, ls_error *err) {
    const ls_backend *be = m->be;
    const ls_vit_config *vc = &t->vit.cfg;
    int S = t->input_size, g = S / vc->patch, Sd = ls_model_out_side(&m->cfg);
    LS_TRY(teacher_fits(&m->cfg, vc, S, err));
    batch = ls_teacher_batch(t, batch);
    slice_loop L = {.t = t, .m = m, .dbatch = be->device == LS_DEV_CPU ? CPU_DECODER_BATCH : batch,
                    .f_per = (size_t)vc->dim * g * g, .th = th, .prob_ras = prob_ras, .mask_ras = mask_ras,
                    .progress = progress, .pctx = pctx, .r = r};
    L.batch = batch < L.dbatch ? L.dbatch : batch;
    L.h = (host_side){.ras = ras, .prep = prep, .S = S, .Sd = Sd, .nth = be->nthreads,
                      .in_per = (size_t)3 * S * S, .img_per = (size_t)Sd * Sd,
                      .plane = (size_t)ras->geom.dim[0] * (size_t)ras->geom.dim[1]};
    L.h.scratch = ls_calloc((size_t)L.h.nth * 2 * L.h.plane, sizeof(float), err);
    L.counts = L.h.scratch ? ls_calloc((size_t)ras->geom.dim[2] * 2, sizeof(int64_t), err) : NULL;
    ls_arena io = {0};
    ls_status s = L.counts ? LS_OK : LS_ERR_NOMEM;
    if (!s) s = ls_arena_init(&L.va, be, ls_vit_arena_floats(vc, L.batch, S, S) * sizeof(float), err);
    if (!s) s = ls_arena_init(&L.ma, be, ls_model_arena_floats(&m->cfg, L.dbatch) * sizeof(float), err);
    if (!s) s = ls_arena_init(&io, be, ((size_t)L.batch * (L.h.in_per + L.f_per + L.h.img_per) + 64) * sizeof(float), err);
    if (!s) {
        L.dev_in = ls_arena_floats(&io, (size_t)L.batch * L.h.in_per);
        L.dev_feat = ls_arena_floats(&io, (size_t)L.batch * L.f_per);
        L.dev_img = ls_arena_floats(&io, (size_t)L.batch * L.h.img_per);
        double t0 = ls_now();
        ls_pipeline p = {loop_prep, loop_queue, loop_finish, &L};
        s = ls_pipeline_run(be, (int)ras->geom.dim[2], L.batch, (size_t)L.batch * (L.h.in_per + 2 * L.h.img_per), &p,
                            err);
        r->seconds_predict = ls_now() - t0;
    }
    ls_arena_free(&L.va), ls_arena_free(&L.ma), ls_arena_free(&io);
    for (int64_t k = 0; !s && k < ras->geom.dim[2]; k++) r->counts.above += L.counts[2 * k], r->counts.unsure += L.counts[2 * k + 1];
    free(L.counts);
    free(L.h.scratch);
    return s;
}

ls_status ls_segment_volume(const ls_volume *input, ls_teacher *t, ls_model *m, const ls_segment_opts *o,
                            ls_progress_fn progress, void *pctx, ls_segment_result *r, ls_error *err) {
    memset(r, 0, sizeof *r);
    ls_orient orient;
    ls_orient_from_geom(&input->geom, &orient);
    ls_volume ras;
    LS_TRY(ls_volume_to_ras(input, &orient, &ras, err));
    return ls_segment_ras(&ras, &input->geom, t, m, o, progress, pctx, r, err);
}

ls_status ls_segment_ras(ls_volume *ras, const ls_geom *src_geom, ls_teacher *t, ls_model *m,
                         const ls_segment_opts *o, ls_progress_fn progress, void *pctx, ls_segment_result *r,
                         ls_error *err) {
    memset(r, 0, sizeof *r);
    r->ras = *ras;
    memset(ras, 0, sizeof *ras);
    r->geom = *src_geom;
    ls_orient orient;
    ls_orient_from_geom(src_geom, &orient);
    r->modality = o->modality < 0 ? ls_modality_guess(&r->ras) : (ls_modality)o->modality;
    ls_prep prep;
    ls_status s = ls_prep_init(&prep, &r->ras, r->modality, t->input_size, t->input_size, err);
    r->window_lo = prep.lo, r->window_hi = prep.hi;
    size_t n = ls_volume_nvox(&r->ras);
    ls_volume prob_ras = r->ras;
    prob_ras.data = s || !o->keep_prob ? NULL : ls_calloc(n, sizeof(float), err);
    r->ras_mask = s ? NULL : ls_calloc(n, 1, err);
    if (!s && (!r->ras_mask || (o->keep_prob && !prob_ras.data))) s = LS_ERR_NOMEM;
    if (!s) s = predict(&r->ras, &prep, t, m, o->batch, progress, pctx, o->threshold, prob_ras.data, r->ras_mask, r, err);
    double t0 = ls_now();
    r->counts.kept = r->counts.above;
    if (!s && o->keep_largest)
        s = ls_mask_largest_component(r->ras_mask, r->ras.geom.dim, &r->components, &r->counts.kept, err);
    if (!s && o->fill_holes) s = ls_mask_fill_holes(r->ras_mask, r->ras.geom.dim, err);
    if (!s && o->fill_holes) s = ls_mask_fill_holes_slices(r->ras_mask, r->ras.geom.dim, err);
    r->mask = s ? NULL : ls_calloc(n, 1, err);
    if (!s && !r->mask) s = LS_ERR_NOMEM;
    if (!s) ls_orient_mask(r->ras_mask, r->mask, src_geom->dim, &orient, 0);
    if (!s && o->keep_prob) s = ls_volume_from_ras(&prob_ras, &orient, src_geom, &r->prob, err);
    /* In RAS order: the voxels and the world box of the input grid's measurement, without keeping the input
     * in its own order. */
    if (!s) s = ls_mask_measure(&r->ras, r->ras_mask, &r->stats, err);
    if (!s)
        s = ls_review_mask(&r->ras, r->ras_mask, prep.lo + 0.1f * (prep.hi - prep.lo), r->modality == LS_MOD_CT,
                           r->stats.volume_ml, &r->counts, &r->review, err);
    free(prob_ras.data);
    r->seconds_post = ls_now() - t0;
    if (s) ls_segment_result_free(r);
    return s;
}
