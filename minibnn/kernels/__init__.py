"""Binary kernels: bit packing, XNOR-popcount GEMM and binary convolution.

The binary conventions (sign(0) = +1, bit 1 = +1, LSB-first bit order, zero padding
bits, exact popcount, zero-padded convolution) are written once, in
:mod:`minibnn.kernels.bitpack`.

Every public function validates its inputs here, at the Python boundary, and then
dispatches to one backend (see :mod:`minibnn.kernels.backend`): ``"reference"``
(NumPy float oracle), ``"cpu"`` (numba.njit, parallel, default) or ``"cuda"``
(numba.cuda).  Numba does not bounds-check, so nothing reaches a kernel before its
shapes, dtypes and contiguity are known to be right.

Shapes: ``a_words: (M, W)``, ``b_words: (N, W)`` uint64 with ``W = ceil(K/64)``;
images ``x: (N, C, H, W)``, filters ``w: (F, C, KH, KW)``;
``H' = (H + 2*padding - KH) // stride + 1`` and likewise ``W'``.
"""

import numpy as np

from . import bitpack, reference
from .backend import (BACKENDS, BackendUnavailable, available_backends, get_backend,
                      resolve_name)
from .bitpack import n_words, pack_columns, sign_f32, sign_pack_columns, unpack
from .prepared import PreparedWeights

__all__ = [
    "pack", "unpack", "pack_columns", "sign_f32", "sign_pack_columns", "n_words", "xnor_gemm", "prepare_weights", "binary_matmul",
    "binary_conv2d", "conv_output_size", "available_backends", "get_backend",
    "BackendUnavailable", "BACKENDS", "PreparedWeights",
]


def _check_words(arr, name):
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of uint64 words, got {type(arr).__name__}")
    if arr.dtype != np.uint64:
        raise TypeError(f"{name} must have dtype uint64 (packed words), got {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, words), got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")


def _check_real(x, name, ndim):
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must be a real array, got dtype {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
        raise ValueError(f"{name} contains NaN, which has no sign")
    return x


def _check_int(v, name, minimum):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def pack(x, backend=None):
    """Pack the signs of the last axis: (..., K) real -> (..., ceil(K/64)) uint64.

    See :func:`minibnn.kernels.bitpack.pack` for the conventions and errors.  The
    ``reference`` backend uses the NumPy twin; every other backend packs on the CPU
    (the CUDA backend has its own device-side packer for device arrays).
    """
    name = resolve_name(backend)
    if name == "reference":
        x = bitpack._as_real_array(x)
        if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
            raise ValueError("pack: input contains NaN, which has no sign")
        return reference.pack(x)
    return bitpack.pack(x)


def prepare_weights(b_words, k, backend=None):
    """Arrange packed weights ``(N, W) uint64`` for repeated :func:`xnor_gemm` calls.

    Returns a :class:`PreparedWeights` for that backend (the CPU backend re-lays the
    words in column panels of 8, see :mod:`minibnn.kernels.cpu`).  Weights are fixed
    across many calls in inference, so the re-layout is paid once.
    """
    _check_words(b_words, "b_words")
    k = _check_int(k, "k", 1)
    if b_words.shape[1] != n_words(k):
        raise ValueError(f"b_words has {b_words.shape[1]} words per row but k={k} needs {n_words(k)}")
    return get_backend(backend).prepare_weights(b_words, k)


def xnor_gemm(a_words, b_words, k, out=None, backend=None):
    """Binary GEMM on packed words: ``sign(A) @ sign(B).T`` as int32.

    Parameters
    ----------
    a_words : (M, W) uint64, C-contiguous, A packed along K.
    b_words : (N, W) uint64, C-contiguous, B packed along K -- or the
        :class:`PreparedWeights` that :func:`prepare_weights` returned for this backend.
    k : int, the logical K (``W == ceil(k / 64)``); padding bits must be zero.
    out : optional (M, N) int32 C-contiguous array to fill (reused across calls).
    backend : None, "reference", "cpu" or "cuda".

    Returns
    -------
    (M, N) int32, ``out[m, n] = k - 2 * sum_w popcount(a[m, w] XOR b[n, w])``.
    M = 0 or N = 0 gives an empty result.
    """
    _check_words(a_words, "a_words")
    k = _check_int(k, "k", 1)
    W = n_words(k)
    if a_words.shape[1] != W:
        raise ValueError(f"a_words has {a_words.shape[1]} words per row but k={k} needs ceil(k/64)={W}")
    mod = get_backend(backend)
    name = resolve_name(backend)
    if isinstance(b_words, PreparedWeights):
        if b_words.backend != name:
            raise ValueError(f"weights were prepared for backend {b_words.backend!r}, not {name!r}")
        if b_words.k != k:
            raise ValueError(f"weights were prepared for k={b_words.k}, not k={k}")
        N = b_words.n
    else:
        _check_words(b_words, "b_words")
        if b_words.shape[1] != W:
            raise ValueError(f"b_words has {b_words.shape[1]} words per row but a_words has {W} (k={k})")
        N = b_words.shape[0]
    M = a_words.shape[0]
    if out is None:
        out = np.empty((M, N), dtype=np.int32)
    else:
        if not isinstance(out, np.ndarray) or out.dtype != np.int32:
            raise TypeError("out must be an int32 numpy array")
        if out.shape != (M, N):
            raise ValueError(f"out has shape {out.shape}, expected {(M, N)}")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be C-contiguous and writeable")
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


conv_output_size = reference.conv_output_size


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
    stride = _check_int(stride, "stride", 1)
    padding = _check_int(padding, "padding", 0)
    N, C, H, W = x.shape
    F, Cw, KH, KW = w.shape
    if Cw != C:
        raise ValueError(f"binary_conv2d: x has C={C} channels but w expects {Cw}")
    if min(C, H, W, KH, KW) == 0 or F == 0:
        raise ValueError(f"binary_conv2d: zero-size dimension in x {x.shape} or w {w.shape}")
    Ho = conv_output_size(H, KH, stride, padding)
    Wo = conv_output_size(W, KW, stride, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"binary_conv2d: kernel {KH}x{KW} larger than padded input "
                         f"{H + 2 * padding}x{W + 2 * padding}")
    name = resolve_name(backend)
    mod = get_backend(name)
    if N == 0:
        return np.empty((0, F, Ho, Wo), dtype=np.int32)
    if name != "reference" and x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32 if x.dtype.itemsize <= 2 else np.float64)
    x = np.ascontiguousarray(x)
    return mod.binary_conv2d(x, w, stride, padding)
