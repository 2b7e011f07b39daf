/*
 * test_segment.c — the segmentation pipeline's mechanics with untrained models, and the shipped models'
 * accuracy on a held-out BTCV scan: model files round-trip; `livseg segment` writes a mask, a
 * probability map, stats and a preview whose grids equal the input's exactly (NIfTI in two orientations
 * and a DICOM series) and --stats that agree with a count made on the input's grid; model/teacher
 * mismatches, a file teacher found beside its model (or renamed), a missing model and outputs that cannot or
 * must not be written behave as documented; the default model is found from the executable's place.
 */
#include <errno.h>
#include <math.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <nifti2_io.h>

#include "dino.h"
#include "metrics.h"
#include "segment.h"
#include "dicom_synth.h"
#include "test.h"
#include "volume.h"

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
    ls_model_init(&m, &be, &c, test_seed(), &err);
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

/* A small model (24 teacher channels on a 2x2 grid) saved as F32 to path; *a keeps it, *info its metadata. */
static ls_status small_model_file(ls_backend *be, const char *path, ls_model *a, ls_model_info *info, ls_error *err) {
    ls_model_config c;
    ls_model_config_default(&c, 24, 2);
    c.head_hidden = 10, c.code_dim = 6;
    *info = (ls_model_info){.input_size = 32};
    snprintf(info->teacher_id, sizeof info->teacher_id, "vits16:random:seed=3");
    snprintf(info->teacher_arch, sizeof info->teacher_arch, "vits16");
    ls_status st = ls_model_init(a, be, &c, 7, err);
    return st ? st : ls_model_save(a, info, path, 0, err);
}

TEST(model_file_roundtrip) {
    ls_backend be;
    ls_error err = {0};
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 2, &err) == LS_OK, "%s", err.msg);
    ls_model a, b;
    ls_model_info info, back;
    char path[600];
    snprintf(path, sizeof path, "%s/m32.safetensors", test_tmpdir());
    REQUIRE(small_model_file(&be, path, &a, &info, &err) == LS_OK, "%s", err.msg);
    const ls_model_config c = a.cfg;
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

/* Copies model file src to dst with metadata `key` set to `value` (the header's length fixed up). */
static int patch_meta(const char *src, const char *dst, const char *key, const char *value) {
    FILE *f = fopen(src, "rb");
    if (!f) return 0;
    static char buf[1 << 20], out[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    uint64_t hl;
    memcpy(&hl, buf, 8);
    char pat[80];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    char *at = strstr(buf + 8, pat);
    if (!at || at >= buf + 8 + hl) return 0;
    char *v = at + strlen(pat), *end = strchr(v, '"');
    size_t pre = (size_t)(v - buf), post = n - (size_t)(end - buf), vl = strlen(value);
    memcpy(out, buf, pre), memcpy(out + pre, value, vl), memcpy(out + pre + vl, end, post);
    uint64_t nl = hl + vl - (size_t)(end - v);
    memcpy(out, &nl, 8);
    f = fopen(dst, "wb");
    if (!f) return 0;
    fwrite(out, 1, pre + vl + post, f);
    return fclose(f) == 0;
}

/* Model files are untrusted input: a configuration out of bounds, or one asking for more weights than the
 * file holds, is one line naming the file and the field, found before anything of that size is allocated
 * (a width of -5 crashed the loader, and feat_dim 30000 took 10 GB and 22 s to refuse), and so is a random
 * teacher that does not fit the model: peak memory may not grow by what the configurations ask. */
TEST(corrupt_model_metadata) {
    ls_backend be;
    ls_error err = {0};
    REQUIRE(ls_backend_init(&be, LS_DEV_CPU, 2, &err) == LS_OK, "%s", err.msg);
    ls_model a, b;
    ls_model_info info, back;
    char path[600], bad[640];
    snprintf(path, sizeof path, "%s/good.safetensors", test_tmpdir());
    snprintf(bad, sizeof bad, "%s/bad.safetensors", test_tmpdir());
    REQUIRE(small_model_file(&be, path, &a, &info, &err) == LS_OK, "%s", err.msg);
    ls_model_free(&a);
    static const char *const cases[][3] = {
        {"widths", "-5,48,32,16,16", "widths[0] -5 is not within"},
        {"widths", "64,48,32,16,0", "widths[4] 0 is not within"},
        {"widths", "99999999999,48,32,16,16", "not a livseg model"},
        {"widths", "64,48,32,16", "not a livseg model"},
        {"feat_dim", "30000", "feat_dim 30000 is not within"},
        {"grid", "1000000", "not a livseg model"}, /* beyond what a number there may be at all */
        {"grid", "300", "grid 300 is not within"},
        {"up_stages", "6", "up_stages 6 is not within"},
        {"dropout", "nan", "out of range"},
        {"head_hidden", "8192", "tensor 'head1.weight' has 240 elements, expected 196608"},
        {"feat_dim", "8192", "tensor 'head1.weight' has 240 elements, expected 81920"},
    };
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long peak0 = ru.ru_maxrss;
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        REQUIRE(patch_meta(path, bad, cases[k][0], cases[k][1]), "cannot patch %s", cases[k][0]);
        ls_status s = ls_model_load(&b, &back, &be, bad, &err);
        if (s == LS_OK) ls_model_free(&b);
        CHECK(s == LS_ERR_INPUT && strstr(err.msg, bad) && strstr(err.msg, cases[k][2]), "%s=%s: %s", cases[k][0],
              cases[k][1], s ? err.msg : "loaded");
    }
    /* head_hidden and code_dim 8192 ask for 2 x 8192^2 weights (512 MB) that the file does not hold */
    REQUIRE(patch_meta(path, bad, "head_hidden", "8192") && patch_meta(bad, bad, "code_dim", "8192"), "cannot patch");
    CHECK(ls_model_load(&b, &back, &be, bad, &err) == LS_ERR_INPUT && strstr(err.msg, "expected"), "%s", err.msg);
    /* a random teacher of 13 G weights (52 GB) for a model that takes 24 channels: refused before drawing */
    REQUIRE(patch_meta(path, bad, "teacher", "d64w4096h1p1:random:seed=0"), "cannot patch the teacher id");
    REQUIRE(ls_model_load(&b, &back, &be, bad, &err) == LS_OK, "%s", err.msg);
    ls_teacher t;
    ls_status st = ls_segment_teacher(&t, &be, &b, &back, NULL, bad, &err);
    if (st == LS_OK) ls_teacher_close(&t);
    CHECK(st == LS_ERR_INPUT && strstr(err.msg, bad) && strstr(err.msg, "model expects 24 teacher channels"), "%s",
          st ? err.msg : "opened");
    ls_model_free(&b);
    getrusage(RUSAGE_SELF, &ru);
    CHECK(ru.ru_maxrss - peak0 < 100 * 1024, "refusing the files raised the peak memory by %ld MB",
          (ru.ru_maxrss - peak0) / 1024);
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

/* The --stats numbers against a measurement made here, on the input's own grid, from the input and the mask
 * written (segment measures in RAS order, from the volume it read straight into that order). */
static void expect_stats_match(const char *input, const char *mask, const char *stats) {
    ls_volume in, m;
    ls_error err = {0};
    REQUIRE(ls_volume_read(input, &in, &err) == LS_OK && ls_volume_read(mask, &m, &err) == LS_OK, "%s", err.msg);
    json_error_t je;
    json_t *j = json_load_file(stats, 0, &je);
    REQUIRE(j, "%s: %s", stats, je.text);
    const int64_t *d = in.geom.dim;
    const double(*A)[4] = in.geom.affine;
    double cnt = 0, sum = 0, sum2 = 0;
    int64_t lo[3] = {d[0], d[1], d[2]}, hi[3] = {-1, -1, -1};
    for (int64_t k = 0; k < d[2]; k++)
        for (int64_t y = 0; y < d[1]; y++)
            for (int64_t x = 0; x < d[0]; x++) {
                size_t i = (size_t)(x + d[0] * (y + d[1] * k));
                if (m.data[i] < 0.5f) continue;
                cnt++, sum += in.data[i], sum2 += (double)in.data[i] * in.data[i];
                int64_t at[3] = {x, y, k};
                for (int a = 0; a < 3; a++) lo[a] = at[a] < lo[a] ? at[a] : lo[a], hi[a] = at[a] > hi[a] ? at[a] : hi[a];
            }
    double det = A[0][0] * (A[1][1] * A[2][2] - A[1][2] * A[2][1]) - A[0][1] * (A[1][0] * A[2][2] - A[1][2] * A[2][0]) +
                 A[0][2] * (A[1][0] * A[2][1] - A[1][1] * A[2][0]);
    double mean = cnt ? sum / cnt : 0, sd = cnt ? sqrt(fmax(0, sum2 / cnt - mean * mean)) : 0, worst = 0;
    json_t *box = json_object_get(j, "bbox_mm_ras");
    for (int c = 0; cnt && c < 8; c++)
        for (int a = 0; a < 3; a++) {
            double w = A[a][3];
            for (int b = 0; b < 3; b++) w += A[a][b] * (double)((c >> b) & 1 ? hi[b] : lo[b]);
            double bmin = json_real_value(json_array_get(json_object_get(box, "min"), a));
            double bmax = json_real_value(json_array_get(json_object_get(box, "max"), a));
            worst = fmax(worst, fmin(fabs(w - bmin), fabs(w - bmax))); /* each corner on the box's faces */
        }
    double ml = json_real_value(json_object_get(j, "liver_volume_ml"));
    double jm = json_real_value(json_object_get(j, "mean_intensity")), js = json_real_value(json_object_get(j, "std_intensity"));
    CHECK(json_integer_value(json_object_get(j, "liver_voxels")) == (json_int_t)cnt, "%s: %lld voxels, counted %.0f",
          input, (long long)json_integer_value(json_object_get(j, "liver_voxels")), cnt);
    CHECK(fabs(ml - cnt * fabs(det) / 1000) <= 1e-9 * (1 + ml), "%s: %.9g mL, measured %.9g", input, ml, cnt * fabs(det) / 1000);
    CHECK(fabs(jm - mean) <= 1e-6 * (1 + fabs(mean)) && fabs(js - sd) <= 1e-6 * (1 + sd), "%s: mean %g std %g, measured %g %g",
          input, jm, js, mean, sd);
    CHECK(worst < 1e-6, "%s: bounding box corners off its faces by %g mm", input, worst);
    printf("  %s: %.0f liver voxels, --stats checked against them\n", strrchr(input, '/') + 1, cnt);
    json_decref(j);
    ls_volume_free(&in), ls_volume_free(&m);
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
        CHECK(strstr(text, "\"device\": \"cpu\"") && strstr(text, "\"precision\": \"fp32\"") && strstr(text, "\"start\""),
              "stats name the device, its precision and the start-up time: %s", text);
        expect_stats_match(in, out, stats);
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
    /* A compressed DICOM series: its reader process is forked first, decoder processes with it (2 threads),
     * and the volume collected on the read thread while the model loads; same grid as the input. */
    snprintf(out, sizeof out, "%s/dicom_mask.nii.gz", dir);
    snprintf(args, sizeof args, "segment %s/dicom/totalseg_ct_dicom -o %s --model %s --threads 2", data, out, model3);
    CHECK(run(args, e, sizeof e) == 0, "compressed DICOM series: %s", e);
    /* Its read has a progress bar of its own, finished on its own line. */
    CHECK(strstr(e, "read [########################] 20/20 files") && strstr(strstr(e, "20/20 files"), " s      \n"),
          "DICOM read progress: %s", e);
    char series[700];
    snprintf(series, sizeof series, "%s/dicom/totalseg_ct_dicom", data);
    expect_same_header(series, out);
    /* A read that stops at a damaged last file: any bar drawn is ended before the error's line. */
    snprintf(cmd, sizeof cmd, "rm -rf %s/cut && cp -r %s %s/cut && f=$(ls %s/cut/* | tail -n 1) && head -c 3000 %s/$(basename $f) > $f",
             dir, series, dir, dir, series);
    REQUIRE(system(cmd) == 0, "%s", cmd);
    snprintf(args, sizeof args, "segment %s/cut -o %s/z.nii.gz --model %s --threads 2", dir, dir, model3);
    CHECK(run(args, e, sizeof e) == 2, "damaged series: %s", e);
    const char *line = strstr(e, "livseg: ");
    CHECK(line && (line == e || line[-1] == '\n') && strstr(line, "/cut/"), "damaged series, error line: %s", e);
    printf("  damaged series: %s\n", strstr(e, "read [") ? "the bar was drawn before the error" : "no bar drawn (a quick read)");
    /* A study's directory with two series: refused with their list, or the one --series names segmented. */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/study && cp %s/* %s/dicom/dcmqi_ct_3slice/* %s/study/", dir, series, data, dir);
    REQUIRE(system(cmd) == 0, "%s", cmd);
    snprintf(args, sizeof args, "segment %s/study -o %s/z.nii.gz --model %s -q", dir, dir, model3);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "holds 2 series"), "two series: %s", e);
    snprintf(args, sizeof args, "segment %s/study --series 2 -o %s --model %s -q --stats %s/series2.json", dir, out, model3, dir);
    CHECK(run(args, e, sizeof e) == 0, "--series 2: %s", e);
    snprintf(series, sizeof series, "%s/dicom/dcmqi_ct_3slice", data);
    expect_same_header(series, out);
    /* --stats names the series segmented (the record filed with the mask). */
    snprintf(cmd, sizeof cmd, "%s/series2.json", dir);
    json_error_t je;
    json_t *j = json_load_file(cmd, 0, &je), *ds = j ? json_object_get(j, "dicom_series") : NULL;
    CHECK(ds && !strcmp(json_string_value(json_object_get(ds, "number")), "2") &&
              !strcmp(json_string_value(json_object_get(ds, "uid")), "1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1") &&
              !strcmp(json_string_value(json_object_get(ds, "modality")), "CT") &&
              json_integer_value(json_object_get(ds, "images")) == 3 && json_integer_value(json_object_get(ds, "frames")) == 3 &&
              !json_object_get(ds, "echo"),
          "%s: dicom_series %s", cmd, j ? "missing or wrong" : je.text);
    json_decref(j);
    /* ... and the echo, for a series of several. */
    snprintf(cmd, sizeof cmd, "%s/echoes", dir);
    REQUIRE(write_echo_dir(cmd, 4, 2) == 0, "cannot write %s", cmd);
    snprintf(args, sizeof args, "segment %s/echoes --echo 2 -o %s/e.nii.gz --model %s -q --stats %s/echo2.json", dir, dir, model3, dir);
    CHECK(run(args, e, sizeof e) == 0, "--echo 2: %s", e);
    snprintf(cmd, sizeof cmd, "%s/echo2.json", dir);
    j = json_load_file(cmd, 0, &je), ds = j ? json_object_get(j, "dicom_series") : NULL;
    CHECK(ds && !strcmp(json_string_value(json_object_get(ds, "modality")), "MR") &&
              json_integer_value(json_object_get(ds, "echo")) == 2 && json_integer_value(json_object_get(ds, "images")) == 8,
          "%s: dicom_series %s", cmd, j ? "missing or wrong" : je.text);
    json_decref(j);
    /* A directory without DICOM, and a series with a missing model: one line each, exit 2 (the begun read
     * is collected either way). */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/nodicom && echo notes > %s/nodicom/README.txt", dir, dir);
    REQUIRE(system(cmd) == 0, "%s", cmd);
    snprintf(args, sizeof args, "segment %s/nodicom -o %s/z.nii.gz --model %s -q", dir, dir, model3);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "no DICOM images"), "no DICOM: %s", e);
    snprintf(args, sizeof args, "segment %s/dicom/totalseg_ct_dicom -o %s/z.nii.gz --model %s/none.safetensors -q", data,
             dir, dir);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "none.safetensors"), "DICOM input, missing model: %s", e);
    snprintf(args, sizeof args, "segment %s/%s -o %s/y.nii.gz --model %s --teacher %s -q", data, vol, dir, model3, other);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "but") && strstr(e, "other.safetensors"), "other teacher: %s", e);
    snprintf(args, sizeof args, "segment %s/chaos_t2/chaos_t2_01_mr.nii.gz -o %s/x.nii.gz --model %s/none.safetensors", data, dir, dir);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "none.safetensors"), "missing model: %s", e);
    /* Never over the input. */
    snprintf(args, sizeof args, "segment %s/mask0.nii.gz -o %s/mask0.nii.gz --model %s -q", dir, dir, model);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "input"), "overwrite input: %s", e);
    /* Outputs are checked before the work: over the model, one file for two outputs, a directory that
     * does not exist. One line each, and nothing written. */
    char z[700];
    snprintf(z, sizeof z, "%s/z.nii.gz", dir);
    snprintf(args, sizeof args, "segment %s/%s -o %s --stats %s --model %s -q", data, vol, z, model, model);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, ".json") && strstr(e, model), "--stats MODEL: %s", e);
    snprintf(args, sizeof args, "segment %s/%s -o %s --prob %s --model %s -q", data, vol, z, z, model);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "both -o and --prob"), "-o X --prob X: %s", e);
    snprintf(args, sizeof args, "segment %s/%s -o %s --prob %s/../%s/z.nii.gz --model %s -q", data, vol, z, dir,
             strrchr(dir, '/') + 1, model);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "both -o and --prob"), "-o X --prob another name of X: %s", e);
    snprintf(args, sizeof args, "segment %s/%s -o %s --preview %s/no/such/dir/p.png --model %s -q", data, vol, z, dir, model);
    CHECK(run(args, e, sizeof e) == 3 && strstr(e, "p.png") && strstr(e, "cannot create"), "missing directory: %s", e);
    snprintf(args, sizeof args, "segment %s/%s -o %s/z.txt --model %s -q", data, vol, dir, model);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, ".nii.gz"), "-o not NIfTI: %s", e);
    snprintf(args, sizeof args, "segment %s/%s -o %s --stats '' --model %s -q", data, vol, z, model);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "empty"), "--stats '': %s", e);
    snprintf(args, sizeof args, "segment %s/%s -o %s --stats --prob %s/p.nii.gz --model %s -q", data, vol, z, dir, model);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "needs a value"), "--stats --prob: %s", e);
    CHECK(access(z, F_OK) != 0, "%s was written although an output was refused", z);
}

/* The names in a --stats file's review.flags, space-separated ("" for none; "?" for no such field). */
static void review_flags(const char *stats, char *out, size_t n) {
    json_error_t je;
    json_t *j = json_load_file(stats, 0, &je), *f = json_object_get(json_object_get(j, "review"), "flags");
    snprintf(out, n, "%s", json_is_array(f) ? "" : "?");
    for (size_t i = 0; json_is_array(f) && i < json_array_size(f); i++)
        snprintf(out + strlen(out), n - strlen(out), "%s%s", i ? " " : "", json_string_value(json_array_get(f, i)));
    json_decref(j);
}

/* The models shipped in models/ (run from the repository root): each segments btcv_29, a BTCV scan held
 * out of their training, with the Dice their experiment measured (0.818 default, 0.828 pretrained
 * teacher, found beside the model); bound 0.78, below which a model would no longer be what
 * docs/experiments.md describes. Their --stats are checked as segment_command's are, on a real liver, and
 * their review of the mask raises no flag. */
TEST(shipped_models) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA)");
    const char *models[] = {"models/default.safetensors", "models/mixed-pretrained-teacher.safetensors"};
    char ref_path[1024], out[800], args[3000], e[512];
    snprintf(ref_path, sizeof ref_path, "%s/btcv/btcv_29_liver.nii.gz", data);
    for (int i = 0; i < 2; i++) {
        snprintf(out, sizeof out, "%s/shipped_%d.nii.gz", test_tmpdir(), i);
        char in[1024], stats[800];
        snprintf(in, sizeof in, "%s/btcv/btcv_29_ct.nii.gz", data);
        snprintf(stats, sizeof stats, "%s/shipped_%d.json", test_tmpdir(), i);
        snprintf(args, sizeof args, "segment %s -o %s --model %s --stats %s -q", in, out, models[i], stats);
        REQUIRE(run(args, e, sizeof e) == 0, "%s: %s", models[i], e);
        expect_stats_match(in, out, stats);
        char flags[256];
        review_flags(stats, flags, sizeof flags);
        CHECK(!strcmp(flags, ""), "%s: btcv_29's mask raised review flags '%s': %s", models[i], flags, e);
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

/* btcv_29's slices k0..k1-1 (inferior to superior) into path, the direction of its voxel axis `mirror` (0:
 * x, 1: y; -1: none) reversed in the header: a left-right (anterior-posterior) label error, which shows the
 * model a mirrored patient. */
static void write_crop(const ls_volume *v, int64_t k0, int64_t k1, int mirror, const char *path) {
    double A[4][4];
    memcpy(A, v->geom.affine, sizeof A);
    for (int a = 0; a < 3; a++) A[a][3] += A[a][2] * (double)k0;
    for (int a = 0; mirror >= 0 && a < 3; a++) A[a][mirror] *= -1;
    ls_volume c = *v;
    int64_t d[3] = {v->geom.dim[0], v->geom.dim[1], k1 - k0};
    ls_geom_from_affine(&c.geom, d, A);
    c.data = v->data + (size_t)(k0 * d[0] * d[1]);
    ls_error err = {0};
    REQUIRE(ls_volume_write(path, &c, LS_DT_I16, NULL, &err) == LS_OK, "%s", err.msg);
}

/* The review of the mask on a real scan (src/review.c), with the default model: a crop of btcv_29 whose top
 * slice cuts through the liver (slices 60-109) raises cut_superior and nothing else; a crop holding the whole
 * liver (60-139) mirrored left-right by its header raises left (with small: the model finds little liver in
 * a mirrored patient), mirrored anterior-posterior spine_anterior. Each flag is a line on stderr, also under
 * -q, and a name in --stats. (The whole scan raises none: shipped_models.) */
TEST(review_real) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA)");
    char in[1024], crop[800], out[800], stats[800], args[3000], e[4096], flags[256];
    snprintf(in, sizeof in, "%s/btcv/btcv_29_ct.nii.gz", data);
    ls_volume v;
    ls_error err = {0};
    REQUIRE(ls_volume_read(in, &v, &err) == LS_OK, "%s", err.msg);
    REQUIRE(v.geom.dim[2] == 196 && v.geom.affine[2][2] > 0, "btcv_29 is no longer 196 slices from inferior up");
    const char *name[3] = {"cut_superior", "left", "spine_anterior"};
    for (int mirror = 0; mirror < 3; mirror++) {
        snprintf(crop, sizeof crop, "%s/crop%d.nii.gz", test_tmpdir(), mirror);
        snprintf(out, sizeof out, "%s/crop%d_liver.nii.gz", test_tmpdir(), mirror);
        snprintf(stats, sizeof stats, "%s/crop%d.json", test_tmpdir(), mirror);
        write_crop(&v, 60, mirror ? 140 : 110, mirror - 1, crop); /* its liver: slices 68-129 */
        snprintf(args, sizeof args, "segment %s -o %s --stats %s -q", crop, out, stats);
        REQUIRE(run(args, e, sizeof e) == 0, "%s", e);
        review_flags(stats, flags, sizeof flags);
        char line[64];
        snprintf(line, sizeof line, ": check the mask (%s): ", name[mirror]);
        printf("  crop%s: flags '%s'\n", mirror == 0 ? "" : mirror == 1 ? ", mirrored left-right" : ", mirrored front-back",
               flags);
        CHECK(strstr(flags, name[mirror]) && strstr(e, line), "crop%d: flags '%s', stderr: %s", mirror, flags, e);
        if (!mirror) CHECK(!strcmp(flags, name[0]), "the crop raised more than %s: '%s'", name[0], flags);
    }
    ls_volume_free(&v);
}

/* btcv_29's slices k0..k1-1 with the anterior-posterior rows outside j0..j1-1 dropped (crop) or set to
 * -125 HU, the air of its window (blank), into path. */
static void write_rows(const ls_volume *v, int64_t k0, int64_t k1, int64_t j0, int64_t j1, int crop, const char *path) {
    const int64_t *d = v->geom.dim;
    double A[4][4];
    memcpy(A, v->geom.affine, sizeof A);
    int64_t nd[3] = {d[0], crop ? j1 - j0 : d[1], k1 - k0};
    for (int a = 0; a < 3; a++) A[a][3] += A[a][2] * (double)k0 + (crop ? A[a][1] * (double)j0 : 0);
    ls_volume c = *v;
    ls_geom_from_affine(&c.geom, nd, A);
    c.data = malloc((size_t)(nd[0] * nd[1] * nd[2]) * sizeof(float));
    REQUIRE(c.data, "out of memory");
    for (int64_t k = 0; k < nd[2]; k++)
        for (int64_t j = 0; j < nd[1]; j++)
            for (int64_t i = 0; i < nd[0]; i++) {
                int64_t sj = crop ? j + j0 : j;
                float x = v->data[i + d[0] * (sj + d[1] * (k + k0))];
                c.data[i + nd[0] * (j + nd[1] * k)] = sj >= j0 && sj < j1 ? x : -125.0f;
            }
    ls_error err = {0};
    ls_status st = ls_volume_write(path, &c, LS_DT_I16, NULL, &err);
    free(c.data);
    REQUIRE(st == LS_OK, "%s", err.msg);
}

/* A scan of a rectangular field of view is shown to the model in its square, padded (letterboxed), not
 * stretched: btcv_29 (slices 60-139) cut to its middle 155 of 257 anterior-posterior rows gives exactly the
 * mask of the same slices with those rows blanked to air instead, where the model sees the same square.
 * (Stretched, such crops cost the default model 0.03 Dice at 75% and 0.08 at 60%: docs/preprocessing.md.) */
TEST(letterbox_real) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA)");
    char in[1024], path[2][800], out[2][800], args[3000], e[4096];
    snprintf(in, sizeof in, "%s/btcv/btcv_29_ct.nii.gz", data);
    ls_volume v, m[2];
    ls_error err = {0};
    REQUIRE(ls_volume_read(in, &v, &err) == LS_OK, "%s", err.msg);
    REQUIRE(v.geom.dim[1] == 257 && v.geom.affine[1][1] > 0, "btcv_29's rows are no longer 257 from posterior");
    for (int crop = 0; crop < 2; crop++) {
        snprintf(path[crop], sizeof path[crop], "%s/rows%d.nii.gz", test_tmpdir(), crop);
        snprintf(out[crop], sizeof out[crop], "%s/rows%d_liver.nii.gz", test_tmpdir(), crop);
        write_rows(&v, 60, 140, 51, 206, crop, path[crop]);
        snprintf(args, sizeof args, "segment %s -o %s -q", path[crop], out[crop]);
        REQUIRE(run(args, e, sizeof e) == 0, "%s", e);
        REQUIRE(ls_volume_read(out[crop], &m[crop], &err) == LS_OK, "%s", err.msg);
    }
    int64_t differ = 0, liver = 0, outside = 0;
    for (int64_t k = 0; k < 80; k++)
        for (int64_t j = 0; j < 257; j++)
            for (int64_t i = 0; i < 257; i++) {
                float b = m[0].data[i + 257 * (j + 257 * k)];
                if (j < 51 || j >= 206) {
                    outside += b != 0;
                    continue;
                }
                differ += b != m[1].data[i + 257 * ((j - 51) + 155 * k)];
                liver += b != 0;
            }
    printf("  %lld liver voxels, %lld differ\n", (long long)liver, (long long)differ);
    CHECK(liver > 100000 && differ == 0 && outside == 0, "%lld of %lld voxels differ (%lld liver in the blanked rows)",
          (long long)differ, (long long)liver, (long long)outside);
    ls_volume_free(&m[0]), ls_volume_free(&m[1]), ls_volume_free(&v);
}

/* A NIfTI-1 file of nt int16 volumes of d[0] x d[1] x d[2] (3-D when nt is 0), 0.8 x 0.8 x 2.5 mm; gzip-
 * compressed when the name ends in .gz. */
static void write_int16_volumes(const char *path, const int64_t d[3], int nt, const int16_t *vox) {
    nifti_1_header h;
    memset(&h, 0, sizeof h);
    h.sizeof_hdr = 348;
    h.dim[0] = (short)(nt ? 4 : 3);
    for (int i = 1; i <= 7; i++) h.dim[i] = (short)(i <= 3 ? d[i - 1] : i == 4 && nt ? nt : 1);
    h.datatype = NIFTI_TYPE_INT16, h.bitpix = 16;
    h.pixdim[0] = 1, h.pixdim[1] = 0.8f, h.pixdim[2] = 0.8f, h.pixdim[3] = 2.5f;
    h.vox_offset = 352;
    memcpy(h.magic, "n+1", 4);
    char raw[800], cmd[2000];
    snprintf(raw, sizeof raw, "%s.raw", path);
    FILE *f = fopen(raw, "wb");
    REQUIRE(f, "cannot write %s", raw);
    char ext[4] = {0};
    size_t n = (size_t)(d[0] * d[1] * d[2]) * (size_t)(nt ? nt : 1);
    int ok = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(ext, 4, 1, f) == 1 && fwrite(vox, 2, n, f) == n;
    REQUIRE(fclose(f) == 0 && ok, "cannot write %s", raw);
    size_t len = strlen(path);
    if (len > 3 && !strcmp(path + len - 3, ".gz")) snprintf(cmd, sizeof cmd, "gzip -c '%s' > '%s' && rm '%s'", raw, path, raw);
    else snprintf(cmd, sizeof cmd, "mv '%s' '%s'", raw, path);
    REQUIRE(system(cmd) == 0, "%s", cmd);
}

/* A 4-D NIfTI file (a dynamic series): segment and info name --volume without it; with --volume 2 the
 * mask is the one of a 3-D file holding that volume alone, on the spatial grid, and --stats names the
 * volume; a volume past the last, or --volume on a DICOM directory: one line, exit 2. */
TEST(four_d_input) {
    const char *dir = test_tmpdir();
    char model[600], in4[600], in3[600], args[4096], e[4096], out[2][600], text[4096];
    snprintf(model, sizeof model, "%s/model4d.safetensors", dir);
    make_model(model, "vits16:random:seed=0");
    const int64_t d[3] = {48, 40, 6};
    enum { N = 48 * 40 * 6 };
    static int16_t vox[2 * N];
    for (int i = 0; i < 2 * N; i++) vox[i] = (int16_t)(i < N ? (i * 7919) % 1400 - 1000 : ((int64_t)i * 104729) % 1300 - 1000);
    snprintf(in4, sizeof in4, "%s/dynamic.nii.gz", dir);
    snprintf(in3, sizeof in3, "%s/second.nii.gz", dir);
    write_int16_volumes(in4, d, 2, vox);
    write_int16_volumes(in3, d, 0, vox + N);
    snprintf(out[0], sizeof out[0], "%s/m4.nii.gz", dir);
    snprintf(out[1], sizeof out[1], "%s/m3.nii.gz", dir);
    snprintf(args, sizeof args, "segment %s -o %s --model %s -q", in4, out[0], model);
    CHECK(run(args, e, sizeof e) == 2 &&
              strstr(e, "4-D image of 2 volumes; livseg segment and info pick one with --volume 1..2") &&
              strchr(e, '\n') == e + strlen(e) - 1 && access(out[0], F_OK) != 0,
          "4-D without --volume: %s", e);
    snprintf(args, sizeof args, "segment %s -o %s --model %s --volume 3 -q", in4, out[0], model);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "no volume 3: the file holds 2"), "--volume 3 of 2: %s", e);
    snprintf(args, sizeof args, "segment %s -o %s --model %s --volume 1 -q", dir, out[0], model);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "is a directory"), "--volume on a directory: %s", e);
    snprintf(args, sizeof args, "segment %s -o %s --model %s --volume 2 --stats %s/v.json -q", in4, out[0], model, dir);
    REQUIRE(run(args, e, sizeof e) == 0, "--volume 2: %s", e);
    snprintf(args, sizeof args, "segment %s -o %s --model %s -q", in3, out[1], model);
    REQUIRE(run(args, e, sizeof e) == 0, "the 3-D file: %s", e);
    ls_volume m[2];
    ls_error err = {0};
    REQUIRE(!ls_volume_read(out[0], &m[0], &err) && !ls_volume_read(out[1], &m[1], &err), "%s", err.msg);
    CHECK(!memcmp(m[0].geom.dim, d, sizeof m[0].geom.dim) && !memcmp(m[0].data, m[1].data, sizeof(float) * N),
          "volume 2's mask differs from the 3-D file's");
    ls_volume_free(&m[0]), ls_volume_free(&m[1]);
    snprintf(args, sizeof args, "%s/v.json", dir);
    json_error_t je;
    json_t *j = json_load_file(args, 0, &je);
    CHECK(json_integer_value(json_object_get(j, "volume")) == 2, "--stats: no \"volume\": 2 (%s)", je.text);
    json_decref(j);
    snprintf(args, sizeof args, "info %s", in4);
    CHECK(run(args, e, sizeof e) == 0, "info of a 4-D file: %s", e);
    snprintf(args, sizeof args, "%s/stdout.txt", dir);
    FILE *f = fopen(args, "r");
    size_t got = f ? fread(text, 1, sizeof text - 1, f) : 0;
    text[got] = 0;
    if (f) fclose(f);
    CHECK(strstr(text, "volumes      2 of 48 x 40 x 6 voxels"), "info: %s", text);
    snprintf(args, sizeof args, "info --volume 2 %s", in4);
    CHECK(run(args, e, sizeof e) == 0, "info --volume 2: %s", e);
    snprintf(args, sizeof args, "%s/stdout.txt", dir);
    f = fopen(args, "r");
    got = f ? fread(text, 1, sizeof text - 1, f) : 0;
    text[got] = 0;
    if (f) fclose(f);
    CHECK(strstr(text, "dims         48 x 40 x 6 voxels"), "info --volume 2: %s", text);
}

/* Runs `cd DIR && LIVSEG [args]` without $LIVSEG_MODEL; stderr into e. */
static int run_in(const char *dir, const char *exe, const char *args, char *e, size_t n) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cd '%s' && env -u LIVSEG_MODEL '%s'", dir, exe);
    return test_run_livseg(cmd, args, e, n);
}

/* Without --model and $LIVSEG_MODEL, segment takes the model shipped with it, found from the executable's
 * place and not the current directory: the build tree's models/, or an installed PREFIX/share/livseg/models/
 * (the layout `make install` makes); a copy of livseg with neither says where it looked (one line, exit 2). */
TEST(default_model_lookup) {
    const char *dir = test_tmpdir();
    char exe[4096], in[700], inst[700], bin[800], cmd[10000], e[4096];
    REQUIRE(realpath(livseg, exe), "%s: %s", livseg, strerror(errno));
    ls_geom g;
    int64_t d[3] = {48, 40, 2};
    double aff[4][4] = {{-0.8, 0, 0, 0}, {0, 0.8, 0, 0}, {0, 0, 2.5, 0}, {0, 0, 0, 1}};
    ls_geom_from_affine(&g, d, aff);
    static int16_t vox[48 * 40 * 2];
    for (int i = 0; i < 48 * 40 * 2; i++) vox[i] = (int16_t)((i * 7919) % 1400 - 1000);
    ls_error err = {0};
    snprintf(in, sizeof in, "%s/small.nii.gz", dir);
    REQUIRE(ls_nifti_write_raw(in, &g, LS_DT_I16, vox, 0, 0, NULL, NULL, &err) == LS_OK, "%s", err.msg);
    CHECK(run_in(dir, exe, "segment small.nii.gz -o tree.nii.gz -q", e, sizeof e) == 0, "from the build tree: %s", e);
    snprintf(inst, sizeof inst, "%s/inst", dir);
    snprintf(bin, sizeof bin, "%s/bin/livseg", inst);
    snprintf(cmd, sizeof cmd, "mkdir -p %s/bin %s/share/livseg/models && cp '%s' %s && cp models/default.safetensors %s/share/livseg/models/",
             inst, inst, exe, bin, inst);
    REQUIRE(system(cmd) == 0, "%s", cmd);
    CHECK(run_in(dir, bin, "segment small.nii.gz -o inst.nii.gz -q", e, sizeof e) == 0, "installed: %s", e);
    snprintf(cmd, sizeof cmd, "cmp -s %s/tree.nii.gz %s/inst.nii.gz", dir, dir);
    CHECK(system(cmd) == 0, "the installed copy's mask differs from the build tree's");
    snprintf(cmd, sizeof cmd, "rm %s/share/livseg/models/default.safetensors", inst);
    REQUIRE(system(cmd) == 0, "%s", cmd);
    snprintf(cmd, sizeof cmd, "%s/lone.nii.gz", dir);
    int rc = run_in(dir, bin, "segment small.nii.gz -o lone.nii.gz -q", e, sizeof e), lines = 0;
    for (const char *c = e; *c; c++) lines += *c == '\n';
    CHECK(rc == 2 && lines == 1 && strstr(e, "no default model") && strstr(e, "share/livseg/models/default.safetensors") &&
              strstr(e, "--model") && access(cmd, F_OK) != 0,
          "a copy without a model: exit %d, %s", rc, e);
}

int main(int argc, char **argv) {
    (void)argc;
    test_livseg_path(argv[0], livseg, sizeof livseg);
    RUN(model_file_roundtrip);
    RUN(corrupt_model_metadata);
    RUN(segment_command);
    RUN(four_d_input);
    RUN(shipped_models);
    RUN(review_real);
    RUN(letterbox_real);
    RUN(default_model_lookup);
    return test_summary();
}
