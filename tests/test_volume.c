/*
 * test_volume.c — NIfTI reading/writing, geometry rules, reorientation, and bad input.
 * Fixtures are made here (nifticlib through ls_nifti_write_raw, or raw header bytes); the shared
 * scans in ../shared/data are checked when present.
 */
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#include <nifti2_io.h>
#include <omp.h>
#include <zlib.h>

#include "test.h"
#include "util.h"
#include "volume.h"

static unsigned rng_state = 12345;
static double frand(void) { /* xorshift; reproducible per run of the binary */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return (rng_state & 0xffffff) / (double)0x1000000;
}

static void path_in_tmp(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", test_tmpdir(), name); }

static void diag_geom(ls_geom *g, int64_t nx, int64_t ny, int64_t nz, double dx, double dy, double dz) {
    double a[4][4] = {{dx, 0, 0, -10}, {0, dy, 0, 20}, {0, 0, dz, -30}, {0, 0, 0, 1}};
    int64_t d[3] = {nx, ny, nz};
    ls_geom_from_affine(g, d, a);
}

/* Every datatype, .nii and .nii.gz: raw values in range come back exactly. */
TEST(roundtrip_every_dtype) {
    static const double lo[LS_DT_COUNT] = {0, -128, 0, -32768, 0, -2147483648.0, -1e6, -1e6};
    static const double hi[LS_DT_COUNT] = {255, 127, 65535, 32767, 16777215, 16777215, 1e6, 1e6};
    static const int size[LS_DT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 8};
    ls_geom g;
    diag_geom(&g, 7, 5, 3, 0.8, 0.9, 2.5);
    for (int t = 0; t < LS_DT_COUNT; t++)
        for (int gz = 0; gz < 2; gz++) {
            char path[512], name[64];
            snprintf(name, sizeof name, "rt_%s.nii%s", ls_dtype_name(t), gz ? ".gz" : "");
            path_in_tmp(path, sizeof path, name);
            unsigned char raw[105 * 8];
            double want[105];
            for (int i = 0; i < 105; i++) {
                double v = lo[t] + floor(frand() * (hi[t] - lo[t] + 1));
                if (t >= LS_DT_F32) v = lo[t] + frand() * (hi[t] - lo[t]);
                if (i == 0) v = lo[t];
                if (i == 1) v = hi[t];
                switch (t) {
                case LS_DT_U8: ((uint8_t *)raw)[i] = (uint8_t)v; break;
                case LS_DT_I8: ((int8_t *)raw)[i] = (int8_t)v; break;
                case LS_DT_U16: ((uint16_t *)raw)[i] = (uint16_t)v; break;
                case LS_DT_I16: ((int16_t *)raw)[i] = (int16_t)v; break;
                case LS_DT_U32: ((uint32_t *)raw)[i] = (uint32_t)v; break;
                case LS_DT_I32: ((int32_t *)raw)[i] = (int32_t)v; break;
                case LS_DT_F32: ((float *)raw)[i] = (float)v, v = (float)v; break;
                case LS_DT_F64: ((double *)raw)[i] = v; break;
                }
                want[i] = t == LS_DT_F64 ? (float)v : v;
            }
            (void)size;
            ls_error err = {0};
            REQUIRE(ls_nifti_write_raw(path, &g, t, raw, 0, 0, "t", NULL, &err) == LS_OK, "%s", err.msg);
            ls_volume v;
            REQUIRE(ls_volume_read(path, &v, &err) == LS_OK, "%s", err.msg);
            CHECK(v.src_dtype == (ls_dtype)t, "%s: dtype %d", name, v.src_dtype);
            int bad = 0;
            for (int i = 0; i < 105; i++) bad += v.data[i] != (float)want[i];
            CHECK(bad == 0, "%s: %d values differ", name, bad);
            CHECK(v.geom.dim[0] == 7 && v.geom.dim[1] == 5 && v.geom.dim[2] == 3, "%s: dims", name);
            ls_volume_free(&v);
        }
}

/* ls_volume_write converts float data: rounding and clamping for integer types. */
TEST(write_converts_and_clamps) {
    ls_volume v = {0};
    diag_geom(&v.geom, 4, 1, 1, 1, 1, 1);
    float data[4] = {-3.6f, 0.4f, 254.6f, 999.0f};
    v.data = data;
    char path[512];
    path_in_tmp(path, sizeof path, "clamp.nii.gz");
    ls_error err = {0};
    REQUIRE(ls_volume_write(path, &v, LS_DT_U8, NULL, &err) == LS_OK, "%s", err.msg);
    ls_volume r;
    REQUIRE(ls_volume_read(path, &r, &err) == LS_OK, "%s", err.msg);
    CHECK(r.data[0] == 0 && r.data[1] == 0 && r.data[2] == 255 && r.data[3] == 255, "got %g %g %g %g",
          r.data[0], r.data[1], r.data[2], r.data[3]);
    ls_volume_free(&r);
}

/* scl_slope / scl_inter are applied (BTCV's uint8 -> HU encoding), and slope 0 means none. */
TEST(scaling_applied) {
    ls_geom g;
    diag_geom(&g, 256, 1, 1, 1, 1, 1);
    uint8_t raw[256];
    for (int i = 0; i < 256; i++) raw[i] = (uint8_t)i;
    char path[512];
    path_in_tmp(path, sizeof path, "scaled.nii.gz");
    ls_error err = {0};
    REQUIRE(ls_nifti_write_raw(path, &g, LS_DT_U8, raw, 400.0 / 255.0, -125, NULL, NULL, &err) == LS_OK, "%s", err.msg);
    ls_volume v;
    REQUIRE(ls_volume_read(path, &v, &err) == LS_OK, "%s", err.msg);
    CHECK(fabsf(v.data[0] + 125) < 1e-4 && fabsf(v.data[255] - 275) < 1e-3, "range %g..%g", v.data[0], v.data[255]);
    double maxerr = 0;
    for (int i = 0; i < 256; i++) maxerr = fmax(maxerr, fabs(v.data[i] - (i * (400.0f / 255.0f) - 125)));
    CHECK(maxerr < 1e-3, "max error %g", maxerr);
    ls_volume_free(&v);
    path_in_tmp(path, sizeof path, "slope0.nii");
    REQUIRE(ls_nifti_write_raw(path, &g, LS_DT_U8, raw, 0, 7, NULL, NULL, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_volume_read(path, &v, &err) == LS_OK, "%s", err.msg);
    CHECK(v.data[3] == 3, "slope 0 must mean unscaled, got %g", v.data[3]);
    ls_volume_free(&v);
}

/* Quaternion -> matrix written independently of nifticlib (NIfTI-1 standard, method 2). */
static void quat_affine(double b, double c, double d, double qfac, const double sp[3], const double off[3],
                        double m[4][4]) {
    double a = sqrt(fmax(0, 1 - b * b - c * c - d * d));
    double r[3][3] = {{a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)},
                      {2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)},
                      {2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b}};
    memset(m, 0, 16 * sizeof(double));
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) m[i][j] = r[i][j] * sp[j] * (j == 2 ? qfac : 1);
        m[i][3] = off[i];
    }
    m[3][3] = 1;
}

static double aff_diff(const double a[4][4], const double b[4][4]) {
    double m = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) m = fmax(m, fabs(a[i][j] - b[i][j]));
    return m;
}

/* sform wins when sform_code > 0; else qform; else pixdim alone. */
TEST(geometry_rules) {
    uint8_t raw[24] = {0};
    double sp[3] = {0.7, 0.9, 2.5}, off[3] = {10, -20, 30};
    double qb = 0.1, qc = -0.2, qd = 0.3;
    double q[4][4];
    quat_affine(qb, qc, qd, -1, sp, off, q);
    ls_geom g = {0};
    g.dim[0] = 4, g.dim[1] = 3, g.dim[2] = 2;
    g.pixdim[0] = -1, g.pixdim[1] = sp[0], g.pixdim[2] = sp[1], g.pixdim[3] = sp[2];
    g.quatern[0] = qb, g.quatern[1] = qc, g.quatern[2] = qd;
    memcpy(g.qoffset, off, sizeof off);
    double s[3][4] = {{0, 0, 3, 1}, {-1.5, 0, 0, 2}, {0, 2, 0, 3}};
    memcpy(g.srow, s, sizeof s);
    g.xyz_units = NIFTI_UNITS_MM;
    char path[512];
    ls_error err = {0};
    ls_volume v;
    struct { int qcode, scode; const char *name; } cases[] = {{1, 0, "qform-only"}, {1, 2, "sform+qform"},
                                                             {0, 2, "sform-only"}, {0, 0, "pixdim-only"}};
    for (int c = 0; c < 4; c++) {
        g.qform_code = cases[c].qcode, g.sform_code = cases[c].scode;
        path_in_tmp(path, sizeof path, "geom.nii.gz");
        REQUIRE(ls_nifti_write_raw(path, &g, LS_DT_U8, raw, 0, 0, NULL, NULL, &err) == LS_OK, "%s", err.msg);
        REQUIRE(ls_volume_read(path, &v, &err) == LS_OK, "%s", err.msg);
        double want[4][4] = {{sp[0], 0, 0, 0}, {0, sp[1], 0, 0}, {0, 0, sp[2], 0}, {0, 0, 0, 1}};
        if (cases[c].scode > 0) {
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 4; j++) want[i][j] = s[i][j];
        } else if (cases[c].qcode > 0) {
            memcpy(want, q, sizeof want);
        }
        CHECK(aff_diff(v.geom.affine, want) < 1e-5, "%s: affine off by %g", cases[c].name, aff_diff(v.geom.affine, want));
        CHECK(v.geom.qform_code == cases[c].qcode && v.geom.sform_code == cases[c].scode, "%s: codes", cases[c].name);
        /* Writing it again reproduces the header verbatim. */
        char path2[512];
        path_in_tmp(path2, sizeof path2, "geom2.nii");
        REQUIRE(ls_volume_write(path2, &v, LS_DT_U8, NULL, &err) == LS_OK, "%s", err.msg);
        ls_volume w;
        REQUIRE(ls_volume_read(path2, &w, &err) == LS_OK, "%s", err.msg);
        CHECK(memcmp(w.geom.dim, v.geom.dim, sizeof w.geom.dim) == 0, "%s: dims changed", cases[c].name);
        CHECK(aff_diff(w.geom.affine, v.geom.affine) < 1e-6, "%s: affine changed", cases[c].name);
        CHECK(w.geom.qform_code == v.geom.qform_code && w.geom.sform_code == v.geom.sform_code, "%s: codes changed", cases[c].name);
        double dq = 0;
        for (int i = 0; i < 3; i++) dq = fmax(dq, fabs(w.geom.quatern[i] - v.geom.quatern[i]) + fabs(w.geom.qoffset[i] - v.geom.qoffset[i]));
        CHECK(dq < 1e-6 && w.geom.pixdim[0] == v.geom.pixdim[0], "%s: qform parameters changed", cases[c].name);
        ls_volume_free(&w);
        ls_volume_free(&v);
    }
}

/* A NIfTI-2 single file written byte by byte (nifticlib's writer only makes NIfTI-1). */
static void write_n2(const char *path, const ls_geom *g, const int16_t *data) {
    nifti_2_header h;
    memset(&h, 0, sizeof h);
    h.sizeof_hdr = 540;
    memcpy(h.magic, "n+2\0\r\n\032\n", 8);
    h.datatype = NIFTI_TYPE_INT16;
    h.bitpix = 16;
    h.dim[0] = 3;
    for (int i = 1; i <= 7; i++) h.dim[i] = i <= 3 ? g->dim[i - 1] : 1;
    h.pixdim[0] = 1;
    for (int i = 1; i <= 3; i++) h.pixdim[i] = g->pixdim[i];
    h.vox_offset = 544;
    h.sform_code = 1;
    for (int j = 0; j < 4; j++) h.srow_x[j] = g->srow[0][j], h.srow_y[j] = g->srow[1][j], h.srow_z[j] = g->srow[2][j];
    h.xyzt_units = NIFTI_UNITS_MM;
    FILE *f = fopen(path, "wb");
    fwrite(&h, sizeof h, 1, f);
    char ext[4] = {0};
    fwrite(ext, 4, 1, f);
    fwrite(data, sizeof *data, (size_t)(g->dim[0] * g->dim[1] * g->dim[2]), f);
    fclose(f);
}

/* NIfTI-2 reads like NIfTI-1; .nii and .nii.gz give the same volume. */
TEST(nifti2_and_compression) {
    ls_geom g;
    diag_geom(&g, 9, 8, 7, 1.1, 1.2, 1.3);
    int16_t raw[9 * 8 * 7];
    for (int i = 0; i < 9 * 8 * 7; i++) raw[i] = (int16_t)(frand() * 4000 - 2000);
    const char *names[3] = {"n1.nii", "n1.nii.gz", "n2.nii"};
    ls_volume v[3];
    ls_error err = {0};
    for (int k = 0; k < 3; k++) {
        char path[512];
        path_in_tmp(path, sizeof path, names[k]);
        if (k < 2)
            REQUIRE(ls_nifti_write_raw(path, &g, LS_DT_I16, raw, 0, 0, NULL, NULL, &err) == LS_OK, "%s", err.msg);
        else
            write_n2(path, &g, raw);
        REQUIRE(ls_volume_read(path, &v[k], &err) == LS_OK, "%s", err.msg);
    }
    CHECK(strcmp(v[2].format, "NIfTI-2") == 0 && strcmp(v[0].format, "NIfTI-1") == 0, "formats %s %s", v[0].format, v[2].format);
    for (int k = 1; k < 3; k++) {
        CHECK(memcmp(v[0].data, v[k].data, sizeof(float) * 9 * 8 * 7) == 0, "%s data differs", names[k]);
        CHECK(aff_diff(v[0].geom.affine, v[k].geom.affine) < 1e-6, "%s affine differs", names[k]);
    }
    for (int k = 0; k < 3; k++) ls_volume_free(&v[k]);
}

/* A .nii beside a .nii.gz of the same stem: each name reads its own file. */
TEST(sibling_names_not_confused) {
    ls_geom g;
    diag_geom(&g, 2, 2, 2, 1, 1, 1);
    uint8_t a[8] = {1, 1, 1, 1, 1, 1, 1, 1}, b[8] = {2, 2, 2, 2, 2, 2, 2, 2};
    char p1[512], p2[512];
    path_in_tmp(p1, sizeof p1, "twin.nii");
    path_in_tmp(p2, sizeof p2, "twin.nii.gz");
    ls_error err = {0};
    REQUIRE(ls_nifti_write_raw(p1, &g, LS_DT_U8, a, 0, 0, NULL, NULL, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_nifti_write_raw(p2, &g, LS_DT_U8, b, 0, 0, NULL, NULL, &err) == LS_OK, "%s", err.msg);
    ls_volume v1, v2;
    REQUIRE(ls_volume_read(p1, &v1, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_volume_read(p2, &v2, &err) == LS_OK, "%s", err.msg);
    CHECK(v1.data[0] == 1 && v2.data[0] == 2, "read %g and %g", v1.data[0], v2.data[0]);
    ls_volume_free(&v1);
    ls_volume_free(&v2);
}

/* All 48 signed permutations: to RAS gives a positive diagonal affine with every voxel at the same
 * world point, and back is exact. */
TEST(reorient_48) {
    int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    int64_t dim[3] = {5, 4, 3};
    size_t n = 60;
    float data[60];
    for (size_t i = 0; i < n; i++) data[i] = (float)i;
    int checked = 0;
    for (int p = 0; p < 6; p++)
        for (int f = 0; f < 8; f++) {
            /* voxel axis j points along world axis perms[p][j], sign from f. */
            double a[4][4] = {{0}};
            double sp[3] = {0.5, 1.5, 3.0};
            for (int j = 0; j < 3; j++) a[perms[p][j]][j] = ((f >> j) & 1 ? -1 : 1) * sp[j];
            a[0][3] = 7, a[1][3] = -8, a[2][3] = 9, a[3][3] = 1;
            ls_volume v = {0};
            ls_geom_from_affine(&v.geom, dim, a);
            v.data = data;
            ls_orient o;
            ls_orient_from_geom(&v.geom, &o);
            ls_volume r, back;
            ls_error err = {0};
            REQUIRE(ls_volume_to_ras(&v, &o, &r, &err) == LS_OK, "%s", err.msg);
            int diag_ok = 1;
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) diag_ok &= i == j ? r.geom.affine[i][j] > 0 : fabs(r.geom.affine[i][j]) < 1e-12;
            CHECK(diag_ok, "perm %d flip %d: RAS affine not positive diagonal", p, f);
            /* World position of every RAS voxel equals that of the source voxel holding its value. */
            double worst = 0;
            for (int64_t k = 0; k < r.geom.dim[2]; k++)
                for (int64_t j = 0; j < r.geom.dim[1]; j++)
                    for (int64_t i = 0; i < r.geom.dim[0]; i++) {
                        int src = (int)r.data[i + r.geom.dim[0] * (j + r.geom.dim[1] * k)];
                        int si = src % 5, sj = (src / 5) % 4, sk = src / 20;
                        for (int w = 0; w < 3; w++) {
                            double pw = r.geom.affine[w][0] * i + r.geom.affine[w][1] * j + r.geom.affine[w][2] * k + r.geom.affine[w][3];
                            double sw = a[w][0] * si + a[w][1] * sj + a[w][2] * sk + a[w][3];
                            worst = fmax(worst, fabs(pw - sw));
                        }
                    }
            CHECK(worst < 1e-9, "perm %d flip %d: voxels moved by %g mm", p, f, worst);
            char code[4];
            ls_affine_orient_code(r.geom.affine, code);
            CHECK(strcmp(code, "RAS") == 0, "perm %d flip %d: code %s", p, f, code);
            REQUIRE(ls_volume_from_ras(&r, &o, &v.geom, &back, &err) == LS_OK, "%s", err.msg);
            CHECK(memcmp(back.data, data, sizeof data) == 0, "perm %d flip %d: round trip differs", p, f);
            CHECK(memcmp(&back.geom, &v.geom, sizeof v.geom) == 0, "perm %d flip %d: geometry differs", p, f);
            ls_volume_free(&r);
            ls_volume_free(&back);
            checked++;
        }
    CHECK(checked == 48, "checked %d", checked);
}

/* ls_volume_read_ras, which converts a NIfTI file's voxels straight into RAS order, gives what reading and
 * then reorienting gives, bit for bit (voxels, grids, description), in all 48 orientations, for scaled integer
 * and float files, compressed or not; the file's own grid comes back as src_geom. Errors are the read's. */
TEST(read_ras_48) {
    int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    int64_t dim[3] = {7, 5, 3};
    enum { N = 105 };
    int16_t i16[N];
    double f64[N];
    for (int i = 0; i < N; i++) i16[i] = (int16_t)(frand() * 4000 - 1000), f64[i] = frand() * 2e3 - 1e3;
    int checked = 0;
    for (int p = 0; p < 6; p++)
        for (int f = 0; f < 8; f++) {
            double a[4][4] = {{0}}, sp[3] = {0.7, 1.1, 2.5};
            for (int j = 0; j < 3; j++) a[perms[p][j]][j] = ((f >> j) & 1 ? -1 : 1) * sp[j];
            a[0][3] = -3, a[1][3] = 4, a[2][3] = 11, a[3][3] = 1;
            ls_geom g;
            ls_geom_from_affine(&g, dim, a);
            char path[512];
            path_in_tmp(path, sizeof path, f & 1 ? "ras48.nii.gz" : "ras48.nii");
            ls_error err = {0};
            int fl = (p + f) % 2;
            REQUIRE(ls_nifti_write_raw(path, &g, fl ? LS_DT_F64 : LS_DT_I16, fl ? (const void *)f64 : (const void *)i16,
                                       fl ? 0 : 0.37, fl ? 0 : -1024.5, "read_ras", NULL, &err) == LS_OK, "%s", err.msg);
            ls_volume v, want, got;
            ls_geom src;
            ls_orient o;
            REQUIRE(ls_volume_read(path, &v, &err) == LS_OK, "%s", err.msg);
            ls_orient_from_geom(&v.geom, &o);
            REQUIRE(ls_volume_to_ras(&v, &o, &want, &err) == LS_OK, "%s", err.msg);
            REQUIRE(ls_volume_read_ras(path, &got, &src, &err) == LS_OK, "%s", err.msg);
            CHECK(memcmp(got.data, want.data, N * sizeof(float)) == 0, "perm %d flip %d: voxels differ", p, f);
            CHECK(memcmp(&got.geom, &want.geom, sizeof got.geom) == 0, "perm %d flip %d: RAS grid differs", p, f);
            CHECK(memcmp(&src, &v.geom, sizeof src) == 0, "perm %d flip %d: source grid differs", p, f);
            CHECK(got.src_dtype == v.src_dtype && got.scl_slope == v.scl_slope && !strcmp(got.descrip, v.descrip) &&
                      !strcmp(got.format, v.format), "perm %d flip %d: description differs", p, f);
            ls_volume_free(&v), ls_volume_free(&want), ls_volume_free(&got);
            checked++;
        }
    CHECK(checked == 48, "checked %d", checked);
    /* A non-finite voxel is refused as the plain read refuses it. */
    ls_geom g;
    diag_geom(&g, 7, 5, 3, 1, 1, 1);
    f64[17] = NAN;
    ls_error err = {0};
    char path[512], want[sizeof err.msg];
    path_in_tmp(path, sizeof path, "ras_nan.nii");
    REQUIRE(ls_nifti_write_raw(path, &g, LS_DT_F64, f64, 0, 0, NULL, NULL, &err) == LS_OK, "%s", err.msg);
    ls_volume v;
    ls_geom src;
    CHECK(ls_volume_read(path, &v, &err) == LS_ERR_INPUT, "NaN voxel accepted");
    snprintf(want, sizeof want, "%s", err.msg);
    CHECK(ls_volume_read_ras(path, &v, &src, &err) == LS_ERR_INPUT && !strcmp(err.msg, want) && !v.data,
          "read_ras: '%s', read: '%s'", err.msg, want);
    path_in_tmp(path, sizeof path, "no_such_file.nii.gz");
    CHECK(ls_volume_read_ras(path, &v, &src, &err) == LS_ERR_INPUT && strstr(err.msg, "cannot open"), "%s", err.msg);
}

TEST(orient_codes) {
    double a[4][4] = {{-1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 3, 0}, {0, 0, 0, 1}};
    char c[4];
    ls_affine_orient_code(a, c);
    CHECK(strcmp(c, "LAS") == 0, "got %s", c);
    double b[4][4] = {{0, 0, 2, 0}, {-1, 0, 0, 0}, {0, -1, 0, 0}, {0, 0, 0, 1}};
    ls_affine_orient_code(b, c);
    CHECK(strcmp(c, "PIR") == 0, "got %s", c);
}

/* Output is atomic and never replaces the input. */
TEST(atomic_and_protected_output) {
    ls_volume v = {0};
    diag_geom(&v.geom, 3, 3, 3, 1, 1, 1);
    float data[27] = {0};
    v.data = data;
    char path[512];
    ls_error err = {0};
    path_in_tmp(path, sizeof path, "in.nii.gz");
    REQUIRE(ls_volume_write(path, &v, LS_DT_U8, NULL, &err) == LS_OK, "%s", err.msg);
    CHECK(ls_volume_write(path, &v, LS_DT_U8, path, &err) == LS_ERR_INPUT, "overwrote the input");
    CHECK(strstr(err.msg, "input") != NULL, "message: %s", err.msg);
    CHECK(ls_volume_write("/nonexistent-dir/x.nii.gz", &v, LS_DT_U8, NULL, &err) != LS_OK, "wrote into a missing dir");
    path_in_tmp(path, sizeof path, "bad.txt");
    CHECK(ls_volume_write(path, &v, LS_DT_U8, NULL, &err) == LS_ERR_INPUT, "accepted a non-NIfTI name");
    /* No temporary files left behind. */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls -a %s | grep -c '\\.tmp' > /dev/null", test_tmpdir());
    CHECK(system(cmd) != 0, "temporary files left in %s", test_tmpdir());
}

/* ----------------------------------------------------------------- bad input */

static void write_bytes(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
}

/* A raw NIfTI-1 header + data, bypassing every check nifticlib's writer makes. */
static void write_n1(const char *path, int ndim, const int *dims, int dtype, int bitpix, const float pix[3],
                     const void *data, size_t nbytes) {
    nifti_1_header h;
    memset(&h, 0, sizeof h);
    h.sizeof_hdr = 348;
    h.dim[0] = (short)ndim;
    for (int i = 1; i <= 7; i++) h.dim[i] = (short)(i <= ndim ? dims[i - 1] : 1);
    h.datatype = (short)dtype;
    h.bitpix = (short)bitpix;
    h.pixdim[0] = 1;
    for (int i = 0; i < 3; i++) h.pixdim[i + 1] = pix[i];
    h.vox_offset = 352;
    memcpy(h.magic, "n+1", 4);
    FILE *f = fopen(path, "wb");
    fwrite(&h, sizeof h, 1, f);
    char ext[4] = {0};
    fwrite(ext, 4, 1, f);
    if (data) fwrite(data, 1, nbytes, f);
    fclose(f);
}

static void expect_input_error(const char *path, const char *what) {
    ls_volume v;
    ls_error err = {0};
    ls_status s = ls_volume_read(path, &v, &err);
    CHECK(s == LS_ERR_INPUT, "%s: status %d (%s)", what, s, err.msg);
    CHECK(strstr(err.msg, path) != NULL, "%s: message does not name the file: %s", what, err.msg);
    CHECK(strchr(err.msg, '\n') == NULL, "%s: message is not one line", what);
    if (s == LS_OK) ls_volume_free(&v);
}

TEST(bad_inputs) {
    char p[512];
    float one[3] = {1, 1, 1};
    int d3[3] = {4, 4, 4};
    uint8_t vox[64] = {0};

    path_in_tmp(p, sizeof p, "missing.nii.gz");
    expect_input_error(p, "missing file");

    path_in_tmp(p, sizeof p, "junk.nii");
    {
        char junk[400];
        memset(junk, 'x', sizeof junk);
        memcpy(junk, "this is not a NIfTI file", 24);
        write_bytes(p, junk, sizeof junk);
    }
    expect_input_error(p, "not a NIfTI");

    path_in_tmp(p, sizeof p, "empty.nii.gz");
    write_bytes(p, "", 0);
    expect_input_error(p, "empty file");

    path_in_tmp(p, sizeof p, "short.nii");
    write_n1(p, 3, d3, NIFTI_TYPE_UINT8, 8, one, vox, 20);
    expect_input_error(p, "dims disagree with file size");

    /* A valid gzip file cut in half. */
    {
        ls_geom g;
        diag_geom(&g, 64, 64, 16, 1, 1, 1);
        static float noise[64 * 64 * 16];
        for (size_t i = 0; i < sizeof noise / sizeof *noise; i++) noise[i] = (float)frand();
        char full[512];
        path_in_tmp(full, sizeof full, "full.nii.gz");
        ls_error err = {0};
        REQUIRE(ls_nifti_write_raw(full, &g, LS_DT_F32, noise, 0, 0, NULL, NULL, &err) == LS_OK, "%s", err.msg);
        char *buf;
        size_t n;
        REQUIRE(ls_read_file(full, 1 << 26, &buf, &n, &err) == LS_OK, "%s", err.msg);
        path_in_tmp(p, sizeof p, "truncated.nii.gz");
        write_bytes(p, buf, n / 2);
        free(buf);
        expect_input_error(p, "truncated .nii.gz");
    }

    float zero[3] = {1, 0, 1}, neg[3] = {1, -2, 1}, nan3[3] = {NAN, 1, 1};
    path_in_tmp(p, sizeof p, "zero_spacing.nii");
    write_n1(p, 3, d3, NIFTI_TYPE_UINT8, 8, zero, vox, 64);
    expect_input_error(p, "zero spacing");
    path_in_tmp(p, sizeof p, "neg_spacing.nii");
    write_n1(p, 3, d3, NIFTI_TYPE_UINT8, 8, neg, vox, 64);
    expect_input_error(p, "negative spacing");
    path_in_tmp(p, sizeof p, "nan_spacing.nii");
    write_n1(p, 3, d3, NIFTI_TYPE_UINT8, 8, nan3, vox, 64);
    expect_input_error(p, "NaN spacing");

    int big[3] = {5000, 2, 2};
    path_in_tmp(p, sizeof p, "absurd_axis.nii");
    write_n1(p, 3, big, NIFTI_TYPE_UINT8, 8, one, NULL, 0);
    expect_input_error(p, "axis > 4096");
    int huge[3] = {4096, 4096, 4096};
    path_in_tmp(p, sizeof p, "absurd_total.nii");
    write_n1(p, 3, huge, NIFTI_TYPE_UINT8, 8, one, NULL, 0);
    expect_input_error(p, "more than 2^31 voxels");

    int d2[2] = {8, 8};
    path_in_tmp(p, sizeof p, "flat.nii");
    write_n1(p, 2, d2, NIFTI_TYPE_UINT8, 8, one, vox, 64);
    expect_input_error(p, "2-D image");

    int d4[4] = {2, 2, 2, 2};
    path_in_tmp(p, sizeof p, "two_volumes.nii");
    write_n1(p, 4, d4, NIFTI_TYPE_UINT8, 8, one, vox, 16);
    expect_input_error(p, "4-D with two volumes");
    int d41[4] = {2, 2, 4, 1};
    path_in_tmp(p, sizeof p, "one_volume4d.nii");
    write_n1(p, 4, d41, NIFTI_TYPE_UINT8, 8, one, vox, 16);
    {
        ls_volume v;
        ls_error err = {0};
        CHECK(ls_volume_read(p, &v, &err) == LS_OK, "4-D with one volume must load: %s", err.msg);
        ls_volume_free(&v);
    }

    float fl[64];
    for (int i = 0; i < 64; i++) fl[i] = (float)i;
    fl[17] = NAN;
    path_in_tmp(p, sizeof p, "nan_voxel.nii");
    write_n1(p, 3, d3, NIFTI_TYPE_FLOAT32, 32, one, fl, sizeof fl);
    expect_input_error(p, "NaN voxel");
    fl[17] = INFINITY;
    path_in_tmp(p, sizeof p, "inf_voxel.nii");
    write_n1(p, 3, d3, NIFTI_TYPE_FLOAT32, 32, one, fl, sizeof fl);
    expect_input_error(p, "Inf voxel");

    path_in_tmp(p, sizeof p, "rgb.nii");
    write_n1(p, 3, d3, NIFTI_TYPE_RGB24, 24, one, vox, 64 * 3 > 64 ? 64 : 64);
    expect_input_error(p, "RGB voxel type");
}

/* zlib's gzip of buf, as one member, or two split at `cut` (the second appended as gzip -c a b would). */
static void gzip_bytes(const char *path, const unsigned char *buf, size_t n, size_t cut) {
    gzFile g = gzopen(path, "wb6");
    gzwrite(g, buf, (unsigned)(cut ? cut : n));
    gzclose(g);
    if (!cut) return;
    g = gzopen(path, "ab6");
    gzwrite(g, buf + cut, (unsigned)(n - cut));
    gzclose(g);
}

/* The whole-buffer gzip paths (gzip.c): parallel multi-member writing gives the same bytes at any thread
 * count and reads back in zlib, nibabel and livseg; multi-member input, content past the voxels (zlib's
 * streaming fallback), corrupt data, and a header claiming more than the file could inflate to. */
TEST(gzip_paths) {
    ls_geom g;
    diag_geom(&g, 64, 64, 300, 1, 1, 2); /* 1.2 MB: two 1 MiB pieces */
    size_t n = (size_t)64 * 64 * 300;
    uint8_t *m = malloc(n);
    for (size_t i = 0; i < n; i++) m[i] = (uint8_t)(frand() < 0.3 ? frand() * 255 : 0);
    char p1[512], p3[512], p[512];
    path_in_tmp(p1, sizeof p1, "gz_t1.nii.gz");
    path_in_tmp(p3, sizeof p3, "gz_t3.nii.gz");
    ls_error err = {0};
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    REQUIRE(ls_nifti_write_raw(p1, &g, LS_DT_U8, m, 0, 0, NULL, NULL, &err) == LS_OK, "%s", err.msg);
    omp_set_num_threads(3);
    REQUIRE(ls_nifti_write_raw(p3, &g, LS_DT_U8, m, 0, 0, NULL, NULL, &err) == LS_OK, "%s", err.msg);
    omp_set_num_threads(threads);
    char *a, *b;
    size_t na, nb;
    REQUIRE(ls_read_file(p1, 1 << 26, &a, &na, &err) == LS_OK && ls_read_file(p3, 1 << 26, &b, &nb, &err) == LS_OK, "%s", err.msg);
    CHECK(na == nb && memcmp(a, b, na) == 0, "1 and 3 threads wrote different files (%zu, %zu bytes)", na, nb);
    free(a), free(b);
    /* zlib reads the members as one stream: header, extension flag, voxels. */
    size_t total = 352 + n;
    unsigned char *raw = malloc(total + (2u << 20));
    gzFile gz = gzopen(p1, "rb");
    int got = gzread(gz, raw, (unsigned)(total + 1));
    gzclose(gz);
    CHECK(got == (int)total && memcmp(raw + 352, m, n) == 0, "zlib read %d of %zu bytes, or other voxels", got, total);
    if (test_python_has("nibabel,numpy")) {
        path_in_tmp(p, sizeof p, "gz_raw.u8");
        write_bytes(p, m, n);
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "%s -c \"import sys, nibabel, numpy; d = numpy.asarray(nibabel.load(sys.argv[1]).dataobj); "
                 "r = numpy.fromfile(sys.argv[2], numpy.uint8).reshape(d.shape, order='F'); sys.exit(0 if (d == r).all() else 1)\" %s %s",
                 test_python(), p1, p);
        CHECK(system(cmd) == 0, "nibabel reads other voxels from %s", p1);
    }
    /* Input from other tools: two members; and 2 MB of content after the voxels (one member longer than
     * what is read, so libdeflate declines and zlib streams). */
    const char *names[2] = {"gz_two_members.nii.gz", "gz_trailing.nii.gz"};
    memset(raw + total, 0x5a, 2u << 20);
    for (int k = 0; k < 2; k++) {
        path_in_tmp(p, sizeof p, names[k]);
        gzip_bytes(p, raw, k ? total + (2u << 20) : total, k ? 0 : total / 3);
        ls_volume v;
        REQUIRE(ls_volume_read(p, &v, &err) == LS_OK, "%s", err.msg);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += v.data[i] != m[i];
        CHECK(bad == 0, "%s: %zu voxels differ", names[k], bad);
        ls_volume_free(&v);
    }
    /* Corrupt deflate data in the middle of the voxels. */
    REQUIRE(ls_read_file(p1, 1 << 26, &a, &na, &err) == LS_OK, "%s", err.msg);
    for (size_t i = na / 2; i < na / 2 + 64; i++) a[i] = (char)(a[i] ^ 0xa5);
    path_in_tmp(p, sizeof p, "gz_corrupt.nii.gz");
    write_bytes(p, a, na);
    free(a);
    expect_input_error(p, "corrupt deflate data");
    /* A 4096 x 4096 x 64 header in a file of a few hundred bytes: refused before allocating 1 GB. */
    {
        nifti_1_header h;
        memcpy(&h, raw, sizeof h);
        h.dim[1] = h.dim[2] = 4096, h.dim[3] = 64;
        memcpy(raw, &h, sizeof h);
        path_in_tmp(p, sizeof p, "gz_bomb.nii.gz");
        gzip_bytes(p, raw, 352 + 1000, 0);
        ls_volume v;
        ls_status s = ls_volume_read(p, &v, &err);
        CHECK(s == LS_ERR_INPUT && strstr(err.msg, "cannot hold"), "status %d: %s", s, err.msg);
        if (!s) ls_volume_free(&v);
    }
    free(raw), free(m);
}

/* ----------------------------------------------------------------- shared data */

/* A 4-D file (a dynamic series): the plain reads refuse it naming --volume; each volume reads alone, as
 * .nii and as .nii.gz, in the file's order and in RAS order, as nibabel reads it; a volume past the last and
 * a 5-D vector image are refused. */
TEST(four_d_volumes) {
    enum { NX = 5, NY = 4, NZ = 3, NT = 3, N3 = NX * NY * NZ };
    static int16_t vox[N3 * NT];
    for (int i = 0; i < N3 * NT; i++) vox[i] = (int16_t)(1000 * (i / N3 + 1) + i % N3);
    int d4[4] = {NX, NY, NZ, NT};
    float pix[3] = {1.5f, 2, 3};
    char p[512], pz[512], cmd[2048];
    path_in_tmp(p, sizeof p, "dyn.nii");
    path_in_tmp(pz, sizeof pz, "dyn.nii.gz");
    write_n1(p, 4, d4, NIFTI_TYPE_INT16, 16, pix, vox, sizeof vox);
    snprintf(cmd, sizeof cmd, "gzip -c '%s' > '%s'", p, pz);
    REQUIRE(system(cmd) == 0, "%s", cmd);
    ls_error err = {0};
    ls_volume v;
    CHECK(ls_volume_read(p, &v, &err) == LS_ERR_INPUT &&
              strstr(err.msg, "4-D image of 3 volumes; livseg segment and info pick one with --volume 1..3"),
          "plain read of a 4-D file: %s", err.msg);
    int64_t nt = 0;
    ls_geom g4;
    CHECK(ls_nifti_volumes(pz, &nt, &g4, &err) == LS_OK && nt == 3 && g4.dim[0] == NX && g4.dim[2] == NZ,
          "volumes: %lld (%s)", (long long)nt, err.msg);
    for (int f = 0; f < 2; f++)
        for (int t = 1; t <= NT; t++) {
            const char *path = f ? pz : p;
            REQUIRE(ls_volume_read_nifti_volume(path, t, &v, &err) == LS_OK, "%s volume %d: %s", path, t, err.msg);
            int bad = v.geom.dim[0] != NX || v.geom.dim[1] != NY || v.geom.dim[2] != NZ;
            for (int i = 0; !bad && i < N3; i++) bad += v.data[i] != (float)(1000 * t + i);
            CHECK(!bad, "%s volume %d: wrong grid or voxels", path, t);
            ls_volume r, want;
            ls_geom g;
            ls_orient o;
            ls_orient_from_geom(&v.geom, &o);
            REQUIRE(ls_volume_read_ras_volume(path, t, &r, &g, &err) == LS_OK && ls_volume_to_ras(&v, &o, &want, &err) == LS_OK,
                    "%s", err.msg);
            CHECK(!memcmp(r.data, want.data, sizeof(float) * N3) && !memcmp(g.dim, v.geom.dim, sizeof g.dim),
                  "%s volume %d in RAS order differs", path, t);
            ls_volume_free(&v), ls_volume_free(&r), ls_volume_free(&want);
        }
    CHECK(ls_volume_read_nifti_volume(pz, 4, &v, &err) == LS_ERR_INPUT && strstr(err.msg, "no volume 4: the file holds 3") &&
              strstr(err.msg, pz),
          "volume 4 of 3: %s", err.msg);
    if (test_python_has("nibabel,numpy")) {
        snprintf(cmd, sizeof cmd,
                 "%s -c \"import sys, nibabel, numpy; d = numpy.asarray(nibabel.load(sys.argv[1]).dataobj); "
                 "sys.exit(0 if d.shape == (5, 4, 3, 3) and (d[..., 1].ravel(order='F') == 2000 + numpy.arange(60)).all() else 1)\" '%s'",
                 test_python(), pz);
        CHECK(system(cmd) == 0, "nibabel reads another volume 2 from %s", pz);
    }
    int d5[5] = {NX, NY, NZ, 1, 3};
    path_in_tmp(p, sizeof p, "vector.nii");
    write_n1(p, 5, d5, NIFTI_TYPE_INT16, 16, pix, vox, sizeof vox);
    CHECK(ls_volume_read_nifti_volume(p, 1, &v, &err) == LS_ERR_INPUT && strstr(err.msg, "vector or tensor"),
          "5-D vector image: %s", err.msg);
}

TEST(shared_manifest_cases) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    char path[1024];
    snprintf(path, sizeof path, "%s/manifest.csv", data);
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL, "cannot open %s", path);
    char line[2048];
    int cases = 0;
    if (!fgets(line, sizeof line, f)) line[0] = 0; /* header */
    while (fgets(line, sizeof line, f)) {
        char id[128], ds[64], mod[16], img[512], lab[512];
        if (sscanf(line, "%127[^,],%63[^,],%15[^,],%511[^,],%511[^,]", id, ds, mod, img, lab) != 5) continue;
        char ip[1200], lp[1200];
        snprintf(ip, sizeof ip, "%s/%s", data, img);
        snprintf(lp, sizeof lp, "%s/%s", data, lab);
        ls_volume vi, vl;
        ls_error err = {0};
        if (ls_volume_read(ip, &vi, &err) != LS_OK) {
            CHECK(0, "%s", err.msg);
            continue;
        }
        if (ls_volume_read(lp, &vl, &err) != LS_OK) {
            CHECK(0, "%s", err.msg);
            ls_volume_free(&vi);
            continue;
        }
        /* Same grid in world space; the voxel order may differ (the DICOM case's mask was written by
         * another tool with y flipped), so compare in RAS order. */
        {
            ls_orient oi, ol;
            ls_orient_from_geom(&vi.geom, &oi);
            ls_orient_from_geom(&vl.geom, &ol);
            ls_volume ri, rl;
            REQUIRE(ls_volume_to_ras(&vi, &oi, &ri, &err) == LS_OK && ls_volume_to_ras(&vl, &ol, &rl, &err) == LS_OK, "%s", err.msg);
            CHECK(memcmp(ri.geom.dim, rl.geom.dim, sizeof ri.geom.dim) == 0, "%s: mask dims differ", id);
            CHECK(aff_diff(ri.geom.affine, rl.geom.affine) < 1e-3, "%s: mask affine differs by %g mm", id,
                  aff_diff(ri.geom.affine, rl.geom.affine));
            ls_volume_free(&ri);
            ls_volume_free(&rl);
        }
        size_t n = ls_volume_nvox(&vl), fg = 0, bad = 0;
        for (size_t i = 0; i < n; i++) {
            fg += vl.data[i] == 1;
            bad += vl.data[i] != 0 && vl.data[i] != 1;
        }
        CHECK(bad == 0 && fg > 0, "%s: mask has %zu non-binary values, %zu liver voxels", id, bad, fg);
        if (strcmp(ds, "btcv") == 0) {
            float lo = 1e9f, hi = -1e9f;
            for (size_t i = 0; i < n; i++) lo = fminf(lo, vi.data[i]), hi = fmaxf(hi, vi.data[i]);
            CHECK(fabsf(lo + 125) < 0.01f && fabsf(hi - 275) < 0.01f, "%s: HU range %g..%g, expected -125..275", id, lo, hi);
        }
        /* The liver sits on the patient's right: in RAS order its centroid has the smaller x. */
        ls_orient o;
        ls_orient_from_geom(&vl.geom, &o);
        ls_volume r;
        REQUIRE(ls_volume_to_ras(&vl, &o, &r, &err) == LS_OK, "%s", err.msg);
        double cx = 0, cnt = 0;
        for (int64_t k = 0; k < r.geom.dim[2]; k++)
            for (int64_t j = 0; j < r.geom.dim[1]; j++)
                for (int64_t i = 0; i < r.geom.dim[0]; i++)
                    if (r.data[i + r.geom.dim[0] * (j + r.geom.dim[1] * k)] > 0.5f) cx += (double)i, cnt++;
        /* RAS+: voxel axis 0 grows towards the patient's right, where the liver is (full fields of
         * view only; the TotalSegmentator crops are off-centre). */
        if (strcmp(ds, "totalseg") != 0)
            CHECK(cnt > 0 && cx / cnt > r.geom.dim[0] / 2.0, "%s: liver centroid at i=%.1f of %lld: not on the right",
                  id, cx / cnt, (long long)r.geom.dim[0]);
        ls_volume_free(&r);
        ls_volume_free(&vi);
        ls_volume_free(&vl);
        cases++;
    }
    fclose(f);
    CHECK(cases >= 50, "only %d manifest cases checked", cases);
}

int main(void) {
    RUN(roundtrip_every_dtype);
    RUN(write_converts_and_clamps);
    RUN(scaling_applied);
    RUN(geometry_rules);
    RUN(nifti2_and_compression);
    RUN(sibling_names_not_confused);
    RUN(reorient_48);
    RUN(read_ras_48);
    RUN(orient_codes);
    RUN(atomic_and_protected_output);
    RUN(bad_inputs);
    RUN(gzip_paths);
    RUN(four_d_volumes);
    RUN(shared_manifest_cases);
    return test_summary();
}
