"""PyTorch reference for tests/test_vit.c: a DINO ViT (timm's VisionTransformer layout) with fresh random
weights, evaluated in float64 so the C float32 forward is compared with an exact answer.

usage: vit_ref.py OUTDIR SEED CASE...   where CASE is NAME:PRESET:B:H:W:NAMING (NAMING timm or hf)
writes OUTDIR/NAME.safetensors (weights), NAME.in.bin [B,3,H,W], NAME.feat.bin and NAME.keys.bin
[B,D,H/P,W/P] (float64 answers stored as float32), and NAME.feat32.bin (PyTorch's float32 forward).
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import dump, write_safetensors  # noqa: E402

EPS = 1e-6
PRESETS = {"vits16": (12, 384, 6, 16), "vits8": (12, 384, 6, 8), "vitb16": (12, 768, 12, 16), "vitb8": (12, 768, 12, 8)}


def random_weights(gen, depth, D, P, G, Hd=None, stds=(0.06, 0.03, 0.03, 0.02)):
    """timm-named float64 weights; stds: of attn.qkv, attn.proj, mlp.fc1 and mlp.fc2 weights (the backward
    reference takes larger ones, for gradients well above rounding). Hd: MLP width (default 4 D)."""
    Hd = Hd or 4 * D
    s_qkv, s_proj, s_fc1, s_fc2 = stds

    def r(*shape, std=0.02, mean=0.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std + mean)

    w = {
        "cls_token": r(1, 1, D, std=0.5),
        "pos_embed": r(1, 1 + G * G, D, std=0.5),
        "patch_embed.proj.weight": r(D, 3, P, P, std=0.05),
        "patch_embed.proj.bias": r(D, std=0.1),
        "norm.weight": r(D, std=0.1, mean=1.0),
        "norm.bias": r(D, std=0.1),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        w[b + "norm1.weight"] = r(D, std=0.1, mean=1.0)
        w[b + "norm1.bias"] = r(D, std=0.1)
        w[b + "attn.qkv.weight"] = r(3 * D, D, std=s_qkv)
        w[b + "attn.qkv.bias"] = r(3 * D, std=0.1)
        w[b + "attn.proj.weight"] = r(D, D, std=s_proj)
        w[b + "attn.proj.bias"] = r(D, std=0.05)
        w[b + "norm2.weight"] = r(D, std=0.1, mean=1.0)
        w[b + "norm2.bias"] = r(D, std=0.1)
        w[b + "mlp.fc1.weight"] = r(Hd, D, std=s_fc1)
        w[b + "mlp.fc1.bias"] = r(Hd, std=0.05)
        w[b + "mlp.fc2.weight"] = r(D, Hd, std=s_fc2)
        w[b + "mlp.fc2.bias"] = r(D, std=0.05)
    return w


def tokens(w, x, depth, D, NH, P, G):
    """-> (tokens after the final LayerNorm [B,T,D], the last block's keys [B,T,D], gh, gw); class token first.
    Differentiable: the backward reference takes autograd's gradients through it."""
    B, _, H, W = x.shape
    gh, gw = H // P, W // P
    t = F.conv2d(x, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=P).flatten(2).transpose(1, 2)
    pos = w["pos_embed"]
    if (gh, gw) != (G, G):  # timm's resample_abs_pos_embed
        grid = pos[:, 1:].reshape(1, G, G, D).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False, antialias=False)
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, D)], dim=1)
    t = torch.cat([w["cls_token"].expand(B, -1, -1), t], dim=1) + pos
    T, HS = t.shape[1], D // NH
    keys = None
    for i in range(depth):
        b = f"blocks.{i}."
        h = F.layer_norm(t, (D,), w[b + "norm1.weight"], w[b + "norm1.bias"], eps=EPS)
        qkv = F.linear(h, w[b + "attn.qkv.weight"], w[b + "attn.qkv.bias"]).reshape(B, T, 3, NH, HS).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * HS ** -0.5).softmax(dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(B, T, D)
        t = t + F.linear(o, w[b + "attn.proj.weight"], w[b + "attn.proj.bias"])
        h = F.layer_norm(t, (D,), w[b + "norm2.weight"], w[b + "norm2.bias"], eps=EPS)
        h = F.gelu(F.linear(h, w[b + "mlp.fc1.weight"], w[b + "mlp.fc1.bias"]))
        t = t + F.linear(h, w[b + "mlp.fc2.weight"], w[b + "mlp.fc2.bias"])
        keys = k.transpose(1, 2).reshape(B, T, D)
    return F.layer_norm(t, (D,), w["norm.weight"], w["norm.bias"], eps=EPS), keys, gh, gw


def forward(w, x, depth, D, NH, P, G):
    """-> features and the last block's keys, [B,D,gh,gw] each (class token dropped)."""
    out, keys, gh, gw = tokens(w, x, depth, D, NH, P, G)
    B = x.shape[0]

    def grid(a):
        return a[:, 1:].transpose(1, 2).reshape(B, D, gh, gw)

    return grid(out), grid(keys)


def hf_names(w, depth):
    """The same weights under Hugging Face ViTModel names (separate q/k/v), with a "vit." prefix."""
    m = {
        "embeddings.cls_token": w["cls_token"],
        "embeddings.position_embeddings": w["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": w["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": w["patch_embed.proj.bias"],
        "layernorm.weight": w["norm.weight"],
        "layernorm.bias": w["norm.bias"],
    }
    for i in range(depth):
        b, e = f"blocks.{i}.", f"encoder.layer.{i}."
        D = w[b + "norm1.weight"].shape[0]
        for j, part in enumerate(["query", "key", "value"]):
            m[e + f"attention.attention.{part}.weight"] = w[b + "attn.qkv.weight"][j * D:(j + 1) * D]
            m[e + f"attention.attention.{part}.bias"] = w[b + "attn.qkv.bias"][j * D:(j + 1) * D]
        pairs = [("norm1", "layernorm_before"), ("attn.proj", "attention.output.dense"), ("norm2", "layernorm_after"),
                 ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")]
        for t, h in pairs:
            for s in ("weight", "bias"):
                m[e + f"{h}.{s}"] = w[b + f"{t}.{s}"]
    return {"vit." + k: v for k, v in m.items()}


def main():
    out, seed = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(seed)
    for case in sys.argv[3:]:
        name, preset, B, H, W, naming = case.split(":")
        B, H, W = int(B), int(H), int(W)
        depth, D, NH, P = PRESETS[preset]
        G = 224 // P
        w = random_weights(gen, depth, D, P, G)
        # The C side gets float32 weights: round them first so both compute from identical values.
        w = {k: v.float().double() for k, v in w.items()}
        x = torch.randn(B, 3, H, W, generator=gen, dtype=torch.float64).float().double()
        with torch.no_grad():
            feat, keys = forward(w, x, depth, D, NH, P, G)
            feat32, _ = forward({k: v.float() for k, v in w.items()}, x.float(), depth, D, NH, P, G)
        tensors = {k: v.numpy() for k, v in w.items()}
        if naming == "hf":
            tensors = {k: v.numpy() for k, v in hf_names(w, depth).items()}
        write_safetensors(f"{out}/{name}.safetensors", tensors, {"arch": preset})
        dump(f"{out}/{name}.in.bin", x.numpy())
        dump(f"{out}/{name}.feat.bin", feat.numpy())
        dump(f"{out}/{name}.keys.bin", keys.numpy())
        dump(f"{out}/{name}.feat32.bin", feat32.numpy())  # PyTorch's own float32 answer, for comparison


if __name__ == "__main__":
    main()
