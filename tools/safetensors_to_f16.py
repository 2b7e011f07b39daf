"""Stores a safetensors file, or a set of shards, with its F32 tensors as F16 (half the size), in shards of
at most --max-mib MiB: a teacher ViT-S/16 is 87 MB in F32, 44 MB in F16, three 15 MiB shards. Tensors that
F16 cannot hold (a value beyond +-65504) stop it. Metadata is kept (in every shard; livseg reads the
first's). livseg reads F16 wherever it reads F32.

usage: python3 tools/safetensors_to_f16.py IN OUT.safetensors [--max-mib N]
  IN   a file, or the first shard NAME-00001-of-0000M.safetensors (the others are found beside it)
  OUT  written as OUT.safetensors when it fits one shard, else OUT-0000i-of-0000M.safetensors
"""
import json
import os
import re
import struct
import sys

import numpy as np


def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        dt = {"F32": "<f4", "F16": "<f2"}.get(t["dtype"])
        if dt is None:
            sys.exit(f"{path}: tensor {name} has dtype {t['dtype']} (F32 or F16 expected)")
        tensors[name] = (np.frombuffer(body[a:b], dtype=dt), t["shape"])
    return tensors, meta


def shard_paths(first):
    m = re.fullmatch(r"(.*)-00001-of-(\d{5})\.safetensors", first)
    if not m:
        return [first]
    return [f"{m.group(1)}-{i:05d}-of-{m.group(2)}.safetensors" for i in range(1, int(m.group(2)) + 1)]


def write(path, items, meta):
    header, blobs, offset = {}, [], 0
    for name, raw, shape in items:
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    os.replace(path + ".tmp", path)


def main():
    args = sys.argv[1:]
    max_mib = 15.0
    if "--max-mib" in args:
        i = args.index("--max-mib")
        max_mib = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2 or not args[1].endswith(".safetensors"):
        sys.exit(__doc__)
    src, dst = args
    tensors, meta = {}, None
    for p in shard_paths(src):
        t, m = read(p)
        tensors.update(t)
        meta = meta if meta is not None else m
    items = []
    for name in sorted(tensors):
        a, shape = tensors[name]
        h = a.astype("<f2")
        if not np.all(np.isfinite(h[np.isfinite(a)])):
            sys.exit(f"{src}: tensor {name} has values beyond F16's range")
        items.append((name, h.tobytes(), shape))
    limit = int(max_mib * 1024 * 1024) - 65536  # room for the header
    shards, cur, size = [], [], 0
    for it in items:
        if cur and size + len(it[1]) > limit:
            shards.append(cur)
            cur, size = [], 0
        cur.append(it)
        size += len(it[1])
    shards.append(cur)
    stem = dst[: -len(".safetensors")]
    names = [dst] if len(shards) == 1 else [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, sh in zip(names, shards):
        write(name, sh, meta)
        print(f"{name}: {os.path.getsize(name)} bytes, {len(sh)} tensors")


if __name__ == "__main__":
    main()
