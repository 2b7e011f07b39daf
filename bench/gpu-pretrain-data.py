#!/usr/bin/python3
"""bench/gpu-pretrain-data.py — a half-resolution copy of a manifest's NIfTI scans, small enough to carry to
a lent GPU machine (its working tree is limited to 64 MiB; ../shared/data's NIfTI scans are ~170 MB) for
`livseg pretrain --preset gpu`, which cuts its crops from slices resampled to 128 x 128 anyway
(--source-size 128), so halving 256-pixel slices changes little of what it sees.

Every NIfTI case of MANIFEST is written to OUT with its in-plane size halved (2 x 2 means of the stored
values, an odd last row or column dropped) and every other slice kept; the affine is scaled to match, the
stored type and scl_slope/scl_inter are kept. Labels are taken by nearest sample (pretraining ignores
them; the manifest needs them to exist). DICOM cases are left out. OUT/manifest.csv lists what was written.

usage: bench/gpu-pretrain-data.py MANIFEST OUT [XY Z]   (XY: 1 or 2, in-plane step; Z: slice step; default 2 2)
"""
import csv
import gzip
import os
import struct
import sys

import nibabel as nib
import numpy as np


def shrink(path, out, is_label, fxy, fz):
    img = nib.load(path)
    raw = np.asarray(img.dataobj.get_unscaled())  # stored values: the scaling stays in the header
    if raw.ndim != 3:
        raise SystemExit(f"{path}: {raw.ndim}-D image, expected 3-D")
    nx, ny = raw.shape[0] // fxy * fxy, raw.shape[1] // fxy * fxy
    a = raw[:nx, :ny, ::fz]
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)  # the header copy has them reset
    scaled = slope != 1 or inter != 0
    if is_label:
        small = a[::fxy, ::fxy, :]
    else:
        small = a.reshape(nx // fxy, fxy, ny // fxy, fxy, -1).astype(np.float64).mean(axis=(1, 3))
        small = np.rint(small).astype(raw.dtype)
    aff = img.affine.copy()
    # voxel (i, j, k) of the copy is at (f i + (f-1)/2, f j + (f-1)/2, fz k) of the original
    aff[:3, :2] *= fxy
    aff[:3, 2] *= fz
    aff[:3, 3] = img.affine[:3, :3] @ np.array([(fxy - 1) / 2, (fxy - 1) / 2, 0.0]) + img.affine[:3, 3]
    hdr = img.header.copy()
    hdr.set_data_dtype(raw.dtype)
    new = nib.Nifti1Image(small, aff, hdr)
    new.set_qform(aff, code=1)
    new.set_sform(aff, code=1)
    nib.save(new, out)
    if scaled:  # nibabel resets scl_slope/scl_inter of integer data on saving: put the source's back
        with gzip.open(out) as f:
            data = bytearray(f.read())
        struct.pack_into("<ff", data, 112, slope, inter)  # NIfTI-1 scl_slope, scl_inter
        with gzip.open(out, "wb") as f:
            f.write(data)


def main():
    if len(sys.argv) not in (3, 5):
        raise SystemExit(__doc__.strip().splitlines()[-1])
    manifest, out = sys.argv[1], sys.argv[2]
    fxy, fz = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) == 5 else (2, 2)
    root = os.path.dirname(os.path.abspath(manifest))
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = []
    for r in rows:
        if not r["image"].endswith((".nii", ".nii.gz")):
            continue
        for key, is_label in (("image", False), ("label", True)):
            dst = os.path.join(out, r[key])
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shrink(os.path.join(root, r[key]), dst, is_label, fxy, fz)
        kept.append(r)
    with open(os.path.join(out, "manifest.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(kept)
    print(f"gpu-pretrain-data: {len(kept)} of {len(rows)} cases written to {out}")


if __name__ == "__main__":
    main()
