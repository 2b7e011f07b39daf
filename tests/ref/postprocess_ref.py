"""Reference for tests/test_postprocess.c: scipy's labelling and hole filling on a raw uint8 mask.

usage: postprocess_ref.py DIR NX NY NZ
reads DIR/mask.u8 (x fastest) and writes DIR/largest.u8, DIR/fill3d.u8, DIR/fill2d.u8.
"""
import sys

import numpy as np
from scipy import ndimage

d, nx, ny, nz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# x fastest on disk == C order with shape (nz, ny, nx)
m = np.fromfile(f"{d}/mask.u8", dtype=np.uint8).reshape(nz, ny, nx).astype(bool)

lab, n = ndimage.label(m, structure=np.ones((3, 3, 3)))
if n:
    sizes = np.bincount(lab.ravel())[1:]
    largest = lab == (np.argmax(sizes) + 1)
else:
    largest = m
largest.astype(np.uint8).tofile(f"{d}/largest.u8")
ndimage.binary_fill_holes(m).astype(np.uint8).tofile(f"{d}/fill3d.u8")
np.stack([ndimage.binary_fill_holes(s) for s in m]).astype(np.uint8).tofile(f"{d}/fill2d.u8")
print(n)
