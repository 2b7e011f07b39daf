/* cpu_dense.c — CPU implementation of the 'dense' op family (see ops_dense.h). */
#include "ops.h"

const ls_ops_dense ls_cpu_dense = {0};
