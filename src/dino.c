/*
 * dino.c — see dino.h. Layout: configuration (presets, JSON), the projection head, the trainer's state
 * and one iteration, teacher export, data (grey slices, multi-crop augmentation), state files and the
 * epoch loop.
 *
 * Legend: B images (slices) per batch, G/L global/local crop side, NL local crops per image, NC = 2 + NL
 * student crops, R = NC*B student rows, D ViT width, K prototypes, S source slice side.
 */
#include "dino.h"

#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preprocess.h"
#include "fields.h"
#include "rng.h"
#include "safetensors.h"
#include "state.h"
#include "util.h"

/* ------------------------------------------------------------------ configuration */

void ls_dino_config_default(ls_dino_config *c) {
    *c = (ls_dino_config){
        .datasets = "", .limit = 0, .slices_per_epoch = 800, .source_size = 128, .arch = "d6w192h3p8",
        .head_hidden = 512, .head_bottleneck = 128, .out_dim = 1024,
        .global_size = 96, .local_size = 48, .nlocal = 4, .global_scale_min = 0.4f, .local_scale_min = 0.05f,
        .local_scale_max = 0.4f,
        /* Sharper and faster than main_dino.py's 0.04 / 0.996 / 5e-4: at batch 16 on these scans those kept
         * the loss at ln K (uniform outputs) from the first epoch on (docs/pretraining.md, "The run"). */
        .student_temp = 0.1f, .teacher_temp = 0.01f, .warmup_teacher_temp = 0.01f, .center_momentum = 0.9f,
        .warmup_teacher_temp_epochs = 0,
        .epochs = 25, .batch = 16, .warmup_epochs = 3, .freeze_last_layer = 1,
        .lr = 1e-3f, .min_lr = 1e-6f, .weight_decay = 0.04f, .weight_decay_end = 0.4f, .momentum_teacher = 0.99f,
        .clip_grad = 3.0f, .seed = 1};
}

ls_status ls_dino_config_preset(ls_dino_config *c, const char *name, ls_error *err) {
    ls_dino_config_default(c);
    if (!strcmp(name, "cpu")) return LS_OK;
    if (!strcmp(name, "gpu")) { /* main_dino.py's ViT-S/16 recipe, batch 64 on one GPU (lr = 0.0005 * 64 / 256) */
        snprintf(c->arch, sizeof c->arch, "vits16");
        c->head_hidden = 2048, c->head_bottleneck = 256, c->out_dim = 65536, c->source_size = 256;
        c->global_size = 224, c->local_size = 96, c->nlocal = 8, c->batch = 64, c->slices_per_epoch = 0;
        c->teacher_temp = 0.07f, c->warmup_teacher_temp = 0.04f, c->warmup_teacher_temp_epochs = 30, c->lr = 1.25e-4f;
        c->momentum_teacher = 0.996f, c->epochs = 100, c->warmup_epochs = 10;
        return LS_OK;
    }
    return ls_fail(err, LS_ERR_INPUT, "unknown pretraining preset '%s' (cpu or gpu)", name);
}

/* Every setting, for JSON in both directions (fields.h). */
#define FLD(n, k) LS_FIELD(ls_dino_config, n, k)
static const ls_field fields[] = {
    FLD(datasets, 's'), FLD(limit, 'i'), FLD(slices_per_epoch, 'i'), FLD(source_size, 'i'), FLD(arch, 's'),
    FLD(head_hidden, 'i'), FLD(head_bottleneck, 'i'), FLD(out_dim, 'i'), FLD(global_size, 'i'), FLD(local_size, 'i'),
    FLD(nlocal, 'i'), FLD(global_scale_min, 'f'), FLD(local_scale_min, 'f'), FLD(local_scale_max, 'f'),
    FLD(student_temp, 'f'), FLD(teacher_temp, 'f'), FLD(warmup_teacher_temp, 'f'), FLD(center_momentum, 'f'),
    FLD(warmup_teacher_temp_epochs, 'i'), FLD(epochs, 'i'), FLD(batch, 'i'), FLD(warmup_epochs, 'i'),
    FLD(freeze_last_layer, 'i'), FLD(lr, 'f'), FLD(min_lr, 'f'), FLD(weight_decay, 'f'), FLD(weight_decay_end, 'f'),
    FLD(momentum_teacher, 'f'), FLD(clip_grad, 'f'), FLD(seed, 'u'), FLD(keep_every, 'i'),
};
#define NFIELDS ((int)(sizeof fields / sizeof *fields))

char *ls_dino_config_json(const ls_dino_config *c) { return ls_fields_json(fields, NFIELDS, c); }

ls_status ls_dino_config_from_json(ls_dino_config *c, const char *text, ls_error *err) {
    ls_dino_config_default(c);
    return ls_fields_from_json(fields, NFIELDS, c, text, "pretraining configuration", err);
}

ls_status ls_dino_config_check(const ls_dino_config *c, ls_error *err) {
    ls_vit_config vc;
    LS_TRY(ls_vit_config_preset(c->arch, &vc, err));
    if (c->batch < 1 || c->epochs < 1 || c->nlocal < 0 || c->limit < 0 || c->slices_per_epoch < 0 ||
        c->warmup_epochs < 0 || c->freeze_last_layer < 0 || c->warmup_teacher_temp_epochs < 0)
        return ls_fail(err, LS_ERR_INPUT, "batch and epochs must be positive and counts not negative");
    if (c->head_hidden < 1 || c->head_bottleneck < 1 || c->out_dim < 1)
        return ls_fail(err, LS_ERR_INPUT, "head sizes must be positive");
    if (c->global_size < vc.patch || c->global_size % vc.patch || c->local_size < vc.patch || c->local_size % vc.patch)
        return ls_fail(err, LS_ERR_INPUT, "crop sizes %d and %d must be positive multiples of the patch size %d",
                       c->global_size, c->local_size, vc.patch);
    if (c->source_size < 8 || c->source_size > 4096) return ls_fail(err, LS_ERR_INPUT, "source size %d out of range", c->source_size);
    if (!(c->global_scale_min > 0 && c->global_scale_min <= 1 && c->local_scale_min > 0 &&
          c->local_scale_min <= c->local_scale_max && c->local_scale_max <= 1))
        return ls_fail(err, LS_ERR_INPUT, "crop scales must lie in (0, 1] with min <= max");
    if (!(c->student_temp > 0 && c->teacher_temp > 0 && c->warmup_teacher_temp > 0 && c->center_momentum >= 0 &&
          c->center_momentum <= 1))
        return ls_fail(err, LS_ERR_INPUT, "temperatures must be positive and the centre momentum in [0, 1]");
    if (!(c->lr > 0 && c->min_lr >= 0 && c->min_lr <= c->lr && c->weight_decay >= 0 && c->weight_decay_end >= 0 &&
          c->momentum_teacher >= 0 && c->momentum_teacher <= 1 && c->clip_grad >= 0))
        return ls_fail(err, LS_ERR_INPUT,
                       "lr must be positive (min-lr from 0 to lr), decays and clipping not negative, momentum in [0, 1]");
    return LS_OK;
}

/* ------------------------------------------------------------------ initialisation */

/* ------------------------------------------------------------------ projection head */

static void head_assign(ls_dino_head *h) {
    size_t I = (size_t)h->in_dim, Hd = (size_t)h->hidden, Bn = (size_t)h->bottleneck;
    float *p = h->params;
    h->w1 = p, p += Hd * I;
    h->b1 = p, p += Hd;
    h->w2 = p, p += Hd * Hd;
    h->b2 = p, p += Hd;
    h->w3 = p, p += Bn * Hd;
    h->b3 = p, p += Bn;
    h->v = p;
}

ls_status ls_dino_head_init(ls_dino_head *h, const ls_backend *be, int in_dim, int hidden, int bottleneck, int K,
                            uint64_t seed, ls_error *err) {
    memset(h, 0, sizeof *h);
    h->be = be, h->in_dim = in_dim, h->hidden = hidden, h->bottleneck = bottleneck, h->K = K;
    size_t I = (size_t)in_dim, Hd = (size_t)hidden, Bn = (size_t)bottleneck;
    h->nparams = Hd * I + Hd + Hd * Hd + Hd + Bn * Hd + Bn + (size_t)K * Bn;
    float *host = ls_calloc(h->nparams, sizeof(float), err);
    if (!host) return LS_ERR_NOMEM;
    h->params = host;
    head_assign(h);
    ls_rng r = {seed ^ 0x6a09e667f3bcc909ull};
    if (ls_vit_init_source(&r, "head.w1", h->w1, Hd * I, err) || ls_vit_init_source(&r, "head.w2", h->w2, Hd * Hd, err) ||
        ls_vit_init_source(&r, "head.w3", h->w3, Bn * Hd, err) ||
        ls_vit_init_source(&r, "head.last_layer", h->v, (size_t)K * Bn, err)) {
        free(host);
        return LS_ERR_NOMEM;
    }
    h->params = be->mem->alloc(be, h->nparams * sizeof(float));
    h->grads = be->mem->alloc(be, h->nparams * sizeof(float));
    if (!h->params || !h->grads) {
        free(host);
        ls_dino_head_free(h);
        return ls_fail(err, LS_ERR_NOMEM, "cannot allocate a projection head of %zu weights", h->nparams);
    }
    be->mem->to_device(be, h->params, host, h->nparams * sizeof(float));
    be->mem->zero(be, h->grads, h->nparams * sizeof(float));
    free(host);
    head_assign(h);
    return LS_OK;
}

void ls_dino_head_free(ls_dino_head *h) {
    if (h->be && h->params) h->be->mem->free(h->be, h->params);
    if (h->be && h->grads) h->be->mem->free(h->be, h->grads);
    memset(h, 0, sizeof *h);
}

size_t ls_dino_head_arena_floats(const ls_dino_head *h, int R) {
    size_t Hd = (size_t)h->hidden, Bn = (size_t)h->bottleneck, K = (size_t)h->K;
    size_t fwd = 4 * (size_t)R * Hd + (size_t)R * Bn + (size_t)R + K * Bn + K;
    size_t bwd = K * Bn + (size_t)R * Bn + 2 * (size_t)R * Hd;
    return fwd + bwd + 16 * 16;
}

#define NORM_EPS 1e-12f

void ls_dino_head_forward(ls_dino_head *h, ls_arena *ar, ls_dino_head_acts *a, const float *x, int R, float *logits) {
    const ls_backend *be = h->be;
    const ls_ops_dense *op = be->dense;
    int I = h->in_dim, Hd = h->hidden, Bn = h->bottleneck, K = h->K;
    size_t RH = (size_t)R * Hd;
    a->R = R, a->x = x;
    a->pre1 = ls_arena_floats(ar, RH), a->act1 = ls_arena_floats(ar, RH);
    a->pre2 = ls_arena_floats(ar, RH), a->act2 = ls_arena_floats(ar, RH);
    a->zn = ls_arena_floats(ar, (size_t)R * Bn), a->znorm = ls_arena_floats(ar, (size_t)R);
    a->wn = ls_arena_floats(ar, (size_t)K * Bn), a->wnorm = ls_arena_floats(ar, (size_t)K);
    op->gemm(be, 0, 1, R, Hd, I, 1.0f, x, I, h->w1, I, 0.0f, a->pre1, Hd);
    op->add_bias(be, a->pre1, h->b1, (size_t)R, Hd);
    be->mem->copy(be, a->act1, a->pre1, RH * sizeof(float));
    op->bias_gelu(be, a->act1, NULL, (size_t)R, Hd);
    op->gemm(be, 0, 1, R, Hd, Hd, 1.0f, a->act1, Hd, h->w2, Hd, 0.0f, a->pre2, Hd);
    op->add_bias(be, a->pre2, h->b2, (size_t)R, Hd);
    be->mem->copy(be, a->act2, a->pre2, RH * sizeof(float));
    op->bias_gelu(be, a->act2, NULL, (size_t)R, Hd);
    op->gemm(be, 0, 1, R, Bn, Hd, 1.0f, a->act2, Hd, h->w3, Hd, 0.0f, a->zn, Bn);
    op->add_bias(be, a->zn, h->b3, (size_t)R, Bn);
    op->l2norm(be, a->zn, a->znorm, a->zn, (size_t)R, Bn, NORM_EPS);
    op->l2norm(be, a->wn, a->wnorm, h->v, (size_t)K, Bn, 1e-12f); /* weight norm, g = 1 (torch's eps: none; 1e-12 guards 0) */
    op->gemm(be, 0, 1, R, K, Bn, 1.0f, a->zn, Bn, a->wn, Bn, 0.0f, logits, K);
}

void ls_dino_head_backward(ls_dino_head *h, ls_arena *ar, const ls_dino_head_acts *a, const float *dlogits,
                           float *dx) {
    const ls_backend *be = h->be;
    const ls_ops_dense *op = be->dense;
    int I = h->in_dim, Hd = h->hidden, Bn = h->bottleneck, K = h->K, R = a->R;
    float *g = h->grads, *gw1 = g + (h->w1 - h->params), *gb1 = g + (h->b1 - h->params);
    float *gw2 = g + (h->w2 - h->params), *gb2 = g + (h->b2 - h->params), *gw3 = g + (h->w3 - h->params);
    float *gb3 = g + (h->b3 - h->params), *gv = g + (h->v - h->params);
    float *dwn = ls_arena_floats(ar, (size_t)K * Bn), *dz = ls_arena_floats(ar, (size_t)R * Bn);
    float *da = ls_arena_floats(ar, (size_t)R * Hd), *db = ls_arena_floats(ar, (size_t)R * Hd);
    /* prototypes: logits = zn wn^T */
    op->gemm(be, 1, 0, K, Bn, R, 1.0f, dlogits, K, a->zn, Bn, 0.0f, dwn, Bn);
    op->l2norm_bwd(be, dwn, dwn, a->wn, a->wnorm, (size_t)K, Bn, 1e-12f);
    op->add(be, gv, dwn, (size_t)K * Bn);
    op->gemm(be, 0, 0, R, Bn, K, 1.0f, dlogits, K, a->wn, Bn, 0.0f, dz, Bn);
    op->l2norm_bwd(be, dz, dz, a->zn, a->znorm, (size_t)R, Bn, NORM_EPS);
    /* layer 3 */
    op->bias_grad(be, gb3, dz, (size_t)R, Bn);
    op->gemm(be, 1, 0, Bn, Hd, R, 1.0f, dz, Bn, a->act2, Hd, 1.0f, gw3, Hd);
    op->gemm(be, 0, 0, R, Hd, Bn, 1.0f, dz, Bn, h->w3, Hd, 0.0f, da, Hd);
    op->gelu_bwd(be, da, da, a->pre2, (size_t)R * Hd);
    /* layer 2 */
    op->bias_grad(be, gb2, da, (size_t)R, Hd);
    op->gemm(be, 1, 0, Hd, Hd, R, 1.0f, da, Hd, a->act1, Hd, 1.0f, gw2, Hd);
    op->gemm(be, 0, 0, R, Hd, Hd, 1.0f, da, Hd, h->w2, Hd, 0.0f, db, Hd);
    op->gelu_bwd(be, db, db, a->pre1, (size_t)R * Hd);
    /* layer 1 */
    op->bias_grad(be, gb1, db, (size_t)R, Hd);
    op->gemm(be, 1, 0, Hd, I, R, 1.0f, db, Hd, a->x, I, 1.0f, gw1, I);
    if (dx) op->gemm(be, 0, 0, R, I, Hd, 1.0f, db, Hd, h->w1, I, 0.0f, dx, I);
}

/* ------------------------------------------------------------------ the trainer's state */

static ls_status net_init(ls_dino_net *n, const ls_dino_config *c, const ls_backend *be, ls_error *err) {
    ls_vit_config vc;
    LS_TRY(ls_vit_config_preset(c->arch, &vc, err));
    ls_rng r = {c->seed};
    LS_TRY(ls_vit_load(&n->vit, be, &vc, ls_vit_init_source, &r, err));
    return ls_dino_head_init(&n->head, be, vc.dim, c->head_hidden, c->head_bottleneck, c->out_dim, c->seed, err);
}

static void net_free(ls_dino_net *n) {
    ls_vit_free(&n->vit);
    ls_dino_head_free(&n->head);
}

static void net_copy(ls_dino_net *dst, const ls_dino_net *src) {
    const ls_backend *be = src->vit.be;
    be->mem->copy(be, dst->vit.params, src->vit.params, src->vit.nparams * sizeof(float));
    be->mem->copy(be, dst->head.params, src->head.params, src->head.nparams * sizeof(float));
    ls_vit_params_changed(&dst->vit);
}

/* The student's tensors, in params order, with DINO's decay grouping (biases and 1-D tensors are not
 * decayed; cls_token and pos_embed, 3-D in PyTorch, are). */
static ls_status build_tensors(ls_dino *d, ls_error *err) {
    ls_vit *m = &d->student.vit;
    ls_dino_head *h = &d->student.head;
    const ls_vit_config *c = &m->cfg;
    size_t D = (size_t)c->dim, P = (size_t)c->patch, G = (size_t)c->pos_grid, Hd = (size_t)c->mlp_hidden;
    d->tensors = ls_calloc(6 + 12 * (size_t)c->depth + 7, sizeof *d->tensors, err);
    if (!d->tensors) return LS_ERR_NOMEM;
    int n = 0;
#define VT(ptr, count, dec) \
    (d->tensors[n] = (ls_dino_tensor){(ptr), m->grads + ((ptr)-m->params), d->m_vit + ((ptr)-m->params), \
                                      d->v_vit + ((ptr)-m->params), (count), (dec), 0}, n++)
    VT(m->cls, D, 1);
    VT(m->pos, (1 + G * G) * D, 1);
    VT(m->patch_w, D * 3 * P * P, 1);
    VT(m->patch_b, D, 0);
    VT(m->norm_w, D, 0);
    VT(m->norm_b, D, 0);
    for (int i = 0; i < c->depth; i++) {
        const ls_vit_block *b = &m->blocks[i];
        VT(b->ln1_w, D, 0), VT(b->ln1_b, D, 0), VT(b->qkv_w, 3 * D * D, 1), VT(b->qkv_b, 3 * D, 0);
        VT(b->proj_w, D * D, 1), VT(b->proj_b, D, 0), VT(b->ln2_w, D, 0), VT(b->ln2_b, D, 0);
        VT(b->fc1_w, Hd * D, 1), VT(b->fc1_b, Hd, 0), VT(b->fc2_w, D * Hd, 1), VT(b->fc2_b, D, 0);
    }
#undef VT
    size_t I = (size_t)h->in_dim, HH = (size_t)h->hidden, Bn = (size_t)h->bottleneck;
#define HT(ptr, count, dec, last) \
    (d->tensors[n] = (ls_dino_tensor){(ptr), h->grads + ((ptr)-h->params), d->m_head + ((ptr)-h->params), \
                                      d->v_head + ((ptr)-h->params), (count), (dec), (last)}, n++)
    HT(h->w1, HH * I, 1, 0), HT(h->b1, HH, 0, 0), HT(h->w2, HH * HH, 1, 0), HT(h->b2, HH, 0, 0);
    HT(h->w3, Bn * HH, 1, 0), HT(h->b3, Bn, 0, 0), HT(h->v, (size_t)h->K * Bn, 1, 1);
#undef HT
    d->ntensors = n;
    return LS_OK;
}

static float *zeroed(const ls_backend *be, size_t n) {
    float *p = be->mem->alloc(be, n * sizeof(float));
    if (p) be->mem->zero(be, p, n * sizeof(float));
    return p;
}

ls_status ls_dino_init(ls_dino *d, const ls_dino_config *c, const ls_backend *be, ls_error *err) {
    memset(d, 0, sizeof *d);
    d->cfg = *c, d->be = be;
    if (!be->dense->l2norm || !be->dense->l2norm_bwd || !be->loss->dino_loss || !be->loss->adamw_step ||
        !be->loss->center_update || !be->loss->ema || !be->loss->clip_norm)
        return ls_fail(err, LS_ERR_UNSUPPORTED, "the %s backend lacks DINO's ops (pretrain with --device cpu)",
                       ls_device_name(be->device));
    ls_status s = ls_dino_config_check(c, err);
    if (!s) s = net_init(&d->student, c, be, err);
    if (!s) s = net_init(&d->teacher, c, be, err);
    if (!s) s = ls_vit_alloc_grads(&d->student.vit, err);
    if (s) {
        ls_dino_free(d);
        return s;
    }
    net_copy(&d->teacher, &d->student);
    size_t nv = d->student.vit.nparams, nh = d->student.head.nparams, K = (size_t)c->out_dim;
    d->m_vit = zeroed(be, nv), d->v_vit = zeroed(be, nv), d->m_head = zeroed(be, nh), d->v_head = zeroed(be, nh);
    d->center = zeroed(be, K);
    if (!d->m_vit || !d->v_vit || !d->m_head || !d->v_head || !d->center)
        s = ls_fail(err, LS_ERR_NOMEM, "cannot allocate the optimiser state");
    if (!s) s = build_tensors(d, err);
    const ls_vit_config *vc = &d->student.vit.cfg;
    int B = c->batch, G = c->global_size, L = c->local_size, NL = c->nlocal, R = (2 + NL) * B;
    size_t vit_f = ls_vit_train_arena_floats(vc, 2 * B, G, G) + (NL ? ls_vit_train_arena_floats(vc, NL * B, L, L) : 0);
    if (!s) s = ls_arena_init(&d->arena, be, vit_f * sizeof(float), err);
    if (!s) s = ls_arena_init(&d->harena, be, ls_dino_head_arena_floats(&d->student.head, R) * sizeof(float), err);
    size_t Dm = (size_t)vc->dim, ng = (size_t)2 * B * 3 * G * G, nl = (size_t)NL * B * 3 * L * L;
    size_t io = ng + nl + 2 * B * Dm + 2 * (size_t)R * Dm + 2 * B * K + 2 * (size_t)R * K + (size_t)(2 * B + R) * K + 2 + 16 * 12;
    if (!s) s = ls_arena_init(&d->io, be, io * sizeof(float), err);
    if (!s) {
        d->d_global = ls_arena_floats(&d->io, ng), d->d_local = ls_arena_floats(&d->io, nl ? nl : 1);
        d->cls_t = ls_arena_floats(&d->io, 2 * B * Dm), d->cls_s = ls_arena_floats(&d->io, (size_t)R * Dm);
        d->dcls = ls_arena_floats(&d->io, (size_t)R * Dm), d->logit_t = ls_arena_floats(&d->io, 2 * B * K);
        d->logit_s = ls_arena_floats(&d->io, (size_t)R * K), d->dlogit = ls_arena_floats(&d->io, (size_t)R * K);
        d->loss_ws = ls_arena_floats(&d->io, (size_t)(2 * B + R) * K);
        d->d_loss = (double *)ls_arena_floats(&d->io, 2); /* 64-byte aligned */
    }
    if (s) ls_dino_free(d);
    return s;
}

void ls_dino_free(ls_dino *d) {
    const ls_backend *be = d->be;
    net_free(&d->student), net_free(&d->teacher);
    float *bufs[5] = {d->m_vit, d->v_vit, d->m_head, d->v_head, d->center};
    for (int i = 0; i < 5; i++)
        if (bufs[i]) be->mem->free(be, bufs[i]);
    free(d->tensors);
    ls_arena_free(&d->arena), ls_arena_free(&d->harena), ls_arena_free(&d->io);
    memset(d, 0, sizeof *d);
}

/* main_dino.py's cosine_scheduler at iteration i of `total` with `warm` linear warm-up iterations. */
static double cosine_at(double base, double final, long total, long warm, double start_warm, long i) {
    if (i < warm) return warm > 1 ? start_warm + (base - start_warm) * (double)i / (double)(warm - 1) : start_warm;
    long n = total - warm, k = i - warm;
    if (n <= 0) return final;
    return final + 0.5 * (base - final) * (1 + cos(M_PI * (double)k / (double)n));
}

void ls_dino_schedule(const ls_dino_config *c, int niter, int epoch, int it, ls_dino_sched *s) {
    long total = (long)c->epochs * niter, i = (long)epoch * niter + it;
    long warm = (long)c->warmup_epochs * niter;
    if (warm > total) warm = total;
    s->lr = (float)cosine_at(c->lr, c->min_lr, total, warm, 0, i);
    s->weight_decay = (float)cosine_at(c->weight_decay, c->weight_decay_end, total, 0, 0, i);
    s->momentum = (float)cosine_at(c->momentum_teacher, 1.0, total, 0, 0, i);
    int we = c->warmup_teacher_temp_epochs;
    s->teacher_temp = epoch < we ? (float)(we > 1 ? c->warmup_teacher_temp + (c->teacher_temp - c->warmup_teacher_temp) *
                                                         (double)epoch / (double)(we - 1)
                                                   : c->warmup_teacher_temp)
                                 : c->teacher_temp;
    s->freeze_last_layer = epoch < c->freeze_last_layer;
}

ls_status ls_dino_queue_step(ls_dino *d, const float *globals, const float *locals, const ls_dino_sched *s,
                             ls_error *err) {
    const ls_backend *be = d->be;
    const ls_dino_config *c = &d->cfg;
    ls_vit *sv = &d->student.vit;
    int B = c->batch, G = c->global_size, L = c->local_size, NL = c->nlocal, NC = 2 + NL, R = NC * B;
    int D = sv->cfg.dim, K = c->out_dim;
    be->mem->to_device(be, d->d_global, globals, (size_t)2 * B * 3 * G * G * sizeof(float));
    if (NL) be->mem->to_device(be, d->d_local, locals, (size_t)NL * B * 3 * L * L * sizeof(float));
    ls_vit_acts ag, al;
    ls_dino_head_acts ha;
    /* teacher: global crops only */
    ls_arena_reset(&d->arena), ls_arena_reset(&d->harena);
    LS_TRY(ls_vit_forward_train(&d->teacher.vit, &d->arena, &ag, d->d_global, 2 * B, G, G, NULL, d->cls_t, err));
    ls_dino_head_forward(&d->teacher.head, &d->harena, &ha, d->cls_t, 2 * B, d->logit_t);
    /* student: every crop, one ViT pass per resolution, one head pass over all class tokens */
    ls_arena_reset(&d->arena), ls_arena_reset(&d->harena);
    LS_TRY(ls_vit_forward_train(sv, &d->arena, &ag, d->d_global, 2 * B, G, G, NULL, d->cls_s, err));
    if (NL)
        LS_TRY(ls_vit_forward_train(sv, &d->arena, &al, d->d_local, NL * B, L, L, NULL, d->cls_s + (size_t)2 * B * D,
                                    err));
    ls_dino_head_forward(&d->student.head, &d->harena, &ha, d->cls_s, R, d->logit_s);
    be->loss->dino_loss(be, d->logit_s, d->logit_t, d->center, B, NC, 2, K, c->student_temp, s->teacher_temp, d->dlogit,
                        d->loss_ws, d->d_loss);
    be->loss->center_update(be, d->center, d->logit_t, (size_t)2 * B, K, c->center_momentum);
    /* backward */
    be->mem->zero(be, sv->grads, sv->nparams * sizeof(float));
    be->mem->zero(be, d->student.head.grads, d->student.head.nparams * sizeof(float));
    ls_dino_head_backward(&d->student.head, &d->harena, &ha, d->dlogit, d->dcls);
    size_t mark = d->arena.used;
    if (NL) LS_TRY(ls_vit_backward(sv, &d->arena, &al, NULL, d->dcls + (size_t)2 * B * D, NULL, err));
    d->arena.used = mark;
    LS_TRY(ls_vit_backward(sv, &d->arena, &ag, NULL, d->dcls, NULL, err));
    /* clip each tensor's gradient, cancel the prototype layer's while frozen, AdamW, EMA */
    d->step++;
    if (!s->freeze_last_layer) d->step_last++;
    for (int i = 0; i < d->ntensors; i++) {
        const ls_dino_tensor *t = &d->tensors[i];
        if (t->last_layer && s->freeze_last_layer) continue;
        if (c->clip_grad > 0) be->loss->clip_norm(be, t->g, t->n, c->clip_grad);
        be->loss->adamw_step(be, t->p, t->g, t->m, t->v, t->n, t->last_layer ? d->step_last : d->step, s->lr, 0.9f,
                             0.999f, 1e-8f, t->decay ? s->weight_decay : 0.0f);
    }
    be->loss->ema(be, d->teacher.vit.params, sv->params, sv->nparams, s->momentum);
    be->loss->ema(be, d->teacher.head.params, d->student.head.params, d->student.head.nparams, s->momentum);
    ls_vit_params_changed(sv), ls_vit_params_changed(&d->teacher.vit);
    return LS_OK;
}

ls_status ls_dino_collect(ls_dino *d, double *loss, ls_error *err) {
    double l;
    d->be->mem->to_host(d->be, &l, d->d_loss, sizeof l);
    if (loss) *loss = l;
    if (!isfinite(l)) return ls_fail(err, LS_ERR_INPUT, "DINO loss is not finite (%g): lower the learning rate", l);
    return LS_OK;
}

ls_status ls_dino_step(ls_dino *d, const float *globals, const float *locals, const ls_dino_sched *s, double *loss,
                       ls_error *err) {
    LS_TRY(ls_dino_queue_step(d, globals, locals, s, err));
    return ls_dino_collect(d, loss, err);
}

/* ------------------------------------------------------------------ teacher export */

#define SHARD_BUDGET ((size_t)(15u << 20) - ((size_t)64 << 10)) /* bytes of tensors per file, header room kept */
#define MAX_ENTRIES (6 + 12 * 64)

/* The ViT's tensors with timm's names and shapes, pointing into `host` (a copy of params). */
static int vit_entries(const ls_vit *m, const float *host, ls_st_entry *e, char (*names)[64]) {
    const ls_vit_config *c = &m->cfg;
    int64_t D = c->dim, P = c->patch, G = c->pos_grid, Hd = c->mlp_hidden;
    int n = 0;
#define ENT(nm, ptr, nd, ...)                                                                                  \
    (snprintf(names[n], 64, "%s", nm), e[n] = (ls_st_entry){names[n], host + ((ptr)-m->params), nd, {__VA_ARGS__}, 0}, \
     n++)
    ENT("cls_token", m->cls, 3, 1, 1, D);
    ENT("pos_embed", m->pos, 3, 1, 1 + G * G, D);
    ENT("patch_embed.proj.weight", m->patch_w, 4, D, 3, P, P);
    ENT("patch_embed.proj.bias", m->patch_b, 1, D);
    for (int i = 0; i < c->depth; i++) {
        const ls_vit_block *b = &m->blocks[i];
        char nm[64];
#define BENT(suffix, ptr, nd, ...) (snprintf(nm, sizeof nm, "blocks.%d.%s", i, suffix), ENT(nm, ptr, nd, __VA_ARGS__))
        BENT("norm1.weight", b->ln1_w, 1, D), BENT("norm1.bias", b->ln1_b, 1, D);
        BENT("attn.qkv.weight", b->qkv_w, 2, 3 * D, D), BENT("attn.qkv.bias", b->qkv_b, 1, 3 * D);
        BENT("attn.proj.weight", b->proj_w, 2, D, D), BENT("attn.proj.bias", b->proj_b, 1, D);
        BENT("norm2.weight", b->ln2_w, 1, D), BENT("norm2.bias", b->ln2_b, 1, D);
        BENT("mlp.fc1.weight", b->fc1_w, 2, Hd, D), BENT("mlp.fc1.bias", b->fc1_b, 1, Hd);
        BENT("mlp.fc2.weight", b->fc2_w, 2, D, Hd), BENT("mlp.fc2.bias", b->fc2_b, 1, D);
#undef BENT
    }
    ENT("norm.weight", m->norm_w, 1, D);
    ENT("norm.bias", m->norm_b, 1, D);
#undef ENT
    return n;
}

static size_t entry_bytes(const ls_st_entry *e) {
    size_t n = 1;
    for (int i = 0; i < e->ndim; i++) n *= (size_t)e->shape[i];
    return n * sizeof(float);
}

ls_status ls_dino_export_teacher(const ls_dino *d, const char *path, char *first, size_t nfirst, ls_error *err) {
    const ls_vit *m = &d->teacher.vit;
    const ls_backend *be = d->be;
    if (m->cfg.depth > 64) return ls_fail(err, LS_ERR_INPUT, "teacher export: depth %d > 64", m->cfg.depth);
    float *host = ls_calloc(m->nparams, sizeof(float), err);
    ls_st_entry *e = ls_calloc(MAX_ENTRIES, sizeof *e, err);
    char(*names)[64] = ls_calloc(MAX_ENTRIES, sizeof *names, err);
    ls_status s = host && e && names ? LS_OK : LS_ERR_NOMEM;
    if (!s) {
        be->mem->to_host(be, host, m->params, m->nparams * sizeof(float));
        int n = vit_entries(m, host, e, names), groups[MAX_ENTRIES + 1], ng = 0;
        size_t size = 0;
        groups[0] = 0;
        for (int i = 0; i < n; i++) { /* tensors in order, never split; a file closes before it would overflow */
            size_t b = entry_bytes(&e[i]);
            if (i > groups[ng] && size + b > SHARD_BUDGET) groups[++ng] = i, size = 0;
            size += b;
        }
        groups[++ng] = n;
        char *json = ls_dino_config_json(&d->cfg);
        const char *meta[] = {"arch", m->cfg.name, "format", "timm", "livseg_dino_config", json};
        size_t len = strlen(path);
        int stem = len > 12 && !strcmp(path + len - 12, ".safetensors") ? (int)len - 12 : (int)len;
        for (int g = 0; !s && g < ng; g++) {
            char p[4200];
            if (ng == 1) snprintf(p, sizeof p, "%s", path);
            else snprintf(p, sizeof p, "%.*s-%05d-of-%05d.safetensors", stem, path, g + 1, ng);
            if (g == 0 && first) snprintf(first, nfirst, "%s", p);
            s = ls_st_write(p, e + groups[g], groups[g + 1] - groups[g], meta, 3, NULL, err);
        }
        free(json);
    }
    free(host), free(e), free(names);
    return s;
}

/* ------------------------------------------------------------------ data */

typedef struct {
    char id[64];
    int Z;
    float *grey; /* [Z, S, S] in [0, 1] */
} dscan;

static ls_status dscan_load(dscan *s, const ls_case *c, int S, ls_error *err) {
    memset(s, 0, sizeof *s);
    snprintf(s->id, sizeof s->id, "%s", c->id);
    ls_volume img, ras;
    LS_TRY(ls_volume_read(c->image, &img, err));
    ls_orient o;
    ls_orient_from_geom(&img.geom, &o);
    ls_status st = ls_volume_to_ras(&img, &o, &ras, err);
    ls_volume_free(&img);
    if (st) return st;
    ls_prep prep;
    st = ls_prep_init(&prep, &ras, c->modality, S, S, err);
    int Z = (int)ras.geom.dim[2];
    float *scratch = st ? NULL : ls_calloc((size_t)(ras.geom.dim[0] * ras.geom.dim[1]), sizeof(float), err);
    s->grey = st ? NULL : ls_calloc((size_t)Z * S * S, sizeof(float), err);
    if (!st && (!scratch || !s->grey)) st = LS_ERR_NOMEM;
    for (int k = 0; !st && k < Z; k++) ls_prep_grey(&prep, &ras, k, scratch, s->grey + (size_t)k * S * S, S, S);
    s->Z = Z;
    free(scratch);
    ls_volume_free(&ras);
    if (st) free(s->grey), s->grey = NULL;
    return st;
}

/* Cases of the named datasets ("" = all), at most `limit` each, in manifest order. */
static ls_status select_cases(const ls_manifest *m, const char *datasets, int limit, int *idx, int *n, ls_error *err) {
    *n = 0;
    if (!datasets[0]) {
        for (int i = 0; i < m->n; i++) idx[(*n)++] = i;
    } else {
        char list[256], *save = NULL;
        snprintf(list, sizeof list, "%s", datasets);
        for (char *ds = strtok_r(list, ",", &save); ds; ds = strtok_r(NULL, ",", &save)) {
            int used = 0;
            for (int i = 0; i < m->n; i++)
                if (!strcmp(m->cases[i].dataset, ds) && (!limit || used < limit)) idx[(*n)++] = i, used++;
            if (!used) return ls_fail(err, LS_ERR_INPUT, "dataset '%s' has no case in the manifest", ds);
        }
    }
    if (!*n) return ls_fail(err, LS_ERR_INPUT, "the manifest has no case");
    return ls_manifest_check_files(m, idx, *n, 0, err);
}

static uint64_t mix(uint64_t a, uint64_t b) {
    ls_rng r = {a ^ (0x9e3779b97f4a7c15ull * (b + 1))};
    return ls_rng_next(&r);
}

static int rand_int(ls_rng *r, int n) { return (int)(ls_rng_next(r) % (uint64_t)n); } /* [0, n) */
static double rand_uniform(ls_rng *r, double a, double b) { return a + (b - a) * ls_rng_uniform(r); }

/* Separable Gaussian blur of an O x O plane in place (border clamped); tmp holds O*O floats. */
static void blur(float *x, float *tmp, int O, double sigma) {
    int rad = (int)ceil(3 * sigma);
    if (rad > O / 2) rad = O / 2;
    if (rad < 1) return;
    double w[130], sum = 0;
    if (rad > 64) rad = 64;
    for (int i = -rad; i <= rad; i++) sum += w[i + rad] = exp(-0.5 * i * i / (sigma * sigma));
    for (int i = 0; i <= 2 * rad; i++) w[i] /= sum;
    for (int y = 0; y < O; y++)
        for (int xx = 0; xx < O; xx++) {
            double a = 0;
            for (int i = -rad; i <= rad; i++) {
                int c = xx + i < 0 ? 0 : xx + i >= O ? O - 1 : xx + i;
                a += w[i + rad] * x[(size_t)y * O + c];
            }
            tmp[(size_t)y * O + xx] = (float)a;
        }
    for (int y = 0; y < O; y++)
        for (int xx = 0; xx < O; xx++) {
            double a = 0;
            for (int i = -rad; i <= rad; i++) {
                int r = y + i < 0 ? 0 : y + i >= O ? O - 1 : y + i;
                a += w[i + rad] * tmp[(size_t)r * O + xx];
            }
            x[(size_t)y * O + xx] = (float)a;
        }
}

/* One augmented crop of a grey S x S slice -> out[3, O, O] (ImageNet-normalised); tmp holds 2*O*O floats. */
static void make_crop(const float *src, int S, ls_rng *r, int O, double smin, double smax, double p_blur, double p_sol,
                      float *out, float *tmp) {
    /* torchvision's RandomResizedCrop.get_params */
    double area = (double)S * S, lr0 = log(3.0 / 4), lr1 = log(4.0 / 3);
    int w = S, h = S, x0 = 0, y0 = 0;
    for (int t = 0; t < 10; t++) {
        double target = area * rand_uniform(r, smin, smax), ar = exp(rand_uniform(r, lr0, lr1));
        int cw = (int)lround(sqrt(target * ar)), ch = (int)lround(sqrt(target / ar));
        if (cw > 0 && cw <= S && ch > 0 && ch <= S) {
            w = cw, h = ch, y0 = rand_int(r, S - h + 1), x0 = rand_int(r, S - w + 1);
            break;
        }
    }
    int flip = ls_rng_uniform(r) < 0.5;
    float *g = tmp, *t2 = tmp + (size_t)O * O;
    for (int y = 0; y < O; y++) { /* bilinear resize of the crop, align_corners=False, clamped to the crop */
        double fy = y0 + (y + 0.5) * h / O - 0.5;
        fy = fy < y0 ? y0 : fy > y0 + h - 1 ? y0 + h - 1 : fy;
        int ya = (int)fy, yb = ya + (ya < y0 + h - 1);
        double wy = fy - ya;
        for (int x = 0; x < O; x++) {
            double fx = x0 + (x + 0.5) * w / O - 0.5;
            fx = fx < x0 ? x0 : fx > x0 + w - 1 ? x0 + w - 1 : fx;
            int xa = (int)fx, xb = xa + (xa < x0 + w - 1);
            double wx = fx - xa;
            double top = (1 - wx) * src[(size_t)ya * S + xa] + wx * src[(size_t)ya * S + xb];
            double bot = (1 - wx) * src[(size_t)yb * S + xa] + wx * src[(size_t)yb * S + xb];
            g[(size_t)y * O + (flip ? O - 1 - x : x)] = (float)((1 - wy) * top + wy * bot);
        }
    }
    size_t n = (size_t)O * O;
    if (ls_rng_uniform(r) < 0.8) { /* ColorJitter(0.4, 0.4) of a grey image: brightness, then contrast */
        double bf = rand_uniform(r, 0.6, 1.4), cf = rand_uniform(r, 0.6, 1.4), mean = 0;
        for (size_t i = 0; i < n; i++) {
            double v = g[i] * bf;
            g[i] = (float)(v < 0 ? 0 : v > 1 ? 1 : v);
            mean += g[i];
        }
        mean /= (double)n;
        for (size_t i = 0; i < n; i++) {
            double v = (g[i] - mean) * cf + mean;
            g[i] = (float)(v < 0 ? 0 : v > 1 ? 1 : v);
        }
    }
    if (ls_rng_uniform(r) < p_blur) blur(g, t2, O, rand_uniform(r, 0.1, 2.0) * O / 224.0);
    if (ls_rng_uniform(r) < p_sol)
        for (size_t i = 0; i < n; i++) g[i] = g[i] >= 0.5f ? 1.0f - g[i] : g[i];
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    for (int ch = 0; ch < 3; ch++)
        for (size_t i = 0; i < n; i++) out[ch * n + i] = (g[i] - mean[ch]) / std[ch];
}

/* ------------------------------------------------------------------ the run */

/* The crops of one iteration, in host_alloc memory (pinned on CUDA). */
typedef struct {
    float *global, *local;
} crop_set;

typedef struct {
    ls_dino d;
    dscan *scans;
    int nscans;
    int epoch;  /* completed epochs */
    char *log;
    crop_set set[2]; /* iteration i's crops in set[i & 1]: the host cuts i + 1's while the device runs i */
    float *tmp;
} runner;

typedef struct {
    int scan, slice;
} slice_ref;

/* The crops of iteration `it` of `epoch` into cs: item b's crop v from stream (seed, epoch, it, b, v). */
static void make_batch(runner *U, crop_set *cs, const slice_ref *items, int epoch, int it) {
    const ls_dino_config *c = &U->d.cfg;
    int B = c->batch, G = c->global_size, L = c->local_size, NC = 2 + c->nlocal, S = c->source_size;
    size_t gs = (size_t)3 * G * G, lsz = (size_t)3 * L * L, M = (size_t)(G > L ? G : L), tsz = 2 * M * M;
#pragma omp parallel for schedule(dynamic) num_threads(U->d.be->nthreads)
    for (int k = 0; k < B * NC; k++) {
        int b = k / NC, v = k % NC;
        const dscan *sc = &U->scans[items[b].scan];
        const float *src = sc->grey + (size_t)items[b].slice * S * S;
        ls_rng r = {mix(mix(mix(mix(c->seed, (uint64_t)epoch), (uint64_t)it), (uint64_t)b), (uint64_t)v)};
        float *tmp = U->tmp + (size_t)k * tsz;
        if (v < 2)
            make_crop(src, S, &r, G, c->global_scale_min, 1.0, v == 0 ? 1.0 : 0.1, v == 1 ? 0.2 : 0.0,
                      cs->global + ((size_t)v * B + b) * gs, tmp);
        else
            make_crop(src, S, &r, L, c->local_scale_min, c->local_scale_max, 0.5, 0.0,
                      cs->local + ((size_t)(v - 2) * B + b) * lsz, tmp);
    }
}

static void path_in(char *out, size_t n, const char *dir, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

/* The tensors of a pretraining state: student and teacher, AdamW's moments, DINO's centre. */
static int state_tensors(ls_dino *d, ls_state_tensor *t) {
    size_t nv = d->student.vit.nparams, nh = d->student.head.nparams, K = (size_t)d->cfg.out_dim;
    t[0] = (ls_state_tensor){"student_vit", d->student.vit.params, nv};
    t[1] = (ls_state_tensor){"student_head", d->student.head.params, nh};
    t[2] = (ls_state_tensor){"teacher_vit", d->teacher.vit.params, nv};
    t[3] = (ls_state_tensor){"teacher_head", d->teacher.head.params, nh};
    t[4] = (ls_state_tensor){"adam_m_vit", d->m_vit, nv}, t[5] = (ls_state_tensor){"adam_v_vit", d->v_vit, nv};
    t[6] = (ls_state_tensor){"adam_m_head", d->m_head, nh}, t[7] = (ls_state_tensor){"adam_v_head", d->v_head, nh};
    t[8] = (ls_state_tensor){"center", d->center, K};
    return 9;
}

static ls_status save_state(runner *U, const char *dir, ls_error *err) {
    ls_dino *d = &U->d;
    ls_state_tensor t[9];
    int nt = state_tensors(d, t);
    char *json = ls_dino_config_json(&d->cfg), v[3][32], path[4200];
    snprintf(v[0], 32, "%d", U->epoch), snprintf(v[1], 32, "%d", d->step), snprintf(v[2], 32, "%d", d->step_last);
    const char *meta[] = {"livseg_dino_state", "1", "config", json, "epoch", v[0], "step", v[1], "step_last", v[2],
                          "log", U->log ? U->log : ""};
    path_in(path, sizeof path, dir, "state.safetensors");
    ls_status s = ls_state_write(d->be, path, t, nt, meta, 6, err);
    free(json);
    return s;
}

static ls_status state_config(const char *dir, ls_dino_config *c, ls_error *err) {
    char path[4200], *json;
    path_in(path, sizeof path, dir, "state.safetensors");
    LS_TRY(ls_state_config(path, "livseg_dino_state", "livseg pretraining state", &json, err));
    ls_status s = ls_dino_config_from_json(c, json, err);
    free(json);
    return s;
}

static ls_status load_state(runner *U, const char *dir, ls_error *err) {
    ls_dino *d = &U->d;
    char path[4200];
    path_in(path, sizeof path, dir, "state.safetensors");
    ls_st_file f;
    LS_TRY(ls_st_open(path, &f, err));
    ls_state_tensor t[9];
    int nt = state_tensors(d, t);
    ls_status s = ls_state_read(d->be, &f, path, t, nt, err);
    const char *ep = ls_st_meta(&f, "epoch"), *st = ls_st_meta(&f, "step"), *sl = ls_st_meta(&f, "step_last"),
               *log = ls_st_meta(&f, "log");
    if (!s && (!ep || !st || !sl || !log)) s = ls_fail(err, LS_ERR_INPUT, "%s: pretraining state metadata missing", path);
    if (!s) {
        U->epoch = atoi(ep), d->step = atoi(st), d->step_last = atoi(sl);
        U->log = strdup(log);
        ls_vit_params_changed(&d->student.vit), ls_vit_params_changed(&d->teacher.vit);
    }
    ls_st_close(&f);
    return s;
}

static ls_status append_log(runner *U, const char *line) {
    size_t have = U->log ? strlen(U->log) : 0, add = strlen(line);
    char *p = realloc(U->log, have + add + 2);
    if (!p) return LS_ERR_NOMEM;
    memcpy(p + have, line, add);
    p[have + add] = '\n', p[have + add + 1] = 0;
    U->log = p;
    return LS_OK;
}

static ls_status run_epoch(runner *U, const char *dir, const ls_dino_hooks *hooks, ls_error *err) {
    ls_dino *d = &U->d;
    const ls_dino_config *c = &d->cfg;
    int total = 0;
    for (int i = 0; i < U->nscans; i++) total += U->scans[i].Z;
    slice_ref *order = ls_calloc((size_t)total, sizeof *order, err);
    if (!order) return LS_ERR_NOMEM;
    for (int i = 0, k = 0; i < U->nscans; i++)
        for (int z = 0; z < U->scans[i].Z; z++) order[k].scan = i, order[k++].slice = z;
    ls_rng r = {mix(c->seed ^ 0x5851f42d4c957f2dull, (uint64_t)U->epoch)};
    for (int i = total - 1; i > 0; i--) {
        int j = rand_int(&r, i + 1);
        slice_ref t = order[i];
        order[i] = order[j], order[j] = t;
    }
    int n = c->slices_per_epoch && c->slices_per_epoch < total ? c->slices_per_epoch : total, nb = n / c->batch;
    double t0 = ls_now(), sum = 0;
    ls_dino_sched s = {0};
    ls_status st = LS_OK;
    if (nb) make_batch(U, &U->set[0], order, U->epoch, 0);
    for (int it = 0; !st && it < nb; it++) {
        ls_dino_schedule(c, nb, U->epoch, it, &s);
        const crop_set *cs = &U->set[it & 1];
        st = ls_dino_queue_step(d, cs->global, cs->local, &s, err);
        if (!st && it + 1 < nb) make_batch(U, &U->set[(it + 1) & 1], order + (size_t)(it + 1) * c->batch, U->epoch, it + 1);
        double l = 0;
        if (!st) st = ls_dino_collect(d, &l, err);
        sum += l;
        if (!st && hooks && hooks->iter) {
            ls_dino_status ds = {U->epoch + 1, c->epochs, it + 1, nb, sum / (it + 1),
                                 (it + 1) * c->batch / (ls_now() - t0), s.lr};
            hooks->iter(hooks->ctx, &ds);
        }
    }
    free(order);
    if (st) return st;
    U->epoch++;
    double secs = ls_now() - t0;
    char teacher[4200], first[4200];
    path_in(teacher, sizeof teacher, dir, "teacher.safetensors");
    st = ls_dino_export_teacher(d, teacher, first, sizeof first, err);
    if (!st && c->keep_every > 0 && U->epoch % c->keep_every == 0) {
        char kept[64], kpath[4200];
        snprintf(kept, sizeof kept, "teacher-e%03d.safetensors", U->epoch);
        path_in(kpath, sizeof kpath, dir, kept);
        st = ls_dino_export_teacher(d, kpath, NULL, 0, err);
    }
    if (st) return st;
    const char *base = strrchr(first, '/');
    json_t *o = json_pack("{s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:s}", "epoch", U->epoch, "iters", nb,
                          "steps", d->step, "loss", sum / (nb ? nb : 1), "lr", (double)s.lr, "weight_decay",
                          (double)s.weight_decay, "momentum", (double)s.momentum, "teacher_temp",
                          (double)s.teacher_temp, "seconds", secs, "images_per_s", nb * c->batch / secs, "teacher",
                          base ? base + 1 : first);
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(o);
    st = line ? append_log(U, line) : LS_ERR_NOMEM;
    if (!st) st = save_state(U, dir, err);
    char path[4200];
    path_in(path, sizeof path, dir, "pretrain.jsonl");
    if (!st) st = ls_write_file_atomic(path, U->log, strlen(U->log), NULL, err);
    if (!st && hooks && hooks->epoch) hooks->epoch(hooks->ctx, line);
    free(line);
    return st;
}

static void runner_free(runner *U, const ls_backend *be) {
    for (int i = 0; i < U->nscans; i++) free(U->scans[i].grey);
    free(U->scans), free(U->log), free(U->tmp);
    for (int k = 0; k < 2; k++) be->mem->host_free(be, U->set[k].global), be->mem->host_free(be, U->set[k].local);
    ls_dino_free(&U->d);
    memset(U, 0, sizeof *U);
}

ls_status ls_dino_pretrain(const ls_dino_config *c, const ls_manifest *m, const char *out_dir, int resume, int until,
                           const ls_backend *be, const ls_dino_hooks *hooks, ls_error *err) {
    ls_dino_config cfg = *c;
    int created;
    LS_TRY(ls_run_dir_open(out_dir, "state.safetensors", resume, &created, err));
    if (resume && state_config(out_dir, &cfg, err)) return err->code;
    if (until <= 0 || until > cfg.epochs) until = cfg.epochs;
    runner U;
    memset(&U, 0, sizeof U);
    int *idx = ls_calloc((size_t)m->n + 1, sizeof(int), err), n = 0;
    ls_status s = idx ? ls_dino_init(&U.d, &cfg, be, err) : LS_ERR_NOMEM;
    if (!s) s = select_cases(m, cfg.datasets, cfg.limit, idx, &n, err);
    if (!s && !(U.scans = ls_calloc((size_t)n, sizeof *U.scans, err))) s = LS_ERR_NOMEM;
    int slices = 0;
    for (int i = 0; !s && i < n; i++) {
        if (hooks && hooks->prepare) hooks->prepare(hooks->ctx, m->cases[idx[i]].id, i, n);
        s = dscan_load(&U.scans[i], &m->cases[idx[i]], cfg.source_size, err);
        if (!s) slices += U.scans[U.nscans++].Z;
    }
    if (!s && hooks && hooks->prepare) hooks->prepare(hooks->ctx, "", n, n);
    int per_epoch = cfg.slices_per_epoch && cfg.slices_per_epoch < slices ? cfg.slices_per_epoch : slices;
    if (!s && per_epoch < cfg.batch)
        s = ls_fail(err, LS_ERR_INPUT, "%d slices per epoch: fewer than one batch of %d", per_epoch, cfg.batch);
    int B = cfg.batch, NC = 2 + cfg.nlocal, G = cfg.global_size, L = cfg.local_size;
    if (!s) {
        for (int k = 0; k < 2; k++) {
            U.set[k].global = be->mem->host_alloc(be, (size_t)2 * B * 3 * G * G * sizeof(float));
            U.set[k].local = be->mem->host_alloc(be, (size_t)(cfg.nlocal ? cfg.nlocal : 1) * B * 3 * L * L * sizeof(float));
            if (!U.set[k].global || !U.set[k].local) s = ls_fail(err, LS_ERR_NOMEM, "cannot allocate the crops' buffers");
        }
        U.tmp = ls_calloc((size_t)B * NC * 2 * (G > L ? G : L) * (G > L ? G : L), sizeof(float), err);
        if (!U.tmp) s = LS_ERR_NOMEM;
    }
    if (!s && resume) s = load_state(&U, out_dir, err);
    while (!s && U.epoch < until) s = run_epoch(&U, out_dir, hooks, err);
    free(idx);
    runner_free(&U, be);
    if (s) ls_run_dir_abandon(out_dir, created);
    return s;
}
