/*
 * test_model.c — one full training step of head + decoder against PyTorch (tests/ref/model_ref.py):
 * forward in training mode with dropout masks, Focal + Tversky + log-IoU + 0.1 entropy + contrastive
 * terms (each slice with itself, slice 0 with slice 1), backward into every parameter, batch-norm running
 * statistics, and the parameters after one RAdam update. Fresh random inputs and initialisation per run.
 *
 * Tolerance: |c - r| <= 1e-4 * max(|r|, floor), r the float64 answer, the floor 5% of the largest |r|
 * of that tensor: float32 through ten layers leaves about 1e-6 of the tensor's scale on every element,
 * which is 1e-4 of an element at 1% of the scale. PyTorch's own float32 logits are measured the same
 * way and printed beside ours (they score alike).
 */
#include <time.h>

#include "model.h"
#include "rng.h"
#include "test.h"

static void write_f32(const char *name, const float *v, size_t n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s.bin", test_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    fwrite(v, sizeof(float), n, f);
    fclose(f);
}

static float *read_ref(const char *name, size_t n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s.bin", test_tmpdir(), name);
    return test_read_f32(path, n);
}

static double compare(const char *what, const float *got, const float *ref, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(ref[i]));
    double e = test_max_rel_err(got, ref, n, 0.05 * m + 1e-30);
    printf("  %-18s max rel err %.2e (scale %.3g)\n", what, e, m);
    return e;
}

#define EXPECT_CLOSE(what, got, ref, n) CHECK(compare(what, got, ref, n) <= 1e-4, "%s beyond 1e-4", what)

/* One step on a configuration whose last `up` decoder stages upsample a G x G grid. Sets *near_kink, having
 * compared nothing, when an input of a ReLU (relative to its tensor's largest value) or a code correlation
 * of the contrastive terms' clamp lies within 1e-6 of the kink at 0: float32 and float64 can branch apart
 * there (a flipped element moved gradients upstream of it by up to 2.4e-2 of the bound's scale on the
 * seeds that failed, at distances down to 1.3e-7), so the caller draws another seed: about 4 in 10 draws
 * have such an input among the ~10^5 ReLU inputs. Without this, 1 run in 20-40 failed. */
static void training_step(int G, int up, unsigned seed, int *near_kink) {
    *near_kink = 0;
    ls_backend be;
    ls_error err = {0};
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 2, &err) == LS_OK, "%s", err.msg);
    ls_model_config cfg = {.feat_dim = 12, .head_hidden = 10, .code_dim = 6, .grid = G, .widths = {8, 8, 6, 6, 4},
                           .skip_width = 5, .up_stages = up, .dropout = 0.2f, .bn_momentum = 0.1f, .bn_eps = 1e-5f};
    printf("  grid %d, %d upsampling stages: seed %u\n", G, up, seed);
    ls_model m;
    REQUIRE(ls_model_init(&m, &be, &cfg, seed, &err) == LS_OK, "%s", err.msg);
    int B = 2, S = ls_model_out_side(&cfg), C = 12, K = 6;
    CHECK(S == G << up, "output side %d, expected %d", S, G << up);
    size_t nf = (size_t)B * C * G * G, ni = (size_t)B * S * S;
    float *feats = malloc(nf * sizeof(float)), *image = malloc(ni * sizeof(float)), *target = malloc(ni * sizeof(float));
    ls_rng rng = {seed ^ 0x5eedull};
    for (size_t i = 0; i < nf; i++) feats[i] = (float)ls_rng_normal(&rng);
    for (size_t i = 0; i < ni; i++) image[i] = (float)ls_rng_uniform(&rng);
    for (int b = 0; b < B; b++) /* a disc of "liver" per image */
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                target[(size_t)b * S * S + y * S + x] =
                    (x - S / 3 - S / 6 * b) * (x - S / 3 - S / 6 * b) + (y - S / 2) * (y - S / 2) < S * S / 20;
    float *extra = malloc((size_t)C * G * G * sizeof(float));
    for (int i = 0; i < C * G * G; i++) extra[i] = (float)ls_rng_normal(&rng);
    float *keep[LS_DEC_STAGES];
    for (int s = 0; s < LS_DEC_STAGES; s++) {
        keep[s] = malloc(sizeof(float) * B * cfg.widths[s]);
        for (int i = 0; i < B * cfg.widths[s]; i++) keep[s][i] = ls_rng_uniform(&rng) < 0.2 ? 0.0f : 1.0f / 0.8f;
        char name[16];
        snprintf(name, sizeof name, "keep%d", s);
        write_f32(name, keep[s], (size_t)B * cfg.widths[s]);
    }
    write_f32("params", m.params, m.nparams);
    write_f32("running", m.running, m.nrunning);
    write_f32("feats", feats, nf);
    write_f32("image", image, ni);
    write_f32("target", target, ni);
    write_f32("extra", extra, (size_t)C * G * G);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s tests/ref/model_ref.py %s 12 10 6 %d 8 8 6 6 4 5 2 %d", test_python(), test_tmpdir(), G,
             up);
    REQUIRE(system(cmd) == 0, "reference failed: %s", cmd);
    float *kink = read_ref("ref_kink", 1);
    REQUIRE(kink, "reference outputs missing");
    *near_kink = *kink < 1e-6f;
    if (*near_kink) printf("  an input is %.1e (relative) from a ReLU's or the clamp's kink: another seed\n", (double)*kink);
    free(kink);
    if (*near_kink) {
        for (int s = 0; s < LS_DEC_STAGES; s++) free(keep[s]);
        free(feats), free(image), free(target), free(extra);
        ls_model_free(&m);
        ls_backend_free(&be);
        return;
    }

    ls_arena arena;
    REQUIRE(ls_arena_init(&arena, &be, ls_model_arena_floats(&cfg, B) * sizeof(float), &err) == LS_OK, "%s", err.msg);
    ls_model_acts a;
    ls_model_forward(&m, &arena, &a, feats, image, B, 1, keep);
    /* Losses: gradients add into dz; the contrastive terms into dcodes. */
    float *dz = calloc(ni, sizeof(float)), *dcodes = calloc((size_t)B * K * G * G, sizeof(float));
    double v[2], loss;
    be.loss->focal(&be, a.logits, target, ni, 2.0f, 0.25f, 1.0f, dz, v), loss = v[0];
    be.loss->tversky(&be, a.logits, target, ni, 0.5f, 0.5f, 1.0f, 1.0f, dz, v), loss += v[0];
    be.loss->log_iou(&be, a.logits, target, ni, 1.0f, 1.0f, dz, v), loss += v[0];
    be.loss->entropy(&be, a.logits, ni, 2.0f, 0.1f, dz, v), loss += 0.1 * v[0];
    float *ws = malloc(ls_cd_workspace(C, K, G * G) * sizeof(float));
    int P = G * G;
    for (int b = 0; b < B; b++) {
        be.loss->cd_term(&be, feats + b * C * P, feats + b * C * P, C, a.codes + b * K * P, a.codes + b * K * P, K, P,
                         0.18f, 1.0f, dcodes + b * K * P, dcodes + b * K * P, v, ws);
        loss += v[0];
    }
    be.loss->cd_term(&be, feats, feats + C * P, C, a.codes, a.codes + K * P, K, P, 0.12f, 1.0f, dcodes, dcodes + K * P,
                     v, ws);
    loss += v[0];
    /* A slice that reaches the loss through the head alone, as training's positives and negatives do. */
    ls_arena harena;
    REQUIRE(ls_arena_init(&harena, &be, ls_model_head_arena_floats(&m, 1) * sizeof(float), &err) == LS_OK, "%s", err.msg);
    ls_model_acts ha;
    ls_model_head_forward(&m, &harena, &ha, extra, 1);
    float *dextra = calloc((size_t)K * P, sizeof(float));
    be.loss->cd_term(&be, feats, extra, C, a.codes, ha.codes, K, P, 0.46f, 0.5f, dcodes, dextra, v, ws);
    loss += 0.5 * v[0];
    ls_model_backward(&m, &arena, &a, dz, dcodes);
    ls_model_head_backward(&m, &harena, &ha, dextra);
    CHECK(harena.peak <= harena.cap, "head arena overflow");

    float *rl = read_ref("ref_logits", ni), *rc = read_ref("ref_codes", (size_t)B * K * P);
    float *rloss = read_ref("ref_loss", 1), *rg = read_ref("ref_grads", m.nparams);
    float *rr = read_ref("ref_running", m.nrunning), *rp = read_ref("ref_params", m.nparams);
    REQUIRE(rl && rc && rloss && rg && rr && rp, "reference outputs missing");
    EXPECT_CLOSE("codes", a.codes, rc, (size_t)B * K * P);
    /* The logits pass five upsampling stages and batch norms: on some draws float32 itself (PyTorch's, same
     * inputs) is half of 1e-4 off the float64 reference, and ours, summing in another order, twice that
     * (seed 1796694666, ASan build: 1.07e-4 against PyTorch float32's 4.85e-5). The bound is 1e-4 or four
     * times PyTorch float32's error, whichever is larger. */
    float *rl32 = read_ref("ref_logits32", ni);
    REQUIRE(rl32, "no float32 reference");
    double e32 = compare("(PyTorch float32)", rl32, rl, ni);
    free(rl32);
    CHECK(compare("logits", a.logits, rl, ni) <= fmax(1e-4, 4 * e32), "logits beyond max(1e-4, 4 x %.2e)", e32);
    float lf = (float)loss;
    EXPECT_CLOSE("loss", &lf, rloss, 1);
    EXPECT_CLOSE("gradients", m.grads, rg, m.nparams);
    EXPECT_CLOSE("running stats", m.running, rr, m.nrunning);
    float *mm = calloc(m.nparams, sizeof(float)), *vv = calloc(m.nparams, sizeof(float));
    be.loss->radam_step(&be, m.params, m.grads, mm, vv, m.nparams, 1, 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-5f);
    EXPECT_CLOSE("params after RAdam", m.params, rp, m.nparams);
    free(mm), free(vv), free(rl), free(rc), free(rloss), free(rg), free(rr), free(rp), free(ws), free(dz), free(dcodes);
    for (int s = 0; s < LS_DEC_STAGES; s++) free(keep[s]);
    free(feats), free(image), free(target), free(extra), free(dextra);
    ls_arena_free(&arena), ls_arena_free(&harena);
    ls_model_free(&m);
    ls_backend_free(&be);
}

/* LS_SEED=N repeats a run (N: the first seed printed for the configuration, minus `up`). */
static void training_step_seeded(int G, int up) {
    const char *env = getenv("LS_SEED");
    unsigned base = (env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL)) + (unsigned)up;
    int near_kink = 1, tries = 0;
    for (; near_kink && tries < 16; tries++) training_step(G, up, base + 7919u * (unsigned)tries, &near_kink);
    CHECK(!near_kink, "sixteen seeds in a row near a kink");
}

TEST(training_step_matches_pytorch) {
    if (!test_python_has("torch")) SKIP("%s cannot import torch (install python3-torch or set LS_PYTHON)", test_python());
    training_step_seeded(2, 5); /* the paper's decoder: every stage upsamples */
    training_step_seeded(4, 3); /* a CPU preset's: the first stages keep the token grid */
}

int main(void) {
    RUN(training_step_matches_pytorch);
    return test_summary();
}
