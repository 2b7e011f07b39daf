/*
 * probe.h — a linear probe of a teacher's frozen features: L2-regularised logistic regression of one
 * binary label per token (liver / not liver) on the token's feature vector, and its scores on other
 * tokens. It measures how much of the label a teacher's features carry linearly, which is how
 * docs/pretraining.md compares a pretrained teacher with a random one (DINO's linear evaluation, per
 * token instead of per image).
 *
 * Model: z = w . x' + bias with x' = (x - mean) * scale, mean and 1/std (floor 1e-6) per feature from the
 * fitted tokens. Fit: minimise  sum_i [log(1 + e^z_i) - y_i z_i] + (l2 / 2) |w|^2  (bias not penalised;
 * scikit-learn's LogisticRegression(C = 1 / l2) on standardised features) by Newton's method with
 * backtracking, gradient in double, Hessian from float32 blocks summed in double, solved by LAPACK.
 *
 * Tokens are rows: X is [n, dim] float32, y is [n] 0/1.
 */
#ifndef LS_PROBE_H
#define LS_PROBE_H

#include <stdint.h>

#include "livseg.h"

typedef struct {
    int dim;
    double *mean, *scale; /* standardisation, [dim] each */
    double *w;           /* [dim], on standardised features */
    double bias;
    int iterations;      /* Newton steps taken */
    double objective;    /* at the solution */
} ls_probe;

/* Fits a probe; at most max_iter Newton steps (it stops earlier when the Newton decrement falls under
 * 1e-14 of the objective). */
ls_status ls_probe_fit(const float *X, const uint8_t *y, int64_t n, int dim, double l2, int max_iter, ls_probe *p,
                       ls_error *err);
void ls_probe_free(ls_probe *p);

/* The logit z of every row. */
void ls_probe_logits(const ls_probe *p, const float *X, int64_t n, double *z);

/* Scores of logits against labels, the prediction being z > 0. */
typedef struct {
    int64_t n, positives;
    double dice;     /* 2 TP / (2 TP + FP + FN); 1 when both are empty */
    double accuracy;
    double auc;      /* area under the ROC curve, ties counted half (Mann-Whitney); NAN without both classes */
} ls_probe_score;
ls_status ls_probe_evaluate(const double *z, const uint8_t *y, int64_t n, ls_probe_score *s, ls_error *err);

#endif
