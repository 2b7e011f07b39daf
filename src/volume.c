/*
 * volume.c — NIfTI-1/NIfTI-2 volumes in and out (through nifticlib), geometry, and the exact
 * reorientation to and from the canonical RAS working order.
 *
 * Contract
 *  - Reading validates before it allocates: 3-D (or 4-D with one volume), 1..4096 voxels per axis,
 *    at most 2^31 voxels, finite positive spacing, a finite invertible affine, a supported scalar
 *    type, a file long enough for its data, and finite voxel values. Anything else is LS_ERR_INPUT
 *    with one line naming the file.
 *  - Writing reproduces the geometry verbatim (dims, pixdim, qform and sform with their codes) and is
 *    atomic (util.h's ls_atomic).
 *  - Reorientation is a signed axis permutation: no interpolation, exactly invertible.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <nifti2_io.h>
#include <omp.h>

#include "gzip.h"
#include "util.h"
#include "volume.h"

#define LS_MAX_AXIS 4096
#define LS_MAX_VOXELS (INT64_C(1) << 31)

static const struct {
    ls_dtype t;
    int nifti;
    const char *name;
} dtypes[LS_DT_COUNT] = {
    {LS_DT_U8, NIFTI_TYPE_UINT8, "uint8"},     {LS_DT_I8, NIFTI_TYPE_INT8, "int8"},
    {LS_DT_U16, NIFTI_TYPE_UINT16, "uint16"},  {LS_DT_I16, NIFTI_TYPE_INT16, "int16"},
    {LS_DT_U32, NIFTI_TYPE_UINT32, "uint32"},  {LS_DT_I32, NIFTI_TYPE_INT32, "int32"},
    {LS_DT_F32, NIFTI_TYPE_FLOAT32, "float32"}, {LS_DT_F64, NIFTI_TYPE_FLOAT64, "float64"},
};

const char *ls_dtype_name(ls_dtype t) { return (unsigned)t < LS_DT_COUNT ? dtypes[t].name : "unknown"; }

static int dtype_from_nifti(int code, ls_dtype *t) {
    for (int i = 0; i < LS_DT_COUNT; i++)
        if (dtypes[i].nifti == code) {
            *t = dtypes[i].t;
            return 1;
        }
    return 0;
}

size_t ls_volume_nvox(const ls_volume *v) {
    return (size_t)v->geom.dim[0] * (size_t)v->geom.dim[1] * (size_t)v->geom.dim[2];
}

void ls_volume_free(ls_volume *v) {
    if (!v) return;
    free(v->data);
    memset(v, 0, sizeof *v);
}

ls_status ls_volume_clone(const ls_volume *src, ls_volume *dst, ls_error *err) {
    *dst = *src;
    dst->data = ls_calloc(ls_volume_nvox(src), sizeof(float), err);
    if (!dst->data) return LS_ERR_NOMEM;
    memcpy(dst->data, src->data, ls_volume_nvox(src) * sizeof(float));
    return LS_OK;
}

/* ------------------------------------------------------------------ geometry */

static void mat_identity(double m[4][4]) {
    memset(m, 0, 16 * sizeof(double));
    for (int i = 0; i < 4; i++) m[i][i] = 1;
}

static void mat_mul(const double a[4][4], const double b[4][4], double out[4][4]) {
    double r[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double s = 0;
            for (int k = 0; k < 4; k++) s += a[i][k] * b[k][j];
            r[i][j] = s;
        }
    memcpy(out, r, sizeof r);
}

static double det3(const double m[4][4]) {
    return m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
           m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
           m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
}

static nifti_dmat44 to_dmat(const double m[4][4]) {
    nifti_dmat44 r;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) r.m[i][j] = m[i][j];
    return r;
}

double ls_affine_max_diff(const double a[4][4], const double b[4][4]) {
    double m = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) m = fmax(m, fabs(a[i][j] - b[i][j]));
    return m;
}

void ls_geom_from_affine(ls_geom *g, const int64_t dim[3], const double affine[4][4]) {
    memset(g, 0, sizeof *g);
    for (int i = 0; i < 3; i++) g->dim[i] = dim[i];
    memcpy(g->affine, affine, sizeof g->affine);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) g->srow[i][j] = affine[i][j];
    double qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac;
    nifti_dmat44_to_quatern(to_dmat(affine), &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac);
    g->quatern[0] = qb, g->quatern[1] = qc, g->quatern[2] = qd;
    g->qoffset[0] = qx, g->qoffset[1] = qy, g->qoffset[2] = qz;
    g->pixdim[0] = qfac, g->pixdim[1] = dx, g->pixdim[2] = dy, g->pixdim[3] = dz;
    g->qform_code = g->sform_code = NIFTI_XFORM_SCANNER_ANAT;
    g->xyz_units = NIFTI_UNITS_MM;
}

void ls_affine_orient_code(const double affine[4][4], char code[4]) {
    static const char pos[3] = {'R', 'A', 'S'}, neg[3] = {'L', 'P', 'I'};
    ls_geom g;
    int64_t dim[3] = {1, 1, 1};
    memset(&g, 0, sizeof g);
    g.dim[0] = dim[0];
    memcpy(g.affine, affine, sizeof g.affine);
    ls_orient o;
    ls_orient_from_geom(&g, &o);
    for (int r = 0; r < 3; r++) code[o.perm[r]] = o.flip[r] ? neg[r] : pos[r];
    code[3] = 0;
}

/* Greedy assignment of voxel axes to world axes by the largest normalised direction cosine. Exact
 * 45-degree ties resolve in index order, so the result is deterministic. */
void ls_orient_from_geom(const ls_geom *g, ls_orient *o) {
    double c[3][3];
    for (int j = 0; j < 3; j++) {
        double n = 0;
        for (int i = 0; i < 3; i++) n += g->affine[i][j] * g->affine[i][j];
        n = n > 0 ? sqrt(n) : 1;
        for (int i = 0; i < 3; i++) c[i][j] = g->affine[i][j] / n;
    }
    int row_used[3] = {0}, col_used[3] = {0};
    for (int step = 0; step < 3; step++) {
        int bi = -1, bj = -1;
        double best = -1;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                if (!row_used[i] && !col_used[j] && fabs(c[i][j]) > best) best = fabs(c[i][j]), bi = i, bj = j;
        row_used[bi] = col_used[bj] = 1;
        o->perm[bi] = bj;
        o->flip[bi] = c[bi][bj] < 0;
    }
}

/* The homogeneous map from RAS voxel index a to source voxel index s for orientation o. */
static void ras_to_src_matrix(const ls_orient *o, const int64_t src_dim[3], double t[4][4]) {
    memset(t, 0, 16 * sizeof(double));
    t[3][3] = 1;
    for (int r = 0; r < 3; r++) {
        int s = o->perm[r];
        t[s][r] = o->flip[r] ? -1 : 1;
        t[s][3] = o->flip[r] ? (double)(src_dim[s] - 1) : 0;
    }
}

static int orient_valid(const ls_orient *o) {
    int seen[3] = {0};
    for (int r = 0; r < 3; r++) {
        if (o->perm[r] < 0 || o->perm[r] > 2 || seen[o->perm[r]]) return 0;
        seen[o->perm[r]] = 1;
    }
    return 1;
}

/* How RAS voxel order walks a source array: RAS voxel a sits at source offset
 * base + sum_r step[r] * a_r, on a grid of rdim voxels. */
typedef struct {
    int64_t rdim[3], base, step[3];
} ras_walk;

static ras_walk ras_walk_of(const int64_t src_dim[3], const ls_orient *o) {
    ras_walk w = {{0}, 0, {0}};
    int64_t sstride[3] = {1, src_dim[0], src_dim[0] * src_dim[1]};
    for (int r = 0; r < 3; r++) {
        int64_t n = src_dim[o->perm[r]], st = sstride[o->perm[r]];
        w.rdim[r] = n;
        w.base += o->flip[r] ? (n - 1) * st : 0;
        w.step[r] = o->flip[r] ? -st : st;
    }
    return w;
}

/* Copies voxels of `elem` bytes (4: float, 1: mask) between a source-ordered and a RAS-ordered array;
 * to_ras selects the direction. Inlined into its two callers, where elem is a constant. */
static inline void permute_copy(const void *in, void *out, size_t elem, const int64_t src_dim[3], const ls_orient *o,
                                int to_ras) {
    ras_walk w = ras_walk_of(src_dim, o);
    const float *fi = in;
    const uint8_t *bi = in;
    float *fo = out;
    uint8_t *bo = out;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t k = 0; k < w.rdim[2]; k++)
        for (int64_t j = 0; j < w.rdim[1]; j++) {
            int64_t s = w.base + k * w.step[2] + j * w.step[1], a = (k * w.rdim[1] + j) * w.rdim[0];
            int64_t from = to_ras ? s : a, fstep = to_ras ? w.step[0] : 1, to = to_ras ? a : s;
            int64_t tstep = to_ras ? 1 : w.step[0];
            if (elem == 4)
                for (int64_t i = 0; i < w.rdim[0]; i++) fo[to + i * tstep] = fi[from + i * fstep];
            else
                for (int64_t i = 0; i < w.rdim[0]; i++) bo[to + i * tstep] = bi[from + i * fstep];
        }
}

void ls_orient_mask(const uint8_t *in, uint8_t *out, const int64_t src_dim[3], const ls_orient *o, int to_ras) {
    permute_copy(in, out, 1, src_dim, o, to_ras);
}

/* What a reoriented volume keeps of its source besides voxels and grid. */
static void copy_description(ls_volume *dst, const ls_volume *src) {
    dst->src_dtype = src->src_dtype;
    dst->scl_slope = src->scl_slope;
    dst->scl_inter = src->scl_inter;
    memcpy(dst->descrip, src->descrip, sizeof dst->descrip);
    memcpy(dst->format, src->format, sizeof dst->format);
}

void ls_geom_to_ras(const ls_geom *in, const ls_orient *o, ls_geom *out) {
    int64_t rdim[3];
    for (int r = 0; r < 3; r++) rdim[r] = in->dim[o->perm[r]];
    double t[4][4], aff[4][4];
    ras_to_src_matrix(o, in->dim, t);
    mat_mul(in->affine, t, aff);
    ls_geom_from_affine(out, rdim, aff);
}

ls_status ls_geom_same_grid(const ls_geom *a, const ls_geom *b, const char *a_name, const char *b_name, ls_error *err) {
    ls_orient oa, ob;
    ls_geom ra, rb;
    ls_orient_from_geom(a, &oa), ls_orient_from_geom(b, &ob);
    ls_geom_to_ras(a, &oa, &ra), ls_geom_to_ras(b, &ob, &rb);
    const int64_t *d = ra.dim, *e = rb.dim;
    if (memcmp(ra.dim, rb.dim, sizeof ra.dim) != 0)
        return ls_fail(err, LS_ERR_INPUT, "%s: grid %lldx%lldx%lld differs from %s's %lldx%lldx%lld", a_name,
                       (long long)d[0], (long long)d[1], (long long)d[2], b_name, (long long)e[0], (long long)e[1],
                       (long long)e[2]);
    double diff = ls_affine_max_diff(ra.affine, rb.affine);
    if (diff > 1e-3)
        return ls_fail(err, LS_ERR_INPUT, "%s: voxel-to-world affine differs from %s's by %.3g mm (not the same grid)",
                       a_name, b_name, diff);
    return LS_OK;
}

ls_status ls_volume_to_ras(const ls_volume *in, const ls_orient *o, ls_volume *out, ls_error *err) {
    if (!orient_valid(o)) return ls_fail(err, LS_ERR_INTERNAL, "invalid axis permutation");
    memset(out, 0, sizeof *out);
    ls_geom_to_ras(&in->geom, o, &out->geom);
    copy_description(out, in);
    out->data = ls_calloc(ls_volume_nvox(in), sizeof(float), err);
    if (!out->data) return LS_ERR_NOMEM;
    permute_copy(in->data, out->data, 4, in->geom.dim, o, 1);
    return LS_OK;
}

ls_status ls_volume_from_ras(const ls_volume *ras, const ls_orient *o, const ls_geom *orig,
                             ls_volume *out, ls_error *err) {
    if (!orient_valid(o)) return ls_fail(err, LS_ERR_INTERNAL, "invalid axis permutation");
    for (int r = 0; r < 3; r++)
        if (ras->geom.dim[r] != orig->dim[o->perm[r]])
            return ls_fail(err, LS_ERR_INTERNAL, "RAS grid does not match the original grid on axis %d", r);
    memset(out, 0, sizeof *out);
    out->geom = *orig;
    copy_description(out, ras);
    out->data = ls_calloc(ls_volume_nvox(ras), sizeof(float), err);
    if (!out->data) return LS_ERR_NOMEM;
    permute_copy(ras->data, out->data, 4, orig->dim, o, 0);
    return LS_OK;
}

/* ------------------------------------------------------------------ reading */

/* volume: which 3-D volume of a 4-D file is wanted (1 = the first), 0 when the file must hold only one, -1
 * when any number will do (a header read). */
static ls_status check_dims(const char *path, const nifti_image *nim, int volume, ls_error *err) {
    int64_t nd = nim->dim[0], nt = nd >= 4 ? nim->dim[4] : 1;
    if (nd < 3) return ls_fail(err, LS_ERR_INPUT, "%s: %lld-D image; livseg needs a 3-D volume", path, (long long)nd);
    if (nd > 7) return ls_fail(err, LS_ERR_INPUT, "%s: invalid dim[0] = %lld", path, (long long)nd);
    for (int i = 5; i <= nd; i++)
        if (nim->dim[i] > 1)
            return ls_fail(err, LS_ERR_INPUT,
                           "%s: %lld-D image with %lld values along axis %d (a vector or tensor image); livseg reads "
                           "3-D volumes", path, (long long)nd, (long long)nim->dim[i], i);
    if (nt > 1 && volume == 0)
        return ls_fail(err, LS_ERR_INPUT,
                       "%s: 4-D image of %lld volumes; livseg segment and info pick one with --volume 1..%lld", path,
                       (long long)nt, (long long)nt);
    if (volume > nt)
        return ls_fail(err, LS_ERR_INPUT, "%s: no volume %d: the file holds %lld", path, volume, (long long)nt);
    int64_t n = 1;
    for (int i = 1; i <= 3; i++) {
        if (nim->dim[i] < 1 || nim->dim[i] > LS_MAX_AXIS)
            return ls_fail(err, LS_ERR_INPUT, "%s: dimension %d is %lld (allowed 1..%d)", path, i,
                           (long long)nim->dim[i], LS_MAX_AXIS);
        n *= nim->dim[i];
    }
    if (n > LS_MAX_VOXELS)
        return ls_fail(err, LS_ERR_INPUT, "%s: %lld voxels exceed the limit of 2^31", path, (long long)n);
    for (int i = 1; i <= 3; i++) {
        double d = nim->pixdim[i];
        if (!(d > 0) || !isfinite(d))
            return ls_fail(err, LS_ERR_INPUT, "%s: voxel spacing %g on axis %d is not a positive number", path, d, i);
    }
    return LS_OK;
}

static void geom_from_nim(const nifti_image *nim, ls_geom *g) {
    memset(g, 0, sizeof *g);
    for (int i = 0; i < 3; i++) g->dim[i] = nim->dim[i + 1];
    g->pixdim[0] = nim->qfac;
    for (int i = 1; i <= 3; i++) g->pixdim[i] = nim->pixdim[i];
    g->qform_code = nim->qform_code;
    g->sform_code = nim->sform_code;
    g->quatern[0] = nim->quatern_b, g->quatern[1] = nim->quatern_c, g->quatern[2] = nim->quatern_d;
    g->qoffset[0] = nim->qoffset_x, g->qoffset[1] = nim->qoffset_y, g->qoffset[2] = nim->qoffset_z;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) g->srow[i][j] = nim->sto_xyz.m[i][j];
    g->xyz_units = nim->xyz_units;
    g->t_units = nim->time_units;
    /* NIfTI's rule: sform when present, else qform, else pixdim alone (nifticlib fills qto_xyz with
     * that diagonal when qform_code is 0). */
    const nifti_dmat44 *m = nim->sform_code > 0 ? &nim->sto_xyz : &nim->qto_xyz;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) g->affine[i][j] = m->m[i][j];
    if (nim->sform_code <= 0 && nim->qform_code <= 0) {
        mat_identity(g->affine);
        for (int i = 0; i < 3; i++) g->affine[i][i] = nim->pixdim[i + 1];
    }
}

static ls_status check_affine(const char *path, const ls_geom *g, ls_error *err) {
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            if (!isfinite(g->affine[i][j]))
                return ls_fail(err, LS_ERR_INPUT, "%s: the %s contains non-finite values", path,
                               g->sform_code > 0 ? "sform" : "qform");
    if (fabs(det3(g->affine)) < 1e-12)
        return ls_fail(err, LS_ERR_INPUT, "%s: the %s is singular (zero voxel volume)", path,
                       g->sform_code > 0 ? "sform" : "qform");
    return LS_OK;
}

/* Converts the voxels of nifti type `t` on grid src_dim to float with slope/intercept, in the voxel order
 * of orientation o (reading and reorienting in one pass spares a float volume and its page faults);
 * counts non-finite results. */
static int64_t convert_to_float(const void *src, ls_dtype t, const int64_t src_dim[3], const ls_orient *o,
                                double slope, double inter, float *dst) {
    ras_walk w = ras_walk_of(src_dim, o);
    int64_t bad = 0;
#define CONVERT(T)                                                                                        \
    do {                                                                                                  \
        _Pragma("omp parallel for collapse(2) reduction(+ : bad) schedule(static)")                      \
        for (int64_t k = 0; k < w.rdim[2]; k++)                                                           \
            for (int64_t j = 0; j < w.rdim[1]; j++) {                                                     \
                const T *s = (const T *)src + w.base + k * w.step[2] + j * w.step[1];                     \
                float *d = dst + (k * w.rdim[1] + j) * w.rdim[0];                                         \
                for (int64_t i = 0; i < w.rdim[0]; i++) {                                                 \
                    float f = (float)((double)s[i * w.step[0]] * slope + inter);                          \
                    bad += !isfinite(f);                                                                  \
                    d[i] = f;                                                                             \
                }                                                                                         \
            }                                                                                             \
    } while (0)
    switch (t) {
    case LS_DT_U8: CONVERT(uint8_t); break;
    case LS_DT_I8: CONVERT(int8_t); break;
    case LS_DT_U16: CONVERT(uint16_t); break;
    case LS_DT_I16: CONVERT(int16_t); break;
    case LS_DT_U32: CONVERT(uint32_t); break;
    case LS_DT_I32: CONVERT(int32_t); break;
    case LS_DT_F32: CONVERT(float); break;
    case LS_DT_F64: CONVERT(double); break;
    default: break;
    }
#undef CONVERT
    return bad;
}

/* The raw header's spacing, before nifticlib quietly replaces zero or NaN pixdim with 1. */
static ls_status check_raw_spacing(const char *path, const void *hdr, int nver, ls_error *err) {
    for (int i = 1; i <= 3; i++) {
        double d = nver == 2 ? ((const nifti_2_header *)hdr)->pixdim[i] : ((const nifti_1_header *)hdr)->pixdim[i];
        if (!(d > 0) || !isfinite(d))
            return ls_fail(err, LS_ERR_INPUT, "%s: voxel spacing %g on axis %d is not a positive number", path, d, i);
    }
    return LS_OK;
}

static uint32_t bswap32(uint32_t v) { return (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24); }
static uint16_t bswap16(uint16_t v) { return (uint16_t)((v >> 8) | (v << 8)); }

/* Reads and vets the raw header before nifticlib sees it: nifticlib trusts dim[] (a NIfTI-2 dim[0] of
 * 2^24 overruns its stack) and prints its own messages for short files. Accepts NIfTI-1 in either byte
 * order and little-endian NIfTI-2. */
static ls_status vet_raw_header(const char *path, ls_error *err) {
    unsigned char h[540];
    znzFile fp = znzopen(path, "rb", 1);
    if (znz_isnull(fp)) return ls_fail(err, LS_ERR_INPUT, "%s: cannot open (%s)", path, strerror(errno));
    size_t got = znzread(h, 1, sizeof h, fp);
    znzclose(fp);
    if (got < 348) return ls_fail(err, LS_ERR_INPUT, "%s: not a NIfTI file (only %zu bytes of header)", path, got);
    uint32_t sz;
    memcpy(&sz, h, 4);
    int swap = sz == bswap32(348) || sz == bswap32(540);
    if (swap) sz = bswap32(sz);
    if (sz != 348 && sz != 540) return ls_fail(err, LS_ERR_INPUT, "%s: not a NIfTI file (header size field %u)", path, sz);
    int64_t d[8];
    if (sz == 348) {
        if (memcmp(h + 344, "n+1", 4) != 0)
            return ls_fail(err, LS_ERR_INPUT, "%s: not a single-file NIfTI-1 (magic is not \"n+1\")", path);
        for (int i = 0; i < 8; i++) {
            uint16_t v;
            memcpy(&v, h + 40 + 2 * i, 2);
            d[i] = (int16_t)(swap ? bswap16(v) : v);
        }
    } else {
        if (got < 540) return ls_fail(err, LS_ERR_INPUT, "%s: NIfTI-2 header cut short (%zu bytes)", path, got);
        if (swap) return ls_fail(err, LS_ERR_INPUT, "%s: big-endian NIfTI-2 is not supported", path);
        if (memcmp(h + 4, "n+2", 4) != 0)
            return ls_fail(err, LS_ERR_INPUT, "%s: not a single-file NIfTI-2 (magic is not \"n+2\")", path);
        for (int i = 0; i < 8; i++) {
            uint64_t v;
            memcpy(&v, h + 16 + 8 * i, 8);
            d[i] = (int64_t)v;
        }
    }
    if (d[0] < 1 || d[0] > 7) return ls_fail(err, LS_ERR_INPUT, "%s: invalid dim[0] = %lld", path, (long long)d[0]);
    for (int i = 1; i <= d[0]; i++)
        if (d[i] < 1 || d[i] > INT32_MAX)
            return ls_fail(err, LS_ERR_INPUT, "%s: invalid dim[%d] = %lld", path, i, (long long)d[i]);
    return LS_OK;
}

/* 1 when the file starts with the gzip magic (nifticlib reads by content, not by name, and so do we). */
static int is_gzip(const char *path) {
    unsigned char m[2] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t got = fread(m, 1, 2, f);
    fclose(f);
    return got == 2 && m[0] == 0x1f && m[1] == 0x8b;
}

/* Reads the voxel bytes of one volume of exactly `path` (nifticlib's own loader would look for sibling files
 * with other extensions first, and silently zeroes NaN floats). *base is the buffer to free, *vox the voxels
 * in it: a gzip file is inflated from its start to that volume's end (libdeflate, gzip.h), header included. */
static ls_status read_voxels(const char *path, const nifti_image *nim, int gz, int volume, void **base,
                               const void **vox, ls_error *err) {
    /* The first 3-D volume, or `volume` of a 4-D file. */
    size_t n3 = (size_t)(nim->dim[1] * nim->dim[2] * nim->dim[3]), nbytes = n3 * (size_t)nim->nbyper;
    size_t before = (size_t)(volume > 1 ? volume - 1 : 0) * nbytes, skip = gz ? (size_t)nim->iname_offset + before : 0;
    unsigned char *buf = ls_calloc(skip + nbytes, 1, err);
    if (!buf) return LS_ERR_NOMEM;
    ls_status s = LS_OK;
    if (gz) {
        s = ls_gzip_read(path, buf, skip + nbytes, err);
    } else {
        znzFile fp = znzopen(path, "rb", 1);
        if (znz_isnull(fp)) {
            s = ls_fail(err, LS_ERR_INPUT, "%s: cannot open (%s)", path, strerror(errno));
        } else {
            if (znzseek(fp, (znz_off_t)(nim->iname_offset + (int64_t)before), SEEK_SET) < 0 ||
                znzread(buf, 1, nbytes, fp) != nbytes)
                s = ls_fail(err, LS_ERR_INPUT, "%s: voxel data could not be read (truncated or corrupt file)", path);
            znzclose(fp);
        }
    }
    if (s != LS_OK) {
        free(buf);
        return s;
    }
    if (nim->byteorder != nifti_short_order() && nim->nbyper > 1) nifti_swap_Nbytes((int64_t)n3, nim->nbyper, buf + skip);
    *base = buf;
    *vox = buf + skip;
    return LS_OK;
}

/* Header checks in the order a user would fix them; fills out->geom and *t. */
static ls_status check_header(const char *path, const struct stat *st, int gz, const void *hdr, int nver,
                              const nifti_image *nim, int volume, ls_volume *out, ls_dtype *t, ls_error *err) {
    if (nim->nifti_type == NIFTI_FTYPE_NIFTI1_2 || nim->nifti_type == NIFTI_FTYPE_NIFTI2_2)
        return ls_fail(err, LS_ERR_INPUT, "%s: two-file NIfTI (.hdr/.img) is not supported; convert to .nii.gz", path);
    if (nim->nifti_type != NIFTI_FTYPE_NIFTI1_1 && nim->nifti_type != NIFTI_FTYPE_NIFTI2_1)
        return ls_fail(err, LS_ERR_INPUT, "%s: not a NIfTI file (ANALYZE or ASCII header)", path);
    LS_TRY(check_dims(path, nim, volume, err));
    LS_TRY(check_raw_spacing(path, hdr, nver, err));
    if (!dtype_from_nifti(nim->datatype, t))
        return ls_fail(err, LS_ERR_INPUT, "%s: unsupported voxel type %s (%d)", path,
                       nifti_datatype_string(nim->datatype), nim->datatype);
    geom_from_nim(nim, &out->geom);
    LS_TRY(check_affine(path, &out->geom, err));
    /* The size must cover the data, or the read would fail late, after allocating for it. Deflate
     * expands at most 1032:1. */
    int64_t need = nim->iname_offset + nim->nvox * nim->nbyper;
    if (!gz && (int64_t)st->st_size < need)
        return ls_fail(err, LS_ERR_INPUT, "%s: file holds %lld bytes but its header needs %lld (truncated?)",
                       path, (long long)st->st_size, (long long)need);
    if (gz && (int64_t)st->st_size * 1032 + 65536 < need)
        return ls_fail(err, LS_ERR_INPUT, "%s: %lld compressed bytes cannot hold the %lld its header needs (truncated?)",
                       path, (long long)st->st_size, (long long)need);
    return LS_OK;
}

/* The header of a NIfTI file, checked as ls_volume_read_nifti checks it; with want_voxels, the voxels of
 * one volume too (check_dims says which); *nvol (may be NULL) gets how many the file holds. With src_geom,
 * the volume comes in RAS order (ls_volume_read_ras) and *src_geom gets the file's grid. */
static ls_status read_nifti(const char *path, int want_voxels, int volume, ls_geom *src_geom, ls_volume *out,
                            int64_t *nvol, ls_error *err) {
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(path, &st) != 0) return ls_fail(err, LS_ERR_INPUT, "%s: cannot open (%s)", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return ls_fail(err, LS_ERR_INPUT, "%s: not a regular file", path);
    LS_TRY(vet_raw_header(path, err));
    nifti_set_debug_level(0);
    int nver = 0;
    void *hdr = nifti_read_header(path, &nver, 0);
    if (!hdr || (nver != 1 && nver != 2)) {
        free(hdr);
        return ls_fail(err, LS_ERR_INPUT, "%s: not a readable NIfTI-1/NIfTI-2 file", path);
    }
    nifti_image *nim = nver == 2 ? nifti_convert_n2hdr2nim(*(nifti_2_header *)hdr, path)
                                 : nifti_convert_n1hdr2nim(*(nifti_1_header *)hdr, path);
    if (!nim) {
        free(hdr);
        return ls_fail(err, LS_ERR_INPUT, "%s: invalid NIfTI header", path);
    }
    ls_dtype t = LS_DT_U8;
    void *raw = NULL;
    const void *vox = NULL;
    int gz = is_gzip(path);
    ls_status s = check_header(path, &st, gz, hdr, nver, nim, volume, out, &t, err);
    if (nvol) *nvol = nim->dim[0] >= 4 ? nim->dim[4] : 1;
    if (s == LS_OK && want_voxels) s = read_voxels(path, nim, gz, volume, &raw, &vox, err);
    if (s == LS_OK && want_voxels) {
        double slope = nim->scl_slope, inter = nim->scl_inter;
        if (slope == 0 || !isfinite(slope) || !isfinite(inter)) slope = 1, inter = 0; /* NIfTI: 0 = none */
        ls_orient o = {{0, 1, 2}, {0, 0, 0}};
        if (src_geom) {
            *src_geom = out->geom;
            ls_orient_from_geom(src_geom, &o);
            ls_geom_to_ras(src_geom, &o, &out->geom);
        }
        out->data = ls_calloc(ls_volume_nvox(out), sizeof(float), err);
        if (!out->data) s = LS_ERR_NOMEM;
        else {
            int64_t bad = convert_to_float(vox, t, src_geom ? src_geom->dim : out->geom.dim, &o, slope, inter, out->data);
            if (bad) s = ls_fail(err, LS_ERR_INPUT, "%s: %lld voxels are NaN or infinite", path, (long long)bad);
        }
        out->src_dtype = t;
        out->scl_slope = nim->scl_slope;
        out->scl_inter = nim->scl_inter;
        memcpy(out->descrip, nim->descrip, sizeof out->descrip);
        out->descrip[sizeof out->descrip - 1] = 0;
        snprintf(out->format, sizeof out->format, "%s", nver == 2 ? "NIfTI-2" : "NIfTI-1");
    }
    free(raw);
    free(hdr);
    nifti_image_free(nim);
    if (s != LS_OK) ls_volume_free(out);
    return s;
}

ls_status ls_volume_read_nifti(const char *path, ls_volume *out, ls_error *err) {
    return read_nifti(path, 1, 0, NULL, out, NULL, err);
}

ls_status ls_volume_read_nifti_volume(const char *path, int volume, ls_volume *out, ls_error *err) {
    if (volume < 1) return ls_fail(err, LS_ERR_INPUT, "%s: volume %d: volumes count from 1", path, volume);
    return read_nifti(path, 1, volume, NULL, out, NULL, err);
}

ls_status ls_nifti_volumes(const char *path, int64_t *n, ls_geom *g, ls_error *err) {
    ls_volume v;
    LS_TRY(read_nifti(path, 0, -1, NULL, &v, n, err));
    if (g) *g = v.geom;
    return LS_OK;
}

ls_status ls_volume_read_geom(const char *path, ls_geom *g, ls_error *err) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return ls_fail(err, LS_ERR_UNSUPPORTED, "%s: a DICOM series has no header to read alone", path);
    ls_volume v;
    LS_TRY(read_nifti(path, 0, 0, NULL, &v, NULL, err));
    *g = v.geom;
    return LS_OK;
}

ls_status ls_volume_read_dicom_pick(const char *dir, const ls_dicom_pick *pick, ls_volume *out, ls_error *err) {
    /* omp_get_max_threads starts no thread (the fork must not race one): it reads the setting that
     * --threads and OMP_NUM_THREADS control, so the decoders use the cores the caller gave livseg. */
    return ls_dicom_read(dir, pick, omp_get_max_threads(), out, err);
}

ls_status ls_volume_read_dicom(const char *dir, ls_volume *out, ls_error *err) {
    return ls_volume_read_dicom_pick(dir, NULL, out, err);
}

ls_status ls_volume_read(const char *path, ls_volume *out, ls_error *err) {
    struct stat st;
    if (stat(path, &st) != 0) {
        memset(out, 0, sizeof *out);
        return ls_fail(err, LS_ERR_INPUT, "%s: cannot open (%s)", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) return ls_volume_read_dicom(path, out, err);
    return ls_volume_read_nifti(path, out, err);
}

ls_status ls_volume_read_ras(const char *path, ls_volume *ras, ls_geom *src_geom, ls_error *err) {
    struct stat st;
    memset(ras, 0, sizeof *ras);
    if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode)) return read_nifti(path, 1, 0, src_geom, ras, NULL, err);
    ls_volume v;
    LS_TRY(ls_volume_read(path, &v, err));
    return ls_volume_take_ras(&v, ras, src_geom, err);
}

ls_status ls_volume_read_ras_volume(const char *path, int volume, ls_volume *ras, ls_geom *src_geom, ls_error *err) {
    if (volume == 0) return ls_volume_read_ras(path, ras, src_geom, err);
    memset(ras, 0, sizeof *ras);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return ls_fail(err, LS_ERR_INPUT, "%s: a directory; a volume is picked from a 4-D NIfTI file", path);
    if (volume < 1) return ls_fail(err, LS_ERR_INPUT, "%s: volume %d: volumes count from 1", path, volume);
    return read_nifti(path, 1, volume, src_geom, ras, NULL, err);
}

ls_status ls_volume_take_ras(ls_volume *v, ls_volume *ras, ls_geom *src_geom, ls_error *err) {
    ls_orient o;
    ls_orient_from_geom(&v->geom, &o);
    *src_geom = v->geom;
    ls_status s = ls_volume_to_ras(v, &o, ras, err);
    ls_volume_free(v);
    return s;
}

/* ------------------------------------------------------------------ writing */

static void convert_from_float(const float *src, int64_t n, ls_dtype t, void *dst) {
#define STORE(T, LO, HI)                                                      \
    do {                                                                      \
        T *d = (T *)dst;                                                      \
        _Pragma("omp parallel for schedule(static)")                          \
        for (int64_t i = 0; i < n; i++) {                                     \
            double v = nearbyint((double)src[i]);                             \
            d[i] = (T)(v < (LO) ? (LO) : v > (HI) ? (HI) : v);                \
        }                                                                     \
    } while (0)
    switch (t) {
    case LS_DT_U8: STORE(uint8_t, 0, UINT8_MAX); break;
    case LS_DT_I8: STORE(int8_t, INT8_MIN, INT8_MAX); break;
    case LS_DT_U16: STORE(uint16_t, 0, UINT16_MAX); break;
    case LS_DT_I16: STORE(int16_t, INT16_MIN, INT16_MAX); break;
    case LS_DT_U32: STORE(uint32_t, 0, UINT32_MAX); break;
    case LS_DT_I32: STORE(int32_t, INT32_MIN, INT32_MAX); break;
    case LS_DT_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case LS_DT_F64: {
        double *d = (double *)dst;
        for (int64_t i = 0; i < n; i++) d[i] = src[i];
        break;
    }
    default: break;
    }
#undef STORE
}

/* Header, empty extension flag and voxels: what nifti_image_write puts in a single-file NIfTI-1, here
 * with its errors seen (nifticlib reports none) and the gzip compression parallel (gzip.h). */
static ls_status write_file(const char *tmp, const char *path, nifti_image *nim, ls_error *err) {
    nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;
    nim->byteorder = nifti_short_order();
    nim->iname_offset = 352;
    nifti_1_header h;
    if (nifti_convert_nim2n1hdr(nim, &h) != 0) return ls_fail(err, LS_ERR_INTERNAL, "%s: cannot form a NIfTI-1 header", path);
    unsigned char head[352] = {0};
    memcpy(head, &h, sizeof h);
    size_t nbytes = (size_t)nim->nvox * (size_t)nim->nbyper;
    FILE *f = fopen(tmp, "wb");
    if (!f) return ls_fail(err, LS_ERR_IO, "%s: cannot write (%s)", path, strerror(errno));
    ls_status s = LS_OK;
    if (ls_ends_with(path, ".gz")) {
        s = ls_gzip_write(f, head, sizeof head, 6, path, err);
        if (!s) s = ls_gzip_write(f, nim->data, nbytes, 6, path, err);
    } else if (fwrite(head, 1, sizeof head, f) != sizeof head || fwrite(nim->data, 1, nbytes, f) != nbytes) {
        s = ls_fail(err, LS_ERR_IO, "%s: write failed (%s)", path, strerror(errno));
    }
    if (fclose(f) != 0 && !s) s = ls_fail(err, LS_ERR_IO, "%s: write failed (%s)", path, strerror(errno));
    return s;
}

ls_status ls_nifti_write_raw(const char *path, const ls_geom *g, ls_dtype t, const void *data,
                             double slope, double inter, const char *descrip,
                             const char *protect, ls_error *err) {
    if ((unsigned)t >= LS_DT_COUNT) return ls_fail(err, LS_ERR_INTERNAL, "%s: bad dtype", path);
    if (!ls_ends_with(path, ".nii") && !ls_ends_with(path, ".nii.gz"))
        return ls_fail(err, LS_ERR_INPUT, "%s: output name must end in .nii or .nii.gz", path);
    ls_atomic a;
    LS_TRY(ls_atomic_begin(&a, path, protect, err));
    int64_t dims[8] = {3, g->dim[0], g->dim[1], g->dim[2], 1, 1, 1, 1};
    nifti_set_debug_level(0);
    nifti_image *nim = nifti_make_new_nim(dims, dtypes[t].nifti, 0);
    if (!nim) {
        ls_atomic_abort(&a);
        return ls_fail(err, LS_ERR_NOMEM, "%s: cannot create a NIfTI header", path);
    }
    nim->pixdim[0] = nim->qfac = g->pixdim[0] == -1 ? -1 : 1;
    nim->dx = nim->pixdim[1] = g->pixdim[1];
    nim->dy = nim->pixdim[2] = g->pixdim[2];
    nim->dz = nim->pixdim[3] = g->pixdim[3];
    nim->qform_code = g->qform_code;
    nim->sform_code = g->sform_code;
    nim->quatern_b = g->quatern[0], nim->quatern_c = g->quatern[1], nim->quatern_d = g->quatern[2];
    nim->qoffset_x = g->qoffset[0], nim->qoffset_y = g->qoffset[1], nim->qoffset_z = g->qoffset[2];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) nim->sto_xyz.m[i][j] = g->srow[i][j];
    nim->sto_xyz.m[3][0] = nim->sto_xyz.m[3][1] = nim->sto_xyz.m[3][2] = 0;
    nim->sto_xyz.m[3][3] = 1;
    nim->xyz_units = g->xyz_units;
    nim->time_units = g->t_units;
    nim->scl_slope = slope;
    nim->scl_inter = inter;
    if (descrip) snprintf(nim->descrip, sizeof nim->descrip, "%s", descrip);
    nim->data = (void *)data; /* borrowed: detached before nifti_image_free */
    ls_status s = write_file(a.tmp_path, path, nim, err);
    nim->data = NULL;
    nifti_image_free(nim);
    if (s != LS_OK) {
        ls_atomic_abort(&a);
        return s;
    }
    return ls_atomic_commit(&a, err);
}

ls_status ls_volume_write(const char *path, const ls_volume *v, ls_dtype dtype, const char *protect,
                          ls_error *err) {
    if ((unsigned)dtype >= LS_DT_COUNT) return ls_fail(err, LS_ERR_INTERNAL, "%s: bad dtype", path);
    int64_t n = (int64_t)ls_volume_nvox(v);
    static const int size[LS_DT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 8};
    void *buf = ls_calloc((size_t)n, (size_t)size[dtype], err);
    if (!buf) return LS_ERR_NOMEM;
    convert_from_float(v->data, n, dtype, buf);
    ls_status s = ls_nifti_write_raw(path, &v->geom, dtype, buf, 0, 0, "livseg " LIVSEG_VERSION, protect, err);
    free(buf);
    return s;
}
