"""numpy's half-precision conversions as references for tests/test_safetensors.c.
usage: f16_ref.py OUTDIR SEED   writes
  h.f32  every fp16 bit pattern 0..65535 decoded to float32 by numpy
  x.f32  float32 inputs (random bit patterns, values near the fp16 range and its ties, edge cases)
  x.f16  numpy's float32 -> float16 of x (uint16 bit patterns)"""
import sys
import numpy as np

out, seed = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(seed)
np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32).tofile(f"{out}/h.f32")
r = rng.integers(0, 2**32, size=200000, dtype=np.uint64).astype(np.uint32).view(np.float32)
near = (rng.standard_normal(200000) * 2.0 ** rng.integers(-26, 17, size=200000)).astype(np.float32)
ties = ((np.arange(1, 4096) + 0.5) * 2.0 ** -24).astype(np.float32)          # subnormal ties
nties = ((np.arange(1024, 2048) + 0.5) * 2.0 ** rng.integers(-14, 16)).astype(np.float32)  # normal ties
edge = np.array([65504, 65519.99, 65520, 1e9, -1e9, 2.0**-25, 2.0**-25 * 1.0001, 2.0**-24, 5.96e-8,
                 6.1e-5, 0.0, -0.0, np.inf, -np.inf], dtype=np.float32)
x = np.concatenate([r[~np.isnan(r)], near, ties, nties, edge]).astype(np.float32)
if len(x) % 2:  # the C side reads x.f16 as whole float32 words
    x = np.append(x, np.float32(1.0))
x.tofile(f"{out}/x.f32")
with np.errstate(over="ignore"):
    x.astype(np.float16).view(np.uint16).tofile(f"{out}/x.f16")
