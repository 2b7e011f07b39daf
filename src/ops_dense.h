/*
 * ops_dense.h — the dense op family of the backend interface (see ops.h): what a Vision Transformer
 * needs. All matrices are row-major float32 in backend memory.
 *
 * Legend: B batch (slices), T tokens (patches + class token), D model width, NH heads, HS = D/NH head
 * size, P patch size, C image channels, H/W image height/width.
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
} ls_ops_dense;

#endif
