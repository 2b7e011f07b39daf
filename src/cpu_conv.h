/*
 * cpu_conv.h — direct KxK convolutions of the CPU op family (cpu_conv.c), K odd, stride 1, padding K/2,
 * NCHW float32: what cpu_nn.c's conv2d ops call for K > 1. Legend as in ops_nn.h. `ws` holds
 * ls_cpu_conv_workspace(Ci, H, W, Co, K) floats; at most 16 of `nthreads` threads work. `level` picks the
 * direct kernels' vector extension on ls_cpu_vector_level's scale (ops.h): the CPU's own level, or lower
 * (tests check each kernel the CPU can run).
 */
#ifndef LS_CPU_CONV_H
#define LS_CPU_CONV_H

#include <stddef.h>

size_t ls_cpu_conv_workspace(int Ci, int H, int W, int Co, int K);
/* y[B,Co,H,W] = conv(x[B,Ci,H,W], w[Co,Ci,K,K]) + b (b may be NULL). */
void ls_cpu_conv_fwd(int nthreads, int level, float *y, const float *x, const float *w, const float *b, int B, int Ci,
                     int H, int W, int Co, int K, float *ws);
/* dx[B,Ci,H,W] = the input gradient of dy[B,Co,H,W] (overwritten). */
void ls_cpu_conv_bwd_dx(int nthreads, int level, float *dx, const float *dy, const float *w, int B, int Ci, int H,
                        int W, int Co, int K, float *ws);
/* dw[Co,Ci,K,K] += the weight gradient of dy given x. */
void ls_cpu_conv_bwd_dw(int nthreads, float *dw, const float *dy, const float *x, int B, int Ci, int H, int W, int Co,
                        int K, float *ws);

#endif
