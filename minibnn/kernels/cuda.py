"""CUDA backend: bit packing, XNOR-popcount GEMM and binary convolution on ``numba.cuda``.

Imported only when the ``"cuda"`` backend is asked for (:mod:`minibnn.kernels.backend`);
:func:`check_available` raises :class:`BackendUnavailable` when numba-cuda, a GPU or the
CUDA compiler is missing.  Under ``NUMBA_ENABLE_CUDASIM=1`` every kernel runs in Numba's
simulator (one Python thread per CUDA thread) with smaller thread blocks, see
:data:`CONFIG`.

Binary conventions: :mod:`minibnn.kernels.bitpack`.  The GPU kernels work on **32-bit
words**: a ``(R, W)`` uint64 array from :func:`minibnn.kernels.pack` viewed as uint32 is
``(R, 2 W)`` with element ``k`` in word ``k // 32`` at bit ``k % 32`` (little endian), so
the device reads the host's packed buffers unchanged.  Words past ``ceil(K/32)`` (the upper
half of the last uint64 when ``ceil(K/32)`` is odd) are zero, like every padding bit, and
add nothing to the popcount.

Kernels
-------
* packing (:func:`pack_device`): signs of a ``(R, K)`` float32/float64 device array ->
  ``(R, 2 ceil(K/64))`` uint32 words.  A block stages ``32 x 256`` signs in shared memory
  with coalesced loads, then each thread ORs 32 of them into one word.
* baseline (:func:`matmul_f32_tiled`): the textbook 16 x 16 shared-memory tiled float32
  matmul, one output per thread -- the "unoptimized kernel" that Hubara et al. compare
  their XNOR kernel against.  Kept for the benchmark.
* XNOR GEMM (:func:`xnor_gemm_device`): ``out[m, n] = k - 2 * sum_w popc(a[m, w] ^ b[n, w])``.
  A block of ``16 x 16`` threads computes a ``64 x 64`` output tile, each thread a
  ``4 x 4`` register tile (rows ``ty + 16 i``, columns ``tx + 16 j``: conflict-free shared
  reads, coalesced stores).  K is walked in stages of 32 words (1024 bits) held in shared
  memory as 16 uint64 pairs per row (one 64-bit shared load feeds two words; rows padded
  to 17 pairs against bank conflicts).  Every global load and store is guarded and the
  shared tails are zero-filled, so any ``M, N, K >= 1`` works (zero bits add nothing).
  ``cuda.popc`` runs at 16 results per clock per SM (Volta..Hopper) against 64 for a
  logic op, so the default kernel (``csa=True``) halves the popcounts with a carry-save
  adder: the two words ``x0, x1`` of a pair are added into a running bit-sliced counter
  ``ones`` and only the carries are popcounted,
  ``popc(o) + popc(x0) + popc(x1) = 2 popc(maj(o, x0, x1)) + popc(o ^ x0 ^ x1)``;
  ``csa=False`` is the plain one-popcount-per-word kernel.  ptxas 13 (sm_90) gives the CSA
  kernel 126 registers (capped at 128: two blocks per SM) and the plain one 94, no spills.
* binary convolution (:func:`binary_conv2d_device`): channels packed per pixel into a
  padded NHWC buffer (border pixels packed as +1), packed im2col, the XNOR GEMM, then one
  kernel that subtracts the exact zero-padding correction (convention 6) and writes NCHW.

Device-level helpers (for the engine; all arguments device arrays, C-contiguous, all
launches asynchronous on the default stream unless a NaN check syncs):

* ``pack_device(x)``: x ``(R, K)`` float32/float64 -> ``(R, 2 ceil(K/64))`` uint32.
* ``xnor_gemm_device(a, b, k, out)``: a ``(M, KW)`` uint32, b ``(N, KW)`` uint32 with
  ``KW >= ceil(k/32)`` and zero bits past k -> out ``(M, N)`` int32.
* ``matmul_f32_tiled_device(a, b, out)``: ``(M, K) @ (K, N)`` float32 -> ``(M, N)`` float32.
* ``prepare_conv_weights(w)`` -> :class:`ConvWeights`; ``binary_conv2d_device(x, cw,
  stride, padding)``: x ``(N, C, H, W)`` float32/float64 -> ``(N, F, H', W')`` int32.
* ``words_to_device(words)``: host ``(R, W)`` uint64 -> device ``(R, 2 W)`` uint32.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 3 (XNOR kernel,
23x faster than an unoptimized GPU kernel at 8192^3, 3.4x faster than cuBLAS).
"""

import functools
from typing import NamedTuple

import numpy as np

from .backend import BackendUnavailable
from .bitpack import check_padding_bits, n_words, pack_rows_input
from .bitpack import pack as _cpu_pack
from .geometry import conv_output_size, padding_correction
from .prepared import PreparedWeights

try:  # numba.cuda is only imported when this module is (i.e. when "cuda" is selected)
    import numba
    from numba import cuda
    from numba import float32, int32, uint32, uint64
    _IMPORT_ERROR = None
except Exception as _exc:  # numba-cuda missing or broken: reported by check_available
    numba = cuda = float32 = int32 = uint32 = uint64 = None
    _IMPORT_ERROR = _exc

SIMULATOR = bool(numba is not None and numba.config.ENABLE_CUDASIM)


class GemmConfig(NamedTuple):
    """Thread block ``tx x ty``, register tile ``rm x rn`` per thread, ``bk`` uint32
    words of K per shared-memory stage.  Block tile: ``(ty * rm) x (tx * rn)`` outputs."""
    tx: int
    ty: int
    rm: int
    rn: int
    bk: int


#: the GPU configuration: 256 threads, 4 x 4 outputs each, 64 x 64 tile, 1024 bits of K
GEMM_GPU = GemmConfig(tx=16, ty=16, rm=4, rn=4, bk=32)
#: the simulator's: 16 threads, the same 4 x 4 outputs each, 16 x 16 tile, 256 bits of K
#: (small test matrices still span several blocks and K stages; fewer Python threads and
#: barriers than smaller tiles: the fastest of the layouts tried in the simulator)
GEMM_SIM = GemmConfig(tx=4, ty=4, rm=4, rn=4, bk=8)
GEMM_CONFIG = GEMM_SIM if SIMULATOR else GEMM_GPU

TILE_F32 = 16                                   # baseline float kernel: 16 x 16 threads
PACK_THREADS = 32 if SIMULATOR else 256         # threads per block of the packing kernel
ELEM_THREADS = 32 if SIMULATOR else 256         # threads per block, element-wise kernels
ELEM_MAX_BLOCKS = 2 if SIMULATOR else 8192      # grid-stride loops beyond this
MAX_GRID_Y = 65535                              # CUDA's limit on gridDim.y

CONFIG = {"gemm": GEMM_CONFIG, "tile_f32": TILE_F32, "pack_threads": PACK_THREADS,
          "elem_threads": ELEM_THREADS, "simulator": SIMULATOR}


def check_available():
    """Raise :class:`BackendUnavailable` unless CUDA kernels can run here.

    Needs numba-cuda, and either ``NUMBA_ENABLE_CUDASIM=1`` (the simulator) or a GPU with
    a working driver and compiler: a tiny packing kernel is compiled, run and checked
    against the CPU packer, so a broken toolchain fails here, at selection time.
    """
    if cuda is None:
        raise BackendUnavailable(
            f"backend 'cuda' needs numba-cuda (import numba.cuda failed: "
            f"{type(_IMPORT_ERROR).__name__}: {_IMPORT_ERROR})")
    if not SIMULATOR:
        try:
            ok = cuda.is_available()
        except Exception as exc:
            raise BackendUnavailable(f"backend 'cuda' is not available: {exc}") from exc
        if not ok:
            raise BackendUnavailable(
                "backend 'cuda' is not available: no CUDA GPU/driver found "
                "(set NUMBA_ENABLE_CUDASIM=1 to run the kernels in Numba's simulator)")
    try:
        x = np.array([[0.0, -1.0, 2.0, -0.0, -3.5] * 7], dtype=np.float32)
        if not np.array_equal(pack(x), _cpu_pack(x)):
            raise RuntimeError("the packing kernel disagrees with the CPU packer")
    except BackendUnavailable:
        raise
    except Exception as exc:
        raise BackendUnavailable(
            f"backend 'cuda': a test kernel (packing) failed to compile or run: "
            f"{type(exc).__name__}: {exc}") from exc


def _blocks(n, per_block):
    return (n + per_block - 1) // per_block


def _elem_grid(total):
    return max(1, min(_blocks(total, ELEM_THREADS), ELEM_MAX_BLOCKS))


def _is_device_array(a):
    return (cuda is not None and not isinstance(a, np.ndarray)
            and cuda.devicearray.is_cuda_ndarray(a))


def _check_dev(a, name, dtype, ndim):
    if not _is_device_array(a):
        raise TypeError(f"{name} must be a CUDA device array, got {type(a).__name__}")
    if np.dtype(a.dtype) != np.dtype(dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")


# ---------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _make_pack_kernel(nt):
    """Kernel ``(x, out, wb, flag)``: x (R, K) float, out (R, KWo) uint32 (KWo >= ceil(K/32),
    words past K get 0), wb = words per block row (a power of two dividing nt); a block
    covers ``nt // wb`` rows x ``wb`` words.  ``flag[0]`` is set to 1 if a NaN is read."""
    NT = nt

    @cuda.jit
    def pack_kernel(x, out, wb, flag):
        R = x.shape[0]
        K = x.shape[1]
        KWo = out.shape[1]
        bits = cuda.shared.array((NT, 33), uint32)   # 33: conflict-free both ways
        tid = cuda.threadIdx.x
        rpb = NT // wb
        r0 = cuda.blockIdx.x * rpb
        w0 = cuda.blockIdx.y * wb
        span = wb * 32
        # stage: consecutive threads read consecutive elements of a row (coalesced)
        for it in range(32):
            idx = it * NT + tid
            lr = idx // span
            lc = idx - lr * span
            r = r0 + lr
            kk = w0 * 32 + lc
            b = np.uint32(0)
            if r < R and kk < K:
                v = x[r, kk]
                if v >= 0:
                    b = np.uint32(1)
                elif v != v:
                    flag[0] = 1
            bits[lr * wb + lc // 32, lc % 32] = b
        cuda.syncthreads()
        lr = tid // wb
        r = r0 + lr
        w = w0 + (tid - lr * wb)
        if r < R and w < KWo:
            word = np.uint32(0)
            for j in range(32):
                word |= np.uint32(bits[tid, j] << np.uint32(j))
            out[r, w] = word

    return pack_kernel


def pack_device(x_dev, out_dev=None, check_nan=True, nan_flag=None):
    """Pack the signs of a ``(R, K)`` float32/float64 device array along K.

    Returns ``out_dev``: ``(R, 2 ceil(K/64))`` uint32 device array (allocated if None);
    ``out_dev.copy_to_host().view(np.uint64)`` equals :func:`minibnn.kernels.pack` of the
    same values.  ``check_nan`` syncs and raises ``ValueError`` if x holds a NaN; pass
    ``check_nan=False`` (and optionally a 1-element int32 device ``nan_flag`` to inspect
    later) to stay asynchronous.
    """
    if not _is_device_array(x_dev) or x_dev.ndim != 2:
        raise TypeError("pack_device: x_dev must be a 2-D CUDA device array")
    if np.dtype(x_dev.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"pack_device: x_dev must be float32 or float64, got {x_dev.dtype}")
    R, K = x_dev.shape
    if K == 0:
        raise ValueError("pack_device: K = 0, nothing to pack")
    KWo = 2 * n_words(K)
    if out_dev is None:
        out_dev = cuda.device_array((R, KWo), dtype=np.uint32)
    else:
        _check_dev(out_dev, "out_dev", np.uint32, 2)
        if out_dev.shape[0] != R or out_dev.shape[1] < (K + 31) // 32:
            raise ValueError(f"pack_device: out_dev has shape {out_dev.shape}, need ({R}, >= ceil(K/32))")
        KWo = out_dev.shape[1]
    if R == 0:
        return out_dev
    if nan_flag is None:
        nan_flag = cuda.to_device(np.zeros(1, dtype=np.int32))
    wb = 1
    while wb < KWo and wb < PACK_THREADS:
        wb *= 2
    grid = (_blocks(R, PACK_THREADS // wb), _blocks(KWo, wb))
    if grid[1] > MAX_GRID_Y:
        raise ValueError(f"pack_device: K = {K} is too long for one launch")
    _make_pack_kernel(PACK_THREADS)[grid, PACK_THREADS](x_dev, out_dev, wb, nan_flag)
    if check_nan and nan_flag.copy_to_host()[0]:
        raise ValueError("pack: input contains NaN, which has no sign")
    return out_dev


def pack(x):
    """Host API: ``(..., K)`` real -> ``(..., ceil(K/64))`` uint64, packed on the GPU;
    identical to :func:`minibnn.kernels.bitpack.pack` (same errors)."""
    lead, x2d = pack_rows_input(x)   # the same checks and conversions as the CPU packer
    K = x2d.shape[1]
    W = n_words(K)
    if x2d.shape[0] == 0:
        return np.empty(lead + (W,), dtype=np.uint64)
    out = pack_device(cuda.to_device(x2d)).copy_to_host()
    return np.ascontiguousarray(out).view(np.uint64).reshape(lead + (W,))


# ---------------------------------------------------------------------------
# Baseline: 16 x 16 tiled float32 matmul (the "unoptimized kernel")
# ---------------------------------------------------------------------------

if cuda is not None:
    @cuda.jit
    def _matmul_f32_kernel(A, B, C):
        """C (M, N) = A (M, K) @ B (K, N), float32; one output per thread, 16 x 16 tiles."""
        sA = cuda.shared.array((TILE_F32, TILE_F32), float32)
        sB = cuda.shared.array((TILE_F32, TILE_F32), float32)
        M = A.shape[0]
        K = A.shape[1]
        N = B.shape[1]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row = cuda.blockIdx.y * TILE_F32 + ty
        col = cuda.blockIdx.x * TILE_F32 + tx
        acc = np.float32(0.0)
        for t0 in range(0, K, TILE_F32):
            va = np.float32(0.0)
            if row < M and t0 + tx < K:
                va = A[row, t0 + tx]
            sA[ty, tx] = va
            vb = np.float32(0.0)
            if t0 + ty < K and col < N:
                vb = B[t0 + ty, col]
            sB[ty, tx] = vb
            cuda.syncthreads()
            for j in range(TILE_F32):
                acc += sA[ty, j] * sB[j, tx]
            cuda.syncthreads()
        if row < M and col < N:
            C[row, col] = acc


def matmul_f32_tiled_device(a_dev, b_dev, out_dev):
    """Baseline float kernel on device arrays: a (M, K) float32, b (K, N) float32,
    out (M, N) float32 (filled, returned).  Asynchronous."""
    _check_dev(a_dev, "a_dev", np.float32, 2)
    _check_dev(b_dev, "b_dev", np.float32, 2)
    _check_dev(out_dev, "out_dev", np.float32, 2)
    M, K = a_dev.shape
    if b_dev.shape[0] != K or out_dev.shape != (M, b_dev.shape[1]):
        raise ValueError(f"matmul_f32_tiled: shapes {a_dev.shape} @ {b_dev.shape} -> {out_dev.shape}")
    N = b_dev.shape[1]
    if M == 0 or N == 0:
        return out_dev
    grid = (_blocks(N, TILE_F32), _blocks(M, TILE_F32))
    if grid[1] > MAX_GRID_Y:
        raise ValueError(f"matmul_f32_tiled: M = {M} rows is more than one launch covers")
    _matmul_f32_kernel[grid, (TILE_F32, TILE_F32)](a_dev, b_dev, out_dev)
    return out_dev


def matmul_f32_tiled(a, b):
    """Host API of the baseline kernel: (M, K) @ (K, N) -> (M, N) float32 numpy array."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul_f32_tiled: shapes {a.shape} @ {b.shape}")
    out = cuda.device_array((a.shape[0], b.shape[1]), dtype=np.float32)
    if a.shape[1] == 0:
        return np.zeros(out.shape, dtype=np.float32)
    matmul_f32_tiled_device(cuda.to_device(a), cuda.to_device(b), out)
    return out.copy_to_host()


# ---------------------------------------------------------------------------
# XNOR-popcount GEMM
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _make_xnor_kernel(cfg, csa):
    """Build the XNOR GEMM kernel for a :class:`GemmConfig` (compile-time constants).

    Kernel ``(A, B, k, out, nb0)``: A (M, KW) uint32, B (N, KW) uint32, out (M, N) int32;
    blockIdx.x walks the ``ty * rm``-row blocks of A, ``blockIdx.y + nb0`` the
    ``tx * rn``-column blocks of B.

    Shared memory holds the K stage as uint64 *pairs* of 32-bit words (word ``2c`` in the
    low half, ``2c + 1`` in the high half; a missing odd word reads as 0), so each inner
    step is one 64-bit shared load per row and column, and the two halves feed the
    carry-save adder.  Rows are padded to ``bk / 2 + 1`` pairs: with 16 threads along x
    the 64-bit loads of B hit 16 distinct bank pairs (conflict-free) and A is a broadcast.
    """
    TX, TY, RM, RN, BK = cfg
    BM = TY * RM
    BN = TX * RN
    NT = TX * TY
    BK2 = BK // 2                                  # uint64 pairs per K stage
    BKP = BK2 + 1                                  # padded shared rows
    LA = BM * BK2 // NT                            # staged pairs per thread (A)
    LB = BN * BK2 // NT
    CSA = bool(csa)
    if BK % 2 or BM * BK2 % NT or BN * BK2 % NT:
        raise ValueError(f"bad GEMM config {cfg}")

    # 126 registers with ptxas 13 for sm_90 at the GPU config: capped at 128 so that two
    # 256-thread blocks fit one SM (one block computes while the other stages its tiles)
    jit_kw = {} if SIMULATOR or NT * 128 * 2 > 65536 else {"max_registers": 128}

    @cuda.jit(device=True)
    def stage(S, X, row0, k0, tid, L):
        """This thread's ``L`` uint64 pairs of the K stage: ``S[r, c] = X[row0 + r, k0 + 2c]
        | X[row0 + r, k0 + 2c + 1] << 32`` (0 outside X); shared by the A and B tiles."""
        R = X.shape[0]
        KW = X.shape[1]
        for l in range(L):
            idx = l * NT + tid
            r = idx // BK2
            c = idx - r * BK2
            gk = k0 + 2 * c
            lo = np.uint64(0)
            hi = np.uint64(0)
            if row0 + r < R:
                if gk < KW:
                    lo = np.uint64(X[row0 + r, gk])
                if gk + 1 < KW:
                    hi = np.uint64(X[row0 + r, gk + 1])
            S[r, c] = lo | (hi << np.uint64(32))

    @cuda.jit(**jit_kw)
    def xnor_kernel(A, B, k, out, nb0):
        M = A.shape[0]
        KW = A.shape[1]
        N = B.shape[0]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        m0 = cuda.blockIdx.x * BM
        n0 = (cuda.blockIdx.y + nb0) * BN
        As = cuda.shared.array((BM, BKP), uint64)
        Bs = cuda.shared.array((BN, BKP), uint64)
        ones = cuda.local.array((RM, RN), uint32)  # CSA: bit-sliced running count (weight 1)
        cnt = cuda.local.array((RM, RN), int32)    # popcounts (of carries, weight 2, if CSA)
        a = cuda.local.array(RM, uint64)
        b = cuda.local.array(RN, uint64)
        for i in range(RM):
            for j in range(RN):
                ones[i, j] = np.uint32(0)
                cnt[i, j] = 0
        for k0 in range(0, KW, BK):
            # stage A[m0:m0+BM, k0:k0+BK] and B[n0:n0+BN, k0:k0+BK]; zero outside
            stage(As, A, m0, k0, tid, LA)
            stage(Bs, B, n0, k0, tid, LB)
            cuda.syncthreads()
            for c in range(BK2):
                cu = np.uint64(c)                  # unsigned index: no wraparound code
                for i in range(RM):
                    a[i] = As[ty + i * TY, cu]
                for j in range(RN):
                    b[j] = Bs[tx + j * TX, cu]
                for i in range(RM):
                    for j in range(RN):
                        x = a[i] ^ b[j]
                        x0 = np.uint32(x & np.uint64(0xFFFFFFFF))
                        x1 = np.uint32(x >> np.uint64(32))
                        if CSA:
                            # popc(x0) + popc(x1) + popc(o) = 2 popc(maj(o, x0, x1)) + popc(o^x0^x1)
                            o = ones[i, j]
                            u = np.uint32(o ^ x0)
                            ones[i, j] = np.uint32(u ^ x1)
                            cnt[i, j] += cuda.popc(np.uint32((o & x0) | (u & x1)))
                        else:
                            cnt[i, j] += cuda.popc(x0) + cuda.popc(x1)
            cuda.syncthreads()
        for i in range(RM):
            m = m0 + ty + i * TY
            if m < M:
                for j in range(RN):
                    n = n0 + tx + j * TX
                    if n < N:
                        if CSA:
                            tot = 2 * cnt[i, j] + cuda.popc(ones[i, j])
                        else:
                            tot = cnt[i, j]
                        out[m, n] = k - 2 * tot

    return xnor_kernel


def xnor_gemm_device(a_dev, b_dev, k, out_dev, csa=True, config=None):
    """XNOR-popcount GEMM on device arrays (asynchronous, default stream).

    Parameters
    ----------
    a_dev : (M, KW) uint32 device array, A packed along K (e.g. ``pack_device`` output, or
        a host ``pack`` result viewed as uint32).
    b_dev : (N, KW) uint32 device array, B packed the same way (same KW).
    k : int, the logical K, ``1 <= k <= 32 * KW``; bits past k must be zero in a and b.
    out_dev : (M, N) int32 device array, filled with
        ``k - 2 * sum_w popc(a[m, w] ^ b[n, w])`` and returned.
    csa : use the carry-save-adder kernel (default) or the plain one.
    config : a :class:`GemmConfig` (default :data:`GEMM_CONFIG`).
    """
    _check_dev(a_dev, "a_dev", np.uint32, 2)
    _check_dev(b_dev, "b_dev", np.uint32, 2)
    _check_dev(out_dev, "out_dev", np.int32, 2)
    M, KW = a_dev.shape
    N = b_dev.shape[0]
    if b_dev.shape[1] != KW:
        raise ValueError(f"xnor_gemm_device: a has {KW} words per row, b has {b_dev.shape[1]}")
    if out_dev.shape != (M, N):
        raise ValueError(f"xnor_gemm_device: out has shape {out_dev.shape}, expected {(M, N)}")
    k = int(k)
    if not 1 <= k <= 32 * KW:
        raise ValueError(f"xnor_gemm_device: k={k} does not fit {KW} words of 32 bits")
    if M == 0 or N == 0:
        return out_dev
    cfg = GemmConfig(*(config or GEMM_CONFIG))
    kern = _make_xnor_kernel(cfg, bool(csa))
    bm, bn = cfg.ty * cfg.rm, cfg.tx * cfg.rn
    gx = _blocks(M, bm)
    gy = _blocks(N, bn)
    for nb0 in range(0, gy, MAX_GRID_Y):        # gridDim.y <= 65535: N in chunks
        kern[(gx, min(MAX_GRID_Y, gy - nb0)), (cfg.tx, cfg.ty)](a_dev, b_dev, k, out_dev, nb0)
    return out_dev


def words_to_device(words):
    """(R, W) uint64 host words -> (R, 2 W) uint32 device array (the same bits)."""
    return cuda.to_device(np.ascontiguousarray(words, dtype=np.uint64).view(np.uint32))


def prepare_weights(b_words, k):
    """(N, W) uint64 -> :class:`PreparedWeights` whose ``data`` is the ``(N, 2 W)`` uint32
    device array, uploaded once."""
    return PreparedWeights("cuda", words_to_device(b_words), b_words.shape[0], k)


def check_prepared(pw):
    """``ValueError`` unless ``pw.data`` is an (n, >= ceil(k/32)) uint32 device array, or
    host (n, ceil(k/64)) uint64 words with zero padding bits (what :func:`xnor_gemm` takes)."""
    d = pw.data
    if _is_device_array(d):
        if np.dtype(d.dtype) != np.uint32 or d.ndim != 2 or d.shape[0] != pw.n \
                or d.shape[1] < (pw.k + 31) // 32:
            raise ValueError(f"prepared weights: device data must be ({pw.n}, >= "
                             f"{(pw.k + 31) // 32}) uint32, got {d.dtype} {d.shape}")
        return
    want = (pw.n, n_words(pw.k))
    if not (isinstance(d, np.ndarray) and d.dtype == np.uint64 and d.shape == want):
        raise ValueError(f"prepared weights: data must be a uint32 device array or uint64 "
                         f"words of shape {want}, got {type(d).__name__}")
    check_padding_bits(d, pw.k, "prepared weights")


def xnor_gemm(a_words, b, k, out):
    """Host API: a_words (M, W) uint64; ``b`` (N, W) uint64 or a :class:`PreparedWeights`
    (data a uint32 device array, or uint64 host words); out (M, N) int32, filled, returned."""
    if isinstance(b, PreparedWeights):
        b_dev = b.data if _is_device_array(b.data) else words_to_device(b.data)
    else:
        b_dev = words_to_device(b)
    M = a_words.shape[0]
    N = b_dev.shape[0]
    if M == 0 or N == 0:
        return out
    out_dev = cuda.device_array((M, N), dtype=np.int32)
    xnor_gemm_device(words_to_device(a_words), b_dev, k, out_dev)
    out[...] = out_dev.copy_to_host()
    return out


def bitplane_gemm(planes, b, k, out):
    """Host API of the bit-plane product: planes (8, M, W) uint64, ``b`` as in
    :func:`xnor_gemm`; out (M, N) int32 = ``sum_p 2^p xnor(planes[p], b)``, filled and
    returned.  Eight device GEMMs against weights uploaded once; sums added on the host."""
    if isinstance(b, PreparedWeights):
        b_dev = b.data if _is_device_array(b.data) else words_to_device(b.data)
    else:
        b_dev = words_to_device(b)
    M, N = out.shape
    g_dev = cuda.device_array((M, N), dtype=np.int32)
    acc = np.zeros((M, N), dtype=np.int64)
    for p in range(8):
        xnor_gemm_device(words_to_device(planes[p]), b_dev, k, g_dev)
        acc += g_dev.copy_to_host().astype(np.int64) << p
    out[...] = acc          # |u| <= 255 k fits int32 (checked by the caller)
    return out


# ---------------------------------------------------------------------------
# Binary convolution: packed NHWC + im2col on the device, XNOR GEMM, exact correction
# ---------------------------------------------------------------------------

if cuda is not None:
    @cuda.jit
    def _pack_nchw_kernel(x, padding, out, flag):
        """x (N, C, H, W) float -> out (N, H+2p, W+2p, Wc) uint32, Wc = ceil(C/32): bit c%32
        of word c//32 is x[n, c, h, w] >= 0; border pixels are +1 on every real channel."""
        N = x.shape[0]
        C = x.shape[1]
        H = x.shape[2]
        W = x.shape[3]
        Hp = out.shape[1]
        Wp = out.shape[2]
        Wc = out.shape[3]
        total = N * Hp * Wp * Wc
        start = cuda.grid(1)
        step = cuda.gridsize(1)
        for t in range(start, total, step):
            wp = t % Wp                       # fastest: coalesced reads of x along W
            rest = t // Wp
            cw = rest % Wc
            rest = rest // Wc
            hp = rest % Hp
            n = rest // Hp
            h = hp - padding
            w = wp - padding
            c0 = cw * 32
            nb = min(32, C - c0)
            word = np.uint32(0)
            if h < 0 or h >= H or w < 0 or w >= W:
                word = np.uint32(0xFFFFFFFF) >> np.uint32(32 - nb)
            else:
                for j in range(nb):
                    v = x[n, c0 + j, h, w]
                    if v >= 0:
                        word |= np.uint32(1) << np.uint32(j)
                    elif v != v:
                        flag[0] = 1
            out[n, hp, wp, cw] = word

    @cuda.jit
    def _im2col_kernel(xb, KH, KW, stride, Ho, Wo, cols):
        """xb (N, Hp, Wp, Wc) uint32 -> cols (N * Ho * Wo, KH * KW * Wc) uint32: row
        n * Ho * Wo + oh * Wo + ow, word (kh * KW + kw) * Wc + cw = xb[n, oh*s + kh, ow*s + kw, cw]."""
        Wc = xb.shape[3]
        R = cols.shape[0]
        L = cols.shape[1]
        P = Ho * Wo
        total = R * L
        start = cuda.grid(1)
        step = cuda.gridsize(1)
        for t in range(start, total, step):
            row = t // L
            col = t - row * L
            tap = col // Wc
            cw = col - tap * Wc
            kh = tap // KW
            kw = tap - kh * KW
            n = row // P
            q = row - n * P
            oh = q // Wo
            ow = q - oh * Wo
            cols[row, col] = xb[n, oh * stride + kh, ow * stride + kw, cw]

    @cuda.jit
    def _conv_finish_kernel(g, corr, out):
        """g (N * P, F) int32 GEMM result, corr (P, F) int32 -> out (N, F, P) int32 =
        g[n * P + q, f] - corr[q, f] (the zero-padding correction, convention 6)."""
        N = out.shape[0]
        F = out.shape[1]
        P = out.shape[2]
        total = N * F * P
        start = cuda.grid(1)
        step = cuda.gridsize(1)
        for t in range(start, total, step):
            q = t % P
            rest = t // P
            f = rest % F
            n = rest // F
            out[n, f, q] = g[n * P + q, f] - corr[q, f]


class ConvWeights:
    """Binary conv filters uploaded once: ``words`` (F, KH * KW * Wc) uint32 device array in
    the im2col K order (tap-major, channel-minor, ``Wc = ceil(C/32)`` words per tap),
    ``sign_sums`` (F, KH, KW) int32 host array = sum_c sign(w) (for the border correction),
    ``shape`` = (F, C, KH, KW)."""

    def __init__(self, words, sign_sums, shape):
        self.words = words
        self.sign_sums = sign_sums
        self.shape = tuple(int(s) for s in shape)
        self._corr_cache = {}

    def correction(self, H, W, stride, padding, Ho, Wo):
        """(Ho * Wo, F) int32 device array: what to subtract at each output position."""
        key = (H, W, stride, padding)
        if key not in self._corr_cache:
            F = self.shape[0]
            qs, corr = padding_correction(self.sign_sums, H, W, stride, padding, Ho, Wo)
            dense = np.zeros((Ho * Wo, F), dtype=np.int32)
            if qs.size:
                dense[qs] = corr
            self._corr_cache = {key: cuda.to_device(dense)}   # keep one: shapes rarely change
        return self._corr_cache[key]


def prepare_conv_weights(w):
    """w (F, C, KH, KW) real (no NaN) -> :class:`ConvWeights` (packed on the host, uploaded)."""
    w = np.asarray(w)
    F, C, KH, KW = w.shape
    Wc = (C + 31) // 32
    words = _cpu_pack(np.ascontiguousarray(np.transpose(w, (0, 2, 3, 1))))   # (F, KH, KW, W64)
    words32 = words.view(np.uint32)[..., :Wc]                                 # (F, KH, KW, Wc)
    words32 = np.ascontiguousarray(words32).reshape(F, KH * KW * Wc)
    s = np.where(w >= 0, 1, -1).sum(axis=1).astype(np.int32)
    return ConvWeights(cuda.to_device(words32), s, w.shape)


def binary_conv2d_device(x_dev, weights, stride, padding, check_nan=True):
    """Binary convolution on a device batch.

    x_dev : (N, C, H, W) float32/float64 device array; weights : :class:`ConvWeights`;
    stride >= 1, padding >= 0 (zeros).  Returns a new (N, F, H', W') int32 device array
    equal to :func:`minibnn.kernels.reference.binary_conv2d`.  ``check_nan`` syncs and
    raises ``ValueError`` if x holds a NaN.
    """
    if not _is_device_array(x_dev) or x_dev.ndim != 4:
        raise TypeError("binary_conv2d_device: x_dev must be a 4-D CUDA device array")
    if np.dtype(x_dev.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"binary_conv2d_device: x_dev must be float32/float64, got {x_dev.dtype}")
    N, C, H, W = x_dev.shape
    F, Cw, KH, KW = weights.shape
    if C != Cw:
        raise ValueError(f"binary_conv2d_device: x has C={C} channels but the weights expect {Cw}")
    Ho = conv_output_size(H, KH, stride, padding)
    Wo = conv_output_size(W, KW, stride, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError("binary_conv2d_device: kernel larger than the padded input")
    P = Ho * Wo
    Wc = (C + 31) // 32
    out = cuda.device_array((N, F, Ho, Wo), dtype=np.int32)
    if N == 0:
        return out
    Hp, Wp = H + 2 * padding, W + 2 * padding
    flag = cuda.to_device(np.zeros(1, dtype=np.int32))
    xb = cuda.device_array((N, Hp, Wp, Wc), dtype=np.uint32)
    _pack_nchw_kernel[_elem_grid(xb.size), ELEM_THREADS](x_dev, padding, xb, flag)
    cols = cuda.device_array((N * P, KH * KW * Wc), dtype=np.uint32)
    _im2col_kernel[_elem_grid(cols.size), ELEM_THREADS](xb, KH, KW, stride, Ho, Wo, cols)
    g = cuda.device_array((N * P, F), dtype=np.int32)
    xnor_gemm_device(cols, weights.words, KH * KW * C, g)
    corr = weights.correction(H, W, stride, padding, Ho, Wo)
    _conv_finish_kernel[_elem_grid(out.size), ELEM_THREADS](g, corr, out.reshape(N, F, P))
    if check_nan and flag.copy_to_host()[0]:
        raise ValueError("binary_conv2d: x contains NaN, which has no sign")
    return out


def binary_conv2d(x, w, stride, padding):
    """See :func:`minibnn.kernels.binary_conv2d`: x (N, C, H, W) float32/64 C-contiguous,
    w (F, C, KH, KW) real -> (N, F, H', W') int32 (host arrays)."""
    return binary_conv2d_device(cuda.to_device(np.ascontiguousarray(x)), prepare_conv_weights(w),
                                stride, padding).copy_to_host()


# ---------------------------------------------------------------------------
# Packed inference on the device: threshold + pack, bit planes, their sums
# (device twins of kernels.threshold_pack, kernels.pack_bitplanes, the bit-plane GEMM;
# used by minibnn.packed.runtime_cuda, so activations stay packed on the GPU)
# ---------------------------------------------------------------------------

if cuda is not None:
    @cuda.jit
    def _threshold_pack_kernel(s, t, out):
        """out[n, w] (uint32) = bits j of (s[n, 32 w + j] >= t[32 w + j]), 0 past D."""
        D = s.shape[1]
        KWo = out.shape[1]
        for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            n = e // KWo
            w = e - n * KWo
            word = uint32(0)
            base = w * 32
            for j in range(32):
                d = base + j
                if d < D and s[n, d] >= t[d]:
                    word |= uint32(1) << uint32(j)
            out[n, w] = word

    @cuda.jit
    def _bitplanes_kernel(p, out):
        """p (N, K) uint8 -> out (8, N, KWo) uint32: bit j of word w of plane b is bit b
        of p[n, 32 w + j] (0 past K)."""
        K = p.shape[1]
        N = out.shape[1]
        KWo = out.shape[2]
        for e in range(cuda.grid(1), N * KWo, cuda.gridsize(1)):
            n = e // KWo
            w = e - n * KWo
            base = w * 32
            for b in range(8):
                word = uint32(0)
                for j in range(32):
                    kk = base + j
                    if kk < K and (p[n, kk] >> b) & 1:
                        word |= uint32(1) << uint32(j)
                out[b, n, w] = word

    @cuda.jit
    def _shift_add_kernel(acc, g, shift):
        """acc += g << shift (int32, flattened)."""
        for e in range(cuda.grid(1), acc.size, cuda.gridsize(1)):
            acc[e] += g[e] << shift


def threshold_pack_device(s_dev, t_dev, out_dev=None):
    """Device twin of :func:`minibnn.kernels.threshold_pack`: s (N, D) int32 and t (D,)
    int32 device arrays -> (N, 2 ceil(D/64)) uint32 device words of ``s >= t`` (bit d in
    word d // 32 at bit d % 32, padding zero: the uint64 words of the CPU viewed as
    uint32), the next layer's packed input.  Asynchronous."""
    _check_dev(s_dev, "s", np.int32, 2)
    _check_dev(t_dev, "t", np.int32, 1)
    N, D = s_dev.shape
    if t_dev.shape != (D,):
        raise ValueError(f"threshold_pack_device: t must have shape ({D},), got {t_dev.shape}")
    if D == 0:
        raise ValueError("threshold_pack_device: D = 0, nothing to pack")
    if out_dev is None:
        out_dev = cuda.device_array((N, 2 * n_words(D)), dtype=np.uint32)
    else:
        _check_dev(out_dev, "out", np.uint32, 2)
        if out_dev.shape != (N, 2 * n_words(D)):
            raise ValueError(f"threshold_pack_device: out must be {(N, 2 * n_words(D))}, "
                             f"got {out_dev.shape}")
    if out_dev.size:
        _threshold_pack_kernel[_elem_grid(out_dev.size), ELEM_THREADS](s_dev, t_dev, out_dev)
    return out_dev


def bitplanes_device(p_dev):
    """Device twin of :func:`minibnn.kernels.pack_bitplanes`: (N, K) uint8 device pixels
    -> (8, N, 2 ceil(K/64)) uint32 device words (plane b holds bit b of every pixel)."""
    _check_dev(p_dev, "p", np.uint8, 2)
    N, K = p_dev.shape
    if K == 0:
        raise ValueError("bitplanes_device: K = 0 pixels per row")
    out = cuda.device_array((8, N, 2 * n_words(K)), dtype=np.uint32)
    if N:
        _bitplanes_kernel[_elem_grid(N * out.shape[2]), ELEM_THREADS](p_dev, out)
    return out


def bitplane_gemm_device(planes_dev, b_dev, k, out_dev):
    """Device twin of the bit-plane product: ``out (M, N) int32 = sum_b 2^b
    xnor(planes[b], B)`` (planes (8, M, KW), B (N, KW) uint32 device words; the caller
    keeps ``255 k`` within int32).  Eight XNOR GEMMs, each added with its shift on the
    device.  Asynchronous."""
    _check_dev(planes_dev, "planes", np.uint32, 3)
    _check_dev(out_dev, "out", np.int32, 2)
    M, N = out_dev.shape
    g = cuda.device_array((M, N), dtype=np.int32)
    if M == 0 or N == 0:
        return out_dev
    for b in range(8):
        xnor_gemm_device(planes_dev[b], b_dev, k, out_dev if b == 0 else g)
        if b:
            _shift_add_kernel[_elem_grid(out_dev.size), ELEM_THREADS](
                out_dev.reshape(out_dev.size), g.reshape(g.size), b)
    return out_dev


if cuda is not None:
    @cuda.jit
    def _plane_pm1_kernel(p, b, out):
        """out = +1 where bit b of the uint8 pixel p is set, else -1 (flattened)."""
        for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            out[e] = float32(1.0) if (p[e] >> b) & 1 else float32(-1.0)

    @cuda.jit
    def _maxpool_flip_kernel(s, flip, k, stride, out):
        """out[n, f, i, j] = max of the window of s, read negated where flip[f] (and the
        maximum negated back): the float model's max-pool in the folded domain."""
        F = out.shape[1]
        Ho = out.shape[2]
        Wo = out.shape[3]
        for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            j = e % Wo
            r = e // Wo
            i = r % Ho
            r = r // Ho
            f = r % F
            n = r // F
            neg = flip[f] != 0
            best = 0
            for a in range(k):
                for c in range(k):
                    v = s[n, f, i * stride + a, j * stride + c]
                    if neg:
                        v = -v
                    if (a == 0 and c == 0) or v > best:
                        best = v
            out[n, f, i, j] = -best if neg else best

    @cuda.jit
    def _threshold_sign_kernel(s, t, HW, F, out):
        """out = +1 where s >= t[channel] else -1 (float32), s (N, F, H, W) flattened."""
        for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            f = (e // HW) % F
            out[e] = float32(1.0) if s[e] >= t[f] else float32(-1.0)


def bitplane_pm1_device(p_dev, b, out_dev):
    """Bit plane ``b`` of uint8 device pixels (any shape) as float32 +-1 into ``out_dev``
    (same shape): the input of a bit-plane convolution.  Asynchronous."""
    _check_dev(p_dev, "p", np.uint8, p_dev.ndim)
    _check_dev(out_dev, "out", np.float32, p_dev.ndim)
    if out_dev.shape != p_dev.shape:
        raise ValueError(f"bitplane_pm1_device: out has shape {out_dev.shape}, p {p_dev.shape}")
    if out_dev.size:
        _plane_pm1_kernel[_elem_grid(out_dev.size), ELEM_THREADS](
            p_dev.reshape(p_dev.size), int(b), out_dev.reshape(out_dev.size))
    return out_dev


def maxpool_flip_device(s_dev, flip_dev, kernel, stride):
    """Integer max pooling of (N, F, H, W) int32 device sums in the folded domain of a
    packed model (channels with ``flip_dev[f] != 0`` hold negated values): the device
    twin of the runtime's flip-aware pooling.  Returns (N, F, H', W') int32."""
    _check_dev(s_dev, "s", np.int32, 4)
    _check_dev(flip_dev, "flip", np.int32, 1)
    N, F, H, W = s_dev.shape
    if flip_dev.shape != (F,):
        raise ValueError(f"maxpool_flip_device: flip must have shape ({F},), got {flip_dev.shape}")
    Ho = conv_output_size(H, kernel, stride, 0)
    Wo = conv_output_size(W, kernel, stride, 0)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"maxpool_flip_device: window {kernel} larger than {H}x{W}")
    out = cuda.device_array((N, F, Ho, Wo), dtype=np.int32)
    if out.size:
        _maxpool_flip_kernel[_elem_grid(out.size), ELEM_THREADS](s_dev, flip_dev, int(kernel),
                                                                 int(stride), out)
    return out


def threshold_sign_device(s_dev, t_dev):
    """(N, F, H, W) int32 device sums and (F,) int32 thresholds -> float32 +-1 NCHW
    device array ``s >= t[f]``: a folded BN + sign whose output feeds a convolution."""
    _check_dev(s_dev, "s", np.int32, 4)
    _check_dev(t_dev, "t", np.int32, 1)
    N, F, H, W = s_dev.shape
    if t_dev.shape != (F,):
        raise ValueError(f"threshold_sign_device: t must have shape ({F},), got {t_dev.shape}")
    out = cuda.device_array((N, F, H, W), dtype=np.float32)
    if out.size:
        _threshold_sign_kernel[_elem_grid(out.size), ELEM_THREADS](
            s_dev.reshape(s_dev.size), t_dev, H * W, F, out.reshape(out.size))
    return out


def launch_shift_add(acc_dev, g_dev, shift):
    """``acc += g << shift`` on int32 device arrays of one shape (asynchronous)."""
    _check_dev(acc_dev, "acc", np.int32, acc_dev.ndim)
    _check_dev(g_dev, "g", np.int32, acc_dev.ndim)
    if acc_dev.shape != g_dev.shape:
        raise ValueError(f"launch_shift_add: shapes {acc_dev.shape} and {g_dev.shape} differ")
    if acc_dev.size:
        _shift_add_kernel[_elem_grid(acc_dev.size), ELEM_THREADS](
            acc_dev.reshape(acc_dev.size), g_dev.reshape(g_dev.size), int(shift))
    return acc_dev
