/*
 * test_dicom.c — DICOM series through GDCM: the shared series load with real HU and the geometry of
 * the NIfTI masks beside them, and broken directories (empty, no DICOM, two series, a missing slice,
 * a truncated file, damaged headers, displaced slices) give one-line errors naming the directory or file;
 * several decoder processes give what one gives, volume and first error alike; a directory holding
 * several series gives the one asked for, or lists them.
 */
#include <dirent.h>
#include <sys/resource.h>

#include "livseg.h"
#include "dicom_synth.h"
#include "test.h"
#include "volume.h"

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

/* Fraction of mask voxels whose HU lies in [lo, hi]; flip_y mirrors the mask front to back, which
 * must spoil the overlap (so the check can fail on a mirrored volume). */
static double hu_fraction(const ls_volume *ct, const ls_volume *mask, int flip_y, float lo, float hi) {
    const int64_t *d = ct->geom.dim;
    double in = 0, n = 0;
    for (int64_t k = 0; k < d[2]; k++)
        for (int64_t j = 0; j < d[1]; j++)
            for (int64_t i = 0; i < d[0]; i++) {
                int64_t jm = flip_y ? d[1] - 1 - j : j;
                if (mask->data[i + d[0] * (jm + d[1] * k)] < 0.5f) continue;
                n++;
                float hu = ct->data[i + d[0] * (j + d[1] * k)];
                in += hu >= lo && hu <= hi;
            }
    return n > 0 ? in / n : 0;
}

static void check_series(const char *data, const char *series, const char *mask, float lo_expect, double min_good,
                         double min_window) {
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
    ls_volume rr;
    ls_geom src;
    REQUIRE(ls_volume_read_ras(dp, &rr, &src, &err) == LS_OK, "%s", err.msg);
    CHECK(memcmp(rr.data, rct.data, ls_volume_nvox(&ct) * sizeof(float)) == 0 &&
              memcmp(&rr.geom, &rct.geom, sizeof rr.geom) == 0 && memcmp(&src, &ct.geom, sizeof src) == 0,
          "%s: ls_volume_read_ras differs from reading and reorienting", series);
    ls_volume_free(&rr);
    CHECK(memcmp(rct.geom.dim, rm.geom.dim, sizeof rm.geom.dim) == 0, "%s: dims %lldx%lldx%lld vs mask %lldx%lldx%lld",
          series, (long long)rct.geom.dim[0], (long long)rct.geom.dim[1], (long long)rct.geom.dim[2],
          (long long)rm.geom.dim[0], (long long)rm.geom.dim[1], (long long)rm.geom.dim[2]);
    CHECK(aff_diff(rct.geom.affine, rm.geom.affine) < 1e-3, "%s: affine differs from the mask's by %g mm", series,
          aff_diff(rct.geom.affine, rm.geom.affine));
    /* The liver mask must sit on soft tissue, and must not when mirrored front to back. */
    double good = hu_fraction(&rct, &rm, 0, 0, 1e9f), mirrored = hu_fraction(&rct, &rm, 1, 0, 1e9f);
    printf("  %s: %.3f of liver voxels above 0 HU (%.3f when mirrored)\n", series, good, mirrored);
    CHECK(good > min_good && mirrored < good - 0.1, "%s: overlap %.3f, mirrored %.3f", series, good, mirrored);
    double win = hu_fraction(&rct, &rm, 0, -50, 250), win_m = hu_fraction(&rct, &rm, 1, -50, 250);
    printf("  %s: %.3f of liver voxels in [-50, 250] HU (%.3f when mirrored)\n", series, win, win_m);
    CHECK(win > min_window && win_m < win - 0.1, "%s: in-window %.3f, mirrored %.3f", series, win, win_m);
    ls_volume_free(&ct), ls_volume_free(&m), ls_volume_free(&rct), ls_volume_free(&rm);
}

TEST(shared_series) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    /* The dcmqi mask is hand-drawn on 1 mm slices and includes some of the border: a lower bar. */
    check_series(data, "totalseg_ct_dicom", "totalseg_ct_dicom_liver.nii.gz", -1000, 0.95, 0.9);
    check_series(data, "dcmqi_ct_3slice", "dcmqi_ct_3slice_liver.nii.gz", -1000, 0.8, 0.9);
}

static void expect_error(const char *dir, const char *what, const char *needle) {
    ls_volume v;
    ls_error err = {0};
    ls_status s = ls_volume_read(dir, &v, &err);
    printf("  %s -> %s\n", what, err.msg);
    CHECK(s == LS_ERR_INPUT, "%s: status %d (%s)", what, s, err.msg);
    CHECK(strchr(err.msg, '\n') == NULL && strstr(err.msg, needle), "%s: message %s", what, err.msg);
    if (s == LS_OK) ls_volume_free(&v);
}

/* Copies slices first..last (sorted names) of `src` into a fresh directory tmp/sub; its path in `d`. */
static void copy_slices(const char *src, char names[][256], int first, int last, const char *sub, char d[700]) {
    char a[2048], b[2048];
    snprintf(d, 700, "%s/%s", test_tmpdir(), sub);
    mkdir(d, 0755);
    for (int i = first; i <= last; i++) {
        snprintf(a, sizeof a, "%s/%.255s", src, names[i]);
        snprintf(b, sizeof b, "%s/%.255s", d, names[i]);
        copy_file(a, b, -1);
    }
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
    copy_slices(src, names, 0, 2, "withreadme", d);
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
    copy_slices(src, names, 0, 9, "gap", d);
    copy_slices(src, names, 11, n - 1, "gap", d);
    expect_error(d, "missing slice", "uneven slice spacing");

    /* Two series in one directory. */
    copy_slices(src, names, 0, 2, "mixed", d);
    snprintf(a, sizeof a, "%s/dicom/dcmqi_ct_3slice/01.dcm", data);
    snprintf(b, sizeof b, "%s/other.dcm", d);
    copy_file(a, b, -1);
    expect_error(d, "mixed series", "holds 2 series; choose one with --series");

    /* A truncated slice: named in the error. */
    copy_slices(src, names, 0, 2, "truncated", d);
    snprintf(a, sizeof a, "%s/%.255s", src, names[1]);
    snprintf(b, sizeof b, "%s/%.255s", d, names[1]);
    copy_file(a, b, 4000);
    expect_error(d, "truncated file", names[1]);

    /* A duplicated slice. */
    copy_slices(src, names, 0, 2, "duplicate", d);
    snprintf(a, sizeof a, "%s/%s", src, names[0]);
    snprintf(b, sizeof b, "%s/copy-of-first", d);
    copy_file(a, b, -1);
    expect_error(d, "duplicate slice", "same position");
}


/* The whole file in memory (NULL on failure); *n its size. */
static unsigned char *slurp(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)*n);
    if (buf && fread(buf, 1, (size_t)*n, f) != (size_t)*n) free(buf), buf = NULL;
    fclose(f);
    return buf;
}

/* Offset of the first occurrence of `pat` (len bytes) in buf, or -1. */
static long find_bytes(const unsigned char *buf, long n, const char *pat, long len) {
    for (long i = 0; i + len <= n; i++)
        if (memcmp(buf + i, pat, (size_t)len) == 0) return i;
    return -1;
}

/* Moves a slice's ImagePositionPatient (explicit VR little endian "DS") by dx mm along x, keeping the
 * element's length (the new value is padded with spaces, as DS allows). 0 on success. */
static int shift_ipp_x(const char *path, double dx) {
    long n;
    unsigned char *buf = slurp(path, &n);
    if (!buf) return -1;
    long at = find_bytes(buf, n, "\x20\x00\x32\x00" "DS", 6);
    int rc = -1;
    if (at >= 0 && at + 8 < n) {
        long len = buf[at + 6] | (long)buf[at + 7] << 8;
        char old[128] = {0}, fresh[128];
        if (len < (long)sizeof old && at + 8 + len <= n) {
            memcpy(old, buf + at + 8, (size_t)len);
            double x, y, z;
            if (sscanf(old, "%lf\\%lf\\%lf", &x, &y, &z) == 3) {
                /* The most digits that fit the element (1e-7 mm is far below every tolerance). */
                int w = (int)sizeof fresh;
                for (int prec = 14; prec >= 7 && w > len; prec--)
                    w = snprintf(fresh, sizeof fresh, "%.*g\\%.*g\\%.*g", prec, x + dx, prec, y, prec, z);
                if (w <= len) {
                    memset(buf + at + 8, ' ', (size_t)len);
                    memcpy(buf + at + 8, fresh, (size_t)w);
                    rc = spill(path, buf, n);
                }
            }
        }
    }
    free(buf);
    return rc;
}

/* Overwrites `len` bytes at the first occurrence of `pat` + skip with `with`. 0 on success. */
static int patch_after(const char *path, const char *pat, long plen, long skip, const char *with, long len) {
    long n;
    unsigned char *buf = slurp(path, &n);
    if (!buf) return -1;
    long at = find_bytes(buf, n, pat, plen);
    int rc = -1;
    if (at >= 0 && at + skip + len <= n) {
        memcpy(buf + at + skip, with, (size_t)len);
        rc = spill(path, buf, n);
    }
    free(buf);
    return rc;
}

TEST(damaged_headers) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    char src[600], d[700], p[2048];
    snprintf(src, sizeof src, "%s/dicom/totalseg_ct_dicom", data);
    static char names[64][256];
    REQUIRE(list_dir(src, names, 64) == 20, "expected 20 slices in %s", src);

    /* ImageType's 16-bit length turned into 0xfff0: the parser runs off into the pixel data. */
    copy_slices(src, names, 0, 2, "badlength", d);
    snprintf(p, sizeof p, "%s/%s", d, names[1]);
    REQUIRE(patch_after(p, "\x08\x00\x08\x00" "CS", 6, 6, "\xf0\xff", 2) == 0, "cannot patch %s", p);
    expect_error(d, "element length corrupted", names[1]);

    /* 700 bytes of 0xff over the start of the data set. */
    copy_slices(src, names, 0, 2, "garbage", d);
    snprintf(p, sizeof p, "%s/%s", d, names[1]);
    static char ff[700];
    memset(ff, 0xff, sizeof ff);
    REQUIRE(patch_after(p, "\x08\x00\x08\x00" "CS", 6, 0, ff, sizeof ff) == 0, "cannot patch %s", p);
    expect_error(d, "header overwritten", names[1]);

    /* The "DICM" magic damaged: still a DICOM file (meta group follows), so an error, not a silently
     * missing slice (two slices 4 mm apart would otherwise load as a regular series). */
    copy_slices(src, names, 0, 2, "badmagic", d);
    snprintf(p, sizeof p, "%s/%s", d, names[1]);
    REQUIRE(patch_after(p, "DICM", 4, 0, "XXXX", 4) == 0, "cannot patch %s", p);
    expect_error(d, "magic damaged", names[1]);
}

TEST(displaced_slices) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    char src[600], d[700], p[2048];
    snprintf(src, sizeof src, "%s/dicom/totalseg_ct_dicom", data);
    static char names[64][256];
    REQUIRE(list_dir(src, names, 64) == 20, "expected 20 slices in %s", src);

    /* One middle slice 0.5 mm to the side: first and last still line up along the normal. */
    copy_slices(src, names, 0, 4, "zigzag", d);
    snprintf(p, sizeof p, "%s/%s", d, names[2]);
    REQUIRE(shift_ipp_x(p, 0.5) == 0, "cannot patch %s", p);
    expect_error(d, "one displaced slice", "across the slice normal");

    /* A steady sideways drift of 0.3 mm per 2 mm slice: a gantry tilt of about 8.5 degrees. */
    copy_slices(src, names, 0, 4, "tilt", d);
    for (int i = 1; i <= 4; i++) {
        snprintf(p, sizeof p, "%s/%s", d, names[i]);
        REQUIRE(shift_ipp_x(p, 0.3 * i) == 0, "cannot patch %s", p);
    }
    expect_error(d, "gantry tilt", "across the slice normal");

    /* A shift well inside the rounding tolerance is accepted, and lands in the affine's origin. */
    copy_slices(src, names, 0, 4, "rounding", d);
    snprintf(p, sizeof p, "%s/%s", d, names[2]);
    REQUIRE(shift_ipp_x(p, 0.001) == 0, "cannot patch %s", p);
    ls_volume v;
    ls_error err = {0};
    CHECK(ls_volume_read(d, &v, &err) == LS_OK, "1 um rounding rejected: %s", err.msg);
    if (err.code == LS_OK) ls_volume_free(&v);
}

TEST(short_series) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    char src[600], d[700];
    snprintf(src, sizeof src, "%s/dicom/totalseg_ct_dicom", data);
    static char names[64][256];
    REQUIRE(list_dir(src, names, 64) == 20, "expected 20 slices in %s", src);
    ls_volume full, v;
    ls_error err = {0};
    REQUIRE(ls_volume_read_dicom(src, &full, &err) == LS_OK, "%s", err.msg);

    /* One slice: the step comes from SliceThickness (3 mm here; no SpacingBetweenSlices). */
    copy_slices(src, names, 7, 7, "one", d);
    if (ls_volume_read_dicom(d, &v, &err) != LS_OK) {
        CHECK(0, "single slice: %s", err.msg);
    } else {
        CHECK(v.geom.dim[2] == 1, "single slice: %lld slices", (long long)v.geom.dim[2]);
        CHECK(fabs(v.geom.affine[2][2] - 3.0) < 1e-6, "single slice: z step %g, SliceThickness is 3", v.geom.affine[2][2]);
        ls_volume_free(&v);
    }

    /* Two slices: the step is their gap, and the voxels are the full series' slices 5 and 6 (the
     * sorted order does not follow file names necessarily, so compare against the full read). */
    copy_slices(src, names, 5, 6, "two", d);
    if (ls_volume_read_dicom(d, &v, &err) != LS_OK) {
        CHECK(0, "two slices: %s", err.msg);
    } else {
        CHECK(v.geom.dim[2] == 2 && fabs(v.geom.affine[2][2] - full.geom.affine[2][2]) < 1e-6,
              "two slices: %lld slices, z step %g vs %g", (long long)v.geom.dim[2], v.geom.affine[2][2],
              full.geom.affine[2][2]);
        /* Find where v's first slice sits in the full stack by its world z, then compare voxels. */
        double kz = (v.geom.affine[2][3] - full.geom.affine[2][3]) / full.geom.affine[2][2];
        long k0 = lround(kz);
        size_t plane = (size_t)v.geom.dim[0] * (size_t)v.geom.dim[1];
        CHECK(fabs(kz - (double)k0) < 1e-6 && k0 >= 0 && k0 + 2 <= full.geom.dim[2], "two slices: at k=%g", kz);
        if (k0 >= 0 && k0 + 2 <= full.geom.dim[2])
            CHECK(memcmp(v.data, full.data + (size_t)k0 * plane, 2 * plane * sizeof(float)) == 0,
                  "two slices: voxels differ from slices %ld..%ld of the full series", k0, k0 + 1);
        ls_volume_free(&v);
    }
    ls_volume_free(&full);
}

/* A 634-byte synthetic slice (the fuzz seed) whose ImagePositionPatient is rewritten as an OB element
 * declaring 0xfffffff0 bytes. GDCM allocates and zero-fills what a header declares (4.2 GB, 7 s for
 * this file when unguarded); the reader must refuse it cheaply. The largest child's RSS tells. */
TEST(huge_declared_length) {
    char d[700], p[800];
    long n;
    unsigned char *buf = slurp("fuzz/corpus/dicom/slice0.dcm", &n);
    if (!buf) SKIP("fuzz/corpus/dicom/slice0.dcm not found (run from the repository root)");
    long at = find_bytes(buf, n, "\x20\x00\x32\x00" "DS", 6);
    if (at < 0 || at + 12 > n) {
        free(buf);
        REQUIRE(0, "seed slice has no ImagePositionPatient");
    }
    memcpy(buf + at + 4, "OB\x00\x00\xf0\xff\xff\xff", 8);
    snprintf(d, sizeof d, "%s/huge", test_tmpdir());
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/huge.dcm", d);
    int w = spill(p, buf, n);
    free(buf);
    REQUIRE(w == 0, "cannot write %s", p);
    double t0 = ls_now_for_tests();
    expect_error(d, "element declaring 4 GB", "huge.dcm");
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    printf("  huge declared length: %.2f s, largest reader child %ld MB\n", ls_now_for_tests() - t0, ru.ru_maxrss / 1024);
    CHECK(ru.ru_maxrss < 1024 * 1024, "reader child peaked at %ld MB", ru.ru_maxrss / 1024);
}

/* The synthetic seed pair (two 8x8 CT slices, rescale -1024/1) copied into tmp/sub with each file
 * passed through `patch` (may be NULL); 0 on success. */
static int seed_variant(const char *sub, int (*patch)(unsigned char *, long, int), char d[700]) {
    snprintf(d, 700, "%s/%s", test_tmpdir(), sub);
    mkdir(d, 0755);
    for (int i = 0; i < 2; i++) {
        char from[256], to[800];
        long n;
        snprintf(from, sizeof from, "fuzz/corpus/dicom/slice%d.dcm", i);
        unsigned char *buf = slurp(from, &n);
        if (!buf) return -1;
        snprintf(to, sizeof to, "%s/slice%d.dcm", d, i);
        int rc = (patch && patch(buf, n, i) != 0) || spill(to, buf, n) != 0 ? -1 : 0;
        free(buf);
        if (rc) return -1;
    }
    return 0;
}

static int replace_once(unsigned char *buf, long n, const char *from, const char *to, long len) {
    long at = find_bytes(buf, n, from, len);
    if (at < 0) return -1;
    memcpy(buf + at, to, (size_t)len);
    return 0;
}

/* Modality MR, and the rescale tags renamed to (0028,1054/1055), which GDCM does not read as rescale. */
static int to_mr_without_rescale(unsigned char *buf, long n, int i) {
    (void)i;
    return replace_once(buf, n, "\x08\x00\x60\x00" "CS\x02\x00" "CT", "\x08\x00\x60\x00" "CS\x02\x00" "MR", 10) ||
           replace_once(buf, n, "\x28\x00\x52\x10" "DS", "\x28\x00\x54\x10" "DS", 6) ||
           replace_once(buf, n, "\x28\x00\x53\x10" "DS", "\x28\x00\x55\x10" "DS", 6);
}

/* The second slice's row and column cosines swapped: same series UID, another orientation. */
static int turn_second(unsigned char *buf, long n, int i) {
    if (i == 0) return 0;
    return replace_once(buf, n, "\x20\x00\x37\x00" "DS\x0c\x00" "1\\0\\0\\0\\1\\0", "\x20\x00\x37\x00" "DS\x0c\x00" "0\\1\\0\\1\\0\\0",
                        19);
}

TEST(rescale_and_orientation) {
    char d[700];
    ls_volume ct, mr;
    ls_error err = {0};
    if (seed_variant("seed_ct", NULL, d) != 0) SKIP("fuzz/corpus/dicom seeds not found (run from the repository root)");
    REQUIRE(ls_volume_read_dicom(d, &ct, &err) == LS_OK, "%s", err.msg);
    CHECK(strcmp(ct.descrip, "DICOM CT") == 0 && ct.src_dtype == LS_DT_I16 && ct.scl_slope == 1 && ct.scl_inter == 0,
          "seed CT: descrip '%s', dtype %d, scl %g/%g", ct.descrip, (int)ct.src_dtype, ct.scl_slope, ct.scl_inter);

    /* Without rescale tags the stored values come back as they are: the CT values + 1024. */
    REQUIRE(seed_variant("seed_mr", to_mr_without_rescale, d) == 0, "cannot write the MR variant");
    if (ls_volume_read_dicom(d, &mr, &err) != LS_OK) {
        CHECK(0, "MR variant: %s", err.msg);
    } else {
        CHECK(strcmp(mr.descrip, "DICOM MR") == 0, "MR variant: descrip '%s'", mr.descrip);
        size_t bad = 0;
        for (size_t i = 0; i < ls_volume_nvox(&ct); i++) bad += mr.data[i] != ct.data[i] + 1024.0f;
        CHECK(ls_volume_nvox(&mr) == ls_volume_nvox(&ct) && bad == 0, "MR variant: %zu voxels are not raw", bad);
        ls_volume_free(&mr);
    }
    ls_volume_free(&ct);

    REQUIRE(seed_variant("seed_turned", turn_second, d) == 0, "cannot write the turned variant");
    expect_error(d, "orientation differs within one series", "differ in orientation");
}

/* The seed cut short before `tag` (4 bytes), written as `name` in `dir`; 0 on success. */
static int seed_cut(const char *dir, const char *name, const char *tag) {
    long n;
    char p[800];
    unsigned char *buf = slurp("fuzz/corpus/dicom/slice0.dcm", &n);
    if (!buf) return -1;
    long at = find_bytes(buf, n, tag, 4);
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int rc = at > 0 ? spill(p, buf, at) : -1;
    free(buf);
    return rc;
}

TEST(files_without_pixels) {
    char d[700];
    ls_volume v;
    ls_error err = {0};
    if (seed_variant("with_dicomdir", NULL, d) != 0) SKIP("fuzz/corpus/dicom seeds not found (run from the repository root)");
    /* A DICOM data set with no image module at all (like DICOMDIR or an SR): skipped. */
    REQUIRE(seed_cut(d, "DICOMDIR", "\x28\x00\x02\x00") == 0, "cannot write DICOMDIR");
    CHECK(ls_volume_read_dicom(d, &v, &err) == LS_OK, "series beside a non-image DICOM file: %s", err.msg);
    if (err.code == LS_OK) {
        CHECK(v.geom.dim[2] == 2, "%lld slices", (long long)v.geom.dim[2]);
        ls_volume_free(&v);
    }
    /* An image header whose pixel data is gone: a damaged slice, an error naming it. */
    REQUIRE(seed_variant("lost_pixels", NULL, d) == 0, "cannot copy seeds");
    REQUIRE(seed_cut(d, "slice2.dcm", "\xe0\x7f\x10\x00") == 0, "cannot write slice2.dcm");
    expect_error(d, "image header without pixel data", "slice2.dcm");
}

/* ls_dicom_read with `readers` decoders: the status, with the message in msg (or the volume in v). */
static ls_status read_with(const char *d, int readers, ls_volume *v, char *msg, size_t n) {
    ls_error err = {0};
    ls_status s = ls_dicom_read(d, NULL, readers, v, &err);
    snprintf(msg, n, "%s", err.msg);
    return s;
}

/* Several decoder processes give what one gives: the same volume, and the error a reading of the files one
 * by one meets first (file order, whichever decoder gets there first in time), also when GDCM kills a
 * decoder (an assertion on a truncated slice). */
TEST(parallel_decoders) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    char src[600], d[700], p[2048], a[2048], msg[1024], want[1024];
    snprintf(src, sizeof src, "%s/dicom/totalseg_ct_dicom", data);
    static char names[64][256];
    REQUIRE(list_dir(src, names, 64) == 20, "expected 20 slices in %s", src);
    static const int readers[] = {1, 2, 3, 7, 16};
    ls_volume one, v;
    REQUIRE(read_with(src, 1, &one, msg, sizeof msg) == LS_OK, "%s", msg);
    for (int r = 1; r < 5; r++) {
        REQUIRE(read_with(src, readers[r], &v, msg, sizeof msg) == LS_OK, "%d decoders: %s", readers[r], msg);
        CHECK(memcmp(&v.geom, &one.geom, sizeof v.geom) == 0 && !strcmp(v.descrip, one.descrip) &&
                  memcmp(v.data, one.data, ls_volume_nvox(&one) * sizeof(float)) == 0,
              "%d decoders: the volume differs from one decoder's", readers[r]);
        ls_volume_free(&v);
    }
    ls_volume_free(&one);

    /* Slice 2's header damaged (an error GDCM reports) and slice 5 truncated (GDCM aborts): slice 2 is the
     * first error in file order, for every decoder count, though with two or more decoders slice 5's
     * decoder may fail first. Without slice 2's damage, slice 5 is named, the decoder's death reported. */
    for (int damaged = 1; damaged >= 0; damaged--) {
        copy_slices(src, names, 0, 7, damaged ? "order2" : "order5", d);
        snprintf(a, sizeof a, "%s/%.255s", src, names[5]);
        snprintf(p, sizeof p, "%s/%.255s", d, names[5]);
        copy_file(a, p, 4000);
        snprintf(p, sizeof p, "%s/%.255s", d, names[2]);
        if (damaged) REQUIRE(patch_after(p, "\x08\x00\x08\x00" "CS", 6, 6, "\xf0\xff", 2) == 0, "cannot patch %s", p);
        snprintf(p, sizeof p, "%s/%.255s", d, names[damaged ? 2 : 5]);
        want[0] = 0;
        for (int r = 0; r < 5; r++) {
            ls_status s = read_with(d, readers[r], &v, msg, sizeof msg);
            if (r == 0) printf("  %s -> %s\n", damaged ? "slices 2 and 5 broken" : "slice 5 truncated", msg), strcpy(want, msg);
            CHECK(s == LS_ERR_INPUT && strstr(msg, p) && (damaged || strstr(msg, "DICOM library failed")),
                  "%d decoders: status %d, %s", readers[r], s, msg);
            CHECK(!strcmp(msg, want), "%d decoders: '%s', one decoder: '%s'", readers[r], msg, want);
            if (s == LS_OK) ls_volume_free(&v);
        }
    }
}

/* The dcmqi slices of series number 2 (uncompressed) beside the 20 JPEG 2000 slices "CT Body 3.0" (no UID
 * nor number: anonymised), named to sort after them so that decoder processes meet the other series;
 * tmp/sub, its path in d. `patch` (may be NULL) edits dcmqi slice 02's copy. */
static int two_series(const char *data, const char *sub, int (*patch)(unsigned char *, long, int), char d[700]) {
    char src[600], names[20][256], a[2048], b[2048];
    snprintf(src, sizeof src, "%s/dicom/totalseg_ct_dicom", data);
    if (list_dir(src, names, 20) != 20) return -1;
    copy_slices(src, names, 0, 19, sub, d);
    for (int i = 1; i <= 3; i++) {
        long n;
        snprintf(a, sizeof a, "%s/dicom/dcmqi_ct_3slice/%02d.dcm", data, i);
        snprintf(b, sizeof b, "%s/zz%02d.dcm", d, i);
        unsigned char *buf = slurp(a, &n);
        int rc = !buf || (patch && i == 2 && patch(buf, n, i)) || spill(b, buf, n);
        free(buf);
        if (rc) return -1;
    }
    return 0;
}

/* Three samples per pixel, RGB: an image livseg cannot use (implicit VR little endian). */
static int to_colour(unsigned char *buf, long n, int i) {
    (void)i;
    return replace_once(buf, n, "\x28\x00\x02\x00\x02\x00\x00\x00\x01\x00", "\x28\x00\x02\x00\x02\x00\x00\x00\x03\x00", 10) ||
           replace_once(buf, n, "MONOCHROME2 ", "RGB         ", 12);
}

/* SeriesDescription "CT Body 3.0" -> "2", the other series' number (explicit VR: LO, 12 bytes). */
static int describe_as_2(unsigned char *buf, long n, int i) {
    (void)i;
    return replace_once(buf, n, "CT Body 3.0 ", "2           ", 12);
}

static int same_volume(const ls_volume *a, const ls_volume *b) {
    return memcmp(&a->geom, &b->geom, sizeof a->geom) == 0 && memcmp(a->data, b->data, ls_volume_nvox(a) * sizeof(float)) == 0;
}

/* Reads `d` with `series` and 1, 2, 3 and 7 decoders: every count must give the one decoder's outcome
 * (volume or message). Returns that status, the message in msg, the volume (if any) in v. */
static ls_status read_every_way(const char *d, const ls_dicom_pick *pick, ls_volume *v, char msg[1024]) {
    static const int readers[] = {1, 2, 3, 7};
    const char *series = pick->series ? pick->series : "(none)";
    ls_status first = LS_OK;
    for (int r = 0; r < 4; r++) {
        ls_error err = {0};
        ls_volume w;
        ls_status s = ls_dicom_read(d, pick, readers[r], r ? &w : v, &err);
        if (r == 0) {
            first = s, snprintf(msg, 1024, "%s", err.msg);
            continue;
        }
        CHECK(s == first && !strcmp(err.msg, s ? msg : ""), "--series %s --echo %d, %d decoders: status %d '%s', one decoder: %d '%s'",
              series, pick->echo, readers[r], s, err.msg, first, msg);
        if (s == LS_OK && first == LS_OK)
            CHECK(same_volume(&w, v), "--series %s --echo %d, %d decoders: another volume", series, pick->echo, readers[r]);
        if (s == LS_OK) ls_volume_free(&w);
    }
    return first;
}

static ls_status read_series_every_way(const char *d, const char *series, ls_volume *v, char msg[1024]) {
    ls_dicom_pick pick = {series, 0};
    return read_every_way(d, &pick, v, msg);
}

/* A directory holding two series (a study exported whole): without --series it is refused with the list
 * of its series, with it the series named by number, description or UID is read, whatever else lies
 * there (an image livseg cannot use included); a name of no series, or of two, is refused with the list. */
TEST(several_series) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    char d[700], src[700], msg[1024];
    ls_volume body, small, v;
    ls_error err = {0};
    snprintf(src, sizeof src, "%s/dicom/totalseg_ct_dicom", data);
    REQUIRE(ls_volume_read_dicom(src, &body, &err) == LS_OK, "%s", err.msg);
    snprintf(src, sizeof src, "%s/dicom/dcmqi_ct_3slice", data);
    REQUIRE(ls_volume_read_dicom(src, &small, &err) == LS_OK, "%s", err.msg);
    REQUIRE(two_series(data, "study", NULL, d) == 0, "cannot write %s", d);

    CHECK(read_series_every_way(d, NULL, &v, msg) == LS_ERR_INPUT &&
              strstr(msg, "holds 2 series; choose one with --series") && strstr(msg, "\"CT Body 3.0\" (20 images), 2 (3 images)"),
          "no --series: %s", msg);
    printf("  no --series -> %s\n", msg);
    static const char *const names_small[] = {"2", "1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1"};
    for (int k = 0; k < 2; k++) {
        REQUIRE(read_series_every_way(d, names_small[k], &v, msg) == LS_OK, "--series %s: %s", names_small[k], msg);
        CHECK(same_volume(&v, &small), "--series %s: not the dcmqi series alone", names_small[k]);
        ls_volume_free(&v);
    }
    REQUIRE(read_series_every_way(d, "CT Body 3.0", &v, msg) == LS_OK, "--series CT Body 3.0: %s", msg);
    CHECK(same_volume(&v, &body), "--series CT Body 3.0: not the totalseg series alone");
    ls_volume_free(&v);
    ls_dicom_pick two = {"2", 0};
    CHECK(ls_volume_read_dicom_pick(d, &two, &v, &err) == LS_OK && same_volume(&v, &small), "public call: %s", err.msg);
    if (!err.code) ls_volume_free(&v);
    CHECK(read_series_every_way(d, "7", &v, msg) == LS_ERR_INPUT && strstr(msg, "no series \"7\"") &&
              strstr(msg, "\"CT Body 3.0\" (20 images), 2 (3 images)"),
          "--series 7: %s", msg);

    /* A colour image in series 2: refused when series 2 is asked for, skipped when the other is, and
     * without --series the list of series still comes first. */
    REQUIRE(two_series(data, "colour", to_colour, d) == 0, "cannot write %s", d);
    CHECK(read_series_every_way(d, NULL, &v, msg) == LS_ERR_INPUT && strstr(msg, "holds 2 series"), "colour, no --series: %s", msg);
    CHECK(read_series_every_way(d, "2", &v, msg) == LS_ERR_INPUT && strstr(msg, "zz02.dcm: 3 samples per pixel"),
          "colour, --series 2: %s", msg);
    REQUIRE(read_series_every_way(d, "CT Body 3.0", &v, msg) == LS_OK, "colour, --series CT Body 3.0: %s", msg);
    CHECK(same_volume(&v, &body), "colour, --series CT Body 3.0: not the totalseg series alone");
    ls_volume_free(&v);

    /* "2" the number of one series and the description of the other. */
    char names[20][256];
    snprintf(src, sizeof src, "%s/dicom/totalseg_ct_dicom", data);
    REQUIRE(list_dir(src, names, 20) == 20, "%s", src);
    REQUIRE(two_series(data, "twice", NULL, d) == 0, "cannot write %s", d);
    for (int i = 0; i < 20; i++) {
        char p[1024];
        long n;
        snprintf(p, sizeof p, "%s/%.255s", d, names[i]);
        unsigned char *buf = slurp(p, &n);
        REQUIRE(buf && describe_as_2(buf, n, i) == 0 && spill(p, buf, n) == 0, "cannot patch %s", p);
        free(buf);
    }
    CHECK(read_series_every_way(d, "2", &v, msg) == LS_ERR_INPUT && strstr(msg, "\"2\" names 2 series"), "--series 2 twice: %s", msg);
    printf("  --series 2, two such -> %s\n", msg);
    ls_volume_free(&body);
    ls_volume_free(&small);
}

/* A study exported as a tree (PATIENT/STUDY/SERIES/files, a README at the top): its series are found in
 * the subdirectories; a link back to the top, a hidden directory and a directory 9 levels down (each
 * holding a copy of a slice that would break the series) are not read. */
TEST(nested_study) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    char cmd[8192], root[700], msg[1024];
    const char *tmp = test_tmpdir();
    snprintf(root, sizeof root, "%s/export", tmp);
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/PAT/ST/SE1 %s/PAT/ST/SE2 %s/.hidden %s/1/2/3/4/5/6/7/8/9 && echo notes > %s/README.txt && "
             "cp %s/dicom/totalseg_ct_dicom/* %s/PAT/ST/SE1/ && cp %s/dicom/dcmqi_ct_3slice/* %s/PAT/ST/SE2/ && "
             "cp %s/dicom/dcmqi_ct_3slice/01.dcm %s/.hidden/ && cp %s/dicom/dcmqi_ct_3slice/01.dcm %s/1/2/3/4/5/6/7/8/9/ && "
             "ln -s %s %s/PAT/loop",
             root, root, root, root, root, data, root, data, root, data, root, data, root, root, root);
    REQUIRE(system(cmd) == 0, "%s", cmd);
    ls_volume v, small;
    ls_error err = {0};
    CHECK(ls_volume_read_dicom(root, &v, &err) == LS_ERR_INPUT && strstr(err.msg, "holds 2 series") &&
              strstr(err.msg, "\"CT Body 3.0\" (20 images), 2 (3 images)"),
          "the tree: %s", err.msg);
    printf("  the tree -> %s\n", err.msg);
    snprintf(cmd, sizeof cmd, "%s/dicom/dcmqi_ct_3slice", data);
    REQUIRE(ls_volume_read_dicom(cmd, &small, &err) == LS_OK, "%s", err.msg);
    CHECK(read_series_every_way(root, "2", &v, msg) == LS_OK && same_volume(&v, &small), "--series 2 in the tree: %s", msg);
    if (!msg[0]) ls_volume_free(&v);
    ls_volume_free(&small);
}

/* A series of two echoes at each of 4 positions (in- and opposed-phase T1 are stored so): refused with
 * its echoes listed unless --echo names one, which is read alone (its pixel values); a missing echo is
 * refused with the list. */
TEST(multi_echo) {
    char d[700], p[800], msg[1024];
    snprintf(d, sizeof d, "%s/echoes", test_tmpdir());
    REQUIRE(write_echo_dir(d, 4, 2) == 0, "cannot write %s", d);
    ls_volume v;
    ls_dicom_pick none = {NULL, 0}, two = {NULL, 2}, three = {"5", 3};
    CHECK(read_every_way(d, &none, &v, msg) == LS_ERR_INPUT &&
              strstr(msg, "the series holds 2 echoes; choose one with --echo N: 1 (2.3 ms), 2 (4.6 ms)"),
          "no --echo: %s", msg);
    printf("  no --echo -> %s\n", msg);
    REQUIRE(read_every_way(d, &two, &v, msg) == LS_OK, "--echo 2: %s", msg);
    int bad = v.geom.dim[0] != 8 || v.geom.dim[1] != 8 || v.geom.dim[2] != 4;
    for (int z = 0; !bad && z < 4; z++) bad |= v.data[z * 64] != 200 + z || v.data[z * 64 + 63] != 200 + z;
    CHECK(!bad && !strcmp(v.descrip, "DICOM MR"), "--echo 2: dims %lldx%lldx%lld, first voxel of slice 1 %g",
          (long long)v.geom.dim[0], (long long)v.geom.dim[1], (long long)v.geom.dim[2], v.geom.dim[2] > 1 ? v.data[64] : -1);
    ls_volume_free(&v);
    CHECK(read_every_way(d, &three, &v, msg) == LS_ERR_INPUT &&
              strstr(msg, "no echo 3 in the series; its echoes (EchoNumbers, EchoTime): 1 (2.3 ms), 2 (4.6 ms)"),
          "--series 5 --echo 3: %s", msg);
    /* One echo at 4 positions beside 4 slices at other positions that carry no EchoNumbers: one series
     * of one echo, read whole (the tag is optional). */
    snprintf(d, sizeof d, "%s/one_echo", test_tmpdir());
    mkdir(d, 0755);
    for (int z = 0; z < 8; z++) {
        snprintf(p, sizeof p, "%s/im%d.dcm", d, z);
        REQUIRE(write_echo_slice(p, z, z < 4 ? 1 : 0) == 0, "cannot write %s", p);
    }
    CHECK(read_every_way(d, &none, &v, msg) == LS_OK && v.geom.dim[2] == 8, "one echo, some images unnumbered: %s", msg);
    if (!msg[0]) ls_volume_free(&v);
}

/* The listing (ls_dicom_list): a study's tree gives its two series with names, modality, image count
 * and size; a multi-echo series its echoes; headers only, so a slice with its pixel data cut short is
 * still listed (the read refuses it); an unreadable header and a directory without images are errors. */
TEST(listing) {
    const char *data = test_data_dir();
    char cmd[4096], d[700], p[800];
    const char *tmp = test_tmpdir();
    ls_dicom_series *list = NULL;
    int n = 0;
    ls_error err = {0};
    snprintf(d, sizeof d, "%s/list_echoes", tmp);
    REQUIRE(write_echo_dir(d, 3, 2) == 0, "cannot write %s", d);
    REQUIRE(ls_dicom_list(d, &list, &n, &err) == LS_OK, "%s", err.msg);
    CHECK(n == 1 && !strcmp(list[0].uid, "1.2.3.4.8") && !strcmp(list[0].number, "5") && !list[0].description[0] &&
              !strcmp(list[0].modality, "MR") && list[0].images == 6 && list[0].cols == 8 && list[0].rows == 8 &&
              list[0].n_echoes == 2 && list[0].echo[0] == 1 && list[0].echo[1] == 2 &&
              fabs(list[0].echo_ms[0] - 2.3) < 1e-9 && fabs(list[0].echo_ms[1] - 4.6) < 1e-9,
          "echoes: %d series, first \"%s\" \"%s\" %s, %d images %dx%d, %d echoes", n, n ? list[0].uid : "",
          n ? list[0].number : "", n ? list[0].modality : "", n ? list[0].images : 0, n ? list[0].cols : 0,
          n ? list[0].rows : 0, n ? list[0].n_echoes : 0);
    free(list);
    snprintf(d, sizeof d, "%s/list_empty", tmp);
    mkdir(d, 0755);
    CHECK(ls_dicom_list(d, &list, &n, &err) == LS_ERR_INPUT && strstr(err.msg, "no DICOM images found") && !list && !n,
          "empty directory: %s", err.msg);
    snprintf(p, sizeof p, "%s/bad.dcm", d);
    static const unsigned char head[140] = {[128] = 'D', 'I', 'C', 'M', 2, 0, 0, 0, 'U', 'L', 4};
    REQUIRE(spill(p, head, sizeof head) == 0, "cannot write %s", p);
    CHECK(ls_dicom_list(d, &list, &n, &err) == LS_ERR_INPUT && strstr(err.msg, "bad.dcm"), "truncated header: %s", err.msg);
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    snprintf(d, sizeof d, "%s/list_study", tmp);
    snprintf(cmd, sizeof cmd, "mkdir -p %s/a %s/b && cp %s/dicom/totalseg_ct_dicom/* %s/a/ && cp %s/dicom/dcmqi_ct_3slice/* %s/b/",
             d, d, data, d, data, d);
    REQUIRE(system(cmd) == 0, "%s", cmd);
    /* Cut the pixel data of one slice of the second series short: a listing does not read it. */
    snprintf(cmd, sizeof cmd, "f=$(ls %s/b/* | head -1) && truncate -s -2000 \"$f\"", d);
    REQUIRE(system(cmd) == 0, "%s", cmd);
    REQUIRE(ls_dicom_list(d, &list, &n, &err) == LS_OK, "%s", err.msg);
    CHECK(n == 2 && !strcmp(list[0].description, "CT Body 3.0") && list[0].images == 20 && !strcmp(list[0].modality, "CT") &&
              list[0].cols == 512 && list[0].rows == 512 && list[0].n_echoes == 0 && !strcmp(list[1].number, "2") &&
              list[1].images == 3 && !strcmp(list[1].uid, "1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1"),
          "study: %d series; %s %d images %dx%d; %s %d images", n, n ? list[0].description : "", n ? list[0].images : 0,
          n ? list[0].cols : 0, n ? list[0].rows : 0, n > 1 ? list[1].number : "", n > 1 ? list[1].images : 0);
    free(list);
    ls_volume v;
    ls_dicom_pick two = {"2", 0};
    err.msg[0] = 0;
    CHECK(ls_volume_read_dicom_pick(d, &two, &v, &err) == LS_ERR_INPUT && strstr(err.msg, "/b/01.dcm: pixel data cut short, 2000 bytes missing"),
          "the cut slice must not read: %s", err.msg);
}

/* An enhanced MR file (one file, several frames): its frames become the slices, sorted by their own
 * positions, each rescaled by its own slope; the same through decoder processes (a decoder leaves the
 * file to the reader child); echoes picked frame by frame; two frames at one position, or frames without
 * positions: one line. */
TEST(multi_frame) {
    char d[700], p[800], msg[1024];
    const char *tmp = test_tmpdir();
    const double z[4] = {6, 0, 4, 2}, slope[4] = {1, 1, 2, 1};
    snprintf(d, sizeof d, "%s/enhanced", tmp);
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/mr.dcm", d);
    REQUIRE(write_enhanced_mr(p, 4, z, slope, NULL, 1) == 0, "cannot write %s", p);
    ls_volume v;
    ls_dicom_pick none = {NULL, 0};
    REQUIRE(read_every_way(d, &none, &v, msg) == LS_OK, "enhanced MR: %s", msg);
    /* Sorted by z: frames 1 (z 0), 3 (z 2), 2 (z 4, slope 2), 0 (z 6); stored 1000 + 10 * frame. */
    const float want[4] = {1010, 1030, 2 * 1020, 1000};
    int bad = v.geom.dim[0] != 8 || v.geom.dim[1] != 8 || v.geom.dim[2] != 4 || fabs(v.geom.affine[2][2] - 2) > 1e-9 ||
              fabs(v.geom.affine[0][0] + 1) > 1e-9 || fabs(v.geom.affine[2][3]) > 1e-9 || strcmp(v.descrip, "DICOM MR");
    for (int k = 0; !bad && k < 4; k++) bad |= v.data[k * 64] != want[k] || v.data[k * 64 + 63] != want[k];
    CHECK(!bad, "enhanced MR: dims %lldx%lldx%lld, z step %g, slice values %g %g %g %g", (long long)v.geom.dim[0],
          (long long)v.geom.dim[1], (long long)v.geom.dim[2], v.geom.affine[2][2], v.data[0],
          v.geom.dim[2] > 1 ? v.data[64] : 0, v.geom.dim[2] > 2 ? v.data[128] : 0, v.geom.dim[2] > 3 ? v.data[192] : 0);
    ls_volume_free(&v);
    /* Behind a compressed series, so that decoder processes start and meet the multi-frame file. */
    const char *data = test_data_dir();
    if (data) {
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "cp %s/dicom/totalseg_ct_dicom/* %s/", data, d);
        REQUIRE(system(cmd) == 0, "%s", cmd);
        ls_dicom_pick seven = {"7", 0};
        CHECK(read_every_way(d, &seven, &v, msg) == LS_OK && v.geom.dim[2] == 4 && v.data[128] == 2040,
              "enhanced MR behind a compressed series, --series 7: %s", msg);
        if (!msg[0]) ls_volume_free(&v);
        /* A listing counts the multi-frame file once, and its frames. */
        ls_dicom_series *list;
        int n;
        ls_error err = {0};
        REQUIRE(ls_dicom_list(d, &list, &n, &err) == LS_OK, "%s", err.msg);
        int i7 = n == 2 && !strcmp(list[1].number, "7");
        CHECK(n == 2 && list[i7].images == 1 && list[i7].frames == 4 && list[1 - i7].images == 20 && list[1 - i7].frames == 20,
              "listing: %d series, images/frames %d/%d and %d/%d", n, n ? list[0].images : 0, n ? list[0].frames : 0,
              n > 1 ? list[1].images : 0, n > 1 ? list[1].frames : 0);
        free(list);
    }
    /* Written by pydicom from the shared 3-slice series (implicit VR, explicit VR, frames reversed): the
     * volume the series itself gives, voxel for voxel, affine and all. */
    if (data && test_python_has("pydicom")) {
        static const char *const how[3] = {"", "--explicit", "--explicit --reverse"};
        ls_volume series;
        ls_error err = {0};
        char src[700], cmd[4096];
        snprintf(src, sizeof src, "%s/dicom/dcmqi_ct_3slice", data);
        REQUIRE(ls_volume_read_dicom(src, &series, &err) == LS_OK, "%s", err.msg);
        for (int k = 0; k < 3; k++) {
            snprintf(d, sizeof d, "%s/pydicom%d", tmp, k);
            mkdir(d, 0755);
            snprintf(cmd, sizeof cmd, "%s tests/ref/enhanced_from_series.py %s %s/ct.dcm %s", test_python(), src, d, how[k]);
            REQUIRE(system(cmd) == 0, "%s", cmd);
            CHECK(read_every_way(d, &none, &v, msg) == LS_OK && same_volume(&v, &series),
                  "enhanced CT from pydicom %s: %s", how[k], msg[0] ? msg : "another volume or affine");
            if (!msg[0]) ls_volume_free(&v);
        }
        printf("  enhanced CT written by pydicom (implicit, explicit, reversed): the series' volume exactly\n");
        ls_volume_free(&series);
    } else {
        printf("  pydicom or ../shared/data missing: enhanced files written by pydicom not checked\n");
    }
    snprintf(d, sizeof d, "%s/enhanced_twice", tmp);
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/mr.dcm", d);
    const double same[2] = {3, 3};
    REQUIRE(write_enhanced_mr(p, 2, same, NULL, NULL, 1) == 0, "cannot write %s", p);
    CHECK(read_every_way(d, &none, &v, msg) == LS_ERR_INPUT && strstr(msg, "two slices at the same position") &&
              strstr(msg, "mr.dcm (frame 1)") && strstr(msg, "mr.dcm (frame 2)"),
          "two frames at one position: %s", msg);
    /* Two echoes at two positions in one file (in- and opposed-phase): its echoes numbered by echo time,
     * listed, refused without --echo, and --echo 2 reads the later echo's frames alone. */
    snprintf(d, sizeof d, "%s/enhanced_echoes", tmp);
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/mr.dcm", d);
    const double ez[4] = {0, 0, 2, 2}, te[4] = {4.6, 2.3, 2.3, 4.6};
    REQUIRE(write_enhanced_mr(p, 4, ez, NULL, te, 1) == 0, "cannot write %s", p);
    CHECK(read_every_way(d, &none, &v, msg) == LS_ERR_INPUT &&
              strstr(msg, "the series holds 2 echoes; choose one with --echo N: 1 (2.3 ms), 2 (4.6 ms)"),
          "enhanced multi-echo without --echo: %s", msg);
    ls_dicom_pick two = {NULL, 2};
    REQUIRE(read_every_way(d, &two, &v, msg) == LS_OK, "enhanced multi-echo --echo 2: %s", msg);
    CHECK(v.geom.dim[2] == 2 && v.data[0] == 1000 && v.data[64] == 1030, "--echo 2: %lld slices of %g, %g (frames 0 and 3 wanted)",
          (long long)v.geom.dim[2], v.data[0], v.geom.dim[2] > 1 ? v.data[64] : 0);
    ls_volume_free(&v);
    {
        ls_dicom_series *list;
        int n;
        ls_error err = {0};
        REQUIRE(ls_dicom_list(d, &list, &n, &err) == LS_OK, "%s", err.msg);
        CHECK(n == 1 && list[0].n_echoes == 2 && list[0].echo[1] == 2 && list[0].echo_ms[1] == 4.6 && list[0].frames == 4,
              "listing a multi-echo file: %d series, %d echoes", n, n ? list[0].n_echoes : 0);
        free(list);
    }
    snprintf(d, sizeof d, "%s/enhanced_unplaced", tmp);
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/mr.dcm", d);
    REQUIRE(write_enhanced_mr(p, 3, z, NULL, NULL, 0) == 0, "cannot write %s", p);
    CHECK(read_every_way(d, &none, &v, msg) == LS_ERR_INPUT && strstr(msg, "mr.dcm: multi-frame DICOM (3 frames) without a position"),
          "frames without positions: %s", msg);
}

int main(void) {
    RUN(shared_series);
    RUN(broken_directories);
    RUN(damaged_headers);
    RUN(displaced_slices);
    RUN(short_series);
    RUN(huge_declared_length);
    RUN(rescale_and_orientation);
    RUN(files_without_pixels);
    RUN(parallel_decoders);
    RUN(several_series);
    RUN(nested_study);
    RUN(multi_echo);
    RUN(listing);
    RUN(multi_frame);
    return test_summary();
}
