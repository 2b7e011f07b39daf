/*
 * postprocess.c — clean-up of a binary liver mask: keep the largest 3-D connected component, fill
 * holes. Masks are uint8 (0 background, 1 liver), x fastest, dims dim[0] x dim[1] x dim[2].
 *
 * Connectivity: foreground components are 26-connected (a diagonal touch keeps thin parts of the
 * liver together); holes are background regions not 6-connected to the border of the mask's bounding
 * box (the dual connectivity, scipy's binary_fill_holes default). Work is confined to the bounding box of
 * the foreground, and queues hold only the voxels being flooded, so a 512x512x300 scan needs no
 * full-size scratch beyond the mask itself.
 */
#include "postprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct {
    int64_t lo[3], hi[3]; /* inclusive */
} box3;

static int bbox(const uint8_t *m, const int64_t d[3], box3 *b) {
    for (int a = 0; a < 3; a++) b->lo[a] = d[a], b->hi[a] = -1;
    for (int64_t k = 0; k < d[2]; k++)
        for (int64_t j = 0; j < d[1]; j++) {
            const uint8_t *row = m + (k * d[1] + j) * d[0];
            for (int64_t i = 0; i < d[0]; i++)
                if (row[i]) {
                    if (i < b->lo[0]) b->lo[0] = i;
                    if (i > b->hi[0]) b->hi[0] = i;
                    if (j < b->lo[1]) b->lo[1] = j;
                    if (j > b->hi[1]) b->hi[1] = j;
                    if (k < b->lo[2]) b->lo[2] = k;
                    if (k > b->hi[2]) b->hi[2] = k;
                }
        }
    return b->hi[0] >= 0;
}

/* Flood from `seed` over voxels equal to `from` inside box b, setting them to `to`; returns the size.
 * conn26 selects 26- or 6-connectivity. `queue` has room for every voxel of the box. */
static int64_t flood(uint8_t *m, const int64_t d[3], const box3 *b, int64_t seed, uint8_t from, uint8_t to,
                     int conn26, int64_t *queue) {
    int64_t head = 0, tail = 0, sx = d[0], sxy = d[0] * d[1];
    m[seed] = to;
    queue[tail++] = seed;
    while (head < tail) {
        int64_t p = queue[head++];
        int64_t k = p / sxy, j = (p / sx) % d[1], i = p % sx;
        for (int dk = -1; dk <= 1; dk++)
            for (int dj = -1; dj <= 1; dj++)
                for (int di = -1; di <= 1; di++) {
                    int nz = (dk != 0) + (dj != 0) + (di != 0);
                    if (nz == 0 || (!conn26 && nz != 1)) continue;
                    int64_t ii = i + di, jj = j + dj, kk = k + dk;
                    if (ii < b->lo[0] || ii > b->hi[0] || jj < b->lo[1] || jj > b->hi[1] || kk < b->lo[2] ||
                        kk > b->hi[2])
                        continue;
                    int64_t q = ii + jj * sx + kk * sxy;
                    if (m[q] == from) {
                        m[q] = to;
                        queue[tail++] = q;
                    }
                }
    }
    return tail;
}

static int64_t box_voxels(const box3 *b) {
    return (b->hi[0] - b->lo[0] + 1) * (b->hi[1] - b->lo[1] + 1) * (b->hi[2] - b->lo[2] + 1);
}

ls_status ls_mask_largest_component(uint8_t *m, const int64_t d[3], int64_t *ncomponents, ls_error *err) {
    box3 b;
    if (ncomponents) *ncomponents = 0;
    if (!bbox(m, d, &b)) return LS_OK;
    int64_t *queue = ls_calloc((size_t)box_voxels(&b), sizeof *queue, err);
    if (!queue) return LS_ERR_NOMEM;
    /* Pass 1: size every component (marking visited voxels 3), remember the largest one's seed. */
    int64_t best = -1, best_size = 0, count = 0;
    for (int64_t k = b.lo[2]; k <= b.hi[2]; k++)
        for (int64_t j = b.lo[1]; j <= b.hi[1]; j++)
            for (int64_t i = b.lo[0]; i <= b.hi[0]; i++) {
                int64_t p = i + d[0] * (j + d[1] * k);
                if (m[p] != 1) continue;
                int64_t size = flood(m, d, &b, p, 1, 3, 1, queue);
                count++;
                if (size > best_size) best_size = size, best = p;
            }
    /* Pass 2: the largest becomes 1 again, everything else 0. */
    flood(m, d, &b, best, 3, 2, 1, queue);
    for (int64_t k = b.lo[2]; k <= b.hi[2]; k++)
        for (int64_t j = b.lo[1]; j <= b.hi[1]; j++)
            for (int64_t i = b.lo[0]; i <= b.hi[0]; i++) {
                int64_t p = i + d[0] * (j + d[1] * k);
                m[p] = m[p] == 2;
            }
    free(queue);
    if (ncomponents) *ncomponents = count;
    return LS_OK;
}

/* Marks (as 2) the background reachable from the faces of box b, 6-connected, within b. `planar`
 * treats a one-slice box as a 2-D image, whose top and bottom are not borders. */
static void flood_outside(uint8_t *m, const int64_t d[3], const box3 *b, int planar, int64_t *queue) {
    for (int64_t k = b->lo[2]; k <= b->hi[2]; k++)
        for (int64_t j = b->lo[1]; j <= b->hi[1]; j++)
            for (int64_t i = b->lo[0]; i <= b->hi[0]; i++) {
                int on_face = i == b->lo[0] || i == b->hi[0] || j == b->lo[1] || j == b->hi[1] ||
                              (!planar && (k == b->lo[2] || k == b->hi[2]));
                if (!on_face) continue;
                int64_t p = i + d[0] * (j + d[1] * k);
                if (m[p] == 0) flood(m, d, b, p, 0, 2, 0, queue);
            }
}

static ls_status fill_holes(uint8_t *m, const int64_t d[3], int planar, ls_error *err) {
    box3 b;
    if (!bbox(m, d, &b)) return LS_OK;
    int64_t *queue = ls_calloc((size_t)box_voxels(&b), sizeof *queue, err);
    if (!queue) return LS_ERR_NOMEM;
    flood_outside(m, d, &b, planar, queue);
    for (int64_t k = b.lo[2]; k <= b.hi[2]; k++)
        for (int64_t j = b.lo[1]; j <= b.hi[1]; j++)
            for (int64_t i = b.lo[0]; i <= b.hi[0]; i++) {
                int64_t p = i + d[0] * (j + d[1] * k);
                m[p] = m[p] != 2;
            }
    free(queue);
    return LS_OK;
}

ls_status ls_mask_fill_holes(uint8_t *m, const int64_t d[3], ls_error *err) { return fill_holes(m, d, 0, err); }

ls_status ls_mask_fill_holes_slices(uint8_t *m, const int64_t d[3], ls_error *err) {
    int64_t slice_dim[3] = {d[0], d[1], 1};
    for (int64_t k = 0; k < d[2]; k++)
        LS_TRY(fill_holes(m + k * d[0] * d[1], slice_dim, 1, err));
    return LS_OK;
}

void ls_mask_measure(const ls_volume *img, const uint8_t *mask, ls_mask_stats *s) {
    memset(s, 0, sizeof *s);
    const int64_t *d = img->geom.dim;
    const double(*A)[4] = img->geom.affine;
    double sum = 0, sum2 = 0;
    int64_t lo[3] = {d[0], d[1], d[2]}, hi[3] = {-1, -1, -1};
    for (int64_t k = 0; k < d[2]; k++)
        for (int64_t j = 0; j < d[1]; j++)
            for (int64_t i = 0; i < d[0]; i++) {
                size_t p = (size_t)(i + d[0] * (j + d[1] * k));
                if (!mask[p]) continue;
                double v = img->data[p];
                sum += v, sum2 += v * v, s->voxels++;
                int64_t idx[3] = {i, j, k};
                for (int a = 0; a < 3; a++) {
                    if (idx[a] < lo[a]) lo[a] = idx[a];
                    if (idx[a] > hi[a]) hi[a] = idx[a];
                }
            }
    if (!s->voxels) return;
    double det = A[0][0] * (A[1][1] * A[2][2] - A[1][2] * A[2][1]) - A[0][1] * (A[1][0] * A[2][2] - A[1][2] * A[2][0]) +
                 A[0][2] * (A[1][0] * A[2][1] - A[1][1] * A[2][0]);
    s->volume_ml = (double)s->voxels * fabs(det) / 1000.0;
    s->mean = sum / (double)s->voxels;
    s->std = sqrt(fmax(0, sum2 / (double)s->voxels - s->mean * s->mean));
    /* The world box spanned by the index box's eight corners. */
    for (int a = 0; a < 3; a++) s->bbox_min[a] = INFINITY, s->bbox_max[a] = -INFINITY;
    for (int c = 0; c < 8; c++) {
        int64_t idx[3] = {c & 1 ? hi[0] : lo[0], c & 2 ? hi[1] : lo[1], c & 4 ? hi[2] : lo[2]};
        for (int a = 0; a < 3; a++) {
            double w = A[a][0] * (double)idx[0] + A[a][1] * (double)idx[1] + A[a][2] * (double)idx[2] + A[a][3];
            s->bbox_min[a] = fmin(s->bbox_min[a], w);
            s->bbox_max[a] = fmax(s->bbox_max[a], w);
        }
    }
}
