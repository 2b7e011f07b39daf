"""Reference for bench/host.c: `livseg segment`'s clean-up chain in scipy.ndimage, timed.

usage: cleanup_scipy.py MASK.u8 NX NY NZ OUT.u8
Keeps the largest 26-connected component, fills 3-D holes, then the holes of every axial slice (what
src/postprocess.c does), writes the result (x fastest) and prints "scipy SECONDS" for the chain alone.
"""
import sys
import time

import numpy as np
from scipy import ndimage

path, nx, ny, nz, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
m = np.fromfile(path, dtype=np.uint8).reshape(nz, ny, nx).astype(bool)
t0 = time.perf_counter()
lab, n = ndimage.label(m, structure=np.ones((3, 3, 3)))
if n:
    m = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
m = ndimage.binary_fill_holes(m)
m = np.stack([ndimage.binary_fill_holes(s) for s in m])
t = time.perf_counter() - t0
m.astype(np.uint8).tofile(out)
print(f"scipy {t:.4f}")
