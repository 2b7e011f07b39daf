/*
 * preprocess.c — see preprocess.h.
 */
#include "preprocess.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

ls_status ls_modality_parse(const char *s, ls_modality *m, ls_error *err) {
    if (strcasecmp(s, "ct") == 0) *m = LS_MOD_CT;
    else if (strcasecmp(s, "mr") == 0 || strcasecmp(s, "mri") == 0) *m = LS_MOD_MR;
    else return ls_fail(err, LS_ERR_INPUT, "modality '%s': expected ct or mr", s);
    return LS_OK;
}

const char *ls_modality_name(ls_modality m) { return m == LS_MOD_CT ? "CT" : "MR"; }

ls_modality ls_modality_guess(const ls_volume *v) {
    size_t n = ls_volume_nvox(v);
    for (size_t i = 0; i < n; i++)
        if (v->data[i] <= -100.0f) return LS_MOD_CT;
    return LS_MOD_MR;
}

/* k-th smallest of v[0..n) (0-based), by quickselect; reorders v. */
static float select_kth(float *v, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = v[lo + (hi - lo) / 2];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j], v[j] = t;
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return v[k];
    }
    return v[k];
}

float ls_percentile(float *v, size_t n, double q) {
    double pos = q / 100.0 * (double)(n - 1);
    size_t k = (size_t)pos;
    double frac = pos - (double)k;
    float a = select_kth(v, n, k);
    if (frac == 0 || k + 1 >= n) return a;
    /* After selection everything above index k is >= a: the next order statistic is their minimum. */
    float b = v[k + 1];
    for (size_t i = k + 2; i < n; i++) b = v[i] < b ? v[i] : b;
    return (float)(a + (b - a) * frac);
}

ls_status ls_prep_init(ls_prep *p, const ls_volume *ras, ls_modality m, int H, int W, ls_error *err) {
    memset(p, 0, sizeof *p);
    p->modality = m, p->H = H, p->W = W;
    if (H < 1 || W < 1) return ls_fail(err, LS_ERR_INPUT, "teacher input size %dx%d is not positive", H, W);
    if (m == LS_MOD_CT) {
        p->lo = LS_CT_WINDOW_LO, p->hi = LS_CT_WINDOW_HI;
        return LS_OK;
    }
    /* Only finite voxels count (numpy's nanpercentile): MR files often carry NaN outside the body,
     * and one NaN would otherwise poison the selection and every normalised pixel. */
    size_t n = ls_volume_nvox(ras), nfin = 0;
    float *copy = ls_calloc(n ? n : 1, sizeof(float), err);
    if (!copy) return LS_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        if (isfinite(ras->data[i])) copy[nfin++] = ras->data[i];
    if (nfin == 0) {
        free(copy);
        return ls_fail(err, LS_ERR_INPUT, "MR volume has no finite voxel to take percentiles of");
    }
    p->lo = ls_percentile(copy, nfin, 0.5);
    p->hi = ls_percentile(copy, nfin, 99.5);
    free(copy);
    if (!(p->hi > p->lo)) p->hi = p->lo + 1; /* a constant volume: everything maps to 0 */
    return LS_OK;
}

void ls_resize_bilinear(const float *in, int ih, int iw, float *out, int oh, int ow) {
    double sy = (double)ih / oh, sx = (double)iw / ow;
    for (int y = 0; y < oh; y++) {
        double fy = (y + 0.5) * sy - 0.5;
        if (fy < 0) fy = 0;
        int y0 = (int)fy, y1 = y0 + (y0 < ih - 1);
        float wy = (float)(fy - y0);
        for (int x = 0; x < ow; x++) {
            double fx = (x + 0.5) * sx - 0.5;
            if (fx < 0) fx = 0;
            int x0 = (int)fx, x1 = x0 + (x0 < iw - 1);
            float wx = (float)(fx - x0);
            float top = (1 - wx) * in[(size_t)y0 * iw + x0] + wx * in[(size_t)y0 * iw + x1];
            float bot = (1 - wx) * in[(size_t)y1 * iw + x0] + wx * in[(size_t)y1 * iw + x1];
            out[(size_t)y * ow + x] = (1 - wy) * top + wy * bot;
        }
    }
}

void ls_prep_grey(const ls_prep *p, const ls_volume *ras, int64_t k, float *img, float *out, int H, int W) {
    int nx = (int)ras->geom.dim[0], ny = (int)ras->geom.dim[1];
    const float *s = ras->data + (size_t)k * nx * ny;
    float scale = 1.0f / (p->hi - p->lo);
    /* Radiological display: row r is j = ny-1-r (anterior first), column c is i = nx-1-c (right first). */
    for (int r = 0; r < ny; r++)
        for (int c = 0; c < nx; c++) {
            float v = (s[(size_t)(ny - 1 - r) * nx + (nx - 1 - c)] - p->lo) * scale;
            img[(size_t)r * nx + c] = v > 0 ? (v < 1 ? v : 1) : 0; /* NaN -> 0, like background */
        }
    ls_resize_bilinear(img, ny, nx, out, H, W);
}

void ls_prep_slice(const ls_prep *p, const ls_volume *ras, int64_t k, float *img, float *out) {
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    ls_prep_grey(p, ras, k, img, out, p->H, p->W);
    size_t hw = (size_t)p->H * p->W;
    for (int ch = 2; ch >= 0; ch--)
        for (size_t i = 0; i < hw; i++) out[ch * hw + i] = (out[i] - mean[ch]) / std[ch];
}

void ls_unprep_plane(const float *in, int H, int W, const ls_volume *ras, float *img, float *slice) {
    int nx = (int)ras->geom.dim[0], ny = (int)ras->geom.dim[1];
    ls_resize_bilinear(in, H, W, img, ny, nx);
    for (int r = 0; r < ny; r++)
        for (int c = 0; c < nx; c++) slice[(size_t)(ny - 1 - r) * nx + (nx - 1 - c)] = img[(size_t)r * nx + c];
}
