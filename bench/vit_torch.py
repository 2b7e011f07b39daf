"""PyTorch side of bench/vit: times the same ViT forward (random weights, float32, no grad) at the
same batch size and thread count, and prints one line: `torch_slices_per_s X`.

usage: vit_torch.py PRESET BATCH SIZE THREADS ITERS
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "ref"))
from vit_ref import PRESETS, forward, random_weights  # noqa: E402

preset, B, S, threads, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
depth, D, NH, P = PRESETS[preset]
G = 224 // P
w = {k: v.float() for k, v in random_weights(torch.Generator().manual_seed(0), depth, D, P, G).items()}
x = torch.randn(B, 3, S, S)
with torch.inference_mode():
    forward(w, x, depth, D, NH, P, G)  # warm-up
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        forward(w, x, depth, D, NH, P, G)
        best = min(best, time.perf_counter() - t0)
print(f"torch_slices_per_s {B / best:.3f}")
