"""Reference for tests/test_preprocess.c: torch's bilinear resize and numpy's percentiles.

usage: preprocess_ref.py DIR SEED
writes DIR/plane.bin [37, 53] and its resizes DIR/up.bin [224, 224], DIR/down.bin [19, 31],
DIR/wide.bin [40, 90]; the plane padded by 8 rows above and below with 0.3 (F.pad), resized:
DIR/padup.bin [224, 224], DIR/padwide.bin [40, 90], and by 3 columns left and right: DIR/padcols.bin [19, 31];
DIR/canvas.bin [48, 48] resized to [37 + 2*5, 53 + 2*3] and cropped to the middle [37, 53]: DIR/unpad.bin;
DIR/values.bin (10007 values) and DIR/pct.bin (percentiles 0, 0.5, 13.7, 50, 99.5, 100).
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import dump  # noqa: E402

d, seed = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(seed)
plane = rng.normal(size=(37, 53)).astype(np.float32)
dump(f"{d}/plane.bin", plane)
t = torch.from_numpy(plane)[None, None]
for name, size in [("up", (224, 224)), ("down", (19, 31)), ("wide", (40, 90))]:
    dump(f"{d}/{name}.bin", F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=False)[0, 0].numpy())
def resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)[0, 0].numpy()


rows = F.pad(t, (0, 0, 8, 8), value=0.3)
cols = F.pad(t, (3, 3, 0, 0), value=0.3)
for name, x, size in [("padup", rows, (224, 224)), ("padwide", rows, (40, 90)), ("padcols", cols, (19, 31))]:
    dump(f"{d}/{name}.bin", resize(x, size))
canvas = rng.normal(size=(48, 48)).astype(np.float32)
dump(f"{d}/canvas.bin", canvas)
dump(f"{d}/unpad.bin", resize(torch.from_numpy(canvas)[None, None], (37 + 10, 53 + 6))[5:42, 3:56])
values = (rng.gamma(2.0, 100.0, size=10007) - 30).astype(np.float32)
values[::97] = 0.0  # ties
dump(f"{d}/values.bin", values)
dump(f"{d}/pct.bin", np.percentile(values.astype(np.float64), [0, 0.5, 13.7, 50, 99.5, 100]))
