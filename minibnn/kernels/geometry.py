"""Convolution and pooling geometry: the one home of the output-size formula and of the
zero-padding correction, shared by every backend (and by the float layers).

Shapes: an input plane ``H x W``, a ``KH x KW`` window moved by ``stride`` over the input
zero-padded by ``padding`` on every side; ``H' = (H + 2 * padding - KH) // stride + 1``
(floor mode, likewise ``W'``).  Max pooling is the same formula with ``padding = 0``.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 3; convention 6
(zero padding of a packed convolution) is in :mod:`minibnn.kernels.bitpack`.
"""

import numpy as np

__all__ = ["conv_output_size", "check_conv_geometry", "padding_correction", "MAX_PLANE"]

#: largest padded input plane or output plane (pixels) a kernel accepts: 2**31 - 1,
#: i.e. about 46k x 46k.  Anything bigger is a mistake (``padding=10**9``) that would
#: otherwise surface as NumPy's "array is too big" or an allocation of terabytes.
MAX_PLANE = 2 ** 31 - 1


def conv_output_size(size, kernel, stride, padding):
    """Output length of a convolution: ``(size + 2 * padding - kernel) // stride + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def check_conv_geometry(H, W, KH, KW, stride, padding, where="binary_conv2d",
                        what="kernel"):
    """``(H', W')`` of a validated geometry, else ``ValueError`` naming the problem.

    H, W, KH, KW : int >= 1; stride : int >= 1; padding : int >= 0 (already type-checked).
    Raises when the window is larger than the padded input (``H' < 1``) or when the padded
    input or the output plane exceeds :data:`MAX_PLANE` pixels (a huge ``padding``).
    """
    Hp, Wp = H + 2 * padding, W + 2 * padding
    if Hp * Wp > MAX_PLANE:
        raise ValueError(f"{where}: padding={padding} makes the padded input {Hp}x{Wp} "
                         f"({Hp * Wp} pixels per plane, the limit is {MAX_PLANE})")
    Ho = conv_output_size(H, KH, stride, padding)
    Wo = conv_output_size(W, KW, stride, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{where}: {what} {KH}x{KW} larger than the padded input {Hp}x{Wp} "
                         f"(padding={padding})")
    return Ho, Wo


def padding_correction(w_sign_sums, H, W, stride, padding, Ho, Wo):
    """Border correction of a packed convolution with zero padding (convention 6).

    ``w_sign_sums``: (F, KH, KW) int = sum over channels of sign(w).  Border pixels were
    packed as +1, so each tap that fell on the border added ``S[f, kh, kw]`` where a zero
    adds nothing.  Returns ``(qs, corr)``: ``qs`` (B,) int64 the flat output positions
    ``oh * Wo + ow`` that touch the border, ``corr`` (B, F) int32 what to subtract there.
    Used by the CPU and the CUDA backends alike.
    """
    F, KH, KW = w_sign_sums.shape
    ih = np.arange(Ho)[:, None] * stride + np.arange(KH)[None, :] - padding   # (Ho, KH)
    iw = np.arange(Wo)[:, None] * stride + np.arange(KW)[None, :] - padding   # (Wo, KW)
    out_h = (ih < 0) | (ih >= H)
    out_w = (iw < 0) | (iw >= W)
    on_border = out_h[:, None, :, None] | out_w[None, :, None, :]             # (Ho, Wo, KH, KW)
    on_border = on_border.reshape(Ho * Wo, KH * KW)
    qs = np.flatnonzero(on_border.any(axis=1))
    corr = on_border[qs].astype(np.int32) @ w_sign_sums.reshape(F, KH * KW).T.astype(np.int32)
    return qs, np.ascontiguousarray(corr, dtype=np.int32)
