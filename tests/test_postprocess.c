/*
 * test_postprocess.c — largest component and hole filling against scipy.ndimage on fresh random
 * masks (tests/ref/postprocess_ref.py), plus hand-made cases whose answer is known.
 */
#include <math.h>
#include <omp.h>
#include <time.h>

#include "postprocess.h"
#include "test.h"


TEST(known_cases) {
    int64_t d[3] = {9, 9, 9};
    uint8_t m[729] = {0};
    ls_error err = {0};
    /* A hollow cube (shell of 5x5x5) gets its centre filled; a lone voxel far away is dropped. */
    for (int k = 1; k <= 5; k++)
        for (int j = 1; j <= 5; j++)
            for (int i = 1; i <= 5; i++)
                m[i + 9 * (j + 9 * k)] = (i == 1 || i == 5 || j == 1 || j == 5 || k == 1 || k == 5);
    m[8 + 9 * (8 + 9 * 8)] = 1;
    /* Diagonal neighbour of the shell corner: 26-connected, so it stays. */
    m[0 + 9 * (0 + 9 * 0)] = 1;
    int64_t n;
    int64_t kept, left = 0;
    REQUIRE(ls_mask_largest_component(m, d, &n, &kept, &err) == LS_OK, "%s", err.msg);
    CHECK(n == 2, "components: %lld", (long long)n);
    for (int i = 0; i < 729; i++) left += m[i];
    CHECK(kept == left && kept == 99, "kept %lld voxels, %lld left (the 98 of the shell and its diagonal neighbour)",
          (long long)kept, (long long)left);
    CHECK(m[8 + 9 * (8 + 9 * 8)] == 0 && m[0] == 1, "wrong voxels kept");
    REQUIRE(ls_mask_fill_holes(m, d, &err) == LS_OK, "%s", err.msg);
    CHECK(m[3 + 9 * (3 + 9 * 3)] == 1, "cavity not filled");
    uint8_t empty[8] = {0};
    int64_t d2[3] = {2, 2, 2};
    CHECK(ls_mask_largest_component(empty, d2, &n, &kept, &err) == LS_OK && n == 0 && kept == 0, "empty mask");
    CHECK(ls_mask_fill_holes(empty, d2, &err) == LS_OK && empty[0] == 0, "empty fill");
}

TEST(against_scipy) {
    if (!test_python_has("scipy.ndimage")) SKIP("%s with scipy not available (set LS_PYTHON)", test_python());
    unsigned seed = test_seed();
    srand(seed);
    int64_t d[3] = {37, 29, 23};
    size_t n = 37 * 29 * 23;
    uint8_t *m = malloc(n), *a = malloc(n), *b = malloc(n), *c = malloc(n), *ref = malloc(n);
    for (int trial = 0; trial < 3; trial++) {
        /* Random balls and shells: several components, cavities, tunnels. */
        memset(m, 0, n);
        for (int s = 0; s < 12; s++) {
            double cx = rand() % 37, cy = rand() % 29, cz = rand() % 23, r = 2 + rand() % 6;
            int shell = rand() % 3 == 0;
            for (int64_t k = 0; k < d[2]; k++)
                for (int64_t j = 0; j < d[1]; j++)
                    for (int64_t i = 0; i < d[0]; i++) {
                        double q = (i - cx) * (i - cx) + (j - cy) * (j - cy) + (k - cz) * (k - cz);
                        if (q <= r * r && (!shell || q >= (r - 1.5) * (r - 1.5))) m[i + d[0] * (j + d[1] * k)] = 1;
                    }
        }
        for (size_t i = 0; i < n / 50; i++) m[(size_t)rand() % n] ^= 1;
        /* Any nonzero value is foreground (the row scans test eight voxels at a time). */
        if (trial == 2)
            for (size_t i = 0; i < n; i++)
                if (m[i]) m[i] = (uint8_t)(1 + rand() % 255);
        char path[600];
        snprintf(path, sizeof path, "%s/mask.u8", test_tmpdir());
        FILE *f = fopen(path, "wb");
        fwrite(m, 1, n, f);
        fclose(f);
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "%s tests/ref/postprocess_ref.py %s 37 29 23 > /dev/null", test_python(), test_tmpdir());
        REQUIRE(system(cmd) == 0, "reference script failed: %s", cmd);
        memcpy(a, m, n), memcpy(b, m, n), memcpy(c, m, n);
        ls_error err = {0};
        REQUIRE(ls_mask_largest_component(a, d, NULL, NULL, &err) == LS_OK, "%s", err.msg);
        REQUIRE(ls_mask_fill_holes(b, d, &err) == LS_OK, "%s", err.msg);
        REQUIRE(ls_mask_fill_holes_slices(c, d, &err) == LS_OK, "%s", err.msg);
        const char *names[3] = {"largest", "fill3d", "fill2d"};
        uint8_t *got[3] = {a, b, c};
        for (int t = 0; t < 3; t++) {
            snprintf(path, sizeof path, "%s/%s.u8", test_tmpdir(), names[t]);
            f = fopen(path, "rb");
            REQUIRE(f && fread(ref, 1, n, f) == n, "cannot read %s", path);
            fclose(f);
            size_t diff = 0;
            for (size_t i = 0; i < n; i++) diff += (got[t][i] != 0) != ref[i];
            CHECK(diff == 0, "trial %d %s: %zu voxels differ from scipy", trial, names[t], diff);
        }
    }
    free(m), free(a), free(b), free(c), free(ref);
}

TEST(measure) {
    ls_volume v = {0};
    int64_t d[3] = {10, 10, 10};
    double aff[4][4] = {{-1, 0, 0, 5}, {0, 2, 0, -4}, {0, 0, 3, 1}, {0, 0, 0, 1}};
    ls_geom_from_affine(&v.geom, d, aff);
    float data[1000];
    uint8_t m[1000] = {0};
    for (int i = 0; i < 1000; i++) data[i] = (float)(i % 7);
    double sum = 0, sum2 = 0;
    int n = 0;
    for (int k = 2; k < 6; k++)
        for (int j = 3; j < 6; j++)
            for (int i = 1; i < 3; i++) {
                int p = i + 10 * (j + 10 * k);
                m[p] = 1, sum += data[p], sum2 += data[p] * data[p], n++;
            }
    v.data = data;
    ls_mask_stats s;
    ls_error err = {0};
    REQUIRE(ls_mask_measure(&v, m, &s, &err) == LS_OK, "%s", err.msg);
    double mean = sum / n;
    CHECK(s.voxels == 24 && fabs(s.volume_ml - 24 * 6 / 1000.0) < 1e-12, "voxels %lld volume %g", (long long)s.voxels, s.volume_ml);
    CHECK(fabs(s.mean - mean) < 1e-9 && fabs(s.std - sqrt(sum2 / n - mean * mean)) < 1e-9, "mean %g std %g", s.mean, s.std);
    /* x = 5 - i over i in 1..2; y = -4 + 2j over 3..5; z = 1 + 3k over 2..5 */
    CHECK(s.bbox_min[0] == 3 && s.bbox_max[0] == 4 && s.bbox_min[1] == 2 && s.bbox_max[1] == 6 &&
          s.bbox_min[2] == 7 && s.bbox_max[2] == 16, "bbox %g..%g %g..%g %g..%g", s.bbox_min[0], s.bbox_max[0],
          s.bbox_min[1], s.bbox_max[1], s.bbox_min[2], s.bbox_max[2]);
    memset(m, 0, sizeof m);
    REQUIRE(ls_mask_measure(&v, m, &s, &err) == LS_OK, "%s", err.msg);
    CHECK(s.voxels == 0 && s.volume_ml == 0 && s.mean == 0, "empty mask");
}

/* The clean-up and the measuring give the same bytes and figures at any thread count (slabs, slices
 * and rows are split among threads). */
TEST(threads_agree) {
    int64_t d[3] = {91, 77, 61};
    size_t n = (size_t)(d[0] * d[1] * d[2]);
    uint8_t *m = malloc(n), *out[4][3];
    float *img = malloc(n * sizeof *img);
    srand(4242);
    for (size_t i = 0; i < n; i++) m[i] = rand() % 3 == 0 ? (uint8_t)(1 + rand() % 255) : 0, img[i] = (float)(rand() % 1000) - 300.5f;
    ls_volume v = {0};
    double aff[4][4] = {{0.7, 0, 0, 1}, {0, 0.8, 0, 2}, {0, 0, 2.5, 3}, {0, 0, 0, 1}};
    ls_geom_from_affine(&v.geom, d, aff);
    v.data = img;
    ls_mask_stats st[4];
    int counts[4] = {1, 2, 3, 7}, saved = omp_get_max_threads();
    ls_error err = {0};
    for (int t = 0; t < 4; t++) {
        omp_set_num_threads(counts[t]);
        for (int op = 0; op < 3; op++) {
            out[t][op] = malloc(n);
            memcpy(out[t][op], m, n);
            ls_status s = op == 0 ? ls_mask_largest_component(out[t][op], d, NULL, NULL, &err)
                        : op == 1 ? ls_mask_fill_holes(out[t][op], d, &err)
                                  : ls_mask_fill_holes_slices(out[t][op], d, &err);
            REQUIRE(s == LS_OK, "%s", err.msg);
        }
        REQUIRE(ls_mask_measure(&v, m, &st[t], &err) == LS_OK, "%s", err.msg);
    }
    omp_set_num_threads(saved);
    for (int t = 1; t < 4; t++) {
        for (int op = 0; op < 3; op++)
            CHECK(memcmp(out[t][op], out[0][op], n) == 0, "op %d differs at %d threads", op, counts[t]);
        CHECK(memcmp(&st[t], &st[0], sizeof st[0]) == 0, "measure differs at %d threads: mean %.17g vs %.17g", counts[t],
              st[t].mean, st[0].mean);
    }
    /* And against a plain loop. */
    double sum = 0;
    int64_t cnt = 0;
    for (size_t i = 0; i < n; i++)
        if (m[i]) sum += img[i], cnt++;
    CHECK(st[0].voxels == cnt && fabs(st[0].mean - sum / cnt) < 1e-9 * fabs(sum / cnt), "voxels %lld vs %lld, mean %g vs %g",
          (long long)st[0].voxels, (long long)cnt, st[0].mean, sum / cnt);
    for (int t = 0; t < 4; t++)
        for (int op = 0; op < 3; op++) free(out[t][op]);
    free(m), free(img);
}

int main(void) {
    RUN(measure);
    RUN(known_cases);
    RUN(against_scipy);
    RUN(threads_agree);
    return test_summary();
}
