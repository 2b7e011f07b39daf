"""Writes the safetensors format from Python without the `safetensors` package: 8 bytes of header
length, a JSON header padded with spaces to 8 bytes, then the tensor bytes (little-endian)."""
import json
import struct

import numpy as np


def write_safetensors(path, tensors, metadata=None, dtype="F32"):
    """tensors: dict name -> array-like. dtype: F32, F16 or BF16 for every tensor."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
        if dtype == "F16":
            raw = a.astype("<f2").tobytes()
        elif dtype == "BF16":
            raw = (a.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()  # truncation
        else:
            raw = a.astype("<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    import os
    os.replace(path + ".tmp", path)


def write_sharded(path, tensors, metadata=None, dtype="F32", max_bytes=15 << 20):
    """Writes `path` when everything fits in max_bytes, else STEM-0000i-of-0000M.safetensors shards of at
    most max_bytes each (tensors in order, never split; one larger than the limit gets a file of its own).
    Every shard carries the metadata. Returns the list of paths written."""
    esize = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    budget = max(max_bytes - (64 << 10), 1)  # room for the JSON header
    groups, cur, size = [], {}, 0
    for name, a in tensors.items():
        nb = int(np.asarray(a).size) * esize
        if cur and size + nb > budget:
            groups.append(cur)
            cur, size = {}, 0
        cur[name] = a
        size += nb
    groups.append(cur)
    if len(groups) == 1:
        write_safetensors(path, tensors, metadata, dtype)
        return [path]
    stem = path[:-len(".safetensors")] if path.endswith(".safetensors") else path
    paths = [f"{stem}-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    for p, g in zip(paths, groups):
        write_safetensors(p, g, metadata, dtype)
    return paths
