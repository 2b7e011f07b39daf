/*
 * vit.h — the frozen teacher: a DINO Vision Transformer forward pass on any backend.
 *
 * Architecture (timm's VisionTransformer as DINO trained it): patch embedding (a PxP stride-P
 * convolution), class token, learned position embeddings (bicubically resized to the input's token
 * grid), `depth` pre-norm blocks (LayerNorm, multi-head self-attention, LayerNorm, MLP with exact GELU),
 * a final LayerNorm. The output is the last block's tokens after the final LayerNorm without the
 * class token, as a D x H/P x W/P grid per image; optionally the last block's attention keys in the
 * same layout.
 *
 * Training (pretraining the teacher, vit_train.c): a forward that keeps what the backward needs, and
 * the backward, which adds the gradient of every weight into m->grads (parallel to m->params, so an
 * optimiser is one op over both buffers).
 *
 * Legend: B images, H/W input size (multiples of P), D width, NH heads, T = 1 + (H/P)(W/P) tokens,
 * N = T - 1 patch tokens on a gh x gw grid, BT = B*T.
 */
#ifndef LS_VIT_H
#define LS_VIT_H

#include "ops.h"
#include "safetensors.h"

typedef struct {
    char name[16];  /* "vits16", ... or "custom" */
    int depth, dim, heads, patch, mlp_hidden;
    int pos_grid;   /* side of the trained position-embedding grid (224 / patch for DINO) */
    float eps;
} ls_vit_config;

/* DINO presets: vits16, vits8, vitb16, vitb8 (also accepted: vit_small_patch16 etc. are not; use these). */
ls_status ls_vit_config_preset(const char *name, ls_vit_config *cfg, ls_error *err);

typedef struct {
    float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b, *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} ls_vit_block;

/* Position embeddings for a grid other than the trained one (gh x gw, N = gh * gw positions): the bicubic
 * resize as a matrix, built on the host when the grid is first seen, and the table it gives, recomputed on
 * the backend (one GEMM) after the weights change. */
typedef struct {
    float *interp; /* [G*G, N]: row i, trained position i's weight in each resized one */
    float *table;  /* [1 + N, D] */
    int gh, gw, stale;
} ls_vit_pos;
#define LS_VIT_POS_GRIDS 2

typedef struct {
    ls_vit_config cfg;
    const ls_backend *be;
    float *params; /* one backend allocation holding every weight */
    size_t nparams;
    float *grads;  /* NULL until ls_vit_alloc_grads: one gradient per weight, the layout of params */
    float *cls, *pos, *patch_w, *patch_b, *norm_w, *norm_b;
    ls_vit_block *blocks;
    ls_vit_pos pos_grids[LS_VIT_POS_GRIDS]; /* the last grids other than the trained one (DINO: two crop sizes) */
    int pos_next;                           /* the slot a new grid takes */
} ls_vit;

/* Loads weights by their timm names (cls_token, pos_embed, patch_embed.proj.weight, blocks.N.*, norm.*)
 * or their Hugging Face names (embeddings.*, encoder.layer.N.*, layernorm.*, with or without a "vit."
 * prefix; separate query/key/value are joined). A missing tensor is an error naming it. */
ls_status ls_vit_load(ls_vit *m, const ls_backend *be, const ls_vit_config *cfg, ls_tensor_source src, void *ctx,
                      ls_error *err);
void ls_vit_free(ls_vit *m);
/* Weights of a configuration (m->nparams once loaded). */
size_t ls_vit_nparams(const ls_vit_config *cfg);

/* timm's and DINO's initialisation as a tensor source for ls_vit_load (ctx: an ls_rng, advanced): weights
 * (cls, pos and DINO's prototypes included) normal(0, 0.02) truncated to +-2 std by redrawing, biases 0,
 * LayerNorm weights 1. A tensor's draws are the ones n calls of ls_rng_normal would give, made in
 * parallel. */
int ls_vit_init_source(void *ctx, const char *name, float *dst, size_t n, ls_error *err);

/* Floats of arena a forward pass of B images of HxW needs (see vit.c for the layout). */
size_t ls_vit_arena_floats(const ls_vit_config *cfg, int B, int H, int W);

/* images[B,3,H,W] -> features[B,D,H/P,W/P] (and keys[B,D,H/P,W/P] when keys != NULL), all in backend
 * memory. Scratch comes from `arena` (reset by the caller between calls). */
ls_status ls_vit_forward(ls_vit *m, ls_arena *arena, const float *images, int B, int H, int W, float *features,
                         float *keys, ls_error *err);

/* ------------------------------------------------------------------ training */

/* Allocates m->grads (nparams floats of backend memory), zeroed. Zero it again (be->mem->zero) per step. */
ls_status ls_vit_alloc_grads(ls_vit *m, ls_error *err);

/* Tells the model its weights changed (an optimiser step): the resized position embeddings are recomputed
 * at the next forward (ls_vit_forward would otherwise keep using the cached ones). */
void ls_vit_params_changed(ls_vit *m);

/* What a training forward keeps for the backward, carved from the arena (see vit_train.c). */
typedef struct {
    int B, H, W, gh, gw, T;
    float *cols;  /* patch rows [B*N, 3P^2] */
    float *x_in, *x_mid; /* per block [depth][BT,D]: the residual stream before attention / before the MLP */
    float *q, *k, *v;    /* per block [depth][B,NH,T,HS] */
    float *att;          /* per block [depth][BT,D]: attention output, heads merged (the projection's input) */
    float *pre;          /* per block [depth][BT,mlp_hidden]: fc1 output plus bias (GELU's input) */
    float *x_out;        /* [BT,D] the final LayerNorm's input */
    float *tokens;       /* [BT,D] the final LayerNorm's output (class token first) */
    float *h, *wide, *scores; /* forward scratch, reused by the backward */
} ls_vit_acts;

/* Floats of arena a training forward plus its backward of B images of HxW need. */
size_t ls_vit_train_arena_floats(const ls_vit_config *cfg, int B, int H, int W);

/* The forward of ls_vit_forward keeping activations in `a` (unfused attention, biases added after the GEMMs:
 * the same result to float32 rounding, not bit for bit).
 * features[B,D,gh,gw] and cls[B,D] (the class token after the final LayerNorm) are written when not NULL.
 * The resized position embeddings are recomputed from the current weights on every call. */
ls_status ls_vit_forward_train(ls_vit *m, ls_arena *arena, ls_vit_acts *a, const float *images, int B, int H, int W,
                               float *features, float *cls, ls_error *err);

/* Given dL/dfeatures[B,D,gh,gw] and dL/dcls[B,D] of the forward that filled `a` (either may be NULL:
 * zero), ADDS dL/dweight into m->grads (ls_vit_alloc_grads first) and, when dimages is not NULL, WRITES
 * dL/dimages[B,3,H,W]. Scratch comes from the same arena, after the activations. */
ls_status ls_vit_backward(ls_vit *m, ls_arena *arena, const ls_vit_acts *a, const float *dfeatures, const float *dcls,
                          float *dimages, ls_error *err);

/* PyTorch's bicubic resize (align_corners=False, A = -0.75, border-clamped taps, no antialiasing) of a
 * [C, ih, iw] grid to [C, oh, ow], on the host. Exposed for tests. */
void ls_bicubic_resize(const float *in, int C, int ih, int iw, float *out, int oh, int ow);

#endif
