/*
 * test_dicom.c — DICOM series through GDCM: the shared series load with real HU and the geometry of
 * the NIfTI masks beside them, and broken directories (empty, no DICOM, two series, a missing slice,
 * a truncated file) give one-line errors.
 */
#include <dirent.h>

#include "livseg.h"
#include "test.h"

static int copy_file(const char *from, const char *to, long max_bytes) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    if (!a || !b) {
        if (a) fclose(a);
        if (b) fclose(b);
        return -1;
    }
    char buf[65536];
    size_t n;
    long total = 0;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) {
        if (max_bytes >= 0 && total + (long)n > max_bytes) n = (size_t)(max_bytes - total);
        fwrite(buf, 1, n, b);
        total += (long)n;
        if (max_bytes >= 0 && total >= max_bytes) break;
    }
    fclose(a);
    fclose(b);
    return 0;
}

/* Sorted file names of a directory. */
static int list_dir(const char *dir, char names[][256], int max) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < max)
        if (de->d_name[0] != '.') snprintf(names[n++], 256, "%s", de->d_name);
    closedir(d);
    qsort(names, (size_t)n, 256, (int (*)(const void *, const void *))strcmp);
    return n;
}

static double aff_diff(const double a[4][4], const double b[4][4]) {
    double m = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) m = fmax(m, fabs(a[i][j] - b[i][j]));
    return m;
}

static void to_ras(const ls_volume *v, ls_volume *r) {
    ls_orient o;
    ls_orient_from_geom(&v->geom, &o);
    ls_error err = {0};
    if (ls_volume_to_ras(v, &o, r, &err) != LS_OK) memset(r, 0, sizeof *r);
}

/* Fraction of mask voxels whose HU is above 0 (soft tissue, not air or fat). */
static double soft_fraction(const ls_volume *ct, const ls_volume *mask, int flip_y) {
    const int64_t *d = ct->geom.dim;
    double in = 0, n = 0;
    for (int64_t k = 0; k < d[2]; k++)
        for (int64_t j = 0; j < d[1]; j++)
            for (int64_t i = 0; i < d[0]; i++) {
                int64_t jm = flip_y ? d[1] - 1 - j : j;
                if (mask->data[i + d[0] * (jm + d[1] * k)] < 0.5f) continue;
                n++;
                in += ct->data[i + d[0] * (j + d[1] * k)] > 0;
            }
    return n > 0 ? in / n : 0;
}

static void check_series(const char *data, const char *series, const char *mask, float lo_expect, double min_good) {
    char dp[600], mp[600];
    snprintf(dp, sizeof dp, "%s/dicom/%s", data, series);
    snprintf(mp, sizeof mp, "%s/dicom/%s", data, mask);
    ls_volume ct, m, rct, rm;
    ls_error err = {0};
    REQUIRE(ls_volume_read(dp, &ct, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_volume_read(mp, &m, &err) == LS_OK, "%s", err.msg);
    CHECK(strcmp(ct.format, "DICOM") == 0, "%s: format %s", series, ct.format);
    float lo = 1e9f, hi = -1e9f;
    for (size_t i = 0; i < ls_volume_nvox(&ct); i++) lo = fminf(lo, ct.data[i]), hi = fmaxf(hi, ct.data[i]);
    CHECK(lo <= lo_expect && hi > 1000 && hi < 4000, "%s: HU range %g..%g", series, lo, hi);
    to_ras(&ct, &rct);
    to_ras(&m, &rm);
    REQUIRE(rct.data && rm.data, "reorientation failed");
    CHECK(memcmp(rct.geom.dim, rm.geom.dim, sizeof rm.geom.dim) == 0, "%s: dims %lldx%lldx%lld vs mask %lldx%lldx%lld",
          series, (long long)rct.geom.dim[0], (long long)rct.geom.dim[1], (long long)rct.geom.dim[2],
          (long long)rm.geom.dim[0], (long long)rm.geom.dim[1], (long long)rm.geom.dim[2]);
    CHECK(aff_diff(rct.geom.affine, rm.geom.affine) < 1e-3, "%s: affine differs from the mask's by %g mm", series,
          aff_diff(rct.geom.affine, rm.geom.affine));
    /* The liver mask must sit on soft tissue, and must not when mirrored front to back. */
    double good = soft_fraction(&rct, &rm, 0), mirrored = soft_fraction(&rct, &rm, 1);
    printf("  %s: %.3f of liver voxels above 0 HU (%.3f when mirrored)\n", series, good, mirrored);
    CHECK(good > min_good && mirrored < good - 0.1, "%s: overlap %.3f, mirrored %.3f", series, good, mirrored);
    ls_volume_free(&ct), ls_volume_free(&m), ls_volume_free(&rct), ls_volume_free(&rm);
}

TEST(shared_series) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    /* The dcmqi mask is hand-drawn on 1 mm slices and includes some of the border: a lower bar. */
    check_series(data, "totalseg_ct_dicom", "totalseg_ct_dicom_liver.nii.gz", -1000, 0.95);
    check_series(data, "dcmqi_ct_3slice", "dcmqi_ct_3slice_liver.nii.gz", -1000, 0.8);
}

static void expect_error(const char *dir, const char *what, const char *needle) {
    ls_volume v;
    ls_error err = {0};
    ls_status s = ls_volume_read(dir, &v, &err);
    CHECK(s == LS_ERR_INPUT, "%s: status %d (%s)", what, s, err.msg);
    CHECK(strchr(err.msg, '\n') == NULL && strstr(err.msg, needle), "%s: message %s", what, err.msg);
    if (s == LS_OK) ls_volume_free(&v);
}

TEST(broken_directories) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    char src[600], d[700], a[2048], b[2048];
    snprintf(src, sizeof src, "%s/dicom/totalseg_ct_dicom", data);
    static char names[64][256];
    int n = list_dir(src, names, 64);
    REQUIRE(n == 20, "expected 20 slices in %s, found %d", src, n);

    snprintf(d, sizeof d, "%s/empty", test_tmpdir());
    mkdir(d, 0755);
    expect_error(d, "empty directory", "no DICOM images");

    snprintf(d, sizeof d, "%s/textonly", test_tmpdir());
    mkdir(d, 0755);
    snprintf(a, sizeof a, "%s/README.txt", d);
    FILE *f = fopen(a, "w");
    fputs("not an image\n", f);
    fclose(f);
    expect_error(d, "no DICOM files", "no DICOM images");

    /* A README beside a good series is ignored. */
    snprintf(d, sizeof d, "%s/withreadme", test_tmpdir());
    mkdir(d, 0755);
    for (int i = 0; i < 3; i++) {
        snprintf(a, sizeof a, "%s/%.255s", src, names[i]);
        snprintf(b, sizeof b, "%s/%.255s", d, names[i]);
        copy_file(a, b, -1);
    }
    snprintf(a, sizeof a, "%s/README.txt", d);
    f = fopen(a, "w");
    fputs("notes\n", f);
    fclose(f);
    {
        ls_volume v;
        ls_error err = {0};
        CHECK(ls_volume_read(d, &v, &err) == LS_OK && v.geom.dim[2] == 3, "series with a README: %s", err.msg);
        if (!err.msg[0]) ls_volume_free(&v);
    }

    /* Slice 10 missing: uneven gaps. */
    snprintf(d, sizeof d, "%s/gap", test_tmpdir());
    mkdir(d, 0755);
    for (int i = 0; i < n; i++) {
        if (i == 10) continue;
        snprintf(a, sizeof a, "%s/%.255s", src, names[i]);
        snprintf(b, sizeof b, "%s/%.255s", d, names[i]);
        copy_file(a, b, -1);
    }
    expect_error(d, "missing slice", "uneven slice spacing");

    /* Two series in one directory. */
    snprintf(d, sizeof d, "%s/mixed", test_tmpdir());
    mkdir(d, 0755);
    for (int i = 0; i < 3; i++) {
        snprintf(a, sizeof a, "%s/%.255s", src, names[i]);
        snprintf(b, sizeof b, "%s/%.255s", d, names[i]);
        copy_file(a, b, -1);
    }
    snprintf(a, sizeof a, "%s/dicom/dcmqi_ct_3slice/01.dcm", data);
    snprintf(b, sizeof b, "%s/other.dcm", d);
    copy_file(a, b, -1);
    expect_error(d, "mixed series", "series");

    /* A truncated slice: named in the error. */
    snprintf(d, sizeof d, "%s/truncated", test_tmpdir());
    mkdir(d, 0755);
    for (int i = 0; i < 3; i++) {
        snprintf(a, sizeof a, "%s/%.255s", src, names[i]);
        snprintf(b, sizeof b, "%s/%.255s", d, names[i]);
        copy_file(a, b, i == 1 ? 4000 : -1);
    }
    expect_error(d, "truncated file", names[1]);

    /* A duplicated slice. */
    snprintf(d, sizeof d, "%s/duplicate", test_tmpdir());
    mkdir(d, 0755);
    for (int i = 0; i < 3; i++) {
        snprintf(a, sizeof a, "%s/%.255s", src, names[i]);
        snprintf(b, sizeof b, "%s/%.255s", d, names[i]);
        copy_file(a, b, -1);
    }
    snprintf(a, sizeof a, "%s/%s", src, names[0]);
    snprintf(b, sizeof b, "%s/copy-of-first", d);
    copy_file(a, b, -1);
    expect_error(d, "duplicate slice", "same position");
}

int main(void) {
    RUN(shared_series);
    RUN(broken_directories);
    return test_summary();
}
