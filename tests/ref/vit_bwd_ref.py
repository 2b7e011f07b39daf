"""PyTorch reference for tests/test_vit_backward.c: a small DINO ViT (tests/ref/vit_ref.py's weights and forward)
with fresh random weights, its forward and the autograd gradients of every weight and of the input image,
in float64, for L = sum(features * dfeat) + sum(cls * dcls) with random upstream gradients.

usage: vit_bwd_ref.py OUTDIR SEED CASE...   where CASE is NAME:DEPTH:DIM:HEADS:PATCH:GRID:B:H:W
writes OUTDIR/NAME.safetensors (weights, timm names), NAME.in.bin [B,3,H,W], NAME.dfeat.bin [B,D,gh,gw],
NAME.dcls.bin [B,D], NAME.feat.bin, NAME.cls.bin (forward), and for the loss with both upstream
gradients (suffix "both") and with the class token's alone (suffix "cls", DINO's case):
NAME.grads_SUFFIX.bin (every weight's gradient, concatenated in ls_vit's params layout) and
NAME.dimg_SUFFIX.bin. NAME.grads32.bin is PyTorch's own float32 answer of the "both" gradients.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import dump, write_safetensors  # noqa: E402
from vit_ref import random_weights, tokens  # noqa: E402

def param_order(depth):
    """ls_vit's params layout (vit.c assign_pointers)."""
    names = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"]
    for i in range(depth):
        names += [f"blocks.{i}.{n}" for n in ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                                              "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                                              "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")]
    return names


STDS = (0.15, 0.1, 0.1, 0.05)  # qkv, proj, fc1, fc2 weights: gradients well above float32 rounding


def forward(w, x, depth, D, NH, P, G):
    """-> features [B,D,gh,gw] and the class token [B,D], both after the final LayerNorm."""
    out, _, gh, gw = tokens(w, x, depth, D, NH, P, G)
    return out[:, 1:].transpose(1, 2).reshape(x.shape[0], D, gh, gw), out[:, 0]


def gradients(w, x, dfeat, dcls, cfg):
    """Autograd of sum(feat*dfeat) + sum(cls*dcls) -> (feat, cls, flat weight gradient, image gradient)."""
    w = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    x = x.clone().requires_grad_(True)
    feat, cls = forward(w, x, *cfg)
    loss = (feat * dfeat).sum() + (cls * dcls).sum()
    loss.backward()
    flat = torch.cat([w[n].grad.flatten() for n in param_order(cfg[0])])
    return feat.detach(), cls.detach(), flat.detach(), x.grad.detach()


def main():
    out, seed = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(seed)
    for case in sys.argv[3:]:
        name, depth, D, NH, P, G, B, H, W = case.split(":")
        depth, D, NH, P, G, B, H, W = map(int, (depth, D, NH, P, G, B, H, W))
        cfg = (depth, D, NH, P, G)
        # The C side gets float32 values: round them first so both compute from identical inputs.
        w = {k: v.float().double() for k, v in random_weights(gen, depth, D, P, G, 4 * D, stds=STDS).items()}
        x = torch.randn(B, 3, H, W, generator=gen, dtype=torch.float64).float().double()
        dfeat = torch.randn(B, D, H // P, W // P, generator=gen, dtype=torch.float64).float().double()
        dcls = torch.randn(B, D, generator=gen, dtype=torch.float64).float().double()
        feat, cls, g_both, dimg_both = gradients(w, x, dfeat, dcls, cfg)
        _, _, g_cls, dimg_cls = gradients(w, x, torch.zeros_like(dfeat), dcls, cfg)
        w32 = {k: v.float() for k, v in w.items()}
        _, _, g32, _ = gradients(w32, x.float(), dfeat.float(), dcls.float(), cfg)
        write_safetensors(f"{out}/{name}.safetensors", {k: v.numpy() for k, v in w.items()}, {"arch": "custom"})
        for suffix, t in [("in", x), ("dfeat", dfeat), ("dcls", dcls), ("feat", feat), ("cls", cls),
                          ("grads_both", g_both), ("dimg_both", dimg_both), ("grads_cls", g_cls),
                          ("dimg_cls", dimg_cls), ("grads32", g32)]:
            dump(f"{out}/{name}.{suffix}.bin", t.numpy())


if __name__ == "__main__":
    main()
