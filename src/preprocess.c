/*
 * preprocess.c — see preprocess.h.
 */
#include "preprocess.h"

#include <ctype.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

ls_status ls_modality_parse(const char *s, ls_modality *m, ls_error *err) {
    if (strcasecmp(s, "ct") == 0) *m = LS_MOD_CT;
    else if (strcasecmp(s, "mr") == 0 || strcasecmp(s, "mri") == 0) *m = LS_MOD_MR;
    else return ls_fail(err, LS_ERR_INPUT, "modality '%s': expected ct or mr (or auto, where a command takes it)", s);
    return LS_OK;
}

const char *ls_modality_name(ls_modality m) { return m == LS_MOD_CT ? "CT" : "MR"; }

ls_modality ls_modality_guess(const ls_volume *v) {
    /* A DICOM series says what it is: its Modality tag, which the reader keeps in descrip. */
    if (!strcmp(v->format, "DICOM") && !strcmp(v->descrip, "DICOM CT")) return LS_MOD_CT;
    if (!strcmp(v->format, "DICOM") && !strcmp(v->descrip, "DICOM MR")) return LS_MOD_MR;
    size_t n = ls_volume_nvox(v);
    for (size_t i = 0; i < n; i++)
        if (v->data[i] <= -100.0f) return LS_MOD_CT;
    return LS_MOD_MR;
}

/* Percentiles by counting, not sorting: a float maps to a 32-bit key with the same order, one pass counts
 * the keys' upper 16 bits (per thread, then summed), which locates the bin of every wanted rank; a second
 * pass counts the lower 16 bits of the keys in those bins, which gives the exact values. Two reads of the
 * data, no copy, exact, and parallel. */
#define HALF 65536

static inline uint32_t order_key(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u >> 31 ? ~u : u | 0x80000000u;
}

static inline float key_value(uint32_t k) {
    uint32_t u = k >> 31 ? k & 0x7fffffffu : ~k;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Counts keys of the finite values of v: with ntop == 0, by upper half into hist[HALF]; else, for the
 * keys whose upper half is tops[j], by lower half into hist[j * HALF ..]. Returns how many were counted. */
static size_t count_keys(const float *v, size_t n, const uint32_t *tops, int ntop, uint64_t *hist, int *ok, ls_error *err) {
    int nth = omp_get_max_threads(), nh = ntop ? ntop : 1;
    uint32_t *part = ls_calloc((size_t)nth * nh * HALF, sizeof *part, err);
    if (!part) return *ok = 0, 0;
    size_t counted = 0;
#pragma omp parallel num_threads(nth) reduction(+ : counted)
    {
        uint32_t *h = part + (size_t)omp_get_thread_num() * nh * HALF;
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(v[i])) continue;
            uint32_t k = order_key(v[i]);
            if (!ntop) {
                h[k >> 16]++, counted++;
                continue;
            }
            for (int j = 0; j < ntop; j++)
                if (k >> 16 == tops[j]) h[(size_t)j * HALF + (k & 0xffff)]++, counted++;
        }
    }
    /* A thread's counts stay below 2^32: it never sees more than n < 2^32 values. */
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < (size_t)nh * HALF; b++) {
        uint64_t c = 0;
        for (int t = 0; t < nth; t++) c += part[(size_t)t * nh * HALF + b];
        hist[b] = c;
    }
    free(part);
    return counted;
}

/* The bin of hist[HALF] holding 0-based rank r; *below receives the count of the bins before it. */
static uint32_t bin_of(const uint64_t *hist, uint64_t r, uint64_t *below) {
    uint64_t acc = 0;
    for (uint32_t b = 0; b < HALF; b++) {
        if (acc + hist[b] > r) return *below = acc, b;
        acc += hist[b];
    }
    LS_ASSERT(0);
    return 0;
}

ls_status ls_percentiles_finite(const float *v, size_t n, const double *q, int nq, float *out, size_t *nfinite,
                                ls_error *err) {
    if (n > UINT32_MAX) return ls_fail(err, LS_ERR_INPUT, "%zu values are too many for percentiles", n);
    if (nq > 8) return ls_fail(err, LS_ERR_INTERNAL, "at most 8 percentiles at once");
    /* numpy's default: linear between the order statistics around q/100 * (n - 1); ranks 2i and 2i+1. */
    uint64_t rank[16], below[16];
    uint32_t top[16], tops[16];
    double frac[8];
    int nr = 0, ntop = 0, ok = 1, slot[16]; /* slot[r]: rank r's bin among tops */
    uint64_t *hist = ls_calloc(17 * HALF, sizeof *hist, err);
    if (!hist) return LS_ERR_NOMEM;
    size_t nf = *nfinite = count_keys(v, n, NULL, 0, hist, &ok, err);
    for (int i = 0; ok && nf && i < nq; i++) {
        double pos = q[i] / 100.0 * (double)(nf - 1);
        uint64_t k = (uint64_t)pos;
        frac[i] = pos - (double)k;
        rank[nr++] = k;
        rank[nr++] = k + 1 < nf ? k + 1 : k;
    }
    for (int r = 0; r < nr; r++) {
        top[r] = bin_of(hist, rank[r], &below[r]);
        int j = 0;
        while (j < ntop && tops[j] != top[r]) j++;
        if (j == ntop) tops[ntop++] = top[r];
        slot[r] = j;
    }
    if (ok && nr) count_keys(v, n, tops, ntop, hist + HALF, &ok, err);
    float stat[16];
    for (int r = 0; ok && r < nr; r++) {
        uint64_t unused;
        stat[r] = key_value(top[r] << 16 | bin_of(hist + HALF * (1 + (size_t)slot[r]), rank[r] - below[r], &unused));
    }
    for (int i = 0; ok && nf && i < nq; i++) {
        float a = stat[2 * i], b = stat[2 * i + 1];
        out[i] = frac[i] == 0 ? a : (float)(a + (b - a) * frac[i]);
    }
    free(hist);
    return ok ? LS_OK : LS_ERR_NOMEM;
}

float ls_percentile(const float *v, size_t n, double q) {
    float out = NAN;
    size_t nf;
    ls_percentiles_finite(v, n, &q, 1, &out, &nf, NULL);
    return nf ? out : NAN;
}

ls_status ls_prep_init(ls_prep *p, const ls_volume *ras, ls_modality m, int H, int W, ls_error *err) {
    memset(p, 0, sizeof *p);
    p->modality = m, p->H = H, p->W = W, p->gamma = 1;
    if (H < 1 || W < 1) return ls_fail(err, LS_ERR_INPUT, "teacher input size %dx%d is not positive", H, W);
    if (m == LS_MOD_CT) {
        p->lo = LS_CT_WINDOW_LO, p->hi = LS_CT_WINDOW_HI;
        return LS_OK;
    }
    /* Only finite voxels count (numpy's nanpercentile): MR files often carry NaN outside the body,
     * and one NaN would otherwise poison every normalised pixel. */
    static const double q[2] = {0.5, 99.5};
    float w[2];
    size_t nfin;
    LS_TRY(ls_percentiles_finite(ras->data, ls_volume_nvox(ras), q, 2, w, &nfin, err));
    if (nfin == 0) return ls_fail(err, LS_ERR_INPUT, "MR volume has no finite voxel to take percentiles of");
    p->lo = w[0], p->hi = w[1];
    if (!(p->hi > p->lo)) p->hi = p->lo + 1; /* a constant volume: everything maps to 0 */
    return LS_OK;
}

/* Bilinear weights of output index y over a canvas of n samples shown at m: PyTorch's source index
 * (align_corners=False, clamped at 0) and its neighbour (clamped at the canvas' end). */
static inline void source_index(int y, int n, int m, int *i0, int *i1, float *w) {
    double f = (y + 0.5) * ((double)n / m) - 0.5;
    if (f < 0) f = 0;
    *i0 = (int)f, *i1 = *i0 + (*i0 < n - 1), *w = (float)(f - *i0);
}

/* in[r, c] for canvas row r and column c padded by py and px: the fill outside the plane. */
static inline float canvas_at(const float *in, int ih, int iw, int py, int px, float fill, int r, int c) {
    r -= py, c -= px;
    return r >= 0 && r < ih && c >= 0 && c < iw ? in[(size_t)r * iw + c] : fill;
}

void ls_resize_padded(const float *in, int ih, int iw, int py, int px, float fill, float *out, int oh, int ow) {
    int ch = ih + 2 * py, cw = iw + 2 * px;
    for (int y = 0; y < oh; y++) {
        int y0, y1, x0, x1;
        float wy, wx;
        source_index(y, ch, oh, &y0, &y1, &wy);
        for (int x = 0; x < ow; x++) {
            source_index(x, cw, ow, &x0, &x1, &wx);
            float a = canvas_at(in, ih, iw, py, px, fill, y0, x0), b = canvas_at(in, ih, iw, py, px, fill, y0, x1);
            float c = canvas_at(in, ih, iw, py, px, fill, y1, x0), d = canvas_at(in, ih, iw, py, px, fill, y1, x1);
            out[(size_t)y * ow + x] = (1 - wy) * ((1 - wx) * a + wx * b) + wy * ((1 - wx) * c + wx * d);
        }
    }
}

void ls_resize_unpad(const float *in, int h, int w, int ih, int iw, int py, int px, float *out) {
    int ch = ih + 2 * py, cw = iw + 2 * px;
    for (int r = 0; r < ih; r++) {
        int y0, y1, x0, x1;
        float wy, wx;
        source_index(r + py, h, ch, &y0, &y1, &wy);
        for (int c = 0; c < iw; c++) {
            source_index(c + px, w, cw, &x0, &x1, &wx);
            float top = (1 - wx) * in[(size_t)y0 * w + x0] + wx * in[(size_t)y0 * w + x1];
            float bot = (1 - wx) * in[(size_t)y1 * w + x0] + wx * in[(size_t)y1 * w + x1];
            out[(size_t)r * iw + c] = (1 - wy) * top + wy * bot;
        }
    }
}

void ls_resize_bilinear(const float *in, int ih, int iw, float *out, int oh, int ow) {
    ls_resize_padded(in, ih, iw, 0, 0, 0.0f, out, oh, ow);
}

void ls_prep_padding(const ls_volume *ras, int H, int W, int *py, int *px) {
    const double(*A)[4] = ras->geom.affine;
    double dx = sqrt(A[0][0] * A[0][0] + A[1][0] * A[1][0] + A[2][0] * A[2][0]);
    double dy = sqrt(A[0][1] * A[0][1] + A[1][1] * A[1][1] + A[2][1] * A[2][1]);
    double nx = (double)ras->geom.dim[0], ny = (double)ras->geom.dim[1];
    *py = *px = 0;
    if (!(dx > 0 && dy > 0 && isfinite(dx) && isfinite(dy))) return;
    double mm = fmax(nx * dx / W, ny * dy / H); /* per output pixel, on both axes */
    /* Bounded (a spacing ratio of a million would otherwise overflow): a field of view 2^20 voxels from
     * square is nothing the model could see anyway. */
    *px = (int)lround(fmin((W * mm / dx - nx) / 2, 1 << 20)), *py = (int)lround(fmin((H * mm / dy - ny) / 2, 1 << 20));
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
    if (p->gamma != 1)
        for (size_t i = 0; i < (size_t)nx * ny; i++) img[i] = powf(img[i], p->gamma);
    int py, px;
    ls_prep_padding(ras, H, W, &py, &px);
    ls_resize_padded(img, ny, nx, py, px, 0.0f, out, H, W);
}

void ls_prep_slice(const ls_prep *p, const ls_volume *ras, int64_t k, float *img, float *out) {
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    ls_prep_grey(p, ras, k, img, out, p->H, p->W);
    size_t hw = (size_t)p->H * p->W;
    for (int ch = 2; ch >= 0; ch--)
        for (size_t i = 0; i < hw; i++) out[ch * hw + i] = (out[i] - mean[ch]) / std[ch];
}

void ls_unprep_plane(const float *in, int H, int W, const ls_volume *ras, float *img, float *slice) {
    int nx = (int)ras->geom.dim[0], ny = (int)ras->geom.dim[1], py, px;
    ls_prep_padding(ras, H, W, &py, &px);
    ls_resize_unpad(in, H, W, ny, nx, py, px, img);
    for (int r = 0; r < ny; r++)
        for (int c = 0; c < nx; c++) slice[(size_t)(ny - 1 - r) * nx + (nx - 1 - c)] = img[(size_t)r * nx + c];
}
