/*
 * ops_nn.h — the convolutional op family of the backend interface (see ops.h): what the head and the
 * decoder need, forward and backward. Tensors are NCHW float32 in backend memory.
 *
 * Legend: B batch, C/Ci/Co channels (in/out), H/W height/width, K kernel size (1 or 3, stride 1,
 * padding K/2 so H and W are kept), HW = H*W.
 *
 * Gradient convention: backward ops OVERWRITE dx and ACCUMULATE (+=) into parameter gradients
 * (dw, db, dgamma, dbeta), so a caller zeroes parameter gradients once per step.
 */
#ifndef LS_OPS_NN_H
#define LS_OPS_NN_H

#include <stddef.h>
#include <stdint.h>

typedef struct ls_backend ls_backend;

typedef struct {
    /* Scratch floats conv2d_fwd and conv2d_bwd need for one call with this shape. It depends on the shape
     * only (not on the backend's thread count), so arenas can be sized from a model configuration. */
    size_t (*conv2d_workspace)(int Ci, int H, int W, int Co, int K);
    /* y[B,Co,H,W] = conv(x[B,Ci,H,W], w[Co,Ci,K,K]) + b[Co] (b may be NULL). */
    void (*conv2d_fwd)(const ls_backend *be, float *y, const float *x, const float *w, const float *b, int B, int Ci,
                       int H, int W, int Co, int K, float *ws);
    /* dx (may be NULL: not needed) = conv^T(dy); dw += ...; db += ... (db may be NULL). */
    void (*conv2d_bwd)(const ls_backend *be, float *dx, float *dw, float *db, const float *dy, const float *x,
                       const float *w, int B, int Ci, int H, int W, int Co, int K, float *ws);
    /* Batch norm, training: per-channel batch mean and biased variance normalise x; y = xhat*gamma+beta.
     * Saves mean and rstd [C] for backward; updates running stats with `momentum` (PyTorch's: new =
     * (1-m)*old + m*batch, the running variance unbiased). */
    void (*batchnorm_fwd_train)(const ls_backend *be, float *y, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, float *run_mean, float *run_var, int B, int C,
                                int HW, float momentum, float eps);
    /* Batch norm, evaluation: running statistics. */
    void (*batchnorm_fwd_eval)(const ls_backend *be, float *y, const float *x, const float *gamma, const float *beta,
                               const float *run_mean, const float *run_var, int B, int C, int HW, float eps);
    void (*batchnorm_bwd)(const ls_backend *be, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                          const float *mean, const float *rstd, const float *gamma, int B, int C, int HW);
    /* y = max(x, 0) (y may equal x); dx = dy * (y > 0) (dx may equal dy). */
    void (*relu_fwd)(const ls_backend *be, float *y, const float *x, size_t n);
    void (*relu_bwd)(const ls_backend *be, float *dx, const float *dy, const float *y, size_t n);
    /* Channel dropout (Dropout2d): keep[B*C] holds 0 or 1/(1-p) per (image, channel), drawn by the
     * caller (ls_rng) so runs are reproducible; y = x * keep, dx = dy * keep (in place allowed). */
    void (*dropout2d)(const ls_backend *be, float *y, const float *x, const float *keep, int B, int C, int HW);
    /* x2 bilinear upsampling, align_corners=False: y[B,C,2H,2W] from x[B,C,H,W]; backward dx[B,C,H,W]. */
    void (*upsample2x_fwd)(const ls_backend *be, float *y, const float *x, int B, int C, int H, int W);
    void (*upsample2x_bwd)(const ls_backend *be, float *dx, const float *dy, int B, int C, int H, int W);
    /* Channel concatenation of a[B,Ca,HW] and b[B,Cb,HW] into y[B,Ca+Cb,HW], and its split backward. */
    void (*concat_fwd)(const ls_backend *be, float *y, const float *a, const float *b, int B, int Ca, int Cb, int HW);
    void (*concat_bwd)(const ls_backend *be, float *da, float *db, const float *dy, int B, int Ca, int Cb, int HW);
} ls_ops_nn;

#endif
