"""Writes a safetensors file by hand (json + struct, no safetensors package) plus numpy's reference
conversions, for tests/test_safetensors.c.  usage: st_write.py OUTDIR SEED"""
import json, struct, sys
import numpy as np

out, seed = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(seed)

a = rng.standard_normal((2, 3)).astype(np.float32)
h = np.arange(65536, dtype=np.uint32).astype(np.uint16)          # every fp16 bit pattern
b = rng.integers(0, 65536, size=4096, dtype=np.uint32).astype(np.uint16)
b[:8] = [0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x0001, 0x807f, 0x3f80]  # 0,-0,inf,-inf,nan,subnormals,1
blobs = [("a", "F32", [2, 3], a.tobytes()), ("h", "F16", [256, 256], h.tobytes()),
         ("b", "BF16", [4096], b.tobytes())]
hdr, off, data = {"__metadata__": {"format": "pt", "note": "written by st_write.py"}}, 0, b""
for name, dt, shape, raw in blobs:
    hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
    off += len(raw); data += raw
j = json.dumps(hdr).encode()
j += b" " * ((8 - len(j) % 8) % 8)
with open(f"{out}/py.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(j)) + j + data)

a.tofile(f"{out}/a.f32")
h.view(np.float16).astype(np.float32).tofile(f"{out}/h.f32")
(b.astype(np.uint32) << 16).view(np.float32).tofile(f"{out}/b.f32")

# float32 -> float16 rounding reference: random bit patterns over the whole range and near the
# fp16 range limits, plus ties.
r = rng.integers(0, 2**32, size=200000, dtype=np.uint64).astype(np.uint32).view(np.float32)
near = (rng.standard_normal(200000) * 2.0 ** rng.integers(-26, 17, size=200000)).astype(np.float32)
ties = (np.arange(1, 4096, dtype=np.float32) + 0.5) * np.float32(2.0 ** -24)
edge = np.array([65504, 65519.99, 65520, 1e9, -1e9, 2.0**-25, 2.0**-25 * 1.0001, 2.0**-24, 5.96e-8,
                 6.1e-5, 0.0, -0.0, np.inf, -np.inf, np.nan], dtype=np.float32)
x = np.concatenate([r, near, ties.astype(np.float32), edge]).astype(np.float32)
x.tofile(f"{out}/x.f32")
with np.errstate(over="ignore", invalid="ignore"):
    x.astype(np.float16).view(np.uint16).tofile(f"{out}/x.f16")
