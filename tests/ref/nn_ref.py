"""PyTorch autograd reference for tests/test_nn.c: every trainable-path layer, forward and backward, on
fresh random inputs, evaluated in float64 (inputs and parameters rounded to float32 first).

usage: nn_ref.py OUTDIR SEED
For each case NAME it writes OUTDIR/NAME.<tensor>.bin (raw float32): the inputs, the parameters, the
upstream gradient g, the outputs and the gradients of sum(output * g).
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import dump  # noqa: E402

out, seed = sys.argv[1], int(sys.argv[2])
gen = torch.Generator().manual_seed(seed)


def rnd(*shape, scale=1.0, shift=0.0):
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift).float().double()


def save(name, **tensors):
    for k, v in tensors.items():
        dump(f"{out}/{name}.{k}.bin", v.detach().numpy())


def conv_case(name, B, Ci, Co, H, W, K, bias):
    x = rnd(B, Ci, H, W).requires_grad_()
    w = rnd(Co, Ci, K, K, scale=0.3).requires_grad_()
    b = rnd(Co, scale=0.5).requires_grad_() if bias else None
    y = F.conv2d(x, w, b, padding=K // 2)
    g = rnd(*y.shape)
    (y * g).sum().backward()
    t = dict(x=x, w=w, y=y, g=g, dx=x.grad, dw=w.grad)
    if bias:
        t.update(b=b, db=b.grad)
    save(name, **t)


def bn_case(name, B, C, H, W):
    x = rnd(B, C, H, W, scale=2.0, shift=0.7).requires_grad_()
    gamma = rnd(C, scale=0.3, shift=1.0).requires_grad_()
    beta = rnd(C, scale=0.3).requires_grad_()
    rm0, rv0 = rnd(C, scale=0.1), rnd(C, scale=0.1, shift=1.0).abs()
    rm, rv = rm0.clone(), rv0.clone()
    y = F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=0.1, eps=1e-5)
    g = rnd(*y.shape)
    (y * g).sum().backward()
    ye = F.batch_norm(x.detach(), rm, rv, gamma.detach(), beta.detach(), training=False, eps=1e-5)
    save(name, x=x, gamma=gamma, beta=beta, rm0=rm0, rv0=rv0, y=y, g=g, dx=x.grad, dgamma=gamma.grad,
         dbeta=beta.grad, rm=rm, rv=rv, yeval=ye)


def up_case(name, B, C, H, W):
    x = rnd(B, C, H, W).requires_grad_()
    y = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    g = rnd(*y.shape)
    (y * g).sum().backward()
    save(name, x=x, y=y, g=g, dx=x.grad)


def pointwise_case(name, B, C, H, W):
    x = rnd(B, C, H, W).requires_grad_()
    keep = (torch.rand(B, C, generator=gen, dtype=torch.float64) > 0.3).double() / 0.7
    y = F.relu(x) * keep[:, :, None, None]
    g = rnd(*y.shape)
    (y * g).sum().backward()
    save(name, x=x, keep=keep, y=y, g=g, dx=x.grad)


torch.set_num_threads(2)
conv_case("conv3", 2, 5, 7, 9, 11, 3, True)
conv_case("conv3nb", 3, 4, 6, 6, 5, 3, False)
conv_case("conv1", 3, 6, 4, 5, 8, 1, True)
conv_case("conv3big", 2, 16, 8, 14, 14, 3, True)
# 140 input channels: the CPU conv cuts the 11x12 image into im2col tiles of 104 pixels, the second
# starting mid-row (one image: the weight gradient's float32 sums stay well inside the tolerance)
conv_case("conv3tiles", 1, 140, 4, 11, 12, 3, True)
# The direct convolution's blocks (src/cpu_conv.c): 13 outputs = 8 + 4 + 1 channels; 70 pixels a row =
# 3 + 2 AVX-512 vectors, 40 = 3 + 2 AVX2 ones; several bands of rows, the last one short; a 5x5 kernel.
conv_case("conv3wide", 2, 6, 13, 23, 70, 3, True)
conv_case("conv5", 1, 3, 2, 40, 40, 5, True)
bn_case("bn", 3, 4, 5, 6)
bn_case("bn1", 4, 3, 1, 1)
up_case("up", 2, 3, 5, 7)
up_case("up1", 1, 2, 1, 3)
up_case("upwide", 1, 2, 3, 300)  # wider than the CPU kernel's 256-column segments
pointwise_case("relu_drop", 2, 6, 4, 5)
