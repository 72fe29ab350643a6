"""Float kernels on ``numba.cuda`` device arrays: a register-tiled SGEMM, element-wise
maps, per-feature reductions, unfolding, pooling and the loss kernels.

These are the float halves of a training step on the GPU (the binary halves -- packing,
the XNOR GEMM, the packed convolution -- are in :mod:`minibnn.kernels.cuda`).
:mod:`minibnn.functional_cuda` and :mod:`minibnn.losses_cuda` call them; they are the
device twins of the NumPy expressions in :mod:`minibnn.functional` and
:mod:`minibnn.losses`, tested against them in ``tests/test_functional_cuda.py``.

Conventions: every array argument is a C-contiguous **float32** device array unless
stated (index arrays int32/int64, flags int32); the caller (functional_cuda) validates
shapes and dtypes, because Numba does not bounds-check.  Launches are asynchronous on the
default stream; nothing here synchronizes except the helpers that return host values.
Element-wise kernels walk a flattened array with a grid-stride loop
(``ELEM_THREADS`` threads per block, at most ``ELEM_MAX_BLOCKS`` blocks, from
:mod:`minibnn.kernels.cuda`, smaller under the simulator).

SGEMM (:func:`sgemm`): ``C (M, N) = op(A) @ op(B) (+ bias[n])`` with ``op`` the identity
or the transpose, chosen per operand at compile time (so ``dout @ w.T`` and
``x.T @ dout`` read w and x in place, without a transposed copy).  A block of
``16 x 16`` threads computes a ``128 x 128`` tile (``8 x 8`` outputs per thread, rows
``ty + 16 i``, columns ``tx + 16 j``: broadcast reads of A's tile, conflict-free reads of
B's, coalesced stores) from K stages of 8 held in shared memory; problems too small to
fill the GPU with such tiles (e.g. a batch of 100 rows) take ``64 x 64`` tiles (``4 x 4``
per thread, K stages of 16).  The staging loads are coalesced whichever operand is
transposed: consecutive threads read consecutive addresses of the stored array.
Accumulation is float32, in K order within a thread: results differ from BLAS by float32
rounding only (the tests allow ``rtol 1e-5``-scale errors times sqrt(K)).

Reductions (per feature of ``(N, F)`` or per channel of ``(N, C, H, W)``, both viewed as
``(A, C, B)`` with the reduced axes A and B) run one block per feature, accumulate in
float64 and reduce the block in shared memory in a fixed order: deterministic.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Alg. 1 (the training
step these kernels run) and Sec. 3 (GPU kernels); Ioffe & Szegedy 2015 (batch norm).
"""

import functools
import math
from typing import NamedTuple

import numpy as np

from . import cuda as kc

cuda = kc.cuda
if cuda is not None:
    from numba import float32, float64

SIMULATOR = kc.SIMULATOR
ELEM_THREADS = kc.ELEM_THREADS
ELEM_MAX_BLOCKS = kc.ELEM_MAX_BLOCKS
RED_THREADS = 4 if SIMULATOR else 256           # threads of a per-feature reduction block
# (the simulator: every barrier polls every Python thread of the block, so a
# reduction block of 4 threads is ~10x faster than one of 32 and still exercises the
# shared-memory tree)


class SgemmConfig(NamedTuple):
    """``tx x ty`` threads, ``rm x rn`` outputs each, ``bk`` K values per shared stage."""
    tx: int
    ty: int
    rm: int
    rn: int
    bk: int


SGEMM_BIG = SgemmConfig(16, 16, 8, 8, 8)        # 128 x 128 tile
SGEMM_SMALL = SgemmConfig(16, 16, 4, 4, 16)     # 64 x 64 tile
SGEMM_SIM = SgemmConfig(4, 4, 2, 2, 4)          # 8 x 8 tile: tiny test shapes span blocks
#: below this many 128 x 128 blocks the GPU (132 SMs on an H100/H200) is under-filled
BIG_MIN_BLOCKS = 264


def _blocks(n, per):
    return (n + per - 1) // per


def elem_grid(total):
    """Blocks of an element-wise launch over ``total`` items (grid-stride beyond)."""
    return max(1, min(_blocks(total, ELEM_THREADS), ELEM_MAX_BLOCKS))


def flat(a):
    """1-D view of a C-contiguous device array (no copy)."""
    return a.reshape(a.size)


# ---------------------------------------------------------------------------
# SGEMM
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _make_sgemm(cfg, ta, tb):
    """Kernel ``(A, B, C, bias, has_bias)`` for ``C = op(A) @ op(B) + bias``:
    op(A) is ``A`` (M, K) or, with ``ta``, ``A.T`` of a stored (K, M); likewise B (K, N)
    or, with ``tb``, a stored (N, K)."""
    TX, TY, RM, RN, BK = cfg
    BM, BN, NT = TY * RM, TX * RN, TX * TY
    LA, LB = BM * BK // NT, BN * BK // NT
    TA, TB = bool(ta), bool(tb)
    if BM * BK % NT or BN * BK % NT:
        raise ValueError(f"bad SGEMM config {cfg}")

    @cuda.jit
    def sgemm_kernel(A, B, C, bias, has_bias):
        M = C.shape[0]
        N = C.shape[1]
        K = A.shape[0] if TA else A.shape[1]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        As = cuda.shared.array((BK, BM), float32)
        Bs = cuda.shared.array((BK, BN), float32)
        acc = cuda.local.array((RM, RN), float32)
        a = cuda.local.array(RM, float32)
        b = cuda.local.array(RN, float32)
        for i in range(RM):
            for j in range(RN):
                acc[i, j] = float32(0.0)
        for k0 in range(0, K, BK):
            for l in range(LA):
                idx = l * NT + tid
                if TA:                      # stored (K, M): consecutive threads along M
                    kk = idx // BM
                    mm = idx - kk * BM
                    v = float32(0.0)
                    if m0 + mm < M and k0 + kk < K:
                        v = A[k0 + kk, m0 + mm]
                else:                       # stored (M, K): consecutive threads along K
                    mm = idx // BK
                    kk = idx - mm * BK
                    v = float32(0.0)
                    if m0 + mm < M and k0 + kk < K:
                        v = A[m0 + mm, k0 + kk]
                As[kk, mm] = v
            for l in range(LB):
                idx = l * NT + tid
                if TB:                      # stored (N, K)
                    nn = idx // BK
                    kk = idx - nn * BK
                    v = float32(0.0)
                    if n0 + nn < N and k0 + kk < K:
                        v = B[n0 + nn, k0 + kk]
                else:                       # stored (K, N)
                    kk = idx // BN
                    nn = idx - kk * BN
                    v = float32(0.0)
                    if n0 + nn < N and k0 + kk < K:
                        v = B[k0 + kk, n0 + nn]
                Bs[kk, nn] = v
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(RM):
                    a[i] = As[kk, ty + i * TY]
                for j in range(RN):
                    b[j] = Bs[kk, tx + j * TX]
                for i in range(RM):
                    for j in range(RN):
                        acc[i, j] += a[i] * b[j]
            cuda.syncthreads()
        for i in range(RM):
            m = m0 + ty + i * TY
            if m < M:
                for j in range(RN):
                    n = n0 + tx + j * TX
                    if n < N:
                        v = acc[i, j]
                        if has_bias:
                            v += bias[n]
                        C[m, n] = v

    return sgemm_kernel


_DUMMY = {}


def dummy_f32():
    """A 1-element float32 device array standing for "no bias" (kernels need an array)."""
    if "f32" not in _DUMMY:
        _DUMMY["f32"] = cuda.to_device(np.zeros(1, dtype=np.float32))
    return _DUMMY["f32"]


def sgemm(a, b, out, trans_a=False, trans_b=False, bias=None, config=None):
    """``out (M, N) = op(a) @ op(b) (+ bias)`` on float32 device arrays; returns ``out``.

    a : (M, K), or (K, M) with ``trans_a``.  b : (K, N), or (N, K) with ``trans_b``.
    bias : (N,) or None.  K = 0 gives zeros (plus bias).  Asynchronous.
    """
    M, N = out.shape
    K = a.shape[0] if trans_a else a.shape[1]
    Ma = a.shape[1] if trans_a else a.shape[0]
    Kb, Nb = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if Ma != M or Nb != N or Kb != K:
        raise ValueError(f"sgemm: op(a) is ({Ma}, {K}), op(b) is ({Kb}, {Nb}), out is {out.shape}")
    if M == 0 or N == 0:
        return out
    if config is None:
        if SIMULATOR:
            config = SGEMM_SIM
        else:
            big = _blocks(M, 128) * _blocks(N, 128)
            config = SGEMM_BIG if big >= BIG_MIN_BLOCKS else SGEMM_SMALL
    cfg = SgemmConfig(*config)
    kern = _make_sgemm(cfg, bool(trans_a), bool(trans_b))
    grid = (_blocks(N, cfg.tx * cfg.rn), _blocks(M, cfg.ty * cfg.rm))
    if grid[1] > kc.MAX_GRID_Y:
        raise ValueError(f"sgemm: M = {M} rows is too many for one launch")
    has_bias = bias is not None
    kern[grid, (cfg.tx, cfg.ty)](a, b, out, bias if has_bias else dummy_f32(), has_bias)
    return out


# ---------------------------------------------------------------------------
# element-wise maps (1-D views of same-size arrays)
# ---------------------------------------------------------------------------

if cuda is not None:
    @cuda.jit
    def sign_kernel(x, out, flag):
        """out = +1 where x >= 0 else -1 (sign(0) = +1); flag[0] = 1 if a NaN is read."""
        for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = x[t]
            if v >= 0:
                out[t] = float32(1.0)
            else:
                out[t] = float32(-1.0)
                if v != v:
                    flag[0] = 1

    @cuda.jit
    def ste_kernel(dout, x, out):
        """out = dout * 1{|x| <= 1} (the hard-tanh gate of the STE)."""
        for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = x[t]
            if v <= 1.0 and v >= -1.0:
                out[t] = dout[t]
            else:
                out[t] = float32(0.0)

    @cuda.jit
    def clip_kernel(x, out):
        """out = clip(x, -1, 1) (NaN stays NaN, like np.clip)."""
        for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = x[t]
            if v > 1.0:
                v = float32(1.0)
            elif v < -1.0:
                v = float32(-1.0)
            out[t] = v

    @cuda.jit
    def mul_kernel(a, b, out):
        """out = a * b."""
        for t in range(cuda.grid(1), a.size, cuda.gridsize(1)):
            out[t] = a[t] * b[t]

    @cuda.jit
    def cast_kernel(x, out):
        """out (float32) = x (any real dtype)."""
        for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            out[t] = float32(x[t])

    @cuda.jit
    def check_pm1_kernel(x, flag):
        """flag[0] = 1 if some entry is not exactly +1 or -1."""
        for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = x[t]
            if v != 1.0 and v != -1.0:
                flag[0] = 1

    @cuda.jit
    def nonfinite_kernel(x, counts):
        """counts[0] += number of NaN, counts[1] += number of +-inf (int32)."""
        for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = x[t]
            if v != v:
                cuda.atomic.add(counts, 0, 1)
            elif v == math.inf or v == -math.inf:
                cuda.atomic.add(counts, 1, 1)

    @cuda.jit
    def int_to_float_kernel(acc, out, bias, has_bias, inner):
        """out[t] = float(acc[t]) (+ bias[(t // inner) % F]), F = bias.size: (M, F) with
        inner = 1, (N, F, H', W') with inner = H' W'."""
        F = bias.size
        for t in range(cuda.grid(1), acc.size, cuda.gridsize(1)):
            v = float32(acc[t])
            if has_bias:
                v += bias[(t // inner) % F]
            out[t] = v

    @cuda.jit(device=True)
    def uniform(seed, t):
        """A U[0, 1) float64 from the 64-bit ``seed`` and the element index ``t``:
        splitmix64 (Steele, Lea & Flood 2014; the seeding function of xoroshiro128+) of
        ``seed + (t + 1) * golden``, top 53 bits.  Counter-based: no per-thread state,
        any grid, the same draws whatever the launch shape."""
        z = seed + np.uint64(t + 1) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        return float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)

    @cuda.jit
    def dropout_kernel(x, out, mask, seed, p, scale):
        """Inverted dropout: mask = scale * 1{u >= p}, u = uniform(seed, t); out = x mask."""
        for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            mk = scale if uniform(seed, t) >= p else float32(0.0)
            mask[t] = mk
            out[t] = x[t] * mk

    @cuda.jit
    def stochastic_sign_kernel(x, out, seed, flag):
        """out = +1 if u < hard_sigmoid(x) else -1, u = uniform(seed, t) (Eq. 2);
        flag[0] = 1 on NaN."""
        for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = float64(x[t])
            if v != v:
                flag[0] = 1
            hs = (v + 1.0) * 0.5
            hs = min(1.0, max(0.0, hs))
            out[t] = float32(1.0) if uniform(seed, t) < hs else float32(-1.0)

    @cuda.jit
    def gather_rows_kernel(src, idx, out):
        """out[r, :] = src[idx[r], :] for 2-D src (the batch of a dataset on device)."""
        R = out.shape[0]
        D = out.shape[1]
        for t in range(cuda.grid(1), R * D, cuda.gridsize(1)):
            r = t // D
            out[r, t - r * D] = src[idx[r], t - r * D]

    @cuda.jit
    def gather_labels_kernel(src, idx, out):
        for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            out[t] = src[idx[t]]

    @cuda.jit
    def copy2d_kernel(x, out):
        """out = x for a strided 2-D x (out C-contiguous)."""
        R = out.shape[0]
        D = out.shape[1]
        for t in range(cuda.grid(1), R * D, cuda.gridsize(1)):
            r = t // D
            out[r, t - r * D] = x[r, t - r * D]


def launch_elem(kernel, total, *args):
    """Launch an element-wise grid-stride ``kernel(*args)`` covering ``total`` items."""
    if total:
        kernel[elem_grid(total), ELEM_THREADS](*args)


def zeros_flag(n=1):
    return cuda.to_device(np.zeros(n, dtype=np.int32))


# ---------------------------------------------------------------------------
# per-feature reductions: x viewed as (A, C, B), reduce over A and B for each c
# ---------------------------------------------------------------------------

if cuda is not None:
    @cuda.jit(device=True)
    def _block_sum(sh, v):
        """Sum of ``v`` over the block (RED_THREADS threads), via shared ``sh``; every
        thread gets the total."""
        tid = cuda.threadIdx.x
        sh[tid] = v
        cuda.syncthreads()
        s = RED_THREADS // 2
        while s > 0:
            if tid < s:
                sh[tid] += sh[tid + s]
            cuda.syncthreads()
            s //= 2
        tot = sh[0]
        cuda.syncthreads()
        return tot

    @cuda.jit
    def chan_sum_kernel(x, y, s1, s2, with_y):
        """x, y (A, C, B): s1[c] = sum x[:, c, :]; with_y: s2[c] = sum (x * y)[:, c, :]."""
        A = x.shape[0]
        B = x.shape[2]
        c = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        sh = cuda.shared.array(RED_THREADS, float64)
        acc1 = float64(0.0)
        acc2 = float64(0.0)
        for t in range(tid, A * B, RED_THREADS):
            a = t // B
            b = t - a * B
            v = float64(x[a, c, b])
            acc1 += v
            if with_y:
                acc2 += v * float64(y[a, c, b])
        tot1 = _block_sum(sh, acc1)
        tot2 = _block_sum(sh, acc2)
        if tid == 0:
            s1[c] = tot1
            if with_y:
                s2[c] = tot2

    @cuda.jit
    def chan_mean_var_kernel(x, mean, var):
        """x (A, C, B) -> batch mean and biased variance per c (two passes, float64)."""
        A = x.shape[0]
        B = x.shape[2]
        m = A * B
        c = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        sh = cuda.shared.array(RED_THREADS, float64)
        acc = float64(0.0)
        for t in range(tid, m, RED_THREADS):
            a = t // B
            acc += float64(x[a, c, t - a * B])
        mu = _block_sum(sh, acc) / m
        acc = float64(0.0)
        for t in range(tid, m, RED_THREADS):
            a = t // B
            d = float64(x[a, c, t - a * B]) - mu
            acc += d * d
        v = _block_sum(sh, acc) / m
        if tid == 0:
            mean[c] = mu
            var[c] = v

    @cuda.jit
    def sum_all_kernel(x, out, slot):
        """One block: out[slot] = sum of the 1-D x (float64 accumulation)."""
        tid = cuda.threadIdx.x
        sh = cuda.shared.array(RED_THREADS, float64)
        acc = float64(0.0)
        for t in range(tid, x.size, RED_THREADS):
            acc += float64(x[t])
        tot = _block_sum(sh, acc)
        if tid == 0:
            out[slot] = tot


def chan_view(x):
    """(N, F) -> (N, F, 1); (N, C, H, W) -> (N, C, H W): the (A, C, B) view of reductions."""
    if x.ndim == 2:
        return x.reshape(x.shape[0], x.shape[1], 1)
    return x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3])


def chan_sum(x, y=None):
    """Per-feature sums of a 2-D/4-D float32 device array: ``(s1, s2)`` (C,) float32
    device arrays, ``s1 = sum x``, ``s2 = sum x * y`` (None without y)."""
    xv = chan_view(x)
    C = xv.shape[1]
    s1 = cuda.device_array(C, dtype=np.float32)
    s2 = cuda.device_array(C, dtype=np.float32) if y is not None else None
    if C:
        with_y = y is not None
        chan_sum_kernel[C, RED_THREADS](xv, chan_view(y) if with_y else xv, s1,
                                        s2 if with_y else s1, with_y)
    return s1, s2


def chan_mean_var(x):
    """Per-feature batch mean and biased variance: two (C,) float32 device arrays."""
    xv = chan_view(x)
    C = xv.shape[1]
    mean = cuda.device_array(C, dtype=np.float32)
    var = cuda.device_array(C, dtype=np.float32)
    if C:
        chan_mean_var_kernel[C, RED_THREADS](xv, mean, var)
    return mean, var


# ---------------------------------------------------------------------------
# batch normalization (x viewed as (A, C, B); per-feature vectors (C,))
# ---------------------------------------------------------------------------

if cuda is not None:
    @cuda.jit
    def bn_stats_kernel(mean, var, rmean, rvar, momentum, update, eps, inv_std):
        """inv_std = 1 / sqrt(var + eps); if update: running <- (1 - mom) r + mom batch."""
        for c in range(cuda.grid(1), mean.size, cuda.gridsize(1)):
            if update:
                rmean[c] = rmean[c] * float32(1.0 - momentum) + float32(momentum) * mean[c]
                rvar[c] = rvar[c] * float32(1.0 - momentum) + float32(momentum) * var[c]
            inv_std[c] = float32(1.0) / math.sqrt(var[c] + float32(eps))

    @cuda.jit
    def bn_normalize_kernel(x, C, B, mean, inv_std, gamma, beta, xhat, out):
        """x, xhat, out flat views of (A, C, B): xhat = (x - mean[c]) * inv_std[c];
        out = gamma[c] xhat + beta[c]."""
        for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            c = (t // B) % C
            h = (x[t] - mean[c]) * inv_std[c]
            xhat[t] = h
            out[t] = gamma[c] * h + beta[c]

    @cuda.jit
    def bn_backward_kernel(dout, xhat, C, B, gamma, inv_std, dbeta, dgamma, m, train, dx):
        """train: dx = gamma inv_std / m (m dout - dbeta - xhat dgamma); eval:
        dx = dout gamma inv_std.  dout, xhat, dx flat views of (A, C, B), vectors (C,)."""
        fm = float32(m)
        for t in range(cuda.grid(1), dout.size, cuda.gridsize(1)):
            c = (t // B) % C
            scale = gamma[c] * inv_std[c]
            if train:
                dx[t] = (scale / fm) * (fm * dout[t] - dbeta[c] - xhat[t] * dgamma[c])
            else:
                dx[t] = dout[t] * scale


# ---------------------------------------------------------------------------
# unfolding (float im2col / col2im), NCHW <-> rows, max pooling
# ---------------------------------------------------------------------------

if cuda is not None:
    @cuda.jit
    def im2col_kernel(x, KH, KW, stride, padding, Ho, Wo, cols):
        """x (N, C, H, W) -> cols (N Ho Wo, C KH KW): row (n Ho + i) Wo + j, column
        (c KH + a) KW + b = x[n, c, i s + a - p, j s + b - p] (0 outside)."""
        C = x.shape[1]
        H = x.shape[2]
        W = x.shape[3]
        L = cols.shape[1]
        total = cols.shape[0] * L
        for t in range(cuda.grid(1), total, cuda.gridsize(1)):
            row = t // L
            col = t - row * L
            c = col // (KH * KW)
            r = col - c * (KH * KW)
            a = r // KW
            b = r - a * KW
            n = row // (Ho * Wo)
            q = row - n * (Ho * Wo)
            i = q // Wo
            j = q - i * Wo
            h = i * stride + a - padding
            w = j * stride + b - padding
            v = float32(0.0)
            if h >= 0 and h < H and w >= 0 and w < W:
                v = x[n, c, h, w]
            cols[row, col] = v

    @cuda.jit
    def col2im_kernel(cols, KH, KW, stride, padding, Ho, Wo, dx):
        """Adjoint of im2col, gather form (one thread per pixel, no atomics):
        dx[n, c, h, w] = sum of cols entries that im2col read from (n, c, h, w)."""
        C = dx.shape[1]
        H = dx.shape[2]
        W = dx.shape[3]
        total = dx.size
        for t in range(cuda.grid(1), total, cuda.gridsize(1)):
            w = t % W
            rest = t // W
            h = rest % H
            rest = rest // H
            c = rest % C
            n = rest // C
            acc = float32(0.0)
            for a in range(KH):
                hi = h + padding - a
                if hi >= 0 and hi % stride == 0 and hi // stride < Ho:
                    i = hi // stride
                    for b in range(KW):
                        wj = w + padding - b
                        if wj >= 0 and wj % stride == 0 and wj // stride < Wo:
                            j = wj // stride
                            acc += cols[(n * Ho + i) * Wo + j, (c * KH + a) * KW + b]
            dx[n, c, h, w] = acc

    @cuda.jit
    def rows_to_nchw_kernel(rows, bias, has_bias, out):
        """rows (N Ho Wo, F) -> out (N, F, Ho, Wo) (+ bias[f])."""
        F = out.shape[1]
        Ho = out.shape[2]
        Wo = out.shape[3]
        for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            j = t % Wo
            rest = t // Wo
            i = rest % Ho
            rest = rest // Ho
            f = rest % F
            n = rest // F
            v = rows[(n * Ho + i) * Wo + j, f]
            if has_bias:
                v += bias[f]
            out[n, f, i, j] = v

    @cuda.jit
    def nchw_to_rows_kernel(d, rows):
        """d (N, F, Ho, Wo) -> rows (N Ho Wo, F)."""
        F = d.shape[1]
        Ho = d.shape[2]
        Wo = d.shape[3]
        for t in range(cuda.grid(1), rows.size, cuda.gridsize(1)):
            f = t % F
            r = t // F
            j = r % Wo
            rest = r // Wo
            i = rest % Ho
            n = rest // Ho
            rows[r, f] = d[n, f, i, j]

    @cuda.jit
    def maxpool_kernel(x, k, s, out, arg):
        """out (N, C, Ho, Wo) window maxima, arg the tap a k + b of the first maximum."""
        C = out.shape[1]
        Ho = out.shape[2]
        Wo = out.shape[3]
        for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            j = t % Wo
            rest = t // Wo
            i = rest % Ho
            rest = rest // Ho
            c = rest % C
            n = rest // C
            best = x[n, c, i * s, j * s]
            tap = 0
            for a in range(k):
                for b in range(k):
                    v = x[n, c, i * s + a, j * s + b]
                    if v > best:            # strict: ties keep the earlier tap (np.argmax)
                        best = v
                        tap = a * k + b
            out[n, c, i, j] = best
            arg[n, c, i, j] = tap

    @cuda.jit
    def maxpool_backward_kernel(dout, arg, k, s, dx):
        """Gather form: dx[n, c, h, w] = sum of dout over the windows whose argmax is
        (h, w) (one thread per input pixel, no atomics, deterministic)."""
        C = dx.shape[1]
        H = dx.shape[2]
        W = dx.shape[3]
        Ho = dout.shape[2]
        Wo = dout.shape[3]
        for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
            w = t % W
            rest = t // W
            h = rest % H
            rest = rest // H
            c = rest % C
            n = rest // C
            acc = float32(0.0)
            for a in range(k):
                hi = h - a
                if hi >= 0 and hi % s == 0 and hi // s < Ho:
                    i = hi // s
                    for b in range(k):
                        wj = w - b
                        if wj >= 0 and wj % s == 0 and wj // s < Wo:
                            j = wj // s
                            if arg[n, c, i, j] == a * k + b:
                                acc += dout[n, c, i, j]
            dx[n, c, h, w] = acc


# ---------------------------------------------------------------------------
# losses: scores (N, C) float32, labels y (N,) int; stats[0] = loss sum (float64)
# ---------------------------------------------------------------------------

if cuda is not None:
    @cuda.jit
    def squared_hinge_kernel(s, y, grad, sq, flags):
        """t = +1 at the label, -1 elsewhere; margin = max(0, 1 - t s);
        sq = margin^2 (summed later); grad = -2 t margin / (N C).
        flags: [0] NaN count, [1] inf count, [2] labels out of range."""
        N = s.shape[0]
        C = s.shape[1]
        scale = float32(-2.0 / (N * C))
        for e in range(cuda.grid(1), N * C, cuda.gridsize(1)):
            n = e // C
            c = e - n * C
            v = s[n, c]
            lab = y[n]
            if v != v:
                cuda.atomic.add(flags, 0, 1)
            elif v == math.inf or v == -math.inf:
                cuda.atomic.add(flags, 1, 1)
            if c == 0 and (lab < 0 or lab >= C):
                cuda.atomic.add(flags, 2, 1)
            t = float32(1.0) if lab == c else float32(-1.0)
            mg = float32(1.0) - t * v
            if mg < 0:
                mg = float32(0.0)
            sq[e] = mg * mg
            grad[n, c] = scale * t * mg

    @cuda.jit
    def softmax_ce_kernel(s, y, grad, nll, flags):
        """Per row: p = softmax(s) (from s - max), nll[n] = -log p[y_n],
        grad = (p - onehot(y)) / N.  flags as in squared_hinge_kernel."""
        N = s.shape[0]
        C = s.shape[1]
        for n in range(cuda.grid(1), N, cuda.gridsize(1)):
            lab = y[n]
            bad = False
            mx = s[n, 0]
            for c in range(C):
                v = s[n, c]
                if v != v:
                    cuda.atomic.add(flags, 0, 1)
                    bad = True
                elif v == math.inf or v == -math.inf:
                    cuda.atomic.add(flags, 1, 1)
                    bad = True
                elif v > mx:
                    mx = v
            if lab < 0 or lab >= C:
                cuda.atomic.add(flags, 2, 1)
                bad = True
            if bad:
                nll[n] = float32(0.0)
                continue
            z = float32(0.0)
            for c in range(C):
                z += math.exp(s[n, c] - mx)
            log_z = math.log(z)
            for c in range(C):
                lp = s[n, c] - mx - log_z
                g = math.exp(lp)
                if c == lab:
                    g -= float32(1.0)
                    nll[n] = -lp
                grad[n, c] = g / float32(N)

    @cuda.jit
    def error_count_kernel(s, y, count):
        """count[0] += number of rows whose first argmax differs from the label."""
        N = s.shape[0]
        C = s.shape[1]
        for n in range(cuda.grid(1), N, cuda.gridsize(1)):
            best = s[n, 0]
            arg = 0
            for c in range(1, C):
                v = s[n, c]
                if v > best:
                    best = v
                    arg = c
            if arg != y[n]:
                cuda.atomic.add(count, 0, 1)


def sum_all(x, out, slot=0):
    """out[slot] = sum of the device array x (one block, float64 accumulation)."""
    sum_all_kernel[1, RED_THREADS](flat(x), out, slot)
    return out


# ---------------------------------------------------------------------------
# signs of the latent weights, float and packed, in one pass
# ---------------------------------------------------------------------------

if cuda is not None:
    @cuda.jit
    def sign_pack_columns_kernel(w, wb, words, flag):
        """w (K, F) float32 -> wb (K, F) float32 +-1 and words (F, KW) uint32: bit j of
        words[f, q] is sign(w[32 q + j, f]) >= 0 (words past ceil(K/32) are 0), the layout
        of :func:`minibnn.kernels.cuda.pack_device` applied to the columns of w.  One
        thread per (q, f), f fastest: coalesced reads of w.  flag[0] = 1 on NaN."""
        K = w.shape[0]
        F = w.shape[1]
        KW = words.shape[1]
        for t in range(cuda.grid(1), KW * F, cuda.gridsize(1)):
            q = t // F
            f = t - q * F
            word = np.uint32(0)
            for j in range(32):
                k = q * 32 + j
                if k < K:
                    v = w[k, f]
                    if v >= 0:
                        wb[k, f] = float32(1.0)
                        word |= np.uint32(1) << np.uint32(j)
                    else:
                        wb[k, f] = float32(-1.0)
                        if v != v:
                            flag[0] = 1
            words[f, q] = word

    @cuda.jit
    def conv_weights_kernel(w, wb, words, ssum, flag):
        """w (F, C, KH, KW) float32 -> wb = sign(w) (same shape), words (F, KH KW Wc)
        uint32 in the im2col K order of :class:`minibnn.kernels.cuda.ConvWeights`
        (tap-major, channel-minor, bit c % 32 of word c // 32), ssum (F, KH, KW) int32 =
        sum_c sign(w).  One thread per (f, tap)."""
        F = w.shape[0]
        C = w.shape[1]
        KH = w.shape[2]
        KW = w.shape[3]
        Wc = (C + 31) // 32
        for t in range(cuda.grid(1), F * KH * KW, cuda.gridsize(1)):
            f = t // (KH * KW)
            tap = t - f * (KH * KW)
            kh = tap // KW
            kw = tap - kh * KW
            s = 0
            for cw in range(Wc):
                word = np.uint32(0)
                for j in range(32):
                    c = cw * 32 + j
                    if c < C:
                        v = w[f, c, kh, kw]
                        if v >= 0:
                            wb[f, c, kh, kw] = float32(1.0)
                            word |= np.uint32(1) << np.uint32(j)
                            s += 1
                        else:
                            wb[f, c, kh, kw] = float32(-1.0)
                            s -= 1
                            if v != v:
                                flag[0] = 1
                words[f, tap * Wc + cw] = word
            ssum[f, kh, kw] = s

    @cuda.jit
    def conv_correction_kernel(ssum, H, W, stride, padding, Wo, corr):
        """corr (Ho Wo, F) int32: at output q = i Wo + j, the sum of ssum[f, a, b] over
        the taps (a, b) that fall on the zero border (they were packed as +1; convention
        6 of :mod:`minibnn.kernels.bitpack`)."""
        F = ssum.shape[0]
        KH = ssum.shape[1]
        KW = ssum.shape[2]
        for t in range(cuda.grid(1), corr.size, cuda.gridsize(1)):
            q = t // F
            f = t - q * F
            i = q // Wo
            j = q - i * Wo
            acc = 0
            for a in range(KH):
                h = i * stride + a - padding
                for b in range(KW):
                    x = j * stride + b - padding
                    if h < 0 or h >= H or x < 0 or x >= W:
                        acc += ssum[f, a, b]
            corr[q, f] = acc


if cuda is not None:
    @cuda.jit
    def lerp_kernel(running, batch, momentum, out):
        """out = (1 - momentum) running + momentum batch (BatchNorm running statistics)."""
        for c in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            out[c] = float32((1.0 - momentum) * running[c] + momentum * batch[c])


# ---------------------------------------------------------------------------
# epoch accumulators of the device-resident training loop (minibnn.device.DeviceLoop,
# minibnn.stats.DeviceEpochStats, minibnn.losses_cuda.Accumulator): summed on the device,
# copied back once per epoch, with the float64 operations of the host loop in its order
# ---------------------------------------------------------------------------

if cuda is not None:
    @cuda.jit
    def abs_gt1_count_kernel(x, counts, slot):
        """counts[slot] += number of elements of the 1-D x with |x| > 1 (NaN counts not)."""
        for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = x[t]
            if v > 1.0 or v < -1.0:
                cuda.atomic.add(counts, slot, 1)

    @cuda.jit
    def add_fraction_kernel(counts, acc, slot, size):
        """One thread: acc[slot] += counts[slot] / size (float64), counts[slot] = 0 --
        the host's ``cancel_sum += float(np.mean(mask))``, same float64 operations."""
        if cuda.grid(1) == 0:
            acc[slot] += float64(counts[slot]) / float64(size)
            counts[slot] = 0

    @cuda.jit
    def add_batch_loss_kernel(stats, acc, denom, n):
        """One thread: acc[0] += (stats[0] / denom) * n -- the host's
        ``loss_sum += float(loss) * len(y)`` with ``loss = sum / denom`` (float64)."""
        if cuda.grid(1) == 0:
            acc[0] += (stats[0] / float64(denom)) * float64(n)

    @cuda.jit
    def add_flags_kernel(src, dst):
        """dst[i] += src[i] (int32 error flags kept over many batches)."""
        for i in range(cuda.grid(1), src.size, cuda.gridsize(1)):
            dst[i] += src[i]



# ---------------------------------------------------------------------------
# shift-based batch normalization (x viewed as (A, C, B); per-feature vectors (C,))
# ---------------------------------------------------------------------------

#: float64 sqrt(1/2), the same number as ``np.sqrt(0.5)`` in :func:`minibnn.quantize.ap2`
SQRT_HALF = math.sqrt(0.5)

if cuda is not None:
    @cuda.jit(device=True)
    def ap2(x):
        """Device twin of :func:`minibnn.quantize.ap2` for one value: the power of two
        nearest to ``|x|`` in the log domain with x's sign, as float64 (the caller's
        float32 store rounds 2**128 and above to inf, as NumPy's float32 ldexp does).

        Same frexp rule, bit for bit: ``|x| = f 2**e``, f in [0.5, 1); ``e - 1`` when
        ``f < sqrt(1/2)`` (compared in float64, as NumPy compares a float32 f with the
        float64 ``np.sqrt(0.5)``); ``ap2(+-0) = +0``; inf and NaN pass through.
        numba.cuda compiles ``math.frexp`` / ``math.ldexp`` on the GPU; a float32 x is
        widened exactly first (subnormals included)."""
        xd = float64(x)
        if xd == 0.0:
            return 0.0
        if math.isinf(xd) or math.isnan(xd):
            return xd
        f, e = math.frexp(abs(xd))
        mag = math.ldexp(1.0, e)        # e: frexp's int32, the type ldexp takes on the GPU
        if f < SQRT_HALF:
            mag = mag * 0.5             # 2**(e - 1), exactly (float64 holds it)
        return -mag if xd < 0.0 else mag

    @cuda.jit
    def ap2_kernel(x, out):
        """out = ap2(x), element-wise (flat float32 views)."""
        for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            out[t] = float32(ap2(x[t]))

    @cuda.jit
    def sbn_center_kernel(x, C, B, mu, c_out, a_out, with_a):
        """x, c_out, a_out flat views of (A, C, B): c = x - mu[c] (float32, as NumPy);
        with_a: a = ap2(c)."""
        for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            ch = (t // B) % C
            cv = x[t] - mu[ch]
            c_out[t] = cv
            if with_a:
                a_out[t] = float32(ap2(cv))

    @cuda.jit
    def sbn_stats_kernel(v_in, m, train, eps, var, r, s):
        """Per feature: var = v_in / m (train: v_in = sum C AP2(C)), else var = v_in (the
        running variance); r = 1 / sqrt(var + eps) (float32, as NumPy); s = ap2(r)."""
        for ch in range(cuda.grid(1), var.size, cuda.gridsize(1)):
            if train:
                v = float32(float64(v_in[ch]) / m)
            else:
                v = v_in[ch]
            var[ch] = v
            rv = float32(1.0) / math.sqrt(v + float32(eps))
            r[ch] = rv
            s[ch] = float32(ap2(rv))

    @cuda.jit
    def sbn_normalize_kernel(c, C, B, s, g, beta, xhat, out):
        """xhat = c s[c]; out = g[c] xhat + beta[c] (g = AP2(gamma): the product is exact,
        so a fused multiply-add rounds as NumPy does)."""
        for t in range(cuda.grid(1), c.size, cuda.gridsize(1)):
            ch = (t // B) % C
            h = c[t] * s[ch]
            xhat[t] = h
            out[t] = g[ch] * h + beta[ch]

    @cuda.jit
    def sbn_backward_kernel(dout, c, a, C, B, g, s, r, sdc, m, train, dc):
        """dC = dout g s + [train] dvar (a + c) / m, dvar = g sum(dout c) (-1/2) r**3
        (:func:`minibnn.functional.shift_batchnorm_backward`; flat views, vectors (C,))."""
        fm = float32(m)
        for t in range(cuda.grid(1), dout.size, cuda.gridsize(1)):
            ch = (t // B) % C
            d = (dout[t] * g[ch]) * s[ch]
            if train:
                rc = r[ch]
                dvar = (g[ch] * sdc[ch]) * float32(-0.5) * (rc * rc * rc)
                d = d + dvar * (a[t] + c[t]) / fm
            dc[t] = d

    @cuda.jit
    def sub_chan_mean_kernel(x, C, B, sums, m, out):
        """out = x - sums[c] / m per feature (flat views of (A, C, B); out may be x)."""
        fm = float32(m)
        for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            ch = (t // B) % C
            out[t] = x[t] - sums[ch] / fm


def quiet_low_occupancy_warnings():
    """Silence numba's "Grid size N will likely result in GPU under-utilization"
    performance warning for this process: the device loop launches one-thread kernels
    (the epoch accumulators) and one-block reductions on purpose, and would otherwise
    print it into every training log.  Other warnings are kept."""
    import warnings

    # by message: numba and numba-cuda each define a NumbaPerformanceWarning class
    warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result in GPU "
                                              r"under-utilization")
