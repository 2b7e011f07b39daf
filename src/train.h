/*
 * train.h — training the head and decoder (paper "Method"): the frozen teacher's cached features of every
 * training slice, the supervised losses on the decoder's output, and contrastive distillation on the
 * head's codes, optimised with RAdam under ReduceLROnPlateau on the validation Dice.
 *
 * One epoch visits the training slices in a seeded random order (or a seeded random subset of
 * `slices_per_epoch` of them; with `balance`, the same number from each training dataset), `batch` at a time; an incomplete last batch is dropped (batch norm on one
 * or two slices is noise). Each batch item is a (scan, slice i) pair; its contrastive terms pair slice i
 * with itself (b_self), with its positives i-1 and i+1 (those inside the scan; b_plus) and with its
 * negative (i + Z/2) mod Z of the same scan (b_minus; skipped when that is i itself, a 1-slice scan).
 * Positives and negatives reach the loss through the head alone and get gradients like slice i.
 *
 * Augmentation (on by default) draws per item: a small affine warp (rotation, zoom, shift) applied alike
 * to the decoder's input slice, the target and the feature grid; and intensity changes (gamma, scale,
 * shift, Gaussian blur) of the decoder's input slice. The teacher's features come from the cache, so
 * they see the geometry of the augmentation but not those intensities. With `teacher_variants` V > 0, each
 * training scan also comes in V gamma variants (grey g -> g^gamma before the teacher and the decoder alike,
 * gammas from ls_train_variant_gamma), each with its own cached features; every item (with its positives
 * and negative) is drawn from the scan or one of its variants, all equally likely, from a stream of its
 * own, so the run's other draws are those of the same run without variants. Validation sees the scans.
 *
 * Determinism: everything random is drawn from splitmix64 streams derived from (seed, epoch), so the same
 * configuration, data and thread count give the same weights bit for bit, and a run resumed from its
 * state file continues exactly as if it had not stopped.
 *
 * Files in the output directory, each written atomically after every epoch:
 *   last.safetensors   the model after the epoch (loadable by `livseg segment --model`)
 *   best.safetensors   the model of the best validation Dice so far
 *   state.safetensors  everything --resume needs: weights, RAdam moments, epoch, schedule, log
 *   train.jsonl        one JSON object per epoch: losses, average code similarities, val Dice, lr, seconds
 */
#ifndef LS_TRAIN_H
#define LS_TRAIN_H

#include <stdint.h>

#include "manifest.h"
#include "model.h"
#include "rng.h"
#include "teacher.h"

typedef struct {
    /* data */
    char datasets[256];      /* comma-separated dataset names of the manifest */
    int val_split;           /* cases held out per dataset for validation (the last ones) */
    int limit;               /* at most this many training cases per dataset (0: all) */
    int slices_per_epoch;    /* 0: every training slice each epoch */
    int balance;             /* 1: each dataset gives an equal share of an epoch's slices (default 0: every
                              * slice is equally likely, so the dataset with the most slices dominates) */
    char cache_dir[1024];
    /* teacher */
    char arch[16];
    char teacher[1024];      /* weights file; "" = random initialisation from teacher_seed */
    uint64_t teacher_seed;
    int input_size;
    /* model (feat_dim and grid follow from the teacher) */
    int head_hidden;         /* 0: the teacher's width */
    int code_dim, widths[LS_DEC_STAGES], skip_width, up_stages;
    float dropout;
    /* optimisation */
    int epochs, batch, patience;
    float lr, weight_decay, lr_factor;
    /* supervised losses */
    float w_focal, focal_gamma, focal_alpha, w_tversky, tversky_a, tversky_b, w_log_iou, w_entropy, entropy_eta;
    /* contrastive distillation: overall weight, shifts b and per-term weights */
    float w_cd, b_self, b_plus, b_minus, w_self, w_plus, w_minus;
    /* augmentation */
    int augment;
    float aug_rotate_deg, aug_zoom, aug_shift, aug_gamma, aug_scale, aug_offset, aug_blur;
    int teacher_variants;    /* gamma variants per training scan that the teacher sees (0 to LS_TRAIN_MAX_VARIANTS) */
    float teacher_gamma;     /* their largest gamma G (> 1) */
    uint64_t seed;
} ls_train_config;

#define LS_TRAIN_MAX_VARIANTS 4

/* Gamma of teacher variant v (1..teacher_variants; 1 for anything else): G^(-k/m) for odd v and G^(k/m)
 * for even v, k = (v+1)/2, m = ceil(V/2); V = 2 gives 1/G and G. */
float ls_train_variant_gamma(const ls_train_config *c, int v);

/* The CPU preset (the default): see docs/training.md. */
void ls_train_config_default(ls_train_config *c);
/* "cpu" or "paper" (the paper's decoder at full resolution, 150 epochs). */
ls_status ls_train_config_preset(ls_train_config *c, const char *name, ls_error *err);
/* The model a configuration trains, for a teacher of feat_dim channels on a grid x grid token grid. */
void ls_train_model_config(const ls_train_config *c, int feat_dim, int grid, ls_model_config *mc);
/* The configuration as one line of JSON (caller frees), and back. */
char *ls_train_config_json(const ls_train_config *c);
ls_status ls_train_config_from_json(ls_train_config *c, const char *json, ls_error *err);

/* What the running sums of an epoch look like to a progress display. */
typedef struct {
    int epoch, epochs, batches_done, batches, batch;
    double loss, focal, tversky, log_iou, entropy, cd; /* means over the epoch so far, unweighted terms */
    double sim_self, sim_plus, sim_minus;              /* mean code similarity of each contrastive term */
    double slices_per_s, lr;
} ls_train_status;

typedef struct {
    void *ctx;
    /* Data preparation: case `what` (its id), done of total slices for the teacher. May be NULL. */
    void (*prepare)(void *ctx, const char *what, int64_t done, int64_t total);
    /* After every batch. May be NULL. */
    void (*batch)(void *ctx, const ls_train_status *s);
    /* After every epoch, with its log line (JSON, no newline). May be NULL. */
    void (*epoch)(void *ctx, const char *json);
} ls_train_hooks;

/* Trains on the manifest's cases per `c`, writing into out_dir (created if absent; a new run, resume 0, is
 * refused where out_dir holds one). With `resume`, the configuration, weights, optimiser state and log
 * come from out_dir/state.safetensors and training continues after its last epoch up to c->epochs (the
 * only setting a resume takes from `c`; ls_train_continues checks first that the run is `c`'s). A loss
 * that is not finite stops the run (the last epoch's files stay). A directory this call created is
 * removed again if it fails before writing anything there. */
ls_status ls_train(const ls_train_config *c, const ls_manifest *m, const char *out_dir, int resume,
                   const ls_backend *be, const ls_train_hooks *hooks, ls_error *err);

/* Whether the run in dir is `c`'s to continue (experiment's rule): the same settings (apart from epochs
 * and the cache directory) and no more epochs done than c->epochs; else LS_ERR_INPUT naming what differs. */
ls_status ls_train_continues(const ls_train_config *c, const char *dir, ls_error *err);

/* Token data for a linear probe of the teacher (probe.h): for every slice_stride-th slice of each listed
 * case (indices into m), each token's feature vector (rows of *X, [*n, *dim]) and label (*y: liver covers
 * at least half of the token's patch, the label resized as for training). Features come from the cache
 * like training's. The caller frees *X and *y. */
ls_status ls_train_tokens(const ls_manifest *m, const int *cases, int ncases, ls_teacher *t, const char *cache_dir,
                          int slice_stride, const ls_train_hooks *hooks, float **X, uint8_t **y, int64_t *n, int *dim,
                          ls_error *err);

/* A slice of a training scan. */
typedef struct {
    int scan, slice;
} ls_slice_ref;

/* One epoch's slices in a seeded order (exposed for tests), for nscans scans of Z[i] slices from dataset ds[i]
 * (0, 1, ... in order of first appearance): every slice listed scan by scan and shuffled, the first
 * n = per_epoch of them visited (0, or more than there are: all); or with `balance`, each of the nd datasets
 * gives n / nd (the first n % nd one more) of its own slices, shuffled and repeated when it has fewer, and the
 * n are shuffled together. o and tmp hold sum(Z) entries each; returns n. */
int ls_train_epoch_order(const int *Z, const int *ds, int nscans, int per_epoch, int balance, ls_rng *r,
                         ls_slice_ref *o, ls_slice_ref *tmp);

#endif
