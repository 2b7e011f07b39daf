"""Stores a livseg model file's weights as F16 (half the size), keeping batch-norm running statistics
in F32 (a running variance can exceed F16's range) and every metadata entry.

usage: python3 tools/model_to_f16.py IN.safetensors OUT.safetensors

`livseg train` writes F32 models; the shipped default model is this script's output, and
docs/training.md gives its accuracy next to the F32 model's.
"""
import json
import os
import struct
import sys

import numpy as np


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    meta = header.pop("__metadata__", {})
    if meta.get("livseg_model") != "1":
        sys.exit(f"{src}: not a livseg model")
    out, blobs, offset = {}, [], 0
    for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if t["dtype"] not in ("F32", "F16"):
            sys.exit(f"{src}: tensor {name} has dtype {t['dtype']}")
        a, b = t["data_offsets"]
        arr = np.frombuffer(body[a:b], dtype="<f4" if t["dtype"] == "F32" else "<f2")
        keep32 = name.endswith("running_mean") or name.endswith("running_var")
        raw = arr.astype("<f4" if keep32 else "<f2").tobytes()
        out[name] = {"dtype": "F32" if keep32 else "F16", "shape": t["shape"],
                     "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    out["__metadata__"] = meta
    h = json.dumps(out).encode()
    h += b" " * (-len(h) % 8)
    with open(dst + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    os.replace(dst + ".tmp", dst)
    print(f"{dst}: {os.path.getsize(dst)} bytes (from {os.path.getsize(src)})")


if __name__ == "__main__":
    main()
