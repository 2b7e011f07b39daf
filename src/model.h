/*
 * model.h — the trainable part of the method: the head (paper: "2 convolutional layers and ReLU") that
 * maps teacher features to codes, and the U-Net-style decoder that turns codes and the input slice into
 * a liver logit map.
 *
 *   head:    feats[B,C,g,g] -> conv1x1 C->Hh -> ReLU -> conv1x1 Hh->K            = codes[B,K,g,g]
 *   decoder: codes -> 5 x (upsample x2 -> conv3x3 -> BN -> ReLU -> Dropout2d)    -> [B,w5,S,S]
 *            concat the input slice [B,1,S,S] (the skip connection)
 *            -> conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3 -> 1   = logits[B,1,S,S]
 *
 * The last `up_stages` of the five stages upsample (default all five, S = 32 g); with fewer, the first
 * stages keep the token grid, which cuts the decoder's cost (mostly at full resolution) fourfold per
 * stage dropped, for CPU training.
 *
 * Parameters live in one contiguous buffer (and their gradients in another of the same layout), so the
 * optimiser is one op over everything; batch-norm running statistics sit in a separate buffer.
 * Legend: B batch, C teacher channels, g token grid side, K code width, S = g * 2^up_stages output side.
 */
#ifndef LS_MODEL_H
#define LS_MODEL_H

#include <stdint.h>

#include "ops.h"
#include "safetensors.h"

#define LS_DEC_STAGES 5

typedef struct {
    int feat_dim;    /* C: teacher channels (384 for ViT-S) */
    int head_hidden; /* Hh */
    int code_dim;    /* K (STEGO's 70) */
    int grid;        /* g */
    int widths[LS_DEC_STAGES];
    int skip_width;
    int up_stages;   /* 1..5: how many of the stages upsample (the last ones) */
    float dropout, bn_momentum, bn_eps;
} ls_model_config;

/* The defaults documented in docs/model.md, for a teacher of `feat_dim` channels on a g x g grid. */
void ls_model_config_default(ls_model_config *c, int feat_dim, int grid);

/* The decoder's output side S. */
int ls_model_out_side(const ls_model_config *c);

typedef struct {
    float *w, *b, *gamma, *beta; /* gamma/beta NULL for convolutions without batch norm */
    float *run_mean, *run_var;
    int ci, co, k;
} ls_conv_layer;

#define LS_MODEL_LAYERS (2 + LS_DEC_STAGES + 3)

typedef struct {
    ls_model_config cfg;
    const ls_backend *be;
    float *params, *grads, *running;
    size_t nparams, nrunning;
    ls_conv_layer layer[LS_MODEL_LAYERS]; /* head1, head2, dec0..dec4, skip0, skip1, out */
} ls_model;

/* Allocates and initialises as PyTorch's Conv2d defaults (Kaiming-uniform weights with a = sqrt(5),
 * uniform biases in +-1/sqrt(fan_in)), BN gamma 1, beta 0, running mean 0, var 1, from `seed`. */
ls_status ls_model_init(ls_model *m, const ls_backend *be, const ls_model_config *cfg, uint64_t seed, ls_error *err);
void ls_model_free(ls_model *m);

/* Everything a forward pass keeps for the backward pass, carved from an arena. */
typedef struct {
    int B;
    float *feats, *image;            /* inputs (borrowed) */
    float *h1, *codes;               /* head */
    float *up[LS_DEC_STAGES], *conv[LS_DEC_STAGES], *bn[LS_DEC_STAGES], *out[LS_DEC_STAGES];
    float *mean[LS_MODEL_LAYERS], *rstd[LS_MODEL_LAYERS];
    float *keep[LS_DEC_STAGES];      /* dropout masks [B, w] */
    float *cat, *s0, *s0bn, *s1, *s1bn, *logits;
    float *ws;                       /* conv scratch */
    int training;
} ls_model_acts;

size_t ls_model_arena_floats(const ls_model_config *c, int B);

/* feats[B,C,g,g], image[B,1,S,S] (backend memory) -> acts (codes and logits inside). In training mode
 * batch norm uses batch statistics and updates the running ones, and dropout applies `keep` masks
 * (host arrays [B * widths[s]] of 0 or 1/(1-p), one per stage, drawn by the caller; NULL: no dropout). */
void ls_model_forward(ls_model *m, ls_arena *arena, ls_model_acts *a, const float *feats, const float *image, int B,
                      int training, float *const *keep);

/* The head alone (for slices that only feed the contrastive loss): feats[B,C,g,g] -> a->codes. Only
 * h1 and codes of `a` are set; ls_model_head_backward adds dL/dcodes into the head's gradients. */
void ls_model_head_forward(ls_model *m, ls_arena *arena, ls_model_acts *a, const float *feats, int B);
void ls_model_head_backward(ls_model *m, ls_arena *arena, const ls_model_acts *a, const float *dcodes);
size_t ls_model_head_arena_floats(const ls_model *m, int B);

/* Given dL/dlogits[B,1,S,S] and an extra dL/dcodes[B,K,g,g] (the contrastive loss; may be NULL), adds
 * the gradients of every parameter into m->grads. `scratch` comes from the same arena. */
void ls_model_backward(ls_model *m, ls_arena *arena, const ls_model_acts *a, const float *dlogits, const float *dcodes);


/* What a model file says besides its weights: the teacher it was trained with and its input size. */
typedef struct {
    char teacher_id[160];
    char teacher_arch[16];
    int input_size;
    const char *train_config; /* saved as metadata "train_config" when not NULL (JSON); not loaded */
} ls_model_info;

/* Saves weights (as F16 when `half`, else F32), running statistics and the configuration as
 * safetensors, atomically; tensor names follow a PyTorch state_dict (head1.weight, dec.0.conv.weight,
 * dec.0.bn.running_mean, ...). */
ls_status ls_model_save(const ls_model *m, const ls_model_info *info, const char *path, int half, ls_error *err);

/* Loads a model written by ls_model_save; wrong or incomplete files are LS_ERR_INPUT naming the file. */
ls_status ls_model_load(ls_model *m, ls_model_info *info, const ls_backend *be, const char *path, ls_error *err);

#endif
