/*
 * vit_train.c — training the teacher (see vit.h): a forward that keeps what the backward needs, and the
 * backward, which adds the gradient of every weight into m->grads. Written over the backend ops like
 * vit.c, with no host work: the resized position embeddings and their gradient are GEMMs with the
 * resize's matrix (vit.c's position slots).
 *
 * Memory: the forward keeps, per block and token, 7 D + mlp_hidden floats (x_in, q, k, v, att, x_mid,
 * pre). What is cheap to redo is recomputed in the backward instead of kept: the LayerNorm outputs, the
 * GELU outputs, and the attention probabilities (chunk by chunk from q and k, as the forward made them),
 * so no T x T matrix per block is ever stored.
 *
 * Legend as vit.h: B images, T tokens, N = T - 1 patches, BT = B*T, D width, NH heads, HS = D/NH,
 * Hd MLP width, P patch, prow = 3P^2 floats per patch row.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "vit_internal.h"

#define PAD_FLOATS 16 /* ls_arena_floats rounds each buffer up to 64 bytes */

typedef struct {
    size_t T, BT, BN, D, Hd, prow, wide, chunk;
} vit_dims;

static vit_dims dims_of(const ls_vit_config *c, int B, int H, int W) {
    vit_dims d;
    d.BN = (size_t)B * (H / c->patch) * (W / c->patch);
    d.T = 1 + (size_t)(H / c->patch) * (W / c->patch), d.BT = (size_t)B * d.T;
    d.D = (size_t)c->dim, d.Hd = (size_t)c->mlp_hidden, d.prow = 3 * (size_t)c->patch * c->patch;
    d.wide = d.Hd > 3 * d.D ? d.Hd : 3 * d.D;
    if (d.prow > d.wide) d.wide = d.prow;
    d.chunk = ls_vit_attn_chunk(c, B, d.T);
    return d;
}

/* Activations (10 buffers) + forward scratch (3) + backward scratch (9), each padded. */
size_t ls_vit_train_arena_floats(const ls_vit_config *c, int B, int H, int W) {
    vit_dims d = dims_of(c, B, H, W);
    size_t tt = d.chunk * d.T * d.T;
    size_t kept = d.BN * d.prow + (size_t)c->depth * d.BT * (7 * d.D + d.Hd) + 2 * d.BT * d.D;
    size_t fwd = d.BT * d.D + d.BT * d.wide + tt;
    size_t bwd = 6 * d.BT * d.D + tt + 2 * d.BT + d.T * d.D;
    return kept + fwd + bwd + 22 * PAD_FLOATS;
}

ls_status ls_vit_alloc_grads(ls_vit *m, ls_error *err) {
    if (!m->grads) m->grads = m->be->mem->alloc(m->be, m->nparams * sizeof(float));
    if (!m->grads) return ls_fail(err, LS_ERR_NOMEM, "cannot allocate %zu teacher gradients", m->nparams);
    m->be->mem->zero(m->be, m->grads, m->nparams * sizeof(float));
    return LS_OK;
}

void ls_vit_params_changed(ls_vit *m) {
    for (int k = 0; k < LS_VIT_POS_GRIDS; k++) m->pos_grids[k].stale = 1;
}

static float *grad_of(const ls_vit *m, const float *param) { return m->grads + (param - m->params); }

/* ------------------------------------------------------------------ forward */

static void carve_acts(ls_arena *ar, ls_vit_acts *a, const ls_vit_config *c, const vit_dims *d) {
    size_t L = (size_t)c->depth, btd = d->BT * d->D;
    a->cols = ls_arena_floats(ar, d->BN * d->prow);
    a->x_in = ls_arena_floats(ar, L * btd), a->x_mid = ls_arena_floats(ar, L * btd);
    a->q = ls_arena_floats(ar, L * btd), a->k = ls_arena_floats(ar, L * btd), a->v = ls_arena_floats(ar, L * btd);
    a->att = ls_arena_floats(ar, L * btd), a->pre = ls_arena_floats(ar, L * d->BT * d->Hd);
    a->x_out = ls_arena_floats(ar, btd), a->tokens = ls_arena_floats(ar, btd);
    a->h = ls_arena_floats(ar, btd), a->wide = ls_arena_floats(ar, d->BT * d->wide);
    a->scores = ls_arena_floats(ar, d->chunk * d->T * d->T);
}

/* One block, x_next = block(x_in of layer l), the same op sequence as ls_vit_forward with the residual
 * stream copied forward instead of updated in place, so every intermediate survives. */
static void block_forward(ls_vit *m, const ls_vit_acts *a, int l, float *x_next) {
    const ls_vit_config *c = &m->cfg;
    const ls_backend *be = m->be;
    const ls_ops_dense *op = be->dense;
    const ls_vit_block *b = &m->blocks[l];
    int D = c->dim, NH = c->heads, HS = D / NH, Hd = c->mlp_hidden, B = a->B, T = a->T;
    size_t BT = (size_t)B * T, btd = BT * D;
    float *xin = a->x_in + l * btd, *xmid = a->x_mid + l * btd, *att = a->att + l * btd;
    float *q = a->q + l * btd, *k = a->k + l * btd, *v = a->v + l * btd, *pre = a->pre + l * BT * Hd;
    op->layernorm(be, a->h, xin, b->ln1_w, b->ln1_b, BT, D, c->eps);
    op->gemm(be, 0, 1, (int)BT, 3 * D, D, 1.0f, a->h, D, b->qkv_w, D, 0.0f, a->wide, 3 * D);
    op->split_heads(be, q, k, v, a->wide, b->qkv_b, B, T, NH, HS);
    ls_vit_attention(m, a->h, q, k, v, a->scores, B, T);
    op->merge_heads(be, att, a->h, B, T, NH, HS);
    be->mem->copy(be, xmid, xin, btd * sizeof(float));
    op->gemm(be, 0, 1, (int)BT, D, D, 1.0f, att, D, b->proj_w, D, 1.0f, xmid, D);
    op->add_bias(be, xmid, b->proj_b, BT, D);
    op->layernorm(be, a->h, xmid, b->ln2_w, b->ln2_b, BT, D, c->eps);
    op->gemm(be, 0, 1, (int)BT, Hd, D, 1.0f, a->h, D, b->fc1_w, D, 0.0f, pre, Hd);
    op->add_bias(be, pre, b->fc1_b, BT, Hd); /* x + b then GELU: the bits of bias_gelu's fused add */
    be->mem->copy(be, a->wide, pre, BT * Hd * sizeof(float));
    op->bias_gelu(be, a->wide, NULL, BT, Hd);
    be->mem->copy(be, x_next, xmid, btd * sizeof(float));
    op->gemm(be, 0, 1, (int)BT, D, Hd, 1.0f, a->wide, Hd, b->fc2_w, Hd, 1.0f, x_next, D);
    op->add_bias(be, x_next, b->fc2_b, BT, D);
}

ls_status ls_vit_forward_train(ls_vit *m, ls_arena *arena, ls_vit_acts *a, const float *images, int B, int H, int W,
                               float *features, float *cls, ls_error *err) {
    const ls_vit_config *c = &m->cfg;
    const ls_backend *be = m->be;
    const ls_ops_dense *op = be->dense;
    int P = c->patch, D = c->dim;
    if (B < 1 || H < P || W < P || H % P || W % P)
        return ls_fail(err, LS_ERR_INPUT, "teacher input %dx%d (batch %d) is not a positive multiple of the patch size %d",
                       H, W, B, P);
    if (arena->cap - arena->used < ls_vit_train_arena_floats(c, B, H, W) * sizeof(float))
        return ls_fail(err, LS_ERR_INTERNAL, "teacher training arena too small for batch %d at %dx%d", B, H, W);
    vit_dims d = dims_of(c, B, H, W);
    memset(a, 0, sizeof *a);
    a->B = B, a->H = H, a->W = W, a->gh = H / P, a->gw = W / P, a->T = (int)d.T;
    const float *pos = NULL;
    ls_vit_params_changed(m); /* the weights may have moved since the cached resize */
    LS_TRY(ls_vit_positions(m, a->gh, a->gw, &pos, err));
    carve_acts(arena, a, c, &d);

    op->patchify(be, a->cols, images, B, 3, H, W, P);
    op->gemm(be, 0, 1, (int)d.BN, D, (int)d.prow, 1.0f, a->cols, (int)d.prow, m->patch_w, (int)d.prow, 0.0f, a->h, D);
    op->embed_tokens(be, a->x_in, a->h, m->patch_b, m->cls, pos, B, a->T, D);
    for (int l = 0; l < c->depth; l++)
        block_forward(m, a, l, l + 1 < c->depth ? a->x_in + (size_t)(l + 1) * d.BT * d.D : a->x_out);
    op->layernorm(be, a->tokens, a->x_out, m->norm_w, m->norm_b, d.BT, D, c->eps);
    if (features) op->tokens_to_grid(be, features, a->tokens, B, a->T, D, a->gh, a->gw);
    for (int b = 0; cls && b < B; b++)
        be->mem->copy(be, cls + (size_t)b * D, a->tokens + (size_t)b * d.T * D, (size_t)D * sizeof(float));
    return LS_OK;
}

/* ----------------------------------------------------------------- backward */

typedef struct {
    float *dx;             /* [BT,D] dL/d(residual stream) at the current depth */
    float *dh;             /* [BT,D] gradient of a branch's LayerNorm output, then of the patch rows */
    float *d_o, *dq, *dk, *dv; /* [B,NH,T,HS] */
    float *dp;             /* one chunk of attention-probability gradients */
    float *ws;             /* [2*BT] LayerNorm statistics */
    float *dpos;           /* [T,D] gradient of the resized position embeddings */
} vit_grads_scratch;

static void carve_scratch(ls_arena *ar, vit_grads_scratch *s, const vit_dims *d) {
    size_t btd = d->BT * d->D;
    s->dx = ls_arena_floats(ar, btd), s->dh = ls_arena_floats(ar, btd), s->d_o = ls_arena_floats(ar, btd);
    s->dq = ls_arena_floats(ar, btd), s->dk = ls_arena_floats(ar, btd), s->dv = ls_arena_floats(ar, btd);
    s->dp = ls_arena_floats(ar, d->chunk * d->T * d->T);
    s->ws = ls_arena_floats(ar, 2 * d->BT), s->dpos = ls_arena_floats(ar, d->T * d->D);
}

/* MLP branch of block l: x_out = x_mid + fc2(gelu(fc1(ln2(x_mid)))). On entry s->dx = dL/dx_out, on
 * exit dL/dx_mid. a->wide holds the GELU output, then its gradient; a->h the LayerNorm output. */
static void mlp_backward(ls_vit *m, const ls_vit_acts *a, int l, const vit_grads_scratch *s) {
    const ls_vit_config *c = &m->cfg;
    const ls_backend *be = m->be;
    const ls_ops_dense *op = be->dense;
    const ls_vit_block *b = &m->blocks[l];
    int D = c->dim, Hd = c->mlp_hidden;
    size_t BT = (size_t)a->B * a->T, btd = BT * D;
    const float *xmid = a->x_mid + l * btd, *pre = a->pre + l * BT * Hd;
    float *g = a->wide;
    op->bias_grad(be, grad_of(m, b->fc2_b), s->dx, BT, D);
    be->mem->copy(be, g, pre, BT * Hd * sizeof(float));
    op->bias_gelu(be, g, NULL, BT, Hd);
    op->gemm(be, 1, 0, D, Hd, (int)BT, 1.0f, s->dx, D, g, Hd, 1.0f, grad_of(m, b->fc2_w), Hd);
    op->gemm(be, 0, 0, (int)BT, Hd, D, 1.0f, s->dx, D, b->fc2_w, Hd, 0.0f, g, Hd);
    op->gelu_bwd(be, g, g, pre, BT * Hd);
    op->bias_grad(be, grad_of(m, b->fc1_b), g, BT, Hd);
    op->layernorm(be, a->h, xmid, b->ln2_w, b->ln2_b, BT, D, c->eps);
    op->gemm(be, 1, 0, Hd, D, (int)BT, 1.0f, g, Hd, a->h, D, 1.0f, grad_of(m, b->fc1_w), D);
    op->gemm(be, 0, 0, (int)BT, D, Hd, 1.0f, g, Hd, b->fc1_w, D, 0.0f, s->dh, D);
    op->layernorm_bwd(be, a->h, grad_of(m, b->ln2_w), grad_of(m, b->ln2_b), s->dh, xmid, b->ln2_w, BT, D, c->eps, s->ws);
    op->add(be, s->dx, a->h, btd);
}

/* dq, dk, dv from d_o for block l, per chunk of (image, head) pairs: the probabilities are recomputed
 * exactly as ls_vit_attention made them (same ops, same chunks), then dV = P^T dO, dP = dO V^T,
 * dS = softmax backward (scale folded in), dQ = dS K, dK = dS^T Q. */
static void attention_backward(ls_vit *m, const ls_vit_acts *a, int l, const vit_grads_scratch *s) {
    const ls_backend *be = m->be;
    const ls_ops_dense *op = be->dense;
    int T = a->T, NH = m->cfg.heads, HS = m->cfg.dim / NH;
    size_t btd = (size_t)a->B * T * m->cfg.dim, tt = (size_t)T * T, hs = (size_t)T * HS;
    size_t pairs = (size_t)a->B * NH, chunk = ls_vit_attn_chunk(&m->cfg, a->B, (size_t)T);
    const float *q = a->q + l * btd, *k = a->k + l * btd, *v = a->v + l * btd;
    float scale = 1.0f / sqrtf((float)HS), *p = a->scores;
    for (size_t p0 = 0; p0 < pairs; p0 += chunk) {
        int n = (int)(pairs - p0 < chunk ? pairs - p0 : chunk);
        size_t o = p0 * hs;
        op->gemm_batched(be, 0, 1, T, T, HS, 1.0f, q + o, HS, hs, k + o, HS, hs, 0.0f, p, T, tt, n);
        op->softmax(be, p, (size_t)n * T, T, scale);
        op->gemm_batched(be, 1, 0, T, HS, T, 1.0f, p, T, tt, s->d_o + o, HS, hs, 0.0f, s->dv + o, HS, hs, n);
        op->gemm_batched(be, 0, 1, T, T, HS, 1.0f, s->d_o + o, HS, hs, v + o, HS, hs, 0.0f, s->dp, T, tt, n);
        op->softmax_bwd(be, s->dp, p, s->dp, (size_t)n * T, T, scale);
        op->gemm_batched(be, 0, 0, T, HS, T, 1.0f, s->dp, T, tt, k + o, HS, hs, 0.0f, s->dq + o, HS, hs, n);
        op->gemm_batched(be, 1, 0, T, HS, T, 1.0f, s->dp, T, tt, q + o, HS, hs, 0.0f, s->dk + o, HS, hs, n);
    }
}

/* Attention branch of block l: x_mid = x_in + proj(attn(qkv(ln1(x_in)))). On entry s->dx = dL/dx_mid,
 * on exit dL/dx_in. a->wide holds dqkv. */
static void attn_branch_backward(ls_vit *m, const ls_vit_acts *a, int l, const vit_grads_scratch *s) {
    const ls_vit_config *c = &m->cfg;
    const ls_backend *be = m->be;
    const ls_ops_dense *op = be->dense;
    const ls_vit_block *b = &m->blocks[l];
    int D = c->dim, NH = c->heads, HS = D / NH, B = a->B, T = a->T;
    size_t BT = (size_t)B * T, btd = BT * D;
    const float *xin = a->x_in + l * btd, *att = a->att + l * btd;
    op->bias_grad(be, grad_of(m, b->proj_b), s->dx, BT, D);
    op->gemm(be, 1, 0, D, D, (int)BT, 1.0f, s->dx, D, att, D, 1.0f, grad_of(m, b->proj_w), D);
    op->gemm(be, 0, 0, (int)BT, D, D, 1.0f, s->dx, D, b->proj_w, D, 0.0f, s->dh, D);
    op->merge_heads_bwd(be, s->d_o, s->dh, B, T, NH, HS);
    attention_backward(m, a, l, s);
    op->split_heads_bwd(be, a->wide, grad_of(m, b->qkv_b), s->dq, s->dk, s->dv, B, T, NH, HS);
    op->layernorm(be, a->h, xin, b->ln1_w, b->ln1_b, BT, D, c->eps);
    op->gemm(be, 1, 0, 3 * D, D, (int)BT, 1.0f, a->wide, 3 * D, a->h, D, 1.0f, grad_of(m, b->qkv_w), D);
    op->gemm(be, 0, 0, (int)BT, D, 3 * D, 1.0f, a->wide, 3 * D, b->qkv_w, D, 0.0f, s->dh, D);
    op->layernorm_bwd(be, a->h, grad_of(m, b->ln1_w), grad_of(m, b->ln1_b), s->dh, xin, b->ln1_w, BT, D, c->eps, s->ws);
    op->add(be, s->dx, a->h, btd);
}

/* The resized table's gradient dpos[T,D] back onto the trained table: the class row directly, the patch
 * rows through the transpose of the resize's matrix (the forward's, or rebuilt if two other grids came since). */
static ls_status pos_backward(ls_vit *m, const float *dpos, int gh, int gw, ls_error *err) {
    const ls_backend *be = m->be;
    int G = m->cfg.pos_grid, D = m->cfg.dim, N = gh * gw;
    ls_vit_pos *p;
    LS_TRY(ls_vit_pos_grid(m, gh, gw, &p, err));
    float *gpos = grad_of(m, m->pos);
    be->dense->add(be, gpos, dpos, (size_t)D);
    be->dense->gemm(be, 0, 0, G * G, D, N, 1.0f, p->interp, N, dpos + D, D, 1.0f, gpos + D, D);
    return LS_OK;
}

/* Embedding: x = [cls; cols W^T + b] + pos. s->dx = dL/dx on entry. */
static ls_status embed_backward(ls_vit *m, const ls_vit_acts *a, const vit_grads_scratch *s, float *dimages,
                                ls_error *err) {
    const ls_backend *be = m->be;
    const ls_ops_dense *op = be->dense;
    int D = m->cfg.dim, P = m->cfg.patch, G = m->cfg.pos_grid, prow = 3 * P * P, BN = a->B * (a->T - 1);
    int native = a->gh == G && a->gw == G;
    float *dpos = native ? grad_of(m, m->pos) : s->dpos, *dpatches = s->dh;
    if (!native) be->mem->zero(be, dpos, (size_t)a->T * D * sizeof(float));
    op->embed_tokens_bwd(be, dpatches, grad_of(m, m->patch_b), grad_of(m, m->cls), dpos, s->dx, a->B, a->T, D);
    op->gemm(be, 1, 0, D, prow, BN, 1.0f, dpatches, D, a->cols, prow, 1.0f, grad_of(m, m->patch_w), prow);
    if (dimages) {
        op->gemm(be, 0, 0, BN, prow, D, 1.0f, dpatches, D, m->patch_w, prow, 0.0f, a->wide, prow);
        op->patchify_bwd(be, dimages, a->wide, a->B, 3, a->H, a->W, P);
    }
    return native ? LS_OK : pos_backward(m, dpos, a->gh, a->gw, err);
}

ls_status ls_vit_backward(ls_vit *m, ls_arena *arena, const ls_vit_acts *a, const float *dfeatures, const float *dcls,
                          float *dimages, ls_error *err) {
    const ls_vit_config *c = &m->cfg;
    const ls_backend *be = m->be;
    if (!m->grads) return ls_fail(err, LS_ERR_INTERNAL, "teacher backward without gradients (ls_vit_alloc_grads)");
    vit_dims d = dims_of(c, a->B, a->H, a->W);
    size_t need = (6 * d.BT * d.D + d.chunk * d.T * d.T + 2 * d.BT + d.T * d.D + 9 * PAD_FLOATS) * sizeof(float);
    if (arena->cap - arena->used < need)
        return ls_fail(err, LS_ERR_INTERNAL, "teacher training arena too small for the backward");
    vit_grads_scratch s;
    carve_scratch(arena, &s, &d);
    be->dense->tokens_to_grid_bwd(be, s.dh, dfeatures, dcls, a->B, a->T, c->dim, a->gh, a->gw);
    be->dense->layernorm_bwd(be, s.dx, grad_of(m, m->norm_w), grad_of(m, m->norm_b), s.dh, a->x_out, m->norm_w, d.BT,
                             c->dim, c->eps, s.ws);
    for (int l = c->depth - 1; l >= 0; l--) {
        mlp_backward(m, a, l, &s);
        attn_branch_backward(m, a, l, &s);
    }
    return embed_backward(m, a, &s, dimages, err);
}
