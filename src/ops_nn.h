/* ops_nn.h — the 'nn' op family of the backend interface (see ops.h). Filled in by its owner. */
#ifndef LS_OPS_NN_H
#define LS_OPS_NN_H

typedef struct ls_backend ls_backend;

typedef struct {
    int reserved_;
} ls_ops_nn;

#endif
