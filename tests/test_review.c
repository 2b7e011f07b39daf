/*
 * test_review.c — the mask review (src/review.c) on hand-made RAS volumes whose figures are known exactly:
 * a box of body (with a spine, behind or in front) with a box of liver placed right, left, against the
 * scan's ends, empty; each flag raised
 * when, and only when, its bound is crossed; the result independent of the thread count. Segment's use of
 * it on real scans is in test_segment (shipped_models, review_real).
 */
#include <math.h>
#include <omp.h>

#include "review.h"
#include "test.h"

/* 40 x 30 x 20 voxels of 2 x 1.5 x 3 mm in RAS order; body (100) at x 4..35, y 5..24 (centre 19.5, 14.5),
 * background 0 and a few NaN (MR files hold NaN outside the body: not body); bone (400) at x 18..21 and y
 * 5..6, posterior (13.5 mm behind the centre), or y 23..24 with spine_front. */
enum { NX = 40, NY = 30, NZ = 20 };

static void make_volume(ls_volume *v, float *data, int spine_front) {
    double aff[4][4] = {{2, 0, 0, -40}, {0, 1.5, 0, -20}, {0, 0, 3, 10}, {0, 0, 0, 1}};
    int64_t d[3] = {NX, NY, NZ};
    *v = (ls_volume){0};
    ls_geom_from_affine(&v->geom, d, aff);
    v->data = data;
    for (int k = 0; k < NZ; k++)
        for (int j = 0; j < NY; j++)
            for (int i = 0; i < NX; i++)
                data[i + NX * (j + NY * k)] = i >= 4 && i < 36 && j >= 5 && j < 25 ? 100.0f : (i + j) % 7 ? 0.0f : NAN;
    for (int k = 0; k < NZ; k++)
        for (int j = spine_front ? 23 : 5; j < (spine_front ? 25 : 7); j++)
            for (int i = 18; i < 22; i++) data[i + NX * (j + NY * k)] = 400.0f;
}

/* Liver box x0..x1-1, y 8..17, z0..z1-1. */
static void liver_box(uint8_t *m, int x0, int x1, int z0, int z1) {
    memset(m, 0, (size_t)NX * NY * NZ);
    for (int k = z0; k < z1; k++)
        for (int j = 8; j < 18; j++)
            for (int i = x0; i < x1; i++) m[i + NX * (j + NY * k)] = 1;
}

static ls_review review(const ls_volume *v, const uint8_t *m, double ml, int64_t above, int64_t unsure, int64_t kept) {
    ls_review_counts c = {above, unsure, kept};
    ls_review r;
    ls_error err = {0};
    if (ls_review_mask(v, m, 50.0f, 1, ml, &c, &r, &err) != LS_OK) {
        CHECK(0, "ls_review_mask: %s", err.msg);
        r = (ls_review){0};
    }
    return r;
}

TEST(known_masks) {
    static float data[NX * NY * NZ];
    static uint8_t m[NX * NY * NZ];
    ls_volume v;
    make_volume(&v, data, 0);
    /* Body centre x = 19.5; liver x 26..33, centre 29.5: 10 voxels = 20 mm to the right. */
    liver_box(m, 26, 34, 5, 15);
    ls_review r = review(&v, m, 1500, 1000, 100, 900);
    CHECK(r.flags == 0, "a plausible liver raised flags 0x%x", r.flags);
    CHECK(fabs(r.right_mm - 20.0) < 1e-9, "right_mm %.12g, want 20", r.right_mm);
    CHECK(r.end_area[0] == 0 && r.end_area[1] == 0, "end areas %g %g", r.end_area[0], r.end_area[1]);
    CHECK(fabs(r.kept_fraction - 0.9) < 1e-12 && fabs(r.unsure_fraction - 0.1) < 1e-12, "fractions %g %g",
          r.kept_fraction, r.unsure_fraction);
    CHECK(fabs(r.spine_mm + 13.5) < 1e-9, "spine_mm %.12g, want -13.5", r.spine_mm);
    /* The spine in front (an anterior-posterior error): flagged on CT; MR has no bone to go by. */
    make_volume(&v, data, 1);
    r = review(&v, m, 1500, 1000, 100, 900);
    CHECK(r.flags == LS_REVIEW_SPINE_ANTERIOR && fabs(r.spine_mm - 13.5) < 1e-9, "spine in front: flags 0x%x, %g mm",
          r.flags, r.spine_mm);
    ls_review_counts cnt = {1000, 100, 900};
    ls_error err = {0};
    REQUIRE(ls_review_mask(&v, m, 50.0f, 0, 1500, &cnt, &r, &err) == LS_OK, "%s", err.msg);
    CHECK(r.flags == 0 && isnan(r.spine_mm), "MR: flags 0x%x, spine_mm %g", r.flags, r.spine_mm);
    make_volume(&v, data, 0);
    /* x 23..29, centre 26: 13 mm right, under the 15 mm bound. */
    liver_box(m, 23, 30, 5, 15);
    r = review(&v, m, 1500, 1000, 100, 900);
    CHECK(r.flags == LS_REVIEW_LEFT && fabs(r.right_mm - 13.0) < 1e-9, "13 mm right: flags 0x%x, right_mm %g",
          r.flags, r.right_mm);
    /* On the patient's left: x 6..13, centre 9.5, 20 mm left. */
    liver_box(m, 6, 14, 5, 15);
    r = review(&v, m, 1500, 1000, 100, 900);
    CHECK(r.flags == LS_REVIEW_LEFT && fabs(r.right_mm + 20.0) < 1e-9, "left: flags 0x%x, right_mm %g", r.flags,
          r.right_mm);
    char line[512];
    ls_review_describe(&r, LS_REVIEW_LEFT, line, sizeof line);
    CHECK(strstr(line, "20 mm left"), "left described as: %s", line);
    /* Against the inferior end, and a quarter of the largest area on the superior end's slice. */
    liver_box(m, 26, 34, 0, 19);
    for (int j = 8; j < 18; j++)
        for (int i = 26; i < 34; i++) m[i + NX * (j + NY * (NZ - 1))] = (j < 13 && i < 30);
    r = review(&v, m, 300, 1000, 100, 900);
    CHECK(r.flags == (LS_REVIEW_CUT_INFERIOR | LS_REVIEW_CUT_SUPERIOR), "cut at both ends, 300 mL: flags 0x%x (small "
          "must not be raised for a cut liver)", r.flags);
    CHECK(r.end_area[0] == 1.0 && r.end_area[1] == 0.25, "end areas %g %g", r.end_area[0], r.end_area[1]);
    /* 15% on the superior slice: under the 20% bound. */
    for (int j = 8; j < 18; j++)
        for (int i = 26; i < 34; i++) m[i + NX * (j + NY * (NZ - 1))] = j < 14 && i < 28;
    r = review(&v, m, 1500, 1000, 100, 900);
    CHECK(r.flags == LS_REVIEW_CUT_INFERIOR && fabs(r.end_area[1] - 0.15) < 1e-12, "flags 0x%x, superior area %g", r.flags,
          r.end_area[1]);
}

TEST(bounds) {
    static float data[NX * NY * NZ];
    static uint8_t m[NX * NY * NZ];
    ls_volume v;
    make_volume(&v, data, 0);
    liver_box(m, 26, 34, 5, 15);
    struct {
        double ml;
        int64_t above, unsure, kept;
        unsigned want;
    } cases[] = {
        {401, 1000, 250, 600, 0},
        {399, 1000, 100, 1000, LS_REVIEW_SMALL},
        {4001, 1000, 100, 1000, LS_REVIEW_LARGE},
        {3999, 1000, 100, 1000, 0},
        {1500, 1000, 100, 599, LS_REVIEW_FRAGMENTED},
        {1500, 1000, 251, 1000, LS_REVIEW_UNSURE},
        {100, 1000, 300, 300, LS_REVIEW_SMALL | LS_REVIEW_FRAGMENTED | LS_REVIEW_UNSURE},
        {1500, 0, 0, 0, 0}, /* nothing passed the threshold (counts from another run): no fraction flags */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        ls_review r = review(&v, m, cases[c].ml, cases[c].above, cases[c].unsure, cases[c].kept);
        CHECK(r.flags == cases[c].want, "case %zu (%.0f mL, %lld/%lld/%lld): flags 0x%x, want 0x%x", c, cases[c].ml,
              (long long)cases[c].above, (long long)cases[c].unsure, (long long)cases[c].kept, r.flags, cases[c].want);
    }
    /* Empty: only that flag, and no centre. */
    memset(m, 0, sizeof m);
    ls_review r = review(&v, m, 0, 0, 0, 0);
    CHECK(r.flags == LS_REVIEW_EMPTY && isnan(r.right_mm), "empty: flags 0x%x, right_mm %g", r.flags, r.right_mm);
    /* Every flag has its own name and a line. */
    for (int a = 0; a < LS_REVIEW_NFLAGS; a++) {
        char line[512];
        ls_review_describe(&r, (ls_review_flag)(1u << a), line, sizeof line);
        CHECK(strlen(line) > 10 && strcmp(line, "?"), "flag %d: '%s'", a, line);
        for (int b = 0; b < a; b++)
            CHECK(strcmp(ls_review_name((ls_review_flag)(1u << a)), ls_review_name((ls_review_flag)(1u << b))),
                  "flags %d and %d share a name", a, b);
    }
}

TEST(threads_agree) {
    static float data[NX * NY * NZ];
    static uint8_t m[NX * NY * NZ];
    ls_volume v;
    make_volume(&v, data, 0);
    unsigned seed = test_seed();
    srand(seed);
    for (size_t i = 0; i < sizeof m; i++) m[i] = rand() % 3 == 0 && (i / NX) % NY > 6;
    ls_review r[3];
    int threads[3] = {1, 2, 5};
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(threads[t]);
        r[t] = review(&v, m, 1500, 1000, 100, 900);
    }
    for (int t = 1; t < 3; t++)
        CHECK(r[t].flags == r[0].flags && r[t].right_mm == r[0].right_mm && r[t].spine_mm == r[0].spine_mm &&
                  r[t].end_area[0] == r[0].end_area[0] &&
                  r[t].end_area[1] == r[0].end_area[1],
              "%d threads: right_mm %.17g vs %.17g", threads[t], r[t].right_mm, r[0].right_mm);
}

int main(void) {
    RUN(known_masks);
    RUN(bounds);
    RUN(threads_agree);
    return test_summary();
}
