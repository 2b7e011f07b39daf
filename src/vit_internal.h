/*
 * vit_internal.h — pieces of the ViT forward (vit.c) that the training pass (vit_train.c) shares; not
 * part of the public API. Legend as vit.h.
 */
#ifndef LS_VIT_INTERNAL_H
#define LS_VIT_INTERNAL_H

#include "vit.h"

/* (image, head) pairs whose T x T attention scores are computed at once (bounds the score memory). */
size_t ls_vit_attn_chunk(const ls_vit_config *c, int B, size_t T);

/* o[B,NH,T,HS] = softmax(q k^T / sqrt(HS)) v, in chunks of ls_vit_attn_chunk pairs; scores holds one chunk. */
void ls_vit_attention(ls_vit *m, float *o, const float *q, const float *k, const float *v, float *scores, int B, int T);

/* The cached slot of a gh x gw grid other than the trained one (built when new, its table recomputed when
 * stale). */
ls_status ls_vit_pos_grid(ls_vit *m, int gh, int gw, ls_vit_pos **p, ls_error *err);

/* Position embeddings [T,D] for a gh x gw token grid (the trained table, or its cached bicubic resize). */
ls_status ls_vit_positions(ls_vit *m, int gh, int gw, const float **pos, ls_error *err);

#endif
