"""PyTorch reference for tests/test_probe.c: L2-regularised logistic regression on standardised
features, solved in float64 by L-BFGS with a strong-Wolfe line search (a different optimiser from the
C code's Newton steps; the objective is strictly convex, so both must reach the same point), and the
ROC AUC counted over every (positive, negative) pair.

usage: probe_ref.py OUTDIR SEED
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import dump  # noqa: E402

out, seed = sys.argv[1], int(sys.argv[2])
gen = torch.Generator().manual_seed(seed)
torch.set_num_threads(2)
N, D, L2 = 3000, 12, 1.5

# Features with offsets and scales far from standard, a few of them informative, labels drawn from a
# logistic model (so they overlap and the optimum is finite).
X = torch.randn(N, D, generator=gen, dtype=torch.float64)
X = X * torch.logspace(-2, 2, D, dtype=torch.float64) + torch.linspace(-50, 50, D, dtype=torch.float64)
X = X.float().double()
true_w = torch.randn(D, generator=gen, dtype=torch.float64)
Xs_true = (X - X.mean(0)) / X.std(0, unbiased=False)
y = (torch.rand(N, generator=gen, dtype=torch.float64) < torch.sigmoid(Xs_true @ true_w - 1.0)).double()

mean, std = X.mean(0), X.std(0, unbiased=False)
Xs = (X - mean) / std
w = torch.zeros(D, dtype=torch.float64, requires_grad=True)
b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
opt = torch.optim.LBFGS([w, b], lr=1, max_iter=2000, tolerance_grad=1e-13, tolerance_change=1e-16,
                        history_size=50, line_search_fn="strong_wolfe")


def objective():
    z = Xs @ w + b
    return torch.nn.functional.softplus(z).sum() - (y * z).sum() + 0.5 * L2 * (w * w).sum()


def closure():
    opt.zero_grad()
    f = objective()
    f.backward()
    return f


for _ in range(5):
    opt.step(closure)
with torch.no_grad():
    f = objective()
    Xt = (X[:500] * 1.1 + 0.3).float().double()  # rows not fitted, as float32 like every input the C side reads
    zt = (Xt - mean) / std @ w + b

# AUC with ties: scores rounded to one decimal, counted over all pairs.
s = np.round(np.random.default_rng(seed).normal(size=400), 1)
lab = (np.random.default_rng(seed + 1).random(400) < 1 / (1 + np.exp(-2 * s))).astype(np.float64)
pos, neg = s[lab == 1], s[lab == 0]
auc = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))

dump(f"{out}/X.bin", X.numpy())
dump(f"{out}/y.bin", y.numpy())
dump(f"{out}/w.bin", w.detach().numpy())
dump(f"{out}/bias.bin", b.detach().numpy())
dump(f"{out}/objective.bin", np.array([f.item()]))
dump(f"{out}/Xt.bin", Xt.numpy())
dump(f"{out}/zt.bin", zt.numpy())
dump(f"{out}/auc_scores.bin", s)
dump(f"{out}/auc_labels.bin", lab)
dump(f"{out}/auc.bin", np.array([auc]))
