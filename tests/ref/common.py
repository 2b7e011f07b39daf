"""Helpers shared by the PyTorch/SciPy reference scripts: raw float32 dumps and safetensors writing
(by hand: the format is 8 bytes of header length, a JSON header, then the tensor bytes)."""
import json
import struct

import numpy as np


def dump(path, array):
    """Writes an array as raw little-endian float32, C order."""
    np.ascontiguousarray(np.asarray(array, dtype="<f4")).tofile(path)


def write_safetensors(path, tensors, metadata=None, dtype="F32"):
    """tensors: dict name -> numpy array. dtype F32, F16 or BF16 for every tensor."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        a = np.asarray(a, dtype=np.float32)
        if dtype == "F16":
            raw = a.astype("<f2").tobytes()
        elif dtype == "BF16":
            raw = (a.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()  # truncation is exact enough here
        else:
            raw = a.astype("<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
