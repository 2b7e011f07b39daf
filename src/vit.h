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
 * Legend: B images, H/W input size (multiples of P), D width, NH heads, T = 1 + (H/P)(W/P) tokens.
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

typedef struct {
    ls_vit_config cfg;
    const ls_backend *be;
    float *params; /* one backend allocation holding every weight */
    size_t nparams;
    float *cls, *pos, *patch_w, *patch_b, *norm_w, *norm_b;
    ls_vit_block *blocks;
    float *pos_resized; /* position embeddings for the last grid seen, [T, D] */
    int pos_gh, pos_gw;
} ls_vit;

/* Loads weights by their timm names (cls_token, pos_embed, patch_embed.proj.weight, blocks.N.*, norm.*)
 * or their Hugging Face names (embeddings.*, encoder.layer.N.*, layernorm.*, with or without a "vit."
 * prefix; separate query/key/value are joined). A missing tensor is an error naming it. */
ls_status ls_vit_load(ls_vit *m, const ls_backend *be, const ls_vit_config *cfg, ls_tensor_source src, void *ctx,
                      ls_error *err);
void ls_vit_free(ls_vit *m);

/* Floats of arena a forward pass of B images of HxW needs (see vit.c for the layout). */
size_t ls_vit_arena_floats(const ls_vit_config *cfg, int B, int H, int W);

/* images[B,3,H,W] -> features[B,D,H/P,W/P] (and keys[B,D,H/P,W/P] when keys != NULL), all in backend
 * memory. Scratch comes from `arena` (reset by the caller between calls). */
ls_status ls_vit_forward(ls_vit *m, ls_arena *arena, const float *images, int B, int H, int W, float *features,
                         float *keys, ls_error *err);

/* PyTorch's bicubic resize (align_corners=False, A = -0.75, border-clamped taps, no antialiasing) of a
 * [C, ih, iw] grid to [C, oh, ow], on the host. Exposed for tests. */
void ls_bicubic_resize(const float *in, int C, int ih, int iw, float *out, int oh, int ow);

#endif
