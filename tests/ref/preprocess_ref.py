"""Reference for tests/test_preprocess.c: torch's bilinear resize and numpy's percentiles.

usage: preprocess_ref.py DIR SEED
writes DIR/plane.bin [37, 53] and its resizes DIR/up.bin [224, 224], DIR/down.bin [19, 31],
DIR/wide.bin [40, 90]; DIR/values.bin (10007 values) and DIR/pct.bin (percentiles 0, 0.5, 13.7, 50, 99.5, 100).
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
values = (rng.gamma(2.0, 100.0, size=10007) - 30).astype(np.float32)
values[::97] = 0.0  # ties
dump(f"{d}/values.bin", values)
dump(f"{d}/pct.bin", np.percentile(values.astype(np.float64), [0, 0.5, 13.7, 50, 99.5, 100]))
