/*
 * vit.c — see vit.h. Weights live in one backend allocation; a forward pass takes all its scratch from
 * the caller's arena, so a batch loop allocates nothing. The large matrix products run over all B*T
 * tokens at once; attention runs per (image, head) pair, fused (the backend's attention op, reading q, k, v
 * in place from the qkv rows) or, where a backend lacks it, in chunks that bound the T x T score memory.
 */
#include "vit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "util.h"
#include "vit_internal.h"

#define ATTN_CHUNK_FLOATS ((size_t)16 << 20) /* 64 MB of attention scores at a time */

ls_status ls_vit_config_preset(const char *name, ls_vit_config *c, ls_error *err) {
    static const struct {
        const char *name;
        int depth, dim, heads, patch;
    } presets[] = {{"vits16", 12, 384, 6, 16}, {"vits8", 12, 384, 6, 8}, {"vitb16", 12, 768, 12, 16}, {"vitb8", 12, 768, 12, 8}};
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++)
        if (strcmp(name, presets[i].name) == 0) {
            memset(c, 0, sizeof *c);
            snprintf(c->name, sizeof c->name, "%s", name);
            c->depth = presets[i].depth, c->dim = presets[i].dim, c->heads = presets[i].heads;
            c->patch = presets[i].patch, c->mlp_hidden = 4 * presets[i].dim;
            c->pos_grid = 224 / presets[i].patch;
            c->eps = 1e-6f;
            return LS_OK;
        }
    /* A custom architecture spelled dDEPTHwWIDTHhHEADSpPATCH[gGRID] (MLP 4x the width, grid 224/patch by
     * default), e.g. d6w192h3p16 for a CPU-sized pretrained teacher (docs/pretraining.md). */
    int depth, dim, heads, patch, grid = 0, used = 0, used2 = 0;
    if (sscanf(name, "d%dw%dh%dp%d%n", &depth, &dim, &heads, &patch, &used) == 4 &&
        (!name[used] || (sscanf(name + used, "g%d%n", &grid, &used2) == 1 && !name[used + used2]))) {
        if (depth < 1 || depth > 64 || dim < 1 || dim > 4096 || heads < 1 || dim % heads || patch < 1 || patch > 64 ||
            grid < 0 || grid > 256 || strlen(name) >= sizeof c->name)
            return ls_fail(err, LS_ERR_INPUT, "teacher architecture '%s': inconsistent or out-of-range sizes", name);
        memset(c, 0, sizeof *c);
        snprintf(c->name, sizeof c->name, "%s", name);
        c->depth = depth, c->dim = dim, c->heads = heads, c->patch = patch, c->mlp_hidden = 4 * dim;
        c->pos_grid = grid ? grid : (224 / patch > 0 ? 224 / patch : 1);
        c->eps = 1e-6f;
        return LS_OK;
    }
    return ls_fail(err, LS_ERR_INPUT,
                   "unknown teacher '%s' (expected vits16, vits8, vitb16, vitb8 or a custom dDEPTHwWIDTHhHEADSpPATCH[gGRID])",
                   name);
}

/* ------------------------------------------------------------------ weights */

/* Element counts of the parameter tensors, in the order they are laid out in m->params. */
static size_t block_floats(const ls_vit_config *c) {
    size_t D = (size_t)c->dim, Hd = (size_t)c->mlp_hidden;
    return 4 * D /* ln1, ln2 */ + 3 * D * D + 3 * D + D * D + D + Hd * D + Hd + D * Hd + D;
}

size_t ls_vit_nparams(const ls_vit_config *c) {
    size_t D = (size_t)c->dim, P = (size_t)c->patch, G = (size_t)c->pos_grid;
    return D + (1 + G * G) * D + D * 3 * P * P + D + 2 * D + (size_t)c->depth * block_floats(c);
}

/* Tries the names in order; the first that exists must have the right size. */
static ls_status fetch(ls_tensor_source src, void *ctx, const char *const *names, int n, float *dst, size_t numel,
                       ls_error *err) {
    for (int i = 0; i < n; i++) {
        int r = src(ctx, names[i], dst, numel, err);
        if (r != LS_TENSOR_MISSING) return (ls_status)r;
    }
    if (n > 1)
        return ls_fail(err, LS_ERR_INPUT, "teacher weights: tensor '%s' is missing (also tried '%s'%s)", names[0],
                       names[1], n > 2 ? " and its vit. prefixed name" : "");
    return ls_fail(err, LS_ERR_INPUT, "teacher weights: tensor '%s' is missing", names[0]);
}

/* One logical tensor: its timm name and its Hugging Face name (tried also with a "vit." prefix). */
static ls_status fetch2(ls_tensor_source src, void *ctx, const char *timm, const char *hf, float *dst, size_t numel,
                        ls_error *err) {
    char vit_hf[256];
    snprintf(vit_hf, sizeof vit_hf, "vit.%s", hf);
    const char *names[3] = {timm, hf, vit_hf};
    return fetch(src, ctx, names, 3, dst, numel, err);
}

/* timm's fused qkv, or Hugging Face's separate query/key/value joined in that order. */
static ls_status fetch_qkv(ls_tensor_source src, void *ctx, int blk, const char *suffix, float *dst, size_t part,
                           ls_error *err) {
    char timm[128];
    snprintf(timm, sizeof timm, "blocks.%d.attn.qkv.%s", blk, suffix);
    int r = src(ctx, timm, dst, 3 * part, err);
    if (r != LS_TENSOR_MISSING) return (ls_status)r;
    static const char *qkv[3] = {"query", "key", "value"};
    for (int s = 0; s < 3; s++) {
        char hf[160];
        snprintf(hf, sizeof hf, "encoder.layer.%d.attention.attention.%s.%s", blk, qkv[s], suffix);
        ls_status st = fetch2(src, ctx, timm, hf, dst + s * part, part, err);
        if (st) return st;
    }
    return LS_OK;
}

static void assign_pointers(ls_vit *m) {
    const ls_vit_config *c = &m->cfg;
    size_t D = (size_t)c->dim, P = (size_t)c->patch, G = (size_t)c->pos_grid, Hd = (size_t)c->mlp_hidden;
    float *p = m->params;
    m->cls = p, p += D;
    m->pos = p, p += (1 + G * G) * D;
    m->patch_w = p, p += D * 3 * P * P;
    m->patch_b = p, p += D;
    m->norm_w = p, p += D;
    m->norm_b = p, p += D;
    for (int i = 0; i < c->depth; i++) {
        ls_vit_block *b = &m->blocks[i];
        b->ln1_w = p, p += D;
        b->ln1_b = p, p += D;
        b->qkv_w = p, p += 3 * D * D;
        b->qkv_b = p, p += 3 * D;
        b->proj_w = p, p += D * D;
        b->proj_b = p, p += D;
        b->ln2_w = p, p += D;
        b->ln2_b = p, p += D;
        b->fc1_w = p, p += Hd * D;
        b->fc1_b = p, p += Hd;
        b->fc2_w = p, p += D * Hd;
        b->fc2_b = p, p += D;
    }
}

static ls_status load_block(ls_tensor_source src, void *ctx, const ls_vit_config *c, int i, ls_vit_block *b,
                            ls_error *err) {
    size_t D = (size_t)c->dim, Hd = (size_t)c->mlp_hidden;
    struct {
        const char *timm, *hf;
        float *dst;
        size_t n;
    } t[] = {
        {"norm1.weight", "layernorm_before.weight", b->ln1_w, D},
        {"norm1.bias", "layernorm_before.bias", b->ln1_b, D},
        {"attn.proj.weight", "attention.output.dense.weight", b->proj_w, D * D},
        {"attn.proj.bias", "attention.output.dense.bias", b->proj_b, D},
        {"norm2.weight", "layernorm_after.weight", b->ln2_w, D},
        {"norm2.bias", "layernorm_after.bias", b->ln2_b, D},
        {"mlp.fc1.weight", "intermediate.dense.weight", b->fc1_w, Hd * D},
        {"mlp.fc1.bias", "intermediate.dense.bias", b->fc1_b, Hd},
        {"mlp.fc2.weight", "output.dense.weight", b->fc2_w, D * Hd},
        {"mlp.fc2.bias", "output.dense.bias", b->fc2_b, D},
    };
    for (size_t k = 0; k < sizeof t / sizeof *t; k++) {
        char timm[128], hf[160];
        snprintf(timm, sizeof timm, "blocks.%d.%s", i, t[k].timm);
        snprintf(hf, sizeof hf, "encoder.layer.%d.%s", i, t[k].hf);
        LS_TRY(fetch2(src, ctx, timm, hf, t[k].dst, t[k].n, err));
    }
    LS_TRY(fetch_qkv(src, ctx, i, "weight", b->qkv_w, D * D, err));
    return fetch_qkv(src, ctx, i, "bias", b->qkv_b, D, err);
}

/* The candidates are drawn in parallel (ls_rng_trunc_normals_at: NaN where |z| > 2), then one sequential pass
 * keeps the others (95.4%) in order: the numbers of one-at-a-time redrawing. A ViT-S/16's 22 M weights took
 * 0.77 s one at a time on the development machine. */
static ls_status trunc_normals(ls_rng *r, double std, float *dst, size_t n, ls_error *err) {
    size_t got = 0;
    int level = ls_cpu_vector_level();
    while (got < n) {
        size_t want = n - got, m = want + want / 16 + 64, j = 0;
        float *c = ls_calloc(m, sizeof *c, err);
        if (!c) return LS_ERR_NOMEM;
        uint64_t s0 = r->state;
        ls_rng_trunc_normals_at(s0, 0, m, std, 2.0, level, c);
        for (; j < m && got < n; j++)
            if (!isnan(c[j])) dst[got++] = c[j];
        r->state = s0 + 2 * (uint64_t)j * LS_RNG_GAMMA;
        free(c);
    }
    return LS_OK;
}

int ls_vit_init_source(void *ctx, const char *name, float *dst, size_t n, ls_error *err) {
    size_t len = strlen(name);
    int is_bias = len >= 4 && strcmp(name + len - 4, "bias") == 0;
    if (is_bias || strstr(name, "norm")) {
        for (size_t i = 0; i < n; i++) dst[i] = is_bias ? 0.0f : 1.0f;
        return LS_OK;
    }
    return trunc_normals(ctx, 0.02, dst, n, err);
}

ls_status ls_vit_load(ls_vit *m, const ls_backend *be, const ls_vit_config *cfg, ls_tensor_source src, void *ctx,
                      ls_error *err) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->be = be;
    if (cfg->dim % cfg->heads || cfg->depth < 1 || cfg->patch < 1 || cfg->pos_grid < 1)
        return ls_fail(err, LS_ERR_INPUT, "teacher config %s: inconsistent dims", cfg->name);
    m->nparams = ls_vit_nparams(cfg);
    m->blocks = ls_calloc((size_t)cfg->depth, sizeof *m->blocks, err);
    float *host = ls_calloc(m->nparams, sizeof(float), err);
    if (!m->blocks || !host) {
        free(host);
        ls_vit_free(m);
        return LS_ERR_NOMEM;
    }
    /* Fill a host copy through the same pointer layout, then upload it in one piece. */
    m->params = host;
    assign_pointers(m);
    size_t D = (size_t)cfg->dim, P = (size_t)cfg->patch, G = (size_t)cfg->pos_grid;
    ls_status s = fetch2(src, ctx, "cls_token", "embeddings.cls_token", m->cls, D, err);
    if (!s) s = fetch2(src, ctx, "pos_embed", "embeddings.position_embeddings", m->pos, (1 + G * G) * D, err);
    if (!s) s = fetch2(src, ctx, "patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight", m->patch_w, D * 3 * P * P, err);
    if (!s) s = fetch2(src, ctx, "patch_embed.proj.bias", "embeddings.patch_embeddings.projection.bias", m->patch_b, D, err);
    if (!s) s = fetch2(src, ctx, "norm.weight", "layernorm.weight", m->norm_w, D, err);
    if (!s) s = fetch2(src, ctx, "norm.bias", "layernorm.bias", m->norm_b, D, err);
    for (int i = 0; !s && i < cfg->depth; i++) s = load_block(src, ctx, cfg, i, &m->blocks[i], err);
    if (!s) {
        m->params = be->mem->alloc(be, m->nparams * sizeof(float));
        if (!m->params) s = ls_fail(err, LS_ERR_NOMEM, "cannot allocate %zu teacher weights", m->nparams);
        else {
            be->mem->to_device(be, m->params, host, m->nparams * sizeof(float));
            assign_pointers(m);
        }
    }
    if (s && m->params == host) m->params = NULL;
    free(host);
    if (s) ls_vit_free(m);
    return s;
}

void ls_vit_free(ls_vit *m) {
    if (m->params && m->be) m->be->mem->free(m->be, m->params);
    for (int k = 0; k < LS_VIT_POS_GRIDS && m->be; k++)
        m->be->mem->free(m->be, m->pos_grids[k].interp), m->be->mem->free(m->be, m->pos_grids[k].table);
    if (m->grads && m->be) m->be->mem->free(m->be, m->grads);
    free(m->blocks);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------- position embeddings */

static double cubic_near(double x, double A) { return ((A + 2) * x - (A + 3)) * x * x + 1; }      /* |x| <= 1 */
static double cubic_far(double x, double A) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; } /* 1 < |x| < 2 */

/* Output o of n_out samples over n_in (align_corners=False, PyTorch's A = -0.75): its four taps start at
 * the returned index (clamp each to [0, n_in)), weighted w[0..3]. */
static int bicubic_taps(int o, int n_in, int n_out, double w[4]) {
    const double A = -0.75;
    double s = (o + 0.5) * n_in / (double)n_out - 0.5;
    int i0 = (int)floor(s);
    double t = s - i0;
    w[0] = cubic_far(t + 1, A), w[1] = cubic_near(t, A), w[2] = cubic_near(1 - t, A), w[3] = cubic_far(2 - t, A);
    return i0;
}

void ls_bicubic_resize(const float *in, int C, int ih, int iw, float *out, int oh, int ow) {
    for (int y = 0; y < oh; y++) {
        double wy[4];
        int y0 = bicubic_taps(y, ih, oh, wy);
        for (int x = 0; x < ow; x++) {
            double wx[4];
            int x0 = bicubic_taps(x, iw, ow, wx);
            for (int c = 0; c < C; c++) {
                const float *plane = in + (size_t)c * ih * iw;
                double acc = 0;
                for (int i = 0; i < 4; i++) {
                    int yy = y0 - 1 + i;
                    yy = yy < 0 ? 0 : yy >= ih ? ih - 1 : yy;
                    double row = 0;
                    for (int j = 0; j < 4; j++) {
                        int xx = x0 - 1 + j;
                        xx = xx < 0 ? 0 : xx >= iw ? iw - 1 : xx;
                        row += wx[j] * plane[(size_t)yy * iw + xx];
                    }
                    acc += wy[i] * row;
                }
                out[((size_t)c * oh + y) * ow + x] = (float)acc;
            }
        }
    }
}

/* Slot p for the gh x gw grid: the resize of the trained G x G table as a matrix (ls_bicubic_resize of the
 * G*G one-hot planes), and the resized table's buffer, to be computed. */
static ls_status pos_build(const ls_vit *m, ls_vit_pos *p, int gh, int gw, ls_error *err) {
    const ls_backend *be = m->be;
    size_t GG = (size_t)m->cfg.pos_grid * m->cfg.pos_grid, N = (size_t)gh * gw;
    be->mem->free(be, p->interp), be->mem->free(be, p->table);
    memset(p, 0, sizeof *p);
    p->interp = be->mem->alloc(be, GG * N * sizeof(float));
    p->table = be->mem->alloc(be, (1 + N) * m->cfg.dim * sizeof(float));
    float *basis = ls_calloc(GG * GG, sizeof(float), err), *mat = ls_calloc(GG * N, sizeof(float), err);
    ls_status s = basis && mat ? LS_OK : LS_ERR_NOMEM;
    if (!s && (!p->interp || !p->table)) s = ls_fail(err, LS_ERR_NOMEM, "cannot allocate position embeddings");
    if (!s) {
        for (size_t i = 0; i < GG; i++) basis[i * GG + i] = 1;
        ls_bicubic_resize(basis, (int)GG, m->cfg.pos_grid, m->cfg.pos_grid, mat, gh, gw);
        be->mem->to_device(be, p->interp, mat, GG * N * sizeof(float));
        be->mem->sync(be); /* mat goes before the copy may have read it */
        p->gh = gh, p->gw = gw, p->stale = 1;
    }
    free(basis), free(mat);
    return s;
}

ls_status ls_vit_pos_grid(ls_vit *m, int gh, int gw, ls_vit_pos **out, ls_error *err) {
    ls_vit_pos *p = NULL;
    for (int k = 0; k < LS_VIT_POS_GRIDS; k++)
        if (m->pos_grids[k].gh == gh && m->pos_grids[k].gw == gw) p = &m->pos_grids[k];
    if (!p) {
        p = &m->pos_grids[m->pos_next];
        m->pos_next = (m->pos_next + 1) % LS_VIT_POS_GRIDS;
        LS_TRY(pos_build(m, p, gh, gw, err));
    }
    if (p->stale) { /* the class row as it is, the patch rows through the resize */
        const ls_backend *be = m->be;
        int G = m->cfg.pos_grid, D = m->cfg.dim, N = gh * gw;
        be->mem->copy(be, p->table, m->pos, (size_t)D * sizeof(float));
        be->dense->gemm(be, 1, 0, N, D, G * G, 1.0f, p->interp, N, m->pos + D, D, 0.0f, p->table + D, D);
        p->stale = 0;
    }
    *out = p;
    return LS_OK;
}

ls_status ls_vit_positions(ls_vit *m, int gh, int gw, const float **pos, ls_error *err) {
    if (gh == m->cfg.pos_grid && gw == m->cfg.pos_grid) {
        *pos = m->pos;
        return LS_OK;
    }
    ls_vit_pos *p;
    LS_TRY(ls_vit_pos_grid(m, gh, gw, &p, err));
    *pos = p->table;
    return LS_OK;
}

/* ------------------------------------------------------------------ forward */

size_t ls_vit_attn_chunk(const ls_vit_config *c, int B, size_t T) {
    size_t pairs = (size_t)B * c->heads, per = T * T;
    size_t chunk = ATTN_CHUNK_FLOATS / per;
    return chunk < 1 ? 1 : chunk > pairs ? pairs : chunk;
}

/* Arena layout (floats): x, h, o [BT*D each]; big [BT*max(4D, 3D, patch row)]; q, k, v [BT*D each];
 * scores [chunk*T*T]; zeros [3D]; plus one 64-byte pad per buffer. */
size_t ls_vit_arena_floats(const ls_vit_config *c, int B, int H, int W) {
    size_t T = 1 + (size_t)(H / c->patch) * (W / c->patch), BT = (size_t)B * T, D = (size_t)c->dim;
    size_t prow = 3 * (size_t)c->patch * c->patch, wide = (size_t)c->mlp_hidden;
    if (3 * D > wide) wide = 3 * D;
    if (prow > wide) wide = prow;
    return 6 * BT * D + BT * wide + ls_vit_attn_chunk(c, B, T) * T * T + 3 * D + 16 * 9;
}

void ls_vit_attention(ls_vit *m, float *o, const float *q, const float *k, const float *v, float *scores, int B, int T) {
    const ls_backend *be = m->be;
    int NH = m->cfg.heads, HS = m->cfg.dim / NH;
    size_t pairs = (size_t)B * NH, chunk = ls_vit_attn_chunk(&m->cfg, B, (size_t)T), hs = (size_t)T * HS;
    for (size_t p0 = 0; p0 < pairs; p0 += chunk) {
        int n = (int)(pairs - p0 < chunk ? pairs - p0 : chunk);
        be->dense->gemm_batched(be, 0, 1, T, T, HS, 1.0f, q + p0 * hs, HS, hs, k + p0 * hs, HS, hs, 0.0f, scores, T,
                                (size_t)T * T, n);
        be->dense->softmax(be, scores, (size_t)n * T, T, 1.0f / sqrtf((float)HS));
        be->dense->gemm_batched(be, 0, 0, T, HS, T, 1.0f, scores, T, (size_t)T * T, v + p0 * hs, HS, hs, 0.0f,
                                o + p0 * hs, HS, hs, n);
    }
}

ls_status ls_vit_forward(ls_vit *m, ls_arena *arena, const float *images, int B, int H, int W, float *features,
                         float *keys, ls_error *err) {
    const ls_vit_config *c = &m->cfg;
    const ls_backend *be = m->be;
    const ls_ops_dense *op = be->dense;
    int P = c->patch, D = c->dim, NH = c->heads, HS = D / NH, Hd = c->mlp_hidden;
    if (B < 1 || H < P || W < P || H % P || W % P)
        return ls_fail(err, LS_ERR_INPUT, "teacher input %dx%d (batch %d) is not a positive multiple of the patch size %d",
                       H, W, B, P);
    int gh = H / P, gw = W / P, N = gh * gw, T = N + 1;
    size_t BT = (size_t)B * T;
    if (arena->cap - arena->used < ls_vit_arena_floats(c, B, H, W) * sizeof(float))
        return ls_fail(err, LS_ERR_INTERNAL, "teacher arena too small for batch %d at %dx%d", B, H, W);
    const float *pos = NULL;
    LS_TRY(ls_vit_positions(m, gh, gw, &pos, err));
    size_t wide = (size_t)Hd > 3 * (size_t)D ? (size_t)Hd : 3 * (size_t)D;
    if ((size_t)3 * P * P > wide) wide = (size_t)3 * P * P;
    float *x = ls_arena_floats(arena, BT * D), *h = ls_arena_floats(arena, BT * D), *o = ls_arena_floats(arena, BT * D);
    float *big = ls_arena_floats(arena, BT * wide);
    float *q = ls_arena_floats(arena, BT * D), *k = ls_arena_floats(arena, BT * D), *v = ls_arena_floats(arena, BT * D);
    float *scores = ls_arena_floats(arena, ls_vit_attn_chunk(c, B, (size_t)T) * T * T);
    float *zeros = ls_arena_floats(arena, 3 * (size_t)D);
    be->mem->zero(be, zeros, 3 * (size_t)D * sizeof(float));

    /* Patch embedding: im2col rows times the flattened convolution kernel. */
    op->patchify(be, big, images, B, 3, H, W, P);
    op->gemm(be, 0, 1, B * N, D, 3 * P * P, 1.0f, big, 3 * P * P, m->patch_w, 3 * P * P, 0.0f, h, D);
    op->embed_tokens(be, x, h, m->patch_b, m->cls, pos, B, T, D);

    for (int l = 0; l < c->depth; l++) {
        const ls_vit_block *b = &m->blocks[l];
        op->layernorm(be, h, x, b->ln1_w, b->ln1_b, BT, D, c->eps);
        /* The fused attention reads q, k, v in place from the qkv rows: their bias goes in first, as the gemm's
         * C (beta = 1). The keys output copies k out of the same rows (zero bias), so the features do not
         * depend on whether keys were asked for, to the bit. */
        int fused = op->attention != NULL && op->fill_rows != NULL;
        if (fused) op->fill_rows(be, big, b->qkv_b, BT, 3 * D);
        op->gemm(be, 0, 1, (int)BT, 3 * D, D, 1.0f, h, D, b->qkv_w, D, fused ? 1.0f : 0.0f, big, 3 * D);
        if (fused) {
            if (keys && l == c->depth - 1) op->split_heads(be, q, k, v, big, zeros, B, T, NH, HS);
            op->attention(be, h, big, scores, ls_vit_attn_chunk(c, B, (size_t)T), B, T, NH, HS, 1.0f / sqrtf((float)HS));
        } else {
            op->split_heads(be, q, k, v, big, b->qkv_b, B, T, NH, HS);
            ls_vit_attention(m, o, q, k, v, scores, B, T);
            op->merge_heads(be, h, o, B, T, NH, HS);
        }
        op->gemm(be, 0, 1, (int)BT, D, D, 1.0f, h, D, b->proj_w, D, 1.0f, x, D); /* x += attn proj */
        op->add_bias(be, x, b->proj_b, BT, D);
        op->layernorm(be, h, x, b->ln2_w, b->ln2_b, BT, D, c->eps);
        if (op->fill_rows) op->fill_rows(be, big, b->fc1_b, BT, Hd); /* the bias as the gemm's C */
        op->gemm(be, 0, 1, (int)BT, Hd, D, 1.0f, h, D, b->fc1_w, D, op->fill_rows ? 1.0f : 0.0f, big, Hd);
        op->bias_gelu(be, big, op->fill_rows ? NULL : b->fc1_b, BT, Hd);
        op->gemm(be, 0, 1, (int)BT, D, Hd, 1.0f, big, Hd, b->fc2_w, Hd, 1.0f, x, D); /* x += mlp */
        op->add_bias(be, x, b->fc2_b, BT, D);
    }
    op->layernorm(be, h, x, m->norm_w, m->norm_b, BT, D, c->eps);
    op->tokens_to_grid(be, features, h, B, T, D, gh, gw);
    if (keys) {
        op->merge_heads(be, o, k, B, T, NH, HS);
        op->tokens_to_grid(be, keys, o, B, T, D, gh, gw);
    }
    return LS_OK;
}
