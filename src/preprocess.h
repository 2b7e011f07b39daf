/*
 * preprocess.h — what the teacher sees of a slice: intensities normalised per modality, resized to the
 * teacher's input, three ImageNet-normalised channels.
 *
 *  - CT: Hounsfield units clipped to a window (default [-125, 275], the window BTCV was published in)
 *    and scaled to [0, 1].
 *  - MR: the volume's 0.5th and 99.5th percentiles (numpy's linear interpolation) clip and scale to
 *    [0, 1]; MR has no absolute scale, so each volume is normalised on its own.
 *  - Gamma: grey values g in [0, 1] become g^gamma (1 unless training sets it: teacher-side intensity
 *    augmentation, train.h; applied before the resize).
 *  - Orientation: slices come from a volume in RAS voxel order and are shown radiologically, as the
 *    preview does: image row 0 is anterior, column 0 the patient's right.
 *  - Field of view: a slice whose field of view (in mm) is not square is padded with grey 0 (air,
 *    background) to the square around it, centred, so that anatomy keeps its shape (letterboxing,
 *    ls_prep_padding); a square one is left as it is.
 *  - Resize: bilinear, PyTorch's F.interpolate(mode="bilinear", align_corners=False, antialias=False),
 *    of the (padded) slice to H x W; the probabilities come back the same way (ls_unprep_plane).
 *  - Channels: the grey value g becomes ((g - mean_c) / std_c) for ImageNet's mean (0.485, 0.456,
 *    0.406) and std (0.229, 0.224, 0.225).
 */
#ifndef LS_PREPROCESS_H
#define LS_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "livseg.h"

typedef enum { LS_MOD_CT = 0, LS_MOD_MR = 1 } ls_modality;

typedef struct {
    ls_modality modality;
    float lo, hi;   /* intensities mapped to 0 and 1 */
    float gamma;    /* grey g -> g^gamma (ls_prep_init sets 1) */
    int H, W;       /* teacher input size */
} ls_prep;

#define LS_CT_WINDOW_LO (-125.0f)
#define LS_CT_WINDOW_HI 275.0f

/* "ct" / "mr" (any case) -> modality. */
ls_status ls_modality_parse(const char *s, ls_modality *m, ls_error *err);
const char *ls_modality_name(ls_modality m);
/* A guess for volumes of unknown modality: a DICOM series' Modality tag (CT or MR) where it has one, else
 * CT when the values reach -100 or below (air or a clipped HU window), else MR. Callers let the user
 * override it. */
ls_modality ls_modality_guess(const ls_volume *v);

/* Sets the window: fixed for CT, the volume's percentiles for MR; gamma 1. */
ls_status ls_prep_init(ls_prep *p, const ls_volume *ras, ls_modality m, int H, int W, ls_error *err);

/* Slice k of a RAS volume as grey values in [0, 1], displayed, padded to its field of view's square
 * (ls_prep_padding, grey 0) and resized to out[H, W]; `scratch` holds nx*ny floats. The decoder's skip
 * connection sees this. */
void ls_prep_grey(const ls_prep *p, const ls_volume *ras, int64_t k, float *scratch, float *out, int H, int W);

/* The inverse geometry: a displayed plane in[H, W] resized back to the slice grid of a RAS volume (its
 * padding left out) and un-flipped into slice[nx * ny] (x fastest); `scratch` holds nx*ny floats. */
void ls_unprep_plane(const float *in, int H, int W, const ls_volume *ras, float *scratch, float *slice);

/* Slice k of a RAS volume -> out[3, H, W]; `scratch` holds nx*ny floats. */
void ls_prep_slice(const ls_prep *p, const ls_volume *ras, int64_t k, float *scratch, float *out);

/* q[i]-th percentiles (0..100) of the finite values among v[0..n) into out[i], numpy's default (linear)
 * interpolation (numpy.nanpercentile when v holds NaN; infinities are left out too), exactly, without
 * reordering v; *nfinite receives how many values counted (out is untouched when none did). */
ls_status ls_percentiles_finite(const float *v, size_t n, const double *q, int nq, float *out, size_t *nfinite,
                                ls_error *err);

/* One percentile of the finite values of v (NaN when there are none). */
float ls_percentile(const float *v, size_t n, double q);

/* PyTorch's bilinear resize (align_corners=False, no antialiasing) of one [ih, iw] plane. */
void ls_resize_bilinear(const float *in, int ih, int iw, float *out, int oh, int ow);

/* The same of in[ih, iw] padded first with py rows above and below and px columns left and right of
 * `fill` (F.pad, then F.interpolate), to out[oh, ow]. */
void ls_resize_padded(const float *in, int ih, int iw, int py, int px, float fill, float *out, int oh, int ow);

/* Its inverse placement: in[h, w] covers the padded canvas [ih + 2 py, iw + 2 px]; out[ih, iw] is the plane's
 * part of in resized to the canvas (F.interpolate to the canvas' size, then the crop). */
void ls_resize_unpad(const float *in, int h, int w, int ih, int iw, int py, int px, float *out);

/* The padding (rows py above and below, columns px left and right) that shows a slice of `ras` at H x W
 * with one scale in mm on both axes, centred (letterboxing). The model was trained on square fields of
 * view; an axial slice of a rectangular one (MR often images the anterior-posterior direction at 75-80% of
 * the width, and a coronal acquisition's axial planes are rectangular) would otherwise be stretched.
 * 0, 0 for a square field of view. */
void ls_prep_padding(const ls_volume *ras, int H, int W, int *py, int *px);

#endif
