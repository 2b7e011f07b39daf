"""Where the liver sits in each MR scan's intensity window, against the default model's Dice.

For every MR case of the manifest: the label's median intensity as a fraction of the 0.5-99.5 percentile
window livseg uses for MR (docs/preprocessing.md), and of three body-based alternatives (body: voxels above
5% of the 99.5th percentile): its 95th and 98th percentiles and 2.5x its median. Segments each case with
the default model (build/livseg) and prints its Dice. Run from the repository root:

    /usr/bin/python3 experiments/mixed-20-epochs/mr_intensity.py [DATA]     # DATA: ../shared/data
"""
import csv
import subprocess
import sys
import tempfile

import nibabel as nib
import numpy as np


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else "../shared/data"
    rows = [r for r in csv.DictReader(open(f"{data}/manifest.csv")) if "MR" in r["modality"]]
    print("case              window  p95body  p98body  2.5med  dice")
    with tempfile.TemporaryDirectory() as tmp:
        for r in rows:
            img, lab = f"{data}/{r['image']}", f"{data}/{r['label']}"
            a = nib.load(img).get_fdata()
            liver = np.median(a[nib.load(lab).get_fdata() > 0.5])
            lo, hi = np.percentile(a, [0.5, 99.5])
            body = a[a > 0.05 * hi]
            b95, b98 = np.percentile(body, [95, 98])
            out = f"{tmp}/{r['case']}.nii.gz"
            subprocess.run(["build/livseg", "segment", img, "-o", out, "-q"], check=True)
            ev = subprocess.run(["build/livseg", "eval", out, lab], capture_output=True, text=True, check=True)
            dice = ev.stdout.strip().splitlines()[-1].split()[1]
            print(f"{r['case']:16s}  {(liver - lo) / (hi - lo):6.2f}  {liver / b95:7.2f}  {liver / b98:7.2f}"
                  f"  {liver / (2.5 * np.median(body)):6.2f}  {dice}")


if __name__ == "__main__":
    main()
