"""PyTorch versions of minibnn's training networks, for ``bench_train.py --vs-torch``.

What a user would write in PyTorch 2.x on the CPU to train the same BNNs:

* the MNIST MLP in a *tuned* form: a custom autograd function for the binary linear layer
  (the +-1 weight buffer is reused between steps, the backward is two plain GEMMs),
  BatchNorm1d, a hard-tanh straight-through sign, fused Adam, latent clipping;
* the ConvNets in a *plain* form: ``F.conv2d`` with sign(W) through a straight-through
  function, MaxPool2d, BatchNorm2d, the same sign, Adam, clipping.

Both use the squared hinge loss on +-1 targets and the layouts of ``minibnn.zoo``.  Only
imported when PyTorch is installed.
"""

import torch
import torch.nn.functional as TF
from torch import nn


class SignSTE(torch.autograd.Function):
    """sign(x) (sign(0) = +1) forward; gradient passed where |x| <= 1 (hard-tanh STE)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class WeightSign(torch.autograd.Function):
    """sign(W) forward, identity backward (the latent weights get the gradient of W_b)."""

    @staticmethod
    def forward(ctx, w):
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)

    @staticmethod
    def backward(ctx, g):
        return g


class BinaryLinearFn(torch.autograd.Function):
    """y = x @ sign(W).T with the sign buffer reused; backward = two GEMMs."""

    @staticmethod
    def forward(ctx, x, w, wb):
        # sign(0) = +1, written into the reused buffer (no allocation per step)
        torch.sign(w, out=wb)
        wb[w == 0] = 1.0
        ctx.save_for_backward(x, wb)
        return x @ wb.t()

    @staticmethod
    def backward(ctx, g):
        x, wb = ctx.saved_tensors
        gx = g @ wb if ctx.needs_input_grad[0] else None
        return gx, g.t() @ x, None


class BinaryLinear(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in).uniform_(-1, 1))
        self.register_buffer("wb", torch.empty(n_out, n_in))

    def forward(self, x):
        return BinaryLinearFn.apply(x, self.weight, self.wb)


class BinaryConv(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in, 3, 3).uniform_(-1, 1))

    def forward(self, x):
        return TF.conv2d(x, WeightSign.apply(self.weight), padding=1)


class Sign(nn.Module):
    def forward(self, x):
        return SignSTE.apply(x)


def mnist_mlp(hidden, depth=3, dropout_in=0.0, dropout_hidden=0.0):
    """minibnn.zoo.mnist_mlp, Dropout layers at the same places when p > 0."""
    layers, n_in = [nn.Flatten()], 784
    if dropout_in > 0:
        layers.append(nn.Dropout(dropout_in))
    for _ in range(depth):
        layers += [BinaryLinear(n_in, hidden), nn.BatchNorm1d(hidden, eps=1e-4), Sign()]
        if dropout_hidden > 0:
            layers.append(nn.Dropout(dropout_hidden))
        n_in = hidden
    layers += [BinaryLinear(n_in, 10), nn.BatchNorm1d(10, eps=1e-4)]
    return nn.Sequential(*layers)


def convnet(width=0.5, fc_units=1024):
    """cifar10_convnet(width) of minibnn.zoo (svhn_convnet is width 0.5)."""
    layers, c_in, s, first = [], 3, 32, True
    for base in (128, 256, 512):
        c = max(1, int(round(base * width)))
        for j in range(2):
            layers.append(BinaryConv(c_in, c))
            if j == 1:
                layers.append(nn.MaxPool2d(2))
                s //= 2
            layers += [nn.BatchNorm2d(c, eps=1e-4), Sign()]
            c_in, first = c, False
    layers.append(nn.Flatten())
    feat = c_in * s * s
    for units, last in ((fc_units, False), (fc_units, False), (10, True)):
        layers += [BinaryLinear(feat, units), nn.BatchNorm1d(units, eps=1e-4)]
        if not last:
            layers.append(Sign())
        feat = units
    return nn.Sequential(*layers)


def squared_hinge(scores, y):
    t = -torch.ones_like(scores)
    t.scatter_(1, y[:, None], 1.0)
    return torch.clamp(1 - t * scores, min=0).pow(2).mean()


def make_step(model, lr=1e-3, fused=True):
    """One training step closure: forward, loss, backward, Adam, clip latent weights."""
    latent = [m.weight for m in model.modules() if isinstance(m, (BinaryLinear, BinaryConv))]
    try:
        opt = torch.optim.Adam(model.parameters(), lr=lr, fused=fused)
    except (RuntimeError, TypeError):       # fused Adam unavailable on this build
        opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)

    def step(x, y):
        opt.zero_grad(set_to_none=False)
        loss = squared_hinge(model(x), y)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for w in latent:
                w.clamp_(-1, 1)
        return loss

    return step
