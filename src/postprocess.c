/*
 * postprocess.c — clean-up of a binary liver mask: keep the largest 3-D connected component, fill
 * holes. Masks are uint8 (0 background, 1 liver), x fastest, dims dim[0] x dim[1] x dim[2].
 *
 * Connectivity: foreground components are 26-connected (a diagonal touch keeps thin parts of the
 * liver together); holes are background regions not 6-connected to the border of the mask's bounding
 * box (the dual connectivity, scipy's binary_fill_holes default).
 *
 * Method: work is confined to the bounding box of the foreground. Each box row (fixed y, z) is cut into
 * runs of equal voxels; runs are joined by union-find with the runs of the already-scanned neighbouring
 * rows they touch (26-connectivity: rows y-1 of the same slice and y-1, y, y+1 of the slice before, with
 * runs touching diagonally too; 6-/4-connectivity: rows y-1 and z-1, overlapping runs only). The root of a
 * set is its smallest run index, i.e. its first voxel in scan order, which gives the "first in scan order"
 * tie-break for free. Scratch is 12 bytes per run (plus 8 per component), so a smooth mask costs almost
 * nothing and a noisy one at most a few bytes per voxel of the box.
 */
#include "postprocess.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct {
    int64_t lo[3], hi[3]; /* inclusive */
} box3;

/* Row scans eight voxels at a time: the first zero byte of a word w is the lowest flagged byte of
 * (w - 0x01..01) & ~w & 0x80..80 (bytes above it may be flagged falsely, never below it). */
#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && defined(__GNUC__)
#define WORD_SCAN 1
#else
#define WORD_SCAN 0
#endif

/* The first i in [i, end) where (p[i] != 0) != nonzero, or end: skips a run of nonzero or of zero voxels. */
static inline int64_t run_end(const uint8_t *p, int64_t i, int64_t end, int nonzero) {
#if WORD_SCAN
    for (; i + 8 <= end; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        uint64_t stop = nonzero ? (w - ONES) & ~w & HIGHS : w;
        if (stop) return i + __builtin_ctzll(stop) / 8;
    }
#endif
    while (i < end && (p[i] != 0) == nonzero) i++;
    return i;
}

/* The last nonzero voxel of p[0..n), or -1. */
static int64_t last_nonzero(const uint8_t *p, int64_t n) {
    int64_t i = n;
#if WORD_SCAN
    for (; i >= 8; i -= 8) {
        uint64_t w;
        memcpy(&w, p + i - 8, 8);
        if (w) return i - 1 - __builtin_clzll(w) / 8;
    }
#endif
    while (i > 0 && !p[i - 1]) i--;
    return i - 1;
}

/* Bounding box of the nonzero voxels; 0 when there are none. Slices in parallel. */
static int bbox(const uint8_t *m, const int64_t d[3], box3 *b) {
    int64_t lo0 = d[0], lo1 = d[1], lo2 = d[2], hi0 = -1, hi1 = -1, hi2 = -1;
#pragma omp parallel for schedule(static) reduction(min : lo0, lo1, lo2) reduction(max : hi0, hi1, hi2) if (d[2] > 1)
    for (int64_t k = 0; k < d[2]; k++)
        for (int64_t j = 0; j < d[1]; j++) {
            const uint8_t *row = m + (k * d[1] + j) * d[0];
            int64_t first = run_end(row, 0, d[0], 0);
            if (first == d[0]) continue;
            int64_t last = last_nonzero(row, d[0]);
            if (first < lo0) lo0 = first;
            if (last > hi0) hi0 = last;
            if (j < lo1) lo1 = j;
            if (j > hi1) hi1 = j;
            if (k < lo2) lo2 = k;
            if (k > hi2) hi2 = k;
        }
    b->lo[0] = lo0, b->lo[1] = lo1, b->lo[2] = lo2, b->hi[0] = hi0, b->hi[1] = hi1, b->hi[2] = hi2;
    return hi0 >= 0;
}

/* Runs [x0, x1) of voxels equal to `fg` (nonzero) or background (fg == 0) in every row of box b, in scan
 * order; row r = (k - lo2) * ny + (j - lo1) holds runs start[r] .. start[r+1]-1. parent[] is the
 * union-find forest over runs. */
typedef struct {
    int32_t *x;       /* x[2*i], x[2*i+1]: the run's first and one-past-last voxel */
    uint32_t *parent;
    uint32_t *start;  /* rows + 1 */
    int64_t n, ny, nz;
} runs;

static void runs_free(runs *r) { free(r->x), free(r->parent), free(r->start), memset(r, 0, sizeof *r); }

/* Runs of row p within [x0, x1) into x (NULL: count only); returns how many. */
static int64_t row_runs(const uint8_t *p, int64_t x0, int64_t x1, int fg, int32_t *x) {
    int64_t n = 0, i = x0;
    while (i < x1) {
        i = run_end(p, i, x1, !fg);
        if (i == x1) break;
        int64_t s = i;
        i = run_end(p, i, x1, fg);
        if (x) x[2 * n] = (int32_t)s, x[2 * n + 1] = (int32_t)i;
        n++;
    }
    return n;
}

/* The first voxel of box row `row`. */
static uint8_t *box_row(uint8_t *m, const int64_t d[3], const box3 *b, int64_t ny, int64_t row) {
    return m + ((b->lo[2] + row / ny) * d[1] + b->lo[1] + row % ny) * d[0];
}

/* Rows are counted, then filled, in parallel; the offsets between are a prefix sum. */
static ls_status runs_find(runs *r, const uint8_t *m, const int64_t d[3], const box3 *b, int fg, ls_error *err) {
    memset(r, 0, sizeof *r);
    if (d[0] > INT32_MAX) return ls_fail(err, LS_ERR_INPUT, "mask too large for clean-up (%lld voxels a row)", (long long)d[0]);
    r->ny = b->hi[1] - b->lo[1] + 1, r->nz = b->hi[2] - b->lo[2] + 1;
    int64_t rows = r->ny * r->nz, x0 = b->lo[0], x1 = b->hi[0] + 1;
    int64_t *count = ls_calloc((size_t)rows + 1, sizeof *count, err);
    r->start = ls_calloc((size_t)rows + 1, sizeof *r->start, err);
    if (!count || !r->start) {
        free(count), runs_free(r);
        return LS_ERR_NOMEM;
    }
    uint8_t *mm = (uint8_t *)m; /* box_row's pointer is only read here */
#pragma omp parallel for schedule(static) if (rows > 64 && !omp_in_parallel())
    for (int64_t row = 0; row < rows; row++) count[row] = row_runs(box_row(mm, d, b, r->ny, row), x0, x1, fg, NULL);
    int64_t n = 0;
    for (int64_t row = 0; row < rows; row++) {
        int64_t c = count[row];
        count[row] = n;
        n += c;
    }
    count[rows] = n;
    if (n >= UINT32_MAX) {
        free(count), runs_free(r);
        return ls_fail(err, LS_ERR_INPUT, "mask too large for clean-up (%lld runs)", (long long)n);
    }
    for (int64_t row = 0; row <= rows; row++) r->start[row] = (uint32_t)count[row];
    free(count);
    r->n = n;
    r->x = ls_calloc((size_t)n * 2 + 2, sizeof *r->x, err);
    r->parent = ls_calloc((size_t)n + 1, sizeof *r->parent, err);
    if (!r->x || !r->parent) {
        runs_free(r);
        return LS_ERR_NOMEM;
    }
#pragma omp parallel for schedule(static) if (rows > 64 && !omp_in_parallel())
    for (int64_t row = 0; row < rows; row++) row_runs(box_row(mm, d, b, r->ny, row), x0, x1, fg, r->x + 2 * (size_t)r->start[row]);
    for (int64_t i = 0; i < r->n; i++) r->parent[i] = (uint32_t)i;
    return LS_OK;
}

static uint32_t find_root(uint32_t *parent, uint32_t a) {
    while (parent[a] != a) {
        parent[a] = parent[parent[a]];
        a = parent[a];
    }
    return a;
}

static void unite(uint32_t *parent, uint32_t a, uint32_t b) {
    a = find_root(parent, a), b = find_root(parent, b);
    if (a < b) parent[b] = a;
    else if (b < a) parent[a] = b;
}

/* Joins the runs of row `ra` with those of row `rb` they touch: `diag` 1 lets runs one voxel apart in x
 * touch (26-connectivity between adjacent rows), 0 requires overlap. */
static void join_rows(runs *r, int64_t ra, int64_t rb, int diag) {
    uint32_t i = r->start[ra], ie = r->start[ra + 1], j = r->start[rb], je = r->start[rb + 1];
    const int32_t *x = r->x;
    while (i < ie && j < je) {
        int32_t a0 = x[2 * i], a1 = x[2 * i + 1], b0 = x[2 * j], b1 = x[2 * j + 1];
        if (a0 < b1 + diag && b0 < a1 + diag) unite(r->parent, i, j);
        if (a1 <= b1) i++;
        else j++;
    }
}

/* Joins the runs of row (k, j) with those of its earlier neighbours: row j-1 of slice k when `same`, the
 * rows j-1..j+1 of slice k-1 (only j with conn26 0) when `prev`. */
static void join_neighbours(runs *r, int64_t k, int64_t j, int conn26, int same, int prev) {
    int64_t row = k * r->ny + j;
    if (r->start[row] == r->start[row + 1]) return;
    if (same && j > 0) join_rows(r, row, row - 1, conn26);
    if (prev && k > 0) {
        join_rows(r, row, row - r->ny, conn26);
        if (conn26 && j > 0) join_rows(r, row, row - r->ny - 1, 1);
        if (conn26 && j + 1 < r->ny) join_rows(r, row, row - r->ny + 1, 1);
    }
}

/* Unions every run with its neighbours. conn26: 26-connectivity, else 6 (4 in a one-slice box). The
 * slices are cut into one slab per thread, labelled in parallel (a slab's unions touch only its own runs,
 * and a root is always its set's smallest index), then the slabs' first slices are joined to the slices
 * before them. */
static void label(runs *r, int conn26) {
    int64_t slabs = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (slabs > r->nz / 4) slabs = r->nz / 4 > 0 ? r->nz / 4 : 1;
#pragma omp parallel for schedule(static, 1) num_threads((int)slabs) if (slabs > 1)
    for (int64_t sl = 0; sl < slabs; sl++) {
        int64_t k0 = r->nz * sl / slabs, k1 = r->nz * (sl + 1) / slabs;
        for (int64_t k = k0; k < k1; k++)
            for (int64_t j = 0; j < r->ny; j++) join_neighbours(r, k, j, conn26, 1, k > k0);
    }
    for (int64_t sl = 1; sl < slabs; sl++)
        for (int64_t j = 0; j < r->ny; j++) join_neighbours(r, r->nz * sl / slabs, j, conn26, 0, 1);
    /* Roots are the smallest index of their set, so one forward pass makes every parent a root. */
    for (int64_t i = 0; i < r->n; i++) r->parent[i] = r->parent[r->parent[i]];
}

ls_status ls_mask_largest_component(uint8_t *m, const int64_t d[3], int64_t *ncomponents, int64_t *kept,
                                    ls_error *err) {
    box3 b;
    runs r;
    if (ncomponents) *ncomponents = 0;
    if (kept) *kept = 0;
    if (!bbox(m, d, &b)) return LS_OK;
    LS_TRY(runs_find(&r, m, d, &b, 1, err));
    label(&r, 1);
    /* Compact labels in order of first voxel, and component sizes. */
    int64_t count = 0;
    for (int64_t i = 0; i < r.n; i++) count += r.parent[i] == (uint32_t)i;
    int64_t *size = ls_calloc((size_t)count, sizeof *size, err);
    if (!size) {
        runs_free(&r);
        return LS_ERR_NOMEM;
    }
    /* parent[i] becomes the label in place: a non-root's parent p < i already holds its label. */
    uint32_t next = 0, *lab = r.parent;
    for (int64_t i = 0; i < r.n; i++) {
        lab[i] = lab[i] == (uint32_t)i ? next++ : lab[lab[i]];
        size[lab[i]] += r.x[2 * i + 1] - r.x[2 * i];
    }
    uint32_t best = 0;
    for (int64_t c = 1; c < count; c++)
        if (size[c] > size[best]) best = (uint32_t)c;
    /* Rewrite the box: the largest component stays, everything else becomes 0. */
    int64_t w = b.hi[0] - b.lo[0] + 1;
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < r.ny * r.nz; row++) {
        uint8_t *p = box_row(m, d, &b, r.ny, row);
        memset(p + b.lo[0], 0, (size_t)w);
        for (uint32_t i = r.start[row]; i < r.start[row + 1]; i++)
            if (lab[i] == best) memset(p + r.x[2 * i], 1, (size_t)(r.x[2 * i + 1] - r.x[2 * i]));
    }
    if (kept) *kept = size[best];
    free(size), runs_free(&r);
    if (ncomponents) *ncomponents = count;
    return LS_OK;
}

/* Fills the background runs of box b not 6-connected (4 when `planar`: a one-slice box whose top and
 * bottom are not borders) to the box's faces. */
static ls_status fill_holes_box(uint8_t *m, const int64_t d[3], const box3 *b, int planar, ls_error *err) {
    runs r;
    LS_TRY(runs_find(&r, m, d, b, 0, err));
    label(&r, 0);
    uint8_t *outside = ls_calloc((size_t)r.n + 1, 1, err);
    if (!outside) {
        runs_free(&r);
        return LS_ERR_NOMEM;
    }
    for (int64_t row = 0; row < r.ny * r.nz; row++) {
        int64_t j = row % r.ny, k = row / r.ny;
        int face = j == 0 || j == r.ny - 1 || (!planar && (k == 0 || k == r.nz - 1));
        for (uint32_t i = r.start[row]; i < r.start[row + 1]; i++)
            if (face || r.x[2 * i] == b->lo[0] || r.x[2 * i + 1] == b->hi[0] + 1) outside[r.parent[i]] = 1;
    }
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
    for (int64_t row = 0; row < r.ny * r.nz; row++) {
        uint8_t *p = box_row(m, d, b, r.ny, row);
        for (uint32_t i = r.start[row]; i < r.start[row + 1]; i++)
            if (!outside[r.parent[i]]) memset(p + r.x[2 * i], 1, (size_t)(r.x[2 * i + 1] - r.x[2 * i]));
    }
    free(outside), runs_free(&r);
    return LS_OK;
}

ls_status ls_mask_fill_holes(uint8_t *m, const int64_t d[3], ls_error *err) {
    box3 b;
    if (!bbox(m, d, &b)) return LS_OK;
    return fill_holes_box(m, d, &b, 0, err);
}

ls_status ls_mask_fill_holes_slices(uint8_t *m, const int64_t d[3], ls_error *err) {
    int64_t slice_dim[3] = {d[0], d[1], 1};
    ls_status st = LS_OK;
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t k = 0; k < d[2]; k++) {
        uint8_t *s = m + k * d[0] * d[1];
        box3 b;
        ls_error e;
        if (!bbox(s, slice_dim, &b)) continue;
        ls_status sk = fill_holes_box(s, slice_dim, &b, 1, &e);
        if (sk) {
#pragma omp critical(ls_fill_slices)
            if (!st) {
                st = sk;
                if (err) *err = e;
            }
        }
    }
    return st;
}

/* Sums per slice, added in slice order afterwards: the same figures for any thread count. */
ls_status ls_mask_measure(const ls_volume *img, const uint8_t *mask, ls_mask_stats *s, ls_error *err) {
    memset(s, 0, sizeof *s);
    const int64_t *d = img->geom.dim;
    const double(*A)[4] = img->geom.affine;
    box3 bb;
    if (!bbox(mask, d, &bb)) return LS_OK;
    double *part = ls_calloc((size_t)d[2] * 3, sizeof *part, err);
    if (!part) return LS_ERR_NOMEM;
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < d[2]; k++) {
        double sum = 0, sum2 = 0, cnt = 0;
        for (int64_t j = 0; j < d[1]; j++) {
            size_t row = (size_t)(d[0] * (j + d[1] * k));
            for (int64_t i = run_end(mask + row, 0, d[0], 0); i < d[0]; i = run_end(mask + row, i + 1, d[0], 0)) {
                double v = img->data[row + (size_t)i];
                sum += v, sum2 += v * v, cnt++;
            }
        }
        part[3 * k] = sum, part[3 * k + 1] = sum2, part[3 * k + 2] = cnt;
    }
    double sum = 0, sum2 = 0, cnt = 0;
    for (int64_t k = 0; k < d[2]; k++) sum += part[3 * k], sum2 += part[3 * k + 1], cnt += part[3 * k + 2];
    free(part);
    s->voxels = (int64_t)cnt;
    const int64_t *lo = bb.lo, *hi = bb.hi;
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
    return LS_OK;
}
