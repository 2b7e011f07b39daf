"""Makes a DINO-style training checkpoint for tests/test_convert.c: {"teacher": {"module.backbone.*",
"module.head.*"}, "student": ...} for a small ViT (depth 2, width 64, 2 heads, patch 16, 14x14 grid),
and dumps three of its tensors as raw float32 for comparison.

usage: fake_dino_ckpt.py OUTDIR SEED
"""
import sys

import numpy as np
import torch

out, seed = sys.argv[1], int(sys.argv[2])
g = torch.Generator().manual_seed(seed)
D, P, G, depth = 64, 16, 14, 2
sd = {"cls_token": torch.randn(1, 1, D, generator=g), "pos_embed": torch.randn(1, 1 + G * G, D, generator=g),
      "patch_embed.proj.weight": torch.randn(D, 3, P, P, generator=g), "patch_embed.proj.bias": torch.randn(D, generator=g),
      "norm.weight": torch.randn(D, generator=g), "norm.bias": torch.randn(D, generator=g)}
for i in range(depth):
    b = f"blocks.{i}."
    for name, shape in [("norm1.weight", (D,)), ("norm1.bias", (D,)), ("attn.qkv.weight", (3 * D, D)), ("attn.qkv.bias", (3 * D,)),
                        ("attn.proj.weight", (D, D)), ("attn.proj.bias", (D,)), ("norm2.weight", (D,)), ("norm2.bias", (D,)),
                        ("mlp.fc1.weight", (4 * D, D)), ("mlp.fc1.bias", (4 * D,)), ("mlp.fc2.weight", (D, 4 * D)),
                        ("mlp.fc2.bias", (D,))]:
        sd[b + name] = torch.randn(*shape, generator=g)
teacher = {"module.backbone." + k: v for k, v in sd.items()}
teacher["module.head.mlp.0.weight"] = torch.randn(16, D, generator=g)
torch.save({"teacher": teacher, "student": {k: v * 0 for k, v in teacher.items()}, "epoch": 3}, f"{out}/dino.pth")
for k in ("pos_embed", "blocks.1.attn.qkv.weight", "norm.bias"):
    sd[k].numpy().astype("<f4").tofile(f"{out}/{k}.bin")
