/*
 * review.h — plausibility checks of a finished liver mask: does it look like one whole liver, inside the
 * scan, on the patient's right, found with confidence? Each failed check is a flag a clinical engineer
 * sees (segment's stderr and --stats) before trusting the mask. The checks catch gross failures (a mask
 * on another organ, a scan without the liver, a wrong left-right or anterior-posterior label in the header, a
 * liver cut by the field of view), not a mediocre boundary; docs/segment.md has what they caught on the shared scans.
 */
#ifndef LS_REVIEW_H
#define LS_REVIEW_H

#include <stdint.h>

#include "livseg.h"

typedef enum {
    LS_REVIEW_EMPTY = 1 << 0,        /* no voxel in the mask */
    LS_REVIEW_CUT_INFERIOR = 1 << 1, /* the mask fills much of the scan's lowest axial slice */
    LS_REVIEW_CUT_SUPERIOR = 1 << 2, /* ... of its highest */
    LS_REVIEW_SMALL = 1 << 3,        /* too small for a whole adult liver that the scan covers */
    LS_REVIEW_LARGE = 1 << 4,        /* too large for one */
    LS_REVIEW_LEFT = 1 << 5,         /* centred on the patient's left of the body, or barely right */
    LS_REVIEW_FRAGMENTED = 1 << 6,   /* the largest component kept little of what passed the threshold */
    LS_REVIEW_UNSURE = 1 << 7,       /* many of the mask's voxels have a probability near 0.5 */
    LS_REVIEW_SPINE_ANTERIOR = 1 << 8, /* CT: the bone behind the body's centre lies in front of it */
    LS_REVIEW_NFLAGS = 9
} ls_review_flag;

/* What the slice loop and the clean-up counted, in voxels. */
typedef struct {
    int64_t above;    /* probability >= the threshold, before clean-up */
    int64_t unsure;   /* probability in (0.25, 0.75) */
    int64_t kept;     /* what the largest-component step kept of `above` (`above` when it did not run) */
} ls_review_counts;

typedef struct {
    unsigned flags;       /* ls_review_flag bits */
    double volume_ml;
    double end_area[2];   /* mask area on the lowest and the highest axial slice over its largest one */
    double right_mm;      /* how far the mask's centre lies to the patient's right of the body's (NaN: empty) */
    double spine_mm;      /* CT: how far the midline bone (the spine) lies anterior of the body's centre, on the
                           * mask's slices; negative when posterior, as it should be (NaN: MR, or too little) */
    double kept_fraction; /* counts.kept / counts.above (1 when nothing passed) */
    double unsure_fraction; /* counts.unsure / counts.above (0 when nothing passed) */
} ls_review;

/* Reviews `mask` (0/1, the final mask) over `ras`, the input in RAS order: the body is where ras is at or
 * above body_level (the model's window at 10%: air and background fall below it); volume_ml is the mask's
 * volume; ct says ras holds Hounsfield units (the spine's check needs bone). Measures slice by slice in
 * parallel, adding in order, so the result does not depend on the thread count. */
ls_status ls_review_mask(const ls_volume *ras, const uint8_t *mask, float body_level, int ct, double volume_ml,
                         const ls_review_counts *c, ls_review *out, ls_error *err);

/* A flag's name (for JSON, "cut_superior") and one line saying what it means for this mask. */
const char *ls_review_name(ls_review_flag f);
void ls_review_describe(const ls_review *r, ls_review_flag f, char *line, size_t n);

#endif
