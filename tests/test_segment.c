/*
 * test_segment.c — the segmentation pipeline's mechanics with untrained models, and the shipped models'
 * accuracy on a held-out BTCV scan: model files round-trip; `livseg segment` writes a mask, a
 * probability map, stats and a preview whose grids equal the input's exactly (NIfTI in two orientations
 * and a DICOM series); model/teacher mismatches, a file teacher found beside its model (or renamed), a
 * missing model and a 2-slice input behave as documented.
 */
#include <math.h>
#include <time.h>

#include "dino.h"
#include "metrics.h"
#include "segment.h"
#include "test.h"

static char livseg[1024];

static int run(const char *args, char *err_out, size_t n) { return test_run_livseg(livseg, args, err_out, n); }

/* A small random model for a teacher of `dim` features at 32x32 input (2x2 tokens, 64x64 decoder output). */
static void make_model_for(const char *path, const char *teacher_id, const char *arch, int dim) {
    ls_backend be;
    ls_error err = {0};
    ls_backend_init(&be, LS_DEV_CPU, 2, &err);
    ls_model_config c;
    ls_model_config_default(&c, dim, 2);
    c.head_hidden = 32, c.code_dim = 8;
    c.widths[0] = 8, c.widths[1] = 8, c.widths[2] = 4, c.widths[3] = 4, c.widths[4] = 4, c.skip_width = 4;
    ls_model m;
    ls_model_init(&m, &be, &c, (uint64_t)time(NULL), &err);
    ls_model_info info = {.input_size = 32};
    snprintf(info.teacher_id, sizeof info.teacher_id, "%s", teacher_id);
    snprintf(info.teacher_arch, sizeof info.teacher_arch, "%s", arch);
    ls_model_save(&m, &info, path, 1, &err);
    ls_model_free(&m);
    ls_backend_free(&be);
}

static void make_model(const char *path, const char *teacher_id) { make_model_for(path, teacher_id, "vits16", 384); }

/* A random d2w32h2p16 teacher written as a pretrained one would be; its id into id[160]. */
static void make_teacher(const char *path, uint64_t seed, char *id) {
    ls_backend be;
    ls_error err = {0};
    ls_backend_init(&be, LS_DEV_CPU, 2, &err);
    ls_dino_config c;
    ls_dino_config_default(&c);
    snprintf(c.arch, sizeof c.arch, "d2w32h2p16");
    c.batch = 1, c.nlocal = 0, c.out_dim = 8, c.head_hidden = 8, c.head_bottleneck = 4, c.global_size = 16;
    c.local_size = 16, c.seed = seed;
    ls_dino d;
    char first[800];
    ls_teacher t;
    if (ls_dino_init(&d, &c, &be, &err) || ls_dino_export_teacher(&d, path, first, sizeof first, &err) ||
        ls_teacher_open(&t, &be, path, "vits16", 0, 32, &err))
        fprintf(stderr, "make_teacher: %s\n", err.msg);
    snprintf(id, 160, "%s", t.id);
    ls_teacher_close(&t);
    ls_dino_free(&d);
    ls_backend_free(&be);
}

TEST(model_file_roundtrip) {
    ls_backend be;
    ls_error err = {0};
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 2, &err) == LS_OK, "%s", err.msg);
    ls_model_config c;
    ls_model_config_default(&c, 24, 2);
    c.head_hidden = 10, c.code_dim = 6;
    ls_model a, b;
    REQUIRE(ls_model_init(&a, &be, &c, 7, &err) == LS_OK, "%s", err.msg);
    ls_model_info info = {.input_size = 32}, back;
    snprintf(info.teacher_id, sizeof info.teacher_id, "vits16:random:seed=3");
    snprintf(info.teacher_arch, sizeof info.teacher_arch, "vits16");
    char path[600];
    snprintf(path, sizeof path, "%s/m32.safetensors", test_tmpdir());
    REQUIRE(ls_model_save(&a, &info, path, 0, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_model_load(&b, &back, &be, path, &err) == LS_OK, "%s", err.msg);
    CHECK(b.nparams == a.nparams && memcmp(a.params, b.params, a.nparams * sizeof(float)) == 0, "F32 weights changed");
    CHECK(memcmp(a.running, b.running, a.nrunning * sizeof(float)) == 0, "running statistics changed");
    CHECK(!strcmp(back.teacher_id, info.teacher_id) && back.input_size == 32 && b.cfg.widths[4] == c.widths[4],
          "metadata changed");
    ls_model_free(&b);
    /* tools/model_to_f16.py: weights as F16 (within its rounding), running statistics and metadata kept. */
    char half[640], cmd[1500];
    snprintf(half, sizeof half, "%s/m16.safetensors", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s tools/model_to_f16.py %s %s > /dev/null", test_python(), path, half);
    if (test_python_has("numpy")) {
        REQUIRE(system(cmd) == 0, "%s failed", cmd);
        REQUIRE(ls_model_load(&b, &back, &be, half, &err) == LS_OK, "%s", err.msg);
        double worst = 0;
        for (size_t i = 0; i < a.nparams; i++)
            worst = fmax(worst, fabs(b.params[i] - a.params[i]) / fmax(fabs(a.params[i]), 1e-4));
        CHECK(worst <= 1.0 / 1024, "F16 weights differ by %.2e relative", worst);
        CHECK(memcmp(a.running, b.running, a.nrunning * sizeof(float)) == 0, "F16 file changed running statistics");
        CHECK(!strcmp(back.teacher_id, info.teacher_id) && b.cfg.up_stages == c.up_stages, "F16 file changed metadata");
        ls_model_free(&b);
    }
    /* Not a model: one line naming the file. */
    snprintf(path, sizeof path, "%s/notmodel.safetensors", test_tmpdir());
    float x = 1;
    ls_st_entry e = {"x", &x, 1, {1}, 0};
    REQUIRE(ls_st_write(path, &e, 1, NULL, 0, NULL, &err) == LS_OK, "%s", err.msg);
    CHECK(ls_model_load(&b, &back, &be, path, &err) == LS_ERR_INPUT && strstr(err.msg, "not a livseg model"), "%s", err.msg);
    ls_model_free(&a);
    ls_backend_free(&be);
}

static void expect_same_header(const char *in, const char *out) {
    ls_volume a, b;
    ls_error err = {0};
    REQUIRE(ls_volume_read(in, &a, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_volume_read(out, &b, &err) == LS_OK, "%s", err.msg);
    CHECK(memcmp(a.geom.dim, b.geom.dim, sizeof a.geom.dim) == 0, "%s: dims differ from %s", out, in);
    double d = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) d = fmax(d, fabs(a.geom.affine[i][j] - b.geom.affine[i][j]));
    CHECK(d < 1e-4, "%s: affine differs by %g", out, d);
    if (strcmp(a.format, "DICOM") != 0)
        CHECK(a.geom.qform_code == b.geom.qform_code && a.geom.sform_code == b.geom.sform_code, "%s: codes differ", out);
    size_t n = ls_volume_nvox(&b), bad = 0;
    for (size_t i = 0; i < n; i++) bad += b.data[i] != 0 && b.data[i] != 1;
    CHECK(bad == 0, "%s: mask is not 0/1", out);
    ls_volume_free(&a), ls_volume_free(&b);
}

TEST(segment_command) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    const char *dir = test_tmpdir();
    char model[600], args[4096], e[4096], out[600];
    snprintf(model, sizeof model, "%s/model.safetensors", dir);
    make_model(model, "vits16:random:seed=0");
    const char *inputs[3] = {"chaos_t2/chaos_t2_01_mr.nii.gz", "totalseg/totalseg_mr_sm_mr.nii.gz", "dicom/dcmqi_ct_3slice"};
    for (int i = 0; i < 3; i++) {
        snprintf(out, sizeof out, "%s/mask%d.nii.gz", dir, i);
        snprintf(args, sizeof args,
                 "segment %s/%s -o %s --model %s --prob %s/prob%d.nii.gz --stats %s/stats%d.json --preview %s/p%d.png -q",
                 data, inputs[i], out, model, dir, i, dir, i, dir, i);
        int rc = run(args, e, sizeof e);
        CHECK(rc == 0, "segment %s: exit %d: %s", inputs[i], rc, e);
        if (rc) continue;
        char in[800];
        snprintf(in, sizeof in, "%s/%s", data, inputs[i]);
        expect_same_header(in, out);
        char stats[700];
        snprintf(stats, sizeof stats, "%s/stats%d.json", dir, i);
        FILE *f = fopen(stats, "r");
        char text[4096] = "";
        if (f) {
            size_t got = fread(text, 1, sizeof text - 1, f);
            text[got] = 0;
            fclose(f);
        }
        CHECK(strstr(text, "liver_volume_ml") && strstr(text, "\"teacher\"") && strstr(text, "seconds"), "stats: %s", text);
    }
    /* A model trained with a file teacher, run without it: one line, exit 2. */
    char model2[600];
    snprintf(model2, sizeof model2, "%s/model_file_teacher.safetensors", dir);
    make_model(model2, "vits16:file=dino.safetensors:0123456789abcdef");
    snprintf(args, sizeof args, "segment %s/chaos_t2/chaos_t2_01_mr.nii.gz -o %s/x.nii.gz --model %s", data, dir, model2);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "--teacher"), "file teacher missing: %s", e);
    /* A file teacher beside its model is found without --teacher; a renamed copy of it is accepted (same
     * weights), another teacher is not. */
    char tdir[700], teacher[800], copy[800], other[800], model3[800], id[160], id_other[160], cmd[2000];
    snprintf(tdir, sizeof tdir, "%s/with_teacher", dir);
    snprintf(teacher, sizeof teacher, "%s/teacher.safetensors", tdir);
    snprintf(copy, sizeof copy, "%s/renamed.safetensors", dir);
    snprintf(other, sizeof other, "%s/other.safetensors", dir);
    snprintf(model3, sizeof model3, "%s/model.safetensors", tdir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s", tdir);
    REQUIRE(system(cmd) == 0, "%s", cmd);
    make_teacher(teacher, 1, id);
    make_teacher(other, 2, id_other);
    snprintf(cmd, sizeof cmd, "cp %s %s", teacher, copy);
    REQUIRE(system(cmd) == 0 && strstr(id, ":file=teacher.safetensors:"), "teacher id %s", id);
    make_model_for(model3, id, "d2w32h2p16", 32);
    const char *vol = "chaos_t2/chaos_t2_01_mr.nii.gz";
    snprintf(args, sizeof args, "segment %s/%s -o %s/y.nii.gz --model %s -q", data, vol, dir, model3);
    CHECK(run(args, e, sizeof e) == 0, "teacher beside the model: %s", e);
    snprintf(args, sizeof args, "segment %s/%s -o %s/y.nii.gz --model %s --teacher %s -q", data, vol, dir, model3, copy);
    CHECK(run(args, e, sizeof e) == 0, "renamed teacher: %s", e);
    snprintf(args, sizeof args, "segment %s/%s -o %s/y.nii.gz --model %s --teacher %s -q", data, vol, dir, model3, other);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "but") && strstr(e, "other.safetensors"), "other teacher: %s", e);
    snprintf(args, sizeof args, "segment %s/chaos_t2/chaos_t2_01_mr.nii.gz -o %s/x.nii.gz --model %s/none.safetensors", data, dir, dir);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "none.safetensors"), "missing model: %s", e);
    /* Never over the input. */
    snprintf(args, sizeof args, "segment %s/mask0.nii.gz -o %s/mask0.nii.gz --model %s -q", dir, dir, model);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "input"), "overwrite input: %s", e);
}

/* The models shipped in models/ (run from the repository root): each segments btcv_29, a BTCV scan held
 * out of their training, with the Dice their experiment measured (0.818 default, 0.828 pretrained
 * teacher, found beside the model); bound 0.78, below which a model would no longer be what
 * docs/experiments.md describes. */
TEST(shipped_models) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA)");
    const char *models[] = {"models/default.safetensors", "models/mixed-pretrained-teacher.safetensors"};
    char ref_path[1024], out[800], args[3000], e[512];
    snprintf(ref_path, sizeof ref_path, "%s/btcv/btcv_29_liver.nii.gz", data);
    for (int i = 0; i < 2; i++) {
        snprintf(out, sizeof out, "%s/shipped_%d.nii.gz", test_tmpdir(), i);
        snprintf(args, sizeof args, "segment %s/btcv/btcv_29_ct.nii.gz -o %s --model %s -q", data, out, models[i]);
        REQUIRE(run(args, e, sizeof e) == 0, "%s: %s", models[i], e);
        ls_volume pred, ref;
        ls_metrics m;
        ls_error err = {0};
        REQUIRE(!ls_volume_read(out, &pred, &err) && !ls_volume_read(ref_path, &ref, &err), "%s", err.msg);
        REQUIRE(!ls_metrics_volumes(&pred, &ref, out, ref_path, &m, &err), "%s", err.msg);
        printf("  %s on btcv_29: Dice %.4f\n", models[i], m.dice);
        CHECK(m.dice > 0.78, "%s: Dice %.4f on btcv_29", models[i], m.dice);
        ls_volume_free(&pred), ls_volume_free(&ref);
    }
}

int main(int argc, char **argv) {
    (void)argc;
    test_livseg_path(argv[0], livseg, sizeof livseg);
    RUN(model_file_roundtrip);
    RUN(segment_command);
    RUN(shipped_models);
    return test_summary();
}
