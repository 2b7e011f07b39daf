#!/usr/bin/env python3
"""Converts a DINO checkpoint (.pth, as published by facebookresearch/dino) into safetensors with timm's
parameter names, which `livseg` loads as a teacher.

usage: dino_to_safetensors.py IN.pth OUT.safetensors [--part teacher|student]

Accepts plain backbone state dicts (dino_deitsmall16_pretrain.pth, ...) and full training checkpoints
({"teacher": ..., "student": ...} with "module." and "backbone." prefixes); the DINO projection head
("head.*") is dropped. The architecture (vits16, vits8, vitb16, vitb8 or custom) is inferred from the
shapes and stored in the metadata. The project keeps files under 16 MiB, so a model larger than
--max-shard-mib (default 15) is written as OUT-00001-of-0000M.safetensors, ... (give livseg the first
shard; it opens the others). Needs PyTorch (Debian: python3-torch); never used at run time.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_write import write_sharded  # noqa: E402


def backbone_state(ckpt, part):
    sd = ckpt
    if isinstance(ckpt, dict) and part in ckpt and isinstance(ckpt[part], dict):
        sd = ckpt[part]
    elif isinstance(ckpt, dict) and "state_dict" in ckpt:
        sd = ckpt["state_dict"]
    out = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            continue
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.startswith("head."):
            continue
        out[k] = v.detach().float().cpu().numpy()
    return out


def infer_arch(sd):
    missing = [k for k in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight") if k not in sd]
    if missing:
        raise SystemExit(f"not a DINO ViT checkpoint: missing {', '.join(missing)}")
    dim = sd["cls_token"].shape[-1]
    patch = sd["patch_embed.proj.weight"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    names = {(384, 16, 12): "vits16", (384, 8, 12): "vits8", (768, 16, 12): "vitb16", (768, 8, 12): "vitb8"}
    return names.get((dim, patch, depth), "custom"), dim, patch, depth


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--part", default="teacher", help="which network of a training checkpoint (default teacher)")
    ap.add_argument("--max-shard-mib", type=float, default=15.0,
                    help="largest file to write before splitting into shards (default 15)")
    a = ap.parse_args()
    if not a.max_shard_mib > 0:
        raise SystemExit("--max-shard-mib must be positive")
    try:
        ckpt = torch.load(a.input, map_location="cpu")
    except Exception as e:  # one clear line, as every livseg tool
        raise SystemExit(f"{a.input}: cannot be read as a PyTorch checkpoint ({e})")
    sd = backbone_state(ckpt, a.part)
    arch, dim, patch, depth = infer_arch(sd)
    meta = {"format": "pt", "arch": arch, "dim": dim, "patch_size": patch, "depth": depth,
            "source": os.path.basename(a.input)}
    paths = write_sharded(a.output, sd, meta, max_bytes=int(a.max_shard_mib * (1 << 20)))
    where = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} more shards)"
    print(f"{where}: {len(sd)} tensors, {arch} (dim {dim}, patch {patch}, depth {depth})")


if __name__ == "__main__":
    main()
