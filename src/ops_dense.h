/*
 * ops_dense.h — the dense op family of the backend interface (see ops.h): what a Vision Transformer
 * needs. All matrices are row-major float32 in backend memory.
 *
 * Legend: B batch (slices), T tokens (patches + class token), D model width, NH heads, HS = D/NH head
 * size, P patch size, C image channels, H/W image height/width.
 *
 * Gradient convention of the backward block (the ops after tokens_to_grid): as ops_nn.h, backward ops
 * OVERWRITE input gradients (dx, dq, ...) and ACCUMULATE (+=) into parameter gradients (dw, db, dbias,
 * dcls, dpos), so a caller zeroes parameter gradients once per step. Reductions over rows (bias and
 * LayerNorm parameter gradients) sum in double per column and run over column blocks, so they are
 * deterministic whatever the thread count.
 */
#ifndef LS_OPS_DENSE_H
#define LS_OPS_DENSE_H

#include <stddef.h>

typedef struct ls_backend ls_backend;

typedef struct {
    /* C[M,N] = alpha * op(A) op(B) + beta * C, op(X) = X or X^T (ta/tb nonzero), row-major with
     * leading dimensions lda/ldb/ldc. */
    void (*gemm)(const ls_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);
    /* The same over `batch` independent problems at strides sA/sB/sC (elements), run in parallel. */
    void (*gemm_batched)(const ls_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                         int lda, size_t sA, const float *B, int ldb, size_t sB, float beta, float *C, int ldc,
                         size_t sC, int batch);
    /* y[r,:] = (x[r,:] - mean) / sqrt(var + eps) * w + b over rows of width n; y may equal x. */
    void (*layernorm)(const ls_backend *be, float *y, const float *x, const float *w, const float *b, size_t rows,
                      int n, float eps);
    /* x[r,:] = softmax(scale * x[r,:]) in place. */
    void (*softmax)(const ls_backend *be, float *x, size_t rows, int n, float scale);
    /* Multi-head self-attention read straight from the fused projection qkv[B,T,3,NH,HS] (biases already
     * added): o[b,t,h*HS:(h+1)*HS] = sum_s softmax_s(scale * q[b,t,h] . k[b,s,h]) v[b,s,h], o[B,T,NH*HS].
     * scratch holds `slots` T x T score matrices; at most that many (image, head) pairs run at once. May be
     * NULL in a backend: the caller then uses split_heads, gemm_batched, softmax and merge_heads. */
    void (*attention)(const ls_backend *be, float *o, const float *qkv, float *scratch, size_t slots, int B, int T,
                      int NH, int HS, float scale);
    /* x[r,:] = gelu(x[r,:] + bias) in place, exact erf GELU; bias may be NULL. */
    void (*bias_gelu)(const ls_backend *be, float *x, const float *bias, size_t rows, int n);
    /* y[r,:] += bias (rows of width n). Residual connections accumulate into y through gemm's beta = 1. */
    void (*add_bias)(const ls_backend *be, float *y, const float *bias, size_t rows, int n);
    /* y[r,:] = row[:] for every row: a bias broadcast ahead of a gemm with beta = 1, cheaper than gemm's own
     * zeroing of C (beta = 0) plus add_bias after it. */
    void (*fill_rows)(const ls_backend *be, float *y, const float *row, size_t rows, int n);
    /* img[B,C,H,W] -> cols[B*(H/P)*(W/P), C*P*P], each row one patch in (c, py, px) order. */
    void (*patchify)(const ls_backend *be, float *cols, const float *img, int B, int C, int H, int W, int P);
    /* x[B,T,D] = (t == 0 ? cls : patches[B,T-1,D] + bias) + pos[T,D]. */
    void (*embed_tokens)(const ls_backend *be, float *x, const float *patches, const float *bias, const float *cls,
                         const float *pos, int B, int T, int D);
    /* qkv[B,T,3,NH,HS] -> q,k,v each [B,NH,T,HS], adding the qkv bias[3*D] on the way. */
    void (*split_heads)(const ls_backend *be, float *q, float *k, float *v, const float *qkv, const float *bias,
                        int B, int T, int NH, int HS);
    /* o[B,NH,T,HS] -> y[B,T,NH*HS]. */
    void (*merge_heads)(const ls_backend *be, float *y, const float *o, int B, int T, int NH, int HS);
    /* x[B,T,D] without the class token -> grid[B,D,gh,gw] (T - 1 = gh*gw). */
    void (*tokens_to_grid)(const ls_backend *be, float *grid, const float *x, int B, int T, int D, int gh, int gw);

    /* ---- backward (training the teacher). Linear layers need no op of their own: dX = dY W and
     * dW += dY^T X are gemm calls (beta = 1 accumulates). */

    /* y += x over n elements (a residual stream gathering a branch's input gradient). */
    void (*add)(const ls_backend *be, float *y, const float *x, size_t n);
    /* db[n] += sum over rows of dy[rows, n]: the gradient of add_bias / of a linear layer's bias. */
    void (*bias_grad)(const ls_backend *be, float *db, const float *dy, size_t rows, int n);
    /* Of layernorm (statistics recomputed from x): dx = (dy*w - mean(dy*w) - xhat mean(dy*w*xhat)) rstd;
     * dw += sum_rows dy*xhat, db += sum_rows dy. ws: 2*rows floats of scratch. dx may not alias dy or x. */
    void (*layernorm_bwd)(const ls_backend *be, float *dx, float *dw, float *db, const float *dy, const float *x,
                          const float *w, size_t rows, int n, float eps, float *ws);
    /* Of softmax(scale * s) given its output y: ds = scale * y * (dy - sum(y*dy)) per row; ds may equal dy. */
    void (*softmax_bwd)(const ls_backend *be, float *ds, const float *y, const float *dy, size_t rows, int n,
                        float scale);
    /* Of exact GELU at the pre-activation a (bias included): dx = dy * (Phi(a) + a phi(a)); dx may equal dy. */
    void (*gelu_bwd)(const ls_backend *be, float *dx, const float *dy, const float *a, size_t n);
    /* Of patchify: cols gradient [B*(H/P)*(W/P), C*P*P] -> image gradient dimg[B,C,H,W] (patches do not
     * overlap, so this is a scatter; H, W multiples of P). Needed only for the input image's gradient. */
    void (*patchify_bwd)(const ls_backend *be, float *dimg, const float *dcols, int B, int C, int H, int W, int P);
    /* Of embed_tokens: dpatches[B,T-1,D] = dx rows t >= 1; dbias[D] += their sum; dcls[D] += sum_b dx[b,0];
     * dpos[T,D] += sum_b dx[b,t]. */
    void (*embed_tokens_bwd)(const ls_backend *be, float *dpatches, float *dbias, float *dcls, float *dpos,
                             const float *dx, int B, int T, int D);
    /* Of split_heads: dq,dk,dv [B,NH,T,HS] -> dqkv[B,T,3,NH,HS]; dbias[3*D] += its sum over tokens. */
    void (*split_heads_bwd)(const ls_backend *be, float *dqkv, float *dbias, const float *dq, const float *dk,
                            const float *dv, int B, int T, int NH, int HS);
    /* Of merge_heads: dy[B,T,NH*HS] -> do[B,NH,T,HS]. */
    void (*merge_heads_bwd)(const ls_backend *be, float *d_o, const float *dy, int B, int T, int NH, int HS);
    /* Of tokens_to_grid, with the class token's gradient: dx[b,0,:] = dcls[b,:], dx[b,1+t,:] = dgrid[b,:,t];
     * either may be NULL (zeros: DINO's loss reaches only the class token). */
    void (*tokens_to_grid_bwd)(const ls_backend *be, float *dx, const float *dgrid, const float *dcls, int B, int T,
                               int D, int gh, int gw);

    /* ---- DINO's projection head (src/dino.h); appended so other backends can follow. */
    /* y[r,:] = x[r,:] / max(|x[r,:]|, eps) over rows of width n (F.normalize(p=2, dim=-1)); norms[r] receives
     * |x[r,:]| (computed in double). y may equal x. Weight normalisation with g = 1 is this over weight rows. */
    void (*l2norm)(const ls_backend *be, float *y, float *norms, const float *x, size_t rows, int n, float eps);
    /* Its backward from the output y and the norms: dx = (dy - y (y . dy)) / |x| per row, or dy / eps for a
     * row whose norm was clamped to eps. dx may equal dy. */
    void (*l2norm_bwd)(const ls_backend *be, float *dx, const float *dy, const float *y, const float *norms,
                       size_t rows, int n, float eps);
} ls_ops_dense;

#endif
