"""Packed inference: a trained BNN as bits and integer thresholds, run with XNOR-popcount.

:func:`export` turns a trained :class:`minibnn.model.Sequential` into a ``.bnn`` file and
:class:`PackedModel` runs it with integer arithmetic only (apart from the optional float
first layer and the last batch norm, see below), giving the **same predictions** as the
float model in eval mode.

Supported models
----------------
The zoo's MNIST MLP and ConvNets (and any model of the same shape)::

    [Flatten] BinaryDense(real input) BN Sign  ([BinaryDense BN Sign]*)  BinaryDense BN
    BinaryConv2D(real input) [MaxPool2D] BN Sign ([BinaryConv2D [MaxPool2D] BN Sign]*)
        Flatten ([BinaryDense BN Sign]*) BinaryDense BN

BN is :class:`~minibnn.layers.BatchNorm` or :class:`~minibnn.layers.ShiftBatchNorm`;
``Dropout`` layers are the identity in eval mode and are skipped; binary layers may have
a bias.  Anything else raises ``ValueError`` naming the layer.

Folding "binary layer -> (max-pool) -> BN -> sign" into a threshold
-------------------------------------------------------------------
A hidden layer's pre-BN value is an integer ``s`` (``K - 2 popcount``, int32, exact) with
``|s| <= K``, ``K`` the layer's fan-in (``C * KH * KW`` for a convolution).  Its output
bit is ``sign(BN(s)) = +1  <=>  BN(s) >= 0``.  The threshold is **not** derived
algebraically (``mu - beta * sqrt(var + eps) / gamma`` rounds differently from the float
model at ties); instead the model's own BN layer, in eval mode -- the very code the
float model runs -- is evaluated on every integer candidate ``z`` in
``[-K - 1, K + 1]`` (float32, shape ``(2K + 3, F)`` or ``(2K + 3, F, 1, 1)`` for a
spatial BN, in chunks), and per neuron:

* if ``{z : BN(z) >= 0}`` is an up-set (BN non-decreasing, ``gamma >= 0``):
  ``t = min{z : BN(z) >= 0}`` and the bit is ``s >= t``;
* if it is a down-set (``gamma < 0``): ``t2 = max{z : BN(z) >= 0}``, the neuron is
  *flipped*: its weight row is negated (``s' = -s``) and the threshold is ``-t2``, so
  the bit is again ``s' >= t``;
* a constant BN (``gamma == 0``, ...) passes every candidate (``t = -K - 1``) or none
  (``t = K + 2``);
* anything else (a BN that is not monotone on the candidates) raises ``ValueError``.

So every hidden layer is ``bits = (xnor_popcount_sums >= t)`` with int32 ``t``, packed
straight into the next layer's uint64 words (:func:`threshold_pack`).  Because the
candidates are exactly the integers the float model can feed its BN, the bits equal the
float model's signs for every input.

Max-pooling sits between the layer and its BN in the ConvNet.  It is done on the int32
sums, before the threshold: max-pool commutes with any monotone map, so for
``gamma > 0`` it equals an OR of the output bits (``max(s) >= t  <=>  any(s >= t)``), but
for ``gamma < 0`` it becomes an AND (``max(s) <= t2  <=>  all(s <= t2)``).  Pooling the
integers (max over the original sums, i.e. min over the flipped ones) is exact for both
signs without a per-channel choice of gate.

The first layer (real-valued input)
-----------------------------------
``first_layer="float"``: ``x @ sign(w)`` (or the im2col convolution) is computed by the
same function as the float model (:func:`minibnn.functional.binary_dense_forward` /
:func:`~minibnn.functional.binary_conv2d_forward`, float BLAS), followed by the model's
BN in eval mode and sign; the result is packed.  Identical to the float model when it is
fed the same batches (a BLAS result may depend on the batch's shape).

``first_layer="bitplane"`` (Hubara et al. 2016, Sec. 1.6, Eq. 5): inputs are 8-bit pixels
``p`` (recovered exactly from the preprocessed ``x = 2p/255 - 1``, i.e. ``p / 127.5 - 1``
in float32, checked to round-trip bit for bit; uint8 arrays are taken as pixels).  With
``b_n`` the n-th bit plane of ``p`` (``p = sum_n 2^n b_n``) and ``w_b = sign(w)``::

    255 * (x . w_b) = (2p - 255) . w_b = sum_{n=0}^{7} 2^n (2 b_n - 1) . w_b = u

and ``(2 b_n - 1) . w_b`` is an ordinary +-1 XNOR-popcount product of the packed plane
with the packed weights (bit 1 of a plane means +1, bit 0 means -1), so ``u`` is an exact
integer from eight :func:`~minibnn.kernels.xnor_gemm` calls (eight zero-padded
:func:`~minibnn.kernels.binary_conv2d` calls for a ConvNet: a zero border adds 0 to every
plane, as it adds 0 to ``x``).  The {0, 1} form of the same product is
``b_n . w_b = popcount(B_n AND W) - popcount(B_n AND NOT W) = 2 popcount(B_n AND W) -
popcount(B_n) = ((2 b_n - 1) . w_b + sum(w_b)) / 2``, hence ``s_int = p . w_b =
(u + 255 sum(w_b)) / 2`` (:func:`bitplane_dense`).  The threshold is folded on ``u`` (not
on ``s_int``: with zero padding ``sum(w_b)`` over the taps inside the image depends on the
position, ``u`` does not) by evaluating the model's BN on ``float32(u / 255)`` for every
integer candidate (monotone in ``u``; :data:`EXHAUSTIVE_LIMIT` bounds the exhaustive scan,
above it a vectorized bisection per neuron plus a check on a grid and at the boundary).
Bit-plane mode is exact integer arithmetic; it equals the float model except where the
float model's own float32 rounding of ``x @ w_b`` lands on the other side of a BN
threshold (a handful of hidden bits; measured by the tests on MNIST: 0 or a few
predictions in a thousand).

The last layer
--------------
``integer_scores(x)``: the last layer's int32 XNOR sums (= the float model's values just
before its last BN).  ``scores(x)``: the model's last BN in eval mode applied to
``float32(sums) (+ bias)`` -- the same code on the same values, so the scores are equal to
the float model's bit for bit and ``predict(x) = argmax`` is identical.

Convolutions
------------
Hidden convolutions turn their input bits back into +-1 float32 ``(N, C, H, W)`` and call
:func:`minibnn.kernels.binary_conv2d` (packed im2col, exact zero padding).  That re-packs
the activations and the weights on each call; it is the simplest exact route and fine for
now.  Dense layers keep everything packed: ``(N, ceil(K/64))`` uint64 words against
weights prepared once per backend (:func:`minibnn.kernels.prepare_weights`).

File format (``.bnn``)
----------------------
An ``.npz`` (``np.savez_compressed``, written atomically with
:func:`minibnn.checkpoint.atomic_write_bytes`, read with ``allow_pickle=False``):

* ``header``: 0-d str, JSON: ``format`` (``"minibnn-packed"``), ``format_version`` (1),
  ``first_layer``, ``input_shape``, ``preprocessing`` (``"2*x/255-1"``), ``n_classes``,
  ``architecture`` (a list of ops: kind, role, input, K, F, C, kernel, stride, padding,
  pool, in_shape, out_shape, conv_shape, flatten, bias, bn), ``arrays`` (name -> dtype,
  shape), ``sha256`` (of every array's name, dtype, shape and bytes, sorted by name) and
  ``source_architecture`` (the Sequential's).
* per op ``i``: ``op{i}.weights`` uint64 ``(F, ceil(K/64))`` -- dense: column f of
  sign(w) packed along K; conv: filter f flattened in (C, KH, KW) order -- with the flips
  folded in; ``op{i}.thresholds`` int32 ``(F,)`` and ``op{i}.flip`` uint8 ``(F,)`` (the
  pooling direction; 1 = the row was negated) for thresholded ops; ``op{i}.bias`` and
  ``op{i}.bn.{gamma,beta,running_mean,running_var}`` (float, ``(F,)``) for the float first
  layer and the last layer.

A truncated, corrupted (checksum), wrong-format or wrong-version file raises
``ValueError`` naming the file.

Shapes: N batch, K fan-in, F outputs, images (N, C, H, W), W = ceil(K/64) words.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 1.6 (first layer,
Eq. 5), Sec. 3 (XNOR-popcount); the binary conventions are in
:mod:`minibnn.kernels.bitpack`.
"""

import hashlib
import io
import json
import os

import numpy as np
from numba import njit, prange

from . import functional as Fn
from . import kernels
from .checkpoint import atomic_write_bytes
from .kernels.bitpack import n_words
from .layers import (BatchNorm, BinaryConv2D, BinaryDense, Dropout, Flatten, MaxPool2D,
                     ShiftBatchNorm, SignActivation)
from .quantize import sign

__all__ = ["PackedModel", "export", "load", "threshold_pack", "fold_thresholds",
           "pack_bitplanes", "pixels_from_input", "bitplane_dense", "FORMAT_NAME",
           "FORMAT_VERSION", "PREPROCESSING", "FIRST_LAYER_MODES", "EXHAUSTIVE_LIMIT"]

FORMAT_NAME = "minibnn-packed"
FORMAT_VERSION = 1
PREPROCESSING = "2*x/255-1"
FIRST_LAYER_MODES = ("float", "bitplane")
#: at most this many (candidate, neuron) BN evaluations are done exhaustively
EXHAUSTIVE_LIMIT = 1 << 26
_BN_CLASSES = {"BatchNorm": BatchNorm, "ShiftBatchNorm": ShiftBatchNorm}
_BN_KEYS = ("gamma", "beta", "running_mean", "running_var")


# ---------------------------------------------------------------------------
# kernels: threshold + pack, bit planes
# ---------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _threshold_pack_kernel(s, t, out):
    """s (N, D) int32, t (D,) int32 -> out (N, ceil(D/64)) uint64: bit d = s[n, d] >= t[d]."""
    N, D = s.shape
    W = out.shape[1]
    full = D // 64
    for n in prange(N):
        for w in range(full):
            base = w * 64
            word = np.uint64(0)
            for j in range(64):
                if s[n, base + j] >= t[base + j]:
                    word |= np.uint64(1) << np.uint64(j)
            out[n, w] = word
        if full < W:
            base = full * 64
            word = np.uint64(0)
            for j in range(D - base):
                if s[n, base + j] >= t[base + j]:
                    word |= np.uint64(1) << np.uint64(j)
            out[n, full] = word


def threshold_pack(s, t):
    """Compare and pack: ``(s >= t)`` as packed bits.

    s : (N, D) int32 sums.  t : (D,) int32 thresholds.
    Returns (N, ceil(D/64)) uint64, bit d of row n (word d // 64, bit d % 64, padding
    bits zero) = 1 (+1) iff ``s[n, d] >= t[d]`` -- the next layer's packed input.
    """
    s = np.ascontiguousarray(s, dtype=np.int32)
    t = np.ascontiguousarray(t, dtype=np.int32)
    if s.ndim != 2 or t.shape != (s.shape[1],):
        raise ValueError(f"threshold_pack: s must be (N, D) and t (D,), got {s.shape}, {t.shape}")
    out = np.empty((s.shape[0], n_words(s.shape[1])), dtype=np.uint64)
    if s.shape[0]:
        _threshold_pack_kernel(s, t, out)
    return out


@njit(cache=True, parallel=True)
def _bitplane_kernel(p, out):
    """p (N, K) uint8 -> out (8, N, ceil(K/64)) uint64: bit k of plane n = bit n of p[., k]."""
    N, K = p.shape
    W = out.shape[2]
    for r in prange(N):
        acc = np.zeros(8, dtype=np.uint64)
        for w in range(W):
            base = w * 64
            acc[:] = 0
            for j in range(min(64, K - base)):
                v = np.uint64(p[r, base + j])
                for b in range(8):
                    acc[b] |= ((v >> np.uint64(b)) & np.uint64(1)) << np.uint64(j)
            for b in range(8):
                out[b, r, w] = acc[b]


def pack_bitplanes(p):
    """The 8 bit planes of pixels, packed: (N, K) uint8 -> (8, N, ceil(K/64)) uint64.

    Plane n holds bit n of every pixel (``p = sum_n 2^n b_n``); bit 1 reads as +1 and bit 0
    as -1 in an XNOR product, i.e. plane n stands for ``2 b_n - 1``.
    """
    p = np.ascontiguousarray(p)
    if p.dtype != np.uint8 or p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"pack_bitplanes: need (N, K) uint8 with K >= 1, got {p.dtype} {p.shape}")
    out = np.empty((8, p.shape[0], n_words(p.shape[1])), dtype=np.uint64)
    if p.shape[0]:
        _bitplane_kernel(p, out)
    return out


@njit(cache=True, parallel=True)
def _shift_accumulate(u, g, shift):
    """u (M, F) int32 += g (M, F) int32 << shift (flat, contiguous)."""
    uf = u.reshape(u.size)
    gf = g.reshape(g.size)
    n = uf.size
    chunk = 1 << 14
    for c in prange((n + chunk - 1) // chunk):
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            uf[i] += gf[i] << shift


try:   # the CPU backend's register-tiled micro-kernels (see minibnn.kernels.cpu)
    from .kernels.cpu import PANEL as _PANEL
    from .kernels.cpu import ROW_BLOCK as _ROW_BLOCK
    from .kernels.cpu import TILE_P as _TILE_P
    from .kernels.cpu import TILE_R as _TILE_R
    from .kernels.cpu import _tile_11, _tile_RP
    _HAVE_TILES = _PANEL == 8
except ImportError:  # pragma: no cover - a CPU backend without the tiles
    _HAVE_TILES = False

if _HAVE_TILES:
    @njit(cache=True, parallel=True)
    def _bitplane_gemm_panels(planes, panels, k, out):
        """Fused bit-plane GEMM: ``out[m, n] = sum_b 2^b (k - 2 popcount(planes[b, m] ^
        column_n)) = 255 k - 2 sum_b 2^b popcount(...)``.

        planes (8, M, W) uint64 C-contiguous; panels (NP, W, 8) from the CPU backend's
        ``prepare_weights``; out (M, N) int32.  Same task split and micro-kernels as
        :func:`minibnn.kernels.cpu.gemm_panels`; the eight planes of a register tile are
        accumulated (shifted) before the single store, so no (8, M, N) intermediate exists.
        """
        M = planes.shape[1]
        W = planes.shape[2]
        NP = panels.shape[0]
        N = out.shape[1]
        pf = planes.reshape(8 * M * W)
        bf = panels.reshape(NP * W * 8)
        n_groups = (NP + _TILE_P - 1) // _TILE_P
        m_blocks = (M + _ROW_BLOCK - 1) // _ROW_BLOCK
        L = _TILE_R * _TILE_P * 8
        for t in prange(n_groups * m_blocks):
            g = t % n_groups
            mb = t // n_groups
            acc = np.empty(L, dtype=np.int64)
            tot = np.empty(L, dtype=np.int64)
            p0 = g * _TILE_P
            n_p = min(_TILE_P, NP - p0)
            m0 = mb * _ROW_BLOCK
            m1 = min(M, m0 + _ROW_BLOCK)
            m = m0
            while m < m1:
                R = min(_TILE_R, m1 - m)
                tot[:] = 0
                for b in range(8):
                    base = (b * M + m) * W
                    if R == _TILE_R and n_p == _TILE_P:
                        _tile_RP(pf, base, bf, p0 * W * 8, W, acc)
                        for i in range(L):
                            tot[i] += acc[i] << b
                    else:
                        for r in range(R):
                            for pp in range(n_p):
                                _tile_11(pf, base + r * W, bf, (p0 + pp) * W * 8, W, acc)
                                o = (r * _TILE_P + pp) * 8
                                for j in range(8):
                                    tot[o + j] += acc[j] << b
                for r in range(R):
                    for pp in range(n_p):
                        for j in range(8):
                            c = (p0 + pp) * 8 + j
                            if c < N:
                                out[m + r, c] = 255 * k - 2 * tot[(r * _TILE_P + pp) * 8 + j]
                m += R


def _bitplane_dense_u(p, weights, k, backend, rows=None):
    """u = sum_n 2^n xnor_gemm(plane_n, weights) = 255 * (x . w_b): (N, F) int32.

    CPU backend with prepared weights: one fused kernel (:func:`_bitplane_gemm_panels`);
    otherwise eight :func:`~minibnn.kernels.xnor_gemm` calls per block of rows (blocks
    keep the partial products in cache on the CPU)."""
    planes = pack_bitplanes(p)
    N = p.shape[0]
    F = weights.n if isinstance(weights, kernels.PreparedWeights) else weights.shape[0]
    u = np.empty((N, F), dtype=np.int32)
    if (_HAVE_TILES and rows is None and isinstance(weights, kernels.PreparedWeights)
            and weights.backend == "cpu" and getattr(weights.data, "ndim", 0) == 3
            and weights.data.shape[2] == 8 and weights.data.shape[1] == planes.shape[2]):
        if N and F:
            _bitplane_gemm_panels(planes, weights.data, k, u)
        return u
    if rows is None:
        rows = N if kernels.backend.resolve_name(backend) != "cpu" else max(64, (1 << 19) // max(F, 1))
    buf = np.empty((min(rows, N), F), dtype=np.int32)
    for r0 in range(0, N, rows):
        r1 = min(N, r0 + rows)
        ub = u[r0:r1]
        for b in range(8):
            g = buf[:r1 - r0]
            kernels.xnor_gemm(np.ascontiguousarray(planes[b, r0:r1]), weights, k, out=g,
                              backend=backend)
            if b == 0:
                ub[...] = g
            else:
                _shift_accumulate(ub, g, b)
    return u


def bitplane_dense(p, w_words, k, backend=None):
    """First dense layer on 8-bit pixels with XNOR-popcount only (Sec. 1.6, Eq. 5).

    p : (N, K) uint8 pixels.  w_words : (F, ceil(K/64)) uint64, sign(w) columns packed.
    k : K.  backend : kernel backend (None: the default).

    Returns ``(u, s_int)``, both (N, F) int32: ``u = sum_n 2^n (2 b_n - 1) . w_b =
    (2p - 255) . w_b = 255 * (x . w_b)`` with ``x = 2p/255 - 1``, and ``s_int = p . w_b =
    (u + 255 sum(w_b)) / 2`` (the {0,1}-plane form; see the module docstring).
    """
    words = np.ascontiguousarray(w_words)
    prepared = kernels.prepare_weights(words, k, backend=backend)
    u = _bitplane_dense_u(np.ascontiguousarray(p, dtype=np.uint8), prepared, k,
                          kernels.backend.resolve_name(backend))
    sw = kernels.unpack(words, k).sum(axis=1, dtype=np.int64)        # sum(w_b) per column
    s_int = (u.astype(np.int64) + 255 * sw[None, :]) // 2
    return u, s_int.astype(np.int32)


def pixels_from_input(x):
    """8-bit pixels behind an input: uint8 -> itself; float ``x = p / 127.5 - 1`` (the
    float32 ``2*x/255-1`` preprocessing of :func:`minibnn.data.scale_to_pm1`) -> p.

    Raises ``ValueError`` unless the float input round-trips exactly (same dtype, bit for
    bit), i.e. unless it really is the preprocessing of 8-bit pixels."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"bit-plane input must be uint8 pixels or float 2*p/255-1, got {x.dtype}")
    with np.errstate(invalid="ignore"):
        p = np.rint((x.astype(np.float64) + 1.0) * 127.5)
    if not np.all((p >= 0) & (p <= 255)):
        raise ValueError("bit-plane input: values outside [-1, 1] (or NaN): not 2*p/255-1 of "
                         "8-bit pixels")
    p = p.astype(np.uint8)
    back = (p.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).astype(x.dtype)
    if not np.array_equal(back, x):
        bad = int(np.count_nonzero(back != x))
        raise ValueError(f"bit-plane input: {bad} values are not exactly 2*p/255-1 of an 8-bit "
                         f"pixel p (preprocessing must be {PREPROCESSING!r}, float32)")
    return p


def _pixels_to_float(p):
    out = p.astype(np.float32)
    out /= np.float32(127.5)
    out -= np.float32(1.0)
    return out


# ---------------------------------------------------------------------------
# folding BN + sign into thresholds
# ---------------------------------------------------------------------------

def fold_thresholds(post, lo, hi, n, exhaustive_limit=None, chunk_elems=1 << 20, what="layer"):
    """Per-neuron integer threshold of ``post(z) >= 0`` over the integers ``z in [lo, hi]``.

    post : callable, int64 ``(R, n)`` candidates (column f for neuron f) -> ``(R, n)``
        float values (the model's BN in eval mode applied to the float value of z).
    lo, hi : int, the candidate range (``-K-1, K+1`` for a hidden layer).
    n : number of neurons.

    Returns ``(t, flip)``: int32 (n,) and bool (n,).  Not flipped: ``post(z) >= 0 <=> z >=
    t``; flipped: ``post(z) >= 0 <=> -z >= t``.  All pass: ``t = lo``; none: ``t = hi+1``.
    Raises ``ValueError`` if ``post`` is not monotone on the candidates or gives NaN.

    Up to ``exhaustive_limit`` (default :data:`EXHAUSTIVE_LIMIT`) evaluations every
    candidate is evaluated (chunks of about ``chunk_elems``); above it a vectorized
    bisection per neuron is run and its result checked on an evenly spaced grid of
    candidates and at each boundary.
    """
    if exhaustive_limit is None:
        exhaustive_limit = EXHAUSTIVE_LIMIT
    lo, hi, n = int(lo), int(hi), int(n)
    R = hi - lo + 1

    def passes(z):
        v = np.asarray(post(z))
        if np.isnan(v).any():
            raise ValueError(f"{what}: batch norm gives NaN for some integer input; "
                             "the float model would fail on sign(NaN)")
        return v >= 0

    if R * n <= exhaustive_limit:
        first = np.full(n, hi + 1, dtype=np.int64)
        last = np.full(n, lo - 1, dtype=np.int64)
        count = np.zeros(n, dtype=np.int64)
        rows = max(1, chunk_elems // max(n, 1))
        for z0 in range(lo, hi + 1, rows):
            z = np.arange(z0, min(hi, z0 + rows - 1) + 1, dtype=np.int64)
            ok = passes(np.broadcast_to(z[:, None], (len(z), n)))
            anyp = ok.any(axis=0)
            fi = z[np.argmax(ok, axis=0)]
            li = z[len(z) - 1 - np.argmax(ok[::-1], axis=0)]
            first = np.where(anyp & (first > hi), fi, first)
            last = np.where(anyp, li, last)
            count += ok.sum(axis=0)
        up = count == hi - first + 1          # first..hi all pass (also: none / all pass)
        down = count == last - lo + 1         # lo..last all pass
        bad = ~(up | down)
        if bad.any():
            raise ValueError(f"{what}: batch norm is not monotone on the integer inputs of "
                             f"neuron(s) {np.flatnonzero(bad)[:10].tolist()}; cannot fold "
                             "it into a threshold")
        flip = ~up
        t = np.where(up, first, -last)
        return t.astype(np.int32), flip

    ends = passes(np.array([[lo] * n, [hi] * n], dtype=np.int64))
    p_lo, p_hi = ends[0], ends[1]
    up = ~p_lo & p_hi
    down = p_lo & ~p_hi
    a = np.full(n, lo, dtype=np.int64)      # pred(a) false
    b = np.full(n, hi, dtype=np.int64)      # pred(b) true; pred = pass (up) / not pass (down)
    active = up | down
    while True:
        todo = active & (b - a > 1)
        if not todo.any():
            break
        mid = np.where(todo, (a + b) // 2, a)
        pm = passes(mid[None, :])[0]
        pred = np.where(up, pm, ~pm)
        b = np.where(todo & pred, mid, b)
        a = np.where(todo & ~pred, mid, a)
    t = np.select([p_lo & p_hi, ~p_lo & ~p_hi, up], [lo, hi + 1, b], -a)
    flip = down

    def check(z):
        z = np.asarray(z, dtype=np.int64)
        want = np.where(flip[None, :], -z >= t[None, :], z >= t[None, :])
        if not np.array_equal(passes(z), want):
            raise ValueError(f"{what}: batch norm is not monotone on the integer inputs; "
                             "cannot fold it into a threshold")

    grid = np.unique(np.linspace(lo, hi, min(R, 4097)).round().astype(np.int64))
    rows = max(1, chunk_elems // max(n, 1))
    for g0 in range(0, len(grid), rows):
        g = grid[g0:g0 + rows]
        check(np.broadcast_to(g[:, None], (len(g), n)))
    edge = np.where(flip, -t, t)            # first pass (up) / last pass (down)
    near = np.stack([edge - 1, edge, edge + 1])
    check(np.clip(near, lo, hi))
    return t.astype(np.int32), flip


# ---------------------------------------------------------------------------
# parsing a Sequential
# ---------------------------------------------------------------------------

class _Block:
    """binary layer [+ max-pool] + BN [+ sign], with the layer indices for messages."""

    def __init__(self, layer, index):
        self.layer, self.index = layer, index
        self.pool = None
        self.bn = None
        self.sign = False
        self.flatten = False


def _describe(i, layer):
    return f"layer {i} ({layer!r})"


def _parse(model):
    items = [(i, l) for i, l in enumerate(model.layers) if not isinstance(l, Dropout)]
    blocks = []
    pending_flatten = False
    seen_dense = False
    pos = 0
    expect = "a BinaryDense or BinaryConv2D layer"

    def err(i, layer, wanted):
        return ValueError(f"export: {_describe(i, layer)} is not supported here; expected "
                          f"{wanted} (supported: [Flatten] BinaryDense/BinaryConv2D "
                          "[MaxPool2D] BatchNorm/ShiftBatchNorm SignActivation ... BinaryDense "
                          "BatchNorm; Dropout is skipped)")

    while pos < len(items):
        i, layer = items[pos]
        kind = type(layer)
        if blocks and not blocks[-1].sign:
            raise err(i, layer, "nothing after the last batch norm (the scores)")
        if kind is Flatten:
            if pending_flatten or seen_dense:
                raise err(i, layer, expect)
            pending_flatten = True
            pos += 1
            continue
        if kind not in (BinaryDense, BinaryConv2D):
            raise err(i, layer, expect)
        if kind is BinaryConv2D and (seen_dense or pending_flatten):
            raise err(i, layer, "a BinaryDense layer (no convolution after Flatten)")
        if kind is BinaryDense and blocks and not pending_flatten and \
                isinstance(blocks[-1].layer, BinaryConv2D):
            raise err(i, layer, "a Flatten between the convolutions and the dense layers")
        blk = _Block(layer, i)
        blk.flatten = pending_flatten
        pending_flatten = False
        seen_dense |= kind is BinaryDense
        pos += 1
        if pos < len(items) and type(items[pos][1]) is MaxPool2D:
            if kind is not BinaryConv2D:
                raise err(*items[pos], "a batch norm after a dense layer")
            blk.pool = items[pos]
            pos += 1
        if pos >= len(items) or type(items[pos][1]) not in (BatchNorm, ShiftBatchNorm):
            if pos >= len(items):
                raise ValueError(f"export: {_describe(i, layer)} is not followed by a batch norm")
            raise err(*items[pos], "a BatchNorm or ShiftBatchNorm")
        bn_i, bn = items[pos]
        want_spatial = kind is BinaryConv2D
        F = layer.out_ch if want_spatial else layer.out_features
        if bn.spatial != want_spatial or bn.num_features != F:
            raise ValueError(f"export: {_describe(bn_i, bn)} does not match {_describe(i, layer)} "
                             f"(need num_features={F}, spatial={want_spatial})")
        blk.bn = bn
        pos += 1
        if pos < len(items) and type(items[pos][1]) is SignActivation:
            blk.sign = True
            pos += 1
        elif pos < len(items):
            raise err(*items[pos], "a SignActivation after the batch norm")
        blocks.append(blk)
    if pending_flatten or not blocks:
        raise ValueError("export: the model has no binary layer after its last Flatten")
    if len(blocks) < 2:
        raise ValueError("export: need at least one hidden block (binary layer, BN, sign) "
                         "before the output layer")
    last = blocks[-1]
    if last.sign or not isinstance(last.layer, BinaryDense):
        raise ValueError(f"export: the model must end with BinaryDense -> batch norm (the "
                         f"scores), not {_describe(last.index, last.layer)}"
                         + (" -> sign" if last.sign else ""))
    for blk in blocks[:-1]:
        if not blk.sign:
            raise ValueError(f"export: {_describe(blk.index, blk.layer)}: every block but the "
                             "last needs a SignActivation")
    return blocks


def _pool_size(size, k, s):
    return (size - k) // s + 1


def _conv_geometry(blocks, input_shape):
    """Walk the blocks from a (C, H, W) input; returns per-block (in_shape, conv_shape,
    out_shape) or raises ValueError."""
    shapes = []
    shape = tuple(int(v) for v in input_shape)
    for blk in blocks:
        layer = blk.layer
        if isinstance(layer, BinaryConv2D):
            if len(shape) != 3 or shape[0] != layer.in_ch:
                raise ValueError(f"export: input shape {shape} does not fit "
                                 f"{_describe(blk.index, layer)}")
            C, H, W = shape
            kh, kw = layer.kernel
            Ho = Fn.conv_output_size(H, kh, layer.stride, layer.padding)
            Wo = Fn.conv_output_size(W, kw, layer.stride, layer.padding)
            if Ho < 1 or Wo < 1:
                raise ValueError(f"export: input {shape} too small for {_describe(blk.index, layer)}")
            conv = (layer.out_ch, Ho, Wo)
            out = conv
            if blk.pool is not None:
                mp = blk.pool[1]
                Hp, Wp = _pool_size(Ho, mp.kernel, mp.stride), _pool_size(Wo, mp.kernel, mp.stride)
                if Hp < 1 or Wp < 1:
                    raise ValueError(f"export: {_describe(*blk.pool)} larger than its input {conv}")
                out = (layer.out_ch, Hp, Wp)
            shapes.append((shape, conv, out))
            shape = out
        else:
            k = int(np.prod(shape))
            if k != layer.in_features:
                raise ValueError(f"export: {int(np.prod(shape))} features reach "
                                 f"{_describe(blk.index, layer)} (input shape {input_shape})")
            shapes.append(((k,), (layer.out_features,), (layer.out_features,)))
            shape = (layer.out_features,)
    return shapes


def _exact_geometry(blocks, shapes):
    """True when no convolution or pooling drops a row or column (floor mode)."""
    for blk, (in_shape, conv, _) in zip(blocks, shapes):
        if isinstance(blk.layer, BinaryConv2D):
            kh, kw = blk.layer.kernel
            p, st = blk.layer.padding, blk.layer.stride
            if (in_shape[1] + 2 * p - kh) % st or (in_shape[2] + 2 * p - kw) % st:
                return False
            if blk.pool is not None:
                mp = blk.pool[1]
                if (conv[1] - mp.kernel) % mp.stride or (conv[2] - mp.kernel) % mp.stride:
                    return False
    return True


def _infer_input_shape(blocks):
    """(K,) for an MLP; for a ConvNet the smallest square (C, S, S) whose flattened
    features fit the first dense layer, preferring sizes no layer crops (several sizes
    can fit because of floor-mode pooling: pass ``input_shape`` to be sure)."""
    first = blocks[0].layer
    if isinstance(first, BinaryDense):
        return (first.in_features,)
    fits = []
    for s in range(1, 1025):
        try:
            shapes = _conv_geometry(blocks, (first.in_ch, s, s))
        except ValueError:
            if fits:
                break
            continue
        fits.append((not _exact_geometry(blocks, shapes), s))
    if not fits:
        raise ValueError("export: cannot infer the (square) input size of the ConvNet; "
                         "pass input_shape=(C, H, W)")
    s = min(fits)[1]
    return (first.in_ch, s, s)


# ---------------------------------------------------------------------------
# building the arrays
# ---------------------------------------------------------------------------

def _bn_forward_eval(bn, v):
    """The model's own BN layer in eval mode, without disturbing its backward cache."""
    saved = (bn._cache, bn._out_shape)
    try:
        return bn.forward(v, training=False)
    finally:
        bn._cache, bn._out_shape = saved


def _compute_dtype(bias):
    return np.result_type(np.float32, bias.dtype) if bias is not None else np.dtype(np.float32)


def _make_post(bn, bias, spatial, to_float):
    """z (R, F) int64 -> BN(to_float(z) + bias) as (R, F), the float model's ops."""
    def post(z):
        v = to_float(z)
        R, F = v.shape
        if spatial:
            v = v.reshape(R, F, 1, 1)
            if bias is not None:
                v = v + bias.reshape(1, F, 1, 1)
        elif bias is not None:
            v = v + bias
        return _bn_forward_eval(bn, v).reshape(R, F)
    return post


def _weights_pm1(layer):
    """sign(w) as float32 +-1: dense (K, F), conv (F, C, KH, KW)."""
    return sign(layer.params["w"])


def _pack_weights(wb, conv):
    """+-1 weights -> (F, ceil(K/64)) uint64 (dense: columns; conv: flattened filters)."""
    if conv:
        return kernels.pack(np.ascontiguousarray(wb.reshape(wb.shape[0], -1)))
    return kernels.pack_columns(wb)


def _negate_outputs(wb, flip, conv):
    if not flip.any():
        return wb
    s = np.where(flip, np.float32(-1), np.float32(1)).astype(wb.dtype)
    return wb * (s.reshape(-1, 1, 1, 1) if conv else s[None, :])


def _build(model, first_layer, input_shape):
    if first_layer not in FIRST_LAYER_MODES:
        raise ValueError(f"first_layer must be one of {FIRST_LAYER_MODES}, got {first_layer!r}")
    blocks = _parse(model)
    if input_shape is None:
        input_shape = _infer_input_shape(blocks)
    input_shape = tuple(int(v) for v in input_shape)
    if isinstance(blocks[0].layer, BinaryDense):
        if int(np.prod(input_shape)) != blocks[0].layer.in_features:
            raise ValueError(f"export: input shape {input_shape} has {int(np.prod(input_shape))} "
                             f"values, the first layer expects {blocks[0].layer.in_features}")
        geo = _conv_geometry(blocks, (blocks[0].layer.in_features,))
    else:
        geo = _conv_geometry(blocks, input_shape)

    ops, arrays = [], {}
    for i, (blk, (in_shape, conv_shape, out_shape)) in enumerate(zip(blocks, geo)):
        layer, bn = blk.layer, blk.bn
        conv = isinstance(layer, BinaryConv2D)
        role = "first" if i == 0 else ("last" if i == len(blocks) - 1 else "hidden")
        bias = layer.params.get("b")
        if conv:
            kh, kw = layer.kernel
            K, F = layer.in_ch * kh * kw, layer.out_ch
        else:
            K, F = layer.in_features, layer.out_features
        op = {"kind": "conv" if conv else "dense", "role": role,
              "input": "bits" if i else ("real" if first_layer == "float" else "bitplane"),
              "K": K, "F": F, "in_shape": list(in_shape), "conv_shape": list(conv_shape),
              "out_shape": list(out_shape), "flatten": bool(blk.flatten),
              "bias": bias is not None,
              "bn": {"class": type(bn).__name__, "num_features": bn.num_features,
                     "spatial": bn.spatial, "momentum": bn.momentum, "eps": bn.eps},
              "pool": None, "C": None, "kernel": None, "stride": None, "padding": None}
        if conv:
            op.update(C=layer.in_ch, kernel=[kh, kw], stride=layer.stride, padding=layer.padding)
        if blk.pool is not None:
            mp = blk.pool[1]
            op["pool"] = {"kernel": mp.kernel, "stride": mp.stride}
        name = f"op{i}"
        wb = _weights_pm1(layer)
        float_op = op["input"] == "real" or role == "last"
        op["threshold"] = not float_op
        if float_op:
            arrays[f"{name}.weights"] = _pack_weights(wb, conv)
            if bias is not None:
                arrays[f"{name}.bias"] = np.array(bias)
            for key in _BN_KEYS:
                src = bn.params if key in bn.params else bn.buffers
                arrays[f"{name}.bn.{key}"] = np.array(src[key])
        else:
            dtype = _compute_dtype(bias)
            if op["input"] == "bitplane":
                lo, hi = -255 * K - 1, 255 * K + 1
                to_float = lambda z, d=dtype: (z.astype(np.float64) / 255.0).astype(d)  # noqa: E731
            else:
                lo, hi = -K - 1, K + 1
                to_float = lambda z, d=dtype: z.astype(d)  # noqa: E731
            post = _make_post(bn, bias, conv, to_float)
            t, flip = fold_thresholds(post, lo, hi, F,
                                      what=f"export: {_describe(blk.index, layer)} + its batch norm")
            arrays[f"{name}.weights"] = _pack_weights(_negate_outputs(wb, flip, conv), conv)
            arrays[f"{name}.thresholds"] = t
            arrays[f"{name}.flip"] = flip.astype(np.uint8)
        ops.append(op)
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "first_layer": first_layer, "input_shape": list(input_shape),
              "preprocessing": PREPROCESSING, "n_classes": ops[-1]["F"],
              "architecture": ops, "source_architecture": model.architecture()}
    return header, arrays


# ---------------------------------------------------------------------------
# file helpers
# ---------------------------------------------------------------------------

def _digest(arrays):
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(a.dtype.str.encode())
        h.update(repr(tuple(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _array_table(arrays):
    return {k: {"dtype": np.asarray(v).dtype.str, "shape": list(np.shape(v))}
            for k, v in sorted(arrays.items())}


def _expected_arrays(op, i):
    """name -> (dtype kind check, shape) of the arrays op i must have."""
    F, K = op["F"], op["K"]
    name = f"op{i}"
    out = {f"{name}.weights": ("u8", (F, n_words(K)))}
    if op["threshold"]:
        out[f"{name}.thresholds"] = ("i4", (F,))
        out[f"{name}.flip"] = ("u1", (F,))
    else:
        if op["bias"]:
            out[f"{name}.bias"] = ("f", (F,))
        for key in _BN_KEYS:
            out[f"{name}.bn.{key}"] = ("f", (F,))
    return out


def _check_header(header, src):
    """Validate a header's content (ValueError naming ``src`` for anything malformed)."""
    try:
        _check_header_fields(header, src)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"{src}: malformed header ({type(exc).__name__}: {exc})") from None


def _check_header_fields(header, src):
    def bad(msg):
        return ValueError(f"{src}: {msg}")

    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    if header.get("format") != FORMAT_NAME:
        raise bad(f"format {header.get('format')!r}, not {FORMAT_NAME!r}: not a minibnn packed model")
    if header.get("format_version") != FORMAT_VERSION:
        raise bad(f"format_version {header.get('format_version')!r}, this minibnn reads "
                  f"version {FORMAT_VERSION}")
    if header.get("first_layer") not in FIRST_LAYER_MODES:
        raise bad(f"unknown first_layer {header.get('first_layer')!r}")
    if header.get("preprocessing") != PREPROCESSING:
        raise bad(f"unknown preprocessing {header.get('preprocessing')!r}")
    ops = header.get("architecture")
    if not isinstance(ops, list) or len(ops) < 2:
        raise bad("architecture must be a list of at least two ops")
    need = ("kind", "role", "input", "K", "F", "in_shape", "conv_shape", "out_shape", "flatten",
            "bias", "bn", "pool", "threshold")
    prev_out = tuple(header.get("input_shape") or ())
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or any(k not in op for k in need):
            raise bad(f"architecture op {i} is malformed")
        role = "first" if i == 0 else ("last" if i == len(ops) - 1 else "hidden")
        inp = "bits" if i else ("real" if header["first_layer"] == "float" else "bitplane")
        if op["kind"] not in ("dense", "conv") or op["role"] != role or op["input"] != inp:
            raise bad(f"architecture op {i}: unexpected kind/role/input")
        if op["threshold"] != (role == "hidden" or inp == "bitplane"):
            raise bad(f"architecture op {i}: inconsistent threshold flag")
        if op["bn"].get("class") not in _BN_CLASSES:
            raise bad(f"architecture op {i}: unknown batch norm {op['bn'].get('class')!r}")
        for key in ("K", "F"):
            if not isinstance(op[key], int) or op[key] < 1:
                raise bad(f"architecture op {i}: bad {key}")
        if op["kind"] == "conv":
            try:
                C, (kh, kw) = op["C"], op["kernel"]
                _, H, W = op["in_shape"]
                Ho = Fn.conv_output_size(H, kh, op["stride"], op["padding"])
                Wo = Fn.conv_output_size(W, kw, op["stride"], op["padding"])
                out = (op["F"], Ho, Wo)
                if op["pool"] is not None:
                    pk, ps = op["pool"]["kernel"], op["pool"]["stride"]
                    out = (op["F"], _pool_size(Ho, pk, ps), _pool_size(Wo, pk, ps))
            except (TypeError, ValueError, KeyError) as exc:
                raise bad(f"architecture op {i}: malformed convolution ({exc})") from None
            if (op["K"] != C * kh * kw or op["in_shape"][0] != C or min(out) < 1
                    or tuple(op["conv_shape"]) != (op["F"], Ho, Wo)
                    or tuple(op["out_shape"]) != out):
                raise bad(f"architecture op {i}: inconsistent convolution shapes")
            if tuple(op["in_shape"]) != prev_out:
                raise bad(f"architecture op {i}: input shape {op['in_shape']} != {list(prev_out)}")
        else:
            if int(np.prod(prev_out)) != op["K"] or op["pool"] is not None or \
                    tuple(op["out_shape"]) != (op["F"],):
                raise bad(f"architecture op {i}: K={op['K']} but {int(np.prod(prev_out))} "
                          "features come in (or a bad dense op)")
        prev_out = tuple(op["out_shape"])
    if ops[-1]["kind"] != "dense" or header.get("n_classes") != ops[-1]["F"]:
        raise bad("the last op must be dense with n_classes outputs")


def _read(path):
    path = os.fspath(path)
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: not a readable .bnn file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a .bnn file (a single .npy array, not an .npz archive)")
    try:
        with z:
            files = {k: z[k] for k in z.files}
    except Exception as exc:
        raise ValueError(f"{path}: corrupted or truncated .bnn file "
                         f"({type(exc).__name__}: {exc})") from exc
    if "header" not in files:
        raise ValueError(f"{path}: no 'header' entry: not a minibnn packed model")
    h = files.pop("header")
    if h.shape != () or h.dtype.kind != "U":
        raise ValueError(f"{path}: 'header' is not a JSON string")
    try:
        header = json.loads(str(h))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: header is not valid JSON ({exc})") from exc
    return header, files


# ---------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------

def _maxpool_int(s, k, stride):
    """Max-pool of int32 (N, C, H, W), floor mode, like maxpool2d_forward."""
    N, C, H, W = s.shape
    Ho, Wo = _pool_size(H, k, stride), _pool_size(W, k, stride)
    out = None
    for i in range(k):
        for j in range(k):
            tap = s[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
            out = tap.copy() if out is None else np.maximum(out, tap, out=out)
    return out


class _Op:
    """Runtime form of one header op (arrays bound, weights prepared)."""

    def __init__(self, spec, arrays, i):
        self.spec = spec
        self.i = i
        self.kind, self.role, self.input = spec["kind"], spec["role"], spec["input"]
        self.K, self.F = spec["K"], spec["F"]
        self.conv = self.kind == "conv"
        self.pool = spec["pool"]
        self.conv_shape = tuple(spec["conv_shape"])
        self.out_shape = tuple(spec["out_shape"])
        name = f"op{i}"
        self.words = arrays[f"{name}.weights"]
        self.threshold = spec["threshold"]
        self.prepared = None
        if self.conv:
            kh, kw = spec["kernel"]
            self.stride, self.padding = spec["stride"], spec["padding"]
            self.w_pm1 = np.ascontiguousarray(
                kernels.unpack(self.words, self.K).reshape(self.F, spec["C"], kh, kw))
        if self.threshold:
            self.t = arrays[f"{name}.thresholds"]
            self.flip = arrays[f"{name}.flip"].astype(bool)
            spatial = int(np.prod(self.out_shape[1:])) if self.conv else 1
            self.t_flat = np.ascontiguousarray(np.repeat(self.t, spatial))
            self.t4 = self.t.reshape(1, -1, 1, 1) if self.conv else None
            self.bn = None
        else:
            self.bias = arrays.get(f"{name}.bias")
            cfg = spec["bn"]
            bn = _BN_CLASSES[cfg["class"]](cfg["num_features"], spatial=cfg["spatial"],
                                          momentum=cfg["momentum"], eps=cfg["eps"])
            for key in _BN_KEYS:
                v = arrays[f"{name}.bn.{key}"]
                if key in bn.params:
                    bn.params[key] = v
                else:
                    bn.buffers[key] = v
            self.bn = bn
            if self.input == "real" and not self.conv:
                # sign(w) as the float model holds it: (K, F) float32, C-contiguous
                self.wb = np.ascontiguousarray(kernels.unpack(self.words, self.K).T)

    def prepare(self, backend):
        if not self.conv and self.input != "real":
            self.prepared = kernels.prepare_weights(self.words, self.K, backend=backend)


class PackedModel:
    """A BNN as packed weights and integer thresholds; see the module docstring.

    Build with :meth:`from_model` or :meth:`load`; run with :meth:`predict`,
    :meth:`scores`, :meth:`integer_scores`.  ``backend`` (``"cpu"``, ``"reference"``,
    ``"cuda"`` or None for the default) is passed to the kernels; weights are prepared
    once per backend (:meth:`set_backend`).

    Attributes: ``header`` (dict), ``arrays`` (name -> ndarray), ``first_layer``,
    ``input_shape`` (per sample), ``n_classes``, ``backend``.
    """

    def __init__(self, header, arrays, backend=None, source="<packed model>"):
        _check_header(header, source)
        arrays = dict(arrays)
        ops = header["architecture"]
        expected = {}
        for i, op in enumerate(ops):
            expected.update(_expected_arrays(op, i))
        missing = sorted(set(expected) - set(arrays))
        extra = sorted(set(arrays) - set(expected))
        if missing or extra:
            raise ValueError(f"{source}: missing arrays {missing}, unexpected arrays {extra}")
        for name, (kind, shape) in expected.items():
            a = arrays[name]
            ok = (a.dtype.kind == "f" and a.dtype.itemsize >= 4) if kind == "f" else \
                a.dtype == np.dtype("<" + kind if kind != "u1" else "u1")
            if not ok or a.shape != shape:
                raise ValueError(f"{source}: array {name!r} is {a.dtype} {a.shape}, expected "
                                 f"{kind} {shape}")
        for i, op in enumerate(ops):
            w = arrays[f"op{i}.weights"]
            rem = op["K"] % 64
            if rem and np.any(w[:, -1] >> np.uint64(rem)):
                raise ValueError(f"{source}: op{i}.weights has nonzero padding bits")
            if op["threshold"] and np.any(arrays[f"op{i}.flip"] > 1):
                raise ValueError(f"{source}: op{i}.flip must be 0 or 1")
        self.header = header
        self.arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        self.first_layer = header["first_layer"]
        self.input_shape = tuple(header["input_shape"])
        self.n_classes = header["n_classes"]
        try:
            self.ops = [_Op(op, self.arrays, i) for i, op in enumerate(ops)]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{source}: malformed op ({type(exc).__name__}: {exc})") from None
        self.backend = None
        self.set_backend(backend)

    # -- construction -------------------------------------------------------
    @classmethod
    def from_model(cls, model, first_layer="float", input_shape=None, backend=None):
        """Fold a trained ``Sequential`` (see the module docstring for the supported
        layer sequences).  ``input_shape``: per-sample input shape, inferred when None
        (``(K,)`` for an MLP, the square image that fits for a ConvNet)."""
        header, arrays = _build(model, first_layer, input_shape)
        header["arrays"] = _array_table(arrays)
        header["sha256"] = _digest(arrays)
        return cls(header, arrays, backend=backend, source="from_model")

    @classmethod
    def load(cls, path, backend=None):
        """Read a ``.bnn`` file; ``ValueError`` naming the file for anything wrong with it."""
        path = os.fspath(path)
        header, arrays = _read(path)
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            fmt = header.get("format") if isinstance(header, dict) else None
            raise ValueError(f"{path}: format {fmt!r}, not {FORMAT_NAME!r}: not a minibnn packed model")
        if header.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {header.get('format_version')!r}, this "
                             f"minibnn reads version {FORMAT_VERSION}")
        if header.get("sha256") != _digest(arrays):
            raise ValueError(f"{path}: checksum mismatch: the arrays are corrupted")
        if header.get("arrays") != _array_table(arrays):
            raise ValueError(f"{path}: the array table in the header does not match the file")
        return cls(header, arrays, backend=backend, source=path)

    def save(self, path):
        """Write the ``.bnn`` file atomically (compressed .npz, see the module docstring)."""
        header = dict(self.header, arrays=_array_table(self.arrays), sha256=_digest(self.arrays))
        buf = io.BytesIO()
        np.savez_compressed(buf, header=np.array(json.dumps(header)), **self.arrays)
        atomic_write_bytes(path, buf.getvalue())
        return os.fspath(path)

    def set_backend(self, backend):
        """Prepare the dense weights for ``backend`` (validated now); returns self."""
        name = kernels.backend.resolve_name(backend)
        kernels.get_backend(name)
        if name != self.backend:
            for op in self.ops:
                op.prepare(name)
            self.backend = name
        return self

    # -- running ------------------------------------------------------------
    def _inputs(self, x):
        x = np.asarray(x)
        if x.ndim < 1:
            raise ValueError("input needs a batch axis")
        N = x.shape[0]
        first = self.ops[0]
        if first.conv:
            want = (N,) + tuple(first.spec["in_shape"])
            if x.shape != want:
                raise ValueError(f"input has shape {x.shape}, the model expects {want}")
        elif int(np.prod(x.shape[1:])) != first.K:
            raise ValueError(f"input has shape {x.shape}: {int(np.prod(x.shape[1:]))} values per "
                             f"sample, the model expects {first.K}")
        if self.first_layer == "bitplane":
            return pixels_from_input(x)
        if x.dtype == np.uint8:
            return _pixels_to_float(x)
        return x

    def _emit(self, op, nxt, sums=None, y=None):
        """What the next op reads: packed words (dense) or +-1 float32 NCHW (conv)."""
        N = (sums if sums is not None else y).shape[0]
        if nxt.conv:
            if sums is not None:
                return np.where(sums >= op.t4, np.float32(1), np.float32(-1))
            return sign(y)
        if sums is not None:
            return threshold_pack(sums.reshape(N, -1), op.t_flat)
        return kernels.pack(np.ascontiguousarray(y).reshape(N, -1))

    def _pool(self, op, s):
        if op.pool is None:
            return s
        k, st = op.pool["kernel"], op.pool["stride"]
        if not op.flip.any():
            return _maxpool_int(s, k, st)
        f4 = op.flip.reshape(1, -1, 1, 1)
        orig = np.where(f4, -s, s)                  # undo the folded negation
        m = _maxpool_int(orig, k, st)               # the float model's max-pool
        return np.where(f4, -m, m)                  # back to the flipped domain

    def _first(self, x):
        op, nxt = self.ops[0], self.ops[1]
        N = x.shape[0]
        if op.input == "real":
            if op.conv:
                y, _ = Fn.binary_conv2d_forward(x, op.w_pm1, op.bias, op.stride, op.padding,
                                                binary_input=False, backend=None)
                if op.pool is not None:
                    y, _ = Fn.maxpool2d_forward(y, op.pool["kernel"], op.pool["stride"])
            else:
                y, _ = Fn.binary_dense_forward(x.reshape(N, -1), op.wb, op.bias,
                                               binary_input=False, backend=None)
            y = op.bn.forward(y, training=False)
            return self._emit(op, nxt, y=y)
        # bit planes: exact integer u = 255 * (x . w_b), flips folded into the weights
        if op.conv:
            u = None
            for b in range(8):
                plane = np.where((x >> np.uint8(b)) & np.uint8(1), np.float32(1), np.float32(-1))
                g = kernels.binary_conv2d(plane, op.w_pm1, stride=op.stride, padding=op.padding,
                                          backend=self.backend)
                u = g if u is None else u + (g << b)
            u = self._pool(op, u)
        else:
            u = _bitplane_dense_u(np.ascontiguousarray(x.reshape(N, -1)), op.prepared, op.K,
                                  self.backend)
        return self._emit(op, nxt, sums=u)

    def _sums(self, op, act):
        if op.conv:
            s = kernels.binary_conv2d(act, op.w_pm1, stride=op.stride, padding=op.padding,
                                      backend=self.backend)
            return self._pool(op, s)
        return kernels.xnor_gemm(act, op.prepared, op.K, backend=self.backend)

    def _run(self, x):
        act = self._first(self._inputs(x))
        for op, nxt in zip(self.ops[1:-1], self.ops[2:]):
            act = self._emit(op, nxt, sums=self._sums(op, act))
        return self._sums(self.ops[-1], act)

    def _batched(self, fn, x, batch_size):
        x = np.asarray(x)
        if batch_size is None or len(x) <= batch_size:
            return fn(x)
        return np.concatenate([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])

    def integer_scores(self, x, batch_size=None):
        """The last layer's XNOR-popcount sums: (N, n_classes) int32, equal to the float
        model's values just before its last batch norm.

        x : (N, ...) inputs preprocessed as ``2*x/255-1`` (float) or uint8 pixels; for a
        ConvNet (N, C, H, W) = ``input_shape``.  ``batch_size``: process in chunks."""
        return self._batched(self._run, x, batch_size)

    def _scores_from_sums(self, s):
        op = self.ops[-1]
        v = s.astype(_compute_dtype(op.bias))
        if op.bias is not None:
            v = v + op.bias
        return op.bn.forward(v, training=False)

    def scores(self, x, batch_size=None):
        """Class scores (N, n_classes): the model's last batch norm (eval) of the integer
        sums -- equal to the float model's output bit for bit."""
        return self._batched(lambda c: self._scores_from_sums(self._run(c)), x, batch_size)

    def predict(self, x, batch_size=None):
        """Labels (N,) int64 = argmax of :meth:`scores`."""
        return self._batched(lambda c: np.argmax(self._scores_from_sums(self._run(c)), axis=1),
                             x, batch_size)

    # -- description ----------------------------------------------------------
    def nbytes(self):
        """Bytes of all arrays (uncompressed)."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    def __repr__(self):
        ops = ", ".join(f"{o.kind}({o.K}->{o.F})" for o in self.ops)
        return (f"PackedModel(first_layer={self.first_layer!r}, input_shape={self.input_shape}, "
                f"ops=[{ops}], backend={self.backend!r})")


def export(model, path, first_layer="float", input_shape=None):
    """Fold ``model`` (a trained Sequential) and write it to ``path`` as a ``.bnn`` file.

    first_layer : ``"float"`` or ``"bitplane"`` (see the module docstring).
    input_shape : per-sample input shape, inferred when None.
    Returns the :class:`PackedModel`.
    """
    packed = PackedModel.from_model(model, first_layer=first_layer, input_shape=input_shape)
    packed.save(path)
    return packed


def load(path, backend=None):
    """:meth:`PackedModel.load`."""
    return PackedModel.load(path, backend=backend)
