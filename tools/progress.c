/*
 * progress.c — a one-line progress bar on stderr for long work: "label [#####-----] 45/148 slices,
 * 12.3/s, 8 s left", redrawn at most ten times a second, finished with a newline.
 */
#include "progress.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

void progress_init(progress *p, const char *label, const char *unit, int quiet) {
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->unit, sizeof p->unit, "%s", unit);
    p->quiet = quiet;
    p->t0 = ls_now();
}

void progress_update(void *ctx, int64_t done, int64_t total) {
    progress *p = ctx;
    double now = ls_now();
    if (p->quiet || (done < total && now - p->last < 0.1)) return;
    p->last = now;
    int width = 24, fill = total > 0 ? (int)(width * done / total) : width;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '-';
    bar[width] = 0;
    double el = now - p->t0, rate = el > 0 ? done / el : 0;
    fprintf(stderr, "\r%s [%s] %lld/%lld %s, %.1f/s", p->label, bar, (long long)done, (long long)total, p->unit, rate);
    if (done < total && rate > 0) fprintf(stderr, ", %.0f s left ", (total - done) / rate);
    else if (done < total) fputc(' ', stderr);
    else fprintf(stderr, ", %.1f s      \n", el);
    p->open = done < total;
    fflush(stderr);
}

void progress_end(progress *p) {
    if (p->open) fputc('\n', stderr), fflush(stderr);
    p->open = 0;
}

void progress_train(const ls_train_status *s) {
    double left = s->slices_per_s > 0 ? (double)(s->batches - s->batches_done) * s->batch / s->slices_per_s : 0;
    int width = 20, fill = s->batches ? width * s->batches_done / s->batches : width;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '-';
    bar[width] = 0;
    fprintf(stderr,
            "\repoch %d/%d [%s] %d/%d  loss %.4f (focal %.4f tversky %.3f log-iou %.3f entropy %.3f cd %.4f)  "
            "%.1f slices/s, %.0f s left ",
            s->epoch, s->epochs, bar, s->batches_done, s->batches, s->loss, s->focal, s->tversky, s->log_iou,
            s->entropy, s->cd, s->slices_per_s, left);
    fflush(stderr);
}

void progress_case(progress_cases *p, const char *id, int64_t done, int64_t total) {
    if (strcmp(p->id, id)) {
        snprintf(p->id, sizeof p->id, "%s", id);
        char label[sizeof p->bar.label];
        snprintf(label, sizeof label, "teacher %.48s", id);
        progress_init(&p->bar, label, "slices", p->quiet);
    }
    progress_update(&p->bar, done, total);
}

void progress_case_hook(void *ctx, const char *id, int64_t done, int64_t total) { progress_case(ctx, id, done, total); }
