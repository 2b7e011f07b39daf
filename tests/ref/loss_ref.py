"""PyTorch reference for tests/test_loss.c: the supervised losses, the contrastive-distillation term,
RAdam and ReduceLROnPlateau, on fresh random inputs; autograd in float64.

usage: loss_ref.py OUTDIR SEED
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import dump  # noqa: E402

out, seed = sys.argv[1], int(sys.argv[2])
gen = torch.Generator().manual_seed(seed)
torch.set_num_threads(2)


def rnd(*shape, scale=1.0):
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).float().double()


def save(name, **t):
    for k, v in t.items():
        v = torch.as_tensor(v, dtype=torch.float64)
        dump(f"{out}/{name}.{k}.bin", v.detach().reshape(-1).numpy())


# Supervised losses on logits [2, 1, 8, 9], some very large to exercise the stable forms.
z = rnd(2, 1, 8, 9, scale=3.0)
z.view(-1)[:4] = torch.tensor([40.0, -40.0, 0.0, 1e-3], dtype=torch.float64)
t = (torch.rand(2, 1, 8, 9, generator=gen, dtype=torch.float64) > 0.6).double()
save("sup", z=z, t=t)


def focal(z, gamma=2.0, alpha=0.25):
    p = torch.sigmoid(z)
    ce = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    pt = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - pt) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean()


def tversky(z, a=0.3, b=0.7, s=1.0):
    p = torch.sigmoid(z)
    tp, fp, fn = (p * t).sum(), (p * (1 - t)).sum(), ((1 - p) * t).sum()
    return 1 - (tp + s) / (tp + a * fp + b * fn + s)


def log_iou(z, s=1.0):
    p = torch.sigmoid(z)
    i = (p * t).sum()
    u = (p + t - p * t).sum()
    return -torch.log((i + s) / (u + s))


def entropy(z, eta=2.0):
    p = torch.sigmoid(z)
    h = -(p * F.logsigmoid(z) + (1 - p) * F.logsigmoid(-z)) / math.log(2)
    return ((h ** 2 + 1e-8) ** eta).mean()


for name, fn in [("focal", focal), ("focal_g15_noalpha", lambda z: focal(z, 1.5, -1.0)), ("tversky", tversky),
                 ("logiou", log_iou), ("entropy", entropy)]:
    zz = z.clone().requires_grad_()
    loss = fn(zz)
    loss.backward()
    save(name, loss=loss.reshape(1), dz=zz.grad)

# Contrastive distillation: features [C, P], codes [D, P].
C, D, P = 24, 10, 30
fx, fy = rnd(C, P), rnd(C, P)
gx, gy = rnd(D, P), rnd(D, P)
save("cd", fx=fx, fy=fy, gx=gx, gy=gy)


def cd_term(fx, fy, gx, gy, b):
    xf = F.normalize(fx, dim=0).t() @ F.normalize(fy, dim=0)
    s = xf - xf.mean(dim=1, keepdim=True)
    xc = F.normalize(gx, dim=0).t() @ F.normalize(gy, dim=0)
    terms = -(s - b) * xc.clamp(min=0)
    # The means can cancel to far below their terms (a self loss of -4e-6 from terms of 0.06 was seen), so
    # the test measures their errors against the mean magnitude of the terms: the float32 rounding scale.
    scales = torch.stack([terms.abs().mean(), xc.abs().mean()]).detach()
    return terms.mean(), xc.mean(), scales


gxr, gyr = gx.clone().requires_grad_(), gy.clone().requires_grad_()
loss, sim, scales = cd_term(fx, fy, gxr, gyr, 0.12)
loss.backward()
save("cd_pair", loss=loss.reshape(1), sim=sim.reshape(1), scales=scales, dgx=gxr.grad, dgy=gyr.grad)
gxr = gx.clone().requires_grad_()
loss, sim, scales = cd_term(fx, fx, gxr, gxr, 0.18)
loss.backward()
save("cd_self", loss=loss.reshape(1), sim=sim.reshape(1), scales=scales, dgx=gxr.grad)

# RAdam, 25 steps (the first five without rectification), L2 weight decay as torch 1.13 does it.
n = 50
p0 = rnd(n)
grads = rnd(25, n)
param = torch.nn.Parameter(p0.clone())
opt = torch.optim.RAdam([param], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
for k in range(25):
    opt.zero_grad()
    param.grad = grads[k].clone()
    opt.step()
save("radam", p0=p0, grads=grads, p=param.detach())

# ReduceLROnPlateau(mode="max", factor=0.1, patience=3) on a Dice-like sequence with plateaus.
metric = [0.1, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.60001, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
sch_param = torch.nn.Parameter(torch.zeros(1))
sch_opt = torch.optim.SGD([sch_param], lr=1e-4)
sch = torch.optim.lr_scheduler.ReduceLROnPlateau(sch_opt, mode="max", factor=0.1, patience=3)
lrs = []
for m in metric:
    sch.step(m)
    lrs.append(sch_opt.param_groups[0]["lr"])
save("plateau", metric=metric, lr=lrs)
