"""Helpers shared by the PyTorch/SciPy reference scripts: raw float32 dumps, and the safetensors writer
of tools/ (the same one the converters use)."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
from safetensors_write import write_safetensors  # noqa: E402,F401


def dump(path, array):
    """Writes an array as raw little-endian float32, C order."""
    np.ascontiguousarray(np.asarray(array, dtype="<f4")).tofile(path)
