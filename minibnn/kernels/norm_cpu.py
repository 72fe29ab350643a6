"""Fused CPU kernels (numba.njit, parallel over channels) of batch normalization.

The readable text of both rules is :func:`minibnn.functional.batchnorm_forward` /
:func:`~minibnn.functional.batchnorm_backward` (NumPy), which are also their slow twins:
``tests/test_train_kernels.py`` compares them.  Why: in NumPy a train-mode forward makes
about eight passes over a ``(N, C, H, W)`` activation (mean, variance, ``x - mu``, the
scaling, ``gamma * x_hat``, ``+ beta``, with temporaries) and the backward about ten;
for the ConvNets these passes were ~10% of a training step.  Here each direction is two
or three passes per channel, with the channel's ``N * H * W`` values (one contiguous run
of ``H * W`` per image) still in cache between them.  Dense inputs ``(N, D)`` take
kernels of their own (``_forward_rows`` / ``_backward_rows``): a feature's values are
strided there, so each thread takes a block of :data:`ROW_BLOCK` adjacent features and
walks the rows, contiguous and vectorised along the block (MLP 3x1024, batch 100: the
three BatchNorms' forward + backward 1.2 -> 0.2 ms of an 8.5 ms step).

Numerics: the statistics are accumulated in float64 (the mean first, then the centred
sum of squares: no cancellation), each output element is computed in float64 and rounded
once to the array's dtype.  The kernels are compiled with ``fastmath={"reassoc", "nsz",
"contract"}`` so that the float64 sums vectorise (3x faster than in order); NaN and
infinity keep their IEEE meaning (no ``nnan`` / ``ninf``), so a diverged activation
still shows as NaN.  NumPy's float32 rules round after every operation, so the
two agree to a few units in the last place of float32 and to rounding in float64.

Shapes: ``x, dout, xhat, out, dx`` are ``(N, C, M)`` views (``M = H * W``) of
C-contiguous arrays, or ``(N, D)`` arrays for the row kernels, float32 or float64, one
dtype; ``gamma``, ``beta``, ``inv_std`` ``(C,)`` / ``(D,)`` float; ``m = N * M`` (or
``N``) values per feature.  Arguments arrive validated (Numba does not bounds-check).

References: Ioffe & Szegedy 2015, Alg. 1 (forward) and Sec. 3 (backward).
"""

import numpy as np
from numba import njit, prange

__all__ = ["fusable", "batchnorm_train_forward", "batchnorm_train_backward"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


#: adjacent features per task of the (N, D) kernels: 256 float64 accumulators per
#: statistic stay in L1, and D = 1024..4096 still gives every thread several tasks
ROW_BLOCK = 256


def fusable(*arrays):
    """True when every array is a C-contiguous 4-D (N, C, H, W) or 2-D (N, D)
    float32/float64 NumPy array, one dtype and one shape (else the NumPy rules run)."""
    a0 = arrays[0]
    for a in arrays:
        if (type(a) is not np.ndarray or a.ndim not in (2, 4) or a.dtype not in _FLOATS
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


@njit(cache=True, parallel=True, fastmath={"reassoc", "nsz", "contract"})
def _forward_rows(x, gamma, beta, eps, xhat, out, mu, var, inv_std):
    # Per task a block of w adjacent features; accumulators are task-local arrays and
    # rows are walked through slices indexed from 0 -- written with the (C,) output
    # arrays as accumulators the loops did not vectorise (8x slower).
    N, D = x.shape
    for blk in prange((D + ROW_BLOCK - 1) // ROW_BLOCK):
        d0 = blk * ROW_BLOCK
        w = min(D, d0 + ROW_BLOCK) - d0
        m = np.zeros(w)
        v = np.zeros(w)
        for n in range(N):                      # pass 1: sums -> means
            xr = x[n, d0:d0 + w]
            for k in range(w):
                m[k] += xr[k]
        for k in range(w):
            m[k] /= N
        for n in range(N):                      # pass 2: centred squares -> variance
            xr = x[n, d0:d0 + w]
            for k in range(w):
                t = xr[k] - m[k]
                v[k] += t * t
        r = np.empty(w)
        for k in range(w):
            v[k] /= N
            r[k] = 1.0 / np.sqrt(v[k] + eps)
        g = gamma[d0:d0 + w]
        b = beta[d0:d0 + w]
        for n in range(N):                      # pass 3: normalise, scale, shift
            xr = x[n, d0:d0 + w]
            hr = xhat[n, d0:d0 + w]
            orow = out[n, d0:d0 + w]
            for k in range(w):
                h = (xr[k] - m[k]) * r[k]
                hr[k] = h
                orow[k] = g[k] * h + b[k]
        mu[d0:d0 + w] = m
        var[d0:d0 + w] = v
        inv_std[d0:d0 + w] = r


def batchnorm_train_forward(x, gamma, beta, eps):
    """Train-mode batch norm of x (N, C, H, W) or (N, D): returns ``(out, xhat, mu,
    var, inv_std)``.

    ``mu``, ``var`` the batch mean and biased variance per channel (feature), ``inv_std
    = 1 / sqrt(var + eps)``, ``xhat = (x - mu) * inv_std``, ``out = gamma * xhat +
    beta``; out and xhat in x's dtype, the (C,) statistics too.
    """
    N, C = x.shape[:2]
    xhat = np.empty_like(x)
    out = np.empty_like(x)
    stats = np.empty((3, C), dtype=np.float64)
    g64, b64 = np.asarray(gamma, dtype=np.float64), np.asarray(beta, dtype=np.float64)
    if x.ndim == 2:
        _forward_rows(x, g64, b64, float(eps), xhat, out, stats[0], stats[1], stats[2])
    else:
        _forward(x.reshape(N, C, -1), g64, b64, float(eps), xhat.reshape(N, C, -1),
                 out.reshape(N, C, -1), stats[0], stats[1], stats[2])
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


@njit(cache=True, parallel=True, fastmath={"reassoc", "nsz", "contract"})
def _backward_rows(dout, xhat, scale, dx, dgamma, dbeta):
    # the layout of _forward_rows: task-local sums over a block of w features
    N, D = dout.shape
    for blk in prange((D + ROW_BLOCK - 1) // ROW_BLOCK):
        d0 = blk * ROW_BLOCK
        w = min(D, d0 + ROW_BLOCK) - d0
        sb = np.zeros(w)
        sg = np.zeros(w)
        for n in range(N):
            gr = dout[n, d0:d0 + w]
            hr = xhat[n, d0:d0 + w]
            for k in range(w):
                g = np.float64(gr[k])
                sb[k] += g
                sg[k] += g * hr[k]
        f = scale[d0:d0 + w] / N
        for n in range(N):
            gr = dout[n, d0:d0 + w]
            hr = xhat[n, d0:d0 + w]
            dr = dx[n, d0:d0 + w]
            for k in range(w):
                dr[k] = f[k] * (N * np.float64(gr[k]) - sb[k] - hr[k] * sg[k])
        dgamma[d0:d0 + w] = sg
        dbeta[d0:d0 + w] = sb


def batchnorm_train_backward(dout, xhat, gamma, inv_std):
    """Train-mode gradients: returns ``(dx, dgamma, dbeta)`` for dout (N, C, H, W) or
    (N, D).

    ``dbeta = sum dout``, ``dgamma = sum dout * xhat`` per channel, ``dx = gamma *
    inv_std / m * (m * dout - dbeta - xhat * dgamma)``; dx in dout's dtype, the (C,)
    sums too.
    """
    N, C = dout.shape[:2]
    dx = np.empty_like(dout)
    sums = np.empty((2, C), dtype=np.float64)
    scale = (np.asarray(gamma, dtype=np.float64) * np.asarray(inv_std, dtype=np.float64))
    if dout.ndim == 2:
        _backward_rows(dout, xhat, scale, dx, sums[0], sums[1])
    else:
        _backward(dout.reshape(N, C, -1), xhat.reshape(N, C, -1), scale,
                  dx.reshape(N, C, -1), sums[0], sums[1])
    return dx, sums[0].astype(dout.dtype), sums[1].astype(dout.dtype)
