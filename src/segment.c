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
    *o = (ls_segment_opts){.modality = -1, .threshold = 0.5f, .keep_largest = 1, .fill_holes = 1, .batch = 8, .keep_prob = 1};
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

ls_status ls_segment_teacher(ls_teacher *t, const ls_backend *be, const ls_model_info *info, const char *teacher_path,
                             const char *model_path, ls_error *err) {
    unsigned long long seed;
    char arch[16], beside[4096];
    if (sscanf(info->teacher_id, "%15[^:]:random:seed=%llu", arch, &seed) == 2) {
        if (teacher_path)
            return ls_fail(err, LS_ERR_INPUT, "%s: model was trained with the random teacher %s; --teacher %s does not apply",
                           model_path, info->teacher_id, teacher_path);
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
 * thresholded at th into mask_ras. */
static void unprep_batch(const host_side *h, int k0, int nb, float *logit, float th, float *prob_ras, uint8_t *mask_ras) {
#pragma omp parallel for schedule(static) num_threads(h->nth)
    for (int b = 0; b < nb; b++) {
        float *pr = logit + (size_t)b * h->img_per, *sc = h->scratch + 2 * (size_t)omp_get_thread_num() * h->plane;
        size_t k = (size_t)(k0 + b);
        float *slice = prob_ras ? prob_ras + k * h->plane : sc + h->plane;
        uint8_t *mk = mask_ras + k * h->plane;
        for (size_t i = 0; i < h->img_per; i++) pr[i] = sigmoidf_(pr[i]);
        ls_unprep_plane(pr, h->Sd, h->Sd, h->ras, sc, slice);
        for (size_t i = 0; i < h->plane; i++) mk[i] = slice[i] >= th;
    }
}

/* Every RAS slice thresholded at th into mask_ras, and its probabilities into prob_ras unless that is NULL
 * (both x fastest, like the volume).
 *
 * A software pipeline over batches of slices with two sets of host buffers (pinned on CUDA): while the
 * device runs batch i (copies in, teacher, decoder, logits out, all queued on its stream), the host
 * resamples batch i+1 into the other set and maps batch i-1's logits back; then it waits for batch i.
 * On the CPU the ops run as they are called, so the order is the plain one. */
static ls_status predict(const ls_volume *ras, const ls_prep *prep, ls_teacher *t, ls_model *m, int batch,
                         ls_progress_fn progress, void *pctx, float th, float *prob_ras, uint8_t *mask_ras,
                         ls_segment_result *r, ls_error *err) {
    const ls_backend *be = m->be;
    const ls_vit_config *vc = &t->vit.cfg;
    int S = t->input_size, g = S / vc->patch, Sd = ls_model_out_side(&m->cfg), Z = (int)ras->geom.dim[2];
    if (m->cfg.grid != g || m->cfg.feat_dim != vc->dim)
        return ls_fail(err, LS_ERR_INPUT, "model expects %d teacher channels on a %dx%d grid; the teacher gives %d on %dx%d",
                       m->cfg.feat_dim, m->cfg.grid, m->cfg.grid, vc->dim, g, g);
    int dbatch = be->device == LS_DEV_CPU ? CPU_DECODER_BATCH : batch;
    if (batch < dbatch) batch = dbatch;
    host_side h = {.ras = ras, .prep = prep, .S = S, .Sd = Sd, .nth = be->nthreads > 0 ? be->nthreads : 1,
                   .in_per = (size_t)3 * S * S, .img_per = (size_t)Sd * Sd,
                   .plane = (size_t)ras->geom.dim[0] * (size_t)ras->geom.dim[1]};
    size_t f_per = (size_t)vc->dim * g * g, set = (size_t)batch * (h.in_per + 2 * h.img_per);
    h.scratch = ls_calloc((size_t)h.nth * 2 * h.plane, sizeof(float), err);
    float *host[2] = {be->mem->host_alloc(be, set * sizeof(float)), be->mem->host_alloc(be, set * sizeof(float))};
    ls_arena va = {0}, ma = {0}, io = {0};
    ls_status s = h.scratch && host[0] && host[1] ? LS_OK : ls_fail(err, LS_ERR_NOMEM, "cannot allocate %zu MB of host buffers",
                                                                    2 * set * sizeof(float) >> 20);
    if (!s) s = ls_arena_init(&va, be, ls_vit_arena_floats(vc, batch, S, S) * sizeof(float), err);
    if (!s) s = ls_arena_init(&ma, be, ls_model_arena_floats(&m->cfg, dbatch) * sizeof(float), err);
    if (!s) s = ls_arena_init(&io, be, ((size_t)batch * (h.in_per + f_per + h.img_per) + 64) * sizeof(float), err);
    float *dev_in = s ? NULL : ls_arena_floats(&io, (size_t)batch * h.in_per);
    float *dev_feat = s ? NULL : ls_arena_floats(&io, (size_t)batch * f_per);
    float *dev_img = s ? NULL : ls_arena_floats(&io, (size_t)batch * h.img_per);
    double t0 = ls_now(), tw;
    if (!s) prep_batch(&h, 0, Z < batch ? Z : batch, host[0], host[0] + (size_t)batch * h.in_per);
    r->seconds_resample += ls_now() - t0;
    for (int i = 0, k0 = 0; !s && k0 < Z; i++, k0 += batch) {
        int nb = Z - k0 < batch ? Z - k0 : batch, next = k0 + batch, prev = k0 - batch;
        float *in = host[i & 1], *img = in + (size_t)batch * h.in_per, *logit = img + (size_t)batch * h.img_per;
        tw = ls_now();
        be->mem->to_device(be, dev_in, in, (size_t)nb * h.in_per * sizeof(float));
        be->mem->to_device(be, dev_img, img, (size_t)nb * h.img_per * sizeof(float));
        ls_arena_reset(&va);
        s = ls_vit_forward(&t->vit, &va, dev_in, nb, S, S, dev_feat, NULL, err);
        r->seconds_teacher += ls_now() - tw;
        tw = ls_now();
        for (int d0 = 0; !s && d0 < nb; d0 += dbatch) {
            int nd = nb - d0 < dbatch ? nb - d0 : dbatch;
            ls_model_acts acts;
            ls_arena_reset(&ma);
            ls_model_forward(m, &ma, &acts, dev_feat + (size_t)d0 * f_per, dev_img + (size_t)d0 * h.img_per, nd, 0, NULL);
            be->mem->to_host_async(be, logit + (size_t)d0 * h.img_per, acts.logits, (size_t)nd * h.img_per * sizeof(float));
        }
        r->seconds_decoder += ls_now() - tw;
        tw = ls_now();
        float *other = host[(i + 1) & 1];
        if (next < Z) prep_batch(&h, next, Z - next < batch ? Z - next : batch, other, other + (size_t)batch * h.in_per);
        if (prev >= 0) unprep_batch(&h, prev, batch, other + (size_t)batch * (h.in_per + h.img_per), th, prob_ras, mask_ras);
        r->seconds_resample += ls_now() - tw;
        be->mem->sync(be);
        if (!s && progress) progress(pctx, k0 + nb, Z);
    }
    if (!s && Z > 0) {
        int last = (Z - 1) / batch, k0 = last * batch;
        float *logit = host[last & 1] + (size_t)batch * (h.in_per + h.img_per);
        tw = ls_now();
        unprep_batch(&h, k0, Z - k0, logit, th, prob_ras, mask_ras);
        r->seconds_resample += ls_now() - tw;
    }
    r->seconds_predict = ls_now() - t0;
    be->mem->sync(be);
    ls_arena_free(&va), ls_arena_free(&ma), ls_arena_free(&io);
    be->mem->host_free(be, host[0]), be->mem->host_free(be, host[1]);
    free(h.scratch);
    return s;
}

ls_status ls_segment_volume(const ls_volume *input, ls_teacher *t, ls_model *m, const ls_segment_opts *o,
                            ls_progress_fn progress, void *pctx, ls_segment_result *r, ls_error *err) {
    memset(r, 0, sizeof *r);
    ls_orient orient;
    ls_orient_from_geom(&input->geom, &orient);
    LS_TRY(ls_volume_to_ras(input, &orient, &r->ras, err));
    r->modality = o->modality < 0 ? ls_modality_guess(&r->ras) : (ls_modality)o->modality;
    r->geom = input->geom;
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
    if (!s && o->keep_largest) s = ls_mask_largest_component(r->ras_mask, r->ras.geom.dim, &r->components, err);
    if (!s && o->fill_holes) s = ls_mask_fill_holes(r->ras_mask, r->ras.geom.dim, err);
    if (!s && o->fill_holes) s = ls_mask_fill_holes_slices(r->ras_mask, r->ras.geom.dim, err);
    r->mask = s ? NULL : ls_calloc(n, 1, err);
    if (!s && !r->mask) s = LS_ERR_NOMEM;
    if (!s) ls_orient_mask(r->ras_mask, r->mask, input->geom.dim, &orient, 0);
    if (!s && o->keep_prob) s = ls_volume_from_ras(&prob_ras, &orient, &input->geom, &r->prob, err);
    /* Measured on the input grid, with the input's intensities. */
    if (!s) s = ls_mask_measure(input, r->mask, &r->stats, err);
    free(prob_ras.data);
    r->seconds_post = ls_now() - t0;
    if (s) ls_segment_result_free(r);
    return s;
}
