/*
 * test_metrics.c — Dice, ASSD, MSSD and the paired t-test against SciPy (tests/ref/metrics_ref.py:
 * distance_transform_edt with anisotropic sampling, MedPy's surface definitions, ttest_rel) on fresh
 * random blobby masks, some touching the border; the empty-mask rules; grid mismatches; a real mask.
 *
 * Tolerances: squared EDT within 1e-9 relative, Dice/ASSD/MSSD within 1e-9 relative (both are exact
 * computations in double), p-values within 1e-9 absolute.
 */
#include <time.h>

#include "metrics.h"
#include "test.h"

static void blobs(uint8_t *m, const int64_t d[3], unsigned *s, int count) {
    memset(m, 0, (size_t)(d[0] * d[1] * d[2]));
    for (int b = 0; b < count; b++) {
        *s = *s * 1103515245u + 12345u;
        double cx = (*s >> 8) % d[0], cy = ((*s >> 16) % d[1]), cz = (*s % d[2]);
        *s = *s * 1103515245u + 12345u;
        double rx = 2 + (*s >> 8) % 7, ry = 2 + (*s >> 12) % 6, rz = 1 + (*s >> 20) % 4;
        for (int64_t k = 0; k < d[2]; k++)
            for (int64_t j = 0; j < d[1]; j++)
                for (int64_t i = 0; i < d[0]; i++) {
                    double q = (i - cx) * (i - cx) / (rx * rx) + (j - cy) * (j - cy) / (ry * ry) + (k - cz) * (k - cz) / (rz * rz);
                    if (q <= 1) m[i + d[0] * (j + d[1] * k)] = 1;
                }
    }
}

static void write_raw(const char *name, const void *p, size_t n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-12); }

TEST(against_scipy) {
    if (!test_python_has("scipy.ndimage, scipy.stats")) SKIP("%s has no scipy (set LS_PYTHON)", test_python());
    unsigned seed = test_seed(), s = seed;
    int64_t d[3] = {41, 33, 17};
    double sp[3] = {0.7, 1.3, 3.0};
    size_t n = 41 * 33 * 17;
    uint8_t *pred = malloc(n), *ref = malloc(n);
    double *dt = malloc(n * sizeof(double));
    for (int trial = 0; trial < 3; trial++) {
        blobs(ref, d, &s, 4);
        memcpy(pred, ref, n);
        uint8_t *extra = malloc(n);
        blobs(extra, d, &s, 2); /* prediction = reference plus and minus some blobs */
        for (size_t i = 0; i < n; i++) pred[i] = trial == 1 ? (ref[i] && !extra[i]) || (extra[i] && i % 3) : ref[i] ^ extra[i];
        free(extra);
        double a[9], b[9];
        for (int i = 0; i < 9; i++) {
            s = s * 1103515245u + 12345u;
            a[i] = 0.8 + (s >> 8) % 1000 / 1e4;
            b[i] = a[i] - 0.01 + (s >> 4) % 100 / 3e3;
        }
        write_raw("pred.u8", pred, n), write_raw("ref.u8", ref, n), write_raw("a.f64", a, sizeof a), write_raw("b.f64", b, sizeof b);
        char cmd[1024], out[512] = "";
        snprintf(cmd, sizeof cmd, "%s tests/ref/metrics_ref.py %s 41 33 17 0.7 1.3 3.0", test_python(), test_tmpdir());
        FILE *p = popen(cmd, "r");
        REQUIRE(p && fgets(out, sizeof out, p), "reference failed");
        pclose(p);
        double rd, ra, rh, rp, rt;
        REQUIRE(sscanf(out, "%lf %lf %lf %lf %lf", &rd, &ra, &rh, &rp, &rt) == 5, "reference output: %s", out);
        ls_edt_sq(ref, d, sp, dt);
        char path[700];
        snprintf(path, sizeof path, "%s/edt.f64", test_tmpdir());
        FILE *f = fopen(path, "rb");
        double *want = malloc(n * sizeof(double));
        REQUIRE(f && fread(want, sizeof(double), n, f) == n, "no EDT reference");
        fclose(f);
        double worst = 0;
        for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(dt[i] - want[i]) / fmax(want[i], 1));
        free(want);
        CHECK(worst < 1e-9, "trial %d: squared EDT differs from scipy by %.3g", trial, worst);
        ls_metrics m;
        ls_error err = {0};
        REQUIRE(ls_metrics_masks(pred, ref, d, sp, &m, &err) == LS_OK, "%s", err.msg);
        printf("  trial %d: Dice %.4f ASSD %.3f mm MSSD %.3f mm (scipy %.4f %.3f %.3f)\n", trial, m.dice, m.assd_mm,
               m.mssd_mm, rd, ra, rh);
        CHECK(rel(m.dice, rd) < 1e-9 && rel(m.assd_mm, ra) < 1e-9 && rel(m.mssd_mm, rh) < 1e-9,
              "trial %d: metrics differ from the reference", trial);
        double t, pv = ls_ttest_paired(a, b, 9, &t);
        CHECK(fabs(pv - rp) < 1e-9 && rel(t, rt) < 1e-9, "t-test p %.12g vs %.12g, t %g vs %g", pv, rp, t, rt);
    }
    free(pred), free(ref), free(dt);
}

TEST(empty_masks_and_errors) {
    int64_t d[3] = {5, 5, 5};
    double sp[3] = {1, 1, 1};
    uint8_t a[125] = {0}, b[125] = {0};
    ls_metrics m;
    ls_error err = {0};
    REQUIRE(ls_metrics_masks(a, b, d, sp, &m, &err) == LS_OK, "%s", err.msg);
    CHECK(m.dice == 1 && m.assd_mm == 0 && m.mssd_mm == 0, "both empty");
    b[62] = 1;
    REQUIRE(ls_metrics_masks(a, b, d, sp, &m, &err) == LS_OK, "%s", err.msg);
    CHECK(m.dice == 0 && isnan(m.assd_mm) && isnan(m.mssd_mm) && m.ref_ml == 0.001, "one empty");
    memcpy(a, b, sizeof a);
    REQUIRE(ls_metrics_masks(a, b, d, sp, &m, &err) == LS_OK, "%s", err.msg);
    CHECK(m.dice == 1 && m.assd_mm == 0 && m.diff_ml == 0, "identical");
    /* Grid mismatch between volumes. */
    ls_volume va = {0}, vb = {0};
    double aff[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    int64_t d2[3] = {5, 5, 4};
    ls_geom_from_affine(&va.geom, d, aff);
    ls_geom_from_affine(&vb.geom, d2, aff);
    float fa[125] = {0}, fb[100] = {0};
    va.data = fa, vb.data = fb;
    CHECK(ls_metrics_volumes(&va, &vb, "p.nii.gz", "r.nii.gz", &m, &err) == LS_ERR_INPUT && strstr(err.msg, "p.nii.gz") &&
              strstr(err.msg, "r.nii.gz"), "dims mismatch: %s", err.msg);
    aff[0][3] = 2;
    ls_geom_from_affine(&vb.geom, d, aff);
    vb.data = fa;
    CHECK(ls_metrics_volumes(&va, &vb, "p.nii.gz", "r.nii.gz", &m, &err) == LS_ERR_INPUT && strstr(err.msg, "affine"),
          "affine mismatch: %s", err.msg);
    CHECK(isnan(ls_ttest_paired((double[]){1, 2}, (double[]){1, 2}, 2, NULL)), "equal samples: NaN");
}

TEST(real_mask_shifted) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    char path[600];
    snprintf(path, sizeof path, "%s/btcv/btcv_00_liver.nii.gz", data);
    ls_volume v, w;
    ls_error err = {0};
    REQUIRE(ls_volume_read(path, &v, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_volume_clone(&v, &w, &err) == LS_OK, "%s", err.msg);
    /* Shift the mask by one voxel along the first axis. */
    const int64_t *d = v.geom.dim;
    for (int64_t k = 0; k < d[2]; k++)
        for (int64_t j = 0; j < d[1]; j++)
            for (int64_t i = d[0] - 1; i >= 0; i--) w.data[i + d[0] * (j + d[1] * k)] = i ? v.data[i - 1 + d[0] * (j + d[1] * k)] : 0;
    ls_metrics m;
    double t0 = ls_now_for_tests();
    REQUIRE(ls_metrics_volumes(&w, &v, "shifted", path, &m, &err) == LS_OK, "%s", err.msg);
    double secs = ls_now_for_tests() - t0;
    double sx = fabs(v.geom.affine[0][0]);
    printf("  btcv_00 shifted one voxel (%.3f mm): Dice %.4f ASSD %.3f mm MSSD %.3f mm in %.2f s\n", sx, m.dice,
           m.assd_mm, m.mssd_mm, secs);
    CHECK(m.dice > 0.9 && m.dice < 1, "Dice %g", m.dice);
    CHECK(m.mssd_mm >= sx - 1e-6 && m.assd_mm > 0 && m.assd_mm <= sx + 1e-6, "distances %g %g", m.assd_mm, m.mssd_mm);
    ls_volume_free(&v), ls_volume_free(&w);
}

TEST(mean_sd) {
    /* statistics.mean/stdev of the finite values: [1, 2, 3, 10] -> 4, 4.0825 (stdev = sqrt(50/3)) */
    double v[] = {1, NAN, 2, INFINITY, 3, -INFINITY, 10}, mean, sd;
    CHECK(ls_mean_sd(v, 7, &mean, &sd) == 4, "count of finite values");
    CHECK(fabs(mean - 4) < 1e-12 && fabs(sd - sqrt(50.0 / 3)) < 1e-12, "mean %g sd %g", mean, sd);
    CHECK(ls_mean_sd(v, 1, &mean, &sd) == 1 && mean == 1 && isnan(sd), "one value: mean %g sd %g", mean, sd);
    CHECK(ls_mean_sd(v + 1, 1, &mean, &sd) == 0 && isnan(mean) && isnan(sd), "no finite value: mean %g", mean);
    /* a large common offset: two passes keep the deviation (one pass of sum and sum of squares would not) */
    double w[] = {1e9 + 1, 1e9 + 2, 1e9 + 3};
    CHECK(ls_mean_sd(w, 3, &mean, &sd) == 3 && fabs(sd - 1) < 1e-6, "offset 1e9: sd %.9g", sd);
}

int main(void) {
    RUN(against_scipy);
    RUN(empty_masks_and_errors);
    RUN(real_mask_shifted);
    RUN(mean_sd);
    return test_summary();
}
