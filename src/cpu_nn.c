/* cpu_nn.c — CPU implementation of the 'nn' op family (see ops_nn.h). */
#include "ops.h"

const ls_ops_nn ls_cpu_nn = {0};
