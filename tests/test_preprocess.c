/*
 * test_preprocess.c — teacher slice preprocessing: bilinear resize against torch's F.interpolate,
 * percentiles against numpy, the CT window and MR normalisation, the display orientation (patient's
 * right on the image's left, anterior at the top), and the ImageNet channels.
 */
#include <time.h>

#include "preprocess.h"
#include <omp.h>

#include "test.h"

TEST(resize_and_percentiles_match_reference) {
    if (!test_python_has("torch, numpy")) SKIP("%s cannot import torch and numpy (set LS_PYTHON)", test_python());
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s tests/ref/preprocess_ref.py %s %u", test_python(), test_tmpdir(), test_seed());
    REQUIRE(system(cmd) == 0, "reference failed: %s", cmd);
    char path[700];
    snprintf(path, sizeof path, "%s/plane.bin", test_tmpdir());
    float *plane = test_read_f32(path, 37 * 53);
    REQUIRE(plane, "no plane");
    struct { const char *name; int h, w; } sizes[] = {{"up", 224, 224}, {"down", 19, 31}, {"wide", 40, 90}};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s.bin", test_tmpdir(), sizes[i].name);
        size_t n = (size_t)sizes[i].h * sizes[i].w;
        float *ref = test_read_f32(path, n), *got = malloc(n * sizeof(float));
        REQUIRE(ref, "no %s", path);
        ls_resize_bilinear(plane, 37, 53, got, sizes[i].h, sizes[i].w);
        /* Relative to the data's unit scale (standard normal values): PyTorch's index arithmetic
         * differs from ours in the last bits, about 3e-6 of a unit at most. */
        double e = test_max_rel_err(got, ref, n, 1.0);
        CHECK(e <= 1e-5, "resize to %dx%d: max rel err %.2e", sizes[i].h, sizes[i].w, e);
        free(ref), free(got);
    }
    /* Padded (letterboxed) and back. */
    struct { const char *name; int py, px, h, w; } pads[] = {{"padup", 8, 0, 224, 224}, {"padwide", 8, 0, 40, 90}, {"padcols", 0, 3, 19, 31}};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s.bin", test_tmpdir(), pads[i].name);
        size_t n = (size_t)pads[i].h * pads[i].w;
        float *ref = test_read_f32(path, n), *got = malloc(n * sizeof(float));
        REQUIRE(ref, "no %s", path);
        ls_resize_padded(plane, 37, 53, pads[i].py, pads[i].px, 0.3f, got, pads[i].h, pads[i].w);
        double e = test_max_rel_err(got, ref, n, 1.0);
        CHECK(e <= 1e-5, "%s: max rel err %.2e", pads[i].name, e);
        free(ref), free(got);
    }
    snprintf(path, sizeof path, "%s/canvas.bin", test_tmpdir());
    float *canvas = test_read_f32(path, 48 * 48), got[37 * 53];
    snprintf(path, sizeof path, "%s/unpad.bin", test_tmpdir());
    float *ref = test_read_f32(path, 37 * 53);
    REQUIRE(canvas && ref, "no %s", path);
    ls_resize_unpad(canvas, 48, 48, 37, 53, 5, 3, got);
    double e = test_max_rel_err(got, ref, 37 * 53, 1.0);
    CHECK(e <= 1e-5, "unpad: max rel err %.2e", e);
    free(canvas), free(ref), free(plane);
    snprintf(path, sizeof path, "%s/values.bin", test_tmpdir());
    float *v = test_read_f32(path, 10007);
    snprintf(path, sizeof path, "%s/pct.bin", test_tmpdir());
    float *pct = test_read_f32(path, 6);
    REQUIRE(v && pct, "no percentile reference");
    double q[6] = {0, 0.5, 13.7, 50, 99.5, 100};
    for (int i = 0; i < 6; i++) {
        float got = ls_percentile(v, 10007, q[i]); /* reorders v: each call must still be right */
        CHECK(fabsf(got - pct[i]) <= 1e-4f * fmaxf(1, fabsf(pct[i])), "percentile %g: %g vs numpy %g", q[i], got, pct[i]);
    }
    free(v), free(pct);
}

/* A volume with a bright block at the patient's right-anterior corner of every slice. */
static void marker_volume(ls_volume *v, float background, float marker) {
    int64_t d[3] = {20, 10, 3};
    double aff[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 2, 0}, {0, 0, 0, 1}};
    memset(v, 0, sizeof *v);
    ls_geom_from_affine(&v->geom, d, aff);
    v->data = malloc(600 * sizeof(float));
    for (int i = 0; i < 600; i++) v->data[i] = background;
    for (int k = 0; k < 3; k++)
        for (int j = 7; j < 10; j++)
            for (int i = 15; i < 20; i++) v->data[i + 20 * (j + 10 * k)] = marker; /* large i: right; large j: anterior */
}

TEST(ct_window_orientation_channels) {
    ls_volume v;
    marker_volume(&v, -1000, 275);
    ls_prep p;
    ls_error err = {0};
    REQUIRE(ls_prep_init(&p, &v, LS_MOD_CT, 10, 20, &err) == LS_OK, "%s", err.msg);
    CHECK(p.lo == -125 && p.hi == 275, "CT window %g..%g", p.lo, p.hi);
    float scratch[200], out[3 * 200];
    ls_prep_slice(&p, &v, 1, scratch, out);
    /* Same size: no interpolation. Marker (grey 1) at rows 0-2, columns 0-4; air (grey 0) elsewhere. */
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    int bad = 0;
    for (int c = 0; c < 3; c++)
        for (int r = 0; r < 10; r++)
            for (int col = 0; col < 20; col++) {
                float g = (r < 3 && col < 5) ? 1.0f : 0.0f;
                bad += fabsf(out[c * 200 + r * 20 + col] - (g - mean[c]) / sd[c]) > 1e-5f;
            }
    CHECK(bad == 0, "%d pixels differ from the expected layout", bad);
    CHECK(ls_modality_guess(&v) == LS_MOD_CT, "guess CT");
    free(v.data);
}

/* A gamma other than 1 (training's teacher variants) maps each grey value g to g^gamma before the resize;
 * at the slice's own size the resize is the identity, so every pixel is exactly powf(g, gamma). */
TEST(gamma_curve) {
    ls_volume v;
    marker_volume(&v, -1000, 275);
    for (int i = 0; i < 600; i++) v.data[i] = -125.0f + (float)(i % 41) * 10.0f; /* greys 0, 0.025, .., 1 */
    ls_prep p;
    ls_error err = {0};
    REQUIRE(ls_prep_init(&p, &v, LS_MOD_CT, 10, 20, &err) == LS_OK && p.gamma == 1, "%s gamma %g", err.msg, p.gamma);
    float scratch[200], plain[200], bright[200];
    ls_prep_grey(&p, &v, 1, scratch, plain, 10, 20);
    p.gamma = 0.5f;
    ls_prep_grey(&p, &v, 1, scratch, bright, 10, 20);
    int bad = 0, lifted = 0;
    for (int i = 0; i < 200; i++) {
        bad += bright[i] != powf(plain[i], 0.5f);
        lifted += bright[i] > plain[i];
    }
    CHECK(bad == 0 && lifted > 100, "%d pixels differ from g^0.5; %d of 200 brighter", bad, lifted);
    free(v.data);
}

TEST(mr_percentile_window) {
    ls_volume v;
    marker_volume(&v, 100, 900);
    ls_prep p;
    ls_error err = {0};
    REQUIRE(ls_prep_init(&p, &v, LS_MOD_MR, 224, 224, &err) == LS_OK, "%s", err.msg);
    CHECK(p.lo == 100 && p.hi == 900, "MR window %g..%g", p.lo, p.hi);
    CHECK(ls_modality_guess(&v) == LS_MOD_MR, "guess MR");
    /* A DICOM series' Modality tag decides, whatever the values; a NIfTI description does not. */
    snprintf(v.format, sizeof v.format, "DICOM");
    snprintf(v.descrip, sizeof v.descrip, "DICOM CT");
    CHECK(ls_modality_guess(&v) == LS_MOD_CT, "DICOM CT without values below -100 guessed MR");
    v.data[0] = -500;
    snprintf(v.descrip, sizeof v.descrip, "DICOM MR");
    CHECK(ls_modality_guess(&v) == LS_MOD_MR, "DICOM MR with a value of -500 guessed CT");
    snprintf(v.descrip, sizeof v.descrip, "DICOM OT");
    CHECK(ls_modality_guess(&v) == LS_MOD_CT, "DICOM of another modality: not guessed from its values");
    snprintf(v.format, sizeof v.format, "NIfTI-1");
    snprintf(v.descrip, sizeof v.descrip, "DICOM MR");
    CHECK(ls_modality_guess(&v) == LS_MOD_CT, "a NIfTI description taken for a DICOM tag");
    ls_modality m;
    CHECK(ls_modality_parse("MR", &m, &err) == LS_OK && m == LS_MOD_MR, "parse MR");
    CHECK(ls_modality_parse("pet", &m, &err) == LS_ERR_INPUT && strstr(err.msg, "pet"), "parse pet: %s", err.msg);
    free(v.data);
}

/* NaN voxels (common outside the body in MR files) are left out of the percentiles, as
 * numpy.nanpercentile does, and normalise to 0; a volume of nothing but NaN is refused. */
TEST(mr_nan_voxels) {
    ls_volume v;
    marker_volume(&v, 0, 0);
    for (int i = 0; i < 600; i++) v.data[i] = i < 500 ? (float)i : NAN; /* finite 0..499, then 100 NaN */
    ls_prep p;
    ls_error err = {0};
    REQUIRE(ls_prep_init(&p, &v, LS_MOD_MR, 16, 16, &err) == LS_OK, "%s", err.msg);
    /* np.nanpercentile(np.arange(500), [0.5, 99.5]) = [2.495, 496.505] */
    CHECK(fabsf(p.lo - 2.495f) < 1e-4f && fabsf(p.hi - 496.505f) < 1e-3f, "window %.6g..%.6g", p.lo, p.hi);
    float img[600], out[3 * 16 * 16];
    ls_prep_slice(&p, &v, 2, img, out); /* slice 2 holds voxels 400..599: 100 finite, 100 NaN */
    int nonfinite = 0;
    for (int i = 0; i < 3 * 16 * 16; i++) nonfinite += !isfinite(out[i]);
    CHECK(nonfinite == 0, "%d non-finite outputs from a slice with NaN voxels", nonfinite);
    /* Output row 4 samples image rows 0-1 (anterior, j = 9 and 8: the NaN half; rows 0-3 show the padding of
     * the 20 x 10 mm field of view): it must read as 0 -> (0 - mean) / std */
    CHECK(fabsf(out[4 * 16 + 8] - (0 - 0.485f) / 0.229f) < 1e-5f, "NaN pixel normalised to %g", out[4 * 16 + 8]);
    for (int i = 0; i < 600; i++) v.data[i] = NAN;
    CHECK(ls_prep_init(&p, &v, LS_MOD_MR, 16, 16, &err) == LS_ERR_INPUT && strstr(err.msg, "finite"),
          "all-NaN volume: %s", err.msg);
    free(v.data);
}

/* A slice's field of view keeps its shape: the padding for rectangular fields of view (in voxels and in mm),
 * none for a square one; shown at its canvas' own size, a slice comes back from ls_prep_grey and
 * ls_unprep_plane unchanged, at the place it left. */
TEST(letterbox) {
    ls_volume v;
    marker_volume(&v, -1000, 275); /* 20 x 10 voxels of 1 mm: 20 x 10 mm */
    int py, px;
    ls_prep_padding(&v, 16, 16, &py, &px);
    CHECK(py == 5 && px == 0, "20 x 10 mm at 16 x 16: pad %d rows, %d columns (want 5, 0)", py, px);
    ls_prep_padding(&v, 20, 40, &py, &px);
    CHECK(py == 0 && px == 0, "20 x 10 mm at 20 x 40 (its own shape): pad %d, %d", py, px);
    double aff[4][4] = {{0.5, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 2, 0}, {0, 0, 0, 1}};
    const int64_t d[3] = {20, 10, 3};
    ls_geom_from_affine(&v.geom, d, aff); /* 10 x 10 mm in 20 x 10 voxels: square */
    ls_prep_padding(&v, 224, 224, &py, &px);
    CHECK(py == 0 && px == 0, "a square field of view of oblong voxels: pad %d, %d", py, px);
    aff[0][0] = -0.25, aff[1][1] = 2; /* 5 x 20 mm: columns */
    ls_geom_from_affine(&v.geom, d, aff);
    ls_prep_padding(&v, 224, 224, &py, &px);
    CHECK(py == 0 && px == 30, "5 x 20 mm in 20 x 10 voxels: pad %d, %d (want 0, 30)", py, px);
    aff[0][0] = 1e-9, aff[1][1] = 1e6; /* absurd, but a header may say it: bounded, no overflow */
    ls_geom_from_affine(&v.geom, d, aff);
    ls_prep_padding(&v, 224, 224, &py, &px);
    CHECK(py == 0 && px == 1 << 20, "a spacing ratio of 1e15: pad %d, %d", py, px);
    aff[0][0] = 1, aff[1][1] = 1;
    ls_geom_from_affine(&v.geom, d, aff);
    for (int i = 0; i < 600; i++) v.data[i] = -125.0f + (float)((i * 37) % 400); /* greys in [0, 1) */
    ls_prep p;
    ls_error err = {0};
    REQUIRE(ls_prep_init(&p, &v, LS_MOD_CT, 20, 20, &err) == LS_OK, "%s", err.msg);
    float scratch[200], shown[400], back[200];
    ls_prep_grey(&p, &v, 1, scratch, shown, 20, 20);
    int bad = 0;
    for (int r = 0; r < 20; r++) /* rows 0-4 and 15-19 are the padding, grey 0 */
        for (int c = 0; c < 20; c++) bad += (r < 5 || r >= 15) && shown[r * 20 + c] != 0;
    ls_unprep_plane(shown, 20, 20, &v, scratch, back);
    for (int i = 0; i < 200; i++) bad += fabsf(back[i] - (v.data[200 + i] + 125.0f) / 400.0f) > 1e-6f;
    CHECK(bad == 0, "%d pixels wrong in the padding or after the round trip", bad);
    free(v.data);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The counting percentiles against a sort of the finite values, exactly, at several thread counts: signed
 * zeros, subnormals, ties, huge magnitudes, NaN and infinities (left out). */
TEST(percentiles_exact) {
    size_t n = 200003;
    float *v = malloc(n * sizeof *v), *fin = malloc(n * sizeof *fin);
    srand(99);
    size_t nf = 0;
    for (size_t i = 0; i < n; i++) {
        int kind = rand() % 10;
        float x = kind == 0 ? (rand() % 2 ? 0.0f : -0.0f)
                : kind == 1 ? (float)(rand() % 7) * 1e-42f
                : kind == 2 ? (rand() % 3 ? NAN : (rand() % 2 ? INFINITY : -INFINITY))
                : kind == 3 ? (float)(rand() % 5)
                : kind == 4 ? (float)((rand() - RAND_MAX / 2) * 1e30)
                            : (float)(rand() - RAND_MAX / 2) / 977.0f;
        v[i] = x;
        if (isfinite(x)) fin[nf++] = x;
    }
    qsort(fin, nf, sizeof *fin, cmp_float);
    double q[7] = {0, 0.5, 13.7, 50, 99.5, 99.99, 100};
    float want[7];
    for (int i = 0; i < 7; i++) {
        double pos = q[i] / 100.0 * (double)(nf - 1);
        size_t k = (size_t)pos;
        double frac = pos - (double)k;
        want[i] = frac == 0 ? fin[k] : (float)(fin[k] + (fin[k + 1] - fin[k]) * frac);
    }
    int counts[3] = {1, 3, 4}, saved = omp_get_max_threads();
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(counts[t]);
        float got[7];
        size_t cnt;
        ls_error err = {0};
        REQUIRE(ls_percentiles_finite(v, n, q, 7, got, &cnt, &err) == LS_OK, "%s", err.msg);
        CHECK(cnt == nf, "%zu finite values counted, %zu present", cnt, nf);
        for (int i = 0; i < 7; i++)
            CHECK(got[i] == want[i], "%d threads: percentile %g is %.9g, sorting gives %.9g", counts[t], q[i], got[i], want[i]);
    }
    omp_set_num_threads(saved);
    free(v), free(fin);
}

int main(void) {
    RUN(resize_and_percentiles_match_reference);
    RUN(ct_window_orientation_channels);
    RUN(gamma_curve);
    RUN(mr_percentile_window);
    RUN(percentiles_exact);
    RUN(mr_nan_voxels);
    RUN(letterbox);
    return test_summary();
}
