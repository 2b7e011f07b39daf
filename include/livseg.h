/*
 * livseg.h — the public C API of livseg: liver segmentation of abdominal CT and MR volumes.
 *
 * Contract
 *  - Every function that can fail returns an ls_status (LS_OK == 0) and, on failure, fills the
 *    caller's ls_error (which may be NULL) with one line "<file or object>: <problem>". No library
 *    function prints to stdout, exits, or keeps global mutable state. Memory a function hands out is
 *    owned by the caller and released with the matching *_free (free(NULL)-style: NULL is fine).
 *  - Volumes are float32 in memory, x fastest: voxel (i,j,k) is data[i + nx*(j + ny*(size_t)k)].
 *  - World coordinates follow NIfTI: millimetres, RAS+ (DICOM's LPS+ with x and y negated):
 *        NIfTI world  +x = patient Right,  +y = Anterior,  +z = Superior        (RAS+)
 *        DICOM world  +x = patient Left,   +y = Posterior, +z = Superior        (LPS+)
 *    so a DICOM position (x,y,z) is the NIfTI point (-x,-y,z).
 *  - Geometry is never guessed: an input's header is kept (ls_geom) so every output written for it
 *    carries exactly the input's dims, qform and sform.
 */
#ifndef LIVSEG_H
#define LIVSEG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LIVSEG_VERSION "0.1.0"

/* ---------------------------------------------------------------- errors */

typedef enum {
    LS_OK = 0,
    LS_ERR_INPUT = 2,    /* bad input file, directory, option or model: the user's to fix */
    LS_ERR_IO = 3,       /* the operating system refused a read or write */
    LS_ERR_NOMEM = 4,    /* an allocation failed */
    LS_ERR_INTERNAL = 5, /* a bug: an invariant of livseg itself did not hold */
    LS_ERR_UNSUPPORTED = 6 /* valid request this build cannot serve (e.g. CUDA without a GPU) */
} ls_status;

typedef struct {
    ls_status code;
    char msg[1024];
} ls_error;

/* ---------------------------------------------------------------- volumes */

/* On-disk scalar types (the NIfTI names). */
typedef enum {
    LS_DT_U8, LS_DT_I8, LS_DT_U16, LS_DT_I16, LS_DT_U32, LS_DT_I32, LS_DT_F32, LS_DT_F64,
    LS_DT_COUNT
} ls_dtype;

const char *ls_dtype_name(ls_dtype t);

/* A volume's grid as its file described it. `affine` maps voxel (i,j,k,1) to world RAS+ mm and is the
 * one the reading rules chose: sform when sform_code > 0, else qform when qform_code > 0, else a
 * diagonal from pixdim. The other fields are the header verbatim so that a write reproduces it. */
typedef struct {
    int64_t dim[3];
    double pixdim[4];      /* qfac, dx, dy, dz (mm) */
    int qform_code, sform_code;
    double quatern[3];     /* b, c, d */
    double qoffset[3];     /* x, y, z */
    double srow[3][4];
    double affine[4][4];
    int xyz_units, t_units;
} ls_geom;

typedef struct {
    ls_geom geom;
    float *data;           /* dim[0]*dim[1]*dim[2] values, scl_slope/scl_inter already applied */
    ls_dtype src_dtype;    /* type on disk (informational) */
    double scl_slope, scl_inter; /* as read (slope 0 means "none") */
    char descrip[80];
    char format[16];       /* "NIfTI-1", "NIfTI-2" or "DICOM" */
} ls_volume;

/* Voxel count. */
size_t ls_volume_nvox(const ls_volume *v);

/* Reads a NIfTI-1/NIfTI-2 file (.nii or .nii.gz) or a DICOM series directory. */
ls_status ls_volume_read(const char *path, ls_volume *out, ls_error *err);
ls_status ls_volume_read_nifti(const char *path, ls_volume *out, ls_error *err);
/* A 4-D NIfTI file (a dynamic series, several contrast phases, which the reads above refuse) holds several
 * 3-D volumes: this reads volume `volume`, 1 being the first (1 on a 3-D file reads it). The grid is the
 * file's spatial one. */
ls_status ls_volume_read_nifti_volume(const char *path, int volume, ls_volume *out, ls_error *err);
/* A DICOM series is parsed in a forked child process (a malformed file cannot take the caller down): call
 * it while no other thread of the process may hold a lock the child needs (the allocator's), e.g. before
 * starting threads of one's own; a fork at the wrong moment leaves the child, and the call, waiting. A
 * compressed series is decoded there by up to omp_get_max_threads() processes (docs/dicom.md). */
ls_status ls_volume_read_dicom(const char *dir, ls_volume *out, ls_error *err);
/* Which images of a DICOM directory to read; NULL or 0 takes the only one there is. */
typedef struct {
    const char *series; /* a study's series, by SeriesNumber, SeriesDescription or SeriesInstanceUID */
    int echo;           /* a multi-echo series' echo, by EchoNumbers (1, 2, ...) */
} ls_dicom_pick;
/* ls_volume_read_dicom for a directory holding several series (a study exported whole) or a series of
 * several echoes (in- and opposed-phase T1): the images `pick` names (may be NULL). When more than one
 * series or echo is there and `pick` does not name exactly one, the error lists them. */
ls_status ls_volume_read_dicom_pick(const char *dir, const ls_dicom_pick *pick, ls_volume *out, ls_error *err);
/* One series of a DICOM directory as ls_dicom_list finds it. The names are the files' own bytes, cut to
 * DICOM's longest values, anything unprintable as '?'; empty when the files lack the tag. */
typedef struct {
    char uid[65];          /* SeriesInstanceUID */
    char number[17];       /* SeriesNumber */
    char description[65];  /* SeriesDescription */
    char modality[17];     /* Modality of its first image: CT, MR, ... */
    int images;            /* image files */
    int frames;            /* the slices they hold: NumberOfFrames of a multi-frame file, 1 of others */
    int cols, rows;        /* its first image's size */
    int n_echoes;          /* distinct EchoNumbers, or an enhanced file's echo times numbered 1, 2, ...
                            * by ascending time (0: none, as in CT); the first 16 follow */
    int echo[16];
    double echo_ms[16];    /* EchoTime of each */
} ls_dicom_series;
/* The series of a DICOM directory and its subdirectories, in the order of their first file's path:
 * headers only, no pixel data decoded, in a forked child as ls_volume_read_dicom. `*out` (free() it)
 * holds `*n` >= 1 entries; a directory without DICOM images is an error. */
ls_status ls_dicom_list(const char *dir, ls_dicom_series **out, int *n, ls_error *err);

/* Writes `v` as NIfTI-1 (.nii or .nii.gz, from the name) with its geom verbatim, converting the data
 * to `dtype` (rounded and clamped for integer types; no scaling stored). The write is atomic: a
 * temporary file in the same directory is renamed over `path` only when complete. Refuses to write
 * over `protect` (an input path; may be NULL). */
ls_status ls_volume_write(const char *path, const ls_volume *v, ls_dtype dtype, const char *protect,
                          ls_error *err);

void ls_volume_free(ls_volume *v);

/* Deep copy. */
ls_status ls_volume_clone(const ls_volume *src, ls_volume *dst, ls_error *err);

/* Geometry from an affine alone (sform and qform both set to it, codes 1 = scanner). */
void ls_geom_from_affine(ls_geom *g, const int64_t dim[3], const double affine[4][4]);

/* -------------------------------------------------------------- orientation */

/* The canonical working orientation is RAS, nibabel's "closest canonical": voxel axis 0 increases
 * along world +x (R), axis 1 along +y (A), axis 2 along +z (S), so axial slices are k = const. An
 * ls_orient records the signed axis permutation from the file's voxel axes to RAS voxel axes; it is
 * exactly invertible (no interpolation). */
typedef struct {
    int perm[3];  /* RAS axis r takes source axis perm[r] */
    int flip[3];  /* 1 when that source axis runs against the world direction */
} ls_orient;

/* The signed permutation that makes `g`'s voxel axes closest to RAS. */
void ls_orient_from_geom(const ls_geom *g, ls_orient *o);

/* New volume `out` = `in` resampled (exactly: permuted/flipped) into RAS voxel order. `out->geom` is
 * the RAS grid with the affine adjusted so every voxel keeps its world position. */
ls_status ls_volume_to_ras(const ls_volume *in, const ls_orient *o, ls_volume *out, ls_error *err);

/* ls_volume_read and ls_volume_to_ras (with the file's ls_orient_from_geom) in one: the same voxels and
 * grids, but a NIfTI file is converted straight into RAS order, without the float volume in the file's order
 * (a third less memory at the peak, one pass fewer). *src_geom gets the file's own grid, which
 * ls_volume_from_ras and result files on the input's grid need. */
ls_status ls_volume_read_ras(const char *path, ls_volume *ras, ls_geom *src_geom, ls_error *err);

/* Inverse of ls_volume_to_ras: puts a RAS-ordered volume back on the grid `orig` (the input's
 * geometry, copied verbatim into out->geom). */
ls_status ls_volume_from_ras(const ls_volume *ras, const ls_orient *o, const ls_geom *orig,
                             ls_volume *out, ls_error *err);

/* Two-letter-per-axis orientation code of an affine, e.g. "RAS", "LPS". */
void ls_affine_orient_code(const double affine[4][4], char code[4]);

#ifdef __cplusplus
}
#endif
#endif /* LIVSEG_H */
