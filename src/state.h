/*
 * state.h — a run's resumable state file (DIR/state.safetensors) for train.c and dino.c: named float
 * tensors in backend memory, written through a host buffer with string metadata, and read back into the
 * same tensors; the run's configuration JSON is read first (the model is built from it before the rest).
 */
#ifndef LS_STATE_H
#define LS_STATE_H

#include "ops.h"
#include "safetensors.h"

typedef struct {
    const char *name;
    float *data; /* backend memory */
    size_t n;
} ls_state_tensor;

/* Writes t[0..nt) as F32 tensors of their names, with meta[2i] = meta[2i+1] pairs, atomically. */
ls_status ls_state_write(const ls_backend *be, const char *path, const ls_state_tensor *t, int nt,
                         const char *const *meta, int nmeta, ls_error *err);

/* Reads every tensor of t from the open state file f (path names it in errors) into backend memory; a
 * missing or differently sized tensor is LS_ERR_INPUT naming it. */
ls_status ls_state_read(const ls_backend *be, ls_st_file *f, const char *path, const ls_state_tensor *t, int nt,
                        ls_error *err);

/* A copy of the "config" metadata of the state file `path` (free it), which must carry the metadata key
 * `kind`; else LS_ERR_INPUT saying it is not a `what`. */
ls_status ls_state_config(const char *path, const char *kind, const char *what, char **json, ls_error *err);

#endif
