"""Kernels: binary products on packed bits, and the integer/float helpers around them.

Binary kernels: bit packing, XNOR-popcount GEMM, binary convolution, and the packed
inference kernels (compare-and-pack against integer thresholds, 8-bit planes of pixels
and their fused GEMM).  The package also holds the float and integer kernels that sit
next to them in a BNN: max pooling (:mod:`~minibnn.kernels.pool`, float or integer),
the float im2col / col2im of the training backward (:mod:`~minibnn.kernels.unfold`),
and the convolution geometry (:mod:`~minibnn.kernels.geometry`).

The binary conventions (sign(0) = +1, bit 1 = +1, LSB-first bit order, zero padding
bits, exact popcount, zero-padded convolution) are written once, in
:mod:`minibnn.kernels.bitpack`.

Every public function validates its inputs here, at the Python boundary, and then
dispatches to one backend (see :mod:`minibnn.kernels.backend`): ``"reference"``
(NumPy float twins, :mod:`~minibnn.kernels.reference`), ``"cpu"`` (numba.njit,
parallel, default) or ``"cuda"`` (numba.cuda).  Numba does not bounds-check, so nothing
reaches a kernel before its shapes, dtypes, contiguity and padding bits are known to be
right.

Shapes: ``a_words: (M, W)``, ``b_words: (N, W)`` uint64 with ``W = ceil(K/64)``;
images ``x: (N, C, H, W)``, filters ``w: (F, C, KH, KW)``;
``H' = (H + 2*padding - KH) // stride + 1`` and likewise ``W'``
(:func:`conv_output_size`).
"""

import numpy as np

from .. import checks
from . import bitpack, geometry, reference
from .backend import (BACKENDS, BackendUnavailable, available_backends, get_backend,
                      resolve_name)
from .bitpack import n_words, pack_columns, sign_f32, sign_pack_columns, unpack
from .geometry import conv_output_size
from .prepared import PreparedWeights

__all__ = [
    "pack", "unpack", "pack_columns", "sign_f32", "sign_pack_columns", "n_words", "xnor_gemm",
    "prepare_weights", "binary_matmul", "binary_conv2d", "conv_output_size", "threshold_pack",
    "pack_bitplanes", "bitplane_gemm", "maxpool2d", "available_backends", "get_backend",
    "BackendUnavailable", "BACKENDS", "PreparedWeights", "MAX_BITPLANE_K",
]

#: largest K of :func:`bitplane_gemm`: its sums reach ``255 * K`` and are int32
MAX_BITPLANE_K = (2 ** 31 - 1) // 255


def _check_words(arr, name, ndim=2):
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of uint64 words, got {type(arr).__name__}")
    if arr.dtype != np.uint64:
        raise TypeError(f"{name} must have dtype uint64 (packed words), got {arr.dtype}")
    if arr.ndim != ndim:
        axes = "(rows, words)" if ndim == 2 else "(8, rows, words)"
        raise ValueError(f"{name} must be {ndim}-D {axes}, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")


def _check_packed(arr, name, k, ndim=2):
    """A packed operand from outside: uint64, C-contiguous, ceil(k/64) words per row and
    zero padding bits (convention 4)."""
    _check_words(arr, name, ndim)
    bitpack.check_k(k, words=arr.shape[-1], words_name=name)
    bitpack.check_padding_bits(arr, k, name)


def _check_real(x, name, ndim):
    x = checks.real_array(x, name, ndim=ndim)
    if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
        raise ValueError(f"{name} contains NaN, which has no sign")
    return x


def _check_prepared(pw, name, mod, k):
    if pw.backend != name:
        raise ValueError(f"weights were prepared for backend {pw.backend!r}, not {name!r}")
    if pw.k != k:
        raise ValueError(f"weights were prepared for k={pw.k}, not k={k}")
    # a hand-made PreparedWeights must not reach a kernel that trusts its layout
    mod.check_prepared(pw)


def _check_out(out, shape):
    if out is None:
        return np.empty(shape, dtype=np.int32)
    if not isinstance(out, np.ndarray) or out.dtype != np.int32:
        raise TypeError("out must be an int32 numpy array")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable")
    return out


def pack(x, backend=None):
    """Pack the signs of the last axis: (..., K) real -> (..., ceil(K/64)) uint64.

    See :func:`minibnn.kernels.bitpack.pack` for the conventions and errors.  The
    ``reference`` backend uses the NumPy twin; every other backend packs on the CPU
    (the CUDA backend has its own device-side packer for device arrays).
    """
    name = resolve_name(backend)
    if name == "reference":
        x = bitpack.as_pack_input(x)
        if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
            raise ValueError("pack: input contains NaN, which has no sign")
        return reference.pack(x)
    return bitpack.pack(x)


def prepare_weights(b_words, k, backend=None):
    """Arrange packed weights ``(N, W) uint64`` for repeated :func:`xnor_gemm` calls.

    Returns a :class:`PreparedWeights` for that backend (the CPU backend re-lays the
    words in column panels of 8, see :mod:`minibnn.kernels.cpu`).  Weights are fixed
    across many calls in inference, so the re-layout is paid once.  ``b_words`` must
    have ``ceil(k/64)`` words per row and zero padding bits (``ValueError`` otherwise).
    """
    _check_words(b_words, "b_words")
    k = bitpack.check_k(k, words=b_words.shape[1], words_name="b_words")
    bitpack.check_padding_bits(b_words, k, "b_words")
    return get_backend(backend).prepare_weights(b_words, k)


def xnor_gemm(a_words, b_words, k, out=None, backend=None):
    """Binary GEMM on packed words: ``sign(A) @ sign(B).T`` as int32.

    Parameters
    ----------
    a_words : (M, W) uint64, C-contiguous, A packed along K.
    b_words : (N, W) uint64, C-contiguous, B packed along K -- or the
        :class:`PreparedWeights` that :func:`prepare_weights` returned for this backend.
    k : int, the logical K: ``W == ceil(k / 64)`` (``64 (W - 1) < k <= 64 W``) and
        ``k < 2**31`` (the results are int32).  The padding bits (the ``64 W - k`` high
        bits of each row's last word) must be zero: ``ValueError`` naming the operand
        otherwise -- a set padding bit would silently change every sum it meets.
    out : optional (M, N) int32 C-contiguous array to fill (reused across calls).
    backend : None, "reference", "cpu" or "cuda".

    Returns
    -------
    (M, N) int32, ``out[m, n] = k - 2 * sum_w popcount(a[m, w] XOR b[n, w])``.
    M = 0 or N = 0 gives an empty result.
    """
    _check_words(a_words, "a_words")
    k = bitpack.check_k(k, words=a_words.shape[1], words_name="a_words")
    name = resolve_name(backend)
    mod = get_backend(name)
    if isinstance(b_words, PreparedWeights):
        _check_prepared(b_words, name, mod, k)
        N = b_words.n
    else:
        _check_words(b_words, "b_words")
        if b_words.shape[1] != a_words.shape[1]:
            raise ValueError(f"b_words has {b_words.shape[1]} words per row but a_words has "
                             f"{a_words.shape[1]} (k={k})")
        bitpack.check_padding_bits(b_words, k, "b_words")
        N = b_words.shape[0]
    bitpack.check_padding_bits(a_words, k, "a_words")
    M = a_words.shape[0]
    out = _check_out(out, (M, N))
    if M == 0 or N == 0:
        return out
    return mod.xnor_gemm(a_words, b_words, k, out)


def binary_matmul(a, b, backend=None):
    """(M, K) real @ (K, N) real of their signs -> (M, N) int32 (sign(0) = +1)."""
    a = _check_real(a, "a", 2)
    b = _check_real(b, "b", 2)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"binary_matmul: inner sizes differ: a is {a.shape}, b is {b.shape}")
    if a.shape[1] == 0:
        raise ValueError("binary_matmul: K = 0")
    name = resolve_name(backend)
    if name == "reference":
        return reference.binary_matmul(a, b)
    k = a.shape[1]
    if a.shape[0] == 0 or b.shape[1] == 0:
        return np.empty((a.shape[0], b.shape[1]), dtype=np.int32)
    return xnor_gemm(bitpack.pack(a), bitpack.pack(b.T), k, backend=name)


def binary_conv2d(x, w, stride=1, padding=0, backend=None):
    """Binary 2-D cross-correlation with zero padding, exact.

    Parameters
    ----------
    x : (N, C, H, W) real, no NaN.
    w : (F, C, KH, KW) real, no NaN.
    stride : int >= 1.  padding : int >= 0 (zeros, *not* -1 or +1; see convention 6 in
        :mod:`minibnn.kernels.bitpack`).

    Returns
    -------
    (N, F, H', W') int32 equal to the float cross-correlation of sign(x) and sign(w)
    with zero padding, ``H' = (H + 2*padding - KH) // stride + 1`` (same for W').
    """
    x = _check_real(x, "x", 4)
    w = _check_real(w, "w", 4)
    stride = checks.check_int(stride, "stride", minimum=1)
    padding = checks.check_int(padding, "padding", minimum=0)
    N, C, H, W = x.shape
    F, Cw, KH, KW = w.shape
    if Cw != C:
        raise ValueError(f"binary_conv2d: x has C={C} channels but w expects {Cw}")
    if min(C, H, W, KH, KW) == 0 or F == 0:
        raise ValueError(f"binary_conv2d: zero-size dimension in x {x.shape} or w {w.shape}")
    bitpack.check_k(C * KH * KW, name="C*KH*KW")
    Ho, Wo = geometry.check_conv_geometry(H, W, KH, KW, stride, padding)
    name = resolve_name(backend)
    mod = get_backend(name)
    if N == 0:
        return np.empty((0, F, Ho, Wo), dtype=np.int32)
    if name != "reference" and x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32 if x.dtype.itemsize <= 2 else np.float64)
    x = np.ascontiguousarray(x)
    return mod.binary_conv2d(x, w, stride, padding)


# ---------------------------------------------------------------------------
# packed inference: thresholds, bit planes, integer max pooling
# ---------------------------------------------------------------------------

def _as_int32(a, name, ndim):
    a = checks.real_array(a, name, ndim=ndim)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.dtype != np.int32 and a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < -2 ** 31 or hi >= 2 ** 31:
            raise ValueError(f"{name} has values outside int32 ({lo}..{hi})")
    return np.ascontiguousarray(a, dtype=np.int32)


def threshold_pack(s, t, backend=None):
    """Compare and pack: the bits of ``s >= t``, packed (a folded BN + sign).

    s : (N, D) integer sums (int32 range).  t : (D,) integer thresholds.
    Returns (N, ceil(D/64)) uint64: bit d of row n (word d // 64, bit d % 64, padding bits
    zero) is 1 (+1) iff ``s[n, d] >= t[d]`` -- the next layer's packed input.  The
    ``reference`` backend uses the NumPy twin; the others run the CPU kernel (host arrays).
    """
    s = _as_int32(s, "s", 2)
    t = _as_int32(t, "t", 1)
    if t.shape != (s.shape[1],):
        raise ValueError(f"threshold_pack: t must have shape ({s.shape[1]},) to match s "
                         f"{s.shape}, got {t.shape}")
    if s.shape[1] == 0:
        raise ValueError("threshold_pack: D = 0, nothing to pack")
    mod = reference if resolve_name(backend) == "reference" else get_backend("cpu")
    return mod.threshold_pack(s, t)


def pack_bitplanes(p, backend=None):
    """The 8 bit planes of pixels, packed: (N, K) uint8 -> (8, N, ceil(K/64)) uint64.

    Plane n holds bit n of every pixel (``p = sum_n 2^n b_n``); in an XNOR product bit 1
    reads as +1 and bit 0 as -1, i.e. plane n stands for ``2 b_n - 1`` (Hubara et al.
    2016, Sec. 1.6, Eq. 5).  Padding bits are zero.
    """
    p = checks.real_array(p, "p", ndim=2)
    if p.dtype != np.uint8:
        raise TypeError(f"pack_bitplanes: p must be uint8 pixels, got dtype {p.dtype}")
    if p.shape[1] == 0:
        raise ValueError("pack_bitplanes: p has K = 0 pixels per row")
    p = np.ascontiguousarray(p)
    mod = reference if resolve_name(backend) == "reference" else get_backend("cpu")
    return mod.pack_bitplanes(p)


def bitplane_gemm(planes, b_words, k, out=None, backend=None):
    """First-layer product on 8-bit pixels: ``u = sum_b 2^b xnor_gemm(planes[b], B)``.

    planes : (8, M, W) uint64 C-contiguous, from :func:`pack_bitplanes` (zero padding bits).
    b_words : (N, W) uint64 packed weights, or a :class:`PreparedWeights` for ``backend``.
    k : int, K, with ``W == ceil(k/64)`` and ``k <= MAX_BITPLANE_K`` (u fits int32).
    out : optional (M, N) int32 C-contiguous array to fill.

    Returns (M, N) int32 ``u = (2p - 255) . sign(w) = 255 * (x . sign(w))`` for pixels p and
    ``x = 2p/255 - 1``.  The CPU backend runs one fused kernel (the eight planes of a
    register tile accumulate before a single store); the others eight GEMMs.
    """
    _check_words(planes, "planes", ndim=3)
    if planes.shape[0] != 8:
        raise ValueError(f"planes must have 8 bit planes on axis 0, got shape {planes.shape}")
    k = bitpack.check_k(k, words=planes.shape[2], words_name="planes")
    if k > MAX_BITPLANE_K:
        raise ValueError(f"bitplane_gemm: k={k} is too large: 255*k must fit int32 "
                         f"(k <= {MAX_BITPLANE_K})")
    name = resolve_name(backend)
    mod = get_backend(name)
    if isinstance(b_words, PreparedWeights):
        _check_prepared(b_words, name, mod, k)
        N = b_words.n
    else:
        _check_packed(b_words, "b_words", k)
        if b_words.shape[1] != planes.shape[2]:
            raise ValueError(f"b_words has {b_words.shape[1]} words per row, planes "
                             f"{planes.shape[2]}")
        N = b_words.shape[0]
    bitpack.check_padding_bits(planes, k, "planes")
    M = planes.shape[1]
    out = _check_out(out, (M, N))
    if M == 0 or N == 0:
        return out
    return mod.bitplane_gemm(planes, b_words, k, out)


def maxpool2d(x, kernel, stride=None, backend=None):
    """Max pooling, float or integer: x (N, C, H, W) -> ``(out, arg)`` (N, C, H', W').

    kernel, stride : int >= 1 (stride defaults to kernel); no padding (floor mode),
    ``H' = (H - kernel) // stride + 1``.  ``out`` has x's dtype; ``arg`` int32 is the tap
    ``a * kernel + b`` of the first maximum in row-major order (``np.argmax``'s rule).
    One implementation (:mod:`minibnn.kernels.pool`) for float activations and the
    packed model's int32 sums; its NumPy twin is :func:`minibnn.kernels.reference.maxpool2d`
    (the ``reference`` backend, and dtypes Numba does not compile, e.g. float16).
    """
    x = checks.real_array(x, "x", ndim=4)
    kernel = checks.check_int(kernel, "kernel", minimum=1)
    stride = kernel if stride is None else checks.check_int(stride, "stride", minimum=1)
    if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
        raise ValueError("maxpool2d: x contains NaN")
    N, C, H, W = x.shape
    Ho, Wo = geometry.check_conv_geometry(H, W, kernel, kernel, stride, 0, where="maxpool2d",
                                          what="window")
    from . import pool
    if resolve_name(backend) == "reference" or x.dtype not in pool.DTYPES:
        return reference.maxpool2d(x, kernel, stride)
    return pool.maxpool2d(np.ascontiguousarray(x), kernel, stride)
