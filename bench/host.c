/*
 * bench/host.c — the host stages of `livseg segment` on a 512 x 512 x 300 CT, each against a reference
 * measured in the same run: reading the .nii.gz (reference: zlib's gzread inflating the same file, which
 * is what nifticlib's reader spends most of its time in), the mask clean-up (reference: the same chain in
 * scipy.ndimage, whose result must also be identical), and writing the mask .nii.gz (reference: zlib's
 * gzwrite at gzip's default level 6 of the same bytes, as nifticlib writes). Also times the reorientation
 * to RAS and back and the measuring, and prints the host total. Best of 3 passes each. Not a test.
 *
 * The CT is a BTCV scan (CASE, default btcv_00) resampled to 512 x 512 in-plane (bilinear) and to 300
 * slices (nearest); the mask is its liver label on that grid with 300 false-positive 3x3x3 blobs and 60
 * one-voxel cavities added, like a network's raw output before clean-up.
 *
 * usage: build/bench/host [DATA_DIR] [threads] [CASE]   (run from the repository root: it calls
 *        bench/cleanup_scipy.py with $LS_PYTHON, default /usr/bin/python3; without scipy there the
 *        clean-up has no reference and no check, and says so)
 *        build/bench/host --make-ct DATA_DIR CASE OUT.nii.gz
 *            only writes that 512 x 512 x 300 CT (for timing `livseg segment` end to end on a real-sized
 *            scan: bench/gpu-check.sh)
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "postprocess.h"
#include "preprocess.h"
#include "rng.h"
#include "ops.h"
#include "util.h"
#include "volume.h"

#define NXY 512
#define NZ 300

static void die(const char *what, const ls_error *err) {
    fprintf(stderr, "bench/host: %s: %s\n", what, err ? err->msg : "failed");
    exit(2);
}

/* v resampled to NXY x NXY (bilinear in-plane) x NZ (nearest slice), keeping the field of view. */
static void resample(const ls_volume *v, ls_volume *out) {
    const int64_t *d = v->geom.dim;
    int64_t nd[3] = {NXY, NXY, NZ};
    double aff[4][4];
    memcpy(aff, v->geom.affine, sizeof aff);
    for (int i = 0; i < 3; i++)
        aff[i][0] *= (double)d[0] / NXY, aff[i][1] *= (double)d[1] / NXY, aff[i][2] *= (double)d[2] / NZ;
    memset(out, 0, sizeof *out);
    ls_geom_from_affine(&out->geom, nd, aff);
    out->data = ls_xmalloc(sizeof(float) * NXY * NXY * NZ);
    snprintf(out->format, sizeof out->format, "NIfTI-1");
    for (int64_t k = 0; k < NZ; k++)
        ls_resize_bilinear(v->data + (size_t)(k * d[2] / NZ) * d[0] * d[1], (int)d[1], (int)d[0],
                           out->data + (size_t)k * NXY * NXY, NXY, NXY);
}

static double best_of(double a, double b) { return a < b ? a : b; }

/* zlib's inflation of the whole file. */
static double time_gzread(const char *path, size_t n) {
    char *buf = ls_xmalloc(n);
    double t = ls_now();
    gzFile g = gzopen(path, "rb");
    gzbuffer(g, 1 << 20);
    size_t got = 0;
    int r;
    while (got < n && (r = gzread(g, buf + got, n - got > (1u << 30) ? 1u << 30 : (unsigned)(n - got))) > 0) got += (size_t)r;
    gzclose(g);
    t = ls_now() - t;
    free(buf);
    if (got != n) die("gzread", NULL);
    return t;
}

/* zlib's compression at level 6 of the header-sized prefix and the mask, as one member. */
static double time_gzwrite(const char *path, const uint8_t *m, size_t n) {
    static const unsigned char head[352];
    double t = ls_now();
    gzFile g = gzopen(path, "wb6");
    gzwrite(g, head, sizeof head);
    for (size_t off = 0; off < n; off += 1u << 30) gzwrite(g, m + off, n - off > (1u << 30) ? 1u << 30 : (unsigned)(n - off));
    gzclose(g);
    return ls_now() - t;
}

/* The pre-clean-up mask: the label, false-positive blobs, cavities. */
static uint8_t *raw_mask(const ls_volume *lab) {
    size_t n = (size_t)NXY * NXY * NZ;
    uint8_t *m = ls_xmalloc(n);
    for (size_t i = 0; i < n; i++) m[i] = lab->data[i] > 0.5f;
    ls_rng r = {7};
    for (int b = 0; b < 300; b++) {
        int64_t x = 1 + (int64_t)(ls_rng_uniform(&r) * (NXY - 3)), y = 1 + (int64_t)(ls_rng_uniform(&r) * (NXY - 3)),
                z = 1 + (int64_t)(ls_rng_uniform(&r) * (NZ - 3));
        for (int dz = -1; dz <= 1; dz++)
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) m[(size_t)((z + dz) * NXY + y + dy) * NXY + x + dx] = 1;
    }
    for (int c = 0, tries = 0; c < 60 && tries < 1000000; tries++) {
        size_t i = (size_t)(ls_rng_uniform(&r) * (double)n);
        int64_t x = (int64_t)(i % NXY), y = (int64_t)(i / NXY % NXY), z = (int64_t)(i / NXY / NXY);
        if (x < 1 || y < 1 || z < 1 || x > NXY - 2 || y > NXY - 2 || z > NZ - 2) continue;
        int inside = 1;
        for (int a = 0; a < 3; a++) {
            size_t st = a == 0 ? 1 : a == 1 ? NXY : (size_t)NXY * NXY;
            inside &= m[i - st] && m[i + st];
        }
        if (inside && m[i]) m[i] = 0, c++;
    }
    return m;
}

/* DATA/btcv/CASE_{ct,liver}.nii.gz resampled to the benchmark's grid. */
static void load_case(const char *data, const char *id, ls_volume *ct, ls_volume *lab) {
    char path[1024];
    ls_error err = {0};
    ls_volume src;
    snprintf(path, sizeof path, "%s/btcv/%s_ct.nii.gz", data, id);
    if (ls_volume_read(path, &src, &err)) die("CT", &err);
    resample(&src, ct);
    ls_volume_free(&src);
    if (!lab) return;
    snprintf(path, sizeof path, "%s/btcv/%s_liver.nii.gz", data, id);
    if (ls_volume_read(path, &src, &err)) die("label", &err);
    resample(&src, lab);
    ls_volume_free(&src);
}

int main(int argc, char **argv) {
    ls_process_tune(argv); /* the kernels and OpenMP waiting livseg runs with (ops.h), both sides */
    ls_error err = {0};
    ls_volume ct, lab;
    if (argc == 5 && !strcmp(argv[1], "--make-ct")) {
        load_case(argv[2], argv[3], &ct, NULL);
        if (ls_volume_write(argv[4], &ct, LS_DT_I16, NULL, &err)) die("writing the CT", &err);
        printf("host CT %s (%s resampled to %dx%dx%d)\n", argv[4], argv[3], NXY, NXY, NZ);
        ls_volume_free(&ct);
        return 0;
    }
    const char *data = argc > 1 ? argv[1] : "../shared/data";
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    const char *id = argc > 3 ? argv[3] : "btcv_00";
    omp_set_num_threads(threads);
    load_case(data, id, &ct, &lab);
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char ct_path[1100], mask_path[1100], ref_path[1100], raw_path[1100], scipy_path[1100], cmd[4600];
    snprintf(ct_path, sizeof ct_path, "%s/livseg-bench-host-ct.nii.gz", tmp);
    snprintf(mask_path, sizeof mask_path, "%s/livseg-bench-host-mask.nii.gz", tmp);
    snprintf(ref_path, sizeof ref_path, "%s/livseg-bench-host-zlib.nii.gz", tmp);
    snprintf(raw_path, sizeof raw_path, "%s/livseg-bench-host-raw.u8", tmp);
    snprintf(scipy_path, sizeof scipy_path, "%s/livseg-bench-host-scipy.u8", tmp);
    if (ls_volume_write(ct_path, &ct, LS_DT_I16, NULL, &err)) die("writing the CT", &err);
    size_t n = (size_t)NXY * NXY * NZ;
    uint8_t *raw = raw_mask(&lab);
    ls_volume_free(&lab);
    ls_volume_free(&ct);

    /* Read. */
    double t_read = 1e30, t_zread = 1e30;
    ls_volume v = {0};
    for (int p = 0; p < 3; p++) {
        ls_volume_free(&v);
        double t = ls_now();
        if (ls_volume_read(ct_path, &v, &err)) die("read", &err);
        t_read = best_of(t_read, ls_now() - t);
        t_zread = best_of(t_zread, time_gzread(ct_path, 352 + n * 2));
    }
    /* To RAS and back. */
    ls_orient o;
    ls_orient_from_geom(&v.geom, &o);
    ls_volume ras;
    double t_ras = 1e30;
    for (int p = 0; p < 3; p++) {
        double t = ls_now();
        if (ls_volume_to_ras(&v, &o, &ras, &err)) die("to RAS", &err);
        t_ras = best_of(t_ras, ls_now() - t);
        if (p < 2) ls_volume_free(&ras);
    }
    /* Clean-up (the raw mask is taken as RAS-ordered: the btcv grid's orientation does not matter here). */
    uint8_t *m = ls_xmalloc(n), *back = ls_xmalloc(n), *ref = ls_xmalloc(n);
    double t_clean = 1e30;
    int64_t comps = 0;
    for (int p = 0; p < 3; p++) {
        memcpy(m, raw, n);
        double t = ls_now();
        if (ls_mask_largest_component(m, ras.geom.dim, &comps, NULL, &err) || ls_mask_fill_holes(m, ras.geom.dim, &err) ||
            ls_mask_fill_holes_slices(m, ras.geom.dim, &err))
            die("clean-up", &err);
        t_clean = best_of(t_clean, ls_now() - t);
    }
    if (ls_write_file_atomic(raw_path, raw, n, NULL, &err)) die("raw mask", &err);
    const char *py = getenv("LS_PYTHON") ? getenv("LS_PYTHON") : "/usr/bin/python3";
    snprintf(cmd, sizeof cmd, "%s bench/cleanup_scipy.py %s %d %d %d %s", py, raw_path, NXY, NXY, NZ, scipy_path);
    double t_scipy = 1e30;
    int have_scipy = 1;
    for (int p = 0; p < 3 && have_scipy; p++) {
        FILE *pp = popen(cmd, "r");
        double ts = -1;
        int ok = pp && fscanf(pp, "scipy %lf", &ts) == 1;
        if (pp) ok = pclose(pp) == 0 && ok;
        if (ok) t_scipy = best_of(t_scipy, ts);
        else have_scipy = 0, fprintf(stderr, "bench/host: no clean-up reference: %s failed\n", cmd);
    }
    FILE *f = have_scipy ? fopen(scipy_path, "rb") : NULL;
    if (have_scipy && (!f || fread(ref, 1, n, f) != n)) die("reading the scipy result", NULL);
    if (f) fclose(f);
    size_t differ = 0, liver = 0;
    for (size_t i = 0; i < n; i++) differ += have_scipy && m[i] != ref[i], liver += m[i];
    /* Back to the input's order, and measured there. */
    double t_back = 1e30, t_measure = 1e30;
    ls_mask_stats st;
    for (int p = 0; p < 3; p++) {
        double t = ls_now();
        ls_orient_mask(m, back, v.geom.dim, &o, 0);
        t_back = best_of(t_back, ls_now() - t);
        t = ls_now();
        if (ls_mask_measure(&v, back, &st, &err)) die("measure", &err);
        t_measure = best_of(t_measure, ls_now() - t);
    }
    /* Write. */
    double t_write = 1e30, t_zwrite = 1e30;
    for (int p = 0; p < 3; p++) {
        double t = ls_now();
        if (ls_nifti_write_raw(mask_path, &v.geom, LS_DT_U8, back, 0, 0, "livseg bench", NULL, &err)) die("write", &err);
        t_write = best_of(t_write, ls_now() - t);
        t_zwrite = best_of(t_zwrite, time_gzwrite(ref_path, back, n));
    }
    double total = t_read + t_ras + t_clean + t_back + t_measure + t_write;
    printf("host stages of segment, %dx%dx%d CT (%s resampled), %d threads, best of 3\n", NXY, NXY, NZ, id, threads);
    printf("  read .nii.gz    %.3f s   zlib gzread alone %.3f s   ratio %.2f\n", t_read, t_zread, t_read / t_zread);
    printf("  to RAS          %.3f s\n", t_ras);
    if (have_scipy)
        printf("  clean-up        %.3f s   scipy.ndimage %.3f s       ratio %.3f  (%lld components; %zu voxels differ "
               "from scipy, %zu liver)\n",
               t_clean, t_scipy, t_clean / t_scipy, (long long)comps, differ, liver);
    else
        printf("  clean-up        %.3f s   (no scipy reference)  (%lld components, %zu liver)\n", t_clean, (long long)comps, liver);
    printf("  from RAS        %.3f s\n", t_back);
    printf("  measure         %.3f s   (%.1f mL)\n", t_measure, st.volume_ml);
    printf("  write .nii.gz   %.3f s   zlib gzwrite -6 %.3f s     ratio %.2f\n", t_write, t_zwrite, t_write / t_zwrite);
    printf("  host total      %.3f s\n", total);
    printf("host %d threads read %.4f zread %.4f ras %.4f clean %.4f scipy %.4f back %.4f measure %.4f write %.4f "
           "zwrite %.4f total %.4f differ %zu\n",
           threads, t_read, t_zread, t_ras, t_clean, have_scipy ? t_scipy : -1.0, t_back, t_measure, t_write, t_zwrite, total, differ);
    free(raw), free(m), free(back), free(ref);
    ls_volume_free(&v), ls_volume_free(&ras);
    remove(ct_path), remove(mask_path), remove(ref_path), remove(raw_path), remove(scipy_path);
    return differ ? 1 : 0;
}
