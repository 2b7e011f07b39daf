/*
 * review.c — see review.h. The bounds below were set on the default model's masks of the 54 shared scans
 * (docs/segment.md, "Checks of the mask"): each sits between the worst value of a mask that was right
 * and the values of the masks that failed, with room on both sides.
 */
#include "review.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

/* Each bound, and on the shared scans the values either side of it. */
#define CUT_AREA 0.2         /* end slice over largest axial area; masks of whole livers: 0.14 and less, one 0.31 */
#define SMALL_ML 400.0       /* good masks of whole livers: 881 mL and up; failed ones: 115 mL and below */
#define LARGE_ML 4000.0      /* good masks: up to 2917 mL; references: up to 3431 mL */
#define RIGHT_MM 15.0        /* right of the body's centre; good masks: 39 mm and more; failed: 7 mm left and beyond */
#define KEPT_FRACTION 0.6    /* good masks: 0.75 and more; failed ones: 0.45 and less, some 0.8-0.9 */
#define UNSURE_FRACTION 0.25 /* good masks: 0.19 and less; failed ones: 0.29 and more */
#define SPINE_MM (-10.0)     /* shared CT scans: 27-80 mm posterior; with the A-P axis reversed, 42 mm anterior */
#define BONE_HU 250.0f       /* bone, and the top of BTCV's published window (275) */
#define MIDLINE_MM 20.0      /* either side of the body's centre: the vertebral bodies */
#define MIN_BONE 50          /* voxels, for a verdict */

/* Per axial slice: mask area and the sum of its x indices; where the mask is, the same for the body (and
 * its y), then for the midline bone. */
typedef struct {
    double area, liver_x, body, body_x, body_y, bone, bone_y;
} slice_sums;

static void sum_slice(const ls_volume *ras, const uint8_t *mask, float level, int64_t k, slice_sums *s) {
    const int64_t *d = ras->geom.dim;
    for (int64_t j = 0; j < d[1]; j++) {
        const uint8_t *row = mask + (size_t)(d[0] * (j + d[1] * k));
        int64_t n = 0, x = 0;
        for (int64_t i = 0; i < d[0]; i++) n += row[i] != 0, x += row[i] ? i : 0;
        s->area += (double)n, s->liver_x += (double)x;
    }
    for (int64_t j = 0; s->area > 0 && j < d[1]; j++) {
        const float *row = ras->data + (size_t)(d[0] * (j + d[1] * k));
        int64_t n = 0, x = 0;
        for (int64_t i = 0; i < d[0]; i++) n += row[i] >= level, x += row[i] >= level ? i : 0;
        s->body += (double)n, s->body_x += (double)x, s->body_y += (double)(n * j);
    }
}

/* Bone within [x0, x1] of slice k, once the body's centre is known. */
static void sum_bone(const ls_volume *ras, int64_t k, int64_t x0, int64_t x1, slice_sums *s) {
    const int64_t *d = ras->geom.dim;
    for (int64_t j = 0; s->area > 0 && j < d[1]; j++) {
        const float *row = ras->data + (size_t)(d[0] * (j + d[1] * k));
        int64_t n = 0;
        for (int64_t i = x0; i <= x1; i++) n += row[i] >= BONE_HU;
        s->bone += (double)n, s->bone_y += (double)(n * j);
    }
}

static double axis_mm(const ls_volume *ras, int a) {
    const double(*A)[4] = ras->geom.affine;
    return sqrt(A[0][a] * A[0][a] + A[1][a] * A[1][a] + A[2][a] * A[2][a]);
}

ls_status ls_review_mask(const ls_volume *ras, const uint8_t *mask, float body_level, int ct, double volume_ml,
                         const ls_review_counts *c, ls_review *out, ls_error *err) {
    const int64_t *d = ras->geom.dim;
    *out = (ls_review){.volume_ml = volume_ml, .right_mm = NAN, .spine_mm = NAN, .kept_fraction = 1};
    if (c->above > 0) {
        out->kept_fraction = (double)c->kept / (double)c->above;
        out->unsure_fraction = (double)c->unsure / (double)c->above;
    }
    slice_sums *s = ls_calloc((size_t)d[2], sizeof *s, err);
    if (!s) return LS_ERR_NOMEM;
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t k = 0; k < d[2]; k++) sum_slice(ras, mask, body_level, k, &s[k]);
    slice_sums t = {0};
    double largest = 0, dx = axis_mm(ras, 0), dy = axis_mm(ras, 1);
    for (int64_t k = 0; k < d[2]; k++) {
        t.area += s[k].area, t.liver_x += s[k].liver_x, t.body += s[k].body;
        t.body_x += s[k].body_x, t.body_y += s[k].body_y;
        largest = fmax(largest, s[k].area);
    }
    if (largest > 0) {
        out->end_area[0] = s[0].area / largest;
        out->end_area[1] = s[d[2] - 1].area / largest;
    }
    if (largest > 0 && t.body > 0) {
        /* RAS order: x indices grow toward the patient's right, y toward anterior. */
        double bx = t.body_x / t.body, by = t.body_y / t.body;
        out->right_mm = (t.liver_x / t.area - bx) * dx;
        int64_t x0 = (int64_t)ceil(bx - MIDLINE_MM / dx), x1 = (int64_t)floor(bx + MIDLINE_MM / dx);
        x0 = x0 < 0 ? 0 : x0, x1 = x1 >= d[0] ? d[0] - 1 : x1;
        if (ct) {
#pragma omp parallel for schedule(dynamic, 4)
            for (int64_t k = 0; k < d[2]; k++) sum_bone(ras, k, x0, x1, &s[k]);
            for (int64_t k = 0; k < d[2]; k++) t.bone += s[k].bone, t.bone_y += s[k].bone_y;
            if (t.bone >= MIN_BONE) out->spine_mm = (t.bone_y / t.bone - by) * dy;
        }
    }
    free(s);
    unsigned f = 0;
    if (largest == 0) f |= LS_REVIEW_EMPTY;
    if (out->end_area[0] >= CUT_AREA) f |= LS_REVIEW_CUT_INFERIOR;
    if (out->end_area[1] >= CUT_AREA) f |= LS_REVIEW_CUT_SUPERIOR;
    int cut = (f & (LS_REVIEW_CUT_INFERIOR | LS_REVIEW_CUT_SUPERIOR)) != 0;
    if (largest > 0 && volume_ml < SMALL_ML && !cut) f |= LS_REVIEW_SMALL;
    if (volume_ml > LARGE_ML) f |= LS_REVIEW_LARGE;
    if (out->right_mm < RIGHT_MM) f |= LS_REVIEW_LEFT; /* false for NaN */
    if (out->kept_fraction < KEPT_FRACTION) f |= LS_REVIEW_FRAGMENTED;
    if (out->unsure_fraction > UNSURE_FRACTION) f |= LS_REVIEW_UNSURE;
    if (out->spine_mm > SPINE_MM) f |= LS_REVIEW_SPINE_ANTERIOR; /* false for NaN */
    out->flags = f;
    return LS_OK;
}

const char *ls_review_name(ls_review_flag f) {
    switch (f) {
    case LS_REVIEW_EMPTY: return "empty";
    case LS_REVIEW_CUT_INFERIOR: return "cut_inferior";
    case LS_REVIEW_CUT_SUPERIOR: return "cut_superior";
    case LS_REVIEW_SMALL: return "small";
    case LS_REVIEW_LARGE: return "large";
    case LS_REVIEW_LEFT: return "left";
    case LS_REVIEW_FRAGMENTED: return "fragmented";
    case LS_REVIEW_UNSURE: return "unsure";
    case LS_REVIEW_SPINE_ANTERIOR: return "spine_anterior";
    default: return "?";
    }
}

void ls_review_describe(const ls_review *r, ls_review_flag f, char *line, size_t n) {
    const char *end = f == LS_REVIEW_CUT_INFERIOR ? "inferior" : "superior";
    double area = r->end_area[f == LS_REVIEW_CUT_SUPERIOR];
    switch (f) {
    case LS_REVIEW_EMPTY:
        snprintf(line, n, "no liver found");
        break;
    case LS_REVIEW_CUT_INFERIOR:
    case LS_REVIEW_CUT_SUPERIOR:
        snprintf(line, n,
                 "the liver reaches the scan's %s end (its end slice holds %.0f%% of its largest axial area): it "
                 "may extend beyond the scan, and the volume be too small",
                 end, 100 * area);
        break;
    case LS_REVIEW_SMALL:
        snprintf(line, n, "%.0f mL, under %.0f mL for a liver the scan covers whole: likely a failed segmentation",
                 r->volume_ml, SMALL_ML);
        break;
    case LS_REVIEW_LARGE:
        snprintf(line, n, "%.0f mL, over %.0f mL: the mask likely takes in other organs", r->volume_ml, LARGE_ML);
        break;
    case LS_REVIEW_LEFT:
        snprintf(line, n,
                 "the mask is centred %.0f mm %s of the body's centre, where a liver lies well to the patient's "
                 "right: a left-right error in the file's orientation, another organ, or situs inversus",
                 fabs(r->right_mm), r->right_mm < 0 ? "left" : "right");
        break;
    case LS_REVIEW_FRAGMENTED:
        snprintf(line, n,
                 "the largest connected region holds %.0f%% of the voxels above the threshold: the model saw "
                 "liver in several places",
                 100 * r->kept_fraction);
        break;
    case LS_REVIEW_UNSURE:
        snprintf(line, n, "uncertain voxels (probability 0.25-0.75) amount to %.0f%% of the mask: a low-confidence "
                          "segmentation",
                 100 * r->unsure_fraction);
        break;
    case LS_REVIEW_SPINE_ANTERIOR:
        snprintf(line, n,
                 "the midline bone (the spine) lies %.0f mm %s of the body's centre, where it belongs well behind "
                 "it: an anterior-posterior error in the file's orientation",
                 fabs(r->spine_mm), r->spine_mm < 0 ? "posterior" : "anterior");
        break;
    default:
        snprintf(line, n, "?");
    }
}
