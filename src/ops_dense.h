/* ops_dense.h — the 'dense' op family of the backend interface (see ops.h). Filled in by its owner. */
#ifndef LS_OPS_DENSE_H
#define LS_OPS_DENSE_H

typedef struct ls_backend ls_backend;

typedef struct {
    int reserved_;
} ls_ops_dense;

#endif
