"""Device twin of :mod:`minibnn.functional`: the same ops on numba.cuda device arrays.

Every function here has the name, signature and cache contract of its NumPy original in
:mod:`minibnn.functional` (or :mod:`minibnn.quantize` for the sign/STE pair), which stays
the readable text: read the rule and its pseudo-gradient there.  Layers reach this module
through :func:`minibnn.dispatch.twin` when their input is a device array, so a model whose
params, grads and buffers live on the GPU (:mod:`minibnn.device`) trains with the same
``forward`` / ``backward`` code.  Importing it imports numba.cuda; nothing imports it
until a device array shows up.

Arrays: float32 device arrays, C-contiguous (``as_input`` copies a strided input and
casts an integer one); float64 is refused (the device kernels compute in float32; the
CPU ops are the place for float64 gradient checks).  Parameters, gradients and buffers
must be on the device too; a host array among them raises ``TypeError`` naming it.
Results are new device arrays; launches are asynchronous except where noted.

Where results match the CPU ops:

* binary products (``binary_dense_forward`` / ``binary_conv2d_forward`` with +-1 inputs,
  on the XNOR path or the float path) are integers below 2**24: bit-identical;
  signs, hard-tanh, the STE, flatten, max pooling, im2col and col2im are exact too;
* float products (SGEMM, :mod:`minibnn.kernels.cuda_float`) and reductions (batch norm,
  biases, losses) differ from NumPy/BLAS by float32 rounding in another summation order;
* dropout masks and stochastic signs are drawn on the device: they differ from the
  CPU's for the same seed (the tests check their statistics and the backward instead).

Synchronizations (one small copy each): the binary layers check that the input is +-1
and the weights have no NaN before choosing the XNOR path (as the CPU ops do); losses
return a Python float.  Everything else stays queued on the default stream.

``backend`` of the binary ops, as in :func:`minibnn.functional.product_backend`:
``"float"`` computes ``x_b @ w_b`` with the float SGEMM (the "float products only"
mode); ``None`` (the default) or any kernel backend name runs hidden layers through the
XNOR kernels of :mod:`minibnn.kernels.cuda` (on device arrays the kernels are always the
CUDA ones, whatever kernel name was given).

Random draws (dropout masks, stochastic binarization) are counter-based on the device
(splitmix64 of a seed and the element index, :func:`minibnn.kernels.cuda_float.uniform`),
the seed being one draw from the caller's ``numpy.random.Generator``: they follow the
layer's generator (same seed, same draws) but are other numbers than the CPU's.

Shift-based batch normalization (``shift_batchnorm_forward`` / ``_backward``) and its
``ap2`` are here too: AP2 is the same frexp rule as :func:`minibnn.quantize.ap2`, bit for
bit, so in eval mode the shift BN output is NumPy's exactly.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 1.1-1.3, Alg. 1,
Sec. 3 (XNOR kernels); Ioffe & Szegedy 2015 (batch normalization).
"""

import numpy as np

from .functional import (MODES, PRODUCT_BACKENDS, check_grad_dtype, check_mode, check_pool,
                         check_unfold, product_backend)
from .kernels import PreparedWeights, conv_output_size, n_words
from .kernels import cuda as kc
from .kernels import cuda_float as kf

cuda = kc.cuda

__all__ = [
    "check_available", "is_device_array", "as_input", "sign", "ste_sign_forward",
    "ste_sign_backward", "dense_forward", "dense_backward", "binary_dense_forward",
    "binary_dense_backward", "prepare_binary_weights", "im2col", "col2im",
    "conv2d_forward", "conv2d_backward", "binary_conv2d_forward", "binary_conv2d_backward",
    "batchnorm_forward", "batchnorm_backward", "shift_batchnorm_forward",
    "shift_batchnorm_backward", "ap2", "maxpool2d_forward", "maxpool2d_backward",
    "dropout_forward", "dropout_backward", "stochastic_sign", "hardtanh_forward",
    "hardtanh_backward", "flatten", "flatten_forward", "flatten_backward",
    "conv_output_size", "check_finite", "copy_into", "running_average", "product_backend",
    "PRODUCT_BACKENDS",
]



def check_available():
    """Raise :class:`minibnn.kernels.BackendUnavailable` unless the CUDA kernels run here (GPU or
    simulator); :func:`minibnn.dispatch.twin` calls it once."""
    kc.check_available()


def is_device_array(a):
    """True for a numba.cuda device array (also the simulator's)."""
    return cuda is not None and not isinstance(a, np.ndarray) and cuda.devicearray.is_cuda_ndarray(a)


def _dev(a, name, ndim=None, where=""):
    """Check a float32 C-contiguous device array (the form every kernel here needs)."""
    pre = f"{where}: " if where else ""
    if not is_device_array(a):
        raise TypeError(f"{pre}{name} must be a CUDA device array (the other arrays are on "
                        f"the device), got {type(a).__name__}")
    if np.dtype(a.dtype) != np.float32:
        raise TypeError(f"{pre}{name} must be float32 on the device, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{pre}{name} must be {ndim}-D, got shape {a.shape}")
    if not a.is_c_contiguous():
        raise ValueError(f"{pre}{name} must be C-contiguous")
    return a


def _vec(a, name, n, where):
    _dev(a, name, 1, where)
    if a.shape[0] != n:
        raise ValueError(f"{where}: {name} must have shape ({n},), got {a.shape}")
    return a


def _empty(shape):
    return cuda.device_array(shape, dtype=np.float32)


def _into(out, shape):
    """Twin of :func:`minibnn.functional.into` for float32 device arrays: ``out`` if it
    is a C-contiguous float32 device array of exactly ``shape``, else a new one."""
    if (out is not None and is_device_array(out) and tuple(out.shape) == tuple(shape)
            and np.dtype(out.dtype) == np.float32 and out.is_c_contiguous()):
        return out
    return _empty(shape)


def _flag_check(flags, messages):
    """Copy the int32 ``flags`` once (a sync) and raise ValueError for the first set."""
    got = flags.copy_to_host()
    for v, msg in zip(got, messages):
        if v and msg:
            raise ValueError(msg)
    return got


# ---------------------------------------------------------------------------
# input, sign and the STE
# ---------------------------------------------------------------------------

def as_input(x, name="x"):
    """Device twin of :func:`minibnn.functional.as_input`: a float32 C-contiguous device
    array for ``x``.

    float32 contiguous arrays are returned as they are; integer arrays are cast to
    float32 and strided 2-D arrays copied (on the device).  Raises ``TypeError`` naming
    ``name`` for a host array, bool, complex or float64 (the device computes in float32).
    """
    if not is_device_array(x):
        raise TypeError(f"{name} must be a CUDA device array here, got {type(x).__name__}")
    dt = np.dtype(x.dtype)
    if dt == np.float32:
        if x.is_c_contiguous():
            return x
        if x.ndim != 2:
            raise ValueError(f"{name}: a strided device array must be 2-D to be copied, "
                             f"got shape {x.shape}")
        out = _empty(x.shape)
        kf.launch_elem(kf.copy2d_kernel, x.size, x, out)
        return out
    if dt.kind in "iu" and x.is_c_contiguous():
        out = _empty(x.shape)
        kf.launch_elem(kf.cast_kernel, x.size, kf.flat(x), kf.flat(out))
        return out
    if dt == np.float64:
        raise TypeError(f"{name} is float64: the device ops compute in float32 (convert "
                        f"before uploading, or run float64 checks on the CPU ops)")
    raise TypeError(f"{name} must be a real array (float32 or integer), got dtype {dt}")


def check_finite(x, name="x"):
    """Twin of :func:`minibnn.functional.check_finite`: ``ValueError`` "<name> contains
    NaN" / "... infinity" (one kernel and one sync)."""
    if np.dtype(x.dtype).kind == "f" and x.size:
        counts = kf.zeros_flag(2)
        kf.launch_elem(kf.nonfinite_kernel, x.size, kf.flat(as_input(x, name)), counts)
        _flag_check(counts, [f"{name} contains NaN", f"{name} contains infinity"])
    return x


def copy_into(dst, src):
    """Twin of :func:`minibnn.functional.copy_into`: ``dst[...] = src`` on the device
    (same shape; float32; device-to-device copy, asynchronous)."""
    _dev(dst, "dst", where="copy_into")
    src = as_input(src, "src")
    if src.shape != dst.shape:
        raise ValueError(f"copy_into: src has shape {src.shape}, dst {dst.shape}")
    if dst.size:
        dst.copy_to_device(src)
    return dst


def running_average(running, batch, momentum):
    """Twin of :func:`minibnn.functional.running_average`: a new (D,) device array
    ``(1 - momentum) * running + momentum * batch``; ``running`` is not changed."""
    _dev(running, "running", 1, "running_average")
    _vec(batch, "batch", running.shape[0], "running_average")
    out = _empty(running.shape)
    kf.launch_elem(kf.lerp_kernel, out.size, running, batch, float(momentum), out)
    return out


def sign(x):
    """Device twin of :func:`minibnn.quantize.sign`: (...) -> (...) float32 +-1,
    sign(0) = +1; ``ValueError`` on NaN (one sync)."""
    _dev(x, "x", where="sign")
    out = _empty(x.shape)
    flag = kf.zeros_flag()
    kf.launch_elem(kf.sign_kernel, x.size, kf.flat(x), kf.flat(out), flag)
    _flag_check(flag, ["sign: input contains NaN, which has no sign"])
    return out


def ste_sign_forward(x):
    """Twin of :func:`minibnn.quantize.ste_sign_forward`: ``(sign(x), x)``."""
    return sign(x), x


def ste_sign_backward(dout, cache):
    """Twin of :func:`minibnn.quantize.ste_sign_backward`: ``dout * 1{|x| <= 1}``."""
    x = cache
    _dev(dout, "dout", where="ste_sign_backward")
    if dout.shape != x.shape:
        raise ValueError(f"ste_sign_backward: dout has shape {dout.shape}, x {x.shape}")
    dx = _empty(x.shape)
    kf.launch_elem(kf.ste_kernel, x.size, kf.flat(dout), kf.flat(x), kf.flat(dx))
    return dx


def hardtanh_forward(x):
    """Twin of :func:`minibnn.functional.hardtanh_forward`: ``(clip(x, -1, 1), x)``."""
    x = as_input(x)
    out = _empty(x.shape)
    kf.launch_elem(kf.clip_kernel, x.size, kf.flat(x), kf.flat(out))
    return out, x


def hardtanh_backward(dout, cache):
    """Twin of :func:`minibnn.functional.hardtanh_backward`: ``dout * 1{|x| <= 1}``."""
    return ste_sign_backward(dout, cache)


# ---------------------------------------------------------------------------
# dense
# ---------------------------------------------------------------------------

def _dense_check(x, w, b, where):
    _dev(w, "w", 2, where)
    if x.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"{where}: x must be (N, K) and w (K, F), got {x.shape} and {w.shape}")
    if b is not None:
        _vec(b, "b", w.shape[1], where)


def dense_forward(x, w, b=None):
    """Twin of :func:`minibnn.functional.dense_forward`: ``x @ w + b``, cache
    ``(x, w, has_bias)``."""
    x = as_input(x)
    _dense_check(x, w, b, "dense_forward")
    out = _empty((x.shape[0], w.shape[1]))
    kf.sgemm(x, w, out, bias=b)
    return out, (x, w, b is not None)


def _bias_grad(dout, has_bias):
    return kf.chan_sum(dout)[0] if has_bias else None


def dense_backward(dout, cache, need_dx=True, dw_out=None):
    """Twin of :func:`minibnn.functional.dense_backward`: ``dx = dout @ w.T`` (None
    unless ``need_dx``), ``dw = x.T @ dout`` (into ``dw_out`` when it fits),
    ``db = sum_n dout``."""
    x, w, has_bias = cache
    _dev(dout, "dout", 2, "dense_backward")
    dx = kf.sgemm(dout, w, _empty(x.shape), trans_b=True) if need_dx else None
    dw = kf.sgemm(x, dout, _into(dw_out, w.shape), trans_a=True)
    return dx, dw, _bias_grad(dout, has_bias)


def _sign_pack_columns(w):
    """w (K, F) -> (wb (K, F) float32 +-1, words (F, 2 ceil(K/64)) uint32, nan flag)."""
    K, F = w.shape
    wb = _empty((K, F))
    words = cuda.device_array((F, 2 * n_words(K)), dtype=np.uint32)
    flag = kf.zeros_flag()
    kf.launch_elem(kf.sign_pack_columns_kernel, words.size, w, wb, words, flag)
    return wb, words, flag


def prepare_binary_weights(w, backend):
    """Twin of :func:`minibnn.functional.prepare_binary_weights`: sign(w) of (K, F)
    latent weights packed on the device -> :class:`minibnn.kernels.PreparedWeights`
    ("cuda", data the (F, 2 ceil(K/64)) uint32 device words).  ``ValueError`` on NaN."""
    _dev(w, "w", 2, "prepare_binary_weights")
    _, words, flag = _sign_pack_columns(w)
    _flag_check(flag, ["prepare_binary_weights: w contains NaN, which has no sign"])
    return PreparedWeights("cuda", words, w.shape[1], w.shape[0])


def binary_dense_forward(x, w, b=None, binary_input=True, backend=None, prepared=None,
                         stochastic_rng=None):
    """Twin of :func:`minibnn.functional.binary_dense_forward` (same rule, same cache:
    ``x``, ``w_b``, ``has_bias`` and, on the XNOR path, ``prepared``).

    Steps: one kernel writes w_b = sign(w) (float, for backward) and its packed columns
    (with ``stochastic_rng``: the sign of the stochastic draw, :func:`stochastic_sign`);
    with ``binary_input``, a kernel backend (any name but "float": on device arrays the
    kernels are the CUDA ones) and +-1 x (checked on the device, one sync with the NaN
    check of w) the product is the XNOR GEMM of :mod:`minibnn.kernels.cuda` on
    ``pack_device(x)``, cast to float with the bias added; otherwise the float SGEMM.
    Both give the same (exact integer) values for +-1 inputs.
    """
    x = as_input(x)
    _dense_check(x, w, b, "binary_dense_forward")
    if prepared is not None and stochastic_rng is not None:
        raise ValueError("binary_dense_forward: prepared weights hold sign(w); they cannot "
                         "be used with stochastic_rng (w_b is drawn anew on each call)")
    K, F = w.shape
    N = x.shape[0]
    want_packed = binary_input and product_backend(backend) is not None
    if stochastic_rng is not None:
        w = stochastic_sign(w, stochastic_rng)
    wb, words, flag = _sign_pack_columns(w)
    pm1 = kf.zeros_flag()
    if want_packed and x.size:
        kf.launch_elem(kf.check_pm1_kernel, x.size, kf.flat(x), pm1)
    _flag_check(flag, ["binary_dense_forward: w contains NaN, which has no sign"])
    packed = want_packed and not pm1.copy_to_host()[0]
    cache = {"x": x, "w_b": wb, "has_bias": b is not None}
    out = _empty((N, F))
    if packed:
        if prepared is None:
            prepared = PreparedWeights("cuda", words, F, K)
        elif prepared.k != K or prepared.n != F:
            raise ValueError(f"binary_dense_forward: prepared weights are for (K={prepared.k}, "
                             f"F={prepared.n}), w is {w.shape}")
        elif not is_device_array(prepared.data):
            raise TypeError("binary_dense_forward: prepared weights must hold device words "
                            "(from functional_cuda.prepare_binary_weights)")
        if N:
            xw = kc.pack_device(x, check_nan=False)
            acc = cuda.device_array((N, F), dtype=np.int32)
            kc.xnor_gemm_device(xw, prepared.data, K, acc)
            kf.launch_elem(kf.int_to_float_kernel, out.size, kf.flat(acc), kf.flat(out),
                           b if b is not None else kf.dummy_f32(), b is not None, 1)
        cache["prepared"] = prepared
    else:
        kf.sgemm(x, wb, out, bias=b)
    return out, cache


def binary_dense_backward(dout, cache, need_dx=True, dw_out=None, grad_dtype="float32"):
    """Twin of :func:`minibnn.functional.binary_dense_backward`: ``dx = dout @ sign(w).T``
    (None unless ``need_dx``), ``dw = x.T @ dout`` (straight through to the latent w;
    into ``dw_out`` when it fits), ``db = sum_n dout``.  Float32 products only:
    ``grad_dtype="bfloat16"`` (a CPU kernel) raises ``ValueError``."""
    if check_grad_dtype(grad_dtype) != "float32":
        raise ValueError(f"binary_dense_backward: grad_dtype {grad_dtype!r} has no device "
                         "twin (the bfloat16 GEMM is a CPU kernel); use 'float32' on cuda")
    x, wb = cache["x"], cache["w_b"]
    _dev(dout, "dout", 2, "binary_dense_backward")
    if dout.shape != (x.shape[0], wb.shape[1]):
        raise ValueError(f"binary_dense_backward: dout must be {(x.shape[0], wb.shape[1])}, "
                         f"got {dout.shape}")
    dx = kf.sgemm(dout, wb, _empty(x.shape), trans_b=True) if need_dx else None
    dw = kf.sgemm(x, dout, _into(dw_out, wb.shape), trans_a=True)
    return dx, dw, _bias_grad(dout, cache["has_bias"])


# ---------------------------------------------------------------------------
# convolution (im2col + SGEMM; binary: packed kernels of kernels.cuda)
# ---------------------------------------------------------------------------

def _check_geometry(shape, kh, kw, stride, padding, where):
    """functional.check_unfold, then the output size (H', W')."""
    N, C, H, W = check_unfold(tuple(shape), kh, kw, stride, padding, where)
    return conv_output_size(H, kh, stride, padding), conv_output_size(W, kw, stride, padding)


def im2col(x, kh, kw, stride=1, padding=0):
    """Twin of :func:`minibnn.functional.im2col`: (N, C, H, W) -> (N H' W', C kh kw)."""
    _dev(x, "x", 4, "im2col")
    Ho, Wo = _check_geometry(x.shape, kh, kw, stride, padding, "im2col")
    N, C = x.shape[:2]
    cols = _empty((N * Ho * Wo, C * kh * kw))
    kf.launch_elem(kf.im2col_kernel, cols.size, x, kh, kw, stride, padding, Ho, Wo, cols)
    return cols


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """Twin of :func:`minibnn.functional.col2im` (gather form: no atomics, deterministic)."""
    _dev(cols, "cols", 2, "col2im")
    Ho, Wo = _check_geometry(tuple(x_shape), kh, kw, stride, padding, "col2im")
    N, C, H, W = x_shape
    if cols.shape != (N * Ho * Wo, C * kh * kw):
        raise ValueError(f"col2im: cols must be ({N * Ho * Wo}, {C * kh * kw}) for x_shape "
                         f"{tuple(x_shape)}, kernel {kh}x{kw}, stride {stride}, padding "
                         f"{padding}; got {cols.shape}")
    dx = _empty(tuple(x_shape))
    kf.launch_elem(kf.col2im_kernel, dx.size, cols, kh, kw, stride, padding, Ho, Wo, dx)
    return dx


def _conv_check(x, w, b, stride, padding, where):
    _dev(w, "w", 4, where)
    if x.ndim != 4:
        raise ValueError(f"{where}: x must be (N, C, H, W) and w (F, C, KH, KW), "
                         f"got {x.shape} and {w.shape}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{where}: x has C={x.shape[1]} channels but w expects {w.shape[1]}")
    if b is not None:
        _vec(b, "b", w.shape[0], where)
    return _check_geometry(x.shape, w.shape[2], w.shape[3], stride, padding, where)


def _rows_to_nchw(rows, N, Ho, Wo, b):
    F = rows.shape[1]
    out = _empty((N, F, Ho, Wo))
    kf.launch_elem(kf.rows_to_nchw_kernel, out.size, rows,
                   b if b is not None else kf.dummy_f32(), b is not None, out)
    return out


def _nchw_to_rows(d):
    N, F, Ho, Wo = d.shape
    rows = _empty((N * Ho * Wo, F))
    kf.launch_elem(kf.nchw_to_rows_kernel, rows.size, d, rows)
    return rows


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """Twin of :func:`minibnn.functional.conv2d_forward` (im2col + SGEMM); same cache."""
    x = as_input(x)
    Ho, Wo = _conv_check(x, w, b, stride, padding, "conv2d_forward")
    F, C, KH, KW = w.shape
    cols = im2col(x, KH, KW, stride, padding)
    rows = kf.sgemm(cols, w.reshape(F, C * KH * KW), _empty((cols.shape[0], F)), trans_b=True)
    out = _rows_to_nchw(rows, x.shape[0], Ho, Wo, b)
    cache = {"x_shape": x.shape, "cols": cols, "w": w, "stride": stride,
             "padding": padding, "has_bias": b is not None}
    return out, cache


def _conv_grads(dout, cols, wmat, w_shape, x_shape, stride, padding, has_bias, where,
                need_dx, dw_out):
    _dev(dout, "dout", 4, where)
    F, C, KH, KW = w_shape
    d2 = _nchw_to_rows(dout)
    dw = _into(dw_out, w_shape)
    kf.sgemm(d2, cols, dw.reshape(F, C * KH * KW), trans_a=True)    # a view: fills dw
    dx = None
    if need_dx:
        dcols = kf.sgemm(d2, wmat, _empty(cols.shape))
        dx = col2im(dcols, x_shape, KH, KW, stride, padding)
    return dx, dw, _bias_grad(dout, has_bias)


def conv2d_backward(dout, cache, need_dx=True, dw_out=None):
    """Twin of :func:`minibnn.functional.conv2d_backward`."""
    w = cache["w"]
    F = w.shape[0]
    return _conv_grads(dout, cache["cols"], w.reshape(F, w.size // F), w.shape,
                       cache["x_shape"], cache["stride"], cache["padding"], cache["has_bias"],
                       "conv2d_backward", need_dx, dw_out)


class _DeviceConvWeights(kc.ConvWeights):
    """:class:`minibnn.kernels.cuda.ConvWeights` packed on the device from device latent
    weights: ``sign_sums`` is a device array and the border correction is computed by a
    kernel, so the packed convolution needs no host round trip."""

    def correction(self, H, W, stride, padding, Ho, Wo):
        """(Ho Wo, F) int32 device array (see the parent class), from a kernel."""
        key = (H, W, stride, padding)
        cached = getattr(self, "_device_corr", None)
        if cached is None or cached[0] != key:
            corr = cuda.device_array((Ho * Wo, self.shape[0]), dtype=np.int32)
            kf.launch_elem(kf.conv_correction_kernel, corr.size, self.sign_sums, H, W,
                           stride, padding, Wo, corr)
            self._device_corr = cached = (key, corr)
        return cached[1]


def binary_conv2d_forward(x, w, b=None, stride=1, padding=0, binary_input=True, backend=None,
                          stochastic_rng=None):
    """Twin of :func:`minibnn.functional.binary_conv2d_forward`; same cache (``x``,
    ``w_b``, ``cols`` (float path only), ``stride``, ``padding``, ``has_bias``).

    One kernel writes w_b = sign(w) (or the sign of the stochastic draw with
    ``stochastic_rng``) and its packed form; with ``binary_input``, a kernel backend (any
    name but "float") and +-1 x (one sync) the product is
    :func:`minibnn.kernels.cuda.binary_conv2d_device` (exact zero padding); otherwise
    im2col + SGEMM with w_b.
    """
    x = as_input(x)
    Ho, Wo = _conv_check(x, w, b, stride, padding, "binary_conv2d_forward")
    want_packed = binary_input and product_backend(backend) is not None
    if stochastic_rng is not None:
        w = stochastic_sign(w, stochastic_rng)
    F, C, KH, KW = w.shape
    N = x.shape[0]
    wb = _empty(w.shape)
    words = cuda.device_array((F, KH * KW * ((C + 31) // 32)), dtype=np.uint32)
    ssum = cuda.device_array((F, KH, KW), dtype=np.int32)
    flags = kf.zeros_flag(2)
    kf.launch_elem(kf.conv_weights_kernel, F * KH * KW, w, wb, words, ssum, flags[0:1])
    if want_packed and x.size:
        kf.launch_elem(kf.check_pm1_kernel, x.size, kf.flat(x), flags[1:2])
    got = _flag_check(flags, ["binary_conv2d_forward: w contains NaN, which has no sign", None])
    cache = {"x": x, "w_b": wb, "cols": None, "stride": stride, "padding": padding,
             "has_bias": b is not None}
    if want_packed and not got[1]:
        if N == 0:
            return _empty((0, F, Ho, Wo)), cache
        cw = _DeviceConvWeights(words, ssum, w.shape)
        acc = kc.binary_conv2d_device(x, cw, stride, padding, check_nan=False)
        out = _empty(acc.shape)
        kf.launch_elem(kf.int_to_float_kernel, out.size, kf.flat(acc), kf.flat(out),
                       b if b is not None else kf.dummy_f32(), b is not None, Ho * Wo)
        return out, cache
    cols = im2col(x, KH, KW, stride, padding)
    rows = kf.sgemm(cols, wb.reshape(F, C * KH * KW), _empty((cols.shape[0], F)), trans_b=True)
    cache["cols"] = cols
    return _rows_to_nchw(rows, N, Ho, Wo, b), cache


def binary_conv2d_backward(dout, cache, need_dx=True, dw_out=None):
    """Twin of :func:`minibnn.functional.binary_conv2d_backward` (im2col/col2im, float)."""
    x, wb = cache["x"], cache["w_b"]
    F, C, KH, KW = wb.shape
    cols = cache["cols"]
    if cols is None:             # packed forward: the float unfolding is needed only now
        cols = im2col(x, KH, KW, cache["stride"], cache["padding"])
    return _conv_grads(dout, cols, wb.reshape(F, C * KH * KW), wb.shape, x.shape,
                       cache["stride"], cache["padding"], cache["has_bias"],
                       "binary_conv2d_backward", need_dx, dw_out)


# ---------------------------------------------------------------------------
# batch normalization
# ---------------------------------------------------------------------------

def _features(x, where):
    if x.ndim not in (2, 4):
        raise ValueError(f"{where}: x must be (N, D) or (N, C, H, W), got shape {x.shape}")
    return x.shape[1], (1 if x.ndim == 2 else x.shape[2] * x.shape[3])


def batchnorm_forward(x, gamma, beta, mode="train", running_mean=None, running_var=None,
                      momentum=0.1, eps=1e-4):
    """Twin of :func:`minibnn.functional.batchnorm_forward`: same rule, same in-place
    update of the running statistics (device arrays) in train mode, same cache
    (``xhat``, ``inv_std``, ``gamma``, ``mode``).  Batch statistics: one block per
    feature, float64 accumulation, two passes (mean, then centred squares)."""
    x = as_input(x)
    mode = check_mode(mode, running_mean, running_var, "batchnorm_forward")
    C, B = _features(x, "batchnorm_forward")
    for name, v in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if v is not None:
            _vec(v, name, C, "batchnorm_forward")
    inv_std = _empty(C)
    if mode == "train":
        mu, var = kf.chan_mean_var(x)
        update = running_mean is not None and running_var is not None
        rm = running_mean if update else mu
        rv = running_var if update else var
        if (running_mean is None) != (running_var is None):
            raise ValueError("batchnorm_forward: give both running_mean and running_var or neither")
    else:
        mu, var = running_mean, running_var
        update, rm, rv = False, mu, var
    kf.launch_elem(kf.bn_stats_kernel, C, mu, var, rm, rv, float(momentum), update,
                   float(eps), inv_std)
    xhat = _empty(x.shape)
    out = _empty(x.shape)
    kf.launch_elem(kf.bn_normalize_kernel, x.size, kf.flat(x), C, B, mu, inv_std, gamma, beta,
                   kf.flat(xhat), kf.flat(out))
    cache = {"xhat": xhat, "inv_std": inv_std, "gamma": gamma, "mode": mode}
    if mode == "train":
        cache["batch_mean"], cache["batch_var"] = mu, var
    return out, cache


def batchnorm_backward(dout, cache):
    """Twin of :func:`minibnn.functional.batchnorm_backward` (train: through the batch
    statistics; eval: constants).  Returns ``dx``, ``dgamma``, ``dbeta``."""
    _dev(dout, "dout", where="batchnorm_backward")
    xhat = cache["xhat"]
    if dout.shape != xhat.shape:
        raise ValueError(f"batchnorm_backward: dout must have shape {xhat.shape}, got {dout.shape}")
    C, B = _features(dout, "batchnorm_backward")
    dbeta, dgamma = kf.chan_sum(dout, xhat)
    dx = _empty(dout.shape)
    m = dout.size // C if C else 0
    kf.launch_elem(kf.bn_backward_kernel, dout.size, kf.flat(dout), kf.flat(xhat), C, B,
                   cache["gamma"], cache["inv_std"], dbeta, dgamma, m, cache["mode"] == "train",
                   kf.flat(dx))
    return dx, dgamma, dbeta


def ap2(x):
    """Device twin of :func:`minibnn.quantize.ap2`: a new float32 device array, equal to
    the NumPy function bit for bit (the same frexp rule,
    :func:`minibnn.kernels.cuda_float.ap2`; inf and NaN pass through)."""
    x = as_input(x)
    out = _empty(x.shape)
    kf.launch_elem(kf.ap2_kernel, x.size, kf.flat(x), kf.flat(out))
    return out


def shift_batchnorm_forward(x, gamma, beta, mode="train", running_mean=None,
                            running_var=None, momentum=0.1, eps=1e-4):
    """Twin of :func:`minibnn.functional.shift_batchnorm_forward` (Alg. 3): the same rule
    op for op, the same in-place update of the running statistics (device arrays) in
    train mode, the same cache (``c``, ``a`` (None in eval), ``r``, ``s``, ``xhat``,
    ``g``, ``mode``; train adds ``batch_mean`` and ``batch_var``, the approximate
    variance).

    Kernels: the batch mean (one block per feature, float64, as ``batchnorm_forward``),
    ``C = x - mu`` and ``AP2(C)`` in one element-wise pass, ``sum(C AP2(C))`` per feature
    (float64), then ``var``, ``r = 1/sqrt(var + eps)``, ``s = AP2(r)`` per feature, and
    ``x_hat = C s``, ``out = AP2(gamma) x_hat + beta``.  Eval mode is exact (equal to
    NumPy bit for bit: every product is by a power of two); train mode differs from NumPy
    only through the float64 (device) vs float32 pairwise (NumPy) batch sums.

    x : (N, D) or (N, C, H, W) float32 device array; gamma, beta, running_mean,
    running_var : (D,) / (C,) float32 device arrays.
    """
    x = as_input(x)
    mode = check_mode(mode, running_mean, running_var, "shift_batchnorm_forward")
    C, B = _features(x, "shift_batchnorm_forward")
    for name, v in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if v is not None:
            _vec(v, name, C, "shift_batchnorm_forward")
    if mode == "train" and (running_mean is None) != (running_var is None):
        raise ValueError("shift_batchnorm_forward: give both running_mean and running_var "
                         "or neither")
    train = mode == "train"
    mu = kf.chan_mean_var(x)[0] if train else running_mean
    c = _empty(x.shape)
    a = _empty(x.shape) if train else None
    kf.launch_elem(kf.sbn_center_kernel, x.size, kf.flat(x), C, B, mu, kf.flat(c),
                   kf.flat(a if train else c), train)
    sums = kf.chan_sum(c, a)[1] if train else running_var      # sum C * AP2(C): >= 0
    var, r, s = _empty(C), _empty(C), _empty(C)
    m = x.size // C if C else 1
    kf.launch_elem(kf.sbn_stats_kernel, C, sums, float(m), train, float(eps), var, r, s)
    if train and running_mean is not None:
        copy_into(running_mean, running_average(running_mean, mu, momentum))
        copy_into(running_var, running_average(running_var, var, momentum))
    g = ap2(gamma)
    xhat = _empty(x.shape)
    out = _empty(x.shape)
    kf.launch_elem(kf.sbn_normalize_kernel, x.size, kf.flat(c), C, B, s, g, beta,
                   kf.flat(xhat), kf.flat(out))
    cache = {"c": c, "a": a, "r": r, "s": s, "xhat": xhat, "g": g, "mode": mode}
    if train:
        cache["batch_mean"], cache["batch_var"] = mu, var
    return out, cache


def shift_batchnorm_backward(dout, cache):
    """Twin of :func:`minibnn.functional.shift_batchnorm_backward` (straight-through
    AP2): ``dbeta = sum(dout)``, ``dgamma = sum(dout x_hat)``, ``dC = dout g s + dvar
    (AP2(C) + C) / m`` with ``dvar = g sum(dout C) (-1/2) r**3``, ``dx = dC - mean(dC)``
    (eval: ``dx = dout g s``).  Returns ``dx``, ``dgamma``, ``dbeta`` (device arrays)."""
    _dev(dout, "dout", where="shift_batchnorm_backward")
    c, a, r, s, xhat, g = (cache[k] for k in ("c", "a", "r", "s", "xhat", "g"))
    if dout.shape != xhat.shape:
        raise ValueError(f"shift_batchnorm_backward: dout must have shape {xhat.shape}, "
                         f"got {dout.shape}")
    C, B = _features(dout, "shift_batchnorm_backward")
    train = cache["mode"] == "train"
    dbeta, dgamma = kf.chan_sum(dout, xhat)
    sdc = kf.chan_sum(dout, c)[1] if train else r         # sum(dout * C) (train only)
    m = dout.size // C if C else 1
    dx = _empty(dout.shape)
    kf.launch_elem(kf.sbn_backward_kernel, dout.size, kf.flat(dout), kf.flat(c),
                   kf.flat(a if train else c), C, B, g, s, r, sdc, m, train, kf.flat(dx))
    if train:
        kf.launch_elem(kf.sub_chan_mean_kernel, dx.size, kf.flat(dx), C, B,
                       kf.chan_sum(dx)[0], m, kf.flat(dx))
    return dx, dgamma, dbeta


# ---------------------------------------------------------------------------
# pooling, dropout, reshape
# ---------------------------------------------------------------------------

def maxpool2d_forward(x, kernel=2, stride=None):
    """Twin of :func:`minibnn.functional.maxpool2d_forward`: same output, same argmax
    (first maximum in row-major order), cache ``(x_shape, argmax int32, kernel, stride)``."""
    x = as_input(x)
    stride, Ho, Wo = check_pool(x.shape, kernel, stride)
    N, C = x.shape[:2]
    out = _empty((N, C, Ho, Wo))
    arg = cuda.device_array((N, C, Ho, Wo), dtype=np.int32)
    kf.launch_elem(kf.maxpool_kernel, out.size, x, kernel, stride, out, arg)
    return out, (x.shape, arg, kernel, stride)


def maxpool2d_backward(dout, cache):
    """Twin of :func:`minibnn.functional.maxpool2d_backward` (gather form, deterministic)."""
    shape, arg, kernel, stride = cache
    _dev(dout, "dout", 4, "maxpool2d_backward")
    if dout.shape != arg.shape:
        raise ValueError(f"maxpool2d_backward: dout must have shape {arg.shape}, got {dout.shape}")
    dx = _empty(shape)
    kf.launch_elem(kf.maxpool_backward_kernel, dx.size, dout, arg, kernel, stride, dx)
    return dx


def _seed(rng, where):
    """One 63-bit draw from the caller's numpy Generator: the seed of a counter-based
    device draw (:func:`minibnn.kernels.cuda_float.uniform`).  The layers pass a forked
    Generator and commit its state only when the forward succeeds, so the draws follow
    the layer's generator exactly as on the CPU (but are other numbers)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{where}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return np.uint64(rng.integers(0, 2 ** 63 - 1))


def stochastic_sign(x, rng):
    """Twin of :func:`minibnn.quantize.stochastic_sign`: +1 with probability
    ``hard_sigmoid(x)`` else -1 (float32), ``u`` drawn on the device from a seed taken
    from ``rng`` (the draws differ from the CPU's); ``ValueError`` on NaN (one sync)."""
    x = as_input(x)
    seed = _seed(rng, "stochastic_sign")
    out = _empty(x.shape)
    flag = kf.zeros_flag()
    kf.launch_elem(kf.stochastic_sign_kernel, x.size, kf.flat(x), kf.flat(out), seed, flag)
    _flag_check(flag, ["stochastic_sign: input contains NaN, which has no sign"])
    return out


def dropout_forward(x, p, mode, rng):
    """Twin of :func:`minibnn.functional.dropout_forward`: inverted dropout, mask
    ``1{u >= p} / (1 - p)`` (float32) with ``u`` drawn on the device from one seed taken
    from ``rng`` (a numpy Generator; the masks differ from the CPU's); cache the mask or
    None."""
    x = as_input(x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout_forward: p must be in [0, 1), got {p}")
    if mode not in MODES:
        raise ValueError(f"dropout_forward: mode must be 'train' or 'eval', got {mode!r}")
    if mode != "train" or p == 0.0:
        return x, None
    seed = _seed(rng, "dropout_forward")
    out = _empty(x.shape)
    mask = _empty(x.shape)
    scale = np.float32(1.0) / np.float32(1.0 - p)
    kf.launch_elem(kf.dropout_kernel, x.size, kf.flat(x), kf.flat(out), kf.flat(mask), seed,
                   float(p), scale)
    return out, mask


def dropout_backward(dout, cache):
    """Twin of :func:`minibnn.functional.dropout_backward`: ``dout * mask``."""
    if cache is None:
        return dout
    _dev(dout, "dout", where="dropout_backward")
    if dout.shape != cache.shape:
        raise ValueError(f"dropout_backward: dout must have shape {cache.shape}, got {dout.shape}")
    dx = _empty(dout.shape)
    kf.launch_elem(kf.mul_kernel, dout.size, kf.flat(dout), kf.flat(cache), kf.flat(dx))
    return dx


def flatten_forward(x):
    """Twin of :func:`minibnn.functional.flatten_forward`: (N, ...) -> (N, prod(...)), a
    view of a contiguous device array; cache is x's shape."""
    if not is_device_array(x):
        raise TypeError(f"flatten: x must be a CUDA device array, got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError("flatten: x needs a batch axis")
    if not x.is_c_contiguous():
        x = as_input(x)
    n = x.shape[0]
    return x.reshape(n, x.size // n if n else int(np.prod(x.shape[1:]))), x.shape


def flatten_backward(dout, cache):
    """(N, prod(...)) -> (N, ...) = the cached shape (a view)."""
    return dout.reshape(*cache)


def flatten(x):
    """(N, ...) -> (N, prod(...)); see :func:`flatten_forward`."""
    return flatten_forward(x)[0]
