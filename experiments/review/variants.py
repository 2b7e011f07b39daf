#!/usr/bin/env python3
"""Makes the btcv_29 variants of docs/segment.md, "Checks of the mask": scans that are wrong in the ways the
review is meant to catch. Each is written with its reference mask changed the same way.

  lrflip   the header's left-right axis reversed, voxels unchanged (the model sees a mirrored patient)
  apflip   the same for the anterior-posterior axis
  lowhalf  the slices from the bottom of the scan to the middle of the liver (the scan cut through it)
  noliver  the slices below the liver only

Usage: experiments/review/variants.py OUT_DIR [DATA_DIR]   (then livseg segment OUT_DIR/NAME_ct.nii.gz ...)
"""
import os
import sys

import nibabel as nib
import numpy as np

out = sys.argv[1]
data = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("LIVSEG_DATA", "../shared/data")
os.makedirs(out, exist_ok=True)
im = nib.load(f"{data}/btcv/btcv_29_ct.nii.gz")
lb = nib.load(f"{data}/btcv/btcv_29_liver.nii.gz")
assert nib.aff2axcodes(im.affine) == ("L", "A", "S"), "btcv_29 is no longer LAS"
vox, lab, A = np.asanyarray(im.dataobj), np.asanyarray(lb.dataobj), im.affine


def save(name, v, aff, l):
    img = nib.Nifti1Image(v, aff, im.header.copy())
    ref = nib.Nifti1Image(l.astype(np.uint8), aff)
    for x in (img, ref):
        x.set_qform(aff, 1)
        x.set_sform(aff, 1)
    nib.save(img, f"{out}/{name}_ct.nii.gz")
    nib.save(ref, f"{out}/{name}_liver.nii.gz")


for axis, name in ((0, "lrflip"), (1, "apflip")):
    F = A.copy()
    F[:3, axis] *= -1
    save(name, vox, F, lab)
zs = np.nonzero(lab.sum(axis=(0, 1)))[0]  # slices holding liver (axis 2 runs inferior to superior)
mid = (zs.min() + zs.max()) // 2
save("lowhalf", vox[:, :, :mid], A, lab[:, :, :mid])
save("noliver", vox[:, :, : zs.min() - 2], A, lab[:, :, : zs.min() - 2])
print(f"{out}: lrflip apflip lowhalf noliver (liver on slices {zs.min()}-{zs.max()})")
