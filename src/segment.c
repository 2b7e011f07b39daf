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

/* Slices per decoder pass on the CPU, where two keep the arena of 448x448 activations small. On a GPU
 * the decoder takes the teacher's whole batch (fewer, larger launches). */
#define CPU_DECODER_BATCH 2

void ls_segment_opts_default(ls_segment_opts *o) {
    *o = (ls_segment_opts){.modality = -1, .threshold = 0.5f, .keep_largest = 1, .fill_holes = 1, .batch = 8, .keep_prob = 1};
}

void ls_segment_result_free(ls_segment_result *r) {
    ls_volume_free(&r->mask);
    ls_volume_free(&r->prob);
    ls_volume_free(&r->ras);
    free(r->ras_mask);
    memset(r, 0, sizeof *r);
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

/* Probabilities of every RAS slice into prob_ras (x fastest, like the volume). */
static ls_status predict(const ls_volume *ras, const ls_prep *prep, ls_teacher *t, ls_model *m, int batch,
                         ls_progress_fn progress, void *pctx, float *prob_ras, ls_segment_result *r, ls_error *err) {
    const ls_backend *be = m->be;
    const ls_vit_config *vc = &t->vit.cfg;
    int S = t->input_size, g = S / vc->patch, Sd = ls_model_out_side(&m->cfg), Z = (int)ras->geom.dim[2];
    int nx = (int)ras->geom.dim[0], ny = (int)ras->geom.dim[1];
    if (m->cfg.grid != g || m->cfg.feat_dim != vc->dim)
        return ls_fail(err, LS_ERR_INPUT, "model expects %d teacher channels on a %dx%d grid; the teacher gives %d on %dx%d",
                       m->cfg.feat_dim, m->cfg.grid, m->cfg.grid, vc->dim, g, g);
    int dbatch = be->device == LS_DEV_CPU ? CPU_DECODER_BATCH : batch;
    if (batch < dbatch) batch = dbatch;
    size_t in_per = (size_t)3 * S * S, f_per = (size_t)vc->dim * g * g, img_per = (size_t)Sd * Sd;
    float *host_in = ls_calloc((size_t)batch * in_per, sizeof(float), err);
    float *host_img = ls_calloc((size_t)dbatch * img_per, sizeof(float), err);
    float *host_logit = ls_calloc((size_t)dbatch * img_per, sizeof(float), err);
    /* Slices are resampled on the host, one per thread (scratch: one slice per thread). */
    int nth = be->nthreads > 0 ? be->nthreads : 1;
    size_t plane = (size_t)nx * ny;
    float *scratch = ls_calloc((size_t)nth * plane, sizeof(float), err);
    ls_arena va = {0}, ma = {0}, io = {0};
    ls_status s = host_in && host_img && host_logit && scratch ? LS_OK : LS_ERR_NOMEM;
    if (!s) s = ls_arena_init(&va, be, ls_vit_arena_floats(vc, batch, S, S) * sizeof(float), err);
    if (!s) s = ls_arena_init(&ma, be, ls_model_arena_floats(&m->cfg, dbatch) * sizeof(float), err);
    if (!s) s = ls_arena_init(&io, be, ((size_t)batch * (in_per + f_per) + dbatch * img_per + 64) * sizeof(float), err);
    float *dev_in = s ? NULL : ls_arena_floats(&io, (size_t)batch * in_per);
    float *dev_feat = s ? NULL : ls_arena_floats(&io, (size_t)batch * f_per);
    float *dev_img = s ? NULL : ls_arena_floats(&io, (size_t)dbatch * img_per);
    for (int k0 = 0; !s && k0 < Z; k0 += batch) {
        int nb = Z - k0 < batch ? Z - k0 : batch;
        double t0 = ls_now();
#pragma omp parallel for schedule(static) num_threads(nth)
        for (int b = 0; b < nb; b++)
            ls_prep_slice(prep, ras, k0 + b, scratch + omp_get_thread_num() * plane, host_in + (size_t)b * in_per);
        be->mem->to_device(be, dev_in, host_in, (size_t)nb * in_per * sizeof(float));
        ls_arena_reset(&va);
        s = ls_vit_forward(&t->vit, &va, dev_in, nb, S, S, dev_feat, NULL, err);
        be->mem->sync(be);
        double t1 = ls_now();
        r->seconds_teacher += t1 - t0;
        for (int d0 = 0; !s && d0 < nb; d0 += dbatch) {
            int nd = nb - d0 < dbatch ? nb - d0 : dbatch;
#pragma omp parallel for schedule(static) num_threads(nth)
            for (int b = 0; b < nd; b++)
                ls_prep_grey(prep, ras, k0 + d0 + b, scratch + omp_get_thread_num() * plane, host_img + (size_t)b * img_per,
                             Sd, Sd);
            be->mem->to_device(be, dev_img, host_img, (size_t)nd * img_per * sizeof(float));
            ls_model_acts acts;
            ls_arena_reset(&ma);
            ls_model_forward(m, &ma, &acts, dev_feat + (size_t)d0 * f_per, dev_img, nd, 0, NULL);
            be->mem->to_host(be, host_logit, acts.logits, (size_t)nd * img_per * sizeof(float));
#pragma omp parallel for schedule(static) num_threads(nth)
            for (int b = 0; b < nd; b++) {
                float *pr = host_logit + (size_t)b * img_per;
                for (size_t i = 0; i < img_per; i++) pr[i] = sigmoidf_(pr[i]);
                ls_unprep_plane(pr, Sd, Sd, ras, scratch + omp_get_thread_num() * plane, prob_ras + (size_t)(k0 + d0 + b) * plane);
            }
        }
        r->seconds_decoder += ls_now() - t1;
        if (!s && progress) progress(pctx, k0 + nb, Z);
    }
    ls_arena_free(&va), ls_arena_free(&ma), ls_arena_free(&io);
    free(host_in), free(host_img), free(host_logit), free(scratch);
    return s;
}

ls_status ls_segment_volume(const ls_volume *input, ls_teacher *t, ls_model *m, const ls_segment_opts *o,
                            ls_progress_fn progress, void *pctx, ls_segment_result *r, ls_error *err) {
    memset(r, 0, sizeof *r);
    ls_orient orient;
    ls_orient_from_geom(&input->geom, &orient);
    LS_TRY(ls_volume_to_ras(input, &orient, &r->ras, err));
    r->modality = o->modality < 0 ? ls_modality_guess(&r->ras) : (ls_modality)o->modality;
    ls_prep prep;
    ls_status s = ls_prep_init(&prep, &r->ras, r->modality, t->input_size, t->input_size, err);
    r->window_lo = prep.lo, r->window_hi = prep.hi;
    size_t n = ls_volume_nvox(&r->ras);
    ls_volume prob_ras = r->ras;
    prob_ras.data = s ? NULL : ls_calloc(n, sizeof(float), err);
    if (!s && !prob_ras.data) s = LS_ERR_NOMEM;
    if (!s) s = predict(&r->ras, &prep, t, m, o->batch, progress, pctx, prob_ras.data, r, err);
    double t0 = ls_now();
    r->ras_mask = s ? NULL : ls_calloc(n, 1, err);
    if (!s && !r->ras_mask) s = LS_ERR_NOMEM;
    if (!s) {
        const float *pr = prob_ras.data;
        uint8_t *mr = r->ras_mask;
        float th = o->threshold;
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < n; i++) mr[i] = pr[i] >= th;
        if (o->keep_largest) s = ls_mask_largest_component(r->ras_mask, r->ras.geom.dim, &r->components, err);
        if (!s && o->fill_holes) s = ls_mask_fill_holes(r->ras_mask, r->ras.geom.dim, err);
        if (!s && o->fill_holes) s = ls_mask_fill_holes_slices(r->ras_mask, r->ras.geom.dim, err);
    }
    ls_volume mask_ras = r->ras;
    mask_ras.data = s ? NULL : ls_calloc(n, sizeof(float), err);
    if (!s && !mask_ras.data) s = LS_ERR_NOMEM;
    if (!s) {
        float *md = mask_ras.data;
        const uint8_t *mr = r->ras_mask;
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < n; i++) md[i] = mr[i];
        s = ls_volume_from_ras(&mask_ras, &orient, &input->geom, &r->mask, err);
    }
    if (!s && o->keep_prob) s = ls_volume_from_ras(&prob_ras, &orient, &input->geom, &r->prob, err);
    if (!s) {
        /* Measured on the input grid, with the input's intensities. */
        uint8_t *m8 = ls_calloc(n, 1, err);
        if (!m8) s = LS_ERR_NOMEM;
        else {
            const float *md = r->mask.data;
#pragma omp parallel for simd schedule(static)
            for (size_t i = 0; i < n; i++) m8[i] = md[i] > 0.5f;
            ls_mask_measure(input, m8, &r->stats);
            free(m8);
        }
    }
    free(mask_ras.data);
    free(prob_ras.data);
    r->seconds_post = ls_now() - t0;
    if (s) ls_segment_result_free(r);
    return s;
}
