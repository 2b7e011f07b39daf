"""A float32 numpy emulation of the CUDA fused attention kernel's arithmetic (src/cuda/dense.cu, k_attention):
key tiles of 32, four query rows per warp, the running maximum and normaliser, exp with fastmath.h's clamp
at -87 (libm's exp, not its polynomial), scores summed over the head dimension in order, outputs summed over
a tile's keys in order. It checks the
algorithm and its rounding where no GPU is at hand (docs/gpu.md), not the CUDA code: tests/test_ops_cuda.c does
that on a GPU. Exits 1 when the emulation is further than 1e-4 (1% floor, as the parity test) from float64
attention at ViT scales, or from the CPU op's order of operations at logits of SD 4.

usage: /usr/bin/python3 tests/ref/attention_emulation.py
"""
import sys

import numpy as np
f32 = np.float32
def exp_neg(x):
    x = np.maximum(np.asarray(x, np.float32), f32(-87.0))   # -inf and below -87 clamp
    return np.exp(x.astype(np.float64)).astype(np.float32)
def kernel(qkv, B, T, NH, HS, scale):
    D = NH*HS; o = np.zeros((B, T, D), f32)
    for b in range(B):
        for h in range(NH):
            q = qkv[b, :, 0, h]; k = qkv[b, :, 1, h]; v = qkv[b, :, 2, h]
            for row0 in range(0, T, 4):
                rows = [r for r in range(row0, row0+4)]
                qs = np.array([q[r] if r < T else np.zeros(HS, f32) for r in rows])
                m = np.full(4, -np.inf, f32); l = np.zeros(4, f32); acc = np.zeros((4, HS), f32)
                for k0 in range(0, T, 32):
                    ks = np.zeros((32, HS), f32); vs = np.zeros((32, HS), f32)
                    n = min(32, T-k0); ks[:n] = k[k0:k0+n]; vs[:n] = v[k0:k0+n]
                    valid = np.arange(32) + k0 < T
                    s = np.zeros((4, 32), f32)
                    for d in range(HS): s += qs[:, d:d+1] * ks[None, :, d]
                    x = np.where(valid, f32(scale)*s, -np.inf).astype(f32)
                    mt = x.max(1); mn = np.maximum(m, mt)
                    with np.errstate(invalid='ignore'):
                        corr = exp_neg(m - mn)
                    p = np.where(valid, exp_neg(x - mn[:, None]), f32(0))
                    l = (l*corr + p.sum(1, dtype=f32)).astype(f32); m = mn
                    acc = acc * corr[:, None]
                    for j in range(32): acc = (acc + p[:, j:j+1] * vs[j][None, :]).astype(f32)
                for i, r in enumerate(rows):
                    if r < T: o[b, r, h*HS:(h+1)*HS] = acc[i] / l[i]
    return o
def ref(qkv, B, T, NH, HS, scale):
    x = qkv.astype(np.float64); o = np.zeros((B, T, NH*HS))
    for b in range(B):
        for h in range(NH):
            s = scale * x[b, :, 0, h] @ x[b, :, 1, h].T
            p = np.exp(s - s.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
            o[b, :, h*HS:(h+1)*HS] = p @ x[b, :, 2, h]
    return o
rng = np.random.default_rng(1)
bad = False
for (B, T, NH, HS, sc) in [(1, 197, 2, 64, 0.125), (1, 5, 2, 32, 0.2), (1, 70, 1, 128, 0.09), (1, 197, 1, 64, 1.0), (1, 33, 2, 96, 0.1)]:
    qkv = rng.standard_normal((B, T, 3, NH, HS)).astype(f32)
    g = kernel(qkv, B, T, NH, HS, sc); c = ref(qkv, B, T, NH, HS, sc)
    err = np.abs(g - c).max() / max(np.abs(c).max() * 0.01, 1e-30)
    rel = (np.abs(g - c) / np.maximum(np.abs(c), 0.01*np.abs(c).max())).max()
    print(B, T, NH, HS, sc, "kernel vs float64: max rel err (1%% floor) %.2e" % rel)
    bad |= sc <= 0.2 and rel > 1e-4
def cpu(qkv, B, T, NH, HS, scale):
    o = np.zeros((B, T, NH*HS), f32)
    for b in range(B):
        for h in range(NH):
            s = (f32(scale) * (qkv[b, :, 0, h] @ qkv[b, :, 1, h].T)).astype(f32)
            p = exp_neg(s - s.max(1, keepdims=True)); p = (p * (f32(1) / p.sum(1, dtype=f32, keepdims=True))).astype(f32)
            o[b, :, h*HS:(h+1)*HS] = p @ qkv[b, :, 2, h]
    return o
print("kernel vs the CPU op (float32 scores GEMM, softmax, GEMM):")
for (B, T, NH, HS, sc) in [(1, 197, 2, 64, 0.125), (1, 197, 2, 64, 1.0), (1, 197, 1, 64, 0.5)]:
    qkv = rng.standard_normal((B, T, 3, NH, HS)).astype(f32)
    g = kernel(qkv, B, T, NH, HS, sc); c = cpu(qkv, B, T, NH, HS, sc); r = ref(qkv, B, T, NH, HS, sc)
    fl = 0.01*np.abs(c).max()
    e = [(np.abs(a-b2)/np.maximum(np.abs(b2), fl)).max() for a, b2 in ((g, c), (c, r), (g, r))]
    print(sc, "kernel-cpu %.2e  cpu-f64 %.2e  kernel-f64 %.2e" % tuple(e))
    bad |= sc <= 0.5 and e[0] > 1e-4
sys.exit(1 if bad else 0)
