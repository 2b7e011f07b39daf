"""Smoothing livseg's probabilities before the threshold: does it help? (docs/experiments.md)

usage: /usr/bin/python3 variants.py DATA PROBDIR CASE,CASE,...
PROBDIR holds CASE.prob.nii.gz from `livseg segment SCAN -o CASE.mask.nii.gz --prob CASE.prob.nii.gz`.
For every variant (no smoothing; along z [1,2,1] or [1,1,1] or Gaussian 3 mm; 3-D Gaussian 2 or 4 mm) and
threshold (0.4, 0.5, 0.6) it applies livseg's clean-up (largest 26-connected component, 3-D holes, holes
per axial slice) and writes PROBDIR/v/CASE.VARIANT.nii.gz and PROBDIR/v/pairs_VARIANT.csv for
`livseg eval --pairs`. The unsmoothed 0.5 variant reproduces livseg's own masks.
"""
import sys, csv, os, numpy as np, nibabel as nib
from scipy import ndimage as ndi
D, P = sys.argv[1], sys.argv[2]
os.makedirs(P + "/v", exist_ok=True)
man = {r["case"]: r for r in csv.DictReader(open(D + "/manifest.csv"))}
cases = sys.argv[3].split(",")
def clean(m):
    lab, n = ndi.label(m, structure=np.ones((3, 3, 3)))
    if n == 0: return m
    sizes = np.bincount(lab.ravel()); sizes[0] = 0
    m = lab == sizes.argmax()
    m = ndi.binary_fill_holes(m)
    ax = zax
    for k in range(m.shape[ax]):
        sl = [slice(None)] * 3; sl[ax] = k
        m[tuple(sl)] = ndi.binary_fill_holes(m[tuple(sl)])
    return m
def zsmooth(p, w):
    return ndi.convolve1d(p, np.array(w, float) / sum(w), axis=zax, mode="nearest")
variants = {
    "base": lambda p, s: p,
    "z121": lambda p, s: zsmooth(p, [1, 2, 1]),
    "z111": lambda p, s: zsmooth(p, [1, 1, 1]),
    "g2mm": lambda p, s: ndi.gaussian_filter(p, [2.0 / x for x in s], mode="nearest"),
    "g4mm": lambda p, s: ndi.gaussian_filter(p, [4.0 / x for x in s], mode="nearest"),
    "gz3mm": lambda p, s: ndi.gaussian_filter1d(p, 3.0 / s[zax], axis=zax, mode="nearest"),
}
thr = [0.5, 0.4, 0.6]
rows = {}
for c in cases:
    img = nib.load(f"{P}/{c}.prob.nii.gz"); p = np.asarray(img.dataobj, np.float32)
    s = img.header.get_zooms()[:3]
    zax = int(np.argmax(np.abs(img.affine[2, :3])))  # the array axis closest to superior
    for vn, f in variants.items():
        q = f(p, s)
        for t in thr:
            name = f"{vn}_t{t}"
            m = clean(q >= t).astype(np.uint8)
            out = nib.Nifti1Image(m, img.affine, img.header); out.set_data_dtype(np.uint8)
            fn = f"{P}/v/{c}.{name}.nii.gz"; nib.save(out, fn)
            rows.setdefault(name, []).append((c, fn, D + "/" + man[c]["label"]))
for name, pr in rows.items():
    with open(f"{P}/v/pairs_{name}.csv", "w") as f:
        f.write("case,pred,ref\n")
        for c, a, b in pr: f.write(f"{c},{a},{b}\n")
print("ok", len(rows))
