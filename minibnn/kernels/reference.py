"""Slow, obviously correct NumPy twins of every fast kernel.

Two roles: the oracle the tests compare every fast kernel against, and the
``"reference"`` backend that production code may select (``backend="reference"`` or
``MINIBNN_BACKEND=reference``: any machine, no compiler; also the fallback of
:func:`minibnn.kernels.maxpool2d` for dtypes Numba does not compile).  Inputs arrive
validated by :mod:`minibnn.kernels`, like every backend's.

Nothing here is clever: signs are materialised as float +1/-1 arrays and the products are
ordinary float64 matmuls and convolution loops, rounded to int32 at the end (every sum of
K values of +-1 is an integer of magnitude <= K, exact in float64 for K < 2**53).
The binary conventions are in :mod:`minibnn.kernels.bitpack`.

Shapes: N batch, C channels, H x W image, F filters, KH x KW kernel, K reduction length,
``W = ceil(K / 64)`` words.
"""

import numpy as np

from .bitpack import check_padding_bits, n_words
from .geometry import conv_output_size
from .prepared import PreparedWeights

WORD_BITS = 64


def sign(x):
    """sign with sign(0) = +1: (...) real -> (...) float64 of +1/-1."""
    return np.where(np.asarray(x) >= 0, 1.0, -1.0)


def pack(x):
    """(..., K) real -> (..., ceil(K/64)) uint64; bit j of word w is ``x[..., 64*w + j] >= 0``."""
    x = np.asarray(x)
    K = x.shape[-1]
    W = (K + WORD_BITS - 1) // WORD_BITS
    bits = np.zeros(x.shape[:-1] + (W * WORD_BITS,), dtype=np.uint64)
    bits[..., :K] = x >= 0
    bits = bits.reshape(x.shape[:-1] + (W, WORD_BITS))
    weights = np.uint64(1) << np.arange(WORD_BITS, dtype=np.uint64)
    # distinct powers of two: their sum is their bitwise OR
    return (bits * weights).sum(axis=-1, dtype=np.uint64)


def unpack(words, k):
    """(..., ceil(k/64)) uint64 -> (..., k) float32 of +1/-1."""
    words = np.asarray(words, dtype=np.uint64)
    shifts = np.arange(WORD_BITS, dtype=np.uint64)
    bits = (words[..., :, None] >> shifts) & np.uint64(1)
    bits = bits.reshape(words.shape[:-1] + (-1,))[..., :k]
    return np.where(bits == 1, 1.0, -1.0).astype(np.float32)


def prepare_weights(b_words, k):
    """The reference GEMM needs no layout: the handle just holds the (N, W) words."""
    return PreparedWeights("reference", np.array(b_words, dtype=np.uint64), len(b_words), k)


def check_prepared(pw):
    """``ValueError`` unless ``pw.data`` holds (n, ceil(k/64)) uint64 words, padding bits 0."""
    d = pw.data
    want = (pw.n, n_words(pw.k))
    if not (isinstance(d, np.ndarray) and d.dtype == np.uint64 and d.shape == want):
        raise ValueError(f"prepared weights: data must be uint64 words of shape {want}, got "
                         f"{type(d).__name__} {getattr(d, 'dtype', '')} {getattr(d, 'shape', '')}")
    check_padding_bits(d, pw.k, "prepared weights")


def xnor_gemm(a_words, b_words, k, out=None):
    """(M, W) uint64, (N, W) uint64 (or a prepared handle) -> (M, N) int32
    = unpack(A) @ unpack(B).T, computed in float64."""
    if isinstance(b_words, PreparedWeights):
        b_words = b_words.data
    a = unpack(a_words, k).astype(np.float64)
    b = unpack(b_words, k).astype(np.float64)
    res = np.rint(a @ b.T).astype(np.int32)
    if out is None:
        return res
    out[...] = res
    return out


def binary_matmul(a, b):
    """(M, K) real @ (K, N) real of their signs -> (M, N) int32."""
    return np.rint(sign(a) @ sign(b)).astype(np.int32)


def im2col(x, kh, kw, stride=1, padding=0):
    """Unfold x (N, C, H, W) -> (N * H' * W', C * kh * kw), one NumPy slice per kernel tap.

    Row ``(n * H' + i) * W' + j`` is the window at ``(i * stride, j * stride)`` of the
    zero-padded image, columns in ``(c, kh, kw)`` order.  Twin of
    :func:`minibnn.kernels.unfold.im2col`.
    """
    N, C, H, W = x.shape
    Ho = conv_output_size(H, kh, stride, padding)
    Wo = conv_output_size(W, kw, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else x
    cols = np.empty((N, C, kh, kw, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(N * Ho * Wo, C * kh * kw)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """Adjoint of :func:`im2col`: add every window's entries back at its pixels.

    cols (N * H' * W', C * kh * kw) -> (N, C, H, W).  Twin of
    :func:`minibnn.kernels.unfold.col2im`.
    """
    N, C, H, W = x_shape
    Ho = conv_output_size(H, kh, stride, padding)
    Wo = conv_output_size(W, kw, stride, padding)
    c6 = cols.reshape(N, Ho, Wo, C, kh, kw)
    xp = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride] += \
                c6[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return xp[:, :, padding:padding + H, padding:padding + W]


def maxpool2d(x, k, s):
    """Max over ``k x k`` windows at stride ``s`` (no padding): x (N, C, H, W) ->
    ``(out, arg)`` (N, C, H', W'), ``arg`` int32 = tap ``a * k + b`` of the first maximum
    (row-major, ``np.argmax``'s tie rule).  Twin of :func:`minibnn.kernels.pool.maxpool2d`."""
    N, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, k, s, 0), conv_output_size(W, k, s, 0)
    taps = np.empty((k * k, N, C, Ho, Wo), dtype=x.dtype)
    for a in range(k):
        for b in range(k):
            taps[a * k + b] = x[:, :, a:a + s * Ho:s, b:b + s * Wo:s]
    arg = taps.argmax(axis=0).astype(np.int32)
    return np.take_along_axis(taps, arg[None], axis=0)[0], arg


def maxpool2d_backward(dout, arg, x_shape, k, s):
    """Route dout (N, C, H', W') to each window's argmax tap -> dx ``x_shape``.
    Twin of :func:`minibnn.kernels.pool.maxpool2d_backward`."""
    Ho, Wo = arg.shape[2:]
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for a in range(k):
        for b in range(k):
            dx[:, :, a:a + s * Ho:s, b:b + s * Wo:s] += np.where(arg == a * k + b, dout, 0)
    return dx


def binary_conv2d(x, w, stride=1, padding=0):
    """Cross-correlation of sign(x) and sign(w) with zero padding, as float loops.

    x: (N, C, H, W) real; w: (F, C, KH, KW) real ->
    (N, F, H', W') int32 with ``H' = (H + 2*padding - KH) // stride + 1`` (same for W').
    """
    xs = sign(x)
    ws = sign(w)
    N, C, H, Wd = xs.shape
    F, _, KH, KW = ws.shape
    Ho = conv_output_size(H, KH, stride, padding)
    Wo = conv_output_size(Wd, KW, stride, padding)
    xp = np.pad(xs, ((0, 0), (0, 0), (padding, padding), (padding, padding)))  # zeros
    out = np.zeros((N, F, Ho, Wo), dtype=np.float64)
    for kh in range(KH):
        for kw in range(KW):
            patch = xp[:, :, kh:kh + stride * Ho:stride, kw:kw + stride * Wo:stride]  # (N, C, Ho, Wo)
            out += np.einsum("nchw,fc->nfhw", patch, ws[:, :, kh, kw])
    return np.rint(out).astype(np.int32)


# ---------------------------------------------------------------------------
# packed inference
# ---------------------------------------------------------------------------

def threshold_pack(s, t):
    """(N, D) int, (D,) int -> (N, ceil(D/64)) uint64: :func:`pack` of ``+1 where s >= t``.
    Twin of :func:`minibnn.kernels.cpu.threshold_pack`."""
    return pack(np.where(np.asarray(s) >= np.asarray(t)[None, :], 1.0, -1.0))


def pack_bitplanes(p):
    """(N, K) uint8 -> (8, N, ceil(K/64)) uint64: plane b packs ``bit b of p`` as +1/-1.
    Twin of :func:`minibnn.kernels.cpu.pack_bitplanes`."""
    p = np.asarray(p)
    return np.stack([pack(np.where((p >> b) & 1, 1.0, -1.0)) for b in range(8)])


def bitplane_gemm(planes, b_words, k, out=None):
    """(8, M, W) planes, (N, W) words (or a prepared handle) -> (M, N) int32
    ``sum_b 2^b unpack(planes[b]) @ unpack(B).T``, in float64 (exact: |u| <= 255 k < 2**53).
    Twin of :func:`minibnn.kernels.cpu.bitplane_gemm`."""
    if isinstance(b_words, PreparedWeights):
        b_words = b_words.data
    b = unpack(b_words, k).astype(np.float64)
    u = sum((2.0 ** i) * (unpack(planes[i], k).astype(np.float64) @ b.T) for i in range(8))
    res = np.rint(u).astype(np.int32)
    if out is None:
        return res
    out[...] = res
    return out


# ---------------------------------------------------------------------------
# bfloat16 GEMM of the training backward
# ---------------------------------------------------------------------------

def matmul_bf16(a, b):
    """(M, K) float32, (K, N) float32 -> (M, N) float32: the product of the operands
    rounded to bfloat16, computed in float64 and cast to float32 once at the end.
    Twin of :func:`minibnn.kernels.bf16.matmul` (whose float32 accumulation may differ
    by the rounding of K additions); the rounding rule is
    :func:`minibnn.kernels.bf16.round_bf16`."""
    from .bf16 import round_bf16  # the one home of the bfloat16 rounding rule
    ra = round_bf16(np.asarray(a, dtype=np.float32)).astype(np.float64)
    rb = round_bf16(np.asarray(b, dtype=np.float32)).astype(np.float64)
    return (ra @ rb).astype(np.float32)
