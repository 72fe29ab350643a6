"""Float im2col / col2im for the convolution backward, compiled with ``numba.njit``.

The training backward of every convolution (binary or float) is two float GEMMs around an
unfolding of the input (Hubara et al. 2016, Sec. 1.3: gradients are computed in float
against ``sign(w)``)::

    cols = im2col(x)                    # (N * H' * W', C * KH * KW)
    dw   = dout_rows.T @ cols           # (F, C * KH * KW)
    dx   = col2im(dout_rows @ w_mat)    # (N, C, H, W)

The GEMMs go to BLAS; these two kernels replace NumPy's strided copies, which were the
larger part of the backward time on small images (measured in
``benchmarks/bench_train.py --conv``): one window walk (:func:`_unfold`) serves both, a
parallel pass per image that writes (im2col) or reads (col2im) each row of ``cols``
contiguously; col2im scatters into one image at a time (its gradient stays in cache, and
images are independent, so the ``prange`` over images has no write races).

Both are exact twins of :func:`minibnn.kernels.reference.im2col` /
:func:`~minibnn.kernels.reference.col2im`: im2col is a copy (bit-identical); col2im adds
the same terms per pixel, in window order instead of tap order, so float results agree to
rounding (tests/test_kernels.py compares them).

Layout (both functions): ``x: (N, C, H, W)``, ``cols: (N * H' * W', C * KH * KW)``, row
``(n * H' + i) * W' + j`` = window with top-left corner ``(i * stride - padding,
j * stride - padding)``, columns in ``(c, kh, kw)`` order (that of
``w.reshape(F, C * KH * KW)``); taps outside the image read as 0 (zero padding).
``H' = (H + 2 * padding - KH) // stride + 1`` (same for W').  Arguments arrive validated
and C-contiguous (:func:`minibnn.functional.im2col` checks them).
"""

import numpy as np
from numba import njit, prange

from .geometry import conv_output_size


@njit(cache=True, parallel=True)
def _unfold(x, cols, kh, kw, stride, padding, Ho, Wo, adjoint):
    """The one window walk behind both directions, ``prange`` over images.

    ``adjoint=False`` (im2col): ``cols[row, col] = x[n, c, y, x']`` (0 outside the image).
    ``adjoint=True`` (col2im): ``x`` is zeroed, then ``x[n, c, y, x'] += cols[row, col]``;
    each image's pixels are written by its own iteration only, so there is no race.
    x (N, C, H, W), cols (N * Ho * Wo, C * kh * kw), same float dtype.
    """
    N, C, H, W = x.shape
    for n in prange(N):
        if adjoint:
            x[n] = 0.0
        for i in range(Ho):
            y0 = i * stride - padding
            for j in range(Wo):
                row = (n * Ho + i) * Wo + j
                x0 = j * stride - padding
                col = 0
                for c in range(C):
                    for a in range(kh):
                        y = y0 + a
                        inside_y = 0 <= y < H
                        for b in range(kw):
                            xx = x0 + b
                            inside = inside_y and 0 <= xx < W
                            if adjoint:
                                if inside:
                                    x[n, c, y, xx] += cols[row, col]
                            elif inside:
                                cols[row, col] = x[n, c, y, xx]
                            else:
                                cols[row, col] = 0.0
                            col += 1


def im2col(x, kh, kw, stride, padding):
    """Unfold x (N, C, H, W) float32/float64 C-contiguous -> (N*H'*W', C*kh*kw), x's dtype."""
    N, C, H, W = x.shape
    Ho = conv_output_size(H, kh, stride, padding)
    Wo = conv_output_size(W, kw, stride, padding)
    cols = np.empty((N * Ho * Wo, C * kh * kw), dtype=x.dtype)
    if cols.size:
        _unfold(x, cols, kh, kw, stride, padding, Ho, Wo, False)
    return cols


def col2im(cols, x_shape, kh, kw, stride, padding):
    """Adjoint of :func:`im2col`: cols (N*H'*W', C*kh*kw) C-contiguous -> (N, C, H, W)."""
    N, C, H, W = x_shape
    Ho = conv_output_size(H, kh, stride, padding)
    Wo = conv_output_size(W, kw, stride, padding)
    out = np.zeros((N, C, H, W), dtype=cols.dtype)
    if cols.size:
        _unfold(out, cols, kh, kw, stride, padding, Ho, Wo, True)
    return out
