/*
 * model.c — see model.h. Forward keeps every activation the backward pass needs in an ls_model_acts
 * carved from the caller's arena; backward walks the layers in reverse with two ping-pong gradient
 * buffers from the same arena.
 */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "util.h"

enum { L_HEAD1, L_HEAD2, L_DEC0, L_SKIP0 = L_DEC0 + LS_DEC_STAGES, L_SKIP1, L_OUT };

void ls_model_config_default(ls_model_config *c, int feat_dim, int grid) {
    *c = (ls_model_config){.feat_dim = feat_dim, .head_hidden = feat_dim, .code_dim = 70, .grid = grid,
                           .widths = {64, 48, 32, 16, 16}, .skip_width = 16, .up_stages = LS_DEC_STAGES,
                           .dropout = 0.1f,
                           .bn_momentum = 0.1f, .bn_eps = 1e-5f};
}

/* Whether a stage upsamples: the last up_stages do. */
static int upsamples(const ls_model_config *c, int stage) { return stage >= LS_DEC_STAGES - c->up_stages; }

/* Output side of a stage. */
static int side(const ls_model_config *c, int stage) {
    int ups = stage - (LS_DEC_STAGES - c->up_stages) + 1;
    return c->grid << (ups > 0 ? ups : 0);
}

int ls_model_out_side(const ls_model_config *c) { return side(c, LS_DEC_STAGES - 1); }

static void layer_shapes(const ls_model_config *c, ls_conv_layer *L) {
    int ci[LS_MODEL_LAYERS], co[LS_MODEL_LAYERS], k[LS_MODEL_LAYERS];
    ci[L_HEAD1] = c->feat_dim, co[L_HEAD1] = c->head_hidden, k[L_HEAD1] = 1;
    ci[L_HEAD2] = c->head_hidden, co[L_HEAD2] = c->code_dim, k[L_HEAD2] = 1;
    for (int s = 0; s < LS_DEC_STAGES; s++)
        ci[L_DEC0 + s] = s ? c->widths[s - 1] : c->code_dim, co[L_DEC0 + s] = c->widths[s], k[L_DEC0 + s] = 3;
    ci[L_SKIP0] = c->widths[LS_DEC_STAGES - 1] + 1, co[L_SKIP0] = c->skip_width, k[L_SKIP0] = 3;
    ci[L_SKIP1] = c->skip_width, co[L_SKIP1] = c->skip_width, k[L_SKIP1] = 3;
    ci[L_OUT] = c->skip_width, co[L_OUT] = 1, k[L_OUT] = 3;
    for (int l = 0; l < LS_MODEL_LAYERS; l++) L[l].ci = ci[l], L[l].co = co[l], L[l].k = k[l];
}

static int has_bn(int l) { return l >= L_DEC0 && l <= L_SKIP1; }

/* Points the layers into the parameter and running-statistics buffers; returns the sizes. */
static void layout(ls_model *m, float *params, float *running, size_t *np, size_t *nr) {
    size_t p = 0, r = 0;
    for (int l = 0; l < LS_MODEL_LAYERS; l++) {
        ls_conv_layer *L = &m->layer[l];
        size_t nw = (size_t)L->co * L->ci * L->k * L->k;
        L->w = params ? params + p : NULL, p += nw;
        L->b = params ? params + p : NULL, p += (size_t)L->co;
        if (has_bn(l)) {
            L->gamma = params ? params + p : NULL, p += (size_t)L->co;
            L->beta = params ? params + p : NULL, p += (size_t)L->co;
            L->run_mean = running ? running + r : NULL, r += (size_t)L->co;
            L->run_var = running ? running + r : NULL, r += (size_t)L->co;
        }
    }
    *np = p, *nr = r;
}

/* Far above any ViT's width (ViT-g: 1536) and any decoder's, and low enough that a corrupt configuration
 * cannot ask for gigabytes: a layer holds at most 8192^2 * 9 weights, the output side at most 256 << 5. */
#define MAX_CHANNELS 8192
#define MAX_GRID 256

/* `where` names the configuration in messages (a file, or "model"). */
static ls_status config_check(const ls_model_config *c, const char *where, ls_error *err) {
    const char *names[] = {"feat_dim", "head_hidden", "code_dim", "skip_width", "widths[0]", "widths[1]", "widths[2]",
                           "widths[3]", "widths[4]"};
    int v[] = {c->feat_dim, c->head_hidden, c->code_dim, c->skip_width, c->widths[0], c->widths[1], c->widths[2],
               c->widths[3], c->widths[4]};
    for (int i = 0; i < 9; i++)
        if (v[i] < 1 || v[i] > MAX_CHANNELS)
            return ls_fail(err, LS_ERR_INPUT, "%s: %s %d is not within 1..%d", where, names[i], v[i], MAX_CHANNELS);
    if (c->grid < 1 || c->grid > MAX_GRID)
        return ls_fail(err, LS_ERR_INPUT, "%s: grid %d is not within 1..%d", where, c->grid, MAX_GRID);
    if (c->up_stages < 1 || c->up_stages > LS_DEC_STAGES)
        return ls_fail(err, LS_ERR_INPUT, "%s: decoder up_stages %d is not within 1..%d", where, c->up_stages,
                       LS_DEC_STAGES);
    if (!(c->dropout >= 0 && c->dropout < 1) || !(c->bn_eps > 0 && c->bn_eps < 1) ||
        !(c->bn_momentum >= 0 && c->bn_momentum <= 1))
        return ls_fail(err, LS_ERR_INPUT, "%s: dropout %g, bn_eps %g or bn_momentum %g out of range", where,
                       (double)c->dropout, (double)c->bn_eps, (double)c->bn_momentum);
    return LS_OK;
}

ls_status ls_model_init(ls_model *m, const ls_backend *be, const ls_model_config *cfg, uint64_t seed, ls_error *err) {
    memset(m, 0, sizeof *m);
    LS_TRY(config_check(cfg, "model", err));
    m->cfg = *cfg;
    m->be = be;
    layer_shapes(cfg, m->layer);
    layout(m, NULL, NULL, &m->nparams, &m->nrunning);
    double need = 4.0 * (double)m->nparams * sizeof(float); /* weights, gradients, a host copy or two moments */
    if (need > (double)ls_machine_bytes())
        return ls_fail(err, LS_ERR_NOMEM, "a model of %zu weights needs %.1f GB with its gradients and optimiser "
                       "state; this machine has %.1f GB", m->nparams, need / 1e9, ls_machine_bytes() / 1e9);
    float *hp = ls_calloc(m->nparams, sizeof(float), err), *hr = ls_calloc(m->nrunning, sizeof(float), err);
    if (!hp || !hr) {
        free(hp), free(hr);
        return LS_ERR_NOMEM;
    }
    size_t np, nr;
    layout(m, hp, hr, &np, &nr);
    ls_rng rng = {seed};
    for (int l = 0; l < LS_MODEL_LAYERS; l++) {
        ls_conv_layer *L = &m->layer[l];
        size_t nw = (size_t)L->co * L->ci * L->k * L->k;
        double bound = 1.0 / sqrt((double)L->ci * L->k * L->k); /* PyTorch's Conv2d default */
        for (size_t i = 0; i < nw; i++) L->w[i] = (float)((2 * ls_rng_uniform(&rng) - 1) * bound);
        for (int i = 0; i < L->co; i++) L->b[i] = (float)((2 * ls_rng_uniform(&rng) - 1) * bound);
        if (has_bn(l))
            for (int i = 0; i < L->co; i++) L->gamma[i] = 1, L->beta[i] = 0, L->run_mean[i] = 0, L->run_var[i] = 1;
    }
    m->params = be->mem->alloc(be, m->nparams * sizeof(float));
    m->grads = be->mem->alloc(be, m->nparams * sizeof(float));
    m->running = be->mem->alloc(be, m->nrunning * sizeof(float));
    ls_status s = LS_OK;
    if (!m->params || !m->grads || !m->running) s = ls_fail(err, LS_ERR_NOMEM, "cannot allocate the model");
    else {
        be->mem->to_device(be, m->params, hp, m->nparams * sizeof(float));
        be->mem->to_device(be, m->running, hr, m->nrunning * sizeof(float));
        be->mem->zero(be, m->grads, m->nparams * sizeof(float));
        layout(m, m->params, m->running, &np, &nr);
    }
    free(hp), free(hr);
    if (s) ls_model_free(m);
    return s;
}

void ls_model_free(ls_model *m) {
    if (m->be) {
        if (m->params) m->be->mem->free(m->be, m->params);
        if (m->grads) m->be->mem->free(m->be, m->grads);
        if (m->running) m->be->mem->free(m->be, m->running);
    }
    memset(m, 0, sizeof *m);
}

/* The arena is sized before a backend is at hand (ls_model_arena_floats takes a configuration), so the
 * conv workspace is the CPU op family's; the CUDA family's never needs more (src/cuda/nn.cu).
 * ls_model_forward checks that the backend in use needs no more. */
extern const ls_ops_nn ls_cpu_nn;

/* Largest conv workspace over the layers for the given workspace function. */
static size_t conv_ws(size_t (*f)(int, int, int, int, int), const ls_model_config *c, const ls_conv_layer *L) {
    size_t w = 0;
    for (int l = 0; l < LS_MODEL_LAYERS; l++) {
        int h = l < L_DEC0 ? c->grid : l < L_SKIP0 ? side(c, l - L_DEC0) : side(c, LS_DEC_STAGES - 1);
        size_t n = f(L[l].ci, h, h, L[l].co, L[l].k);
        if (n > w) w = n;
    }
    return w + 1; /* never a zero-size allocation */
}

/* Largest activation (floats per image) and largest conv workspace, for sizing. */
static void extents(const ls_model_config *c, const ls_conv_layer *L, size_t *act, size_t *ws) {
    size_t g2 = (size_t)c->grid * c->grid, S = (size_t)side(c, LS_DEC_STAGES - 1), a = 0;
    a = (size_t)(c->head_hidden > c->feat_dim ? c->head_hidden : c->feat_dim) * g2;
    for (int s = 0; s < LS_DEC_STAGES; s++) {
        size_t hw = (size_t)side(c, s) * side(c, s);
        size_t big = (size_t)(L[L_DEC0 + s].ci > L[L_DEC0 + s].co ? L[L_DEC0 + s].ci : L[L_DEC0 + s].co) * hw;
        if (big > a) a = big;
    }
    size_t top = (size_t)(c->widths[LS_DEC_STAGES - 1] + 1) * S * S;
    if (top > a) a = top;
    *act = a, *ws = conv_ws(ls_cpu_nn.conv2d_workspace, c, L);
}

/* Mirrors the allocations of ls_model_forward and ls_model_backward (each rounded up to 16 floats). */
size_t ls_model_arena_floats(const ls_model_config *c, int B) {
    ls_conv_layer L[LS_MODEL_LAYERS];
    layer_shapes(c, L);
    size_t g2 = (size_t)c->grid * c->grid, S2 = (size_t)side(c, LS_DEC_STAGES - 1) * side(c, LS_DEC_STAGES - 1);
    size_t act, ws, n = 0, allocs = 0;
    extents(c, L, &act, &ws);
    n += ws, allocs++;
    for (int l = 0; l < LS_MODEL_LAYERS; l++) n += 2 * (size_t)(L[l].co > 64 ? L[l].co : 64), allocs += 2;
    n += (size_t)B * (2 * c->head_hidden + c->code_dim) * g2, allocs += 3; /* h1, codes, h1a */
    for (int s = 0; s < LS_DEC_STAGES; s++) {
        size_t hw = (size_t)side(c, s) * side(c, s);
        n += (size_t)B * hw * ((size_t)L[L_DEC0 + s].ci + 3 * (size_t)c->widths[s]) + (size_t)B * c->widths[s];
        allocs += 5;
    }
    n += (size_t)B * S2 * ((size_t)c->widths[LS_DEC_STAGES - 1] + 1 + 5 * (size_t)c->skip_width + 1), allocs += 7;
    n += 3 * (size_t)B * act + 2 * (size_t)B * c->skip_width * S2, allocs += 5; /* backward */
    return n + 16 * allocs;
}

/* conv -> (BN) -> ReLU for one layer, keeping pre-activation buffers. */
static void conv_bn(ls_model *m, ls_model_acts *a, int l, const float *x, float *conv, float *bn, int B, int H, int W) {
    const ls_backend *be = m->be;
    ls_conv_layer *L = &m->layer[l];
    be->nn->conv2d_fwd(be, conv, x, L->w, L->b, B, L->ci, H, W, L->co, L->k, a->ws);
    if (a->training)
        be->nn->batchnorm_fwd_train(be, bn, a->mean[l], a->rstd[l], conv, L->gamma, L->beta, L->run_mean, L->run_var, B,
                                    L->co, H * W, m->cfg.bn_momentum, m->cfg.bn_eps);
    else
        be->nn->batchnorm_fwd_eval(be, bn, conv, L->gamma, L->beta, L->run_mean, L->run_var, B, L->co, H * W,
                                   m->cfg.bn_eps);
}

/* feats -> a->h1 (pre-activation) and a->codes; a->ws must be set. */
static void head_forward(ls_model *m, ls_arena *ar, ls_model_acts *a, const float *feats, int B) {
    const ls_backend *be = m->be;
    const ls_model_config *c = &m->cfg;
    ls_conv_layer *L = m->layer;
    int g = c->grid;
    size_t g2 = (size_t)g * g;
    a->h1 = ls_arena_floats(ar, (size_t)B * c->head_hidden * g2);
    a->codes = ls_arena_floats(ar, (size_t)B * c->code_dim * g2);
    be->nn->conv2d_fwd(be, a->h1, feats, L[L_HEAD1].w, L[L_HEAD1].b, B, L[L_HEAD1].ci, g, g, L[L_HEAD1].co, 1, a->ws);
    /* The head's ReLU output goes straight into the second conv; h1 keeps the pre-activation. */
    float *h1a = ls_arena_floats(ar, (size_t)B * c->head_hidden * g2);
    be->nn->relu_fwd(be, h1a, a->h1, (size_t)B * c->head_hidden * g2);
    be->nn->conv2d_fwd(be, a->codes, h1a, L[L_HEAD2].w, L[L_HEAD2].b, B, L[L_HEAD2].ci, g, g, L[L_HEAD2].co, 1, a->ws);
}

/* Conv scratch of the head alone (1x1 convs need no im2col, but the op may ask for some). */
static size_t head_ws(const ls_model *m) {
    const ls_model_config *c = &m->cfg;
    size_t a = m->be->nn->conv2d_workspace(c->feat_dim, c->grid, c->grid, c->head_hidden, 1);
    size_t b = m->be->nn->conv2d_workspace(c->head_hidden, c->grid, c->grid, c->code_dim, 1);
    return (a > b ? a : b) + 1;
}

size_t ls_model_head_arena_floats(const ls_model *m, int B) {
    const ls_model_config *c = &m->cfg;
    size_t g2 = (size_t)c->grid * c->grid, nh = (size_t)B * c->head_hidden * g2;
    /* forward: ws, h1, codes, h1a; backward: h1a, dh; each allocation rounds up to 16 floats */
    return head_ws(m) + 4 * nh + (size_t)B * c->code_dim * g2 + 16 * 6;
}

void ls_model_head_forward(ls_model *m, ls_arena *ar, ls_model_acts *a, const float *feats, int B) {
    memset(a, 0, sizeof *a);
    a->B = B, a->training = 1, a->feats = (float *)feats;
    a->ws = ls_arena_floats(ar, head_ws(m));
    head_forward(m, ar, a, feats, B);
}

void ls_model_forward(ls_model *m, ls_arena *ar, ls_model_acts *a, const float *feats, const float *image, int B,
                      int training, float *const *keep) {
    const ls_backend *be = m->be;
    const ls_model_config *c = &m->cfg;
    ls_conv_layer *L = m->layer;
    int S = side(c, LS_DEC_STAGES - 1);
    size_t S2 = (size_t)S * S, act, wsz;
    extents(c, L, &act, &wsz);
    memset(a, 0, sizeof *a);
    a->B = B, a->training = training, a->feats = (float *)feats, a->image = (float *)image;
    LS_ASSERT(conv_ws(be->nn->conv2d_workspace, c, L) <= wsz);
    a->ws = ls_arena_floats(ar, wsz);
    for (int l = 0; l < LS_MODEL_LAYERS; l++) a->mean[l] = ls_arena_floats(ar, 64 > L[l].co ? 64 : (size_t)L[l].co),
                                              a->rstd[l] = ls_arena_floats(ar, 64 > L[l].co ? 64 : (size_t)L[l].co);
    head_forward(m, ar, a, feats, B);
    const float *in = a->codes;
    for (int s = 0; s < LS_DEC_STAGES; s++) {
        int h = side(c, s), ci = L[L_DEC0 + s].ci, w = c->widths[s];
        size_t hw = (size_t)h * h;
        a->up[s] = upsamples(c, s) ? ls_arena_floats(ar, (size_t)B * ci * hw) : (float *)in;
        a->conv[s] = ls_arena_floats(ar, (size_t)B * w * hw);
        a->bn[s] = ls_arena_floats(ar, (size_t)B * w * hw);
        a->out[s] = ls_arena_floats(ar, (size_t)B * w * hw);
        a->keep[s] = ls_arena_floats(ar, (size_t)B * w);
        if (upsamples(c, s)) be->nn->upsample2x_fwd(be, a->up[s], in, B, ci, h / 2, h / 2);
        conv_bn(m, a, L_DEC0 + s, a->up[s], a->conv[s], a->bn[s], B, h, h);
        be->nn->relu_fwd(be, a->out[s], a->bn[s], (size_t)B * w * hw);
        if (training && keep && keep[s]) {
            be->mem->to_device(be, a->keep[s], keep[s], (size_t)B * w * sizeof(float));
            be->nn->dropout2d(be, a->out[s], a->out[s], a->keep[s], B, w, (int)hw);
        } else {
            a->keep[s] = NULL;
        }
        in = a->out[s];
    }
    int w4 = c->widths[LS_DEC_STAGES - 1], sk = c->skip_width;
    a->cat = ls_arena_floats(ar, (size_t)B * (w4 + 1) * S2);
    be->nn->concat_fwd(be, a->cat, in, image, B, w4, 1, (int)S2);
    a->s0 = ls_arena_floats(ar, (size_t)B * sk * S2), a->s0bn = ls_arena_floats(ar, (size_t)B * sk * S2);
    a->s1 = ls_arena_floats(ar, (size_t)B * sk * S2), a->s1bn = ls_arena_floats(ar, (size_t)B * sk * S2);
    float *r = ls_arena_floats(ar, (size_t)B * sk * S2);
    conv_bn(m, a, L_SKIP0, a->cat, a->s0, a->s0bn, B, S, S);
    be->nn->relu_fwd(be, r, a->s0bn, (size_t)B * sk * S2);
    conv_bn(m, a, L_SKIP1, r, a->s1, a->s1bn, B, S, S);
    be->nn->relu_fwd(be, r, a->s1bn, (size_t)B * sk * S2);
    a->logits = ls_arena_floats(ar, (size_t)B * S2);
    be->nn->conv2d_fwd(be, a->logits, r, L[L_OUT].w, L[L_OUT].b, B, sk, S, S, 1, 3, a->ws);
    (void)act;
}

/* Gradient buffers of the parameters of layer l inside m->grads (same layout as m->params). */
static float *grad_of(const ls_model *m, const float *param) { return m->grads + (param - m->params); }

/* Backward through ReLU(BN(conv(x))): d is dL/d(relu output) and is overwritten; dx (may be NULL) gets
 * dL/dx. `x` is the conv input, `conv`/`bn` the kept pre-activations. */
static void conv_bn_relu_bwd(ls_model *m, const ls_model_acts *a, int l, float *d, float *tmp, const float *x,
                             const float *conv, const float *bn, float *dx, int H, int W) {
    const ls_backend *be = m->be;
    ls_conv_layer *L = &m->layer[l];
    size_t n = (size_t)a->B * L->co * H * W;
    be->nn->relu_bwd(be, d, d, bn, n);
    be->nn->batchnorm_bwd(be, tmp, grad_of(m, L->gamma), grad_of(m, L->beta), d, conv, a->mean[l], a->rstd[l],
                          L->gamma, a->B, L->co, H * W);
    be->nn->conv2d_bwd(be, dx, grad_of(m, L->w), grad_of(m, L->b), tmp, x, L->w, a->B, L->ci, H, W, L->co, L->k, a->ws);
}

/* dL/dcodes d -> head parameter gradients; h1a and dh are scratch of the hidden activation's size. */
static void head_backward(ls_model *m, const ls_model_acts *a, const float *d, float *h1a, float *dh) {
    const ls_backend *be = m->be;
    ls_conv_layer *L = m->layer;
    int B = a->B, g = m->cfg.grid;
    size_t nh = (size_t)B * m->cfg.head_hidden * g * g;
    be->nn->relu_fwd(be, h1a, a->h1, nh);
    be->nn->conv2d_bwd(be, dh, grad_of(m, L[L_HEAD2].w), grad_of(m, L[L_HEAD2].b), d, h1a, L[L_HEAD2].w, B,
                       L[L_HEAD2].ci, g, g, L[L_HEAD2].co, 1, a->ws);
    be->nn->relu_bwd(be, dh, dh, a->h1, nh);
    be->nn->conv2d_bwd(be, NULL, grad_of(m, L[L_HEAD1].w), grad_of(m, L[L_HEAD1].b), dh, a->feats, L[L_HEAD1].w, B,
                       L[L_HEAD1].ci, g, g, L[L_HEAD1].co, 1, a->ws);
}

void ls_model_backward(ls_model *m, ls_arena *ar, const ls_model_acts *a, const float *dlogits, const float *dcodes) {
    const ls_backend *be = m->be;
    const ls_model_config *c = &m->cfg;
    ls_conv_layer *L = m->layer;
    int B = a->B, g = c->grid, S = side(c, LS_DEC_STAGES - 1), sk = c->skip_width, w4 = c->widths[LS_DEC_STAGES - 1];
    size_t S2 = (size_t)S * S, g2 = (size_t)g * g, act, wsz;
    extents(c, L, &act, &wsz);
    float *p = ls_arena_floats(ar, (size_t)B * act), *q = ls_arena_floats(ar, (size_t)B * act);
    float *t = ls_arena_floats(ar, (size_t)B * act);
    float *r0 = ls_arena_floats(ar, (size_t)B * sk * S2), *r1 = ls_arena_floats(ar, (size_t)B * sk * S2);
    /* Recompute the two skip ReLU outputs (cheaper than keeping them). */
    be->nn->relu_fwd(be, r0, a->s0bn, (size_t)B * sk * S2);
    be->nn->relu_fwd(be, r1, a->s1bn, (size_t)B * sk * S2);
    /* out conv: dL/d r1 into p */
    be->nn->conv2d_bwd(be, p, grad_of(m, L[L_OUT].w), grad_of(m, L[L_OUT].b), dlogits, r1, L[L_OUT].w, B, sk, S, S, 1, 3,
                       a->ws);
    conv_bn_relu_bwd(m, a, L_SKIP1, p, q, r0, a->s1, a->s1bn, p, S, S);       /* p = dL/d r0 */
    conv_bn_relu_bwd(m, a, L_SKIP0, p, q, a->cat, a->s0, a->s0bn, p, S, S);   /* p = dL/d cat */
    be->nn->concat_bwd(be, q, NULL, p, B, w4, 1, (int)S2);                    /* q = dL/d out[4] */
    float *d = q, *spare = p;
    for (int s = LS_DEC_STAGES - 1; s >= 0; s--) {
        int h = side(c, s), ci = L[L_DEC0 + s].ci, w = c->widths[s];
        if (a->keep[s]) be->nn->dropout2d(be, d, d, a->keep[s], B, w, h * h);
        conv_bn_relu_bwd(m, a, L_DEC0 + s, d, t, a->up[s], a->conv[s], a->bn[s], spare, h, h);
        if (upsamples(c, s)) {
            be->nn->upsample2x_bwd(be, d, spare, B, ci, h / 2, h / 2);         /* d = dL/d stage input */
        } else {
            float *x = d;
            d = spare, spare = x;
        }
    }
    /* d = dL/d codes from the decoder; add the contrastive part. */
    size_t nc = (size_t)B * c->code_dim * g2;
    if (dcodes) be->dense->add_bias(be, d, dcodes, 1, (int)nc); /* d += dcodes, as one row of width nc */
    head_backward(m, a, d, spare, t);
}

void ls_model_head_backward(ls_model *m, ls_arena *ar, const ls_model_acts *a, const float *dcodes) {
    size_t n = (size_t)a->B * m->cfg.head_hidden * m->cfg.grid * m->cfg.grid;
    float *h1a = ls_arena_floats(ar, n), *dh = ls_arena_floats(ar, n);
    head_backward(m, a, dcodes, h1a, dh);
}

/* ------------------------------------------------------------------ files */

/* Name of the p-th tensor of layer l: part 0 weight, 1 bias, 2 gamma, 3 beta, 4 running mean, 5 var. */
static void tensor_name(int l, int part, char *buf, size_t n) {
    static const char *conv_part[2] = {"weight", "bias"};
    static const char *bn_part[4] = {"weight", "bias", "running_mean", "running_var"};
    char layer[32];
    if (l == L_HEAD1) snprintf(layer, sizeof layer, "head1");
    else if (l == L_HEAD2) snprintf(layer, sizeof layer, "head2");
    else if (l < L_SKIP0) snprintf(layer, sizeof layer, "dec.%d", l - L_DEC0);
    else if (l < L_OUT) snprintf(layer, sizeof layer, "skip.%d", l - L_SKIP0);
    else snprintf(layer, sizeof layer, "out");
    if (!has_bn(l)) snprintf(buf, n, "%s.%s", layer, conv_part[part]);
    else if (part < 2) snprintf(buf, n, "%s.conv.%s", layer, conv_part[part]);
    else snprintf(buf, n, "%s.bn.%s", layer, bn_part[part - 2]);
}

static float *part_ptr(ls_conv_layer *L, int part) {
    float *p[6] = {L->w, L->b, L->gamma, L->beta, L->run_mean, L->run_var};
    return p[part];
}

static size_t part_len(const ls_conv_layer *L, int part) {
    return part == 0 ? (size_t)L->co * L->ci * L->k * L->k : (size_t)L->co;
}

ls_status ls_model_save(const ls_model *m, const ls_model_info *info, const char *path, int half, ls_error *err) {
    const ls_backend *be = m->be;
    float *hp = ls_calloc(m->nparams, sizeof(float), err), *hr = ls_calloc(m->nrunning ? m->nrunning : 1, sizeof(float), err);
    if (!hp || !hr) {
        free(hp), free(hr);
        return LS_ERR_NOMEM;
    }
    be->mem->to_host(be, hp, m->params, m->nparams * sizeof(float));
    be->mem->to_host(be, hr, m->running, m->nrunning * sizeof(float));
    ls_st_entry e[LS_MODEL_LAYERS * 6];
    char names[LS_MODEL_LAYERS * 6][48];
    int n = 0;
    for (int l = 0; l < LS_MODEL_LAYERS; l++) {
        const ls_conv_layer *L = &m->layer[l];
        for (int part = 0; part < (has_bn(l) ? 6 : 2); part++) {
            tensor_name(l, part, names[n], sizeof names[n]);
            const float *dev = part_ptr((ls_conv_layer *)L, part);
            const float *host = part < 4 ? hp + (dev - m->params) : hr + (dev - m->running);
            e[n] = (ls_st_entry){names[n], host, part == 0 ? 4 : 1, {0}, half && part < 4};
            if (part == 0) e[n].shape[0] = L->co, e[n].shape[1] = L->ci, e[n].shape[2] = L->k, e[n].shape[3] = L->k;
            else e[n].shape[0] = L->co;
            n++;
        }
    }
    const ls_model_config *c = &m->cfg;
    char v[13][64];
    snprintf(v[0], 64, "%d", c->feat_dim), snprintf(v[1], 64, "%d", c->head_hidden), snprintf(v[2], 64, "%d", c->code_dim);
    snprintf(v[3], 64, "%d", c->grid);
    snprintf(v[4], 64, "%d,%d,%d,%d,%d", c->widths[0], c->widths[1], c->widths[2], c->widths[3], c->widths[4]);
    snprintf(v[5], 64, "%d", c->skip_width), snprintf(v[6], 64, "%g", c->dropout), snprintf(v[7], 64, "%g", c->bn_eps);
    snprintf(v[8], 64, "%g", c->bn_momentum), snprintf(v[9], 64, "%d", info->input_size);
    snprintf(v[10], 64, "%d", c->up_stages);
    const char *meta[] = {"livseg_model", "1", "teacher", info->teacher_id, "teacher_arch", info->teacher_arch,
                          "input_size", v[9], "feat_dim", v[0], "head_hidden", v[1], "code_dim", v[2], "grid", v[3],
                          "widths", v[4], "skip_width", v[5], "dropout", v[6], "bn_eps", v[7], "bn_momentum", v[8], "up_stages", v[10],
                          "train_config", info->train_config ? info->train_config : "{}"};
    ls_status s = ls_st_write(path, e, n, meta, (int)(sizeof meta / sizeof *meta / 2), NULL, err);
    free(hp), free(hr);
    return s;
}

/* Every tensor of configuration c is in the file with its number of elements. */
static ls_status tensors_present(const ls_st_file *f, const ls_model_config *c, const char *path, ls_error *err) {
    ls_conv_layer L[LS_MODEL_LAYERS];
    layer_shapes(c, L);
    for (int l = 0; l < LS_MODEL_LAYERS; l++)
        for (int part = 0; part < (has_bn(l) ? 6 : 2); part++) {
            char name[48];
            tensor_name(l, part, name, sizeof name);
            const ls_st_tensor *t = ls_st_find(f, name);
            size_t want = part_len(&L[l], part);
            if (!t) return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' is missing", path, name);
            if (t->numel != want)
                return ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' has %zu elements, expected %zu", path, name, t->numel,
                               want);
        }
    return LS_OK;
}

/* "w0,w1,w2,w3,w4" (integers; config_check bounds them) into w; 0 when it is not that. */
static int parse_widths(const char *v, int *w) {
    for (int i = 0; i < LS_DEC_STAGES; i++) {
        char *end;
        long x = strtol(v, &end, 10);
        if (end == v || x < -1000000 || x > 1000000 || *end != (i + 1 < LS_DEC_STAGES ? ',' : '\0')) return 0;
        w[i] = (int)x, v = end + 1;
    }
    return 1;
}

static int meta_int(const ls_st_file *f, const char *key, int *out) {
    const char *v = ls_st_meta(f, key);
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || x <= 0 || x > 100000) return 0;
    *out = (int)x;
    return 1;
}

ls_status ls_model_load(ls_model *m, ls_model_info *info, const ls_backend *be, const char *path, ls_error *err) {
    memset(m, 0, sizeof *m); /* a failure before ls_model_init frees nothing */
    ls_st_file f;
    LS_TRY(ls_st_open(path, &f, err));
    ls_model_config c = {0};
    ls_status s = LS_OK;
    const char *kind = ls_st_meta(&f, "livseg_model"), *teacher = ls_st_meta(&f, "teacher"),
               *arch = ls_st_meta(&f, "teacher_arch"), *widths = ls_st_meta(&f, "widths");
    memset(info, 0, sizeof *info);
    if (!kind || strcmp(kind, "1") || !teacher || !arch || !widths ||
        !parse_widths(widths, c.widths) ||
        !meta_int(&f, "feat_dim", &c.feat_dim) || !meta_int(&f, "head_hidden", &c.head_hidden) ||
        !meta_int(&f, "code_dim", &c.code_dim) || !meta_int(&f, "grid", &c.grid) ||
        !meta_int(&f, "skip_width", &c.skip_width) || !meta_int(&f, "input_size", &info->input_size))
        s = ls_fail(err, LS_ERR_INPUT, "%s: not a livseg model (configuration metadata missing or invalid)", path);
    if (!s) {
        c.dropout = (float)atof(ls_st_meta(&f, "dropout") ? ls_st_meta(&f, "dropout") : "0");
        c.bn_eps = (float)atof(ls_st_meta(&f, "bn_eps") ? ls_st_meta(&f, "bn_eps") : "1e-5");
        c.bn_momentum = (float)atof(ls_st_meta(&f, "bn_momentum") ? ls_st_meta(&f, "bn_momentum") : "0.1");
        c.up_stages = LS_DEC_STAGES; /* files from before the option upsample in every stage */
        if (ls_st_meta(&f, "up_stages") && !meta_int(&f, "up_stages", &c.up_stages))
            s = ls_fail(err, LS_ERR_INPUT, "%s: invalid up_stages metadata", path);
        snprintf(info->teacher_id, sizeof info->teacher_id, "%s", teacher);
        snprintf(info->teacher_arch, sizeof info->teacher_arch, "%s", arch);
        if (!s) s = config_check(&c, path, err);
        if (!s) s = tensors_present(&f, &c, path, err); /* before allocating what the configuration asks */
        if (!s) s = ls_model_init(m, be, &c, 0, err);
    }
    float *hp = NULL, *hr = NULL;
    if (!s) {
        hp = ls_calloc(m->nparams, sizeof(float), err), hr = ls_calloc(m->nrunning ? m->nrunning : 1, sizeof(float), err);
        if (!hp || !hr) s = LS_ERR_NOMEM;
    }
    for (int l = 0; !s && l < LS_MODEL_LAYERS; l++)
        for (int part = 0; !s && part < (has_bn(l) ? 6 : 2); part++) {
            char name[48];
            tensor_name(l, part, name, sizeof name);
            float *dev = part_ptr(&m->layer[l], part);
            float *host = part < 4 ? hp + (dev - m->params) : hr + (dev - m->running);
            int r = ls_st_source(&f, name, host, part_len(&m->layer[l], part), err);
            LS_ASSERT(r != LS_TENSOR_MISSING); /* tensors_present found every one */
            if (r) s = (ls_status)r;
        }
    if (!s) {
        be->mem->to_device(be, m->params, hp, m->nparams * sizeof(float));
        be->mem->to_device(be, m->running, hr, m->nrunning * sizeof(float));
    } else if (m->params) {
        ls_model_free(m);
    }
    free(hp), free(hr);
    ls_st_close(&f);
    return s;
}
