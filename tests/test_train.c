/*
 * test_train.c — `livseg train`'s engine (src/train.c) on real BTCV scans, at a small size so that it
 * runs in CI: a random ViT-S/16 teacher at 112x112 (7x7 tokens), a narrow decoder, three training scans
 * and one held out.
 *
 *  - learning: every loss term of the last epoch is below the first epoch's, and the best validation
 *    Dice exceeds 0.45 (chance, calling every pixel of the held-out scan liver, scores ~0.1; a full
 *    run of this size reaches 0.55-0.7 after 10-13 epochs, but one held-out scan makes it noisy);
 *  - determinism and exact resume: a run of N epochs and a run of N/2 epochs resumed to N write
 *    byte-identical models;
 *  - the configuration round-trips through JSON, and bad settings or a missing state are one-line errors.
 */
#include <dirent.h>
#include <math.h>
#include <string.h>

#include "manifest.h"
#include "train.h"
#include "test.h"
#include "util.h"

#define EPOCHS 12

static ls_backend be;

/* The epoch lines of the last run. */
typedef struct {
    char line[EPOCHS][4096];
    int n;
} epoch_log;

static void on_epoch(void *ctx, const char *json) {
    epoch_log *l = ctx;
    if (l->n < EPOCHS) snprintf(l->line[l->n++], sizeof l->line[0], "%s", json);
}

static double field(const char *line, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? atof(p + strlen(pat)) : -1;
}

static void small_config(ls_train_config *c, const char *cache) {
    ls_train_config_default(c);
    snprintf(c->cache_dir, sizeof c->cache_dir, "%s", cache);
    c->limit = 3, c->val_split = 1, c->slices_per_epoch = 96, c->input_size = 112;
    int w[LS_DEC_STAGES] = {16, 16, 16, 8, 8};
    memcpy(c->widths, w, sizeof w);
    c->skip_width = 8, c->up_stages = 4, c->lr = 3e-3f, c->epochs = EPOCHS;
}

static int same_file_bytes(const char *a, const char *b) {
    char *x, *y;
    size_t nx, ny;
    ls_error err = {0};
    if (ls_read_file(a, (size_t)1 << 30, &x, &nx, &err) || ls_read_file(b, (size_t)1 << 30, &y, &ny, &err)) return 0;
    int same = nx == ny && !memcmp(x, y, nx);
    free(x), free(y);
    return same;
}

/* The epoch's slices: without balance a permutation of every slice (its first per_epoch visited); with
 * balance each dataset's share within one of n / nd, every slice of the smaller dataset visited before any
 * repeats (it has fewer slices than its share here), no slice of the larger twice. */
TEST(epoch_order) {
    const int Z[] = {40, 35, 5, 3, 50, 4}, ds[] = {0, 0, 1, 1, 0, 2}; /* 125, 8 and 4 slices */
    int ns = 6, total = 137;
    ls_slice_ref o[137], tmp[137];
    ls_rng r = {42};
    int n = ls_train_epoch_order(Z, ds, ns, 0, 0, &r, o, tmp);
    int seen[6][50] = {{0}};
    CHECK(n == total, "unbalanced, all slices: n = %d", n);
    for (int k = 0; k < n; k++) seen[o[k].scan][o[k].slice]++;
    for (int i = 0; i < ns; i++)
        for (int z = 0; z < Z[i]; z++) CHECK(seen[i][z] == 1, "scan %d slice %d visited %d times", i, z, seen[i][z]);
    CHECK(ls_train_epoch_order(Z, ds, ns, 30, 0, &r, o, tmp) == 30, "unbalanced, 30 per epoch");

    n = ls_train_epoch_order(Z, ds, ns, 30, 1, &r, o, tmp);
    CHECK(n == 30, "balanced: n = %d", n);
    int per[3] = {0}, rep[6][50] = {{0}};
    for (int k = 0; k < n; k++) per[ds[o[k].scan]]++, rep[o[k].scan][o[k].slice]++;
    CHECK(per[0] == 10 && per[1] == 10 && per[2] == 10, "shares %d %d %d of 30", per[0], per[1], per[2]);
    for (int i = 0; i < ns; i++)
        for (int z = 0; z < Z[i]; z++) {
            int lo = ds[i] == 0 ? 0 : ds[i] == 1 ? 1 : 2, hi = ds[i] == 0 ? 1 : ds[i] == 1 ? 2 : 3;
            CHECK(rep[i][z] >= lo && rep[i][z] <= hi, "scan %d slice %d visited %d times", i, z, rep[i][z]);
        }
    n = ls_train_epoch_order(Z, ds, ns, 31, 1, &r, o, tmp);
    memset(per, 0, sizeof per);
    for (int k = 0; k < n; k++) per[ds[o[k].scan]]++;
    CHECK(n == 31 && per[0] == 11 && per[1] == 10 && per[2] == 10, "31: shares %d %d %d", per[0], per[1], per[2]);
}

TEST(config_json_round_trip) {
    ls_train_config a, b;
    ls_error err = {0};
    REQUIRE(ls_train_config_preset(&a, "paper", &err) == LS_OK, "%s", err.msg);
    a.seed = 12345678901ull, a.b_minus = 0.375f, a.augment = 0, a.balance = 1;
    snprintf(a.datasets, sizeof a.datasets, "btcv,chaos_t2");
    char *j = ls_train_config_json(&a);
    REQUIRE(ls_train_config_from_json(&b, j, &err) == LS_OK, "%s", err.msg);
    CHECK(!memcmp(&a, &b, sizeof a), "configuration differs after a JSON round trip: %s", j);
    free(j);
    CHECK(ls_train_config_from_json(&b, "{\"epochs\": \"ten\"}", &err) == LS_ERR_INPUT && strstr(err.msg, "epochs"),
          "wrong type: %s", err.msg);
    CHECK(ls_train_config_from_json(&b, "{\"widths\": [64, 48, 32]}", &err) == LS_ERR_INPUT && strstr(err.msg, "widths"),
          "widths of the wrong length: %s", err.msg);
    CHECK(ls_train_config_from_json(&b, "{\"widths\": [64, 48, 32, 16, 1.5]}", &err) == LS_ERR_INPUT,
          "a fractional width accepted");
    char long_name[300] = "{\"arch\": \"";
    memset(long_name + strlen(long_name), 'x', 200);
    strcat(long_name, "\"}");
    CHECK(ls_train_config_from_json(&b, long_name, &err) == LS_ERR_INPUT && strstr(err.msg, "arch"), "an over-long arch accepted");
    CHECK(ls_train_config_from_json(&b, "[1, 2]", &err) == LS_ERR_INPUT && strstr(err.msg, "not a JSON object"),
          "an array accepted: %s", err.msg);
    CHECK(ls_train_config_from_json(&b, "{\"epochs\": 9}", &err) == LS_OK && b.epochs == 9 && b.batch == a.batch,
          "a partial object: epochs %d, batch %d", b.epochs, b.batch);
    CHECK(ls_train_config_preset(&b, "gpu-huge", &err) == LS_ERR_INPUT, "unknown preset accepted");
}

TEST(bad_settings_are_errors) {
    const char *d = test_data_dir();
    if (!d) SKIP("../shared/data is absent (set LIVSEG_DATA)");
    char path[600], out[700];
    snprintf(path, sizeof path, "%s/manifest.csv", d);
    snprintf(out, sizeof out, "%s/bad", test_tmpdir());
    ls_manifest m;
    ls_error err = {0};
    REQUIRE(ls_manifest_read(path, &m, &err) == LS_OK, "%s", err.msg);
    ls_train_config c;
    small_config(&c, test_tmpdir());
    c.batch = 1;
    CHECK(ls_train(&c, &m, out, 0, &be, NULL, &err) == LS_ERR_INPUT && strstr(err.msg, "batch"), "batch 1: %s", err.msg);
    small_config(&c, test_tmpdir());
    snprintf(c.datasets, sizeof c.datasets, "nosuch");
    CHECK(ls_train(&c, &m, out, 0, &be, NULL, &err) == LS_ERR_INPUT && strstr(err.msg, "nosuch"), "dataset: %s", err.msg);
    small_config(&c, test_tmpdir());
    CHECK(ls_train(&c, &m, out, 1, &be, NULL, &err) != LS_OK && strstr(err.msg, "state.safetensors"),
          "resume without a state: %s", err.msg);
    ls_manifest_free(&m);
}

TEST(learns_and_resumes_exactly) {
    const char *d = test_data_dir();
    if (!d) SKIP("../shared/data is absent (set LIVSEG_DATA)");
    char path[600], a[700], b[700], cache[700];
    snprintf(path, sizeof path, "%s/manifest.csv", d);
    snprintf(a, sizeof a, "%s/run_a", test_tmpdir());
    snprintf(b, sizeof b, "%s/run_b", test_tmpdir());
    snprintf(cache, sizeof cache, "%s/cache", test_tmpdir());
    ls_manifest m;
    ls_error err = {0};
    REQUIRE(ls_manifest_read(path, &m, &err) == LS_OK, "%s", err.msg);
    ls_train_config c;
    small_config(&c, cache);
    epoch_log la = {0}, lb = {0};
    ls_train_hooks ha = {&la, NULL, NULL, on_epoch}, hb = {&lb, NULL, NULL, on_epoch};
    double t0 = ls_now_for_tests();
    REQUIRE(ls_train(&c, &m, a, 0, &be, &ha, &err) == LS_OK, "%s", err.msg);
    printf("  %d epochs in %.1f s\n", EPOCHS, ls_now_for_tests() - t0);
    REQUIRE(la.n == EPOCHS, "%d epoch lines", la.n);
    const char *terms[] = {"focal", "tversky", "log_iou", "entropy", "cd"};
    for (int t = 0; t < 5; t++) {
        double first = field(la.line[0], terms[t]), last = field(la.line[EPOCHS - 1], terms[t]);
        printf("  %-8s %.4f -> %.4f\n", terms[t], first, last);
        CHECK(last < first, "%s did not decrease: %.4f -> %.4f", terms[t], first, last);
    }
    double dice = 0;
    for (int e = 0; e < EPOCHS; e++) dice = fmax(dice, field(la.line[e], "val_dice"));
    printf("  best validation Dice %.3f (last epoch: sim_self %.3f, sim_plus %.3f, sim_minus %.3f)\n", dice,
           field(la.line[EPOCHS - 1], "sim_self"), field(la.line[EPOCHS - 1], "sim_plus"),
           field(la.line[EPOCHS - 1], "sim_minus"));
    CHECK(dice > 0.45, "best validation Dice %.3f is not well above chance (~0.1)", dice);

    /* Half the epochs, then resume to all of them: the same model, byte for byte. */
    c.epochs = EPOCHS / 2;
    REQUIRE(ls_train(&c, &m, b, 0, &be, &hb, &err) == LS_OK, "%s", err.msg);
    c.epochs = EPOCHS;
    c.seed = 999; /* ignored on resume: the state's configuration wins */
    REQUIRE(ls_train(&c, &m, b, 1, &be, &hb, &err) == LS_OK, "%s", err.msg);
    char fa[800], fb[800];
    snprintf(fa, sizeof fa, "%s/last.safetensors", a), snprintf(fb, sizeof fb, "%s/last.safetensors", b);
    CHECK(same_file_bytes(fa, fb), "resumed run's last model differs from the uninterrupted run's");
    snprintf(fa, sizeof fa, "%s/best.safetensors", a), snprintf(fb, sizeof fb, "%s/best.safetensors", b);
    CHECK(same_file_bytes(fa, fb), "resumed run's best model differs from the uninterrupted run's");
    CHECK(lb.n == EPOCHS && fabs(field(lb.line[EPOCHS - 1], "loss") - field(la.line[EPOCHS - 1], "loss")) == 0,
          "resumed run's last epoch loss %.6f vs %.6f", field(lb.line[EPOCHS - 1], "loss"),
          field(la.line[EPOCHS - 1], "loss"));
    /* The model loads as a segmentation model. */
    ls_model model;
    ls_model_info info;
    REQUIRE(ls_model_load(&model, &info, &be, fa, &err) == LS_OK, "%s", err.msg);
    CHECK(model.cfg.up_stages == 4 && ls_model_out_side(&model.cfg) == 112 && strstr(info.teacher_id, "vits16:random"),
          "loaded model: up_stages %d, side %d, teacher %s", model.cfg.up_stages, ls_model_out_side(&model.cfg),
          info.teacher_id);
    ls_model_free(&model);
    ls_manifest_free(&m);
}

/* A synthetic CT of nz slices of 48 x 48 with a bright disc as "liver", and its mask. */
static void write_scan(const char *img, const char *lab, int nz) {
    int64_t dim[3] = {48, 48, nz};
    double aff[4][4] = {{2, 0, 0, 0}, {0, 2, 0, 0}, {0, 0, 5, 0}, {0, 0, 0, 1}};
    ls_volume v = {0}, m = {0};
    ls_geom_from_affine(&v.geom, dim, aff);
    m.geom = v.geom;
    size_t n = (size_t)48 * 48 * nz;
    v.data = calloc(n, sizeof(float)), m.data = calloc(n, sizeof(float));
    for (int k = 0; k < nz; k++)
        for (int j = 0; j < 48; j++)
            for (int i = 0; i < 48; i++) {
                size_t at = ((size_t)k * 48 + j) * 48 + i;
                int in = (i - 16) * (i - 16) + (j - 24) * (j - 24) < 100;
                v.data[at] = in ? 60.0f : -100.0f + (float)((i * 7 + j * 3) % 20);
                m.data[at] = (float)in;
            }
    ls_error err = {0};
    if (ls_volume_write(img, &v, LS_DT_I16, NULL, &err) || ls_volume_write(lab, &m, LS_DT_U8, NULL, &err))
        fprintf(stderr, "write_scan: %s\n", err.msg);
    ls_volume_free(&v), ls_volume_free(&m);
}

/* A manifest of three synthetic scans of nz[i] slices (dataset "tiny"; the last validates) in the test
 * directory, and a training configuration small enough for them; 0 when the manifest reads back. */
static int tiny_setup(const char *name, const int nz[3], ls_manifest *m, ls_train_config *c) {
    const char *dir = test_tmpdir();
    char manifest[600], text[8192], img[700], lab[700];
    snprintf(text, sizeof text, "case,dataset,modality,image,label\n");
    for (int i = 0; i < 3; i++) {
        snprintf(img, sizeof img, "%s/%s%d.nii.gz", dir, name, i);
        snprintf(lab, sizeof lab, "%s/%s%d_liver.nii.gz", dir, name, i);
        write_scan(img, lab, nz[i]);
        size_t l = strlen(text);
        snprintf(text + l, sizeof text - l, "t%d,tiny,CT,%s,%s\n", i, img, lab);
    }
    snprintf(manifest, sizeof manifest, "%s/%s.csv", dir, name);
    FILE *f = fopen(manifest, "w");
    fputs(text, f);
    fclose(f);
    ls_error err = {0};
    ls_status st = ls_manifest_read(manifest, m, &err);
    if (st) fprintf(stderr, "tiny_setup: %s\n", err.msg);
    ls_train_config_default(c);
    snprintf(c->datasets, sizeof c->datasets, "tiny");
    snprintf(c->cache_dir, sizeof c->cache_dir, "%s/%scache", dir, name);
    c->val_split = 1, c->input_size = 32, c->batch = 2, c->epochs = 2, c->up_stages = 2, c->code_dim = 8;
    int w[LS_DEC_STAGES] = {8, 8, 8, 8, 8};
    memcpy(c->widths, w, sizeof w);
    c->skip_width = 4;
    return st;
}

/* Scans of one and two slices: the negative (i + Z/2) mod Z is i itself for Z = 1 and must be skipped;
 * for Z = 2 it is the other slice. Training and validation must run and write a model. */
TEST(one_and_two_slice_scans) {
    char out[700];
    int nz[3] = {1, 2, 1};
    ls_manifest m;
    ls_train_config c;
    REQUIRE(tiny_setup("tiny", nz, &m, &c) == 0 && m.n == 3, "tiny manifest");
    snprintf(out, sizeof out, "%s/tiny_run", test_tmpdir());
    epoch_log l = {0};
    ls_train_hooks h = {&l, NULL, NULL, on_epoch};
    ls_error err = {0};
    REQUIRE(ls_train(&c, &m, out, 0, &be, &h, &err) == LS_OK, "%s", err.msg);
    CHECK(l.n == 2 && field(l.line[1], "val_dice") >= 0 && field(l.line[1], "sim_minus") > -1,
          "epoch lines: %s", l.n ? l.line[l.n - 1] : "(none)");
    ls_manifest_free(&m);
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".safetensors") != NULL;
    if (d) closedir(d);
    return n;
}

/* Teacher variants: their gammas; bad settings refused; with two, every training scan gets two more
 * feature cache entries (validation none), the run is deterministic and differs from one without. */
TEST(teacher_variants) {
    ls_train_config c;
    ls_train_config_default(&c);
    c.teacher_gamma = 2, c.teacher_variants = 2;
    CHECK(ls_train_variant_gamma(&c, 0) == 1 && ls_train_variant_gamma(&c, 1) == 0.5f &&
              ls_train_variant_gamma(&c, 2) == 2 && ls_train_variant_gamma(&c, 3) == 1,
          "V = 2: %g %g %g %g", ls_train_variant_gamma(&c, 0), ls_train_variant_gamma(&c, 1),
          ls_train_variant_gamma(&c, 2), ls_train_variant_gamma(&c, 3));
    c.teacher_variants = 3;
    CHECK(fabsf(ls_train_variant_gamma(&c, 1) - sqrtf(0.5f)) < 1e-6f && fabsf(ls_train_variant_gamma(&c, 2) - sqrtf(2)) < 1e-6f &&
              ls_train_variant_gamma(&c, 3) == 0.5f,
          "V = 3: %g %g %g", ls_train_variant_gamma(&c, 1), ls_train_variant_gamma(&c, 2), ls_train_variant_gamma(&c, 3));

    int nz[3] = {3, 4, 2};
    ls_manifest m;
    REQUIRE(tiny_setup("variants", nz, &m, &c) == 0 && m.n == 3, "variants manifest");
    char out[3][700];
    for (int i = 0; i < 3; i++) snprintf(out[i], sizeof out[i], "%s/variants_run%d", test_tmpdir(), i);
    ls_error err = {0};
    c.teacher_variants = LS_TRAIN_MAX_VARIANTS + 1;
    CHECK(ls_train(&c, &m, out[0], 0, &be, NULL, &err) == LS_ERR_INPUT && strstr(err.msg, "variants"), "%d variants: %s",
          c.teacher_variants, err.msg);
    c.teacher_variants = 2, c.teacher_gamma = 1;
    CHECK(ls_train(&c, &m, out[0], 0, &be, NULL, &err) == LS_ERR_INPUT && strstr(err.msg, "gamma"), "gamma 1: %s",
          err.msg);
    c.teacher_gamma = 1.8f;
    REQUIRE(ls_train(&c, &m, out[0], 0, &be, NULL, &err) == LS_OK, "%s", err.msg);
    int entries = count_entries(c.cache_dir);
    CHECK(entries == 2 * 3 + 1, "%d feature cache entries for 2 training scans x 3 and 1 validation scan", entries);
    REQUIRE(ls_train(&c, &m, out[1], 0, &be, NULL, &err) == LS_OK, "%s", err.msg);
    c.teacher_variants = 0;
    REQUIRE(ls_train(&c, &m, out[2], 0, &be, NULL, &err) == LS_OK, "%s", err.msg);
    char f[3][2200];
    for (int i = 0; i < 3; i++) snprintf(f[i], sizeof f[i], "%s/last.safetensors", out[i]);
    CHECK(same_file_bytes(f[0], f[1]), "two runs with variants differ");
    CHECK(!same_file_bytes(f[0], f[2]), "variants changed nothing");
    ls_manifest_free(&m);
}

/* Every tensor of a safetensors file set to F16 NaN (0x7e00), its header kept: a cache entry gone bad. */
static int poison_f16(const char *path) {
    char *buf;
    size_t n;
    ls_error err = {0};
    if (ls_read_file(path, (size_t)1 << 30, &buf, &n, &err) || n < 8) return 0;
    uint64_t h;
    memcpy(&h, buf, 8);
    for (size_t i = 8 + h; i + 1 < n; i += 2) buf[i] = 0x00, buf[i + 1] = 0x7e;
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(buf, 1, n, f) == n;
    if (f) fclose(f);
    free(buf);
    return ok;
}

/* Output directories: a new run may not replace one (its log and models stay as they were); a resume needs
 * a run; ls_train_continues accepts only the same settings. Settings that are not finite or out of
 * range are refused before a directory is made. A loss that is not finite (features poisoned with NaN)
 * stops the run with one message, and the directory it made is gone again. */
TEST(run_directories_and_divergence) {
    int nz[3] = {3, 4, 2};
    ls_manifest m;
    ls_train_config c;
    REQUIRE(tiny_setup("rundir", nz, &m, &c) == 0 && m.n == 3, "rundir manifest");
    char out[700], other[700], log[800];
    snprintf(out, sizeof out, "%s/rundir_run", test_tmpdir());
    snprintf(other, sizeof other, "%s/rundir_other", test_tmpdir());
    snprintf(log, sizeof log, "%s/train.jsonl", out);
    ls_error err = {0};
    c.epochs = 1;
    REQUIRE(ls_train(&c, &m, out, 0, &be, NULL, &err) == LS_OK, "%s", err.msg);
    char *before, *after;
    size_t nb, na;
    REQUIRE(ls_read_file(log, 1 << 20, &before, &nb, &err) == LS_OK, "%s", err.msg);
    CHECK(ls_train(&c, &m, out, 0, &be, NULL, &err) == LS_ERR_INPUT && strstr(err.msg, "--resume"), "a second run: %s", err.msg);
    REQUIRE(ls_read_file(log, 1 << 20, &after, &na, &err) == LS_OK, "%s", err.msg);
    CHECK(na == nb && !memcmp(before, after, nb), "the first run's log changed");
    free(before), free(after);
    ls_train_config changed = c;
    changed.epochs = 2, changed.lr *= 2;
    CHECK(ls_train_continues(&changed, out, &err) == LS_ERR_INPUT && strstr(err.msg, "(lr 0.001,"),
          "other settings continued: %s", err.msg);
    changed.lr = c.lr;
    CHECK(ls_train_continues(&changed, out, &err) == LS_OK && ls_train(&changed, &m, out, 1, &be, NULL, &err) == LS_OK,
          "the same settings: %s", err.msg);
    changed.epochs = 1; /* 2 are done: an experiment would report a model of more epochs than it says */
    CHECK(ls_train_continues(&changed, out, &err) == LS_ERR_INPUT && strstr(err.msg, "2 epochs"),
          "fewer epochs than done: %s", err.msg);

    struct stat st;
    ls_train_config bad = c;
    bad.w_focal = NAN;
    CHECK(ls_train(&bad, &m, other, 0, &be, NULL, &err) == LS_ERR_INPUT && strstr(err.msg, "focal weight"), "NaN: %s", err.msg);
    bad = c, bad.aug_zoom = 2;
    CHECK(ls_train(&bad, &m, other, 0, &be, NULL, &err) == LS_ERR_INPUT && strstr(err.msg, "zoom"), "zoom 2: %s", err.msg);
    CHECK(stat(other, &st) != 0, "%s made for settings that were refused", other);

    DIR *d = opendir(c.cache_dir);
    char entry[1400];
    int poisoned = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strstr(e->d_name, ".safetensors")) {
            snprintf(entry, sizeof entry, "%s/%s", c.cache_dir, e->d_name);
            poisoned += poison_f16(entry);
        }
    if (d) closedir(d);
    REQUIRE(poisoned == 3, "%d cache entries poisoned", poisoned);
    CHECK(ls_train(&c, &m, other, 0, &be, NULL, &err) == LS_ERR_INPUT && strstr(err.msg, "diverged"), "NaN features: %s",
          err.msg);
    CHECK(stat(other, &st) != 0, "%s left behind by a run that wrote nothing", other);
    ls_manifest_free(&m);
}

int main(void) {
    ls_error err = {0};
    if (ls_backend_init(&be, LS_DEV_CPU, 2, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    RUN(epoch_order);
    RUN(config_json_round_trip);
    RUN(bad_settings_are_errors);
    RUN(one_and_two_slice_scans);
    RUN(run_directories_and_divergence);
    RUN(teacher_variants);
    RUN(learns_and_resumes_exactly);
    ls_backend_free(&be);
    return test_summary();
}
