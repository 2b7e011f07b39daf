/*
 * preview.c — see preview.h. Each panel is sampled nearest-neighbour onto a square-pixel grid whose
 * pixel size keeps the longest side near 384 pixels, then the three panels are placed side by side.
 */
#include "preview.h"

#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct {
    int w, h;
    uint8_t *grey, *in; /* w*h each: intensity, mask membership */
} panel;

/* Axis roles of a panel: columns run along volume axis `ca` reversed (patient right/anterior first),
 * rows along `ra` reversed (anterior/superior first), at index `fixed_idx` on the remaining axis. */
static ls_status panel_make(panel *p, const ls_volume *v, const uint8_t *mask, int ca, int ra, int fa,
                            int64_t fixed_idx, double px, float lo, float hi, ls_error *err) {
    const int64_t *d = v->geom.dim;
    double sp[3];
    for (int a = 0; a < 3; a++) sp[a] = fabs(v->geom.affine[a][a]) > 0 ? fabs(v->geom.affine[a][a]) : 1;
    p->w = (int)fmax(1, round(d[ca] * sp[ca] / px));
    p->h = (int)fmax(1, round(d[ra] * sp[ra] / px));
    p->grey = ls_calloc((size_t)p->w * p->h, 1, err);
    p->in = ls_calloc((size_t)p->w * p->h, 1, err);
    if (!p->grey || !p->in) return LS_ERR_NOMEM;
    for (int r = 0; r < p->h; r++)
        for (int c = 0; c < p->w; c++) {
            int64_t idx[3];
            idx[ca] = d[ca] - 1 - (int64_t)((c + 0.5) * px / sp[ca]);
            idx[ra] = d[ra] - 1 - (int64_t)((r + 0.5) * px / sp[ra]);
            idx[fa] = fixed_idx;
            for (int a = 0; a < 3; a++) idx[a] = idx[a] < 0 ? 0 : idx[a] >= d[a] ? d[a] - 1 : idx[a];
            size_t q = (size_t)(idx[0] + d[0] * (idx[1] + d[1] * idx[2]));
            float g = (v->data[q] - lo) / (hi - lo);
            p->grey[r * p->w + c] = (uint8_t)(255.0f * (g < 0 ? 0 : g > 1 ? 1 : g) + 0.5f);
            p->in[r * p->w + c] = mask ? mask[q] != 0 : 0;
        }
    return LS_OK;
}

static void panel_free(panel *p) {
    free(p->grey);
    free(p->in);
}

/* Centre of the mask (voxel indices), or of the volume when the mask is empty. */
static void mask_centre(const ls_volume *v, const uint8_t *mask, int64_t c[3]) {
    const int64_t *d = v->geom.dim;
    double s[3] = {0, 0, 0}, n = 0;
    if (mask)
        for (int64_t k = 0; k < d[2]; k++)
            for (int64_t j = 0; j < d[1]; j++)
                for (int64_t i = 0; i < d[0]; i++)
                    if (mask[i + d[0] * (j + d[1] * k)]) s[0] += (double)i, s[1] += (double)j, s[2] += (double)k, n++;
    for (int a = 0; a < 3; a++) c[a] = n > 0 ? (int64_t)(s[a] / n + 0.5) : d[a] / 2;
}

static ls_status write_rgb_png(const char *path, const uint8_t *rgb, int w, int h, const char *protect, ls_error *err) {
    ls_atomic a;
    LS_TRY(ls_atomic_begin(&a, path, protect, err));
    FILE *f = fopen(a.tmp_path, "wb");
    png_structp png = f ? png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL) : NULL;
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info || setjmp(png_jmpbuf(png))) {
        if (png) png_destroy_write_struct(&png, info ? &info : NULL);
        if (f) fclose(f);
        ls_atomic_abort(&a);
        return ls_fail(err, LS_ERR_IO, "%s: cannot write PNG", path);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int r = 0; r < h; r++) png_write_row(png, (png_const_bytep)(rgb + (size_t)r * w * 3));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) {
        ls_atomic_abort(&a);
        return ls_fail(err, LS_ERR_IO, "%s: cannot write PNG", path);
    }
    return ls_atomic_commit(&a, err);
}

ls_status ls_preview_write_png(const char *path, const ls_volume *ras, const uint8_t *mask, float lo, float hi,
                               const char *protect, ls_error *err) {
    if (!(hi > lo)) return ls_fail(err, LS_ERR_INTERNAL, "preview window %g..%g is empty", lo, hi);
    const int64_t *d = ras->geom.dim;
    double ext = 0, minsp = INFINITY;
    for (int a = 0; a < 3; a++) {
        double sp = fabs(ras->geom.affine[a][a]) > 0 ? fabs(ras->geom.affine[a][a]) : 1;
        ext = fmax(ext, d[a] * sp);
        minsp = fmin(minsp, sp);
    }
    double px = fmax(minsp, ext / 384.0);
    int64_t c[3];
    mask_centre(ras, mask, c);
    panel p[3] = {{0}};
    ls_status s = panel_make(&p[0], ras, mask, 0, 1, 2, c[2], px, lo, hi, err); /* axial */
    if (!s) s = panel_make(&p[1], ras, mask, 0, 2, 1, c[1], px, lo, hi, err);   /* coronal */
    if (!s) s = panel_make(&p[2], ras, mask, 1, 2, 0, c[0], px, lo, hi, err);   /* sagittal */
    int gap = 4, w = p[0].w + p[1].w + p[2].w + 2 * gap, h = 0;
    for (int i = 0; i < 3; i++) h = p[i].h > h ? p[i].h : h;
    uint8_t *rgb = s ? NULL : ls_calloc((size_t)w * h * 3, 1, err);
    if (!s && !rgb) s = LS_ERR_NOMEM;
    for (int i = 0, x0 = 0; !s && i < 3; x0 += p[i].w + gap, i++)
        for (int r = 0; r < p[i].h; r++)
            for (int col = 0; col < p[i].w; col++) {
                const uint8_t *in = p[i].in;
                int k = r * p[i].w + col;
                int edge = in[k] && (col == 0 || !in[k - 1] || col == p[i].w - 1 || !in[k + 1] || r == 0 ||
                                     !in[k - p[i].w] || r == p[i].h - 1 || !in[k + p[i].w]);
                uint8_t *o = rgb + ((size_t)r * w + x0 + col) * 3;
                o[0] = edge ? 255 : p[i].grey[k];
                o[1] = edge ? 40 : p[i].grey[k];
                o[2] = edge ? 40 : p[i].grey[k];
            }
    if (!s) s = write_rgb_png(path, rgb, w, h, protect, err);
    free(rgb);
    for (int i = 0; i < 3; i++) panel_free(&p[i]);
    return s;
}
