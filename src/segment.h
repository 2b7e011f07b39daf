/*
 * segment.h — a liver mask for a volume: reorient to RAS, normalise per modality, run teacher + head +
 * decoder over every axial slice in batches, map the probabilities back onto each slice's grid, threshold,
 * clean up (largest component, holes), and put the result back on the input's exact grid.
 */
#ifndef LS_SEGMENT_H
#define LS_SEGMENT_H

#include "model.h"
#include "postprocess.h"
#include "review.h"
#include "teacher.h"

typedef struct {
    int modality;          /* LS_MOD_CT, LS_MOD_MR, or -1 to guess (ls_modality_guess) */
    float threshold;       /* on the probability, default 0.5 */
    int keep_largest;      /* keep the largest 3-D connected component (default 1) */
    int fill_holes;        /* fill 3-D holes and holes in each axial slice (default 1) */
    int batch;             /* slices per teacher call; 0 (the default): the device's (ls_teacher_batch) */
    int keep_prob;         /* also put the probabilities on the input's grid, r->prob (default 1) */
} ls_segment_opts;

void ls_segment_opts_default(ls_segment_opts *o);

typedef struct {
    uint8_t *mask;         /* on the input's grid (geom): 0/1, x fastest */
    ls_geom geom;          /* the input's grid */
    ls_volume prob;        /* on the input's grid: liver probability (empty without opts.keep_prob) */
    ls_volume ras;         /* the input in RAS order (for previews) */
    uint8_t *ras_mask;     /* the mask in RAS order */
    ls_modality modality;
    float window_lo, window_hi;
    ls_mask_stats stats;   /* the input's voxels under the mask (measured in RAS order) */
    int64_t components;    /* connected components before clean-up */
    ls_review_counts counts; /* what the review counted: voxels above the threshold, unsure, kept */
    ls_review review;      /* plausibility checks of the mask (review.h) */
    /* predict: the slice loop, wall time. Inside it, resample: the host's resampling of slices in and out
     * (on CUDA it overlaps the device); teacher, decoder: time in those calls, which is their compute on
     * the CPU but only their queueing on CUDA (asynchronous). post: clean-up, back to the input grid, measuring. */
    double seconds_predict, seconds_resample, seconds_teacher, seconds_decoder, seconds_post;
} ls_segment_result;

void ls_segment_result_free(ls_segment_result *r);

/* Writes r->mask as a uint8 NIfTI on the input's grid, atomically (ls_nifti_write_raw). */
ls_status ls_segment_write_mask(const char *path, const ls_segment_result *r, const char *protect, ls_error *err);

/* r->mask as a float volume on the input's grid (for the metrics, which take volumes). */
ls_status ls_segment_mask_volume(const ls_segment_result *r, ls_volume *out, ls_error *err);

/* Opens the teacher model m (loaded from model_path with `info`) was trained with: a random initialisation
 * is rebuilt from its id, once its architecture is known to fit m; a file teacher is `teacher_path`, or when
 * that is NULL the file of the id's name in model_path's directory; its architecture and content key must
 * match the model's (else LS_ERR_INPUT naming both). */
ls_status ls_segment_teacher(ls_teacher *t, const ls_backend *be, const ls_model *m, const ls_model_info *info,
                             const char *teacher_path, const char *model_path, ls_error *err);

ls_status ls_segment_volume(const ls_volume *input, ls_teacher *t, ls_model *m, const ls_segment_opts *o,
                            ls_progress_fn progress, void *pctx, ls_segment_result *r, ls_error *err);

/* The same for a volume already in RAS order (ls_volume_read_ras), which r->ras takes over (*ras is emptied,
 * also on failure); src_geom is the input's own grid, where r->mask and r->prob go. */
ls_status ls_segment_ras(ls_volume *ras, const ls_geom *src_geom, ls_teacher *t, ls_model *m,
                         const ls_segment_opts *o, ls_progress_fn progress, void *pctx, ls_segment_result *r,
                         ls_error *err);

#endif
