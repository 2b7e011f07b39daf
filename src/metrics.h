/*
 * metrics.h — how good a mask is: Dice, average and maximum symmetric surface distance (ASSD, MSSD =
 * Hausdorff) in millimetres, volumes; and the paired t-test used to compare two methods.
 *
 * Conventions (MedPy's, so figures compare with the literature): the surface of a mask is its voxels with
 * a 6-connected background neighbour, outside the volume counting as background; distances are exact
 * Euclidean distances between voxel centres with the voxel spacing; ASSD is the mean of the two directed
 * mean surface distances, MSSD the larger of the two directed maxima.
 * Empty masks: both empty -> Dice 1, ASSD = MSSD = 0; exactly one empty -> Dice 0 and the distances are
 * undefined (NaN; reported as null and left out of means, which say how many cases they cover).
 */
#ifndef LS_METRICS_H
#define LS_METRICS_H

#include <stdint.h>

#include "livseg.h"

typedef struct {
    double dice, assd_mm, mssd_mm;
    double pred_ml, ref_ml, diff_ml, diff_pct; /* diff = pred - ref; pct relative to ref (NaN if ref empty) */
    int64_t pred_voxels, ref_voxels;
} ls_metrics;

/* Squared Euclidean distance (mm^2) from every voxel to the nearest voxel with feature[i] != 0, exact
 * (separable lower envelopes, Felzenszwalb and Huttenlocher); INFINITY when there is no feature voxel. */
void ls_edt_sq(const uint8_t *feature, const int64_t dim[3], const double spacing[3], double *out);

/* Voxels of a 0/1 mask with a 6-connected background neighbour (outside counts as background). */
void ls_mask_surface(const uint8_t *mask, const int64_t dim[3], uint8_t *surface);

/* Metrics of two 0/1 masks on one grid with voxel spacing in mm. */
ls_status ls_metrics_masks(const uint8_t *pred, const uint8_t *ref, const int64_t dim[3], const double spacing[3],
                           ls_metrics *m, ls_error *err);

/* Metrics of two volumes (voxels > 0.5 are the organ). They must describe the same grid in world space:
 * same dims and affine within 1e-3 mm once both are in RAS voxel order; otherwise LS_ERR_INPUT naming
 * both files (`pred_name`, `ref_name`). */
ls_status ls_metrics_volumes(const ls_volume *pred, const ls_volume *ref, const char *pred_name, const char *ref_name,
                             ls_metrics *m, ls_error *err);

/* Mean and sample standard deviation of the finite values among v[0..n) (NaN for none, and the deviation NaN
 * for one); returns how many there were. Summaries of per-case metrics skip undefined (infinite or NaN)
 * distances. */
int ls_mean_sd(const double *v, int n, double *mean, double *sd);

/* Two-sided p-value of the paired t-test of a[i] - b[i] (n >= 2); NaN when all differences are equal. */
double ls_ttest_paired(const double *a, const double *b, int n, double *t_out);

/* Regularised incomplete beta I_x(a, b); exposed for tests. */
double ls_betai(double a, double b, double x);

#endif
