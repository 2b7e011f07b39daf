/*
 * ops_loss.h — the training op family of the backend interface (see ops.h): the losses with their
 * gradients, and the optimiser step. Pointers are backend memory, the losses' scalar results included: each
 * loss writes its value into a double slot `out` of backend memory and returns at once, so a training step
 * queues forward, losses, backward and optimiser without waiting on the device, and brings every value back
 * in one copy at its end (on the CPU the slot is plain memory, written before the call returns).
 *
 * Legend: N pixels (B*H*W of one-channel logits), P tokens of a slice (h*w), C teacher channels,
 * D code channels.
 *
 * Supervised losses take logits z[N] and targets t[N] in {0, 1}, write the loss to out[0], and ADD weight *
 * dL/dz into dz (so terms can be summed into one gradient buffer).
 */
#ifndef LS_OPS_LOSS_H
#define LS_OPS_LOSS_H

#include <stddef.h>

typedef struct ls_backend ls_backend;

typedef struct {
    /* torchvision's sigmoid_focal_loss, mean over N: BCE * (1 - p_t)^gamma, times alpha_t when alpha >= 0. */
    void (*focal)(const ls_backend *be, const float *z, const float *t, size_t N, float gamma, float alpha,
                  float weight, float *dz, double *out);
    /* 1 - (TP + s) / (TP + a FP + b FN + s), soft counts over all N pixels of the batch. */
    void (*tversky)(const ls_backend *be, const float *z, const float *t, size_t N, float a, float b, float s,
                    float weight, float *dz, double *out);
    /* UnitBox's -log((I + s) / (U + s)), soft intersection and union over all N pixels. */
    void (*log_iou)(const ls_backend *be, const float *z, const float *t, size_t N, float s, float weight, float *dz,
                    double *out);
    /* FDA's entropy regulariser for one channel: mean over N of (H^2 + 1e-8)^eta, H the binary entropy
     * of sigmoid(z) in bits (FDA's entropy divided by ln of the class count, here 2). No target. */
    void (*entropy)(const ls_backend *be, const float *z, size_t N, float eta, float weight, float *dz, double *out);
    /* One contrastive-distillation term (paper eqs. 1, 3, 4): mean over the P x P token pairs of
     * -(S(X_F) - b) * max(X_C, 0), X_F the cosine similarities of teacher features fx[C,P] and fy[C,P],
     * S centring over the second slice's positions, X_C those of codes gx[D,P] and gy[D,P]. Adds
     * weight * dL/dgx into dgx and weight * dL/dgy into dgy (the same buffer when x is y). Writes the loss to
     * out[0] and mean(X_C) to out[1]. `ws` holds ls_cd_workspace(C, D, P) floats. */
    void (*cd_term)(const ls_backend *be, const float *fx, const float *fy, int C, const float *gx, const float *gy,
                    int D, int P, float b, float weight, float *dgx, float *dgy, double *out, float *ws);
    /* torch.optim.RAdam (torch 1.13: L2 weight decay added to the gradient), one step over n values at
     * step number `step` (1-based). */
    void (*radam_step)(const ls_backend *be, float *param, const float *grad, float *m, float *v, size_t n, int step,
                       float lr, float beta1, float beta2, float eps, float weight_decay);

    /* ---- DINO pretraining (src/dino.h); appended so other backends can follow. */
    /* DINO's loss (Caron et al. 2021). Student logits s[ns*B, K] and teacher logits t[nt*B, K] are crop-major
     * (rows v*B .. v*B+B-1 are crop v; the teacher's crops are the student's first nt), c[K] the centre.
     * q = softmax((t - c) / tau_t), log p = log_softmax(s / tau_s); the loss is the mean over the pairs
     * (teacher crop i, student crop v != i) of the batch mean of -sum_k q log p. WRITES ds = dL/ds (no
     * gradient reaches the teacher). ws holds (nt + ns) * B * K floats. Writes the loss to out[0]. */
    void (*dino_loss)(const ls_backend *be, const float *s, const float *t, const float *c, int B, int ns, int nt,
                      int K, float tau_s, float tau_t, float *ds, float *ws, double *out);
    /* c = m c + (1 - m) * (mean over the rows of t[rows, K]) (the centre's EMA; sums in double). */
    void (*center_update)(const ls_backend *be, float *c, const float *t, size_t rows, int K, float m);
    /* torch.optim.AdamW (torch 1.13, one tensor) at step `step` (1-based): p *= 1 - lr wd; m, v moments;
     * p -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps). */
    void (*adamw_step)(const ls_backend *be, float *param, const float *grad, float *m, float *v, size_t n, int step,
                       float lr, float beta1, float beta2, float eps, float weight_decay);
    /* t = mom t + (1 - mom) s over n values (the teacher's EMA of the student). */
    void (*ema)(const ls_backend *be, float *t, const float *s, size_t n, float mom);
    /* DINO's clip_gradients for one tensor: x *= c when c = max_norm / (||x|| + 1e-6) < 1, the norm summed
     * in double and c rounded to float. The norm stays on the device (nothing waits). */
    void (*clip_norm)(const ls_backend *be, float *x, size_t n, float max_norm);
} ls_ops_loss;

/* Floats of scratch cd_term needs. */
size_t ls_cd_workspace(int C, int D, int P);

#endif
