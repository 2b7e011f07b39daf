/*
 * optim.h — learning-rate scheduling. The RAdam update itself is an op (ops_loss.h: radam_step) so it
 * runs where the parameters live.
 */
#ifndef LS_OPTIM_H
#define LS_OPTIM_H

/* torch.optim.lr_scheduler.ReduceLROnPlateau, mode "max" (a validation Dice), threshold_mode "rel":
 * a metric counts as better when it exceeds best * (1 + threshold); after more than `patience` epochs
 * without improvement the rate is multiplied by `factor` (not below min_lr), then `cooldown` epochs
 * pass before counting again. */
typedef struct {
    double lr, factor, threshold, min_lr, best;
    int patience, cooldown, bad_epochs, cooldown_left;
} ls_plateau;

void ls_plateau_init(ls_plateau *s, double lr, int patience, double factor);
/* Feeds one epoch's metric; returns 1 when the rate was reduced (s->lr is the new rate). */
int ls_plateau_step(ls_plateau *s, double metric);

#endif
