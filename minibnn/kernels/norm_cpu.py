"""Fused CPU kernels (numba.njit, parallel over channels) of spatial batch normalization.

The readable text of both rules is :func:`minibnn.functional.batchnorm_forward` /
:func:`~minibnn.functional.batchnorm_backward` (NumPy), which are also their slow twins:
``tests/test_train_kernels.py`` compares them.  Why: in NumPy a train-mode forward makes
about eight passes over a ``(N, C, H, W)`` activation (mean, variance, ``x - mu``, the
scaling, ``gamma * x_hat``, ``+ beta``, with temporaries) and the backward about ten;
for the ConvNets these passes were ~10% of a training step.  Here each direction is two
or three passes per channel, with the channel's ``N * H * W`` values (one contiguous run
of ``H * W`` per image) still in cache between them.

Numerics: the statistics are accumulated in float64 (the mean first, then the centred
sum of squares: no cancellation), each output element is computed in float64 and rounded
once to the array's dtype.  The kernels are compiled with ``fastmath={"reassoc", "nsz",
"contract"}`` so that the float64 sums vectorise (3x faster than in order); NaN and
infinity keep their IEEE meaning (no ``nnan`` / ``ninf``), so a diverged activation
still shows as NaN.  NumPy's float32 rules round after every operation, so the
two agree to a few units in the last place of float32 and to rounding in float64.

Shapes: ``x, dout, xhat, out, dx`` are ``(N, C, M)`` views (``M = H * W``) of
C-contiguous arrays, float32 or float64, one dtype; ``gamma``, ``beta``, ``inv_std``
``(C,)`` float; ``m = N * M`` values per channel.  Arguments arrive validated (Numba
does not bounds-check).

References: Ioffe & Szegedy 2015, Alg. 1 (forward) and Sec. 3 (backward).
"""

import numpy as np
from numba import njit, prange

__all__ = ["fusable", "batchnorm_train_forward", "batchnorm_train_backward"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def fusable(*arrays):
    """True when every array is a C-contiguous 4-D float32/float64 NumPy array, one dtype
    and one shape (else the NumPy rules run)."""
    a0 = arrays[0]
    for a in arrays:
        if (type(a) is not np.ndarray or a.ndim != 4 or a.dtype not in _FLOATS
                or a.dtype != a0.dtype or a.shape != a0.shape or not a.flags.c_contiguous):
            return False
    return a0.size > 0


@njit(cache=True, parallel=True, fastmath={"reassoc", "nsz", "contract"})
def _forward(x, gamma, beta, eps, xhat, out, mu, var, inv_std):
    N, C, M = x.shape
    m = N * M
    for c in prange(C):
        s = 0.0
        for n in range(N):
            for k in range(M):
                s += x[n, c, k]
        mean = s / m
        q = 0.0
        for n in range(N):
            for k in range(M):
                d = x[n, c, k] - mean
                q += d * d
        v = q / m
        r = 1.0 / np.sqrt(v + eps)
        g = np.float64(gamma[c])
        b = np.float64(beta[c])
        for n in range(N):
            for k in range(M):
                h = (x[n, c, k] - mean) * r
                xhat[n, c, k] = h
                out[n, c, k] = g * h + b
        mu[c] = mean
        var[c] = v
        inv_std[c] = r


def batchnorm_train_forward(x, gamma, beta, eps):
    """Train-mode batch norm of x (N, C, H, W): returns ``(out, xhat, mu, var, inv_std)``.

    ``mu``, ``var`` the batch mean and biased variance per channel, ``inv_std =
    1 / sqrt(var + eps)``, ``xhat = (x - mu) * inv_std``, ``out = gamma * xhat + beta``;
    out and xhat in x's dtype, the (C,) statistics too.
    """
    N, C = x.shape[:2]
    x3 = x.reshape(N, C, -1)
    xhat = np.empty_like(x)
    out = np.empty_like(x)
    stats = np.empty((3, C), dtype=np.float64)
    _forward(x3, np.asarray(gamma, dtype=np.float64), np.asarray(beta, dtype=np.float64),
             float(eps), xhat.reshape(N, C, -1), out.reshape(N, C, -1),
             stats[0], stats[1], stats[2])
    mu, var, inv_std = (s.astype(x.dtype) for s in stats)
    return out, xhat, mu, var, inv_std


@njit(cache=True, parallel=True, fastmath={"reassoc", "nsz", "contract"})
def _backward(dout, xhat, scale, dx, dgamma, dbeta):
    N, C, M = dout.shape
    m = N * M
    for c in prange(C):
        sb = 0.0
        sg = 0.0
        for n in range(N):
            for k in range(M):
                g = np.float64(dout[n, c, k])
                sb += g
                sg += g * xhat[n, c, k]
        f = scale[c] / m
        for n in range(N):
            for k in range(M):
                dx[n, c, k] = f * (m * np.float64(dout[n, c, k]) - sb - xhat[n, c, k] * sg)
        dgamma[c] = sg
        dbeta[c] = sb


def batchnorm_train_backward(dout, xhat, gamma, inv_std):
    """Train-mode gradients: returns ``(dx, dgamma, dbeta)`` for dout (N, C, H, W).

    ``dbeta = sum dout``, ``dgamma = sum dout * xhat`` per channel, ``dx = gamma *
    inv_std / m * (m * dout - dbeta - xhat * dgamma)``; dx in dout's dtype, the (C,)
    sums too.
    """
    N, C = dout.shape[:2]
    dx = np.empty_like(dout)
    sums = np.empty((2, C), dtype=np.float64)
    scale = (np.asarray(gamma, dtype=np.float64) * np.asarray(inv_std, dtype=np.float64))
    _backward(dout.reshape(N, C, -1), xhat.reshape(N, C, -1), scale, dx.reshape(N, C, -1),
              sums[0], sums[1])
    return dx, sums[0].astype(dout.dtype), sums[1].astype(dout.dtype)
