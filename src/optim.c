/* optim.c — see optim.h. */
#include "optim.h"

#include <math.h>

void ls_plateau_init(ls_plateau *s, double lr, int patience, double factor) {
    *s = (ls_plateau){.lr = lr, .factor = factor, .threshold = 1e-4, .min_lr = 0, .best = -INFINITY,
                      .patience = patience, .cooldown = 0, .bad_epochs = 0, .cooldown_left = 0};
}

int ls_plateau_step(ls_plateau *s, double metric) {
    if (metric > s->best * (1 + s->threshold) || s->best == -INFINITY) {
        s->best = metric;
        s->bad_epochs = 0;
    } else {
        s->bad_epochs++;
    }
    if (s->cooldown_left > 0) {
        s->cooldown_left--;
        s->bad_epochs = 0;
    }
    if (s->bad_epochs > s->patience) {
        double next = fmax(s->lr * s->factor, s->min_lr);
        int reduced = s->lr - next > 1e-8;
        if (reduced) s->lr = next;
        s->cooldown_left = s->cooldown;
        s->bad_epochs = 0;
        return reduced;
    }
    return 0;
}
