/*
 * bench/segment.c — `livseg segment`'s pipeline on a 512 x 512 x ~150 CT at 2 threads, split by stage
 * (read, teacher, decoder, post-process, write) with peak RSS. Not a test. The CT is btcv_00 (257 x 257
 * x 148) resampled in-plane to 512 x 512 (bilinear). The model is MODEL (default models/default.safetensors,
 * the shipped model, with its teacher); when that file does not exist, an untrained model of the CPU
 * training preset's shape with a random ViT-S/16 teacher at 224 x 224 (speed does not depend on the
 * weights, except the clean-up, which then works on a noisy mask).
 *
 * usage: build/bench/segment [DATA_DIR] [threads] [MODEL]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "preprocess.h"
#include "segment.h"
#include "train.h"
#include "ops.h"
#include "util.h"

/* In-plane bilinear resample of every slice to n x n, keeping the field of view. */
static ls_status upsample_inplane(const ls_volume *v, int n, ls_volume *out, ls_error *err) {
    const int64_t *d = v->geom.dim;
    int64_t nd[3] = {n, n, d[2]};
    double aff[4][4];
    memcpy(aff, v->geom.affine, sizeof aff);
    for (int i = 0; i < 3; i++) aff[i][0] *= (double)d[0] / n, aff[i][1] *= (double)d[1] / n;
    memset(out, 0, sizeof *out);
    ls_geom_from_affine(&out->geom, nd, aff);
    out->data = ls_calloc((size_t)n * n * (size_t)d[2], sizeof(float), err);
    if (!out->data) return LS_ERR_NOMEM;
    snprintf(out->format, sizeof out->format, "NIfTI-1");
    for (int64_t k = 0; k < d[2]; k++)
        ls_resize_bilinear(v->data + (size_t)k * d[0] * d[1], (int)d[1], (int)d[0], out->data + (size_t)k * n * n, n, n);
    return LS_OK;
}

int main(int argc, char **argv) {
    ls_process_tune(argv); /* the kernels and OpenMP waiting livseg runs with (ops.h), both sides */
    const char *data = argc > 1 ? argv[1] : "../shared/data";
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    char path[1024];
    snprintf(path, sizeof path, "%s/btcv/btcv_00_ct.nii.gz", data);
    ls_error err = {0};
    ls_volume src, ct;
    if (ls_volume_read(path, &src, &err) || upsample_inplane(&src, 512, &ct, &err)) {
        fprintf(stderr, "bench/segment: %s\n", err.msg);
        return 2;
    }
    ls_volume_free(&src);
    char in[] = "/tmp/livseg-bench-ct512.nii.gz", out[] = "/tmp/livseg-bench-mask.nii.gz";
    if (ls_volume_write(in, &ct, LS_DT_I16, NULL, &err)) {
        fprintf(stderr, "bench/segment: %s\n", err.msg);
        return 2;
    }
    ls_volume_free(&ct);
    ls_backend be;
    ls_teacher t;
    ls_model m;
    ls_model_info info;
    const char *model = argc > 3 ? argv[3] : "models/default.safetensors";
    FILE *mf = fopen(model, "rb");
    if (mf) fclose(mf);
    ls_status st = ls_backend_init(&be, LS_DEV_CPU, threads, &err);
    if (!st && mf) {
        st = ls_model_load(&m, &info, &be, model, &err);
        if (!st) st = ls_segment_teacher(&t, &be, &m, &info, NULL, model, &err);
    } else if (!st) {
        model = "untrained, CPU preset shape";
        ls_train_config tc;
        ls_model_config cfg;
        ls_train_config_default(&tc);
        ls_train_model_config(&tc, 384, 14, &cfg);
        st = ls_teacher_open(&t, &be, NULL, "vits16", 0, 224, &err);
        if (!st) st = ls_model_init(&m, &be, &cfg, 1, &err);
    }
    if (st) {
        fprintf(stderr, "bench/segment: %s\n", err.msg);
        return 2;
    }
    double t0 = ls_now();
    ls_volume v; /* in RAS order, read as `livseg segment` reads it */
    ls_geom grid;
    if (ls_volume_read_ras(in, &v, &grid, &err)) {
        fprintf(stderr, "bench/segment: %s\n", err.msg);
        return 2;
    }
    double t_read = ls_now() - t0;
    ls_segment_opts o;
    ls_segment_opts_default(&o);
    o.keep_prob = 0; /* as `livseg segment` without --prob */
    ls_segment_result r;
    if (ls_segment_ras(&v, &grid, &t, &m, &o, NULL, NULL, &r, &err)) {
        fprintf(stderr, "bench/segment: %s\n", err.msg);
        return 2;
    }
    double t1 = ls_now();
    if (ls_segment_write_mask(out, &r, in, &err)) {
        fprintf(stderr, "bench/segment: %s\n", err.msg);
        return 2;
    }
    double t_write = ls_now() - t1, total = ls_now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int side = ls_model_out_side(&m.cfg);
    printf("segment %lldx%lldx%lld CT (btcv_00 resampled), teacher %s + decoder %dx%d (model %s), %d threads\n",
           (long long)grid.dim[0], (long long)grid.dim[1], (long long)grid.dim[2], t.id, side, side, model,
           threads);
    printf("  read %.2f s, predict %.2f s (teacher %.2f s, decoder %.2f s, resampling %.2f s), post-process %.2f s, "
           "write %.2f s\n",
           t_read, r.seconds_predict, r.seconds_teacher, r.seconds_decoder, r.seconds_resample, r.seconds_post, t_write);
    printf("  total %.2f s (target < 20 s); teacher share %.0f%%; peak RSS %.0f MB (target < 2048 MB)\n", total,
           100 * r.seconds_teacher / total, ru.ru_maxrss / 1024.0);
    ls_segment_result_free(&r);
    ls_volume_free(&v);
    ls_model_free(&m);
    ls_teacher_close(&t);
    ls_backend_free(&be);
    remove(in);
    remove(out);
    return 0;
}
