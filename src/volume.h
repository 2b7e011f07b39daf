/* volume.h — internal volume helpers beyond the public API (see volume.c). */
#ifndef LS_VOLUME_H
#define LS_VOLUME_H

#include "livseg.h"
#include "util.h"

/* Moves a uint8 mask between a volume's own voxel order (grid src_dim) and RAS order, exactly as
 * ls_volume_to_ras (to_ras 1) and ls_volume_from_ras (0) move voxels. */
void ls_orient_mask(const uint8_t *in, uint8_t *out, const int64_t src_dim[3], const ls_orient *o, int to_ras);

/* Writes raw voxels of type `t` as NIfTI-1 with the given geometry and scaling, atomically.
 * ls_volume_write is this with float data converted and no scaling; tests use it for scaled files. */
ls_status ls_nifti_write_raw(const char *path, const ls_geom *g, ls_dtype t, const void *data,
                             double slope, double inter, const char *descrip,
                             const char *protect, ls_error *err);

/* Largest absolute difference between two affines' top three rows (mm): 0 for the same grid. A label is
 * taken to lie on its image's grid when this is at most 1e-3. */
double ls_affine_max_diff(const double a[4][4], const double b[4][4]);

/* The RAS grid of `in` under orientation `o` (what ls_volume_to_ras gives a volume on `in`). */
void ls_geom_to_ras(const ls_geom *in, const ls_orient *o, ls_geom *out);
/* That two grids are one in RAS order: the same dims and affines within 1e-3 mm; else LS_ERR_INPUT
 * naming `a_name` and `b_name`. */
ls_status ls_geom_same_grid(const ls_geom *a, const ls_geom *b, const char *a_name, const char *b_name, ls_error *err);
/* A NIfTI file's grid from its header alone (checked as ls_volume_read checks it); LS_ERR_UNSUPPORTED for a
 * DICOM series directory, whose grid needs the whole series read. */
ls_status ls_volume_read_geom(const char *path, ls_geom *g, ls_error *err);

/* ls_volume_read_dicom_pick with `readers` decoder processes (src/dicom.cpp; at most 16, and one per
 * two files); the public call uses as many as OpenMP would use threads (omp_get_max_threads). */
ls_status ls_dicom_read(const char *dir, const ls_dicom_pick *pick, int readers, ls_volume *out, ls_error *err);

/* ls_dicom_read in two halves, so that a caller can start threads while the series is read: begin forks
 * the reader process (so it must run while no other thread exists; errors wait for end), end waits for
 * the volume (and, when `series` is not NULL, which series it is), on any thread, and frees the job.
 * Every begin needs its end. While it waits, end calls `progress` (may be NULL) with the directory's
 * files read so far, about ten times a second and once when they are all read or the reading stopped
 * (done < total: an error follows). */
typedef struct ls_dicom_job ls_dicom_job;
ls_status ls_dicom_begin(const char *dir, const ls_dicom_pick *pick, int readers, ls_dicom_job **job, ls_error *err);
ls_status ls_dicom_end(ls_dicom_job *job, ls_progress_fn progress, void *pctx, ls_volume *out,
                       ls_dicom_series *series, ls_error *err);

/* How many 3-D volumes a NIfTI file holds (its dim[4]; 1 for a 3-D file) and their grid (g may be NULL),
 * from its header, checked as a read checks it. */
ls_status ls_nifti_volumes(const char *path, int64_t *n, ls_geom *g, ls_error *err);

/* ls_volume_read_ras of volume `volume` (1 = the first) of a 4-D NIfTI file; 0: ls_volume_read_ras. */
ls_status ls_volume_read_ras_volume(const char *path, int volume, ls_volume *ras, ls_geom *src_geom, ls_error *err);

/* What ls_volume_read_ras does after a read: `v` (taken over, freed) into RAS order, its grid in src_geom. */
ls_status ls_volume_take_ras(ls_volume *v, ls_volume *ras, ls_geom *src_geom, ls_error *err);

#endif
