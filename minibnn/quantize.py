"""Quantizers: each forward rule sits next to the pseudo-gradient used to train through it.

A binarized network has no useful derivative (sign is flat almost everywhere), so every
quantizer here comes as a pair: the *forward rule* actually computed, and the
*pseudo-gradient* used in the backward pass in its place (the straight-through estimator,
STE).  The binary conventions -- sign(0) = +1 above all -- are written once in
:mod:`minibnn.kernels.bitpack`; :func:`sign` follows them, so a float +-1 array from here
packs to exactly the bits :func:`minibnn.kernels.pack` produces from the same input.

========================  ==========================================  ==========================
function                  forward rule                                pseudo-gradient
========================  ==========================================  ==========================
:func:`sign`              +1 if x >= 0 else -1                        (none: use the STE pair)
:func:`ste_sign_forward`  sign(x)                                     g * 1{|x| <= 1}
:func:`stochastic_sign`   +1 with probability hard_sigmoid(x)         same STE as ``sign``
:func:`hard_sigmoid`      clip((x + 1) / 2, 0, 1)                     (smooth a.e.)
:func:`ap2`               sign(x) * 2**round(log2|x|), ap2(0) = 0     identity (straight-through)
========================  ==========================================  ==========================

Shapes: every function is elementwise, ``(...)`` in -> ``(...)`` out.
Dtypes: +-1 outputs are float32 (exact, and they mix with float32 or float64 activations
without changing the other operand's dtype); :func:`hard_sigmoid` and :func:`ap2` keep the
input's float dtype.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016: Sec. 1.1 (Eq. 1
deterministic and Eq. 2 stochastic binarization), Sec. 1.3 (straight-through estimator),
Sec. 1.4 / Alg. 3 (shift-based batch normalization, AP2), Sec. 1.5 / Alg. 4 (shift-based
AdaMax, AP2).
"""

import numpy as np

from . import kernels
from .checks import real_array

__all__ = ["sign", "ste_sign_forward", "ste_sign_backward", "ste_mask", "hard_sigmoid",
           "stochastic_sign", "ap2"]


def sign(x):
    """Deterministic binarization (Eq. 1), sign(0) = +1.

    Forward rule: ``x_b = +1 if x >= 0 else -1`` (``-0.0`` counts as 0, so +1).
    Pseudo-gradient: none on its own -- train through :func:`ste_sign_forward` /
    :func:`ste_sign_backward`; weights binarized with ``sign`` pass their gradient
    straight through to the latent real weights (see :mod:`minibnn.functional`).

    Parameters
    ----------
    x : (...) real array, no NaN.

    Returns
    -------
    (...) float32 array of +1/-1.

    Raises ``ValueError`` on NaN (NaN has no sign; see :mod:`minibnn.kernels.bitpack`).

    References: Hubara et al. 2016, Sec. 1.1, Eq. 1.
    """
    # Numba kernels (weights of 16M entries are signed on every training step): one
    # parallel pass for the NaN check, then one for the signs
    return kernels.sign_f32(real_array(x))


def ste_mask(x):
    """The hard-tanh STE gate ``1{|x| <= 1}``: (...) real -> (...) bool.

    The gradient of the surrogate ``Htanh(x) = clip(x, -1, 1)``; ``|x| = 1`` counts as
    inside (the paper's ``1_{|r| <= 1}``).
    """
    return np.abs(x) <= 1


def ste_sign_forward(x):
    """sign with its straight-through estimator: forward half.

    Forward rule: ``out = sign(x)`` (sign(0) = +1).
    Pseudo-gradient (in :func:`ste_sign_backward`): ``g_in = g_out * 1{|x| <= 1}``, the
    derivative of hard-tanh; it cancels the gradient when ``|x|`` is large, which the
    paper found to help.

    Parameters
    ----------
    x : (...) float array, no NaN.

    Returns
    -------
    out : (...) float32 of +1/-1.
    cache : ``x`` itself (the backward needs only where ``|x| <= 1``).

    References: Hubara et al. 2016, Sec. 1.1 (Eq. 1), Sec. 1.3 (STE).
    """
    return sign(x), np.asarray(x)


def ste_sign_backward(dout, cache):
    """sign with its straight-through estimator: backward half.

    Forward rule (in :func:`ste_sign_forward`): ``out = sign(x)``.
    Pseudo-gradient: ``g_in = g_out * 1{|x| <= 1}``.

    Parameters
    ----------
    dout : (...) float, gradient of the loss w.r.t. ``sign(x)``.
    cache : from :func:`ste_sign_forward`, ``x`` of the same shape.

    Returns
    -------
    dx : (...) with dout's dtype.

    References: Hubara et al. 2016, Sec. 1.3.
    """
    x = cache
    dout = np.asarray(dout)
    return dout * ste_mask(x).astype(dout.dtype)


def hard_sigmoid(x):
    """``hard_sigmoid(x) = clip((x + 1) / 2, 0, 1)``: (...) real -> (...) float.

    The probability of +1 in :func:`stochastic_sign`; float dtypes are kept, integers
    give float64.

    References: Hubara et al. 2016, Sec. 1.1, Eq. 3.
    """
    x = real_array(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return np.clip((x + 1) * x.dtype.type(0.5), 0, 1)


def stochastic_sign(x, rng):
    """Stochastic binarization (Eq. 2).

    Forward rule: ``x_b = +1`` with probability ``p = hard_sigmoid(x)``, else ``-1``;
    drawn as ``u < p`` with ``u ~ U[0, 1)`` from ``rng`` (so ``x <= -1`` always gives -1
    and ``x >= 1`` always +1).
    Pseudo-gradient: the same hard-tanh STE as :func:`sign`, ``g_in = g_out * 1{|x| <= 1}``
    (use :func:`ste_sign_backward` with ``x`` as cache).

    Parameters
    ----------
    x : (...) real array, no NaN.
    rng : ``numpy.random.Generator`` (explicit, so a fixed seed gives fixed draws).

    Returns
    -------
    (...) float32 of +1/-1.

    References: Hubara et al. 2016, Sec. 1.1, Eq. 2-3.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"stochastic_sign needs a numpy.random.Generator, got {type(rng).__name__}")
    x = real_array(x)
    if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
        raise ValueError("stochastic_sign: input contains NaN, which has no sign")
    p = hard_sigmoid(x)
    u = rng.random(x.shape)
    return np.where(u < p, np.float32(1.0), np.float32(-1.0))


def ap2(x):
    """Approximate power of 2: ``ap2(x) = sign(x) * 2**round(log2|x|)``, ``ap2(0) = 0``.

    Forward rule: the power of two nearest to ``|x|`` in the log domain, with x's sign
    (here sign is the ordinary one: ``ap2(-0.0) = ap2(0) = 0``).  Multiplying by it is a
    bit shift in fixed-point hardware, which is the point of shift-based BN and AdaMax.
    ``round`` never meets a tie: ``log2|x| = k + 1/2`` needs ``|x| = 2**k * sqrt(2)``,
    which no float is, so the result is the exact nearest power, computed with
    ``frexp`` (no floating-point log2 whose rounding could land on the wrong side).
    Non-finite values pass through, as the formula gives them: ``ap2(+-inf) = +-inf``
    and ``ap2(NaN) = NaN`` -- a diverged statistic or moment stays visible to the
    callers' NaN checks instead of becoming a harmless-looking 0.  The largest floats
    round up to ``2**(max exponent + 1)``, which overflows to inf.
    Pseudo-gradient: identity (straight-through) -- see
    :func:`minibnn.functional.shift_batchnorm_backward`.

    Parameters
    ----------
    x : (...) real array.

    Returns
    -------
    (...) float with x's float dtype (integers give float64).

    References: Hubara et al. 2016, Sec. 1.4, Alg. 3 (shift-based BN) and Sec. 1.5, Alg. 4
    (shift-based AdaMax); Courbariaux's BinaryNet code (``AP2``).
    """
    x = real_array(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    # |x| = f * 2**e with f in [0.5, 1); round(log2|x|) is e when f >= sqrt(1/2), else
    # e - 1 (float64(sqrt(1/2)) lies above the true value, and no f falls in between)
    f, e = np.frexp(np.abs(x))
    e = e - (f < np.sqrt(0.5))
    with np.errstate(over="ignore"):
        mag = np.ldexp(np.ones_like(x), e)
    out = np.copysign(mag, x)
    out = np.where(x == 0, np.zeros_like(x), out)          # frexp(0) = (0, 0)
    return np.where(np.isfinite(x), out, x).astype(x.dtype, copy=False)
