/*
 * train.c — see train.h. Layout: configuration (presets, JSON), training data (volumes, masks, cached
 * features), augmentation, one batch (build, forward, losses, backward, RAdam), validation, state files,
 * and the epoch loop.
 *
 * Legend: B batch, C teacher channels, g token grid side, P = g*g tokens, K code width, S decoder output
 * side, Z slices of a scan, E extra slices (positives and negatives) of a batch, at most 3B.
 */
#include "train.h"

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"
#include "fields.h"
#include "rng.h"
#include "state.h"
#include "teacher.h"
#include "util.h"
#include "volume.h"

/* ------------------------------------------------------------------ configuration */

void ls_train_config_default(ls_train_config *c) {
    *c = (ls_train_config){
        .datasets = "btcv", .val_split = 5, .slices_per_epoch = 800, .cache_dir = "livseg-cache", .arch = "vits16", .input_size = 224,
        .code_dim = 70, .widths = {48, 32, 24, 16, 16}, .skip_width = 16, .up_stages = 4, .dropout = 0.1f,
        .epochs = 6, .batch = 8, .patience = 10, .lr = 1e-3f, .weight_decay = 1e-5f, .lr_factor = 0.1f,
        .w_focal = 1, .focal_gamma = 2, .focal_alpha = 0.25f, .w_tversky = 1, .tversky_a = 0.3f, .tversky_b = 0.7f,
        .w_log_iou = 1, .w_entropy = 0.005f, .entropy_eta = 2,
        .w_cd = 1, .b_self = 0.18f, .b_plus = 0.12f, .b_minus = 0.46f, .w_self = 0.67f, .w_plus = 0.25f, .w_minus = 0.63f,
        .augment = 1, .aug_rotate_deg = 10, .aug_zoom = 0.1f, .aug_shift = 0.1f, .aug_gamma = 1.5f, .aug_scale = 0.1f,
        .aug_offset = 0.1f, .aug_blur = 1.0f, .teacher_gamma = 1.8f, .seed = 1};
}

ls_status ls_train_config_preset(ls_train_config *c, const char *name, ls_error *err) {
    ls_train_config_default(c);
    if (!strcmp(name, "cpu")) return LS_OK;
    if (!strcmp(name, "paper")) {
        int w[LS_DEC_STAGES] = {64, 48, 32, 16, 16};
        memcpy(c->widths, w, sizeof w);
        c->up_stages = LS_DEC_STAGES, c->epochs = 150, c->lr = 1e-4f, c->slices_per_epoch = 0;
        return LS_OK;
    }
    return ls_fail(err, LS_ERR_INPUT, "unknown preset '%s' (cpu or paper)", name);
}

/* Every setting, for JSON in both directions (fields.h). */
#define FLD(n, k) LS_FIELD(ls_train_config, n, k)
static const ls_field fields[] = {
    FLD(datasets, 's'), FLD(val_split, 'i'), FLD(limit, 'i'), FLD(slices_per_epoch, 'i'), FLD(balance, 'i'),
    FLD(cache_dir, 's'), FLD(arch, 's'), FLD(teacher, 's'), FLD(teacher_seed, 'u'), FLD(input_size, 'i'),
    FLD(head_hidden, 'i'), FLD(code_dim, 'i'), FLD(widths, 'w'), FLD(skip_width, 'i'), FLD(up_stages, 'i'),
    FLD(dropout, 'f'),
    FLD(epochs, 'i'), FLD(batch, 'i'), FLD(patience, 'i'), FLD(lr, 'f'), FLD(weight_decay, 'f'), FLD(lr_factor, 'f'),
    FLD(w_focal, 'f'), FLD(focal_gamma, 'f'), FLD(focal_alpha, 'f'), FLD(w_tversky, 'f'), FLD(tversky_a, 'f'),
    FLD(tversky_b, 'f'), FLD(w_log_iou, 'f'), FLD(w_entropy, 'f'), FLD(entropy_eta, 'f'), FLD(w_cd, 'f'),
    FLD(b_self, 'f'), FLD(b_plus, 'f'), FLD(b_minus, 'f'), FLD(w_self, 'f'), FLD(w_plus, 'f'), FLD(w_minus, 'f'),
    FLD(augment, 'i'), FLD(aug_rotate_deg, 'f'), FLD(aug_zoom, 'f'), FLD(aug_shift, 'f'), FLD(aug_gamma, 'f'),
    FLD(aug_scale, 'f'), FLD(aug_offset, 'f'), FLD(aug_blur, 'f'), FLD(teacher_variants, 'i'), FLD(teacher_gamma, 'f'),
    FLD(seed, 'u'),
};
#define NFIELDS ((int)(sizeof fields / sizeof *fields))

char *ls_train_config_json(const ls_train_config *c) { return ls_fields_json(fields, NFIELDS, c); }

ls_status ls_train_config_from_json(ls_train_config *c, const char *text, ls_error *err) {
    ls_train_config_default(c);
    return ls_fields_from_json(fields, NFIELDS, c, text, "training configuration", err);
}

void ls_train_model_config(const ls_train_config *c, int feat_dim, int grid, ls_model_config *mc) {
    ls_model_config_default(mc, feat_dim, grid);
    mc->head_hidden = c->head_hidden ? c->head_hidden : feat_dim, mc->code_dim = c->code_dim;
    mc->skip_width = c->skip_width, mc->up_stages = c->up_stages, mc->dropout = c->dropout;
    memcpy(mc->widths, c->widths, sizeof mc->widths);
}

static ls_status config_check(const ls_train_config *c, ls_error *err) {
    if (c->batch < 2) return ls_fail(err, LS_ERR_INPUT, "batch %d: batch norm needs at least 2 slices", c->batch);
    if (c->epochs < 1 || c->val_split < 0 || c->limit < 0 || c->slices_per_epoch < 0 || c->patience < 0)
        return ls_fail(err, LS_ERR_INPUT, "epochs must be positive and counts not negative");
    if (!(c->lr > 0) || !(c->weight_decay >= 0) || !(c->lr_factor > 0 && c->lr_factor < 1))
        return ls_fail(err, LS_ERR_INPUT, "lr must be positive, weight decay not negative, lr factor in (0, 1)");
    if (c->code_dim < 1 || c->skip_width < 1 || c->head_hidden < 0 || !(c->dropout >= 0 && c->dropout < 1))
        return ls_fail(err, LS_ERR_INPUT, "model widths must be positive and dropout in [0, 1)");
    if (c->teacher_variants < 0 || c->teacher_variants > LS_TRAIN_MAX_VARIANTS || (c->teacher_variants && !(c->teacher_gamma > 1)))
        return ls_fail(err, LS_ERR_INPUT, "teacher variants %d, gamma %g: expected 0 to %d variants and a gamma above 1",
                       c->teacher_variants, c->teacher_gamma, LS_TRAIN_MAX_VARIANTS);
    for (int s = 0; s < LS_DEC_STAGES; s++)
        if (c->widths[s] < 1) return ls_fail(err, LS_ERR_INPUT, "decoder width %d of stage %d is not positive", c->widths[s], s);
    /* A NaN weight or range trains a model of NaNs without a word; a negative weight maximises a loss. */
    const struct { const char *name; float v, lo, hi; } f[] = {
        {"focal weight", c->w_focal, 0, 1e6f}, {"focal gamma", c->focal_gamma, 0, 100}, {"focal alpha", c->focal_alpha, 0, 1},
        {"tversky weight", c->w_tversky, 0, 1e6f}, {"tversky a", c->tversky_a, 0, 1e6f}, {"tversky b", c->tversky_b, 0, 1e6f},
        {"log-IoU weight", c->w_log_iou, 0, 1e6f}, {"entropy weight", c->w_entropy, 0, 1e6f},
        {"entropy eta", c->entropy_eta, 0, 1e6f}, {"contrastive weight", c->w_cd, 0, 1e6f},
        {"b_self", c->b_self, -10, 10}, {"b_plus", c->b_plus, -10, 10}, {"b_minus", c->b_minus, -10, 10},
        {"w_self", c->w_self, 0, 1e6f}, {"w_plus", c->w_plus, 0, 1e6f}, {"w_minus", c->w_minus, 0, 1e6f},
        {"lr", c->lr, 0, 10}, {"weight decay", c->weight_decay, 0, 10},
        {"rotation (degrees)", c->aug_rotate_deg, 0, 180}, {"zoom", c->aug_zoom, 0, 0.9f}, {"shift", c->aug_shift, 0, 1},
        {"gamma (1: off)", c->aug_gamma, 1, 10}, {"intensity scale", c->aug_scale, 0, 0.9f},
        {"intensity offset", c->aug_offset, 0, 1}, {"blur sigma", c->aug_blur, 0, 10},
    };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (!(f[i].v >= f[i].lo && f[i].v <= f[i].hi))
            return ls_fail(err, LS_ERR_INPUT, "%s %g: expected a number from %g to %g", f[i].name, f[i].v, f[i].lo, f[i].hi);
    return LS_OK;
}

/* ------------------------------------------------------------------ training data */

float ls_train_variant_gamma(const ls_train_config *c, int v) {
    if (v < 1 || v > c->teacher_variants) return 1;
    int m = (c->teacher_variants + 1) / 2, k = (v + 1) / 2;
    return powf(c->teacher_gamma, (v & 1 ? -1.0f : 1.0f) * (float)k / (float)m);
}

/* A training scan. Variant 0 is the scan as segment sees it; variants 1..teacher_variants (training scans
 * only) differ by the grey values' gamma (ls_train_variant_gamma), each with its own teacher features. */
typedef struct {
    const ls_case *c;
    ls_volume ras;   /* the image in RAS order */
    uint8_t *mask;   /* the label on the same grid, 0/1 */
    ls_prep prep[1 + LS_TRAIN_MAX_VARIANTS];
    ls_features f[1 + LS_TRAIN_MAX_VARIANTS]; /* [Z, C, g, g] each */
    int Z;
} scan;

static void scan_free(scan *s) {
    ls_volume_free(&s->ras);
    free(s->mask);
    for (int v = 0; v <= LS_TRAIN_MAX_VARIANTS; v++) ls_features_free(&s->f[v]); /* also a half-loaded variant's */
    memset(s, 0, sizeof *s);
}

typedef struct {
    const ls_train_hooks *hooks;
    const char *id;
} prep_ctx;

static void prep_progress(void *ctx, int64_t done, int64_t total) {
    prep_ctx *p = ctx;
    if (p->hooks && p->hooks->prepare) p->hooks->prepare(p->hooks->ctx, p->id, done, total);
}

/* Reads a case's image and label into RAS order and gets the teacher's features of every slice, of the scan
 * and of its gamma variants 1..teacher_variants of configuration cfg (none when cfg is NULL). */
static ls_status scan_load(scan *s, const ls_case *c, ls_teacher *t, const char *cache_dir, const ls_train_config *cfg,
                           const ls_train_hooks *hooks, ls_error *err) {
    memset(s, 0, sizeof *s);
    s->c = c;
    ls_volume img, lab, lab_ras;
    LS_TRY(ls_volume_read(c->image, &img, err));
    ls_status st = ls_volume_read(c->label, &lab, err);
    if (st) {
        ls_volume_free(&img);
        return st;
    }
    if (memcmp(img.geom.dim, lab.geom.dim, sizeof img.geom.dim) || ls_affine_max_diff(img.geom.affine, lab.geom.affine) > 1e-3)
        st = ls_fail(err, LS_ERR_INPUT, "%s: label is not on the grid of its image %s", c->label, c->image);
    ls_orient o;
    ls_orient_from_geom(&img.geom, &o);
    if (!st) st = ls_volume_to_ras(&img, &o, &s->ras, err);
    memset(&lab_ras, 0, sizeof lab_ras);
    if (!st) st = ls_volume_to_ras(&lab, &o, &lab_ras, err);
    ls_volume_free(&img), ls_volume_free(&lab);
    size_t n = ls_volume_nvox(&s->ras);
    if (!st && !(s->mask = ls_calloc(n, 1, err))) st = LS_ERR_NOMEM;
    for (size_t i = 0; !st && i < n; i++) s->mask[i] = lab_ras.data[i] > 0.5f;
    ls_volume_free(&lab_ras);
    if (!st) st = ls_prep_init(&s->prep[0], &s->ras, c->modality, t->input_size, t->input_size, err);
    s->Z = (int)s->ras.geom.dim[2];
    char id[300];
    prep_ctx pc = {hooks, id};
    int nvar = cfg ? cfg->teacher_variants : 0, hit;
    for (int v = 0; !st && v <= nvar; v++) {
        s->prep[v] = s->prep[0];
        s->prep[v].gamma = cfg ? ls_train_variant_gamma(cfg, v) : 1;
        snprintf(id, sizeof id, v ? "%s, gamma %.2f" : "%s", c->id, s->prep[v].gamma);
        st = ls_features_cached(t, &s->ras, &s->prep[v], cache_dir, 0, prep_progress, &pc, &s->f[v], &hit, err);
    }
    if (st) scan_free(s);
    return st;
}

/* The label of slice k, displayed, padded and resized to S x S like ls_prep_grey: bilinear, then >= 0.5. */
static void mask_plane(const scan *s, int k, float *scratch, float *out, int S) {
    int nx = (int)s->ras.geom.dim[0], ny = (int)s->ras.geom.dim[1], py, px;
    const uint8_t *m = s->mask + (size_t)k * nx * ny;
    for (int r = 0; r < ny; r++)
        for (int c = 0; c < nx; c++) scratch[(size_t)r * nx + c] = m[(size_t)(ny - 1 - r) * nx + (nx - 1 - c)];
    ls_prep_padding(&s->ras, S, S, &py, &px);
    ls_resize_padded(scratch, ny, nx, py, px, 0.0f, out, S, S);
    for (size_t i = 0; i < (size_t)S * S; i++) out[i] = out[i] >= 0.5f;
}

/* Appends one scan's tokens (every slice_stride-th slice) to the growing arrays of ls_train_tokens. */
static ls_status scan_tokens(const scan *s, int S, int slice_stride, float **X, uint8_t **y, int64_t *n, int64_t *cap,
                             ls_error *err) {
    const ls_features *f = &s->f[0];
    int g = f->gh, D = f->dim, P = S / g;
    int64_t per = (int64_t)g * g, want = *n + ((int64_t)s->Z + slice_stride - 1) / slice_stride * per;
    if (want > *cap) {
        int64_t cap2 = want > 2 * *cap ? want : 2 * *cap;
        float *x2 = realloc(*X, (size_t)cap2 * D * sizeof **X);
        if (x2) *X = x2;
        uint8_t *y2 = x2 ? realloc(*y, (size_t)cap2) : NULL;
        if (y2) *y = y2;
        if (!x2 || !y2) return ls_fail(err, LS_ERR_NOMEM, "out of memory for %lld probe tokens", (long long)cap2);
        *cap = cap2;
    }
    int nx = (int)s->ras.geom.dim[0], ny = (int)s->ras.geom.dim[1];
    float *scratch = ls_calloc((size_t)nx * ny, sizeof *scratch, err), *plane = ls_calloc((size_t)S * S, sizeof *plane, err);
    if (!scratch || !plane) return free(scratch), free(plane), LS_ERR_NOMEM;
    for (int k = 0; k < s->Z; k += slice_stride) {
        mask_plane(s, k, scratch, plane, S);
        const float *fk = f->data + (size_t)k * D * per;
        for (int gy = 0; gy < g; gy++)
            for (int gx = 0; gx < g; gx++, ++*n) {
                double cover = 0;
                for (int r = 0; r < P; r++)
                    for (int c = 0; c < P; c++) cover += plane[(size_t)(gy * P + r) * S + gx * P + c];
                (*y)[*n] = cover >= 0.5 * P * P;
                float *x = *X + *n * D;
                for (int c = 0; c < D; c++) x[c] = fk[(size_t)c * per + gy * g + gx];
            }
    }
    free(scratch), free(plane);
    return LS_OK;
}

ls_status ls_train_tokens(const ls_manifest *m, const int *cases, int ncases, ls_teacher *t, const char *cache_dir,
                          int slice_stride, const ls_train_hooks *hooks, float **X, uint8_t **y, int64_t *n, int *dim,
                          ls_error *err) {
    *X = NULL, *y = NULL, *n = 0, *dim = 0;
    if (slice_stride < 1) return ls_fail(err, LS_ERR_INPUT, "slice stride %d: must be at least 1", slice_stride);
    int64_t cap = 0;
    ls_status st = LS_OK;
    for (int i = 0; !st && i < ncases; i++) {
        scan s;
        if ((st = scan_load(&s, &m->cases[cases[i]], t, cache_dir, NULL, hooks, err))) break;
        *dim = s.f[0].dim;
        st = scan_tokens(&s, t->input_size, slice_stride, X, y, n, &cap, err);
        scan_free(&s);
    }
    if (st) free(*X), free(*y), *X = NULL, *y = NULL, *n = 0;
    return st;
}

/* ------------------------------------------------------------------ augmentation */

/* An affine map of normalised coordinates ([-1, 1], pixel centres as align_corners=False): output
 * position (u, v) samples the input at (a[0] u + a[1] v + a[2], a[3] u + a[4] v + a[5]). */
typedef struct {
    double a[6];
    int identity;
} warp;

static void warp_draw(warp *w, ls_rng *r, const ls_train_config *c) {
    const double pi = 3.14159265358979323846;
    w->identity = !c->augment || ls_rng_uniform(r) < 0.5;
    double th = (2 * ls_rng_uniform(r) - 1) * c->aug_rotate_deg * pi / 180;
    double z = 1 + (2 * ls_rng_uniform(r) - 1) * c->aug_zoom;
    double tx = (2 * ls_rng_uniform(r) - 1) * c->aug_shift, ty = (2 * ls_rng_uniform(r) - 1) * c->aug_shift;
    double cs = cos(th) / z, sn = sin(th) / z;
    double a[6] = {cs, -sn, tx, sn, cs, ty};
    memcpy(w->a, a, sizeof a);
}

/* Bilinear resampling of `nc` planes of H x W through the warp, clamping at the border (so feature
 * vectors never become zero, which cosine similarity could not normalise). */
static void warp_planes(const warp *w, const float *in, float *out, int nc, int H, int W) {
    for (int y = 0; y < H; y++) {
        double v = (2.0 * y + 1) / H - 1;
        for (int x = 0; x < W; x++) {
            double u = (2.0 * x + 1) / W - 1;
            double su = w->a[0] * u + w->a[1] * v + w->a[2], sv = w->a[3] * u + w->a[4] * v + w->a[5];
            double fx = ((su + 1) * W - 1) / 2, fy = ((sv + 1) * H - 1) / 2;
            fx = fx < 0 ? 0 : fx > W - 1 ? W - 1 : fx;
            fy = fy < 0 ? 0 : fy > H - 1 ? H - 1 : fy;
            int x0 = (int)fx, y0 = (int)fy, x1 = x0 + (x0 < W - 1), y1 = y0 + (y0 < H - 1);
            float wx = (float)(fx - x0), wy = (float)(fy - y0);
            for (int c = 0; c < nc; c++) {
                const float *p = in + (size_t)c * H * W;
                float top = (1 - wx) * p[y0 * W + x0] + wx * p[y0 * W + x1];
                float bot = (1 - wx) * p[y1 * W + x0] + wx * p[y1 * W + x1];
                out[(size_t)c * H * W + (size_t)y * W + x] = (1 - wy) * top + wy * bot;
            }
        }
    }
}

/* Separable Gaussian blur of one S x S plane, clamped at the border; tmp holds S*S floats. */
static void blur(float *img, float *tmp, int S, double sigma) {
    int r = (int)ceil(3 * sigma);
    if (r < 1) return;
    float k[64];
    if (r > 31) r = 31;
    double sum = 0;
    for (int i = -r; i <= r; i++) sum += k[i + r] = (float)exp(-0.5 * i * i / (sigma * sigma));
    for (int i = 0; i <= 2 * r; i++) k[i] = (float)(k[i] / sum);
    for (int pass = 0; pass < 2; pass++) {
        const float *src = pass ? tmp : img;
        float *dst = pass ? img : tmp;
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                float acc = 0;
                for (int i = -r; i <= r; i++) {
                    int xx = pass ? x : x + i, yy = pass ? y + i : y;
                    xx = xx < 0 ? 0 : xx >= S ? S - 1 : xx, yy = yy < 0 ? 0 : yy >= S ? S - 1 : yy;
                    acc += k[i + r] * src[(size_t)yy * S + xx];
                }
                dst[(size_t)y * S + x] = acc;
            }
    }
}

/* Intensity augmentation of the decoder's input slice (grey values in [0, 1]): drawn first (so the heavy work
 * can run on any thread), applied after. */
typedef struct {
    double pg, g, ps, a, b, pb, sigma;
} intensity;

static void intensity_draw(intensity *p, ls_rng *r, const ls_train_config *c) {
    /* Draw every number whether or not it is used, so one augmentation's settings do not shift the others. */
    p->pg = ls_rng_uniform(r), p->g = exp((2 * ls_rng_uniform(r) - 1) * log(c->aug_gamma > 1 ? c->aug_gamma : 1));
    p->ps = ls_rng_uniform(r), p->a = 1 + (2 * ls_rng_uniform(r) - 1) * c->aug_scale;
    p->b = (2 * ls_rng_uniform(r) - 1) * c->aug_offset;
    p->pb = ls_rng_uniform(r), p->sigma = ls_rng_uniform(r) * c->aug_blur;
}

static void augment_intensity(float *img, float *tmp, int S, const intensity *p) {
    size_t n = (size_t)S * S;
    if (p->pg < 0.5)
        for (size_t i = 0; i < n; i++) img[i] = img[i] > 0 ? (float)pow(img[i], p->g) : 0;
    if (p->ps < 0.5)
        for (size_t i = 0; i < n; i++) img[i] = (float)(img[i] * p->a + p->b);
    if (p->pb < 0.5 && p->sigma > 0.3) blur(img, tmp, S, p->sigma);
}

/* ------------------------------------------------------------------ the trainer */

/* One batch item: its scan and slice, and the extra slices its contrastive terms pair it with. */
typedef struct {
    int scan, slice, variant;
    int extra[3], nextra, npos; /* slices of the same scan: positives first, then the negative */
    int pos[3];                 /* where stage_batch put them among the batch's extra slices */
} item;

/* One batch built on the host, in memory the device copies from directly (pinned on CUDA). There are two,
 * so the host builds batch i+1 while the device runs batch i. */
typedef struct {
    item it[256];
    int B, E; /* items, extra slices */
    float *feat, *img, *tgt, *extra, *keep[LS_DEC_STAGES];
} staged;

typedef struct {
    ls_train_config cfg;
    const ls_backend *be;
    ls_teacher teacher;
    ls_model model;
    scan *train, *val;
    int ntrain, nval;
    int C, g, P, K, S;
    /* optimisation state */
    float *adam_m, *adam_v;
    int epoch, step; /* completed epochs, optimiser steps */
    ls_plateau sched;
    double best_dice;
    char *log;       /* the epoch lines so far, each ending in '\n' */
    /* batch buffers: host (sets, h_*) and backend memory (d_*) */
    staged set[2];
    float *h_logits, *scratch, *tmp; /* scratch, tmp: nth slices each (scratch_n, tmp_n floats) */
    int nth;
    size_t scratch_n, tmp_n;
    float *d_feat, *d_img, *d_tgt, *d_dz, *d_dcodes, *d_extra, *d_dextra, *d_cdws;
    /* A step's loss values: written by the loss ops into d_scal (backend memory), copied to h_scal once at
     * the step's end. Slots 0-3 the segmentation losses, then two per contrastive term (loss, mean
     * similarity); cd_w and cd_kind hold each term's weight and kind (0 self, 1 positive, 2 negative). */
    double *d_scal, *h_scal, *cd_w;
    int *cd_kind;
    ls_arena io, acts, head;
} trainer;

static ls_status trainer_buffers(trainer *T, ls_error *err) {
    const ls_backend *be = T->be;
    int B = T->cfg.batch, E = 3 * B;
    size_t fs = (size_t)T->C * T->P, is = (size_t)T->S * T->S, ks = (size_t)T->K * T->P;
    int maxnx = 1;
    for (int i = 0; i < T->ntrain + T->nval; i++) {
        const scan *s = i < T->ntrain ? &T->train[i] : &T->val[i - T->ntrain];
        int n = (int)(s->ras.geom.dim[0] * s->ras.geom.dim[1]);
        if (n > maxnx) maxnx = n;
    }
    T->h_logits = ls_calloc((size_t)B * is, sizeof(float), err);
    /* per thread: items are built one per thread */
    T->nth = be->nthreads, T->scratch_n = (size_t)maxnx, T->tmp_n = is > fs ? is : fs;
    T->scratch = ls_calloc((size_t)T->nth * T->scratch_n, sizeof(float), err);
    T->tmp = ls_calloc((size_t)T->nth * T->tmp_n, sizeof(float), err);
    if (!T->h_logits || !T->scratch || !T->tmp) return LS_ERR_NOMEM;
    size_t keep = 0;
    for (int s = 0; s < LS_DEC_STAGES; s++) keep += (size_t)B * T->cfg.widths[s];
    size_t set = (size_t)B * (fs + 2 * is) + (size_t)E * fs + keep;
    for (int k = 0; k < 2; k++) {
        staged *st = &T->set[k];
        if (!(st->feat = be->mem->host_alloc(be, set * sizeof(float))))
            return ls_fail(err, LS_ERR_NOMEM, "cannot allocate %zu MB of host batch buffers", set * sizeof(float) >> 20);
        memset(st->feat, 0, set * sizeof(float));
        st->img = st->feat + (size_t)B * fs, st->tgt = st->img + (size_t)B * is, st->extra = st->tgt + (size_t)B * is;
        float *p = st->extra + (size_t)E * fs;
        for (int s = 0; s < LS_DEC_STAGES; s++) st->keep[s] = p, p += (size_t)B * T->cfg.widths[s];
    }
    size_t cdws = ls_cd_workspace(T->C, T->K, T->P), nscal = 4 + 2 * (size_t)(B + E);
    size_t io = (size_t)B * (fs + 3 * is + ks) + (size_t)E * (fs + ks) + cdws + 2 * nscal + 16 * 11;
    LS_TRY(ls_arena_init(&T->io, be, io * sizeof(float), err));
    T->d_feat = ls_arena_floats(&T->io, (size_t)B * fs), T->d_img = ls_arena_floats(&T->io, (size_t)B * is);
    T->d_tgt = ls_arena_floats(&T->io, (size_t)B * is), T->d_dz = ls_arena_floats(&T->io, (size_t)B * is);
    T->d_dcodes = ls_arena_floats(&T->io, (size_t)B * ks), T->d_extra = ls_arena_floats(&T->io, (size_t)E * fs);
    T->d_dextra = ls_arena_floats(&T->io, (size_t)E * ks), T->d_cdws = ls_arena_floats(&T->io, cdws);
    T->d_scal = (double *)ls_arena_floats(&T->io, 2 * nscal); /* 64-byte aligned */
    T->h_scal = ls_calloc(nscal, sizeof(double), err);
    T->cd_w = ls_calloc((size_t)(B + E), sizeof(double), err);
    T->cd_kind = ls_calloc((size_t)(B + E), sizeof(int), err);
    if (!T->h_scal || !T->cd_w || !T->cd_kind) return LS_ERR_NOMEM;
    LS_TRY(ls_arena_init(&T->acts, be, ls_model_arena_floats(&T->model.cfg, B) * sizeof(float), err));
    LS_TRY(ls_arena_init(&T->head, be, ls_model_head_arena_floats(&T->model, E) * sizeof(float), err));
    T->adam_m = be->mem->alloc(be, T->model.nparams * sizeof(float));
    T->adam_v = be->mem->alloc(be, T->model.nparams * sizeof(float));
    if (!T->adam_m || !T->adam_v) return ls_fail(err, LS_ERR_NOMEM, "cannot allocate the optimiser state");
    be->mem->zero(be, T->adam_m, T->model.nparams * sizeof(float));
    be->mem->zero(be, T->adam_v, T->model.nparams * sizeof(float));
    return LS_OK;
}

static void trainer_free(trainer *T) {
    const ls_backend *be = T->be;
    for (int i = 0; i < T->ntrain; i++) scan_free(&T->train[i]);
    for (int i = 0; i < T->nval; i++) scan_free(&T->val[i]);
    free(T->train), free(T->val);
    for (int k = 0; k < 2; k++)
        if (T->set[k].feat) be->mem->host_free(be, T->set[k].feat);
    free(T->h_logits), free(T->scratch), free(T->tmp);
    free(T->h_scal), free(T->cd_w), free(T->cd_kind);
    ls_arena_free(&T->io), ls_arena_free(&T->acts), ls_arena_free(&T->head);
    if (T->adam_m) be->mem->free(be, T->adam_m);
    if (T->adam_v) be->mem->free(be, T->adam_v);
    ls_model_free(&T->model);
    if (T->teacher.vit.be) ls_teacher_close(&T->teacher);
    free(T->log);
    memset(T, 0, sizeof *T);
}

/* Slice k of variant v of scan s as a training item (features, grey image, target), warped by w and augmented
 * by aug when not NULL; `thread` picks the scratch buffers, so items can be built in parallel. */
static void build_item(trainer *T, const scan *s, int k, int v, const warp *w, const intensity *aug, int thread,
                       float *feat, float *img, float *tgt) {
    size_t fs = (size_t)T->C * T->P;
    const float *f = s->f[v].data + (size_t)k * fs;
    float *scratch = T->scratch + (size_t)thread * T->scratch_n, *tmp = T->tmp + (size_t)thread * T->tmp_n;
    ls_prep_grey(&s->prep[v], &s->ras, k, scratch, img, T->S, T->S);
    if (tgt) mask_plane(s, k, scratch, tgt, T->S);
    if (!w || w->identity) {
        memcpy(feat, f, fs * sizeof(float));
    } else {
        warp_planes(w, f, feat, T->C, T->g, T->g);
        memcpy(tmp, img, (size_t)T->S * T->S * sizeof(float));
        warp_planes(w, tmp, img, 1, T->S, T->S);
        if (tgt) {
            memcpy(tmp, tgt, (size_t)T->S * T->S * sizeof(float));
            warp_planes(w, tmp, tgt, 1, T->S, T->S);
            for (size_t i = 0; i < (size_t)T->S * T->S; i++) tgt[i] = tgt[i] >= 0.5f;
        }
    }
    if (aug) augment_intensity(img, tmp, T->S, aug);
}

typedef struct {
    double loss, focal, tversky, log_iou, entropy, cd, sim[3];
    int nsim[3];
} batch_losses;

/* Queues the contrastive terms of one batch (gradients into d_dcodes and d_dextra, values into d_scal from
 * slot 4), noting each term's weight and kind; returns how many. */
static int contrastive(trainer *T, const item *it, int B, const float *codes, const float *extra_codes) {
    const ls_backend *be = T->be;
    const ls_train_config *c = &T->cfg;
    size_t fs = (size_t)T->C * T->P, ks = (size_t)T->K * T->P;
    int n = 0;
    for (int b = 0; b < B; b++) {
        const float *fb = T->d_feat + b * fs, *cb = codes + b * ks;
        float *db = T->d_dcodes + b * ks;
        T->cd_w[n] = c->w_cd * c->w_self / B, T->cd_kind[n] = 0;
        be->loss->cd_term(be, fb, fb, T->C, cb, cb, T->K, T->P, c->b_self, (float)T->cd_w[n], db, db, T->d_scal + 4 + 2 * n,
                          T->d_cdws);
        n++;
        for (int e = 0; e < it[b].nextra; e++) {
            int x = it[b].pos[e], pos = e < it[b].npos;
            T->cd_w[n] = c->w_cd * (pos ? c->w_plus / it[b].npos : c->w_minus) / B, T->cd_kind[n] = pos ? 1 : 2;
            be->loss->cd_term(be, fb, T->d_extra + x * fs, T->C, cb, extra_codes + x * ks, T->K, T->P,
                              pos ? c->b_plus : c->b_minus, (float)T->cd_w[n], db, T->d_dextra + x * ks,
                              T->d_scal + 4 + 2 * n, T->d_cdws);
            n++;
        }
    }
    return n;
}

/* Builds the batch of st->it[0..B) on the host: items (augmented), their extra slices, dropout masks. All of
 * the batch's random draws happen here, in the order of a plain loop. */
static void stage_batch(trainer *T, staged *st, int B, ls_rng *r) {
    const ls_train_config *c = &T->cfg;
    size_t fs = (size_t)T->C * T->P, is = (size_t)T->S * T->S;
    item *it = st->it;
    int E = 0;
    warp w[256];
    intensity aug[256];
    for (int b = 0; b < B; b++) { /* the draws, in a plain loop's order */
        warp_draw(&w[b], r, c);
        if (c->augment) intensity_draw(&aug[b], r, c);
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(T->nth)
    for (int b = 0; b < B; b++)
        build_item(T, &T->train[it[b].scan], it[b].slice, it[b].variant, &w[b], c->augment ? &aug[b] : NULL,
                   omp_get_thread_num(), st->feat + b * fs, st->img + b * is, st->tgt + b * is);
    for (int b = 0; b < B; b++) {
        const scan *s = &T->train[it[b].scan];
        for (int e = 0; e < it[b].nextra; e++) {
            int k = it[b].extra[e];
            memcpy(st->extra + (size_t)E * fs, s->f[it[b].variant].data + (size_t)k * fs, fs * sizeof(float));
            it[b].pos[e] = E++;
        }
    }
    for (int k = 0; k < LS_DEC_STAGES; k++) /* Dropout2d masks */
        for (int i = 0; i < B * c->widths[k]; i++)
            st->keep[k][i] = ls_rng_uniform(r) < c->dropout ? 0.0f : 1.0f / (1.0f - c->dropout);
    st->B = B, st->E = E;
}

/* Queues one optimiser step on a staged batch: copies in, forward, losses (values into d_scal), backward,
 * RAdam. Nothing waits; returns the number of contrastive terms. */
static int queue_step(trainer *T, staged *st) {
    const ls_backend *be = T->be;
    const ls_train_config *c = &T->cfg;
    int B = st->B, E = st->E;
    size_t fs = (size_t)T->C * T->P, is = (size_t)T->S * T->S, ks = (size_t)T->K * T->P;
    be->mem->to_device(be, T->d_feat, st->feat, B * fs * sizeof(float));
    be->mem->to_device(be, T->d_img, st->img, B * is * sizeof(float));
    be->mem->to_device(be, T->d_tgt, st->tgt, B * is * sizeof(float));
    if (E) be->mem->to_device(be, T->d_extra, st->extra, (size_t)E * fs * sizeof(float));
    be->mem->zero(be, T->model.grads, T->model.nparams * sizeof(float));
    be->mem->zero(be, T->d_dz, B * is * sizeof(float));
    be->mem->zero(be, T->d_dcodes, B * ks * sizeof(float));
    if (E) be->mem->zero(be, T->d_dextra, (size_t)E * ks * sizeof(float));

    ls_model_acts a, ha;
    ls_arena_reset(&T->acts), ls_arena_reset(&T->head);
    ls_model_forward(&T->model, &T->acts, &a, T->d_feat, T->d_img, B, 1, st->keep);
    if (E) ls_model_head_forward(&T->model, &T->head, &ha, T->d_extra, E);
    size_t N = B * is;
    double *v = T->d_scal;
    be->loss->focal(be, a.logits, T->d_tgt, N, c->focal_gamma, c->focal_alpha, c->w_focal, T->d_dz, v);
    be->loss->tversky(be, a.logits, T->d_tgt, N, c->tversky_a, c->tversky_b, 1.0f, c->w_tversky, T->d_dz, v + 1);
    be->loss->log_iou(be, a.logits, T->d_tgt, N, 1.0f, c->w_log_iou, T->d_dz, v + 2);
    be->loss->entropy(be, a.logits, N, c->entropy_eta, c->w_entropy, T->d_dz, v + 3);
    int nterms = c->w_cd > 0 ? contrastive(T, st->it, B, a.codes, E ? ha.codes : NULL) : 0;
    ls_model_backward(&T->model, &T->acts, &a, T->d_dz, c->w_cd > 0 ? T->d_dcodes : NULL);
    if (E && c->w_cd > 0) ls_model_head_backward(&T->model, &T->head, &ha, T->d_dextra);
    T->step++;
    be->loss->radam_step(be, T->model.params, T->model.grads, T->adam_m, T->adam_v, T->model.nparams, T->step,
                         (float)T->sched.lr, 0.9f, 0.999f, 1e-8f, c->weight_decay);
    return nterms;
}

/* Waits for the queued step and adds its loss values (one copy back) to bl. A loss that is not finite
 * stops the run: the weights are ruined, and nothing of the epoch has been saved yet. */
static ls_status collect_step(trainer *T, int nterms, batch_losses *bl, ls_error *err) {
    const ls_train_config *c = &T->cfg;
    T->be->mem->to_host(T->be, T->h_scal, T->d_scal, (4 + 2 * (size_t)nterms) * sizeof(double));
    const double *h = T->h_scal;
    double cd = 0;
    for (int j = 0; j < nterms; j++) {
        double l = h[4 + 2 * j];
        int k = T->cd_kind[j];
        cd += T->cd_w[j] * l, bl->cd += T->cd_w[j] * l, bl->sim[k] += (float)h[5 + 2 * j], bl->nsim[k]++;
    }
    double loss = c->w_focal * h[0] + c->w_tversky * h[1] + c->w_log_iou * h[2] + c->w_entropy * h[3] + cd;
    if (!isfinite(loss)) {
        char kept[64] = "nothing was saved";
        if (T->epoch) snprintf(kept, sizeof kept, "the files of epoch %d stay", T->epoch);
        return ls_fail(err, LS_ERR_INPUT, "training diverged at epoch %d, step %d (loss %g): try a lower lr (now %g); %s",
                       T->epoch + 1, T->step, loss, T->sched.lr, kept);
    }
    bl->focal += h[0], bl->tversky += h[1], bl->log_iou += h[2], bl->entropy += h[3];
    bl->loss += loss;
    return LS_OK;
}

/* Items of one batch: positives i-1 and i+1 inside the scan, the negative (i + Z/2) mod Z unless it is i. */
static void make_item(const trainer *T, int scan_i, int k, item *it) {
    int Z = T->train[scan_i].Z;
    it->scan = scan_i, it->slice = k, it->variant = 0, it->nextra = 0, it->npos = 0;
    if (T->cfg.w_cd <= 0) return;
    if (k > 0) it->extra[it->nextra++] = k - 1;
    if (k + 1 < Z) it->extra[it->nextra++] = k + 1;
    it->npos = it->nextra;
    int neg = (k + Z / 2) % Z;
    if (neg != k) it->extra[it->nextra++] = neg;
}

/* Dice of every validation scan at the decoder's resolution (no clean-up); returns the mean. */
static double validate(trainer *T, double *per_case) {
    const ls_backend *be = T->be;
    int B = T->cfg.batch;
    size_t fs = (size_t)T->C * T->P, is = (size_t)T->S * T->S;
    double sum = 0;
    for (int v = 0; v < T->nval; v++) {
        const scan *s = &T->val[v];
        double tp = 0, fp = 0, fn = 0;
        for (int k0 = 0; k0 < s->Z; k0 += B) {
            int nb = s->Z - k0 < B ? s->Z - k0 : B;
            const staged *st = &T->set[0];
#pragma omp parallel for schedule(static) num_threads(T->nth)
            for (int b = 0; b < nb; b++)
                build_item(T, s, k0 + b, 0, NULL, NULL, omp_get_thread_num(), st->feat + b * fs, st->img + b * is,
                           st->tgt + b * is);
            be->mem->to_device(be, T->d_feat, st->feat, nb * fs * sizeof(float));
            be->mem->to_device(be, T->d_img, st->img, nb * is * sizeof(float));
            ls_model_acts a;
            ls_arena_reset(&T->acts);
            ls_model_forward(&T->model, &T->acts, &a, T->d_feat, T->d_img, nb, 0, NULL);
            be->mem->to_host(be, T->h_logits, a.logits, nb * is * sizeof(float));
            for (size_t i = 0; i < nb * is; i++) {
                int p = T->h_logits[i] > 0, t = st->tgt[i] > 0.5f;
                tp += p && t, fp += p && !t, fn += !p && t;
            }
        }
        per_case[v] = tp + fp + fn > 0 ? 2 * tp / (2 * tp + fp + fn) : 1.0;
        sum += per_case[v];
    }
    return T->nval ? sum / T->nval : 0;
}

/* ------------------------------------------------------------------ files */

static void path_in(char *out, size_t n, const char *dir, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

static ls_status save_models(trainer *T, const char *dir, int best, ls_error *err) {
    char *json = ls_train_config_json(&T->cfg), path[4200];
    ls_model_info info = {.input_size = T->cfg.input_size, .train_config = json};
    snprintf(info.teacher_id, sizeof info.teacher_id, "%s", T->teacher.id);
    snprintf(info.teacher_arch, sizeof info.teacher_arch, "%s", T->cfg.arch);
    path_in(path, sizeof path, dir, "last.safetensors");
    ls_status s = ls_model_save(&T->model, &info, path, 0, err);
    path_in(path, sizeof path, dir, "best.safetensors");
    if (!s && best) s = ls_model_save(&T->model, &info, path, 0, err);
    free(json);
    return s;
}

/* The tensors of a training state: weights, RAdam's moments, batch-norm running statistics. */
static int state_tensors(trainer *T, ls_state_tensor *t) {
    size_t np = T->model.nparams;
    t[0] = (ls_state_tensor){"params", T->model.params, np}, t[1] = (ls_state_tensor){"adam_m", T->adam_m, np};
    t[2] = (ls_state_tensor){"adam_v", T->adam_v, np};
    t[3] = (ls_state_tensor){"running", T->model.running, T->model.nrunning};
    return 4;
}

static ls_status save_state(trainer *T, const char *dir, ls_error *err) {
    ls_state_tensor t[4];
    int nt = state_tensors(T, t);
    char *json = ls_train_config_json(&T->cfg), v[6][64], path[4200];
    snprintf(v[0], 64, "%d", T->epoch), snprintf(v[1], 64, "%d", T->step), snprintf(v[2], 64, "%.17g", T->sched.lr);
    snprintf(v[3], 64, "%.17g", T->sched.best), snprintf(v[4], 64, "%d %d", T->sched.bad_epochs, T->sched.cooldown_left);
    snprintf(v[5], 64, "%.17g", T->best_dice);
    const char *meta[] = {"livseg_train_state", "1", "config", json, "epoch", v[0], "step", v[1], "lr", v[2],
                          "plateau_best", v[3], "plateau_counts", v[4], "best_dice", v[5], "teacher", T->teacher.id,
                          "log", T->log ? T->log : ""};
    path_in(path, sizeof path, dir, "state.safetensors");
    ls_status s = ls_state_write(T->be, path, t, nt, meta, (int)(sizeof meta / sizeof *meta / 2), err);
    free(json);
    return s;
}

/* Reads the configuration of a state file (the model and teacher are built from it before the rest). */
static ls_status state_config(const char *dir, ls_train_config *c, ls_error *err) {
    char path[4200], *json;
    path_in(path, sizeof path, dir, "state.safetensors");
    LS_TRY(ls_state_config(path, "livseg_train_state", "livseg training state", &json, err));
    ls_status s = ls_train_config_from_json(c, json, err);
    free(json);
    return s;
}

/* The run in dir was started with the settings in `want`, apart from the number of epochs and where
 * features are cached; else the first setting that differs is named. */
static ls_status same_settings(const ls_train_config *have, const ls_train_config *want, const char *dir, ls_error *err) {
    ls_train_config a = *have, b = *want;
    a.epochs = b.epochs, a.cache_dir[0] = b.cache_dir[0] = 0;
    char *ja = ls_train_config_json(&a), *jb = ls_train_config_json(&b);
    json_t *oa = ja ? json_loads(ja, 0, NULL) : NULL, *ob = jb ? json_loads(jb, 0, NULL) : NULL;
    ls_status s = oa && ob ? LS_OK : ls_fail(err, LS_ERR_NOMEM, "cannot compare training settings");
    const char *key;
    json_t *va;
    if (!s) json_object_foreach(oa, key, va) {
        json_t *vb = json_object_get(ob, key);
        if (!json_equal(va, vb)) {
            char *x = json_dumps(va, JSON_ENCODE_ANY | JSON_REAL_PRECISION(6)),
                 *y = json_dumps(vb, JSON_ENCODE_ANY | JSON_REAL_PRECISION(6));
            s = ls_fail(err, LS_ERR_INPUT, "%s: holds a run with other settings (%s %s, asked for %s); give another -o",
                        dir, key, x ? x : "?", y ? y : "?");
            free(x), free(y);
            break;
        }
    }
    json_decref(oa), json_decref(ob);
    free(ja), free(jb);
    return s;
}

ls_status ls_train_continues(const ls_train_config *c, const char *dir, ls_error *err) {
    ls_train_config have;
    LS_TRY(state_config(dir, &have, err));
    LS_TRY(same_settings(&have, c, dir, err));
    char path[4200];
    path_in(path, sizeof path, dir, "state.safetensors");
    ls_st_file f;
    LS_TRY(ls_st_open(path, &f, err));
    const char *ep = ls_st_meta(&f, "epoch");
    int done = ep ? atoi(ep) : 0;
    ls_st_close(&f);
    if (done > c->epochs)
        return ls_fail(err, LS_ERR_INPUT, "%s: holds a run of %d epochs, more than the %d asked for; give another -o", dir,
                       done, c->epochs);
    return LS_OK;
}

static ls_status load_state(trainer *T, const char *dir, ls_error *err) {
    char path[4200];
    path_in(path, sizeof path, dir, "state.safetensors");
    ls_st_file f;
    LS_TRY(ls_st_open(path, &f, err));
    ls_state_tensor t[4];
    int nt = state_tensors(T, t);
    ls_status s = LS_OK;
    const char *ep = ls_st_meta(&f, "epoch"), *step = ls_st_meta(&f, "step"), *lr = ls_st_meta(&f, "lr"),
               *pb = ls_st_meta(&f, "plateau_best"), *pc = ls_st_meta(&f, "plateau_counts"),
               *bd = ls_st_meta(&f, "best_dice"), *log = ls_st_meta(&f, "log"), *tid = ls_st_meta(&f, "teacher");
    if (!ep || !step || !lr || !pb || !pc || !bd || !log || !tid ||
        sscanf(pc, "%d %d", &T->sched.bad_epochs, &T->sched.cooldown_left) != 2)
        s = ls_fail(err, LS_ERR_INPUT, "%s: training state metadata missing or invalid", path);
    if (!s && strcmp(tid, T->teacher.id))
        s = ls_fail(err, LS_ERR_INPUT, "%s: state was trained with teacher %s, not %s", path, tid, T->teacher.id);
    if (!s) s = ls_state_read(T->be, &f, path, t, nt, err);
    if (!s) {
        T->epoch = atoi(ep), T->step = atoi(step), T->sched.lr = strtod(lr, NULL), T->sched.best = strtod(pb, NULL);
        T->best_dice = strtod(bd, NULL);
        T->log = strdup(log);
    }
    ls_st_close(&f);
    return s;
}

static ls_status write_log(trainer *T, const char *dir, ls_error *err) {
    char path[4200];
    path_in(path, sizeof path, dir, "train.jsonl");
    return ls_write_file_atomic(path, T->log ? T->log : "", T->log ? strlen(T->log) : 0, NULL, err);
}

/* ------------------------------------------------------------------ the epoch loop */

static uint64_t epoch_seed(uint64_t seed, int epoch) {
    ls_rng r = {seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(epoch + 1))};
    return ls_rng_next(&r);
}

static void shuffle(ls_slice_ref *o, int n, ls_rng *r) { /* Fisher-Yates */
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(ls_rng_next(r) % (uint64_t)(i + 1));
        ls_slice_ref t = o[i];
        o[i] = o[j], o[j] = t;
    }
}

/* The slices of the scans of dataset d (-1: of all), in scan order; returns how many. */
static int list_slices(const int *Z, const int *ds, int nscans, int d, ls_slice_ref *o) {
    int k = 0;
    for (int i = 0; i < nscans; i++)
        if (d < 0 || ds[i] == d)
            for (int z = 0; z < Z[i]; z++) o[k].scan = i, o[k++].slice = z;
    return k;
}

int ls_train_epoch_order(const int *Z, const int *ds, int nscans, int per_epoch, int balance, ls_rng *r,
                         ls_slice_ref *o, ls_slice_ref *tmp) {
    int total = 0, nd = 0;
    for (int i = 0; i < nscans; i++) total += Z[i], nd = ds[i] + 1 > nd ? ds[i] + 1 : nd;
    int n = per_epoch && per_epoch < total ? per_epoch : total;
    if (!balance) {
        shuffle(o, list_slices(Z, ds, nscans, -1, o), r);
        return n;
    }
    int k = 0;
    for (int d = 0; d < nd; d++) {
        int have = list_slices(Z, ds, nscans, d, tmp), want = n / nd + (d < n % nd);
        shuffle(tmp, have, r);
        for (int j = 0; have && j < want; j++) o[k++] = tmp[j % have];
    }
    shuffle(o, k, r);
    return k;
}

/* The epoch's slices: ls_train_epoch_order over the training scans, their datasets numbered in order of
 * first appearance; *n of them. */
static ls_slice_ref *epoch_order(const trainer *T, ls_rng *r, int *n, ls_error *err) {
    int total = 0, nt = T->ntrain;
    for (int i = 0; i < nt; i++) total += T->train[i].Z;
    ls_slice_ref *o = ls_calloc((size_t)total, sizeof *o, err), *tmp = ls_calloc((size_t)total, sizeof *tmp, err);
    int *Z = ls_calloc((size_t)nt, sizeof *Z, err), *ds = ls_calloc((size_t)nt, sizeof *ds, err);
    if (o && tmp && Z && ds) {
        for (int i = 0, nd = 0; i < nt; i++) {
            Z[i] = T->train[i].Z, ds[i] = nd;
            for (int j = 0; j < i && ds[i] == nd; j++)
                if (!strcmp(T->train[j].c->dataset, T->train[i].c->dataset)) ds[i] = ds[j];
            nd += ds[i] == nd;
        }
        *n = ls_train_epoch_order(Z, ds, nt, T->cfg.slices_per_epoch, T->cfg.balance, r, o, tmp);
    } else {
        free(o), o = NULL;
    }
    free(tmp), free(Z), free(ds);
    return o;
}

static ls_status append_log(trainer *T, const char *line) {
    size_t have = T->log ? strlen(T->log) : 0, add = strlen(line);
    char *p = realloc(T->log, have + add + 2);
    if (!p) return LS_ERR_NOMEM;
    memcpy(p + have, line, add);
    p[have + add] = '\n', p[have + add + 1] = 0;
    T->log = p;
    return LS_OK;
}

/* The items of the B slices at `refs`, staged into st. Variants come from their own stream vr, so the other
 * draws are those of a run without variants. */
static void stage_items(trainer *T, staged *st, const ls_slice_ref *refs, int B, ls_rng *r, ls_rng *vr) {
    int nv = T->cfg.teacher_variants; /* every training scan has them all (scan_load) */
    for (int i = 0; i < B; i++) {
        make_item(T, refs[i].scan, refs[i].slice, &st->it[i]);
        if (nv) st->it[i].variant = (int)(ls_rng_next(vr) % (uint64_t)(nv + 1));
    }
    stage_batch(T, st, B, r);
}

static ls_status run_epoch(trainer *T, const char *dir, const ls_train_hooks *hooks, ls_error *err) {
    const ls_train_config *c = &T->cfg;
    ls_rng r = {epoch_seed(c->seed, T->epoch)}, vr = {epoch_seed(c->seed ^ 0x76617269616e7473ull, T->epoch)};
    int n;
    ls_slice_ref *order = epoch_order(T, &r, &n, err);
    if (!order) return LS_ERR_NOMEM;
    int B = c->batch, nb = n / B;
    batch_losses bl = {0};
    double t0 = ls_now();
    /* Batch b+1 is built on the host while the device runs batch b (on the CPU, in turn): the same random
     * draws in the same order as building each batch just before its step. */
    if (nb) stage_items(T, &T->set[0], order, B, &r, &vr);
    for (int b = 0; b < nb; b++) {
        int nterms = queue_step(T, &T->set[b & 1]);
        if (b + 1 < nb) stage_items(T, &T->set[(b + 1) & 1], order + (size_t)(b + 1) * B, B, &r, &vr);
        if (collect_step(T, nterms, &bl, err)) {
            free(order);
            return err->code;
        }
        if (hooks && hooks->batch) {
            double d = b + 1;
            ls_train_status st = {T->epoch + 1, c->epochs, b + 1, nb, B, bl.loss / d, bl.focal / d, bl.tversky / d,
                                  bl.log_iou / d, bl.entropy / d, bl.cd / d,
                                  bl.nsim[0] ? bl.sim[0] / bl.nsim[0] : 0, bl.nsim[1] ? bl.sim[1] / bl.nsim[1] : 0,
                                  bl.nsim[2] ? bl.sim[2] / bl.nsim[2] : 0, (b + 1) * B / (ls_now() - t0), T->sched.lr};
            hooks->batch(hooks->ctx, &st);
        }
    }
    free(order);
    double train_s = ls_now() - t0, *per = ls_calloc((size_t)T->nval + 1, sizeof(double), err);
    if (!per) return LS_ERR_NOMEM;
    double dice = validate(T, per), lr_used = T->sched.lr;
    T->epoch++;
    /* Without validation cases the schedule and "best" follow the training loss instead. */
    double metric = T->nval ? dice : -bl.loss / (nb ? nb : 1);
    int best = T->epoch == 1 || metric > T->best_dice;
    if (best) T->best_dice = metric;
    ls_plateau_step(&T->sched, metric);
    json_t *o = json_pack("{s:i, s:i, s:f, s:f, s:f}", "epoch", T->epoch, "steps", T->step, "lr", lr_used, "seconds",
                          ls_now() - t0, "train_seconds", train_s);
    double d = nb ? nb : 1;
    json_t *tr = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "loss", bl.loss / d, "focal", bl.focal / d,
                           "tversky", bl.tversky / d, "log_iou", bl.log_iou / d, "entropy", bl.entropy / d, "cd",
                           bl.cd / d, "sim_self", bl.nsim[0] ? bl.sim[0] / bl.nsim[0] : 0.0, "sim_plus",
                           bl.nsim[1] ? bl.sim[1] / bl.nsim[1] : 0.0, "sim_minus",
                           bl.nsim[2] ? bl.sim[2] / bl.nsim[2] : 0.0);
    json_object_set_new(o, "train", tr);
    json_t *vc = json_object();
    for (int v = 0; v < T->nval; v++) json_object_set_new(vc, T->val[v].c->id, json_real(per[v]));
    if (T->nval) json_object_set_new(o, "val_dice", json_real(dice));
    json_object_set_new(o, "val_dice_per_case", vc);
    json_object_set_new(o, "best", json_boolean(best));
    free(per);
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(o);
    ls_status s = line ? append_log(T, line) : LS_ERR_NOMEM;
    if (!s) s = save_models(T, dir, best, err);
    if (!s) s = save_state(T, dir, err);
    if (!s) s = write_log(T, dir, err);
    if (!s && hooks && hooks->epoch) hooks->epoch(hooks->ctx, line);
    free(line);
    return s;
}

static ls_status load_scans(trainer *T, const ls_manifest *m, const ls_train_hooks *hooks, ls_error *err) {
    int *tr = ls_calloc((size_t)m->n + 1, sizeof(int), err), *va = ls_calloc((size_t)m->n + 1, sizeof(int), err), nt, nv;
    ls_status s = tr && va ? LS_OK : LS_ERR_NOMEM;
    if (!s) s = ls_manifest_select(m, T->cfg.datasets, T->cfg.val_split, T->cfg.limit, tr, &nt, va, &nv, err);
    if (!s) s = ls_manifest_check_files(m, tr, nt, 1, err);
    if (!s) s = ls_manifest_check_files(m, va, nv, 1, err);
    if (!s) {
        T->train = ls_calloc((size_t)nt, sizeof(scan), err), T->val = ls_calloc((size_t)nv + 1, sizeof(scan), err);
        if (!T->train || !T->val) s = LS_ERR_NOMEM;
    }
    for (int i = 0; !s && i < nt; i++)
        if (!(s = scan_load(&T->train[i], &m->cases[tr[i]], &T->teacher, T->cfg.cache_dir, &T->cfg, hooks, err))) T->ntrain++;
    for (int i = 0; !s && i < nv; i++)
        if (!(s = scan_load(&T->val[i], &m->cases[va[i]], &T->teacher, T->cfg.cache_dir, NULL, hooks, err))) T->nval++;
    free(tr), free(va);
    return s;
}

static ls_status trainer_init(trainer *T, const ls_manifest *m, const ls_train_hooks *hooks, ls_error *err) {
    const ls_train_config *c = &T->cfg;
    LS_TRY(config_check(c, err));
    LS_TRY(ls_teacher_open(&T->teacher, T->be, c->teacher[0] ? c->teacher : NULL, c->arch, c->teacher_seed,
                           c->input_size, err));
    const ls_vit_config *vc = &T->teacher.vit.cfg;
    T->C = vc->dim, T->g = c->input_size / vc->patch, T->P = T->g * T->g, T->K = c->code_dim;
    ls_model_config mc;
    ls_train_model_config(c, T->C, T->g, &mc);
    LS_TRY(ls_model_init(&T->model, T->be, &mc, c->seed, err));
    T->S = ls_model_out_side(&mc);
    LS_TRY(load_scans(T, m, hooks, err));
    ls_plateau_init(&T->sched, c->lr, c->patience, c->lr_factor);
    return trainer_buffers(T, err);
}

ls_status ls_train(const ls_train_config *c, const ls_manifest *m, const char *out_dir, int resume,
                   const ls_backend *be, const ls_train_hooks *hooks, ls_error *err) {
    trainer T;
    memset(&T, 0, sizeof T);
    T.be = be, T.cfg = *c;
    int created;
    if (!resume) LS_TRY(config_check(c, err));
    LS_TRY(ls_run_dir_open(out_dir, "state.safetensors", resume, &created, err));
    ls_status s = LS_OK;
    if (resume) {
        s = state_config(out_dir, &T.cfg, err);
        T.cfg.epochs = c->epochs;
    }
    if (!s && T.cfg.batch > 256) s = ls_fail(err, LS_ERR_INPUT, "batch %d is larger than 256", T.cfg.batch);
    if (!s) s = trainer_init(&T, m, hooks, err);
    if (!s && resume) s = load_state(&T, out_dir, err);
    while (!s && T.epoch < T.cfg.epochs) s = run_epoch(&T, out_dir, hooks, err);
    trainer_free(&T);
    if (s) ls_run_dir_abandon(out_dir, created);
    return s;
}
