#!/usr/bin/env python3
"""Rectangular fields of view from square ones: the default model's 10 held-out cases (5 BTCV CT, 5 CHAOS
T2 MR) with their anterior-posterior extent cut to FRACTION of the rows, centred (only air and background
go: no reference voxel is lost at 0.75, at most 1.3% at 0.6). Writes, for each case, in RAS order:

  CASE_crop_img.nii.gz, CASE_crop_liver.nii.gz   the cut scan and its reference
  CASE_pad_img.nii.gz,  CASE_pad_liver.nii.gz    the cut scan padded back to its square with the volume's
                                                 minimum (letterboxed by hand, the control)

Usage: experiments/letterbox/crops.py OUT_DIR FRACTION [DATA_DIR]
"""
import os
import sys

import nibabel as nib
import numpy as np

out, frac = sys.argv[1], float(sys.argv[2])
data = sys.argv[3] if len(sys.argv) > 3 else os.environ.get("LIVSEG_DATA", "../shared/data")
os.makedirs(out, exist_ok=True)
cases = ["btcv_25", "btcv_26", "btcv_27", "btcv_28", "btcv_29",
         "chaos_t2_34", "chaos_t2_36", "chaos_t2_37", "chaos_t2_38", "chaos_t2_39"]


def save(name, img, aff, lab, header):
    i = nib.Nifti1Image(img, aff, header.copy())
    r = nib.Nifti1Image(lab.astype(np.uint8), aff)
    for x in (i, r):
        x.set_qform(aff, 1)
        x.set_sform(aff, 1)
    nib.save(i, f"{out}/{name}_img.nii.gz")
    nib.save(r, f"{out}/{name}_liver.nii.gz")


for c in cases:
    ds, kind = ("btcv", "ct") if c.startswith("btcv") else ("chaos_t2", "mr")
    im = nib.as_closest_canonical(nib.load(f"{data}/{ds}/{c}_{kind}.nii.gz"))
    lb = nib.as_closest_canonical(nib.load(f"{data}/{ds}/{c}_liver.nii.gz"))
    vox, lab = np.asanyarray(im.dataobj), np.asanyarray(lb.dataobj)
    ny = vox.shape[1]
    keep = int(round(ny * frac))
    y0 = (ny - keep) // 2
    aff = im.affine.copy()
    aff[:3, 3] += aff[:3, 1] * y0
    vc, lc = vox[:, y0:y0 + keep], lab[:, y0:y0 + keep]
    save(f"{c}_crop", vc, aff, lc, im.header)
    vp = np.full(vox.shape, vc.min(), dtype=vox.dtype)
    vp[:, y0:y0 + keep] = vc
    lp = np.zeros_like(lab)
    lp[:, y0:y0 + keep] = lc
    save(f"{c}_pad", vp, im.affine, lp, im.header)
    print(f"{c}: rows {y0}-{y0 + keep - 1} of {ny}, reference voxels lost {1 - lc.sum() / lab.sum():.3f}")
