/* progress.h — progress bar for the command line (see progress.c). */
#ifndef LS_PROGRESS_H
#define LS_PROGRESS_H

#include <stdint.h>

#include "train.h"

typedef struct {
    char label[64], unit[16];
    int quiet;
    int open; /* a bar is drawn and not finished: the cursor is on its line */
    double t0, last;
} progress;

void progress_init(progress *p, const char *label, const char *unit, int quiet);
/* An ls_progress_fn: ctx is a progress*. */
void progress_update(void *ctx, int64_t done, int64_t total);
/* Ends an unfinished bar's line (work stopped early), so that what is printed next starts a line. */
void progress_end(progress *p);

/* Per-case bars for data preparation (ls_train_hooks.prepare): a new bar, labelled "teacher ID", each
 * time the case changes. progress_case_hook is such a hook with ctx = progress_cases*. */
typedef struct {
    progress bar;
    char id[64];
    int quiet;
} progress_cases;
void progress_case(progress_cases *p, const char *id, int64_t done, int64_t total);
void progress_case_hook(void *ctx, const char *id, int64_t done, int64_t total);

/* One redrawn line for a training batch: epoch, batches, loss terms, throughput, time left. */
void progress_train(const ls_train_status *s);

#endif
