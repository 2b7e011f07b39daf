"""Independent reference for tests/test_metrics.c: SciPy's exact EDT and MedPy's surface-distance
definitions (written here with scipy.ndimage, as medpy.metric.binary does it), and scipy's ttest_rel.

usage: metrics_ref.py DIR NX NY NZ SX SY SZ
reads DIR/pred.u8, DIR/ref.u8 (x fastest), DIR/a.f64, DIR/b.f64 (paired samples);
writes DIR/edt.f64 (squared EDT to the ref mask's voxels) and prints: dice assd hd p t
"""
import sys

import numpy as np
from scipy import ndimage, stats

d = sys.argv[1]
nx, ny, nz = (int(v) for v in sys.argv[2:5])
sp = tuple(float(v) for v in sys.argv[5:8])
# x fastest on disk: C order is (z, y, x), so the sampling runs (sz, sy, sx).
pred = np.fromfile(f"{d}/pred.u8", dtype=np.uint8).reshape(nz, ny, nx).astype(bool)
ref = np.fromfile(f"{d}/ref.u8", dtype=np.uint8).reshape(nz, ny, nx).astype(bool)
sampling = sp[::-1]

edt = ndimage.distance_transform_edt(~ref, sampling=sampling) ** 2
edt.astype("<f8").tofile(f"{d}/edt.f64")


def surface_distances(result, reference):
    fp = ndimage.generate_binary_structure(3, 1)
    rb = result ^ ndimage.binary_erosion(result, structure=fp, iterations=1)
    refb = reference ^ ndimage.binary_erosion(reference, structure=fp, iterations=1)
    dt = ndimage.distance_transform_edt(~refb, sampling=sampling)
    return dt[rb]


dice = 2 * (pred & ref).sum() / (pred.sum() + ref.sum())
s1, s2 = surface_distances(pred, ref), surface_distances(ref, pred)
assd = (s1.mean() + s2.mean()) / 2
hd = max(s1.max(), s2.max())
a = np.fromfile(f"{d}/a.f64", dtype="<f8")
b = np.fromfile(f"{d}/b.f64", dtype="<f8")
t, p = stats.ttest_rel(a, b)
print(f"{dice:.17g} {assd:.17g} {hd:.17g} {p:.17g} {t:.17g}")
