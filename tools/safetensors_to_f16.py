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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_write import write_sharded  # noqa: E402


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
    for name, (a, _) in tensors.items():
        if not np.all(np.isfinite(a.astype("<f2")[np.isfinite(a)])):
            sys.exit(f"{src}: tensor {name} has values beyond F16's range")
    arrays = {name: a.astype(np.float32).reshape(shape) for name, (a, shape) in sorted(tensors.items())}
    for p in write_sharded(dst, arrays, meta, dtype="F16", max_bytes=int(max_mib * (1 << 20))):
        print(f"{p}: {os.path.getsize(p)} bytes")


if __name__ == "__main__":
    main()
