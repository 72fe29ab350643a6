"""Bit packing: the one place where minibnn's binary conventions are written down.

Binary conventions (every other docstring links here)
-----------------------------------------------------
1. **sign(0) = +1.**  ``sign(x) = +1 if x >= 0 else -1``; ``-0.0`` counts as 0, so +1.
   NaN has no sign: :func:`pack` rejects it with ``ValueError``.
2. **Bit value 1 means +1, bit value 0 means -1.**  A packed bit is ``x >= 0``.
3. **Bit order along K is LSB first.**  Element ``k`` of the last axis goes to word
   ``k // 64``, bit ``k % 64`` (bit 0 is the least significant).  On a little-endian
   machine this is the byte layout of ``np.packbits(..., bitorder="little")``, and a
   ``uint64`` array viewed as ``uint32`` puts element ``k`` in 32-bit word ``k // 32``,
   bit ``k % 32`` -- the CUDA kernels rely on that to read the same buffer as 32-bit words.
4. **Padding bits are zero.**  A row of K signs uses ``W = ceil(K / 64)`` words; the
   ``64 * W - K`` unused high bits of the last word are 0 in every packed operand.
5. **How the popcount stays exact.**  For two +-1 vectors ``a, b`` of length K,
   ``a . b = (#equal) - (#different) = K - 2 * popcount(a_bits XOR b_bits)``.
   Padding bits are 0 in both operands, so their XOR is 0 and they add nothing to the
   popcount: the formula holds with the *logical* K, not ``64 * W``.
6. **Zero padding of a binary convolution input.**  A zero-padded border adds a third
   value, 0, to a +-1 input; a bit cannot hold it.  ``binary_conv2d`` must equal the float
   cross-correlation of sign(x) and sign(w) with zeros at the border, so the packed path
   packs border pixels as +1 (bit 1) and then subtracts, per output position and filter,
   the sum of sign(w) over the taps that fell on the border
   (``corr[oh, ow, f] = sum_{padded (kh, kw)} sum_c sign(w[f, c, kh, kw])``).
   The result is exact; see :func:`minibnn.kernels.cpu.binary_conv2d`.

Shapes: ``x: (..., K)`` real -> ``words: (..., W) uint64`` with ``W = ceil(K / 64)``.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 1.1 (sign) and
Sec. 3 (XNOR-popcount).
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .. import checks

WORD_BITS = 64
#: largest logical K: every product is an int32 in [-K, K]
MAX_K = 2 ** 31 - 1


def n_words(k):
    """Number of uint64 words holding ``k`` bits: ``ceil(k / 64)``."""
    return (int(k) + WORD_BITS - 1) // WORD_BITS


def check_k(k, name="k", words=None, words_name="words"):
    """``int(k)`` for an integer ``1 <= k <= MAX_K`` (``TypeError`` / ``ValueError``).

    With ``words`` (the word count W of a packed operand), also require
    ``64 * (W - 1) < k <= 64 * W``, i.e. ``W == ceil(k / 64)`` (convention 4).
    """
    k = checks.check_int(k, name, minimum=1, maximum=MAX_K)
    if words is not None and words != n_words(k):
        raise ValueError(f"{words_name} has {words} words per row but {name}={k} needs "
                         f"ceil({name}/64)={n_words(k)} (64*(W-1) < {name} <= 64*W)")
    return k


def check_padding_bits(words, k, name="words"):
    """Raise ``ValueError`` naming ``name`` unless the padding bits of ``words`` are zero.

    words : (..., W) uint64 with ``W == ceil(k / 64)``; only the last word of each row has
    padding bits (the ``64 * W - k`` high bits, convention 4).  A nonzero padding bit
    would count in every popcount and silently shift the result, so packed words that
    come from outside (the public API, a ``.bnn`` file) are checked here.  Cost: one pass
    over the last word column, ``O(rows)`` against the GEMM's ``O(rows * N * W)``.
    """
    rem = int(k) % WORD_BITS
    if rem == 0 or words.size == 0:
        return
    last = words[..., -1]
    if np.any(last >> np.uint64(rem)):
        bad = [int(i) for i in np.argwhere(last >> np.uint64(rem))[0]]
        where = "" if not bad else f" (row {bad[0] if len(bad) == 1 else tuple(bad)})"
        raise ValueError(f"{name} has nonzero padding bits{where}: with k={k} the top "
                         f"{WORD_BITS - rem} bits of the last word must be 0 (convention 4 "
                         "in minibnn.kernels.bitpack)")


# ---------------------------------------------------------------------------
# LLVM intrinsics.  Numba has no popcount and does not vectorize the
# "compare 64 floats, gather the 64 results into one word" idiom, so both are
# written as LLVM IR: the compare lowers to vcmpps into a mask register.
# ---------------------------------------------------------------------------

@intrinsic
def popcount64(typingctx, x):
    """popcount of a uint64 (``llvm.ctpop.i64``), returned as int64."""
    if not isinstance(x, types.Integer):
        return None
    sig = types.int64(x)

    def codegen(context, builder, signature, args):
        (val,) = args
        i64 = ir.IntType(64)
        val = builder.zext(val, i64) if val.type.width < 64 else val
        fn = builder.module.declare_intrinsic("llvm.ctpop", [i64])
        return builder.call(fn, [val])

    return sig, codegen


@intrinsic
def _sign_bits64(typingctx, arr, offset):
    """Pack 64 consecutive floats ``arr[offset:offset+64]`` (1-D, contiguous).

    Returns ``(word, nan_flag)``: bit j of ``word`` is ``arr[offset+j] >= 0``;
    ``nan_flag`` is nonzero when any of the 64 values is NaN.
    """
    if not (isinstance(arr, types.Array) and isinstance(arr.dtype, types.Float)):
        return None
    sig = types.UniTuple(types.uint64, 2)(arr, offset)

    def codegen(context, builder, signature, args):
        a, off = args
        fty = context.get_value_type(signature.args[0].dtype)
        data = context.make_array(signature.args[0])(context, builder, a).data
        ptr = builder.gep(data, [off])
        vty = ir.VectorType(fty, 64)
        vec = builder.load(builder.bitcast(ptr, vty.as_pointer()),
                           align=signature.args[0].dtype.bitwidth // 8)
        zero = ir.Constant(vty, None)
        ge = builder.fcmp_ordered(">=", vec, zero)
        nan = builder.fcmp_unordered("uno", vec, vec)
        i64 = ir.IntType(64)
        word = builder.bitcast(ge, i64)
        flag = builder.bitcast(nan, i64)
        res = context.make_tuple(builder, signature.return_type, [word, flag])
        return res

    return sig, codegen


@njit(cache=True, parallel=True)
def _pack_rows(x2d, out):
    """x2d: (R, K) float32/float64 C-contiguous; out: (R, ceil(K/64)) uint64.

    Returns 1 if any NaN was seen (the caller raises), else 0.
    """
    R, K = x2d.shape
    full = K // 64
    nan_rows = np.zeros(R, dtype=np.uint8)
    flat = x2d.reshape(R * K)
    for r in prange(R):
        base = r * K
        anynan = np.uint64(0)
        for w in range(full):
            word, flag = _sign_bits64(flat, base + w * 64)
            out[r, w] = word
            anynan |= flag
        if full * 64 < K:
            word = np.uint64(0)
            for j in range(K - full * 64):
                v = flat[base + full * 64 + j]
                if v != v:
                    anynan |= np.uint64(1)
                if v >= 0:
                    word |= np.uint64(1) << np.uint64(j)
            out[r, full] = word
        nan_rows[r] = 1 if anynan != 0 else 0
    return nan_rows.max() if R > 0 else 0


@njit(cache=True, parallel=True)
def _abs_bits_max(xi, absmask):
    """max over i of ``xi[i] & absmask``: the float bit patterns of x viewed as ints with
    the sign bit cleared.  The input holds a NaN iff the result exceeds the bits of +inf.
    An integer max reduction vectorizes; a NaN test inside the sign loop would not."""
    m = xi.dtype.type(0)
    for i in prange(xi.size):
        m = max(m, xi[i] & absmask)
    return m


def has_nan(x):
    """True if the contiguous float32/float64 array ``x`` holds a NaN (one parallel pass)."""
    flat = x.reshape(-1)
    if flat.size == 0:
        return False
    if x.dtype == np.float32:
        return int(_abs_bits_max(flat.view(np.int32), np.int32(0x7FFFFFFF))) > 0x7F800000
    return int(_abs_bits_max(flat.view(np.int64), np.int64(0x7FFFFFFFFFFFFFFF))) > 0x7FF0000000000000


@njit(cache=True, parallel=True)
def _sign_f32(x, out):
    """out = sign(x) as float32 +-1 (sign(0) = +1, NaN -> -1); flat contiguous arrays."""
    for i in prange(x.size):
        out[i] = np.float32(1.0) if x[i] >= 0 else np.float32(-1.0)


@njit(cache=True, parallel=True)
def _sign_pack_cols(x2d, signs, out, write_signs):
    """One pass over x2d (K, F): out (F, W) = pack(x2d.T) and, if ``write_signs``,
    signs (K, F) float32 +-1.

    Works word by word along K so that each step reads whole contiguous rows of x2d
    (vectorized over F) instead of transposing a large matrix first.  NaN is checked by
    the caller (:func:`has_nan`), which keeps this loop free of a reduction.
    """
    K, F = x2d.shape
    W = out.shape[1]
    for w in prange(W):
        acc = np.zeros(F, dtype=np.uint64)
        for j in range(min(64, K - w * 64)):
            bit = np.uint64(1) << np.uint64(j)
            k = w * 64 + j
            if write_signs:
                for f in range(F):
                    pos = x2d[k, f] >= 0
                    acc[f] |= bit if pos else np.uint64(0)
                    signs[k, f] = np.float32(1.0) if pos else np.float32(-1.0)
            else:
                for f in range(F):
                    acc[f] |= bit if x2d[k, f] >= 0 else np.uint64(0)
        for f in range(F):
            out[f, w] = acc[f]


def _columns_input(x, what):
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what}: x must be 2-D (K, F), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what}: x has shape {x.shape}; K and F must be >= 1")
    x = as_pack_input(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    x = np.ascontiguousarray(x)
    if has_nan(x):
        raise ValueError(f"{what}: input contains NaN, which has no sign")
    return x


def sign_pack_columns(x):
    """Both forms of a dense layer's binary weights in one pass over the latent weights.

    x : (K, F) float32/float64 -> ``(signs, words)``: ``signs`` (K, F) float32 +-1 (for
    the float backward, ``dx = dout @ signs.T``) and ``words`` (F, ceil(K/64)) uint64
    equal to ``pack(x.T)`` (for the XNOR forward).  Raises ``ValueError`` on NaN.
    """
    x = _columns_input(x, "sign_pack_columns")
    signs = np.empty(x.shape, dtype=np.float32)
    out = np.empty((x.shape[1], n_words(x.shape[0])), dtype=np.uint64)
    if x.shape[1]:
        _sign_pack_cols(x, signs, out, True)
    return signs, out


def pack_columns(x):
    """Pack the signs of the *columns* of a 2-D array: (K, F) real -> (F, ceil(K/64)) uint64.

    Equal to ``pack(x.T)`` without materialising the transpose: a dense layer's latent
    weights are stored (K, F), while the GEMM wants the F columns as packed rows.
    Raises ``ValueError`` for NaN, K = 0 or a non-2-D input, ``TypeError`` for a non-real dtype.
    """
    x = _columns_input(x, "pack_columns")
    out = np.empty((x.shape[1], n_words(x.shape[0])), dtype=np.uint64)
    if x.shape[1]:
        _sign_pack_cols(x, np.empty((0, 0), np.float32), out, False)
    return out


def sign_f32(x):
    """sign(x) as a float32 array of +-1 (sign(0) = +1, sign(-0.0) = +1), same shape.

    Two parallel passes over float32/float64 input: the NaN test (:func:`has_nan`, an
    integer max reduction that vectorizes) and the sign loop.  Raises ``ValueError`` on
    NaN, ``TypeError`` for a non-real dtype.
    """
    x = checks.real_array(x, "sign: x")
    if x.dtype not in (np.float32, np.float64):
        if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
            raise ValueError("sign: input contains NaN, which has no sign")
        return np.where(x >= 0, np.float32(1), np.float32(-1))
    xc = np.ascontiguousarray(x)
    if has_nan(xc):
        raise ValueError("sign: input contains NaN, which has no sign")
    out = np.empty(xc.shape, dtype=np.float32)
    if xc.size:
        _sign_f32(xc.reshape(-1), out.reshape(-1))
    return out


@njit(cache=True, parallel=True)
def _unpack_rows(words, k, out):
    """words: (R, W) uint64; out: (R, k) float32 of +1/-1."""
    R = words.shape[0]
    for r in prange(R):
        for j in range(k):
            bit = (words[r, j // 64] >> np.uint64(j % 64)) & np.uint64(1)
            out[r, j] = np.float32(1.0) if bit else np.float32(-1.0)


def as_pack_input(x, name="x"):
    """``x`` as a real array with at least one axis and K >= 1 along the last one: what
    every packer (CPU, reference, CUDA) accepts.  ``TypeError`` for a non-real dtype,
    ``ValueError`` for a scalar or K = 0."""
    x = checks.real_array(x, name)
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least one axis (the K axis to pack), got a scalar")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has K = 0 along its last axis: nothing to pack")
    return x


def pack_rows_input(x, name="x"):
    """Validated input of a packer -> ``(lead shape, (R, K) float32/float64 C-contiguous)``.

    Integers and float16 are converted (the sign is preserved exactly): integers and
    8-byte types to float64, float16 to float32.
    """
    x = as_pack_input(x, name)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64 if x.dtype.itemsize > 4 or np.issubdtype(x.dtype, np.integer)
                     else np.float32)
    K = x.shape[-1]
    return x.shape[:-1], np.ascontiguousarray(x).reshape(-1, K)


def pack(x):
    """Pack the signs of the last axis of ``x`` into uint64 words.

    Parameters
    ----------
    x : (..., K) real array (float16/32/64 or integer), no NaN, K >= 1.

    Returns
    -------
    words : (..., ceil(K/64)) uint64, C-contiguous, following the conventions in
        this module's docstring (bit 1 = +1, LSB first, zero padding bits).

    Raises ``TypeError`` for a non-real dtype, ``ValueError`` for K = 0 or NaN.
    """
    lead, x2d = pack_rows_input(x)
    K = x2d.shape[1]
    out = np.empty((x2d.shape[0], n_words(K)), dtype=np.uint64)
    if x2d.shape[0] and _pack_rows(x2d, out):
        raise ValueError("pack: input contains NaN, which has no sign")
    return out.reshape(lead + (n_words(K),))


def unpack(words, k):
    """Inverse of :func:`pack` on signs.

    Parameters
    ----------
    words : (..., W) uint64 with ``W == ceil(k / 64)``.
    k : int >= 1, the logical length K.

    Returns
    -------
    (..., k) float32 array of +1/-1.
    """
    words = np.asarray(words)
    if words.dtype != np.uint64:
        raise TypeError(f"unpack: words must be uint64, got {words.dtype}")
    k = check_k(k)
    if words.ndim < 1 or words.shape[-1] != n_words(k):
        raise ValueError(
            f"unpack: last axis of words has {words.shape[-1] if words.ndim else 0} words, "
            f"but k={k} needs ceil(k/64)={n_words(k)}")
    lead = words.shape[:-1]
    w2d = np.ascontiguousarray(words).reshape(-1, words.shape[-1])
    out = np.empty((w2d.shape[0], k), dtype=np.float32)
    if w2d.shape[0]:
        _unpack_rows(w2d, k, out)
    return out.reshape(lead + (k,))

