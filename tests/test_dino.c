/*
 * test_dino.c — DINO pretraining (src/dino.c) against PyTorch (tests/ref/dino_ref.py, float64, fresh random
 * weights and inputs every run, seed printed): the projection head's forward and backward, the DINO loss
 * with centring and temperatures and its gradient, and one full iteration on a tiny ViT (teacher and
 * student forwards, the loss, ls_vit_backward, per-tensor clipping, AdamW, the EMA teacher and the centre).
 *
 * Tolerance: as tests/test_vit_backward.c, |c - r| <= 1e-4 * max(|r|, f) per element with the floor
 * f = 0.1 * max(1, rms(r)) per tensor (test_max_rel_err), r the float64 answer.
 *
 * Without PyTorch: the frozen prototype layer, the schedules, the teacher export (single file and shards)
 * loading through ls_teacher_open, the configuration's JSON round trip, exact resume on a synthetic
 * volume (a run of 2 epochs and a run stopped after 1 and resumed write identical teachers), and a smoke
 * run on two shared scans whose loss falls against a fixed teacher (skipped without ../shared/data).
 */
#include <time.h>

#include "dino.h"
#include "ops.h"
#include "rng.h"
#include "teacher.h"
#include "test.h"
#include "util.h"
#include "volume.h"

static ls_backend be;

static double rms_of(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return n ? sqrt(s / n) : 0;
}

/* Checks c against r with the floor 0.1 * max(1, rms(r)); prints and returns the error. */
static double check_close(const char *what, const float *c, const float *r, size_t n) {
    double rms = rms_of(r, n), e = test_max_rel_err(c, r, n, 0.1 * fmax(1.0, rms));
    printf("    %-34s (rms %.3g): max rel err %.2e\n", what, rms, e);
    if (e > 1e-4)
        for (size_t i = 0; i < n; i++)
            if (fabs((double)c[i] - r[i]) > 1e-4 * fmax(fabs(r[i]), 0.1 * fmax(1.0, rms)))
                printf("      [%zu] %.9g vs %.9g\n", i, c[i], r[i]);
    CHECK(e <= 1e-4, "%s: max rel err %.3e", what, e);
    return e;
}

static float *ref(const char *name, size_t n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s.bin", test_tmpdir(), name);
    return test_read_f32(path, n);
}

static int have_reference = -1;

static int reference(void) {
    if (have_reference < 0) {
        unsigned seed = test_seed();
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s tests/ref/dino_ref.py %s %u", test_python(), test_tmpdir(), seed);
        have_reference = system(cmd) == 0;
    }
    return have_reference;
}

#define NEED_TORCH()                                                                                            \
    do {                                                                                                        \
        if (!test_python_has("torch")) SKIP("%s cannot import torch (install python3-torch or set LS_PYTHON)", \
                                            test_python());                                                     \
        REQUIRE(reference(), "tests/ref/dino_ref.py failed");                                                   \
    } while (0)

TEST(head_matches_pytorch) {
    NEED_TORCH();
    ls_error err = {0};
    ls_dino_head h;
    const int I = 24, Hd = 40, Bn = 12, K = 50, R = 6;
    REQUIRE(ls_dino_head_init(&h, &be, I, Hd, Bn, K, 1, &err) == LS_OK, "%s", err.msg);
    float *p = ref("head.params", h.nparams), *x = ref("head.x", (size_t)R * I), *dl = ref("head.dlogits", (size_t)R * K);
    float *lg = ref("head.logits", (size_t)R * K), *gr = ref("head.grads", h.nparams), *dx = ref("head.dx", (size_t)R * I);
    REQUIRE(p && x && dl && lg && gr && dx, "reference files missing");
    memcpy(h.params, p, h.nparams * sizeof(float));
    ls_arena ar;
    REQUIRE(ls_arena_init(&ar, &be, ls_dino_head_arena_floats(&h, R) * sizeof(float), &err) == LS_OK, "%s", err.msg);
    float *logits = malloc((size_t)R * K * sizeof(float)), *mdx = malloc((size_t)R * I * sizeof(float));
    ls_dino_head_acts a;
    ls_dino_head_forward(&h, &ar, &a, x, R, logits);
    ls_dino_head_backward(&h, &ar, &a, dl, mdx);
    printf("  head %d -> %d -> %d -> %d (L2-normalised) -> %d prototypes, %d rows\n", I, Hd, Hd, Bn, K, R);
    check_close("logits", logits, lg, (size_t)R * K);
    struct {
        const char *name;
        const float *p;
        size_t n;
    } t[] = {{"grad w1", h.w1, (size_t)Hd * I}, {"grad b1", h.b1, (size_t)Hd}, {"grad w2", h.w2, (size_t)Hd * Hd},
             {"grad b2", h.b2, (size_t)Hd},     {"grad w3", h.w3, (size_t)Bn * Hd}, {"grad b3", h.b3, (size_t)Bn},
             {"grad v (weight-normalised)", h.v, (size_t)K * Bn}};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        size_t off = (size_t)(t[i].p - h.params);
        check_close(t[i].name, h.grads + off, gr + off, t[i].n);
    }
    check_close("input gradient", mdx, dx, (size_t)R * I);
    ls_arena_free(&ar);
    ls_dino_head_free(&h);
    free(p), free(x), free(dl), free(lg), free(gr), free(dx), free(logits), free(mdx);
}

TEST(loss_matches_pytorch) {
    NEED_TORCH();
    const int B = 3, ns = 4, nt = 2, K = 50;
    float *s = ref("loss.s", (size_t)ns * B * K), *t = ref("loss.t", (size_t)nt * B * K), *c = ref("loss.c", K);
    float *val = ref("loss.value", 1), *ds = ref("loss.ds", (size_t)ns * B * K), *cn = ref("loss.c_new", K);
    REQUIRE(s && t && c && val && ds && cn, "reference files missing");
    float *mds = malloc((size_t)ns * B * K * sizeof(float)), *ws = malloc((size_t)(ns + nt) * B * K * sizeof(float));
    double l;
    be.loss->dino_loss(&be, s, t, c, B, ns, nt, K, 0.1f, 0.04f, mds, ws, &l);
    float lf = (float)l;
    printf("  loss: %d student crops, %d teacher crops, batch %d, K %d, tau 0.1 / 0.04, centred\n", ns, nt, B, K);
    check_close("loss value", &lf, val, 1);
    check_close("dL/dstudent logits", mds, ds, (size_t)ns * B * K);
    be.loss->center_update(&be, c, t, (size_t)nt * B, K, 0.9f);
    check_close("centre after its update", c, cn, K);
    free(s), free(t), free(c), free(val), free(ds), free(cn), free(mds), free(ws);
}

/* The iteration's configuration (dino_ref.py STEP). */
static void step_config(ls_dino_config *c) {
    ls_dino_config_default(c);
    snprintf(c->arch, sizeof c->arch, "d2w32h2p8g4");
    c->head_hidden = 48, c->head_bottleneck = 16, c->out_dim = 64, c->batch = 2, c->nlocal = 2;
    c->global_size = 32, c->local_size = 16, c->clip_grad = 0.3f, c->student_temp = 0.1f, c->center_momentum = 0.9f;
}

TEST(step_matches_pytorch) {
    NEED_TORCH();
    ls_error err = {0};
    ls_dino_config c;
    step_config(&c);
    ls_dino d;
    REQUIRE(ls_dino_init(&d, &c, &be, &err) == LS_OK, "%s", err.msg);
    size_t nv = d.student.vit.nparams, nh = d.student.head.nparams, K = (size_t)c.out_dim;
    size_t ng = (size_t)2 * c.batch * 3 * c.global_size * c.global_size;
    size_t nl = (size_t)c.nlocal * c.batch * 3 * c.local_size * c.local_size;
    float *sv = ref("step.sv", nv), *sh = ref("step.sh", nh), *tv = ref("step.tv", nv), *th = ref("step.th", nh);
    float *cc = ref("step.c", K), *gl = ref("step.globals", ng), *lo = ref("step.locals", nl), *l0 = ref("step.loss", 1);
    float *sv1 = ref("step.sv1", nv), *sh1 = ref("step.sh1", nh), *tv1 = ref("step.tv1", nv), *th1 = ref("step.th1", nh);
    float *c1 = ref("step.c1", K), *mv = ref("step.mv", nv), *vv = ref("step.vv", nv), *mh = ref("step.mh", nh);
    float *vh = ref("step.vh", nh), *mv0 = ref("step.mv0", nv), *vv0 = ref("step.vv0", nv), *mh0 = ref("step.mh0", nh);
    float *vh0 = ref("step.vh0", nh);
    int ok = mv0 && vv0 && mh0 && vh0 && sv && sh && tv && th && cc && gl && lo && l0 && sv1 && sh1 && tv1 && th1 && c1 && mv && vv && mh && vh;
    CHECK(ok, "reference files missing");
    if (ok) {
        memcpy(d.student.vit.params, sv, nv * sizeof(float)), memcpy(d.student.head.params, sh, nh * sizeof(float));
        memcpy(d.teacher.vit.params, tv, nv * sizeof(float)), memcpy(d.teacher.head.params, th, nh * sizeof(float));
        memcpy(d.center, cc, K * sizeof(float));
        memcpy(d.m_vit, mv0, nv * sizeof(float)), memcpy(d.v_vit, vv0, nv * sizeof(float));
        memcpy(d.m_head, mh0, nh * sizeof(float)), memcpy(d.v_head, vh0, nh * sizeof(float));
        d.step = d.step_last = 9; /* the 10th step: see dino_ref.py */
        ls_dino_sched s = {.lr = 1e-3f, .weight_decay = 0.04f, .momentum = 0.9f, .teacher_temp = 0.04f};
        double loss;
        REQUIRE(ls_dino_step(&d, gl, lo, &s, &loss, &err) == LS_OK, "%s", err.msg);
        float lf = (float)loss;
        printf("  one iteration: ViT %s, head %d/%d/%d, batch %d, 2 global %dx%d + %d local %dx%d crops, clip %g\n",
               c.arch, c.head_hidden, c.head_bottleneck, c.out_dim, c.batch, c.global_size, c.global_size, c.nlocal,
               c.local_size, c.local_size, c.clip_grad);
        check_close("loss", &lf, l0, 1);
        /* Clipped gradients per tensor, by the measure above (floor 0.1 * max(1, rms)), and, since they are
         * of order 1e-2 where that floor is lenient, also against each tensor's own scale (floor 0.1 * rms):
         * there the bound is 1e-3, as the projections of the two L2 normalisations cancel in float32 (the
         * prototype gradient reaches ~1.2e-4 in some runs). */
        float *gr = ref("step.g", nv + nh);
        REQUIRE(gr, "reference gradients missing");
        double ge = 0, gs = 0;
        for (int i = 0, off = 0; i < d.ntensors; off += (int)d.tensors[i].n, i++) {
            const ls_dino_tensor *t = &d.tensors[i];
            double rms = rms_of(gr + off, t->n), e = test_max_rel_err(t->g, gr + off, t->n, 0.1 * fmax(1.0, rms));
            double es = test_max_rel_err(t->g, gr + off, t->n, 0.1 * rms);
            CHECK(e <= 1e-4 && es <= 1e-3, "clipped gradient of tensor %d: max rel err %.3e, to its scale %.3e", i, e, es);
            ge = fmax(ge, e), gs = fmax(gs, es);
        }
        printf("    clipped gradients of %d tensors: max rel err %.2e; each to its own rms: %.2e\n", d.ntensors, ge, gs);
        free(gr);
        check_close("AdamW m of the ViT", d.m_vit, mv, nv);
        check_close("AdamW v of the ViT", d.v_vit, vv, nv);
        check_close("AdamW m of the head", d.m_head, mh, nh);
        check_close("AdamW v of the head", d.v_head, vh, nh);
        check_close("student ViT after AdamW", d.student.vit.params, sv1, nv);
        check_close("student head after AdamW", d.student.head.params, sh1, nh);
        check_close("teacher ViT after the EMA", d.teacher.vit.params, tv1, nv);
        check_close("teacher head after the EMA", d.teacher.head.params, th1, nh);
        check_close("centre", d.center, c1, K);
        /* the update must be visible at this tolerance: the parameters moved by far more than 1e-4 */
        double moved = test_max_rel_err(d.student.vit.params, sv, nv, 0.1);
        CHECK(moved > 1e-3, "the student barely moved (%.2e): the comparison would not see a missing update", moved);
    }
    free(sv), free(sh), free(tv), free(th), free(cc), free(gl), free(lo), free(l0), free(sv1), free(sh1), free(tv1);
    free(th1), free(c1), free(mv), free(vv), free(mh), free(vh), free(mv0), free(vv0), free(mh0), free(vh0);
    ls_dino_free(&d);
}

/* ------------------------------------------------------------ without PyTorch */

static void fill_normal(float *x, size_t n, uint64_t seed) {
    ls_rng r = {seed};
    for (size_t i = 0; i < n; i++) x[i] = (float)ls_rng_normal(&r);
}

/* While frozen, the prototype layer is untouched (weights, moments, step count); everything else moves. */
TEST(frozen_last_layer) {
    ls_error err = {0};
    ls_dino_config c;
    step_config(&c);
    ls_dino d;
    REQUIRE(ls_dino_init(&d, &c, &be, &err) == LS_OK, "%s", err.msg);
    size_t ng = (size_t)2 * c.batch * 3 * c.global_size * c.global_size;
    size_t nl = (size_t)c.nlocal * c.batch * 3 * c.local_size * c.local_size, nv_last = (size_t)c.out_dim * c.head_bottleneck;
    float *gl = malloc(ng * sizeof(float)), *lo = malloc(nl * sizeof(float)), *v0 = malloc(nv_last * sizeof(float));
    float *w0 = malloc(d.student.vit.nparams * sizeof(float));
    fill_normal(gl, ng, 1), fill_normal(lo, nl, 2);
    memcpy(v0, d.student.head.v, nv_last * sizeof(float));
    memcpy(w0, d.student.vit.params, d.student.vit.nparams * sizeof(float));
    ls_dino_sched s = {.lr = 1e-3f, .weight_decay = 0.04f, .momentum = 0.99f, .teacher_temp = 0.04f, .freeze_last_layer = 1};
    double loss;
    REQUIRE(ls_dino_step(&d, gl, lo, &s, &loss, &err) == LS_OK, "%s", err.msg);
    CHECK(!memcmp(v0, d.student.head.v, nv_last * sizeof(float)), "frozen prototypes changed");
    size_t voff = (size_t)(d.student.head.v - d.student.head.params);
    CHECK(rms_of(d.m_head + voff, nv_last) == 0, "frozen prototypes got moments");
    CHECK(d.step == 1 && d.step_last == 0, "steps %d / %d", d.step, d.step_last);
    CHECK(memcmp(w0, d.student.vit.params, d.student.vit.nparams * sizeof(float)), "the ViT did not move");
    s.freeze_last_layer = 0;
    REQUIRE(ls_dino_step(&d, gl, lo, &s, &loss, &err) == LS_OK, "%s", err.msg);
    CHECK(memcmp(v0, d.student.head.v, nv_last * sizeof(float)), "unfrozen prototypes did not move");
    CHECK(d.step == 2 && d.step_last == 1, "steps %d / %d", d.step, d.step_last);
    free(gl), free(lo), free(v0), free(w0);
    ls_dino_free(&d);
}

/* main_dino.py's schedules at their ends. */
TEST(schedules) {
    ls_dino_config c;
    ls_dino_config_default(&c);
    c.epochs = 10, c.warmup_epochs = 2, c.warmup_teacher_temp_epochs = 3, c.warmup_teacher_temp = 0.04f;
    c.teacher_temp = 0.07f, c.freeze_last_layer = 1;
    ls_dino_sched s;
    int n = 5;
    ls_dino_schedule(&c, n, 0, 0, &s);
    CHECK(s.lr == 0 && fabsf(s.weight_decay - c.weight_decay) < 1e-7f && fabsf(s.momentum - c.momentum_teacher) < 1e-7f,
          "start: lr %g wd %g m %g", s.lr, s.weight_decay, s.momentum);
    CHECK(fabsf(s.teacher_temp - 0.04f) < 1e-7f && s.freeze_last_layer, "start: temp %g freeze %d", s.teacher_temp,
          s.freeze_last_layer);
    ls_dino_schedule(&c, n, 1, 4, &s); /* last warm-up iteration: np.linspace ends at the base value */
    CHECK(fabsf(s.lr - c.lr) < 1e-9f && !s.freeze_last_layer, "end of warm-up: lr %g", s.lr);
    ls_dino_schedule(&c, n, 1, 0, &s);
    CHECK(fabsf(s.teacher_temp - 0.055f) < 1e-6f, "temperature warm-up: %g", s.teacher_temp);
    ls_dino_schedule(&c, n, 9, 4, &s);
    double last = c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + cos(M_PI * 39.0 / 40.0));
    CHECK(fabs(s.lr - last) < 1e-9 && s.momentum > 0.9999f && s.momentum <= 1.0f && fabsf(s.teacher_temp - 0.07f) < 1e-7f,
          "end: lr %g (want %g), momentum %.7f, temp %g", s.lr, last, s.momentum, s.teacher_temp);
}

TEST(config_json_round_trip) {
    ls_dino_config a, b;
    ls_error err = {0};
    REQUIRE(ls_dino_config_preset(&a, "gpu", &err) == LS_OK, "%s", err.msg);
    a.seed = 98765432101ull, a.local_scale_max = 0.375f;
    snprintf(a.datasets, sizeof a.datasets, "btcv,chaos_t2");
    char *j = ls_dino_config_json(&a);
    REQUIRE(ls_dino_config_from_json(&b, j, &err) == LS_OK, "%s", err.msg);
    CHECK(!memcmp(&a, &b, sizeof a), "configuration differs after a JSON round trip: %s", j);
    free(j);
    CHECK(ls_dino_config_preset(&b, "tpu", &err) == LS_ERR_INPUT, "unknown preset accepted");
    ls_dino_config_default(&b);
    b.global_size = 100;
    CHECK(ls_dino_config_check(&b, &err) == LS_ERR_INPUT && strstr(err.msg, "patch"), "crop size: %s", err.msg);
    snprintf(b.arch, sizeof b.arch, "d2w30h4p8");
    CHECK(ls_dino_config_check(&b, &err) == LS_ERR_INPUT, "width 30 with 4 heads accepted");
}

/* The exported teacher loads through ls_teacher_open (its arch from the metadata) with the same weights,
 * as one file and as shards. */
static void export_roundtrip(const char *arch, int want_shards) {
    ls_error err = {0};
    ls_dino_config c;
    ls_dino_config_default(&c);
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    c.batch = 1, c.nlocal = 0, c.out_dim = 8, c.head_hidden = 8, c.head_bottleneck = 4, c.global_size = 16;
    c.local_size = 16;
    ls_dino d;
    REQUIRE(ls_dino_init(&d, &c, &be, &err) == LS_OK, "%s", err.msg);
    fill_normal(d.teacher.vit.params, d.teacher.vit.nparams, 3);
    char path[700], first[800];
    snprintf(path, sizeof path, "%s/teacher_%s.safetensors", test_tmpdir(), arch);
    REQUIRE(ls_dino_export_teacher(&d, path, first, sizeof first, &err) == LS_OK, "%s", err.msg);
    int sharded = strstr(first, "-00001-of-") != NULL;
    CHECK(sharded == want_shards, "%s: first file %s", arch, first);
    struct stat st;
    CHECK(stat(first, &st) == 0 && st.st_size < (16 << 20), "%s: %s is %lld bytes", arch, first, (long long)st.st_size);
    ls_teacher t;
    REQUIRE(ls_teacher_open(&t, &be, first, "vits16", 0, 32, &err) == LS_OK, "%s", err.msg);
    CHECK(!strcmp(t.vit.cfg.name, arch) && t.vit.nparams == d.teacher.vit.nparams, "arch %s", t.vit.cfg.name);
    CHECK(!memcmp(t.vit.params, d.teacher.vit.params, d.teacher.vit.nparams * sizeof(float)), "weights differ");
    printf("  %s: %zu weights -> %s (id %s)\n", arch, d.teacher.vit.nparams, strrchr(first, '/') + 1, t.id);
    ls_teacher_close(&t);
    ls_dino_free(&d);
}

TEST(export_loads_as_teacher) {
    export_roundtrip("d2w32h2p8g4", 0);
    export_roundtrip("d3w384h6p16", 1); /* 5.6 M weights, 22 MB: two shards */
}

/* A synthetic CT volume (soft blobs in air) and a one-case manifest, for runs that need no shared data. */
static void synthetic_manifest(char *manifest, size_t n) {
    const int64_t dim[3] = {48, 48, 6};
    double aff[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 3, 0}, {0, 0, 0, 1}};
    ls_volume v;
    memset(&v, 0, sizeof v);
    ls_geom_from_affine(&v.geom, dim, aff);
    v.data = malloc(48 * 48 * 6 * sizeof(float));
    for (int z = 0; z < 6; z++)
        for (int y = 0; y < 48; y++)
            for (int x = 0; x < 48; x++) {
                double r1 = hypot(x - 20 - z, y - 24), r2 = hypot(x - 34, y - 16 - 2 * z);
                v.data[(z * 48 + y) * 48 + x] = (float)(-1000 + 1050 * (r1 < 14) + 150 * (r2 < 6) + 10 * sin(x * y));
            }
    char img[600];
    snprintf(img, sizeof img, "%s/synth.nii.gz", test_tmpdir());
    ls_error err = {0};
    if (ls_volume_write(img, &v, LS_DT_F32, NULL, &err)) printf("  cannot write %s: %s\n", img, err.msg);
    free(v.data);
    snprintf(manifest, n, "%s/synth.csv", test_tmpdir());
    FILE *f = fopen(manifest, "w");
    if (f) fprintf(f, "case,dataset,modality,image,label\nsynth_00,synth,CT,synth.nii.gz,\n"), fclose(f);
}

static void tiny_run_config(ls_dino_config *c) {
    ls_dino_config_default(c);
    snprintf(c->arch, sizeof c->arch, "d2w32h2p8g4");
    c->head_hidden = 32, c->head_bottleneck = 16, c->out_dim = 64, c->batch = 2, c->nlocal = 2, c->global_size = 32;
    c->local_size = 16, c->source_size = 48, c->epochs = 2, c->warmup_epochs = 1, c->slices_per_epoch = 0;
}

static int same_bytes(const char *a, const char *b) {
    char *x, *y;
    size_t nx, ny;
    ls_error err = {0};
    if (ls_read_file(a, (size_t)1 << 30, &x, &nx, &err)) return 0;
    if (ls_read_file(b, (size_t)1 << 30, &y, &ny, &err)) return free(x), 0;
    int same = nx == ny && !memcmp(x, y, nx);
    free(x), free(y);
    return same;
}

/* Every tensor of two state files is the same bit for bit (their logs differ in timings). */
static int same_state_tensors(const char *a, const char *b) {
    ls_st_file fa, fb;
    ls_error err = {0};
    if (ls_st_open(a, &fa, &err)) return 0;
    if (ls_st_open(b, &fb, &err)) return ls_st_close(&fa), 0;
    int same = fa.ntensors == fb.ntensors && fa.ntensors == 9;
    for (int i = 0; same && i < fa.ntensors; i++) {
        const ls_st_tensor *ta = &fa.tensors[i], *tb = ls_st_find(&fb, ta->name);
        same = tb && ta->end - ta->begin == tb->end - tb->begin &&
               !memcmp(fa.buf + fa.data_start + ta->begin, fb.buf + fb.data_start + tb->begin, ta->end - ta->begin);
    }
    const char *ea = ls_st_meta(&fa, "step"), *eb = ls_st_meta(&fb, "step");
    same = same && ea && eb && !strcmp(ea, eb);
    ls_st_close(&fa), ls_st_close(&fb);
    return same;
}

TEST(resume_is_exact) {
    char manifest[700], full[700], half[700], a[800], b[800];
    synthetic_manifest(manifest, sizeof manifest);
    ls_manifest m;
    ls_error err = {0};
    REQUIRE(ls_manifest_read(manifest, &m, &err) == LS_OK, "%s", err.msg);
    ls_dino_config c;
    tiny_run_config(&c);
    snprintf(full, sizeof full, "%s/run_full", test_tmpdir());
    snprintf(half, sizeof half, "%s/run_half", test_tmpdir());
    c.keep_every = 1;
    REQUIRE(ls_dino_pretrain(&c, &m, full, 0, 0, &be, NULL, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_dino_pretrain(&c, &m, half, 0, 1, &be, NULL, &err) == LS_OK, "%s", err.msg);
    snprintf(a, sizeof a, "%s/teacher.safetensors", full);
    snprintf(b, sizeof b, "%s/teacher.safetensors", half);
    CHECK(!same_bytes(a, b), "after 1 of 2 epochs the teacher equals the finished one");
    /* --keep-every 1: each epoch's teacher stays beside the latest. */
    char k1[800], k2[800];
    snprintf(k1, sizeof k1, "%s/teacher-e001.safetensors", full);
    snprintf(k2, sizeof k2, "%s/teacher-e002.safetensors", full);
    CHECK(same_bytes(k1, b) && same_bytes(k2, a), "kept teachers differ from the epochs' teachers");
    ls_dino_config other;
    tiny_run_config(&other);
    other.seed = 77; /* a resume takes its configuration from the state file, not from here */
    REQUIRE(ls_dino_pretrain(&other, &m, half, 1, 0, &be, NULL, &err) == LS_OK, "%s", err.msg);
    CHECK(same_bytes(a, b), "2 epochs and 1 + resumed 1 give different teachers");
    snprintf(a, sizeof a, "%s/state.safetensors", full);
    snprintf(b, sizeof b, "%s/state.safetensors", half);
    CHECK(same_state_tensors(a, b), "2 epochs and 1 + resumed 1 give different states");
    snprintf(a, sizeof a, "%s/nothing_here", test_tmpdir());
    CHECK(ls_dino_pretrain(&c, &m, a, 1, 0, &be, NULL, &err) != LS_OK && strstr(err.msg, "state"),
          "resume without a state: %s", err.msg);
    /* A new run over a finished one is refused, the finished teacher left as it was. */
    snprintf(b, sizeof b, "%s/teacher.safetensors", full);
    snprintf(k1, sizeof k1, "%s/teacher-e002.safetensors", full);
    CHECK(ls_dino_pretrain(&c, &m, full, 0, 0, &be, NULL, &err) == LS_ERR_INPUT && strstr(err.msg, "--resume"),
          "a new run over a finished one: %s", err.msg);
    CHECK(same_bytes(b, k1), "the finished run's teacher changed");
    ls_manifest_free(&m);
}

typedef struct {
    double loss[16];
    int n;
} loss_log;

static void on_epoch(void *ctx, const char *json) {
    loss_log *l = ctx;
    const char *p = strstr(json, "\"loss\":");
    if (p && l->n < 16) l->loss[l->n++] = atof(p + 7);
}

/* A short run on two shared BTCV scans through the whole pipeline (slices, crops, schedules, export), with
 * the teacher and the centre held fixed (momentum 1): the student then distils a fixed target and its loss
 * must fall. With a moving teacher the DINO loss of a run this short is no measure of learning: from the
 * identical random initialisation it starts artificially low and rises towards ln K while centring flattens
 * the teacher's nearly image-independent output (docs/pretraining.md). */
TEST(smoke_run_lowers_loss) {
    const char *dd = test_data_dir();
    if (!dd) SKIP("../shared/data is absent (set LIVSEG_DATA)");
    char manifest[600], out[700];
    snprintf(manifest, sizeof manifest, "%s/manifest.csv", dd);
    ls_manifest m;
    ls_error err = {0};
    REQUIRE(ls_manifest_read(manifest, &m, &err) == LS_OK, "%s", err.msg);
    ls_dino_config c;
    tiny_run_config(&c);
    snprintf(c.datasets, sizeof c.datasets, "btcv");
    c.limit = 2, c.source_size = 64, c.batch = 8, c.slices_per_epoch = 64, c.epochs = 6, c.warmup_epochs = 1;
    c.lr = 2e-3f, c.momentum_teacher = 1, c.center_momentum = 1;
    snprintf(out, sizeof out, "%s/smoke", test_tmpdir());
    loss_log log = {{0}, 0};
    ls_dino_hooks hooks = {&log, NULL, NULL, on_epoch};
    double t0 = ls_now_for_tests();
    REQUIRE(ls_dino_pretrain(&c, &m, out, 0, 0, &be, &hooks, &err) == LS_OK, "%s", err.msg);
    printf("  %d epochs of %d slices on 2 BTCV scans in %.1f s; loss per epoch:", log.n, c.slices_per_epoch,
           ls_now_for_tests() - t0);
    for (int i = 0; i < log.n; i++) printf(" %.4f", log.loss[i]);
    printf("\n");
    CHECK(log.n == c.epochs && log.loss[log.n - 1] < log.loss[0], "the loss did not fall");
    ls_manifest_free(&m);
}

int main(void) {
    ls_error err = {0};
    if (ls_backend_init(&be, LS_DEV_CPU, 2, &err)) {
        printf("backend: %s\n", err.msg);
        return 1;
    }
    RUN(head_matches_pytorch);
    RUN(loss_matches_pytorch);
    RUN(step_matches_pytorch);
    RUN(frozen_last_layer);
    RUN(schedules);
    RUN(config_json_round_trip);
    RUN(export_loads_as_teacher);
    RUN(resume_is_exact);
    RUN(smoke_run_lowers_loss);
    ls_backend_free(&be);
    return test_summary();
}
