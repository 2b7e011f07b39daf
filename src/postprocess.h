/*
 * postprocess.h — binary mask clean-up after thresholding (see postprocess.c for the connectivity
 * conventions). Masks: uint8 0/1, x fastest, dims d[0] x d[1] x d[2]. All run in place.
 */
#ifndef LS_POSTPROCESS_H
#define LS_POSTPROCESS_H

#include <stdint.h>

#include "livseg.h"

/* Keeps the largest 26-connected foreground component (ties: the first in scan order). An empty mask
 * stays empty. *ncomponents (may be NULL) receives how many components there were, *kept (may be NULL)
 * how many voxels the kept one has. */
ls_status ls_mask_largest_component(uint8_t *m, const int64_t d[3], int64_t *ncomponents, int64_t *kept,
                                    ls_error *err);

/* Fills background regions not 6-connected to the border (scipy.ndimage.binary_fill_holes in 3-D). */
ls_status ls_mask_fill_holes(uint8_t *m, const int64_t d[3], ls_error *err);

/* The same in 2-D on every axial slice (4-connected background): closes vessels that enter the liver
 * and so never form a closed 3-D cavity. */
ls_status ls_mask_fill_holes_slices(uint8_t *m, const int64_t d[3], ls_error *err);


/* What a mask says about the organ, measured on the image's own grid. */
typedef struct {
    int64_t voxels;
    double volume_ml;      /* voxels x |det(affine)| / 1000 */
    double mean, std;      /* image intensity inside the mask (HU for CT); 0 when empty */
    double bbox_min[3], bbox_max[3]; /* world RAS mm of the outermost voxel centres; 0 when empty */
} ls_mask_stats;

/* `img` supplies grid and intensities; `mask` is nonzero inside, on the same grid. Sums are formed per
 * slice and added in order, so the figures do not depend on the thread count. */
ls_status ls_mask_measure(const ls_volume *img, const uint8_t *mask, ls_mask_stats *s, ls_error *err);

#endif
