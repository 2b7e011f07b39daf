"""PyTorch reference for tests/test_dino.c (float64, fresh random weights and inputs every run, seed given):
DINO's projection head, its loss and one full training iteration, written as facebookresearch/dino's
main_dino.py / utils.py compute them (DINOHead with nlayers=3 and norm_last_layer, DINOLoss, clip_gradients,
AdamW, the EMA teacher).

usage: dino_ref.py OUTDIR SEED
writes raw float32 files into OUTDIR:
  head.{params,x,dlogits,logits,grads,dx}.bin          head 24 -> 40 -> 40 -> 12 -> 50 prototypes, 6 rows
  loss.{s,t,c,value,ds,c_new}.bin                       B 3, 4 student crops, 2 teacher crops, K 50
  step.{sv,sh,tv,th,c,globals,locals,mv0,vv0,mh0,vh0}.bin  inputs of one iteration (the 10th AdamW step) (ViT depth 2, width 32, 2 heads,
                                                        patch 8, 4x4 table; head 48/16/64; batch 2, globals
                                                        32x32, 2 locals 16x16)
  step.{loss,g,sv1,sh1,tv1,th1,c1,mv,vv,mh,vh}.bin      its results (clipped gradients of the ViT then the head,
                                                        student, teacher, centre, AdamW moments)
Flat ViT layouts follow ls_vit's params (vit_bwd_ref.param_order); the head's is w1 b1 w2 b2 w3 b3 v.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import dump  # noqa: E402
from vit_bwd_ref import STDS, forward as vit_forward, param_order, random_weights  # noqa: E402

HEAD_ORDER = ["w1", "b1", "w2", "b2", "w3", "b3", "v"]

# the iteration's settings (test_dino.c uses the same)
STEP = dict(depth=2, D=32, NH=2, P=8, G=4, hidden=48, bn=16, K=64, B=2, nlocal=2, gsize=32, lsize=16,
            lr=1e-3, wd=0.04, mom=0.9, tau_s=0.1, tau_t=0.04, center_m=0.9, clip=0.3, prior_steps=9)


def f32(t):
    return t.float().double()


def head_weights(gen, I, Hd, Bn, K, std):
    r = lambda *s, sd=std: f32(torch.randn(*s, generator=gen, dtype=torch.float64) * sd)  # noqa: E731
    return {"w1": r(Hd, I), "b1": r(Hd, sd=0.1), "w2": r(Hd, Hd), "b2": r(Hd, sd=0.1), "w3": r(Bn, Hd),
            "b3": r(Bn, sd=0.1), "v": r(K, Bn, sd=1.0)}


def head(h, x):
    """DINOHead(nlayers=3, use_bn=False, norm_last_layer=True): MLP, F.normalize, weight_norm'd prototypes
    with weight_g = 1 (each row of v over its norm)."""
    a = F.gelu(F.linear(x, h["w1"], h["b1"]))
    a = F.gelu(F.linear(a, h["w2"], h["b2"]))
    z = F.normalize(F.linear(a, h["w3"], h["b3"]), dim=-1, p=2)
    return F.linear(z, h["v"] / h["v"].norm(dim=1, keepdim=True))


def dino_loss(s, t, c, ncrops, tau_s, tau_t):
    """DINOLoss.forward without its centre update."""
    student_out = (s / tau_s).chunk(ncrops)
    teacher_out = F.softmax((t - c) / tau_t, dim=-1).detach().chunk(2)
    total, n = 0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            total = total + torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean()
            n += 1
    return total / n


def flat(d, order):
    return torch.cat([d[k].detach().flatten() for k in order])


def decayed(name, t):
    """main_dino.py's get_params_groups: biases and 1-D tensors are not regularised."""
    return not (name.endswith(".bias") or t.ndim == 1)


def main():
    out, seed = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(seed)
    rn = lambda *s, sd=1.0: f32(torch.randn(*s, generator=gen, dtype=torch.float64) * sd)  # noqa: E731

    # ---- head forward / backward
    h = {k: v.requires_grad_(True) for k, v in head_weights(gen, 24, 40, 12, 50, 0.3).items()}
    x = rn(6, 24).requires_grad_(True)
    dlog = rn(6, 50)
    logits = head(h, x)
    (logits * dlog).sum().backward()
    dump(f"{out}/head.params.bin", flat(h, HEAD_ORDER).numpy())
    dump(f"{out}/head.x.bin", x.detach().numpy())
    dump(f"{out}/head.dlogits.bin", dlog.numpy())
    dump(f"{out}/head.logits.bin", logits.detach().numpy())
    dump(f"{out}/head.grads.bin", torch.cat([h[k].grad.flatten() for k in HEAD_ORDER]).numpy())
    dump(f"{out}/head.dx.bin", x.grad.numpy())

    # ---- loss, its gradient and the centre update
    B, ns, K = 3, 4, 50
    s = rn(ns * B, K).requires_grad_(True)
    t = rn(2 * B, K, sd=0.1)
    c = rn(1, K, sd=0.05)
    loss = dino_loss(s, t, c, ns, 0.1, 0.04)
    loss.backward()
    for name, a in [("s", s.detach()), ("t", t), ("c", c), ("value", loss.detach().reshape(1)), ("ds", s.grad),
                    ("c_new", c * 0.9 + t.mean(dim=0, keepdim=True) * 0.1)]:
        dump(f"{out}/loss.{name}.bin", a.numpy())

    # ---- one iteration
    S = STEP
    D, depth, P, G = S["D"], S["depth"], S["P"], S["G"]
    sv = {k: f32(v) for k, v in random_weights(gen, depth, D, P, G, 4 * D, stds=STDS).items()}
    sh = head_weights(gen, D, S["hidden"], S["bn"], S["K"], 0.15)
    tv = {k: f32(v + 0.02 * torch.randn(v.shape, generator=gen, dtype=torch.float64)) for k, v in sv.items()}
    th = {k: f32(v + 0.02 * torch.randn(v.shape, generator=gen, dtype=torch.float64)) for k, v in sh.items()}
    c = rn(1, S["K"], sd=0.05)
    globals_ = rn(2 * S["B"], 3, S["gsize"], S["gsize"])
    locals_ = rn(S["nlocal"] * S["B"], 3, S["lsize"], S["lsize"])
    cfg = (depth, D, S["NH"], P, G)
    with torch.no_grad():
        t_logits = head(th, vit_forward(tv, globals_, *cfg)[1])
    svg = {k: v.clone().requires_grad_(True) for k, v in sv.items()}
    shg = {k: v.clone().requires_grad_(True) for k, v in sh.items()}
    cls = torch.cat([vit_forward(svg, globals_, *cfg)[1], vit_forward(svg, locals_, *cfg)[1]])
    loss = dino_loss(head(shg, cls), t_logits, c, 2 + S["nlocal"], S["tau_s"], S["tau_t"])
    loss.backward()
    c1 = c * S["center_m"] + t_logits.mean(dim=0, keepdim=True) * (1 - S["center_m"])
    params = [(k, svg[k]) for k in param_order(depth)] + [(k, shg[k]) for k in HEAD_ORDER]
    # AdamW as after `prior_steps` steps: moments m0, v0 given (from the middle of a run, where the update is a
    # smooth function of the gradient; at step 1 it is g / (|g| + eps), which float32 noise on gradients of
    # order eps cannot resolve).
    m0 = {name: rn(*p.shape, sd=0.01) for name, p in params}
    v0 = {name: rn(*p.shape, sd=0.01) ** 2 + 1e-6 for name, p in params}
    new, moments, clipped_grads, clipped = {}, {}, {}, 0
    lr, wd, step = S["lr"], S["wd"], S["prior_steps"] + 1
    for name, p in params:
        g = p.grad.clone()
        norm = g.norm(2)
        coef = S["clip"] / (norm + 1e-6)
        if coef < 1:
            g = g * coef
            clipped += 1
        w = p.detach() * (1 - lr * (wd if decayed(name, p) else 0.0))
        m = 0.9 * m0[name] + 0.1 * g
        v = 0.999 * v0[name] + 0.001 * g * g
        w = w - lr / (1 - 0.9 ** step) * m / (v.sqrt() / (1 - 0.999 ** step) ** 0.5 + 1e-8)
        new[name], moments[name], clipped_grads[name] = w, (m, v), g
    print(f"  dino_ref: {clipped} of {len(params)} gradient tensors clipped to norm {S['clip']}")
    sv1 = torch.cat([new[k].flatten() for k in param_order(depth)])
    sh1 = torch.cat([new[k].flatten() for k in HEAD_ORDER])
    mom = S["mom"]
    tv1 = mom * flat(tv, param_order(depth)) + (1 - mom) * sv1
    th1 = mom * flat(th, HEAD_ORDER) + (1 - mom) * sh1
    res = {"sv": flat(sv, param_order(depth)), "sh": flat(sh, HEAD_ORDER), "tv": flat(tv, param_order(depth)),
           "th": flat(th, HEAD_ORDER), "c": c, "globals": globals_, "locals": locals_,
           "mv0": torch.cat([m0[k].flatten() for k in param_order(depth)]),
           "vv0": torch.cat([v0[k].flatten() for k in param_order(depth)]),
           "mh0": torch.cat([m0[k].flatten() for k in HEAD_ORDER]),
           "vh0": torch.cat([v0[k].flatten() for k in HEAD_ORDER]),
           "loss": loss.detach().reshape(1),
           "g": torch.cat([clipped_grads[n].flatten() for n, _ in params]), "sv1": sv1, "sh1": sh1, "tv1": tv1, "th1": th1, "c1": c1,
           "mv": torch.cat([moments[k][0].flatten() for k in param_order(depth)]),
           "vv": torch.cat([moments[k][1].flatten() for k in param_order(depth)]),
           "mh": torch.cat([moments[k][0].flatten() for k in HEAD_ORDER]),
           "vh": torch.cat([moments[k][1].flatten() for k in HEAD_ORDER])}
    for name, a in res.items():
        dump(f"{out}/step.{name}.bin", a.numpy())


if __name__ == "__main__":
    main()
