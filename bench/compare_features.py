"""Compares two feature cache files of `livseg features` (F16 safetensors, one tensor) for bench/gpu-check.sh.

usage: compare_features.py A.safetensors B.safetensors
Prints "features SHAPE max_abs_diff X scale Y rel Z" (rel = X / Y, Y the largest |value| of A) and exits 1
when the shapes differ. Standard library only: the GPU machine has no NumPy.
"""
import json
import struct
import sys


def load(path):
    with open(path, "rb") as f:
        buf = f.read()
    (hlen,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + hlen])
    (name,) = [k for k in header if k != "__metadata__"]
    t = header[name]
    if t["dtype"] != "F16":
        sys.exit(f"{path}: tensor {name} is {t['dtype']}, not F16")
    lo, hi = t["data_offsets"]
    data = buf[8 + hlen + lo : 8 + hlen + hi]
    return t["shape"], struct.unpack(f"<{len(data) // 2}e", data)


shape_a, a = load(sys.argv[1])
shape_b, b = load(sys.argv[2])
if shape_a != shape_b:
    print(f"features shapes differ: {shape_a} vs {shape_b}")
    sys.exit(1)
diff = max(abs(x - y) for x, y in zip(a, b))
scale = max(abs(x) for x in a) or 1.0
print(f"features {'x'.join(map(str, shape_a))} max_abs_diff {diff:.4g} scale {scale:.4g} rel {diff / scale:.3g}")
