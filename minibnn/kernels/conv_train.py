"""Cache-tiled convolution backward: transposed im2col / col2im on a few images at a time.

The backward of a convolution is two float GEMMs around an unfolding of its input
(Hubara et al. 2016, Sec. 1.3: the gradients are computed in float against sign(w))::

    dw = dout_rows.T @ im2col(x)              # (F, C*KH*KW)
    dx = col2im(dout_rows @ w_mat)            # (N, C, H, W)

Materialised for a whole batch, ``im2col(x)`` and ``dout_rows @ w_mat`` are each
``N*H'*W' x C*KH*KW`` floats (118 MB for 64 channels, 32x32, batch 50): writing and
re-reading them took as long as the GEMMs.  Here the batch is cut into blocks of images
whose unfolding fits in the caches (about 1 MB), and each block runs both GEMMs on its
own unfolding while it is still in cache.  The block layout is the transpose of im2col's
-- one row per ``(c, kh, kw)`` tap, one column per output position -- so both kernels
below walk image rows contiguously (vectorisable) and the GEMMs read the dout block of a
single image in place (``dout[n].reshape(F, H'*W')``, no copy)::

    cols_t = im2col_t(x[n0:n1])                    # (C*KH*KW, nb*H'*W')
    dw    += dout_t @ cols_t.T                     # dout_t (F, nb*H'*W')
    dx[n0:n1] = col2im_t(w_mat.T @ dout_t)

Twins: :func:`im2col_t` is ``reference.im2col(x).T`` (a copy, bit-identical);
:func:`col2im_t` is ``reference.col2im(cols_t.T)`` (the same terms added per pixel in
another order, equal to rounding); :func:`conv_backward` is the untiled formula above
(``functional.conv2d_backward`` computes it with the full im2col), equal to rounding.
``tests/test_train_kernels.py`` checks all three.

Layout: ``x (N, C, H, W)``; ``cols_t (C*KH*KW, nb*H'*W')`` with row ``(c*KH + a)*KW + b``
and column ``(n - n0)*H'*W' + i*W' + j`` holding ``x[n, c, i*stride - padding + a,
j*stride - padding + b]`` (0 outside the image); ``H' = (H + 2*padding - KH) // stride +
1``.  Arguments arrive validated and C-contiguous (:mod:`minibnn.functional` checks
them; Numba does not bounds-check).
"""

import numpy as np
from numba import njit, prange

from .geometry import conv_output_size

__all__ = ["im2col_t", "col2im_t", "conv_backward", "block_images"]

#: bytes of one block's unfolding: about the L2 of one core (1 MB on the Zen 4 this was
#: tuned on), so that the block's GEMMs read it from cache
BLOCK_BYTES = 1 << 20


@njit(cache=True, parallel=True)
def _im2col_t(x, n0, nb, kh, kw, stride, padding, Ho, Wo, cols):
    """cols (C*kh*kw, nb*Ho*Wo) <- transposed im2col of x[n0:n0+nb]; prange over taps."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    P = Ho * Wo
    for r in prange(C * kh * kw):
        c = r // (kh * kw)
        a = (r // kw) % kh
        b = r % kw
        for m in range(nb):
            n = n0 + m
            base = m * P
            for i in range(Ho):
                y = i * stride - padding + a
                q = base + i * Wo
                if y < 0 or y >= H:
                    for j in range(Wo):
                        cols[r, q + j] = 0.0
                    continue
                for j in range(Wo):
                    xx = j * stride - padding + b
                    if 0 <= xx < W:
                        cols[r, q + j] = x[n, c, y, xx]
                    else:
                        cols[r, q + j] = 0.0


@njit(cache=True, parallel=True)
def _col2im_t(cols, n0, nb, kh, kw, stride, padding, Ho, Wo, dx):
    """dx[n0:n0+nb] <- adjoint of :func:`_im2col_t` (zeroed, then summed); prange over
    the (image, channel) planes, each written by its own iteration only (no races)."""
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    P = Ho * Wo
    for t in prange(nb * C):
        m = t // C
        c = t % C
        n = n0 + m
        dx[n, c] = 0.0
        base = m * P
        for a in range(kh):
            for b in range(kw):
                r = (c * kh + a) * kw + b
                for i in range(Ho):
                    y = i * stride - padding + a
                    if y < 0 or y >= H:
                        continue
                    q = base + i * Wo
                    for j in range(Wo):
                        xx = j * stride - padding + b
                        if 0 <= xx < W:
                            dx[n, c, y, xx] += cols[r, q + j]


def _geometry(x_shape, kh, kw, stride, padding):
    N, C, H, W = x_shape
    return conv_output_size(H, kh, stride, padding), conv_output_size(W, kw, stride, padding)


def im2col_t(x, kh, kw, stride, padding, n0=0, nb=None, out=None):
    """Transposed im2col of images ``n0 .. n0+nb-1`` of x (see the module docstring).

    x : (N, C, H, W) float32/float64 C-contiguous.  Returns ``(C*kh*kw, nb*H'*W')`` in
    x's dtype (written into ``out`` when given: C-contiguous, that shape and dtype).
    """
    N, C = x.shape[:2]
    nb = N - n0 if nb is None else nb
    Ho, Wo = _geometry(x.shape, kh, kw, stride, padding)
    if out is None:
        out = np.empty((C * kh * kw, nb * Ho * Wo), dtype=x.dtype)
    if out.size:
        _im2col_t(x, n0, nb, kh, kw, stride, padding, Ho, Wo, out)
    return out


def col2im_t(cols, dx, kh, kw, stride, padding, n0=0, nb=None):
    """Adjoint of :func:`im2col_t`: ``dx[n0:n0+nb] = col2im(cols.T)``; returns dx.

    cols : (C*kh*kw, nb*H'*W') C-contiguous.  dx : (N, C, H, W) C-contiguous, same dtype;
    only images ``n0 .. n0+nb-1`` are written (overwritten, not accumulated).
    """
    nb = dx.shape[0] - n0 if nb is None else nb
    Ho, Wo = _geometry(dx.shape, kh, kw, stride, padding)
    if nb and dx[0].size:
        _col2im_t(cols, n0, nb, kh, kw, stride, padding, Ho, Wo, dx)
    return dx


def block_images(C, kh, kw, Ho, Wo, itemsize, budget=BLOCK_BYTES):
    """Images per block: as many as keep one block's unfolding within ``budget`` bytes
    (at least 1)."""
    per_image = C * kh * kw * Ho * Wo * itemsize
    return max(1, budget // max(1, per_image))


def conv_backward(dout, x, w_mat, kh, kw, stride, padding, need_dx=True, budget=BLOCK_BYTES):
    """``(dx, dw)`` of a convolution, tiled over blocks of images.

    dout : (N, F, H', W') float, C-contiguous.  x : (N, C, H, W), the forward input, in
    dout's dtype, C-contiguous.  w_mat : (F, C*kh*kw) the weights the forward used
    (``sign(w)`` for a binary layer), dout's dtype.  Returns ``dx`` (N, C, H, W) (None
    when ``need_dx`` is False) and ``dw`` (F, C*kh*kw), both in dout's dtype.

    Per block of ``nb`` images: one transposed im2col into a reused buffer, ``dw +=
    dout_t @ cols_t.T`` and ``dx_block = col2im_t(w_mat.T @ dout_t)``.
    """
    N, F, Ho, Wo = dout.shape
    C = x.shape[1]
    CK = C * kh * kw
    P = Ho * Wo
    dtype = dout.dtype
    nb = min(N, block_images(C, kh, kw, Ho, Wo, dtype.itemsize, budget))
    cols = np.empty((CK, nb * P), dtype=dtype)
    dcols = np.empty((CK, nb * P), dtype=dtype) if need_dx else None
    dbuf = np.empty((F, nb * P), dtype=dtype) if nb > 1 else None
    part = np.empty((F, CK), dtype=dtype)
    dw = np.zeros((F, CK), dtype=dtype)
    dx = np.empty(x.shape, dtype=dtype) if need_dx else None
    w_t = w_mat.T
    d3 = dout.reshape(N, F, P)
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        L = m * P
        c = cols[:, :L] if m == nb else np.empty((CK, L), dtype=dtype)
        _im2col_t(x, n0, m, kh, kw, stride, padding, Ho, Wo, c)
        if nb == 1:
            d = d3[n0]                                      # (F, P), contiguous: no copy
        else:
            d = dbuf[:, :L] if m == nb else np.empty((F, L), dtype=dtype)
            np.copyto(d.reshape(F, m, P), d3[n0:n0 + m].transpose(1, 0, 2))
        np.matmul(d, c.T, out=part)
        dw += part
        if need_dx:
            dc = dcols[:, :L] if m == nb else np.empty((CK, L), dtype=dtype)
            np.matmul(w_t, d, out=dc)
            _col2im_t(dc, n0, m, kh, kw, stride, padding, Ho, Wo, dx)
    return dx, dw
