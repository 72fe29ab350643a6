"""Convolution backward without im2col: implicit GEMMs on a padded channel-major layout.

The backward of a stride-1 convolution (Hubara et al. 2016, Sec. 1.3: the gradients are
computed in float against ``sign(w)``) is, per tap ``(a, b)`` of the ``KH x KW`` window::

    dw[:, :, a, b] = sum_{n,i,j} dout[n, :, i, j] (x) xpad[n, :, i + a, j + b]
    dx             = sum_{a,b} w[:, :, a, b].T  applied to  dout shifted by (a, b)

The im2col form materialises ``N*H'*W' x C*KH*KW`` floats twice (the unfolded input for
dw, the unfolded gradient for col2im): 118 MB each for 64 channels, 32x32, batch 50, and
writing, re-reading and scattering them took as long as the GEMMs.  Here nothing is
unfolded.  Both operands are laid out channel-major on a grid of ``Hp x Wp`` blocks,
``(C, N * Hp * Wp)`` flattened per channel: position ``p = (n*Hp + i)*Wp + j``, each
image at offset ``(padding, padding)`` of its block (:func:`grid_shape`: ``Hp = H +
padding`` when neighbouring images may share their zero border, else ``H + 2*padding``).
On that grid a tap is a constant offset, ``off = a*Wp + b``, so each tap is a plain GEMM
on a strided view::

    dz  (F, L): dout[n, f, i, j] at p (i < H', j < W'), zero elsewhere, L = N*Hp*Wp
    xp  (C, L): x[n, c, i - padding, j - padding] at p, zero elsewhere
    dw_tap      = dz @ xp[:, off : off + L].T                   (F, C)
    dxp        += w_tap.T @ dz[:, -off : -off + L]              (C, L), accumulated
    dx          = the images of dxp, back to (N, C, H, W)

(:func:`conv_backward` stacks the ``KW`` taps of a kernel row into one GEMM, see there.)
Entries of ``dz`` are zero outside the valid outputs, so a shifted view that crosses into
the neighbouring row or image only ever multiplies zeros; ``dz`` and ``xp`` carry
``KH*Wp + KW`` zero columns of slack on the side a shift reads past.  The GEMMs go to
NumPy's own BLAS through :func:`gemm`, which takes strided views and ``beta`` (NumPy's
matmul copies such views and has no accumulate); the layout passes are the Numba kernels
below, each with its NumPy twin (``*_reference``).  The whole backward's twin is the
im2col formula, :func:`conv_backward_reference` (tests/test_train_kernels.py).

Only stride 1 (every convolution of the paper's networks); :func:`supported` says when.
Shapes: ``x (N, C, H, W)``, ``dout (N, F, H', W')``, ``w_mat (F, C*KH*KW)`` in
``w.reshape(F, -1)`` order; float32 or float64, one dtype; arguments arrive validated and
C-contiguous (:mod:`minibnn.functional` checks them; Numba does not bounds-check).
"""

import ctypes

import numpy as np
from numba import njit, prange

__all__ = ["supported", "grid_shape", "gemm", "pad_channel_major", "embed_channel_major",
           "extract_interior", "conv_backward", "pad_channel_major_reference",
           "embed_channel_major_reference", "extract_interior_reference",
           "conv_backward_reference"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------
# BLAS GEMM on strided views, with beta: NumPy's own OpenBLAS through its CBLAS symbol
# ---------------------------------------------------------------------------

#: CBLAS names tried in NumPy's BLAS library, with whether their integers are 64-bit
_CBLAS_NAMES = (("scipy_cblas_{}64_", True), ("cblas_{}64_", True), ("cblas_{}", False))
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _numpy_blas_library():
    """ctypes handle of the BLAS library NumPy's matmul runs on (its wheel's bundled
    OpenBLAS), or None.  The same library: one thread pool, so the GEMMs here never
    contend with NumPy's (a second OpenBLAS -- SciPy's -- spinning its own two threads
    made every GEMM after it 5x slower on this 2-core machine)."""
    import glob
    import os
    libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*.so*"))):
        try:
            return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
    return None


def _load_gemm():
    lib = _numpy_blas_library()
    if lib is None:
        return {}
    found = {}
    for dtype, letter, real in ((np.dtype(np.float32), "s", ctypes.c_float),
                                (np.dtype(np.float64), "d", ctypes.c_double)):
        for pattern, ilp64 in _CBLAS_NAMES:
            fn = getattr(lib, pattern.format(letter + "gemm"), None)
            if fn is None:
                continue
            i = ctypes.c_int64 if ilp64 else ctypes.c_int
            fn.restype = None
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i, i, i, real,
                           ctypes.c_void_p, i, ctypes.c_void_p, i, real, ctypes.c_void_p, i]
            found[dtype] = fn
            break
    return found


_GEMM = None


def _gemm_fn(dtype):
    global _GEMM
    if _GEMM is None:
        try:
            _GEMM = _load_gemm()
        except Exception:         # no bundled OpenBLAS here: the im2col path runs instead
            _GEMM = {}
    return _GEMM.get(np.dtype(dtype))


def _operand(a, itemsize):
    """(CBLAS transpose flag, leading dimension) of a 2-D view with one unit stride."""
    s0, s1 = a.strides
    if s1 == itemsize and s0 % itemsize == 0 and s0 // itemsize >= max(1, a.shape[1]):
        return _NO_TRANS, s0 // itemsize      # rows contiguous, ld >= cols
    if s0 == itemsize and s1 % itemsize == 0 and s1 // itemsize >= max(1, a.shape[0]):
        return _TRANS, s1 // itemsize         # the transpose of such a view
    raise ValueError(f"gemm: operand with strides {a.strides} has no BLAS layout")


def gemm(a, b, c, beta=0.0):
    """``c = a @ b + beta * c`` in place, on 2-D views BLAS reads without a copy.

    a (M, K), b (K, N), c (M, N): one dtype (float32 or float64); a and b either with
    contiguous rows (``x[:, s:e]`` of a C array) or the transpose of such a view; c with
    contiguous rows.  NumPy's matmul would copy a strided view and has no ``beta``.
    """
    M, K = a.shape
    N = b.shape[1]
    if c.strides[1] != c.itemsize or c.strides[0] < c.itemsize * max(1, N):
        raise ValueError("gemm: c must have contiguous rows")
    if M == 0 or N == 0:
        return c
    fn = _gemm_fn(c.dtype)
    if fn is None:
        raise RuntimeError("gemm: no CBLAS GEMM found in NumPy's BLAS library")
    ta, lda = _operand(a, c.itemsize)
    tb, ldb = _operand(b, c.itemsize)
    fn(_ROW_MAJOR, ta, tb, M, N, K, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb,
       beta, c.ctypes.data, c.strides[0] // c.itemsize)
    return c


# ---------------------------------------------------------------------------
# layout passes (Numba) and their NumPy twins
# ---------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _extract_interior(src, padding, Hp, Wp, lead, dx):
    """dx (N, C, H, W) <- the image at offset (padding, padding) of each Hp x Wp block of
    src (C, lead + N*Hp*Wp + ...)."""
    N, C, H, W = dx.shape
    for t in prange(N * C):
        n = t // C
        c = t % C
        base = lead + n * Hp * Wp
        for y in range(H):
            row = base + (y + padding) * Wp + padding
            for j in range(W):
                dx[n, c, y, j] = src[c, row + j]


def pad_channel_major(x, padding, lead=0, tail=0, grid=None):
    """x (N, C, H, W) -> (C, lead + N*Hp*Wp + tail), x zero-padded on the grid
    ``Hp x Wp = grid`` (default ``(H + 2*padding, W + 2*padding)``), ``lead`` and
    ``tail`` zero columns on either side.  ``grid`` larger than the padded image puts
    zeros after each image's rows and columns (how :func:`embed_channel_major` places
    dout, ``padding=0``, on the input's grid)."""
    N, C, H, W = x.shape
    Hp, Wp = grid if grid is not None else (H + 2 * padding, W + 2 * padding)
    out = np.empty((C, lead + N * Hp * Wp + tail), dtype=x.dtype)
    if out.size:
        _embed(x, padding, Hp, Wp, lead, out)
    return out


@njit(cache=True, parallel=True)
def _embed(x, padding, Hp, Wp, lead, out):
    """out (C, lead + N*Hp*Wp + tail) <- x at offset (padding, padding) of each Hp x Wp
    image of the grid, zeros elsewhere; prange over (channel, image)."""
    N, C, H, W = x.shape
    for t in prange(C * N):
        c = t // N
        n = t % N
        base = lead + n * Hp * Wp
        for i in range(Hp):
            y = i - padding
            row = base + i * Wp
            if y < 0 or y >= H:
                for j in range(Wp):
                    out[c, row + j] = 0.0
                continue
            for j in range(padding):
                out[c, row + j] = 0.0
            for j in range(W):
                out[c, row + padding + j] = x[n, c, y, j]
            for j in range(padding + W, Wp):
                out[c, row + j] = 0.0
    total = N * Hp * Wp
    for c in prange(C):
        for p in range(lead):
            out[c, p] = 0.0
        for p in range(lead + total, out.shape[1]):
            out[c, p] = 0.0


def embed_channel_major(d, grid, lead=0, tail=0):
    """d (N, F, H', W') -> (F, lead + N*Hp*Wp + tail): d[n, f, i, j] at position
    ``(n*Hp + i)*Wp + j`` of the ``grid = (Hp, Wp)`` (Hp >= H', Wp >= W'), zeros elsewhere."""
    return pad_channel_major(d, 0, lead, tail, grid)


def extract_interior(src, x_shape, padding, lead=0, grid=None):
    """Inverse of :func:`pad_channel_major` (same ``padding``, ``lead``, ``grid``): src
    (C, lead + N*Hp*Wp + ...) -> the (N, C, H, W) = ``x_shape`` images (a new
    C-contiguous array)."""
    N, C, H, W = x_shape
    Hp, Wp = grid if grid is not None else (H + 2 * padding, W + 2 * padding)
    dx = np.empty(x_shape, dtype=src.dtype)
    if dx.size:
        _extract_interior(src, padding, Hp, Wp, lead, dx)
    return dx


def pad_channel_major_reference(x, padding, lead=0, tail=0, grid=None):
    """NumPy twin of :func:`pad_channel_major`."""
    N, C, H, W = x.shape
    Hp, Wp = grid if grid is not None else (H + 2 * padding, W + 2 * padding)
    g = np.zeros((C, N, Hp, Wp), dtype=x.dtype)
    h, w = min(H, Hp - padding), min(W, Wp - padding)
    g[:, :, padding:padding + h, padding:padding + w] = np.transpose(x, (1, 0, 2, 3))[:, :, :h, :w]
    out = np.zeros((C, lead + N * Hp * Wp + tail), dtype=x.dtype)
    out[:, lead:lead + N * Hp * Wp] = g.reshape(C, -1)
    return out


def embed_channel_major_reference(d, grid, lead=0, tail=0):
    """NumPy twin of :func:`embed_channel_major`."""
    return pad_channel_major_reference(d, 0, lead, tail, grid)


def extract_interior_reference(src, x_shape, padding, lead=0, grid=None):
    """NumPy twin of :func:`extract_interior`."""
    N, C, H, W = x_shape
    Hp, Wp = grid if grid is not None else (H + 2 * padding, W + 2 * padding)
    g = src[:, lead:lead + N * Hp * Wp].reshape(C, N, Hp, Wp)
    return np.ascontiguousarray(np.transpose(g[:, :, padding:padding + H, padding:padding + W],
                                             (1, 0, 2, 3)))


# ---------------------------------------------------------------------------
# the backward
# ---------------------------------------------------------------------------

def grid_shape(H, W, kh, kw, padding):
    """The ``(Hp, Wp)`` blocks the images are laid out on.

    ``(H + padding, W + padding)`` when ``padding <= kh - 1`` and ``padding <= kw - 1``:
    neighbouring images (rows) share their zero border -- the bottom padding of image n is
    the top padding of image n+1, the right padding of a row the left padding of the next
    -- since a tap never reaches past the next block's leading zeros; 8x8 images then cost
    81 grid positions instead of 100.  Otherwise the fully padded
    ``(H + 2*padding, W + 2*padding)``.
    """
    if padding <= kh - 1 and padding <= kw - 1:
        return H + padding, W + padding
    return H + 2 * padding, W + 2 * padding


def supported(x, dout, w_mat, stride):
    """True when :func:`conv_backward` applies: stride 1, float32/float64 C-contiguous
    arrays of one dtype, int32-sized GEMM dimensions."""
    if stride != 1:
        return False
    if not (x.dtype == dout.dtype == w_mat.dtype and x.dtype in _FLOATS):
        return False
    if not (x.flags.c_contiguous and dout.flags.c_contiguous):
        return False
    if _gemm_fn(x.dtype) is None:
        return False
    N, C, H, W = x.shape
    return N * (H + 2) * (W + 2) + 4 * (H + W) < 2 ** 31 - 2 ** 20


def conv_backward(dout, x, w_mat, kh, kw, padding, need_dx=True, dw_out=None):
    """``(dx, dw)`` of a stride-1 convolution with zero padding (module docstring).

    dout : (N, F, H', W'), x : (N, C, H, W), w_mat : (F, C*kh*kw) -- the weights the
    forward used (``sign(w)`` for a binary layer); one float dtype, C-contiguous, with
    ``H' = H + 2*padding - kh + 1``.  Returns dx (N, C, H, W) (None when ``need_dx`` is
    False) and dw (F, C*kh*kw), both in that dtype; dw is written into ``dw_out`` when
    that is given (a C-contiguous (F, C*kh*kw) array of the dtype; ``ValueError``
    otherwise).

    The taps are stacked so that few, wide GEMMs remain (64-wide ones ran BLAS at half
    its rate): ``x3`` holds ``kw`` copies of xp, row ``(b, c)`` shifted by ``b`` columns,
    ``dza`` holds ``kh`` copies of dz, row ``(a, f)`` shifted by ``-a*Wp``; then
    ``x3 @ dza.T`` is every tap of dw at once, ``(kw*C, kh*F)``, block ``(b, a)`` = tap
    ``(a, b)`` transposed.  dx takes ``kh`` accumulating GEMMs of ``K = kw*F`` over
    ``dz3``, ``kw`` copies of dz shifted by ``kw-1-b``.
    """
    N, F, Ho, Wo = dout.shape
    C, H, W = x.shape[1:]
    Hp, Wp = grid_shape(H, W, kh, kw, padding)
    L = N * Hp * Wp
    S = kh * Wp + kw                             # > the largest tap offset (kh-1)*Wp + kw-1
    T = L + (kh - 1) * Wp                        # columns the shifted copies span
    dtype = dout.dtype
    xp = pad_channel_major(x, padding, 0, S, (Hp, Wp))          # (C, L + S)
    dz = embed_channel_major(dout, (Hp, Wp), S, T - L)          # (F, S + T), zeros around
    x3 = np.empty((kw * C, T), dtype=dtype)                     # row b*C + c: xp[c, b + q]
    for b in range(kw):
        x3[b * C:(b + 1) * C] = xp[:, b:b + T]
    dza = np.empty((kh * F, T), dtype=dtype)                    # row a*F + f: dz on the
    for a in range(kh):                                         # grid at q - a*Wp
        dza[a * F:(a + 1) * F] = dz[:, S - a * Wp:S - a * Wp + T]
    # sum_q xp[c, b + q] dz_grid[f, q - a*Wp] = sum_p xp[c, p + a*Wp + b] dz_grid[f, p]
    taps = np.empty((kw * C, kh * F), dtype=dtype)
    gemm(x3, dza.T, taps)
    tapped = taps.reshape(kw, C, kh, F).transpose(3, 1, 2, 0)   # (F, C, kh, kw) view
    if dw_out is None:
        dw = np.ascontiguousarray(tapped)
    else:
        if not (isinstance(dw_out, np.ndarray) and dw_out.shape == (F, C * kh * kw)
                and dw_out.dtype == dtype and dw_out.flags.c_contiguous):
            raise ValueError(f"conv_backward: dw_out must be a C-contiguous {dtype} array "
                             f"of shape {(F, C * kh * kw)}")
        dw = dw_out
        np.copyto(dw.reshape(F, C, kh, kw), tapped)
    w4 = w_mat.reshape(F, C, kh, kw)
    dx = None
    if need_dx:
        # row b*F + f of dz3 is dz[f] shifted by kw-1-b, so that the view at column
        # S - a*Wp - (kw-1) holds, in row (b, f), dz[f, S - (a*Wp + b) + q]: tap (a, b)
        U = S + L - (kw - 1)
        dz3 = np.empty((kw * F, U), dtype=dtype)
        for b in range(kw):
            dz3[b * F:(b + 1) * F] = dz[:, kw - 1 - b:kw - 1 - b + U]
        wt = np.empty((kh, C, kw, F), dtype=dtype)
        wt[...] = np.transpose(w4, (2, 1, 3, 0))                # row a: (c, (b, f))
        dxp = np.empty((C, L), dtype=dtype)
        for a in range(kh):
            s0 = S - a * Wp - (kw - 1)
            gemm(wt[a].reshape(C, kw * F), dz3[:, s0:s0 + L], dxp, beta=0.0 if a == 0 else 1.0)
        dx = extract_interior(dxp, x.shape, padding, 0, (Hp, Wp))
    return dx, (dw if dw_out is not None else dw.reshape(F, C * kh * kw))


def conv_backward_reference(dout, x, w_mat, kh, kw, padding, need_dx=True, dw_out=None):
    """NumPy twin of :func:`conv_backward`: the im2col formula, ``dw = dout_rows.T @
    im2col(x)``, ``dx = col2im(dout_rows @ w_mat)`` (:mod:`minibnn.kernels.reference`)."""
    from . import reference
    N, F, Ho, Wo = dout.shape
    cols = reference.im2col(x, kh, kw, 1, padding)
    d2 = dout.transpose(0, 2, 3, 1).reshape(-1, F)
    dw = d2.T @ cols if dw_out is None else np.matmul(d2.T, cols, out=dw_out)
    dx = reference.col2im(d2 @ w_mat, x.shape, kh, kw, 1, padding) if need_dx else None
    return dx, dw
