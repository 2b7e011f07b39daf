/* cpu_loss.c — CPU implementation of the 'loss' op family (see ops_loss.h). */
#include "ops.h"

const ls_ops_loss ls_cpu_loss = {0};
