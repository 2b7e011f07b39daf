/*
 * bench/network.c — the networks' speed on one backend (meant for CUDA; runs on the CPU too): the ViT
 * teacher forward (ViT-S/16 and ViT-B/8 at 224x224, batch 8), the head + decoder evaluation forward (default
 * configuration, 14x14 grid -> 448x448, batch 8), and one training step of head + decoder (forward, the
 * segmentation losses, backward, RAdam; batch 8). Reports slices/s, TFLOP/s (FLOPs counted on paper: ViT as
 * bench/vit.c, convolutions 2*Ci*Co*K*K*H*W per image, nothing else) and the network time for a 300-slice
 * volume; then the same for the head + decoder of the shipped models/default.safetensors (its configuration,
 * random weights; run from the repository root), the model `livseg segment` uses by default. Also ViT-S/16
 * with the backend's fused attention switched off (the kernel's gain, same run) and, on CUDA, ViT-S/16 and
 * the shipped decoder at batch 32 (segment's default batch on a GPU). Random weights: speed does not depend
 * on them. Not a test.
 *
 * usage: build-cuda/bench/network cuda|cpu [threads]
 *        build-cuda/bench/network --make-inputs DIR SLICES
 *            writes DIR/ct.nii.gz (a synthetic 512 x 512 x SLICES CT: air, a body ellipse, a liver-like blob,
 *            noise) and DIR/model.safetensors (the default head + decoder, untrained, for the random
 *            ViT-S/16 teacher at 224) for timing `livseg segment` end to end.
 * Machine-readable lines start with "network "; exit status 2 with one line on stderr when the backend
 * cannot be opened.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ops.h"
#include "rng.h"
#include "util.h"
#include "vit.h"

static int fail(const ls_error *err) {
    fprintf(stderr, "bench/network: %s\n", err->msg);
    return 2;
}

static int random_source(void *ctx, const char *name, float *dst, size_t n, ls_error *err) {
    (void)err;
    ls_rng *r = ctx;
    int is_norm_w = strstr(name, "norm") && strstr(name, "weight");
    for (size_t i = 0; i < n; i++) dst[i] = (float)(is_norm_w ? 1.0 + 0.1 * ls_rng_normal(r) : 0.02 * ls_rng_normal(r));
    return LS_OK;
}

/* Backend memory holding n copies of a pattern. */
static float *dev_fill(const ls_backend *be, size_t n, double scale, uint64_t seed) {
    float *h = malloc(n * sizeof(float)), *d = be->mem->alloc(be, n * sizeof(float));
    ls_rng r = {seed};
    for (size_t i = 0; i < n; i++) h[i] = (float)(scale * ls_rng_normal(&r));
    if (d) be->mem->to_device(be, d, h, n * sizeof(float));
    be->mem->sync(be);
    free(h);
    return d;
}

/* Seconds per ViT forward of batch B at S x S (best of `iters` after a warm-up); *tflops the rate. */
static int time_vit(const ls_backend *be, const char *preset, int B, int S, int iters, double *sec, double *tflops) {
    ls_error err = {0};
    ls_vit_config cfg;
    ls_vit m;
    ls_arena arena;
    ls_rng r = {7};
    if (ls_vit_config_preset(preset, &cfg, &err) || ls_vit_load(&m, be, &cfg, random_source, &r, &err) ||
        ls_arena_init(&arena, be, ls_vit_arena_floats(&cfg, B, S, S) * sizeof(float), &err))
        return fail(&err);
    int g = S / cfg.patch;
    size_t nin = (size_t)B * 3 * S * S, nout = (size_t)B * cfg.dim * g * g;
    float *in = dev_fill(be, nin, 1.0, 1), *out = be->mem->alloc(be, nout * sizeof(float));
    if (!in || !out) {
        ls_fail(&err, LS_ERR_NOMEM, "cannot allocate ViT input/output");
        return fail(&err);
    }
    double best = 1e30;
    for (int it = 0; it <= iters; it++) {
        ls_arena_reset(&arena);
        be->mem->sync(be);
        double t0 = ls_now();
        if (ls_vit_forward(&m, &arena, in, B, S, S, out, NULL, &err)) return fail(&err);
        be->mem->sync(be);
        double t = ls_now() - t0;
        if (it && t < best) best = t;
    }
    double N = (double)g * g, T = N + 1, D = cfg.dim;
    double flops = B * (2 * N * 3 * cfg.patch * cfg.patch * D + cfg.depth * (24 * T * D * D + 4 * T * T * D));
    *sec = best, *tflops = flops / best / 1e12;
    be->mem->free(be, in), be->mem->free(be, out);
    ls_arena_free(&arena);
    ls_vit_free(&m);
    return 0;
}

/* Convolution FLOPs of one forward of the head + decoder per image. */
static double model_flops(const ls_model *m) {
    const ls_model_config *c = &m->cfg;
    double f = 0;
    int S = ls_model_out_side(c);
    for (int l = 0; l < LS_MODEL_LAYERS; l++) {
        const ls_conv_layer *L = &m->layer[l];
        int side = l < 2 ? c->grid : l < 2 + LS_DEC_STAGES ? 0 : S;
        if (!side) { /* decoder stage s: its output side */
            int s = l - 2, ups = s - (LS_DEC_STAGES - c->up_stages) + 1;
            side = c->grid << (ups > 0 ? ups : 0);
        }
        f += 2.0 * L->ci * L->co * L->k * L->k * (double)side * side;
    }
    return f;
}

/* Head + decoder of configuration cfg (random weights): evaluation forward and one training step. */
static int time_model(const ls_backend *be, ls_model_config cfg, int B, int iters, double *eval_sec, double *eval_tflops,
                      double *train_sec) {
    ls_error err = {0};
    ls_model m;
    ls_arena arena;
    if (ls_model_init(&m, be, &cfg, 1, &err) ||
        ls_arena_init(&arena, be, ls_model_arena_floats(&cfg, B) * sizeof(float), &err))
        return fail(&err);
    int S = ls_model_out_side(&cfg), P = cfg.grid * cfg.grid;
    size_t nf = (size_t)B * cfg.feat_dim * P, ni = (size_t)B * S * S;
    float *feats = dev_fill(be, nf, 1.0, 2), *image = dev_fill(be, ni, 1.0, 3), *target = dev_fill(be, ni, 0.0, 4);
    float *dz = be->mem->alloc(be, ni * sizeof(float)), *mom = be->mem->alloc(be, m.nparams * sizeof(float));
    float *vel = be->mem->alloc(be, m.nparams * sizeof(float));
    double *slots = be->mem->alloc(be, 4 * sizeof(double));
    if (!feats || !image || !target || !dz || !mom || !vel || !slots) {
        ls_fail(&err, LS_ERR_NOMEM, "cannot allocate model inputs");
        return fail(&err);
    }
    be->mem->zero(be, mom, m.nparams * sizeof(float));
    be->mem->zero(be, vel, m.nparams * sizeof(float));
    ls_model_acts a;
    double best = 1e30, best_train = 1e30;
    for (int it = 0; it <= iters; it++) {
        ls_arena_reset(&arena);
        be->mem->sync(be);
        double t0 = ls_now();
        ls_model_forward(&m, &arena, &a, feats, image, B, 0, NULL);
        be->mem->sync(be);
        double t = ls_now() - t0;
        if (it && t < best) best = t;
    }
    for (int it = 0; it <= iters; it++) {
        ls_arena_reset(&arena);
        be->mem->sync(be);
        double t0 = ls_now();
        be->mem->zero(be, m.grads, m.nparams * sizeof(float));
        be->mem->zero(be, dz, ni * sizeof(float));
        ls_model_forward(&m, &arena, &a, feats, image, B, 1, NULL);
        be->loss->focal(be, a.logits, target, ni, 2.0f, 0.25f, 1.0f, dz, slots);
        be->loss->tversky(be, a.logits, target, ni, 0.5f, 0.5f, 1.0f, 1.0f, dz, slots + 1);
        be->loss->log_iou(be, a.logits, target, ni, 1.0f, 1.0f, dz, slots + 2);
        ls_model_backward(&m, &arena, &a, dz, NULL);
        be->loss->radam_step(be, m.params, m.grads, mom, vel, m.nparams, it + 1, 1e-4f, 0.9f, 0.999f, 1e-8f, 1e-5f);
        be->mem->sync(be);
        double t = ls_now() - t0;
        if (it && t < best_train) best_train = t;
    }
    *eval_sec = best, *eval_tflops = B * model_flops(&m) / best / 1e12, *train_sec = best_train;
    float *bufs[] = {feats, image, target, dz, mom, vel};
    for (int i = 0; i < 6; i++) be->mem->free(be, bufs[i]);
    be->mem->free(be, slots);
    ls_arena_free(&arena);
    ls_model_free(&m);
    return 0;
}

static int make_inputs(const char *dir, int Z) {
    ls_error err = {0};
    char path[1024];
    int64_t dim[3] = {512, 512, Z};
    double aff[4][4] = {{-0.75, 0, 0, 190}, {0, -0.75, 0, 190}, {0, 0, 1.5, -200}, {0, 0, 0, 1}};
    ls_volume v;
    memset(&v, 0, sizeof v);
    ls_geom_from_affine(&v.geom, dim, aff);
    snprintf(v.format, sizeof v.format, "NIfTI-1");
    v.data = ls_calloc((size_t)512 * 512 * Z, sizeof(float), &err);
    if (!v.data) return fail(&err);
    ls_rng r = {11};
    for (int z = 0; z < Z; z++)
        for (int y = 0; y < 512; y++)
            for (int x = 0; x < 512; x++) {
                double bx = (x - 256) / 220.0, by = (y - 256) / 160.0, lx = (x - 190) / 90.0, ly = (y - 240) / 70.0;
                double lz = (z - Z / 2.0) / (Z / 3.0);
                float hu = bx * bx + by * by < 1 ? 40.0f : -1000.0f;
                if (lx * lx + ly * ly + lz * lz < 1) hu = 60.0f;
                v.data[((size_t)z * 512 + y) * 512 + x] = hu + (float)(15 * ls_rng_normal(&r));
            }
    snprintf(path, sizeof path, "%s/ct.nii.gz", dir);
    if (ls_volume_write(path, &v, LS_DT_I16, NULL, &err)) return fail(&err);
    ls_volume_free(&v);
    ls_backend be;
    ls_model m;
    ls_model_config cfg;
    ls_model_config_default(&cfg, 384, 14);
    if (ls_backend_init(&be, LS_DEV_CPU, 1, &err) || ls_model_init(&m, &be, &cfg, 1, &err)) return fail(&err);
    ls_model_info info = {.input_size = 224};
    snprintf(info.teacher_id, sizeof info.teacher_id, "vits16:random:seed=0");
    snprintf(info.teacher_arch, sizeof info.teacher_arch, "vits16");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (ls_model_save(&m, &info, path, 0, &err)) return fail(&err);
    ls_model_free(&m);
    ls_backend_free(&be);
    printf("network inputs %s/ct.nii.gz (512x512x%d) %s/model.safetensors\n", dir, Z, dir);
    return 0;
}

int main(int argc, char **argv) {
    ls_process_tune(argv); /* the kernels and OpenMP waiting livseg runs with (ops.h), both sides */
    if (argc > 3 && !strcmp(argv[1], "--make-inputs")) return make_inputs(argv[2], atoi(argv[3]));
    if (argc < 2) {
        fprintf(stderr, "usage: bench/network cuda|cpu [threads] | --make-inputs DIR SLICES\n");
        return 2;
    }
    ls_error err = {0};
    ls_device dev;
    ls_backend be;
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    if (ls_device_parse(argv[1], &dev, &err) || ls_backend_init(&be, dev, threads, &err)) return fail(&err);
    int B = 8, iters = dev == LS_DEV_CUDA ? 10 : 2;
    double vs, vs_tf, vb, vb_tf, es, es_tf, ts, ds = 0, ds_tf = 0, dts;
    ls_model_config cfg;
    ls_model_config_default(&cfg, 384, 14);
    int rc = time_vit(&be, "vits16", B, 224, iters, &vs, &vs_tf);
    if (!rc) rc = time_vit(&be, "vitb8", B, 224, iters, &vb, &vb_tf);
    /* The same ViT-S/16 with the backend's fused attention switched off (split_heads, batched GEMMs,
     * softmax, merge_heads: what the CUDA backend ran before it had one), for the fused kernel's gain in the
     * same run; and at batch 32, segment's default on a GPU. */
    ls_ops_dense unfused_ops = *be.dense;
    unfused_ops.attention = NULL;
    ls_backend unfused = be;
    unfused.dense = &unfused_ops;
    int gpu = dev == LS_DEV_CUDA, have_fused = be.dense->attention != NULL;
    double vu = 0, vu_tf = 0, v32 = 0, v32_tf = 0, d32 = 0, d32_tf = 0, d32_train;
    if (!rc && have_fused) rc = time_vit(&unfused, "vits16", B, 224, iters, &vu, &vu_tf);
    if (!rc && gpu) rc = time_vit(&be, "vits16", 32, 224, iters, &v32, &v32_tf);
    if (!rc) rc = time_model(&be, cfg, B, iters, &es, &es_tf, &ts);
    /* The shipped default model's head + decoder (its configuration; random weights), when present. */
    ls_model shipped;
    ls_model_info info;
    int have_shipped = !rc && ls_model_load(&shipped, &info, &be, "models/default.safetensors", &err) == LS_OK;
    if (have_shipped) {
        cfg = shipped.cfg;
        ls_model_free(&shipped);
        rc = time_model(&be, cfg, B, iters, &ds, &ds_tf, &dts);
        if (!rc && gpu) rc = time_model(&be, cfg, 32, iters, &d32, &d32_tf, &d32_train);
    }
    if (rc) return rc;
    printf("networks on %s, batch %d, best of %d\n", ls_device_name(dev), B, iters);
    printf("network vits16_224_slices_per_s %.1f\nnetwork vits16_224_tflops %.2f\n", B / vs, vs_tf);
    if (have_fused)
        printf("network vits16_224_unfused_slices_per_s %.1f\nnetwork vits16_224_unfused_tflops %.2f\n", B / vu, vu_tf);
    if (gpu) printf("network vits16_224_b32_slices_per_s %.1f\nnetwork vits16_224_b32_tflops %.2f\n", 32 / v32, v32_tf);
    printf("network vitb8_224_slices_per_s %.1f\nnetwork vitb8_224_tflops %.2f\n", B / vb, vb_tf);
    printf("network decoder_448_slices_per_s %.1f\nnetwork decoder_448_tflops %.2f\n", B / es, es_tf);
    printf("network train_step_batch8_ms %.1f\n", 1e3 * ts);
    printf("network volume300_ms %.1f\n", 1e3 * 300.0 * (vs + es) / B);
    if (have_shipped) {
        int side = ls_model_out_side(&cfg);
        printf("network decoder_shipped_%d_slices_per_s %.1f\nnetwork decoder_shipped_tflops %.2f\n", side, B / ds, ds_tf);
        printf("network volume300_shipped_ms %.1f\n", 1e3 * 300.0 * (vs + ds) / B);
        if (gpu) printf("network volume300_shipped_b32_ms %.1f\n", 1e3 * 300.0 * (v32 + d32) / 32);
    }
    ls_backend_free(&be);
    return 0;
}
