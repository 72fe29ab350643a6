"""Fused CPU kernels (numba.njit, parallel) of the optimizer update rules.

The readable text of every rule is the NumPy function of the same name in
:mod:`minibnn.optim` (``adam_update``, ``adamax_update``, ``sgd_update``,
``shift_adamax_update``); the kernels here
compute exactly the same float64 expressions, in the same order, in one pass over the
arrays.  Why: the NumPy form of an Adam step makes about ten passes over each weight
array (temporaries for ``(1 - b1) * g``, ``g * g``, ``sqrt(v)``, the quotient, then the
clip), which for the paper's 3x4096 MLP is the largest single cost of a training step; a
kernel reads ``p, g, m, v`` once and writes ``p, m, v`` once, with the clip folded in.

Numerics: each element is loaded, widened to float64, updated in float64 registers and
rounded once to the array's dtype when stored -- like the readable rules, which compute on
float64 copies.  Numba compiles without fast-math (no reassociation, no fused
multiply-add), ``sqrt`` and ``/`` are correctly rounded and the bias corrections use the
same libm ``pow`` as Python, so the two agree to the last bit in practice; the tests allow
one unit in the last place of the stored dtype.

The module contract (a device twin, :mod:`minibnn.kernels.optim_cuda`, registered in
:data:`minibnn.dispatch.TWINS`, exports the same names with the same signatures for
numba.cuda device arrays; the optimizer picks the module with
``dispatch.twin(optim_cpu, param, grad)``):

* ``fusable(*arrays) -> bool`` -- True when the kernels can update these arrays in place;
* ``count_nonfinite(g) -> int`` -- number of NaN/inf entries of a float array;
* ``count_nonfinite_many(grads) -> list[int]`` -- ``count_nonfinite`` of each array of the
  sequence ``grads``, in order: the optimizer checks a whole step's gradients with one call
  per kernel module (on the device, one copy back for all of them);
* ``zeros_like(a)``, ``to_host(a)`` (a NumPy copy), ``from_host(x)`` (a copy in this
  module's memory) -- state arrays;
* ``adam_update``, ``adamax_update``, ``sgd_update``, ``shift_adamax_update`` -- the
  rules, in place, returning None.  A twin may add ``bop_update`` (same signature as the
  readable function in :mod:`minibnn.optim`); on the host that rule runs as NumPy.

Shapes and dtypes: ``p, g, m, v, u, buf`` are same-shape (any shape, size ``n``)
C-contiguous float32 or float64 arrays (``g`` may differ in float dtype); scalars are
Python floats, ``t`` a Python int >= 1, ``clip`` a bool.  Numba does not bounds-check:
:func:`fusable` (and :mod:`minibnn.optim`'s validation before it) is the guard.

References
----------
Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Alg. 1 and 2.
Hubara et al., "Binarized Neural Networks", NIPS 2016, Alg. 1 (clipping).
"""

import math

import numpy as np
from numba import njit, prange

__all__ = ["fusable", "count_nonfinite", "count_nonfinite_many", "zeros_like", "to_host",
           "from_host", "adam_update", "adamax_update", "sgd_update", "shift_adamax_update"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_SQRT_HALF = math.sqrt(0.5)         # the same float64 as np.sqrt(0.5) in minibnn.quantize.ap2


def fusable(*arrays):
    """True when every array is a C-contiguous float32/float64 NumPy array of one shape.

    Then a kernel can update them in place through flat indexing; otherwise (a strided
    view, another dtype, a shape mismatch) the optimizer runs the readable NumPy rule.
    ``None`` entries (an unused state array) are skipped.
    """
    shape = None
    for a in arrays:
        if a is None:
            continue
        if type(a) is not np.ndarray or a.dtype not in _FLOATS or not a.flags.c_contiguous:
            return False
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            return False
    return shape is not None


@njit(cache=True, parallel=True)
def _count_nonfinite_flat(g):
    bad = 0
    for i in prange(g.size):
        if not np.isfinite(g[i]):
            bad += 1
    return bad


def count_nonfinite(g):
    """Number of NaN/+-inf entries of ``g`` (any shape; 0 for non-float dtypes).

    One parallel pass for large contiguous float arrays (the gradients of a big layer);
    NumPy's ``isfinite`` otherwise.
    """
    if g.dtype.kind != "f":
        return 0
    if g.flags.c_contiguous and g.size > 4096:
        return int(_count_nonfinite_flat(g.reshape(-1)))
    return int(g.size - np.count_nonzero(np.isfinite(g)))


def count_nonfinite_many(grads):
    """``[count_nonfinite(g) for g in grads]`` (a list of ints, one per array, in order).

    The contract's batched check: on the host a loop is as fast as anything; the device
    twin counts every array into one counter array and copies it back once.
    """
    return [count_nonfinite(g) for g in grads]


def zeros_like(a):
    """A C-contiguous zero array with ``a``'s shape and dtype (a fresh state slot)."""
    return np.zeros(a.shape, dtype=a.dtype)


def to_host(a):
    """A NumPy copy of ``a`` (for state dicts)."""
    return np.array(a, copy=True)


def from_host(x):
    """A C-contiguous copy of the NumPy array ``x`` (state loaded from a state dict)."""
    return np.array(x, copy=True, order="C")


@njit(cache=True, parallel=True)
def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, clip):
    """Fused twin of :func:`minibnn.optim.adam_update` (one pass, float64 registers)."""
    a_t = lr * math.sqrt(1.0 - beta2 ** float(t)) / (1.0 - beta1 ** float(t))
    # flat views, one per statement: with parallel=True, numba 0.68 dropped the writes
    # through views unpacked from a tuple (pf, gf = p.reshape(n), g.reshape(n))
    pf = p.reshape(p.size)
    gf = g.reshape(g.size)
    mf = m.reshape(m.size)
    vf = v.reshape(v.size)
    for i in prange(pf.size):
        gi = np.float64(gf[i])
        mi = beta1 * np.float64(mf[i]) + (1.0 - beta1) * gi
        vi = beta2 * np.float64(vf[i]) + (1.0 - beta2) * gi * gi
        w = np.float64(pf[i]) - a_t * mi / (math.sqrt(vi) + eps)
        if clip:
            w = min(1.0, max(-1.0, w))
        mf[i] = mi
        vf[i] = vi
        pf[i] = w


@njit(cache=True, parallel=True)
def adamax_update(p, g, m, u, lr, beta1, beta2, eps, t, clip):
    """Fused twin of :func:`minibnn.optim.adamax_update` (one pass, float64 registers)."""
    step = lr / (1.0 - beta1 ** float(t))
    pf = p.reshape(p.size)
    gf = g.reshape(g.size)
    mf = m.reshape(m.size)
    uf = u.reshape(u.size)
    for i in prange(pf.size):
        gi = np.float64(gf[i])
        mi = beta1 * np.float64(mf[i]) + (1.0 - beta1) * gi
        ui = max(beta2 * np.float64(uf[i]), abs(gi))
        w = np.float64(pf[i]) - step * mi / (ui + eps)
        if clip:
            w = min(1.0, max(-1.0, w))
        mf[i] = mi
        uf[i] = ui
        pf[i] = w


@njit(cache=True, parallel=True)
def _sgd_plain(p, g, lr, clip):
    pf = p.reshape(p.size)
    gf = g.reshape(g.size)
    for i in prange(pf.size):
        w = np.float64(pf[i]) - lr * np.float64(gf[i])
        if clip:
            w = min(1.0, max(-1.0, w))
        pf[i] = w


@njit(cache=True, parallel=True)
def _sgd_momentum(p, g, buf, lr, momentum, nesterov, clip):
    pf = p.reshape(p.size)
    gf = g.reshape(g.size)
    bf = buf.reshape(buf.size)
    for i in prange(pf.size):
        gi = np.float64(gf[i])
        bi = momentum * np.float64(bf[i]) + gi
        d = gi + momentum * bi if nesterov else bi
        w = np.float64(pf[i]) - lr * d
        if clip:
            w = min(1.0, max(-1.0, w))
        bf[i] = bi
        pf[i] = w


def sgd_update(p, g, buf, lr, momentum, nesterov, clip):
    """Fused twin of :func:`minibnn.optim.sgd_update` (``buf`` is None when momentum is 0)."""
    if momentum == 0.0:
        _sgd_plain(p, g, lr, clip)
    else:
        _sgd_momentum(p, g, buf, lr, momentum, nesterov, clip)


@njit(cache=True)
def _ap2_nonnegative(x):
    """:func:`minibnn.quantize.ap2` of one finite ``x >= 0``, exactly: ``x = f * 2**e`` with
    ``f`` in [0.5, 1) rounds to ``2**e`` when ``f >= sqrt(1/2)``, else to ``2**(e - 1)``."""
    if x == 0.0:
        return 0.0
    f, e = math.frexp(x)
    if f < _SQRT_HALF:
        e -= 1
    return math.ldexp(1.0, e)


@njit(cache=True, parallel=True)
def shift_adamax_update(p, g, m, v, lr, beta1, beta2, eps, t, clip):
    """Fused twin of :func:`minibnn.optim.shift_adamax_update` (one pass, float64 registers).

    ``lr >= 0``, ``eps > 0`` and finite gradients (checked by the optimizer) keep both AP2
    arguments finite and >= 0, the only case :func:`_ap2_nonnegative` handles.
    """
    alpha = _ap2_nonnegative(lr / (1.0 - beta1 ** float(t)))
    pf = p.reshape(p.size)
    gf = g.reshape(g.size)
    mf = m.reshape(m.size)
    vf = v.reshape(v.size)
    for i in prange(pf.size):
        gi = np.float64(gf[i])
        mi = beta1 * np.float64(mf[i]) + (1.0 - beta1) * gi
        vi = max(beta2 * np.float64(vf[i]), abs(gi))
        w = np.float64(pf[i]) - alpha * _ap2_nonnegative(1.0 / (vi + eps)) * mi
        if clip:
            w = min(1.0, max(-1.0, w))
        mf[i] = mi
        vf[i] = vi
        pf[i] = w
