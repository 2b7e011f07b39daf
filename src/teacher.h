/*
 * teacher.h — the teacher applied to whole volumes, and a cache of its output so that training runs
 * the teacher once per slice.
 *
 * A teacher is a ViT with an identity: either weights from a safetensors file (timm or Hugging Face
 * names; the architecture from the file's "arch" metadata when present) or a deterministic random
 * initialisation (timm's: truncated-normal std 0.02 weights, zero biases, unit LayerNorms) of a preset
 * from a seed, until a pretrained teacher exists. Its id names the weights' content.
 *
 * The cache holds one safetensors file per (volume content and grid, teacher id, preprocessing): the
 * features of every axial slice of the RAS volume as F16 [Z, D, H/P, W/P]. Keys are 64-bit, from zlib's
 * crc32 and adler32 over the voxel bytes, the grid, and the teacher's bytes.
 */
#ifndef LS_TEACHER_H
#define LS_TEACHER_H

#include <stdint.h>

#include "preprocess.h"
#include "util.h"
#include "vit.h"

typedef struct {
    ls_vit vit;
    char id[160];    /* "vits16:random:seed=1" or "vits16:file=NAME:c0ffee..." */
    int input_size;  /* square teacher input, pixels */
} ls_teacher;

/* weights == NULL: random initialisation of `arch` from `seed`. Otherwise `arch` is used only when the
 * file has no "arch" metadata. */
ls_status ls_teacher_open(ls_teacher *t, const ls_backend *be, const char *weights, const char *arch, uint64_t seed,
                          int input_size, ls_error *err);
void ls_teacher_close(ls_teacher *t);

typedef struct {
    int nslices, dim, gh, gw; /* features[k] is dim x gh x gw */
    float *data;              /* host memory, nslices * dim * gh * gw */
} ls_features;

void ls_features_free(ls_features *f);

/* Slices per teacher call: `requested` when positive, else the device's default, 8 on the CPU (a larger
 * batch only grows the arena) and 32 on a GPU (on an H200, 32 instead of 8 cut the teacher from 0.36 to
 * 0.28 s and the decoder from 0.48 to 0.35 s for 300 slices; docs/gpu.md). */
int ls_teacher_batch(const ls_teacher *t, int requested);

/* Runs the teacher over every axial slice of a RAS volume, `batch` slices at a time (ls_teacher_batch). */
ls_status ls_features_compute(ls_teacher *t, const ls_volume *ras, const ls_prep *prep, int batch,
                              ls_progress_fn progress, void *pctx, ls_features *out, ls_error *err);

/* The cache file for this volume, teacher and preprocessing, under `dir` (created if absent). */
ls_status ls_features_cache_path(const char *dir, const ls_teacher *t, const ls_volume *ras, const ls_prep *prep,
                                 char *path, size_t n, ls_error *err);

/* Loads from the cache when present and matching, else computes and stores (atomically). *hit tells
 * which happened. */
ls_status ls_features_cached(ls_teacher *t, const ls_volume *ras, const ls_prep *prep, const char *cache_dir,
                             int batch, ls_progress_fn progress, void *pctx, ls_features *out, int *hit,
                             ls_error *err);

#endif
