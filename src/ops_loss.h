/* ops_loss.h — the 'loss' op family of the backend interface (see ops.h). Filled in by its owner. */
#ifndef LS_OPS_LOSS_H
#define LS_OPS_LOSS_H

typedef struct ls_backend ls_backend;

typedef struct {
    int reserved_;
} ls_ops_loss;

#endif
