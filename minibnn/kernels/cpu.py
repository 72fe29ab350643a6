"""CPU backend: XNOR-popcount kernels compiled with ``numba.njit(parallel=True)``.

Two GEMM kernels live here:

* :func:`gemm_simple` -- the portable baseline: ``prange`` over rows, a scalar
  ``popcount(a ^ b)`` loop over words.  No production path calls it: it is the baseline
  row of ``benchmarks/bench_kernels.py`` and a second, simpler twin of the fast kernel in
  the tests.
* :func:`gemm_panels` -- the fast kernel.  The weights are pre-arranged
  (:func:`prepare_weights`) in *column panels* of 8 output columns, word-interleaved:
  ``panels[p, w, j]`` is word ``w`` of column ``8 p + j``.  A register-tiled micro-kernel
  written in LLVM vector IR (:func:`_make_tile`) keeps ``R x P`` vectors of 8 int64
  popcount accumulators in registers, broadcasts one activation word against ``P`` panel
  vectors, and does ``xor -> ctpop -> add`` on whole 512-bit vectors with no horizontal
  sums (``vpxorq / vpopcntq / vpaddq`` on AVX-512 VPOPCNTDQ machines; LLVM lowers the same
  IR to narrower instructions elsewhere, so it stays correct on any x86-64/ARM CPU).

Packed inference kernels (:func:`threshold_pack`, :func:`pack_bitplanes`,
:func:`bitplane_gemm`, the fused bit-plane GEMM on the same micro-kernels) are here too;
their NumPy twins are in :mod:`minibnn.kernels.reference`.

All functions here take already validated, C-contiguous arrays; the checks are in
:mod:`minibnn.kernels` (the public API).  Binary conventions:
:mod:`minibnn.kernels.bitpack`.

Shapes: ``a_words: (M, W) uint64``, ``b_words: (N, W) uint64``, ``W = ceil(K/64)``,
``out: (M, N) int32``.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 3.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .bitpack import check_padding_bits, n_words, popcount64, pack as _pack
from .geometry import conv_output_size, padding_correction
from .prepared import PreparedWeights

PANEL = 8          # output columns per panel: one 512-bit vector of uint64 words
TILE_R = 4         # activation rows per micro-kernel call
TILE_P = 3         # panels per micro-kernel call (24 output columns)
ROW_BLOCK = 128    # rows per parallel task (measured: 128 beats 32/64 at M=100..4096)


def pack(x):
    """See :func:`minibnn.kernels.bitpack.pack`."""
    return _pack(x)


# ---------------------------------------------------------------------------
# Baseline kernel
# ---------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def gemm_simple(a, b, k, out):
    """out[m, n] = k - 2 * sum_w popcount(a[m, w] ^ b[n, w]).  a: (M, W), b: (N, W)."""
    M, W = a.shape
    N = b.shape[0]
    for m in prange(M):
        for n in range(N):
            s = 0
            for w in range(W):
                s += popcount64(a[m, w] ^ b[n, w])
            out[m, n] = k - 2 * s


# ---------------------------------------------------------------------------
# Fast kernel: panels + LLVM vector micro-kernel
# ---------------------------------------------------------------------------

def prepare_weights(b_words, k):
    """(N, W) uint64 -> :class:`PreparedWeights` whose ``data`` is the (ceil(N/8), W, 8)
    uint64 panel array: ``data[p, w, j]`` is word w of column ``8 p + j``; columns past
    N are zero (their outputs are computed and discarded)."""
    N, W = b_words.shape
    NP = (N + PANEL - 1) // PANEL
    padded = np.zeros((NP * PANEL, W), dtype=np.uint64)
    padded[:N] = b_words
    panels = np.ascontiguousarray(padded.reshape(NP, PANEL, W).transpose(0, 2, 1))
    return PreparedWeights("cpu", panels, N, k)


def check_prepared(pw):
    """``ValueError`` unless ``pw.data`` is the panel layout :func:`prepare_weights` makes
    for ``pw.n`` columns of ``pw.k`` bits (the GEMM trusts it: Numba does not bounds-check)."""
    d = pw.data
    want = ((pw.n + PANEL - 1) // PANEL, n_words(pw.k), PANEL)
    if not (isinstance(d, np.ndarray) and d.dtype == np.uint64 and d.shape == want
            and d.flags.c_contiguous):
        got = f"{type(d).__name__} {getattr(d, 'dtype', '')} {getattr(d, 'shape', '')}"
        raise ValueError(f"prepared weights: data must be C-contiguous uint64 panels of shape "
                         f"{want} for n={pw.n}, k={pw.k}; got {got}")
    check_padding_bits(d.transpose(0, 2, 1), pw.k, "prepared weights")  # (NP, 8, W) view


def _make_tile(R, P):
    """Build an intrinsic ``tile(A, a_off, Bp, b_off, W, acc)`` for an R x P register tile.

    ``A`` is the flat activation words (row m at ``a_off + r * W``), ``Bp`` the flat
    panels (panel p of the tile at ``b_off + p * W * 8``).  After the loop over the W
    words, popcount accumulator ``(r, p)`` (8 int64 lanes) is stored to
    ``acc[(r * P + p) * 8 : +8]``.
    """

    @intrinsic
    def tile(typingctx, A, a_off, Bp, b_off, W, acc):
        sig = types.void(A, a_off, Bp, b_off, W, acc)

        def codegen(context, builder, signature, args):
            A_, a_off_, Bp_, b_off_, W_, acc_ = args
            i64 = ir.IntType(64)
            i32 = ir.IntType(32)
            v8 = ir.VectorType(i64, PANEL)
            a_ptr = context.make_array(signature.args[0])(context, builder, A_).data
            b_ptr = context.make_array(signature.args[2])(context, builder, Bp_).data
            s_ptr = context.make_array(signature.args[5])(context, builder, acc_).data
            ctpop = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v8, [v8]), "llvm.ctpop.v8i64")
            zero_v = ir.Constant(v8, None)
            undef_v = ir.Constant(v8, ir.Undefined)
            splat_mask = ir.Constant(ir.VectorType(i32, PANEL), [0] * PANEL)
            panel_stride = builder.mul(W_, ir.Constant(i64, PANEL))

            entry = builder.block
            loop = builder.append_basic_block("xnor_tile_loop")
            done = builder.append_basic_block("xnor_tile_done")
            builder.cbranch(builder.icmp_signed(">", W_, ir.Constant(i64, 0)), loop, done)

            # loop body: one word w of R activation rows against P panel vectors
            builder.position_at_end(loop)
            w = builder.phi(i64, name="w")
            w.add_incoming(ir.Constant(i64, 0), entry)
            accs = [[builder.phi(v8) for _ in range(P)] for _ in range(R)]
            for row in accs:
                for phi in row:
                    phi.add_incoming(zero_v, entry)
            bvec = []
            for p in range(P):
                off = builder.add(builder.add(b_off_, builder.mul(panel_stride, ir.Constant(i64, p))),
                                  builder.mul(w, ir.Constant(i64, PANEL)))
                vptr = builder.bitcast(builder.gep(b_ptr, [off]), v8.as_pointer())
                bvec.append(builder.load(vptr, align=8))
            new = []
            for r in range(R):
                aoff = builder.add(builder.add(a_off_, builder.mul(W_, ir.Constant(i64, r))), w)
                aw = builder.load(builder.gep(a_ptr, [aoff]), align=8)
                a_splat = builder.shuffle_vector(
                    builder.insert_element(undef_v, aw, ir.Constant(i32, 0)), undef_v, splat_mask)
                row = []
                for p in range(P):
                    cnt = builder.call(ctpop, [builder.xor(a_splat, bvec[p])])
                    row.append(builder.add(accs[r][p], cnt))
                new.append(row)
            w_next = builder.add(w, ir.Constant(i64, 1))
            loop_end = builder.block
            w.add_incoming(w_next, loop_end)
            for r in range(R):
                for p in range(P):
                    accs[r][p].add_incoming(new[r][p], loop_end)
            builder.cbranch(builder.icmp_signed("<", w_next, W_), loop, done)

            # after the loop: store the accumulators (zeros when W == 0)
            builder.position_at_end(done)
            results = []
            for r in range(R):
                for p in range(P):
                    res = builder.phi(v8)  # LLVM wants every phi before the first store
                    res.add_incoming(zero_v, entry)
                    res.add_incoming(new[r][p], loop_end)
                    results.append(res)
            for i, res in enumerate(results):
                dst = builder.gep(s_ptr, [ir.Constant(i64, i * PANEL)])
                builder.store(res, builder.bitcast(dst, v8.as_pointer()), align=8)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile_RP = _make_tile(TILE_R, TILE_P)
_tile_R1 = _make_tile(TILE_R, 1)
_tile_1P = _make_tile(1, TILE_P)
_tile_11 = _make_tile(1, 1)


@njit(cache=True, inline="always")
def _store_tile(acc, R, P, m, col0, k, out):
    """Write ``k - 2 * popcount`` for the tile's rows and its columns below N.

    The full-width branch has constant trip counts, so LLVM turns it into vector stores;
    that matters when W is small (a conv layer's K = 9 * C is only tens of words).
    """
    N = out.shape[1]
    if col0 + P * PANEL <= N:
        for r in range(R):
            for p in range(P):
                for j in range(PANEL):
                    out[m + r, col0 + p * PANEL + j] = k - 2 * acc[(r * P + p) * PANEL + j]
    else:
        for r in range(R):
            for p in range(P):
                for j in range(PANEL):
                    c = col0 + p * PANEL + j
                    if c < N:
                        out[m + r, c] = k - 2 * acc[(r * P + p) * PANEL + j]


@njit(cache=True, parallel=True)
def gemm_panels(a, panels, k, out):
    """Fast XNOR GEMM.

    a: (M, W) uint64 C-contiguous; panels: (NP, W, 8) uint64 from :func:`prepare_weights`;
    out: (M, N) int32 with ``8 * (NP - 1) < N <= 8 * NP``.
    ``out[m, n] = k - 2 * sum_w popcount(a[m, w] ^ column_n[w])``.

    Work is split into tasks of (ROW_BLOCK rows) x (TILE_P panels); a task keeps its
    panels in L1 and walks its rows TILE_R at a time.
    """
    M, W = a.shape
    NP = panels.shape[0]
    af = a.reshape(M * W)
    bf = panels.reshape(NP * W * PANEL)
    n_groups = (NP + TILE_P - 1) // TILE_P
    m_blocks = (M + ROW_BLOCK - 1) // ROW_BLOCK
    for t in prange(n_groups * m_blocks):
        g = t % n_groups
        mb = t // n_groups
        acc = np.empty(TILE_R * TILE_P * PANEL, dtype=np.int64)
        p0 = g * TILE_P
        full_group = p0 + TILE_P <= NP
        m0 = mb * ROW_BLOCK
        m1 = min(M, m0 + ROW_BLOCK)
        m = m0
        # rows TILE_R at a time, then the leftover rows one at a time
        while m + TILE_R <= m1:
            if full_group:
                _tile_RP(af, m * W, bf, p0 * W * PANEL, W, acc)
                _store_tile(acc, TILE_R, TILE_P, m, p0 * PANEL, k, out)
            else:
                for p in range(p0, NP):
                    _tile_R1(af, m * W, bf, p * W * PANEL, W, acc)
                    _store_tile(acc, TILE_R, 1, m, p * PANEL, k, out)
            m += TILE_R
        while m < m1:
            if full_group:
                _tile_1P(af, m * W, bf, p0 * W * PANEL, W, acc)
                _store_tile(acc, 1, TILE_P, m, p0 * PANEL, k, out)
            else:
                for p in range(p0, NP):
                    _tile_11(af, m * W, bf, p * W * PANEL, W, acc)
                    _store_tile(acc, 1, 1, m, p * PANEL, k, out)
            m += 1


def xnor_gemm(a_words, b, k, out):
    """a_words (M, W) uint64; ``b`` (N, W) uint64 words or a :class:`PreparedWeights`;
    out (M, N) int32, filled and returned."""
    if not isinstance(b, PreparedWeights):
        b = prepare_weights(b, k)
    if a_words.shape[0] and b.n:
        gemm_panels(a_words, b.data, k, out)
    return out


# ---------------------------------------------------------------------------
# Binary convolution: packed im2col + gemm_panels + exact zero-padding correction
# ---------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _pack_nchw_to_padded_nhwc(x, padding, out):
    """Signs of x (N, C, H, W) float -> out (N, H + 2p, W + 2p, ceil(C/64)) uint64.

    Channels are packed along the last axis (bit c % 64 of word c // 64).  Border pixels
    get bit 1 (+1) for every real channel -- the packed stand-in for the zero padding,
    corrected afterwards (convention 6 in :mod:`minibnn.kernels.bitpack`).
    Returns 1 if x holds a NaN.
    """
    N, C, H, Wd = x.shape
    Hp = out.shape[1]
    Wp = out.shape[2]
    Wc = out.shape[3]
    nan_seen = np.zeros(N * Hp, dtype=np.uint8)
    for t in prange(N * Hp):
        n = t // Hp
        hp = t % Hp
        h = hp - padding
        if h < 0 or h >= H:
            for wp in range(Wp):
                for cw in range(Wc):
                    nbits = min(64, C - cw * 64)
                    out[n, hp, wp, cw] = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64(64 - nbits)
            continue
        acc = np.zeros(Wd, dtype=np.uint64)
        bad = False
        for cw in range(Wc):
            acc[:] = 0
            nbits = min(64, C - cw * 64)
            for j in range(nbits):
                bit = np.uint64(1) << np.uint64(j)
                for w in range(Wd):
                    v = x[n, cw * 64 + j, h, w]
                    if v != v:
                        bad = True
                    acc[w] |= bit if v >= 0 else np.uint64(0)
            full = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64(64 - nbits)
            for wp in range(padding):
                out[n, hp, wp, cw] = full
                out[n, hp, Wp - 1 - wp, cw] = full
            for w in range(Wd):
                out[n, hp, w + padding, cw] = acc[w]
        nan_seen[t] = 1 if bad else 0
    return nan_seen.max()


@njit(cache=True, parallel=True)
def _im2col_panels(xb, KH, KW, stride, Ho, Wo, cols):
    """xb (N, Hp, Wp, Wc) packed -> cols (N, ceil(Ho*Wo/8), KH*KW*Wc, 8): im2col rows laid
    out directly as :func:`gemm_panels` column panels (output position q = 8 * panel + lane).

    K runs tap-major, channel-minor: word ``(kh * KW + kw) * Wc + cw`` of position
    (oh, ow) is word cw of pixel (oh * stride + kh, ow * stride + kw).  Lanes past
    Ho * Wo are zero (their outputs are discarded).
    """
    N = xb.shape[0]
    Wc = xb.shape[3]
    NPq = cols.shape[1]
    P = Ho * Wo
    for t in prange(N * NPq):
        n = t // NPq
        pp = t % NPq
        for j in range(8):
            q = pp * 8 + j
            if q >= P:
                for col in range(cols.shape[2]):
                    cols[n, pp, col, j] = 0
                continue
            oh = q // Wo
            ow = q % Wo
            col = 0
            for kh in range(KH):
                for kw in range(KW):
                    for cw in range(Wc):
                        cols[n, pp, col, j] = xb[n, oh * stride + kh, ow * stride + kw, cw]
                        col += 1


@njit(cache=True, parallel=True)
def _subtract_border(out, qs, corr):
    """out (N, F, Ho*Wo) int32 -= corr (len(qs), F) at the border positions qs only."""
    N, F, _ = out.shape
    for t in prange(N * F):
        n = t // F
        f = t % F
        for i in range(qs.shape[0]):
            out[n, f, qs[i]] -= corr[i, f]


def pack_conv_weights(w):
    """w (F, C, KH, KW) real -> (F, KH * KW * ceil(C/64)) uint64 in the im2col K order,
    plus S (F, KH, KW) int32 = sum_c sign(w[f, c, kh, kw])."""
    F, C, KH, KW = w.shape
    words = _pack(np.ascontiguousarray(np.transpose(w, (0, 2, 3, 1))))      # (F, KH, KW, Wc)
    s = np.where(w >= 0, 1, -1).sum(axis=1).astype(np.int32)
    return np.ascontiguousarray(words.reshape(F, -1)), s


def binary_conv2d(x, w, stride, padding):
    """See :func:`minibnn.kernels.binary_conv2d`.  x (N, C, H, W) float32/64 C-contiguous,
    w (F, C, KH, KW) real.  Returns (N, F, H', W') int32.

    Steps: pack x channel-wise with +1 borders -> im2col straight into column panels ->
    per image ``out[n] (F, H'W') = xnor(w_words, cols[n])`` -> subtract the border
    correction (convention 6 of :mod:`minibnn.kernels.bitpack`).
    """
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    Ho = conv_output_size(H, KH, stride, padding)
    Wo = conv_output_size(W, KW, stride, padding)
    P = Ho * Wo
    Wc = n_words(C)
    Kw = KH * KW * Wc
    xb = np.empty((N, H + 2 * padding, W + 2 * padding, Wc), dtype=np.uint64)
    if _pack_nchw_to_padded_nhwc(x, padding, xb):
        raise ValueError("binary_conv2d: x contains NaN, which has no sign")
    cols = np.empty((N, (P + PANEL - 1) // PANEL, Kw, PANEL), dtype=np.uint64)
    _im2col_panels(xb, KH, KW, stride, Ho, Wo, cols)
    w_words, s = pack_conv_weights(w)
    out = np.empty((N, F, P), dtype=np.int32)
    for n in range(N):
        gemm_panels(w_words, cols[n], KH * KW * C, out[n])
    qs, corr = padding_correction(s, H, W, stride, padding, Ho, Wo)
    if qs.size:
        _subtract_border(out, qs, corr)
    return out.reshape(N, F, Ho, Wo)


# ---------------------------------------------------------------------------
# Packed inference: threshold + pack, bit planes, fused bit-plane GEMM
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
    """s (N, D) int32, t (D,) int32, C-contiguous -> (N, ceil(D/64)) uint64 bits of s >= t.
    See :func:`minibnn.kernels.threshold_pack`."""
    out = np.empty((s.shape[0], n_words(s.shape[1])), dtype=np.uint64)
    if s.shape[0]:
        _threshold_pack_kernel(s, t, out)
    return out


@njit(cache=True, parallel=True)
def _bitplane_kernel(p, out):
    """p (N, K) uint8 -> out (8, N, ceil(K/64)) uint64: bit k of plane b = bit b of p[., k]."""
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
    """p (N, K) uint8 C-contiguous -> (8, N, ceil(K/64)) uint64 packed bit planes.
    See :func:`minibnn.kernels.pack_bitplanes`."""
    out = np.empty((8, p.shape[0], n_words(p.shape[1])), dtype=np.uint64)
    if p.shape[0]:
        _bitplane_kernel(p, out)
    return out


@njit(cache=True, parallel=True)
def bitplane_gemm_panels(planes, panels, k, out):
    """Fused bit-plane GEMM: ``out[m, n] = sum_b 2^b (k - 2 popcount(planes[b, m] ^
    column_n)) = 255 k - 2 sum_b 2^b popcount(...)``.

    planes (8, M, W) uint64 C-contiguous; panels (NP, W, 8) from :func:`prepare_weights`;
    out (M, N) int32.  Same task split and micro-kernels as :func:`gemm_panels`; the eight
    planes of a register tile are accumulated (shifted) before the single store, so no
    (8, M, N) intermediate exists.
    """
    M = planes.shape[1]
    W = planes.shape[2]
    NP = panels.shape[0]
    N = out.shape[1]
    pf = planes.reshape(8 * M * W)
    bf = panels.reshape(NP * W * PANEL)
    n_groups = (NP + TILE_P - 1) // TILE_P
    m_blocks = (M + ROW_BLOCK - 1) // ROW_BLOCK
    L = TILE_R * TILE_P * PANEL
    for t in prange(n_groups * m_blocks):
        g = t % n_groups
        mb = t // n_groups
        acc = np.empty(L, dtype=np.int64)
        tot = np.empty(L, dtype=np.int64)
        p0 = g * TILE_P
        n_p = min(TILE_P, NP - p0)
        m0 = mb * ROW_BLOCK
        m1 = min(M, m0 + ROW_BLOCK)
        m = m0
        while m < m1:
            R = min(TILE_R, m1 - m)
            tot[:] = 0
            for b in range(8):
                base = (b * M + m) * W
                if R == TILE_R and n_p == TILE_P:
                    _tile_RP(pf, base, bf, p0 * W * PANEL, W, acc)
                    for i in range(L):
                        tot[i] += acc[i] << b
                else:
                    for r in range(R):
                        for pp in range(n_p):
                            _tile_11(pf, base + r * W, bf, (p0 + pp) * W * PANEL, W, acc)
                            o = (r * TILE_P + pp) * PANEL
                            for j in range(PANEL):
                                tot[o + j] += acc[j] << b
            for r in range(R):
                for pp in range(n_p):
                    for j in range(PANEL):
                        c = (p0 + pp) * PANEL + j
                        if c < N:
                            out[m + r, c] = 255 * k - 2 * tot[(r * TILE_P + pp) * PANEL + j]
            m += R


def bitplane_gemm(planes, b, k, out):
    """planes (8, M, W) uint64; ``b`` (N, W) uint64 words or a :class:`PreparedWeights`;
    out (M, N) int32, filled and returned.  See :func:`minibnn.kernels.bitplane_gemm`."""
    if not isinstance(b, PreparedWeights):
        b = prepare_weights(b, k)
    if planes.shape[1] and b.n:
        bitplane_gemm_panels(planes, b.data, k, out)
    return out
