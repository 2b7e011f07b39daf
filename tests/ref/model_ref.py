"""PyTorch reference for tests/test_model.c: one full training step of head + decoder.

usage: model_ref.py DIR C HH K G W0 W1 W2 W3 W4 SKIP B UP
UP is how many of the five decoder stages upsample (the last UP). Reads from DIR (written by the C test, float32): params.bin (the C layout: per layer w, b, and gamma,
beta for batch-normed layers; layers head1, head2, dec0..dec4, skip0, skip1, out), running.bin (per
batch-normed layer mean, var), feats.bin [B,C,G,G], image.bin [B,1,S,S], target.bin, keep0..4.bin
[B,Wi], extra.bin [1,C,G,G] (a slice that reaches the loss through the head alone). Runs the forward pass in training mode (float64), the losses Focal + Tversky + log-IoU +
0.1 * entropy + the contrastive terms (each slice with itself, b 0.18; slice 0 with slice 1, b 0.12; slice 0 with the extra slice,
b 0.46, weight 0.5),
backward, and one RAdam step (lr 1e-3, weight decay 1e-5). Writes ref_logits.bin, ref_codes.bin,
ref_loss.bin, ref_grads.bin (C layout), ref_running.bin and ref_params.bin (after the step), and
ref_kink.bin: how close the float64 pass came to a kink (the smallest relative |input| of a ReLU, or
|code correlation| of a contrastive term's clamp).
"""
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

d = sys.argv[1]
C, HH, K, G, W0, W1, W2, W3, W4, SK, B, UP = (int(v) for v in sys.argv[2:14])
widths = [W0, W1, W2, W3, W4]
S = G * 2 ** UP
torch.set_num_threads(2)


def load(name, shape):
    return torch.from_numpy(np.fromfile(f"{d}/{name}.bin", dtype="<f4").astype(np.float64)).reshape(shape)


# Layer list: (ci, co, k, batch-normed)
layers = [(C, HH, 1, False), (HH, K, 1, False)]
ci = K
for w in widths:
    layers.append((ci, w, 3, True))
    ci = w
layers += [(W4 + 1, SK, 3, True), (SK, SK, 3, True), (SK, 1, 3, False)]

flat = load("params", (-1,))
run = load("running", (-1,))
params, running, pos, rpos = [], [], 0, 0
for ci, co, k, bn in layers:
    entry = {}
    for name, n, shape in [("w", co * ci * k * k, (co, ci, k, k)), ("b", co, (co,))] + (
            [("gamma", co, (co,)), ("beta", co, (co,))] if bn else []):
        entry[name] = flat[pos:pos + n].reshape(shape).clone().requires_grad_()
        pos += n
    if bn:
        entry["rm"] = run[rpos:rpos + co].clone()
        entry["rv"] = run[rpos + co:rpos + 2 * co].clone()
        rpos += 2 * co
    params.append(entry)
assert pos == flat.numel() and rpos == run.numel()

feats = load("feats", (B, C, G, G))
image = load("image", (B, 1, S, S))
target = load("target", (B, 1, S, S))
keeps = [load(f"keep{s}", (B, widths[s])) for s in range(5)]
extra = load("extra", (1, C, G, G))


# Closest approach to a kink (every ReLU input relative to its tensor's largest value, and every clamped
# code correlation): where float32 and float64 can take different branches.
kink = [math.inf]


def conv(x, p, k):
    return F.conv2d(x, p["w"], p["b"], padding=k // 2)


def relu(x):
    """ReLU that records, for the float64 pass, how close its input came to the kink at 0 (relative to
    the tensor's largest value)."""
    if x.dtype == torch.float64:
        a = x.detach().abs()
        kink[0] = min(kink[0], a.min().item() / max(a.max().item(), 1e-300))
    return F.relu(x)


def bn_relu(x, p):
    return relu(F.batch_norm(x, p["rm"], p["rv"], p["gamma"], p["beta"], training=True, momentum=0.1, eps=1e-5))


def forward(params, feats, image, keeps):
    h = relu(conv(feats, params[0], 1))
    codes = conv(h, params[1], 1)
    x = codes
    for s in range(5):
        if s >= 5 - UP:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = bn_relu(conv(x, params[2 + s], 3), params[2 + s]) * keeps[s][:, :, None, None]
    x = torch.cat([x, image], dim=1)
    x = bn_relu(conv(x, params[7], 3), params[7])
    x = bn_relu(conv(x, params[8], 3), params[8])
    return codes, conv(x, params[9], 3)


# PyTorch's own float32 answer first (on copies of the running statistics), for comparison.
with torch.no_grad():
    p32 = [{k: (v.detach().float().clone()) for k, v in prm.items()} for prm in params]
    _, logits32 = forward(p32, feats.float(), image.float(), [k.float() for k in keeps])
codes, logits = forward(params, feats, image, keeps)
codes_extra = conv(relu(conv(extra, params[0], 1)), params[1], 1)

p = torch.sigmoid(logits)
t = target
ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
pt = p * t + (1 - p) * (1 - t)
focal = ((0.25 * t + 0.75 * (1 - t)) * ce * (1 - pt) ** 2).mean()
tp, fp, fn = (p * t).sum(), (p * (1 - t)).sum(), ((1 - p) * t).sum()
tversky = 1 - (tp + 1) / (tp + 0.5 * fp + 0.5 * fn + 1)
inter, union = (p * t).sum(), (p + t - p * t).sum()
log_iou = -torch.log((inter + 1) / (union + 1))
ent = -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)) / math.log(2)
entropy = ((ent ** 2 + 1e-8) ** 2).mean()


def cd_term(fx, fy, gx, gy, b):
    xf = F.normalize(fx, dim=0).t() @ F.normalize(fy, dim=0)
    s = xf - xf.mean(dim=1, keepdim=True)
    xc = F.normalize(gx, dim=0).t() @ F.normalize(gy, dim=0)
    kink[0] = min(kink[0], xc.detach().abs().min().item())
    return (-(s - b) * xc.clamp(min=0)).mean()


fl = feats.reshape(B, C, G * G)
cl = codes.reshape(B, K, G * G)
cd = cd_term(fl[0], fl[0], cl[0], cl[0], 0.18) + cd_term(fl[1], fl[1], cl[1], cl[1], 0.18) + \
    cd_term(fl[0], fl[1], cl[0], cl[1], 0.12) + \
    0.5 * cd_term(fl[0], extra.reshape(C, G * G), cl[0], codes_extra.reshape(K, G * G), 0.46)
loss = focal + tversky + log_iou + 0.1 * entropy + cd
loss.backward()


def flat_of(getter):
    out = []
    for (ci, co, k, bn), prm in zip(layers, params):
        out += [getter(prm["w"]), getter(prm["b"])]
        if bn:
            out += [getter(prm["gamma"]), getter(prm["beta"])]
    return torch.cat([o.reshape(-1) for o in out])


def dump(name, t):
    t.detach().reshape(-1).numpy().astype("<f4").tofile(f"{d}/{name}.bin")


dump("ref_logits", logits)
dump("ref_logits32", logits32)
dump("ref_codes", codes)
dump("ref_loss", loss.reshape(1))
dump("ref_kink", torch.tensor([kink[0]]))
dump("ref_grads", flat_of(lambda v: v.grad))
dump("ref_running", torch.cat([torch.cat([prm["rm"], prm["rv"]]) for (_, _, _, bn), prm in zip(layers, params) if bn]))
leaves = [v for prm in params for k, v in prm.items() if k in ("w", "b", "gamma", "beta")]
opt = torch.optim.RAdam(leaves, lr=1e-3, weight_decay=1e-5)
opt.step()
dump("ref_params", flat_of(lambda v: v))
