/*
 * preview.h — a PNG for a person to check a segmentation at a glance: axial, coronal and sagittal
 * slices through the centre of the mask, intensities windowed to grey, the mask's outline in red.
 */
#ifndef LS_PREVIEW_H
#define LS_PREVIEW_H

#include <stdint.h>

#include "livseg.h"

/* `ras` is a volume in RAS voxel order, `mask` (may be NULL) a 0/1 mask on the same grid. Grey levels
 * map [lo, hi] to [0, 255]. Panels use radiological display: the patient's right on the image's
 * left, anterior (axial) and superior (coronal, sagittal) at the top, square pixels in millimetres.
 * Written atomically; refuses to overwrite `protect`. */
ls_status ls_preview_write_png(const char *path, const ls_volume *ras, const uint8_t *mask, float lo, float hi,
                               const char *protect, ls_error *err);

#endif
