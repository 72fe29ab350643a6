"""Forward and backward functions of every layer, CS231n style, no autograd.

Each operation is a pair ``*_forward(...) -> (out, cache)`` and
``*_backward(dout, cache) -> gradients``; the backward is the exact gradient of the
forward, or, where the forward is a quantizer, the straight-through pseudo-gradient named
in the docstring next to the forward rule (see also :mod:`minibnn.quantize`).  The binary
conventions (sign(0) = +1, zero padding of binary convolutions, ...) are in
:mod:`minibnn.kernels.bitpack`.

Shapes: ``N`` batch, ``D`` features, ``K`` reduction length (input features of a dense
layer), ``F`` output features / filters, images ``(N, C, H, W)``, filters
``(F, C, KH, KW)``, ``H' = (H + 2*padding - KH) // stride + 1`` (same for ``W'``).

Dtypes: activations and parameters are float32 in a model; every function also accepts
float64 (gradient checks run in float64) and computes in the promoted float type of its
inputs, never below float32.  Integer inputs are converted to float32.

Binary layers and ``backend``: ``binary_dense_forward`` / ``binary_conv2d_forward``
compute ``x_b (*) sign(w)``.  With ``binary_input=True`` the product runs on bit-packed
words through :mod:`minibnn.kernels` (cast from int32 to float, exact) on the kernel
backend ``backend`` names (``"cpu"``, ``"reference"``, ``"cuda"``; ``None``, the default,
is the default kernel backend, see :func:`product_backend`); ``backend="float"`` asks
for the float BLAS product instead.  Both paths give identical results for +-1 inputs
(every partial sum is an integer of magnitude <= K < 2**24, exact in float32), which the
tests check bit for bit.

The device twin: :mod:`minibnn.functional_cuda` has every name in ``__all__`` with the
same signature and cache contract, on numba.cuda device arrays;
:func:`minibnn.dispatch.twin` picks the module by where the arrays live, so the layers
are written once.  Besides the ``*_forward`` / ``*_backward`` pairs the layers use
:func:`as_input` (input conversion), :func:`check_finite`, :func:`copy_into` (gradient
stores), :func:`running_average` (BatchNorm statistics), and the quantizers
``ste_sign_forward`` / ``ste_sign_backward`` / ``stochastic_sign`` re-exported from
:mod:`minibnn.quantize`; BatchNorm's train-mode cache holds ``batch_mean`` and
``batch_var``.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016: Sec. 1.1-1.3
(binarization, STE), Sec. 1.4 / Alg. 3 (shift-based BN), Alg. 1 (training loop), Sec. 3
(XNOR-popcount kernels).  Ioffe & Szegedy 2015 (batch normalization).
"""

import numpy as np

from . import checks, kernels
from .kernels import bf16, conv_train, norm_cpu, pool, reference, unfold
from .kernels.backend import BACKENDS, resolve_name
from .quantize import (ap2, sign, ste_mask, ste_sign_backward, ste_sign_forward,
                       stochastic_sign)

__all__ = [
    "dense_forward", "dense_backward", "binary_dense_forward", "binary_dense_backward",
    "prepare_binary_weights", "im2col", "col2im", "conv2d_forward", "conv2d_backward",
    "binary_conv2d_forward", "binary_conv2d_backward", "batchnorm_forward",
    "batchnorm_backward", "shift_batchnorm_forward", "shift_batchnorm_backward",
    "maxpool2d_forward", "maxpool2d_backward", "dropout_forward", "dropout_backward",
    "hardtanh_forward", "hardtanh_backward", "flatten", "flatten_forward",
    "flatten_backward", "conv_output_size", "as_input", "check_finite", "copy_into",
    "running_average", "product_backend", "PRODUCT_BACKENDS", "ste_sign_forward",
    "ste_sign_backward", "stochastic_sign",
]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def as_input(x, name="x"):
    """``x`` as a float32/float64 ndarray (integers -> float32), the dtype kept otherwise.

    (...) real array-like -> ndarray of the same shape; ``TypeError`` naming ``name``
    for bool, complex, object or string data.  No copy for float32/float64 arrays (the
    layers call it on every forward: one type test on that path).
    """
    if type(x) is np.ndarray and (x.dtype == np.float32 or x.dtype == np.float64):
        return x
    x = checks.real_array(x, name)
    if x.dtype == np.float32 or x.dtype == np.float64:
        return x
    return x.astype(np.float32)


#: ``check_finite(x, name)``: ``ValueError`` "<name> contains NaN" / "... infinity"
check_finite = checks.check_finite


def copy_into(dst, src):
    """``dst[...] = src`` (same shape; ``src`` cast to ``dst``'s dtype, same kind).

    How a layer overwrites a gradient array in place, so that references held by an
    optimizer stay valid; the device twin copies device to device.
    """
    np.copyto(dst, src, casting="same_kind")
    return dst


def _compute_dtype(*arrays):
    """Promoted float dtype of the inputs, at least float32."""
    return np.result_type(np.float32, *[a.dtype for a in arrays if a is not None])


#: the names ``backend`` takes in the binary forwards: ``"float"`` or a kernel backend
PRODUCT_BACKENDS = ("float",) + tuple(BACKENDS)


def product_backend(backend=None):
    """The kernel backend name a binary forward uses, or None for the float BLAS product.

    ``"float"`` -> None (float BLAS: ``x @ sign(w)``); ``"cpu"`` / ``"reference"`` /
    ``"cuda"`` -> that name; ``None`` -> the default kernel backend:
    ``$MINIBNN_BACKEND`` if set, else :data:`minibnn.kernels.backend.DEFAULT_BACKEND`
    (the CPU kernels), resolved at each call so the variable can be changed at any time.
    An unknown name raises ``ValueError``.
    """
    if backend == "float":
        return None
    if backend is None or backend in BACKENDS:
        return resolve_name(backend)
    raise ValueError(f"unknown backend {backend!r}; choose one of "
                     f"{', '.join(PRODUCT_BACKENDS)} (or None for the default)")


def _is_pm1(x):
    """True if every entry of x is exactly +1 or -1.

    The packed path reads only the sign bit of x, so it may run only then.  A Dropout
    between a Sign and this layer makes the training-time input 0 or +-1/(1-p): that
    product has no packed form and is computed by float BLAS instead (the same formula,
    ``x @ sign(w)``); in evaluation mode dropout is the identity and the packed path runs.
    """
    return bool(np.all((x == 1) | (x == -1)))


def _dropped_pm1(x):
    """True if x is +-1 after inverted dropout: every entry 0 or +-c for one c > 0 that
    bfloat16 holds exactly (``1 / (1 - p)`` for p = 0.5 or 0.2: 2 and 1.25), float32.

    Such an x is exact in bfloat16, and ``x @ sign(w)`` is exact in float32: every
    partial sum is c (8 significant bits) times an integer below K < 2**16.  The
    bfloat16 kernel (:func:`minibnn.kernels.bf16.matmul`) then gives the float BLAS
    product bit for bit, 2-3x faster -- the training-time forward of a hidden layer
    behind a Dropout, which has no packed form.
    """
    if x.dtype != np.float32 or x.size == 0 or x.shape[1] >= 1 << 16:
        return False
    a = np.abs(x)
    c = a.max()
    if not (np.isfinite(c) and c > 0 and bf16.round_bf16(np.float32(c)) == c):
        return False
    return bool(np.all((a == c) | (a == 0)))


conv_output_size = kernels.conv_output_size   # (size + 2 * padding - kernel) // stride + 1


def _conv_shapes(x, w, stride, padding, where):
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"{where}: x must be (N, C, H, W) and w (F, C, KH, KW), "
                         f"got {x.shape} and {w.shape}")
    if stride < 1 or padding < 0:
        raise ValueError(f"{where}: need stride >= 1 and padding >= 0, got {stride}, {padding}")
    N, C, H, W = x.shape
    F, Cw, KH, KW = w.shape
    if Cw != C:
        raise ValueError(f"{where}: x has C={C} channels but w expects {Cw}")
    Ho = conv_output_size(H, KH, stride, padding)
    Wo = conv_output_size(W, KW, stride, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{where}: kernel {KH}x{KW} larger than the padded input "
                         f"{H + 2 * padding}x{W + 2 * padding}")
    return Ho, Wo


# ---------------------------------------------------------------------------
# dense
# ---------------------------------------------------------------------------

def dense_forward(x, w, b=None):
    """Float affine layer: ``out = x @ w + b``.

    Parameters
    ----------
    x : (N, K) float32/64.  w : (K, F) float.  b : (F,) float or None.

    Returns
    -------
    out : (N, F) promoted float dtype.
    cache : ``(x, w, has_bias)``.
    """
    x = as_input(x)
    out = x @ w
    if b is not None:
        out = out + b
    return out, (x, w, b is not None)


def dense_backward(dout, cache, need_dx=True, dw_out=None):
    """Gradients of :func:`dense_forward`.

    dout : (N, F).  Returns ``dx (N, K) = dout @ w.T``, ``dw (K, F) = x.T @ dout``,
    ``db (F,) = sum_n dout`` (None without bias).  The two options save work a training
    step does not need (the results are the same): ``need_dx=False`` skips dx (returned
    as None; a first layer's input gradient is never used), and ``dw_out`` -- an array
    of dw's shape and dtype, such as the layer's gradient buffer -- receives dw
    (:func:`into`).
    """
    x, w, has_bias = cache
    dx = dout @ w.T if need_dx else None
    dw = matmul_into(x.T, dout, dw_out)
    db = dout.sum(axis=0) if has_bias else None
    return dx, dw, db


def into(out, shape, dtype):
    """``out`` if it can receive a result of this shape and dtype (a C-contiguous array
    of exactly that shape and dtype), else None.

    The backward ops take an optional destination for the weight gradient so that a
    layer's gradient buffer is written once, by the product itself, instead of the
    product going to a new array that is then copied into it (64 MB read and written
    per step for a 4096 x 4096 layer).  Any other ``out`` is ignored: the op then
    returns a new array, and the caller copies it where it belongs.
    """
    if (type(out) is np.ndarray and out.shape == tuple(shape) and out.dtype == dtype
            and out.flags.c_contiguous and out.flags.writeable):
        return out
    return None


def matmul_into(a, b, out=None):
    """``a @ b``, written into ``out`` when :func:`into` accepts it."""
    out = into(out, (a.shape[0], b.shape[1]), np.result_type(a.dtype, b.dtype))
    return a @ b if out is None else np.matmul(a, b, out=out)


def prepare_binary_weights(w, backend):
    """sign(w) of a dense layer packed and laid out for :func:`minibnn.kernels.xnor_gemm`.

    w : (K, F) real latent weights -> :class:`minibnn.kernels.PreparedWeights` for
    ``backend`` holding the F columns of sign(w) as K bits each.
    """
    K = w.shape[0]
    # columns of w are the rows of the second GEMM operand: pack them along K without
    # materialising w.T (a 64 MB copy per step for a 4096 x 4096 layer)
    return kernels.prepare_weights(kernels.pack_columns(w), K, backend=backend)


def _binarize_weights(w, stochastic_rng):
    """sign(w), or the stochastic binarization of w (Eq. 2) drawn from ``stochastic_rng``."""
    if stochastic_rng is None:
        return sign(w)
    return stochastic_sign(w, stochastic_rng)


def binary_dense_forward(x, w, b=None, binary_input=True, backend=None, prepared=None,
                         stochastic_rng=None):
    """Binary dense layer: ``out = x_b @ w_b + b``, ``w_b = sign(w)``.

    Forward rule: ``w_b = sign(w)`` (sign(0) = +1, Eq. 1), or with ``stochastic_rng``
    ``w_b = +1`` with probability ``hard_sigmoid(w)`` else -1 (Eq. 2, the training-time
    stochastic binarization of the weights); ``x_b = x`` -- for a hidden layer
    (``binary_input=True``) x is already +-1 (the output of a SignActivation); for the
    first layer (``binary_input=False``) x is the real-valued input.  With
    ``binary_input=True`` and a kernel backend the product is
    ``xnor_gemm(pack(x), packed w_b, K)`` (int32, cast to float exactly); with
    ``backend="float"`` a float BLAS product (the first layer always takes the float
    path: its input has no bit representation).
    Pseudo-gradient (in :func:`binary_dense_backward`): the gradient w.r.t. ``w_b`` is
    applied to the latent ``w`` unchanged (straight-through; the optimizer clips w to
    [-1, 1], where the hard-tanh gate ``1{|w| <= 1}`` is 1 anyway) -- the same for the
    stochastic ``w_b``.

    Parameters
    ----------
    x : (N, K) float32/64; the packed path runs when ``binary_input``, the backend is a
        kernel one and x is all +-1 (else float BLAS, same result; see :func:`_is_pm1`;
        a float32 +-1 after Dropout takes the exact bfloat16 kernel, see
        :func:`_dropped_pm1`).
    w : (K, F) float, latent real weights.
    b : (F,) float or None.
    binary_input : bool, True for hidden layers (packed path allowed).
    backend : None (the default kernel backend, see :func:`product_backend`), "float"
        (float BLAS) or a kernel backend name ("reference", "cpu", "cuda").
    prepared : optional :class:`minibnn.kernels.PreparedWeights` of sign(w) for that
        backend (from :func:`prepare_binary_weights`); computed here when None.  Not
        with ``stochastic_rng`` (the weights are drawn anew on each call).
    stochastic_rng : None, or a ``numpy.random.Generator``: binarize w stochastically
        with it (training only; inference uses sign(w)).

    Returns
    -------
    out : (N, F) float, x's float dtype (at least float32).
    cache : dict with ``x``, ``w_b`` (K, F) float32 +-1, ``has_bias``,
        ``x_bf16_exact`` (x is +-1, or +-1 after dropout: see
        :func:`binary_dense_backward`) and, on the packed path, ``prepared`` (the
        weights actually used, for reuse).

    Raises ``ValueError`` for mismatched shapes, NaN in w or an unknown backend.

    References: Hubara et al. 2016, Sec. 1.1 (Eq. 1-2), Sec. 1.3, Alg. 1; Sec. 3 (XNOR).
    """
    x = as_input(x)
    w = as_input(w, "w")
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"binary_dense_forward: x must be (N, K) and w (K, F), got {x.shape} "
                         f"and {w.shape}")
    if prepared is not None and stochastic_rng is not None:
        raise ValueError("binary_dense_forward: prepared weights hold sign(w); they cannot "
                         "be used with stochastic_rng (w_b is drawn anew on each call)")
    kernel = product_backend(backend)
    K, F = w.shape
    dtype = _compute_dtype(x, b)
    packed_path = binary_input and kernel is not None and _is_pm1(x)
    if packed_path and prepared is None:
        # one pass over the latent weights gives both w_b (float, for backward) and its
        # packed columns (for the XNOR forward); stochastic w_b is +-1, its own sign
        wb, w_words = kernels.sign_pack_columns(
            w if stochastic_rng is None else stochastic_sign(w, stochastic_rng))
        prepared = kernels.prepare_weights(w_words, K, backend=kernel)
    else:
        wb = _binarize_weights(w, stochastic_rng)
    cache = {"x": x, "w_b": wb, "has_bias": b is not None, "x_bf16_exact": packed_path}
    if packed_path:
        if prepared.k != K or prepared.n != F:
            raise ValueError(f"binary_dense_forward: prepared weights are for (K={prepared.k}, "
                             f"F={prepared.n}), w is {w.shape}")
        if x.shape[0] == 0:
            out = np.zeros((0, F), dtype=dtype)
        else:
            acc = kernels.xnor_gemm(kernels.pack(x), prepared, K, backend=kernel)
            out = acc.astype(dtype)
        cache["prepared"] = prepared
    elif (binary_input and kernel is not None and wb.dtype == np.float32 and bf16.available()
          and _dropped_pm1(x)):
        # dropout between the sign and this layer: no bits to pack, but the same
        # product exactly, on the bfloat16 kernel (see _dropped_pm1)
        out = bf16.matmul(x, wb)
        cache["x_bf16_exact"] = True
    else:
        out = (x @ wb).astype(dtype, copy=False)
    if b is not None:
        out = out + b
    return out, cache


#: the backward's product precisions: float32 (the default), or bfloat16 -- see
#: :func:`binary_dense_backward`
GRAD_DTYPES = ("float32", "bfloat16")


def check_grad_dtype(grad_dtype):
    """``grad_dtype`` if it is one of :data:`GRAD_DTYPES`, else ``ValueError`` naming it."""
    return checks.check_choice(grad_dtype, "grad_dtype", GRAD_DTYPES)


def binary_dense_backward(dout, cache, need_dx=True, dw_out=None, grad_dtype="float32"):
    """Gradients of :func:`binary_dense_forward`.

    Rule: ``dx = dout @ sign(w).T`` (exact), ``dw = x.T @ dout`` (the gradient w.r.t.
    sign(w), passed straight through to the latent w), ``db = sum_n dout``.

    ``grad_dtype="bfloat16"``: the two products take ``round_bf16(dout)`` (the upstream
    gradient to 8 significant bits, :func:`minibnn.kernels.bf16.round_bf16`) and
    accumulate in float32 -- ``dx = bf16(dout) @ sign(w).T``, and, when x is exact in
    bfloat16 (``cache["x_bf16_exact"]``: a hidden layer's +-1 input, also after a
    Dropout with 1/(1-p) exact in bfloat16), ``dw = x.T @ bf16(dout)``.  Those operands
    are exact in bfloat16, so the gradient's rounding is the only change; a real-valued
    x (the first layer) keeps the float32 ``dw``.  On AVX512-BF16 CPUs this runs
    :func:`minibnn.kernels.bf16.matmul` (``vdpbf16ps``, 2-3.7x NumPy's float32 GEMM on
    the MLP's shapes); elsewhere the same definition in NumPy.  It applies to float32
    arrays; float64 ones (gradient checks) take the float64 products.

    dout : (N, F).  Returns ``dx (N, K)`` (None when ``need_dx`` is False), ``dw (K, F)``
    (written into ``dw_out`` when :func:`into` accepts it), ``db (F,)`` or None.

    References: Hubara et al. 2016, Sec. 1.3, Alg. 1; Kalamkar et al., "A Study of
    BFLOAT16 for Deep Learning Training", 2019 (bfloat16 gradients, float32 sums).
    """
    x, wb = cache["x"], cache["w_b"]
    half = (check_grad_dtype(grad_dtype) == "bfloat16"
            and dout.dtype == wb.dtype == x.dtype == np.float32)
    dx = None
    if need_dx:
        dx = bf16.matmul(dout, wb.T) if half else dout @ wb.T
    if half and cache.get("x_bf16_exact"):   # x was +-1 (or dropped +-1): exact in bf16
        dw = bf16.matmul(x.T, dout, out=into(dw_out, wb.shape, np.float32))
    else:
        dw = matmul_into(x.T, dout, dw_out)
    db = dout.sum(axis=0) if cache["has_bias"] else None
    return dx, dw, db


# ---------------------------------------------------------------------------
# convolution (im2col + BLAS)
# ---------------------------------------------------------------------------

def im2col(x, kh, kw, stride=1, padding=0):
    """Unfold the receptive fields of a zero-padded image batch into rows.

    x : (N, C, H, W).  Returns ``cols`` of shape ``(N * H' * W', C * kh * kw)``, x's
    dtype: row ``(n * H' + i) * W' + j`` holds the window whose top-left corner is
    ``(i * stride, j * stride)`` in the padded image, flattened in ``(c, kh, kw)``
    order -- the order of ``w.reshape(F, C * kh * kw)``, so a convolution is
    ``cols @ w.reshape(F, -1).T``.  ``H' = (H + 2 * padding - kh) // stride + 1``.

    float32/float64 input runs through the Numba kernel
    :func:`minibnn.kernels.unfold.im2col`; other dtypes through its NumPy twin
    :func:`minibnn.kernels.reference.im2col`.
    """
    check_unfold(x.shape, kh, kw, stride, padding, "im2col")
    if x.dtype in (np.float32, np.float64):
        return unfold.im2col(np.ascontiguousarray(x), kh, kw, stride, padding)
    return reference.im2col(x, kh, kw, stride, padding)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """Adjoint of :func:`im2col`: scatter-add rows back into an image batch.

    cols : (N * H' * W', C * kh * kw).  Returns (N, C, H, W) = ``x_shape``; a pixel
    covered by several windows receives the sum of their entries (this is what makes it
    the gradient of im2col).  Numba kernel for float32/float64
    (:func:`minibnn.kernels.unfold.col2im`), NumPy twin otherwise.
    """
    N, C, H, W = check_unfold(x_shape, kh, kw, stride, padding, "col2im")
    Ho = conv_output_size(H, kh, stride, padding)
    Wo = conv_output_size(W, kw, stride, padding)
    if cols.shape != (N * Ho * Wo, C * kh * kw):
        raise ValueError(f"col2im: cols must be ({N * Ho * Wo}, {C * kh * kw}) for x_shape "
                         f"{tuple(x_shape)}, kernel {kh}x{kw}, stride {stride}, padding "
                         f"{padding}; got {cols.shape}")
    if cols.dtype in (np.float32, np.float64):
        return unfold.col2im(np.ascontiguousarray(cols), tuple(x_shape), kh, kw, stride, padding)
    return reference.col2im(cols, x_shape, kh, kw, stride, padding)


def check_unfold(shape, kh, kw, stride, padding, where):
    """Shape/geometry checks shared by im2col and col2im and their device twins (the
    kernels do none): ``(N, C, H, W)`` of ``shape``, or ``ValueError`` naming ``where``."""
    if len(shape) != 4:
        raise ValueError(f"{where}: x must be (N, C, H, W), got shape {tuple(shape)}")
    for name, v, lo in (("kh", kh, 1), ("kw", kw, 1), ("stride", stride, 1),
                        ("padding", padding, 0)):
        if int(v) != v or v < lo:
            raise ValueError(f"{where}: {name} must be an integer >= {lo}, got {v!r}")
    N, C, H, W = shape
    if H + 2 * padding < kh or W + 2 * padding < kw:
        raise ValueError(f"{where}: kernel {kh}x{kw} larger than the padded image "
                         f"{H + 2 * padding}x{W + 2 * padding}")
    return N, C, H, W


def _rows_to_nchw(rows, N, Ho, Wo):
    """(N * H' * W', F) -> (N, F, H', W') C-contiguous."""
    F = rows.shape[1]
    return np.ascontiguousarray(rows.reshape(N, Ho, Wo, F).transpose(0, 3, 1, 2))


def _nchw_to_rows(d):
    """(N, F, H', W') -> (N * H' * W', F)."""
    return d.transpose(0, 2, 3, 1).reshape(-1, d.shape[1])


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """Float 2-D cross-correlation with zero padding, via im2col + BLAS.

    Parameters
    ----------
    x : (N, C, H, W) float.  w : (F, C, KH, KW) float.  b : (F,) or None.
    stride : int >= 1.  padding : int >= 0 (zeros).

    Returns
    -------
    out : (N, F, H', W') promoted float dtype.
    cache : dict with ``x_shape``, ``cols`` (im2col of x), ``w``, ``stride``,
        ``padding``, ``has_bias``.
    """
    x = as_input(x)
    Ho, Wo = _conv_shapes(x, w, stride, padding, "conv2d_forward")
    F, C, KH, KW = w.shape
    cols = im2col(x, KH, KW, stride, padding)
    out = _rows_to_nchw(cols @ w.reshape(F, -1).T, x.shape[0], Ho, Wo)
    if b is not None:
        out = out + b.reshape(1, F, 1, 1)
    cache = {"x_shape": x.shape, "cols": cols, "w": w, "stride": stride,
             "padding": padding, "has_bias": b is not None}
    return out, cache


def conv2d_backward(dout, cache, need_dx=True, dw_out=None):
    """Gradients of :func:`conv2d_forward`.

    dout : (N, F, H', W').  Returns ``dx (N, C, H, W)`` = col2im(dout_rows @ w_mat)
    (None when ``need_dx`` is False), ``dw (F, C, KH, KW)`` = dout_rows.T @ cols
    (written into ``dw_out`` when :func:`into` accepts it), ``db (F,)`` (None without
    bias).
    """
    w = cache["w"]
    F, C, KH, KW = w.shape
    dw = _conv_weight_grad(dout, cache["cols"], w.shape, dw_out)
    dx = col2im(_nchw_to_rows(dout) @ w.reshape(F, -1), cache["x_shape"], KH, KW,
                cache["stride"], cache["padding"]) if need_dx else None
    db = dout.sum(axis=(0, 2, 3)) if cache["has_bias"] else None
    return dx, dw, db


def binary_conv2d_forward(x, w, b=None, stride=1, padding=0, binary_input=True, backend=None,
                          stochastic_rng=None):
    """Binary 2-D convolution: ``out = x_b (*) w_b + b``, ``w_b = sign(w)``, zero padding.

    Forward rule: cross-correlation of ``x_b`` with ``w_b = sign(w)`` (or, with
    ``stochastic_rng``, the stochastic binarization of Eq. 2, as in
    :func:`binary_dense_forward`), the border padded with zeros (not -1 or +1:
    convention 6 of :mod:`minibnn.kernels.bitpack`).  With ``binary_input=True`` (x
    already +-1) and a kernel backend it runs through
    :func:`minibnn.kernels.binary_conv2d` (exact int32, cast to float); with
    ``backend="float"`` (or a real input) through im2col + float BLAS.
    Pseudo-gradient (in :func:`binary_conv2d_backward`): dx is exact for fixed sign(w);
    dw is the gradient w.r.t. sign(w), passed straight through to the latent w.

    Parameters
    ----------
    x : (N, C, H, W) float32/64; in {-1, +1} for the packed path.
    w : (F, C, KH, KW) float latent weights.  b : (F,) or None.
    stride : int >= 1.  padding : int >= 0.
    binary_input : bool.  backend : None (default kernel backend), "float" or a kernel
        backend name, as :func:`binary_dense_forward`.
    stochastic_rng : None or a ``numpy.random.Generator`` (stochastic w_b, training).

    Returns
    -------
    out : (N, F, H', W') float, x's float dtype (at least float32).
    cache : dict with ``x``, ``w_b`` (F, C, KH, KW) float32, ``cols`` (float path only),
        ``stride``, ``padding``, ``has_bias``.

    References: Hubara et al. 2016, Sec. 1.1 (Eq. 1-2), 1.3, Sec. 3.
    """
    x = as_input(x)
    w = as_input(w, "w")
    Ho, Wo = _conv_shapes(x, w, stride, padding, "binary_conv2d_forward")
    kernel = product_backend(backend)
    F, C, KH, KW = w.shape
    dtype = _compute_dtype(x, b)
    wb = _binarize_weights(w, stochastic_rng)
    cache = {"x": x, "w_b": wb, "cols": None, "stride": stride, "padding": padding,
             "has_bias": b is not None}
    if binary_input and kernel is not None and _is_pm1(x):
        if x.shape[0] == 0:
            out = np.zeros((0, F, Ho, Wo), dtype=dtype)
        else:
            # wb is +-1, so the kernel's sign(wb) is wb itself (sign(w) or the stochastic draw)
            out = kernels.binary_conv2d(x, wb, stride=stride, padding=padding,
                                        backend=kernel).astype(dtype)
    else:
        cols = im2col(x, KH, KW, stride, padding)
        out = _rows_to_nchw(cols @ wb.reshape(F, -1).T, x.shape[0], Ho, Wo).astype(dtype, copy=False)
        cache["cols"] = cols
    if b is not None:
        out = out + b.reshape(1, F, 1, 1)
    return out, cache


def _conv_weight_grad(dout, cols, w_shape, dw_out):
    """dw (F, C, KH, KW) = dout_rows.T @ cols, into ``dw_out`` when :func:`into` accepts it.

    dout : (N, F, H', W'); cols : (N H' W', C KH KW), the im2col of the forward's input.
    With few columns per image (K = C KH KW at most P = H' W', e.g. a first layer's 27
    against 1024 positions) it is the sum over images of ``dout[n] (F, P) @ cols_n (P,
    K)``: no transposed copy of dout, and an (N, F, K) intermediate no larger than that
    copy would be (3x faster for the ConvNets' first layer); else one GEMM on the rows.
    """
    N, F = dout.shape[:2]
    P = dout.shape[2] * dout.shape[3]
    K = cols.shape[1]
    out = into(dw_out, w_shape, np.result_type(dout.dtype, cols.dtype))
    if K <= P:
        dw = np.matmul(dout.reshape(N, F, P), cols.reshape(N, P, K)).sum(axis=0, out=(
            None if out is None else out.reshape(F, K)))
    else:
        d2 = _nchw_to_rows(dout)
        dw = d2.T @ cols if out is None else np.matmul(d2.T, cols, out=out.reshape(F, K))
    return dw.reshape(w_shape) if out is None else out


def binary_conv2d_backward(dout, cache, need_dx=True, dw_out=None):
    """Gradients of :func:`binary_conv2d_forward` (float GEMMs against sign(w)).

    Rule: ``dw = dout_rows.T @ im2col(x)``, ``dx = col2im(dout_rows @ w_mat)``.  Stride
    1 runs it as implicit GEMMs per tap without unfolding anything
    (:func:`minibnn.kernels.conv_train.conv_backward`, equal to rounding); other strides
    through im2col / col2im.

    dout : (N, F, H', W').  Returns ``dx (N, C, H, W)`` (exact, for fixed sign(w); None
    when ``need_dx`` is False), ``dw (F, C, KH, KW)`` (w.r.t. sign(w), straight through;
    written into ``dw_out`` when :func:`into` accepts it), ``db (F,)`` or None.
    """
    x, wb = cache["x"], cache["w_b"]
    F, C, KH, KW = wb.shape
    stride, padding = cache["stride"], cache["padding"]
    expected = (x.shape[0], F, conv_output_size(x.shape[2], KH, stride, padding),
                conv_output_size(x.shape[3], KW, stride, padding))
    if dout.shape != expected:       # the kernels below do not bounds-check
        raise ValueError(f"binary_conv2d_backward: dout must have shape {expected} (the "
                         f"forward's output), got {dout.shape}")
    db = dout.sum(axis=(0, 2, 3)) if cache["has_bias"] else None
    dtype = np.result_type(np.float32, dout.dtype, x.dtype)
    cols = cache["cols"]
    if stride == 1 and (cols is None or need_dx):
        # implicit GEMMs per tap on a padded channel-major layout, no im2col / col2im
        # (kernels/conv_train.py); w_b is +-1, exact in any float dtype
        d, xx = np.ascontiguousarray(dout, dtype=dtype), np.ascontiguousarray(x, dtype=dtype)
        wm = np.ascontiguousarray(wb.reshape(F, -1), dtype=dtype)
        if conv_train.supported(xx, d, wm, stride):
            out = into(dw_out, wb.shape, dtype)
            dx, dw = conv_train.conv_backward(d, xx, wm, KH, KW, padding, need_dx=need_dx,
                                              dw_out=None if out is None else out.reshape(F, -1))
            return dx, (dw.reshape(wb.shape) if out is None else out), db
    # the float forward (a real-valued input: the first layer) kept its im2col; without
    # dx (what a first layer needs) the weight gradient from it is the cheaper route
    if cols is None:             # packed forward: the float unfolding is needed only now
        cols = im2col(x, KH, KW, stride, padding)
    dw = _conv_weight_grad(dout, cols, wb.shape, dw_out)
    dx = (col2im(_nchw_to_rows(dout) @ wb.reshape(F, -1), x.shape, KH, KW, stride, padding)
          if need_dx else None)
    return dx, dw, db


# ---------------------------------------------------------------------------
# batch normalization (vanilla and shift-based)
# ---------------------------------------------------------------------------

MODES = ("train", "eval", "test")   # "test" is an alias of "eval"


def _feature_axes(x, where):
    """Reduction axes and the broadcast shape of per-feature vectors: (N, D) -> ((0,),
    (1, D)); (N, C, H, W) -> ((0, 2, 3), (1, C, 1, 1)) (statistics per channel)."""
    if x.ndim == 2:
        return (0,), (1, x.shape[1])
    if x.ndim == 4:
        return (0, 2, 3), (1, x.shape[1], 1, 1)
    raise ValueError(f"{where}: x must be (N, D) or (N, C, H, W), got shape {x.shape}")


def check_mode(mode, running_mean, running_var, where):
    """The BatchNorm mode ("train" or "eval") of ``mode``, checked (shared with the
    device twins)."""
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be 'train' or 'eval', got {mode!r}")
    if mode != "train" and (running_mean is None or running_var is None):
        raise ValueError(f"{where}: eval mode needs running_mean and running_var")
    return "train" if mode == "train" else "eval"


def running_average(running, batch, momentum):
    """The updated running statistic ``(1 - momentum) * running + momentum * batch``.

    running, batch : (D,) float.  momentum : float in [0, 1] (Lasagne's ``alpha``).
    Returns a new (D,) array in ``running``'s dtype; ``running`` is not changed (the
    BatchNorm layers commit it only once the whole forward has succeeded).
    """
    return ((1 - momentum) * running + momentum * batch).astype(running.dtype, copy=False)


def _update_running(running, batch, momentum):
    # in place, for callers of the functional API that pass their running arrays
    if running is not None:
        running[...] = running_average(running, batch, momentum)


def batchnorm_forward(x, gamma, beta, mode="train", running_mean=None, running_var=None,
                      momentum=0.1, eps=1e-4):
    """Batch normalization over the batch (and spatial) axes.

    Forward rule, per feature (per channel for 4-D x, statistics over N, H, W):
    train: ``mu, var`` = batch mean and biased variance; eval: the running ones;
    ``x_hat = (x - mu) / sqrt(var + eps)``, ``out = gamma * x_hat + beta``.
    In train mode ``running_mean`` / ``running_var`` (if given) are updated **in
    place**: ``r <- (1 - momentum) * r + momentum * batch_stat`` -- the only side effect.

    Parameters
    ----------
    x : (N, D) or (N, C, H, W) float32/64.
    gamma, beta : (D,) or (C,) float.
    mode : "train" or "eval" ("test" is accepted as an alias of "eval").
    running_mean, running_var : (D,) / (C,) float arrays or None (required in eval).
    momentum : float in [0, 1], weight of the new batch (Lasagne's ``alpha``).
    eps : float > 0.

    Returns
    -------
    out : like x.  cache : for :func:`batchnorm_backward`; in train mode it also holds
    ``batch_mean`` and ``batch_var`` ((D,) / (C,)), the statistics the running ones are
    updated with (:func:`running_average`).

    Train mode on C-contiguous (N, C, H, W) or (N, D) float input runs the fused kernel
    :func:`minibnn.kernels.norm_cpu.batchnorm_train_forward` (same rule; this NumPy code
    is its twin, equal to rounding).

    Defaults follow Courbariaux's BinaryNet code (Lasagne ``BatchNormLayer(epsilon=1e-4,
    alpha=.1)``).  Lasagne averages ``1/sqrt(var + eps)``; we average ``var`` (as
    PyTorch does) -- the same at convergence of the statistics.

    References: Ioffe & Szegedy 2015, Alg. 1; Hubara et al. 2016, Sec. 1.4.
    """
    x = as_input(x)
    mode = check_mode(mode, running_mean, running_var, "batchnorm_forward")
    axes, bshape = _feature_axes(x, "batchnorm_forward")
    if (mode == "train" and norm_cpu.fusable(x)
            and np.shape(gamma) == np.shape(beta) == (x.shape[1],)     # no bounds checks
            and np.result_type(x.dtype, np.asarray(gamma).dtype, np.asarray(beta).dtype) == x.dtype):
        # (N, C, H, W) or (N, D): the same rule in two or three passes per feature
        # (kernels/norm_cpu.py)
        out, xhat, mu, var, inv_std = norm_cpu.batchnorm_train_forward(x, gamma, beta, eps)
        _update_running(running_mean, mu, momentum)
        _update_running(running_var, var, momentum)
        return out, {"xhat": xhat, "inv_std": inv_std, "gamma": gamma, "mode": mode,
                     "batch_mean": mu, "batch_var": var}
    if mode == "train":
        mu = x.mean(axis=axes)
        var = x.var(axis=axes)
        _update_running(running_mean, mu, momentum)
        _update_running(running_var, var, momentum)
    else:
        mu, var = running_mean, running_var
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (x - np.reshape(mu, bshape)) * np.reshape(inv_std, bshape)
    out = np.reshape(gamma, bshape) * xhat + np.reshape(beta, bshape)
    cache = {"xhat": xhat, "inv_std": inv_std, "gamma": gamma, "mode": mode}
    if mode == "train":
        cache["batch_mean"], cache["batch_var"] = mu, var
    return out, cache


def batchnorm_backward(dout, cache):
    """Gradients of :func:`batchnorm_forward` (train: through the batch statistics;
    eval: statistics are constants).

    dout : like x.  Returns ``dx`` (like x), ``dgamma``, ``dbeta`` ((D,) or (C,)).

    Train-mode rule, m values per feature (N, or N * H * W per channel)::

        dbeta  = sum(dout);   dgamma = sum(dout * x_hat)
        dx     = gamma * inv_std / m * (m * dout - dbeta - x_hat * dgamma)

    (the textbook ``inv_std / m * (m g - sum g - x_hat sum(g x_hat))`` with ``g = dout *
    gamma``, gamma being constant per feature); eval: ``dx = dout * gamma * inv_std``.
    """
    axes, bshape = _feature_axes(dout, "batchnorm_backward")
    xhat, inv_std, gamma = cache["xhat"], cache["inv_std"], cache["gamma"]
    if (cache["mode"] == "train" and norm_cpu.fusable(dout, xhat)
            and np.shape(gamma) == np.shape(inv_std) == (dout.shape[1],)
            and np.result_type(dout.dtype, np.asarray(gamma).dtype, inv_std.dtype) == dout.dtype):
        return norm_cpu.batchnorm_train_backward(dout, xhat, gamma, inv_std)
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    scale = np.reshape(gamma * inv_std, bshape)
    if cache["mode"] == "train":
        m = dout.size // dbeta.size
        dx = (scale / m) * (m * dout - np.reshape(dbeta, bshape)
                            - xhat * np.reshape(dgamma, bshape))
    else:
        dx = dout * scale
    return dx, dgamma, dbeta


def shift_batchnorm_forward(x, gamma, beta, mode="train", running_mean=None,
                            running_var=None, momentum=0.1, eps=1e-4):
    """Shift-based batch normalization (Alg. 3): multiplications replaced by AP2 shifts.

    Forward rule (train), per feature / channel, ``C = x - mu`` with ``mu`` the batch
    mean::

        var   = mean(C * AP2(C))                   # approximate variance
        s     = AP2(1 / sqrt(var + eps))           # normalizer, a power of two
        x_hat = C * s
        out   = AP2(gamma) * x_hat + beta

    (Alg. 3 writes ``y = AP2(gamma) <<>> x_hat`` under the comment "scale and shift";
    the shift by beta is added here.)  Eval mode uses ``running_mean`` and
    ``running_var``, which track ``mu`` and the *approximate* var above, updated in
    place like :func:`batchnorm_forward`.

    Pseudo-gradient (in :func:`shift_batchnorm_backward`): straight-through for AP2,
    as in the paper -- every ``AP2(v)`` is differentiated as if it were ``v`` plus a
    constant (``dAP2(v)/dv := 1``) while the values used are the AP2 ones from the
    forward pass.  Equivalently: the backward is the exact gradient of the smooth
    surrogate in which each ``AP2(v)`` is replaced by ``v + (AP2(v0) - v0)``, the offset
    frozen at the forward point (with zero offsets it is vanilla batch norm).

    Parameters / returns: as :func:`batchnorm_forward` (``batch_var`` in the train-mode
    cache is the approximate variance above).

    References: Hubara et al. 2016, Sec. 1.4, Alg. 3 (shift-based BN), Sec. 1.3 (STE).
    """
    x = as_input(x)
    mode = check_mode(mode, running_mean, running_var, "shift_batchnorm_forward")
    axes, bshape = _feature_axes(x, "shift_batchnorm_forward")
    if mode == "train":
        mu = x.mean(axis=axes)
        c = x - np.reshape(mu, bshape)
        a = ap2(c)
        var = (c * a).mean(axis=axes)       # c and AP2(c) share signs: var >= 0
        _update_running(running_mean, mu, momentum)
        _update_running(running_var, var, momentum)
    else:
        c = x - np.reshape(running_mean, bshape)
        a = None
        var = running_var
    r = 1.0 / np.sqrt(var + eps)
    s = ap2(r)
    xhat = c * np.reshape(s, bshape)
    g = ap2(gamma)
    out = np.reshape(g, bshape) * xhat + np.reshape(beta, bshape)
    cache = {"c": c, "a": a, "r": r, "s": s, "xhat": xhat, "g": g, "mode": mode}
    if mode == "train":
        cache["batch_mean"], cache["batch_var"] = mu, var
    return out, cache


def shift_batchnorm_backward(dout, cache):
    """Straight-through gradients of :func:`shift_batchnorm_forward`.

    Rule (AP2 differentiated as the identity, values from the forward), m values per
    feature (N, or N * H * W per channel)::

        dbeta  = sum(dout);   dgamma = sum(dout * x_hat)
        dx_hat = dout * AP2(gamma)
        dC     = dx_hat * s + dvar * (AP2(C) + C) / m,
                 dvar = sum(dx_hat * C) * (-1/2) * (var + eps)**(-3/2)
        dx     = dC - mean(dC)                      (eval: dx = dx_hat * s)

    dout : like x.  Returns ``dx``, ``dgamma``, ``dbeta``.

    References: Hubara et al. 2016, Sec. 1.3-1.4, Alg. 3.
    """
    axes, bshape = _feature_axes(dout, "shift_batchnorm_backward")
    c, a, r, s, xhat, g = (cache[k] for k in ("c", "a", "r", "s", "xhat", "g"))
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    dxhat = dout * np.reshape(g, bshape)
    dc = dxhat * np.reshape(s, bshape)
    if cache["mode"] == "train":
        m = dout.size // dbeta.size
        dvar = (dxhat * c).sum(axis=axes) * (-0.5) * r ** 3   # r = (var + eps)^(-1/2)
        dc = dc + np.reshape(dvar, bshape) * (a + c) / m        # d/dC of C * (C + const)
        dx = dc - dc.mean(axis=axes, keepdims=True)
    else:
        dx = dc
    return dx, dgamma, dbeta


# ---------------------------------------------------------------------------
# pooling, dropout, activations, reshape
# ---------------------------------------------------------------------------

def maxpool2d_forward(x, kernel=2, stride=None):
    """Max pooling over ``kernel x kernel`` windows, no padding (floor mode).

    Parameters
    ----------
    x : (N, C, H, W) float.  kernel : int >= 1.  stride : int >= 1, default ``kernel``.

    Returns
    -------
    out : (N, C, H', W'), ``H' = (H - kernel) // stride + 1``, x's dtype.
    cache : ``(x_shape, argmax (N, C, H', W') int32, kernel, stride)``; argmax is the
        tap ``a * kernel + b`` of the first maximum in row-major order.
    Numba kernel :mod:`minibnn.kernels.pool` (its NumPy twin is
    :func:`minibnn.kernels.reference.maxpool2d`).
    """
    x = as_input(x)
    stride, _, _ = check_pool(x.shape, kernel, stride)
    out, arg = pool.maxpool2d(np.ascontiguousarray(x), kernel, stride)   # x is float32/64
    return out, (x.shape, arg, kernel, stride)


def check_pool(shape, kernel, stride, where="maxpool2d_forward"):
    """Geometry checks of max pooling (shared with the device twin): ``(stride, H', W')``
    for an (N, C, H, W) ``shape`` (``stride=None`` means ``kernel``), or ``ValueError``."""
    stride = kernel if stride is None else stride
    if len(shape) != 4:
        raise ValueError(f"{where}: x must be (N, C, H, W), got {tuple(shape)}")
    if kernel < 1 or stride < 1:
        raise ValueError(f"{where}: kernel and stride must be >= 1, got {kernel}, {stride}")
    N, C, H, W = shape
    Ho = conv_output_size(H, kernel, stride, 0)
    Wo = conv_output_size(W, kernel, stride, 0)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{where}: window {kernel} larger than input {H}x{W}")
    return stride, Ho, Wo


def maxpool2d_backward(dout, cache):
    """Gradient of :func:`maxpool2d_forward`: dout (N, C, H', W') -> dx (N, C, H, W),
    each output's gradient routed to its argmax (summed where windows overlap).
    Numba kernel :mod:`minibnn.kernels.pool` for float32/float64, NumPy twin otherwise."""
    shape, arg, kernel, stride = cache
    if dout.shape != arg.shape:
        raise ValueError(f"maxpool2d_backward: dout must have shape {arg.shape}, got {dout.shape}")
    if dout.dtype in (np.float32, np.float64):
        return pool.maxpool2d_backward(np.ascontiguousarray(dout), arg, shape, kernel, stride)
    return reference.maxpool2d_backward(dout, arg, shape, kernel, stride)


def dropout_forward(x, p, mode, rng):
    """Inverted dropout.

    Forward rule: train mode and ``p > 0``: ``out = x * mask``, ``mask = 1{u >= p} /
    (1 - p)``, ``u ~ U[0, 1)`` drawn from ``rng`` -- so eval is the identity and the
    expected activation is unchanged.  Eval mode (or p = 0): ``out = x``.

    Parameters
    ----------
    x : (...) float.  p : float in [0, 1), the drop probability.
    mode : "train" or "eval".  rng : numpy.random.Generator (used in train only).

    Returns
    -------
    out : like x.  cache : the mask (like x, x's dtype) or None when nothing was dropped.
    """
    x = as_input(x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout_forward: p must be in [0, 1), got {p}")
    if mode not in MODES:
        raise ValueError(f"dropout_forward: mode must be 'train' or 'eval', got {mode!r}")
    if mode != "train" or p == 0.0:
        return x, None
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1.0 - p)
    return x * mask, mask


def dropout_backward(dout, cache):
    """Gradient of :func:`dropout_forward`: ``dx = dout * mask`` (dout where no mask)."""
    return dout if cache is None else dout * cache


def hardtanh_forward(x):
    """``Htanh(x) = clip(x, -1, 1)``; cache is x.  (...) -> (...), x's dtype.

    Pseudo-gradient (in :func:`hardtanh_backward`): ``g * 1{|x| <= 1}``; the kinks at
    +-1 count as inside, like the STE of sign.

    References: Hubara et al. 2016, Sec. 1.3.
    """
    x = as_input(x)
    return np.clip(x, -1, 1), x


def hardtanh_backward(dout, cache):
    """``dx = dout * 1{|x| <= 1}``, shape and dtype of dout."""
    return dout * ste_mask(cache).astype(dout.dtype)


def flatten_forward(x):
    """(N, ...) -> (N, prod(...)), a view when possible; cache is x's shape."""
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError("flatten: x needs a batch axis")
    return x.reshape(x.shape[0], -1), x.shape


def flatten_backward(dout, cache):
    """(N, prod(...)) -> (N, ...) = the cached shape."""
    return dout.reshape(cache)


def flatten(x):
    """(N, ...) -> (N, prod(...)); see :func:`flatten_forward`."""
    return flatten_forward(x)[0]
