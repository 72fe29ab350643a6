"""Max pooling forward/backward compiled with ``numba.njit``: the one max-pool
implementation, for float activations (training, the float layers) and for the packed
model's int32 sums alike (:func:`minibnn.kernels.maxpool2d`; the forward is generic in
the dtype, see :data:`DTYPES`).

NumPy's version (:func:`minibnn.kernels.reference.maxpool2d` /
:func:`~minibnn.kernels.reference.maxpool2d_backward`) builds a ``(k*k, N, C, H', W')``
array of window taps and reduces it: clear, but it copies the input k*k/stride^2 times
and was ~10% of a CIFAR-10 training step.  These kernels make one pass per image plane.

Layout: ``x (N, C, H, W)``, windows ``k x k`` at stride ``s``, no padding (floor mode),
``H' = (H - k) // s + 1``, ``arg (N, C, H', W') int32`` the winning tap ``a * k + b``.
Ties go to the first window position in row-major order (``np.argmax``'s rule).
Arguments arrive validated and C-contiguous (:func:`minibnn.functional.maxpool2d_forward`,
:func:`minibnn.kernels.maxpool2d`).
"""

import numpy as np
from numba import njit, prange

from .geometry import conv_output_size

#: dtypes the forward kernel is used for (others go to the NumPy twin)
DTYPES = tuple(np.dtype(d) for d in (np.float32, np.float64, np.int32, np.int64))


@njit(cache=True, parallel=True)
def maxpool_into(x, k, s, out, arg):
    """x (N, C, H, W) -> out (N, C, H', W') window maxima, arg (N, C, H', W') int32 the
    tap index ``a * k + b`` of the first maximum in each window."""
    N, C, Ho, Wo = out.shape
    for p in prange(N * C):            # one image plane per iteration
        n = p // C
        c = p - n * C
        for i in range(Ho):
            for j in range(Wo):
                best = x[n, c, i * s, j * s]
                t = 0
                for a in range(k):
                    for b in range(k):
                        v = x[n, c, i * s + a, j * s + b]
                        if v > best:   # strict: ties keep the earlier tap
                            best = v
                            t = a * k + b
                out[n, c, i, j] = best
                arg[n, c, i, j] = t
    return out


@njit(cache=True, parallel=True)
def maxpool_backward_into(dout, arg, k, s, dx):
    """dx (N, C, H, W), zeroed here, receives each dout entry at its window's argmax."""
    N, C, Ho, Wo = dout.shape
    for p in prange(N * C):            # planes are independent: no write races
        n = p // C
        c = p - n * C
        dx[n, c] = 0.0
        for i in range(Ho):
            for j in range(Wo):
                t = arg[n, c, i, j]
                a = t // k
                dx[n, c, i * s + a, j * s + t - a * k] += dout[n, c, i, j]
    return dx


def maxpool2d(x, k, s):
    """x (N, C, H, W) C-contiguous, a dtype of :data:`DTYPES` -> (out (N, C, H', W') x's
    dtype, arg int32 same shape)."""
    N, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, k, s, 0), conv_output_size(W, k, s, 0)
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    arg = np.empty((N, C, Ho, Wo), dtype=np.int32)
    if out.size:
        maxpool_into(x, k, s, out, arg)
    return out, arg


def maxpool2d_backward(dout, arg, x_shape, k, s):
    """dout, arg (N, C, H', W') C-contiguous -> dx (N, C, H, W), dout's dtype."""
    dx = np.zeros(x_shape, dtype=dout.dtype)
    if dout.size:
        maxpool_backward_into(dout, arg, k, s, dx)
    return dx
