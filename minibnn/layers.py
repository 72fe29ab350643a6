"""Layers: thin stateful wrappers over :mod:`minibnn.functional`.

Every layer has

* ``params``: ``dict[str, ndarray]`` of trainable arrays (float32 by default);
* ``grads``: ``dict[str, ndarray]`` with the same keys and shapes, **overwritten** (not
  accumulated) by each :meth:`Layer.backward`; empty dicts for parameter-free layers;
* ``param_info``: ``dict[str, dict]``, for each param ``{"binary": bool, "lr_scale":
  float}``.  ``binary=True`` marks a latent binary weight: the forward pass uses
  ``sign(w)``, and the optimizer must clip it to [-1, 1] after each update and scale its
  learning rate by ``lr_scale`` (BinaryNet's ``W_LR_scale``, Glorot-style
  ``1 / sqrt(1.5 / (fan_in + fan_out))``).  Every other param has ``binary=False`` and
  ``lr_scale=1.0``;
* ``buffers``: non-trained state saved with the model (BatchNorm running statistics);
* ``forward(x, training=True) -> out`` and ``backward(grad_out) -> grad_in``.
  ``backward`` before any ``forward`` raises ``RuntimeError``; an input of the wrong
  shape raises ``ValueError`` naming the layer and the expected shape.

Binary layers (:class:`BinaryDense`, :class:`BinaryConv2D`) take ``backend``: ``None``
computes ``x @ sign(w)`` with float BLAS, a kernel backend name (``"cpu"``,
``"reference"``, ``"cuda"``) runs hidden layers (``binary_input=True``, +-1 inputs)
through the XNOR-popcount kernels.  The two give identical outputs; ``layer.backend``
may be changed at any time (``Sequential.set_backend`` does it for a whole model).

Initialization follows Courbariaux's BinaryNet code (``binary_net.DenseLayer`` /
``Conv2DLayer`` with ``H=1``): latent binary weights ~ U(-H, H), H = 1 by default;
float layers use Glorot-uniform weights; biases start at 0, BatchNorm at gamma = 1,
beta = 0.  Randomness comes only from the ``rng`` each layer is given (a
``numpy.random.Generator`` or an int seed), so a fixed seed gives identical models and
identical training runs (see :func:`minibnn.model.spawn_rngs`).

Shapes: dense layers (N, in_features) -> (N, out_features); convolutional layers
(N, C, H, W) -> (N, F, H', W') with ``H' = (H + 2*padding - KH) // stride + 1``.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016 (Alg. 1; Sec. 1.1-1.4);
Courbariaux's code, github.com/MatthieuCourbariaux/BinaryNet (defaults).
"""

import numpy as np

from . import functional as F
from .quantize import sign, ste_sign_backward, stochastic_sign

__all__ = ["Layer", "BinaryDense", "BinaryConv2D", "Dense", "Conv2D", "BatchNorm",
           "ShiftBatchNorm", "SignActivation", "HardTanh", "MaxPool2D", "Dropout", "Flatten",
           "LAYERS", "layer_from_config", "glorot_lr_scale"]

#: class name -> class, for rebuilding a model from its saved architecture
LAYERS = {}


def _register(cls):
    LAYERS[cls.__name__] = cls
    return cls


def glorot_lr_scale(fan_in, fan_out):
    """BinaryNet's ``W_LR_scale = 1 / sqrt(1.5 / (fan_in + fan_out))`` (float).

    For convolutions ``fan_in = KH * KW * in_channels``, ``fan_out = KH * KW *
    out_channels``, as in the paper's code.
    """
    return float(1.0 / np.sqrt(1.5 / (fan_in + fan_out)))


def _pair(v, name):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v), int(v)
    try:
        a, b = v
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}") from None
    return int(a), int(b)


def _positive_int(v, name, minimum=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


class Layer:
    """Base class; see the module docstring for the conventions.

    Subclasses implement ``_forward(x, training) -> (out, cache)``,
    ``_backward(grad_out, cache) -> grad_in`` (storing param gradients with
    :meth:`_store_grad`), optionally ``_check_input(x)``, and ``config()`` returning the
    JSON-able constructor arguments (everything but ``rng``).
    """

    #: whether the constructor takes ``rng`` (initialization or sampling)
    uses_rng = False

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.param_info = {}
        self.buffers = {}
        self._cache = None
        self._out_shape = None

    # -- parameters ---------------------------------------------------------
    def _add_param(self, name, value, binary=False, lr_scale=1.0):
        value = np.ascontiguousarray(value, dtype=np.float32)
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        self.param_info[name] = {"binary": bool(binary), "lr_scale": float(lr_scale)}

    def _store_grad(self, name, g):
        # Copy into the existing array so references held by an optimizer stay valid;
        # replace it only if the param changed dtype/shape (e.g. after astype(float64)).
        p, target = self.params[name], self.grads.get(name)
        if target is not None and target.shape == p.shape and target.dtype == p.dtype:
            np.copyto(target, g, casting="same_kind")
        else:
            self.grads[name] = np.array(g, dtype=p.dtype)

    def zero_grad(self):
        """Set every gradient to 0."""
        for g in self.grads.values():
            g[...] = 0

    def astype(self, dtype):
        """Convert params, grads and buffers to ``dtype`` (e.g. float64 for gradient
        checks); returns self."""
        for d in (self.params, self.grads, self.buffers):
            for k in d:
                d[k] = np.ascontiguousarray(d[k], dtype=dtype)
        return self

    # -- description --------------------------------------------------------
    def config(self):
        """Constructor arguments (JSON-able, without ``rng``)."""
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -- forward / backward -------------------------------------------------
    def _check_input(self, x):
        """Raise ``ValueError`` if x has the wrong shape for this layer."""

    def _shape_error(self, expected, x):
        return ValueError(f"{self!r}: expected input of shape {expected}, got {x.shape}")

    def forward(self, x, training=True):
        """Compute the layer output; keeps what :meth:`backward` needs.

        x : float32/64 array of the layer's input shape (integers become float32).
        training : True for the training behaviour (batch statistics, dropout,
            stochastic binarization), False for inference.
        """
        x = F._as_float(x)
        self._check_input(x)
        out, cache = self._forward(x, bool(training))
        self._cache = cache
        self._out_shape = out.shape
        return out

    def backward(self, grad_out):
        """Gradient w.r.t. the input of the last :meth:`forward`; param gradients go to
        ``self.grads`` (overwritten).  grad_out has the shape of that forward's output."""
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        grad_out = np.asarray(grad_out)
        if grad_out.shape != self._out_shape:
            raise ValueError(f"{self!r}: grad_out has shape {grad_out.shape}, but the last "
                             f"forward output had shape {self._out_shape}")
        return self._backward(grad_out, self._cache)

    __call__ = forward

    def _forward(self, x, training):
        raise NotImplementedError

    def _backward(self, grad_out, cache):
        raise NotImplementedError


# ---------------------------------------------------------------------------
# dense and convolution
# ---------------------------------------------------------------------------

class _DenseBase(Layer):
    def _check_input(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise self._shape_error(f"(N, {self.in_features})", x)


@_register
class BinaryDense(_DenseBase):
    """Binary fully connected layer: ``out = x_b @ sign(w) (+ b)``.

    Forward rule: see :func:`minibnn.functional.binary_dense_forward` (sign(w) with
    sign(0) = +1; packed XNOR GEMM for hidden layers when ``backend`` is set).
    Pseudo-gradient: ``dx = dout @ sign(w).T``; ``dw = x.T @ dout`` is the gradient
    w.r.t. sign(w), applied straight through to the latent w.

    Parameters
    ----------
    in_features, out_features : int (K and F).
    binary_input : True for hidden layers (input +-1 from a SignActivation), False for
        the first layer (real input, always the float path).
    bias : bool, default False -- every binary layer of the paper is followed by batch
        norm, whose beta makes a bias redundant.
    backend : None (float BLAS) or a kernel backend name; mutable attribute.
    H : float, latent weights start ~ U(-H, H) (BinaryNet's ``H = 1``).
    rng : numpy Generator or int seed for the initialization.

    params: ``w`` (K, F) float32, ``{"binary": True, "lr_scale":
    glorot_lr_scale(K, F)}``; ``b`` (F,) float32 if ``bias``.
    ``prepared`` holds the packed sign(w) of the last packed forward.

    References: Hubara et al. 2016, Sec. 1.1, 1.3, Alg. 1.
    """

    uses_rng = True

    def __init__(self, in_features, out_features, binary_input=True, bias=False, backend=None,
                 H=1.0, rng=None):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        self.binary_input = bool(binary_input)
        self.bias = bool(bias)
        self.backend = backend
        self.H = float(H)
        rng = np.random.default_rng(rng)
        w = rng.uniform(-self.H, self.H, size=(self.in_features, self.out_features))
        self._add_param("w", w, binary=True,
                        lr_scale=glorot_lr_scale(self.in_features, self.out_features))
        if self.bias:
            self._add_param("b", np.zeros(self.out_features))
        self.prepared = None

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "binary_input": self.binary_input, "bias": self.bias,
                "backend": self.backend, "H": self.H}

    def _forward(self, x, training):
        # sign(w) is re-derived on every call: the optimizer changes w between steps
        out, cache = F.binary_dense_forward(x, self.params["w"], self.params.get("b"),
                                            self.binary_input, self.backend)
        self.prepared = cache.get("prepared")
        return out, cache

    def _backward(self, grad_out, cache):
        dx, dw, db = F.binary_dense_backward(grad_out, cache)
        self._store_grad("w", dw)
        if db is not None:
            self._store_grad("b", db)
        return dx


@_register
class Dense(_DenseBase):
    """Float fully connected layer ``out = x @ w + b`` (Glorot-uniform init).

    params: ``w`` (in_features, out_features), ``b`` (out_features,) if ``bias``; both
    ``{"binary": False, "lr_scale": 1.0}``.
    """

    uses_rng = True

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        self.bias = bool(bias)
        rng = np.random.default_rng(rng)
        limit = np.sqrt(6.0 / (self.in_features + self.out_features))
        self._add_param("w", rng.uniform(-limit, limit, size=(self.in_features, self.out_features)))
        if self.bias:
            self._add_param("b", np.zeros(self.out_features))

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias}

    def _forward(self, x, training):
        return F.dense_forward(x, self.params["w"], self.params.get("b"))

    def _backward(self, grad_out, cache):
        dx, dw, db = F.dense_backward(grad_out, cache)
        self._store_grad("w", dw)
        if db is not None:
            self._store_grad("b", db)
        return dx


class _ConvBase(Layer):
    def _init_geometry(self, in_ch, out_ch, kernel, stride, padding):
        self.in_ch = _positive_int(in_ch, "in_ch")
        self.out_ch = _positive_int(out_ch, "out_ch")
        self.kernel = _pair(kernel, "kernel")
        for k in self.kernel:
            _positive_int(k, "kernel")
        self.stride = _positive_int(stride, "stride")
        self.padding = _positive_int(padding, "padding", minimum=0)

    def _check_input(self, x):
        kh, kw = self.kernel
        p = self.padding
        if (x.ndim != 4 or x.shape[1] != self.in_ch
                or x.shape[2] + 2 * p < kh or x.shape[3] + 2 * p < kw):
            raise self._shape_error(
                f"(N, {self.in_ch}, H, W) with H + 2*{p} >= {kh} and W + 2*{p} >= {kw}", x)

    def _geometry_config(self):
        return {"in_ch": self.in_ch, "out_ch": self.out_ch,
                "kernel": self.kernel[0] if self.kernel[0] == self.kernel[1] else list(self.kernel),
                "stride": self.stride,
                "padding": self.padding}


@_register
class BinaryConv2D(_ConvBase):
    """Binary 2-D convolution (cross-correlation, zero padding): ``x_b (*) sign(w)``.

    Forward rule: see :func:`minibnn.functional.binary_conv2d_forward` (packed kernel
    :func:`minibnn.kernels.binary_conv2d` for hidden layers when ``backend`` is set).
    Pseudo-gradient: dx exact for fixed sign(w); dw w.r.t. sign(w), straight through.

    Parameters
    ----------
    in_ch, out_ch : int (C and F).
    kernel : int or (KH, KW).  stride : int >= 1.  padding : int >= 0 (zeros).
    binary_input, bias, backend, H, rng : as :class:`BinaryDense`.

    params: ``w`` (F, C, KH, KW) float32, ``{"binary": True, "lr_scale":
    glorot_lr_scale(KH*KW*C, KH*KW*F)}``; ``b`` (F,) if ``bias``.

    References: Hubara et al. 2016, Sec. 1.1, 1.3, Sec. 3.
    """

    uses_rng = True

    def __init__(self, in_ch, out_ch, kernel, stride=1, padding=0,
                 binary_input=True, bias=False, backend=None, H=1.0, rng=None):
        super().__init__()
        self._init_geometry(in_ch, out_ch, kernel, stride, padding)
        self.binary_input = bool(binary_input)
        self.bias = bool(bias)
        self.backend = backend
        self.H = float(H)
        kh, kw = self.kernel
        rng = np.random.default_rng(rng)
        w = rng.uniform(-self.H, self.H, size=(self.out_ch, self.in_ch, kh, kw))
        self._add_param("w", w, binary=True,
                        lr_scale=glorot_lr_scale(kh * kw * self.in_ch,
                                                 kh * kw * self.out_ch))
        if self.bias:
            self._add_param("b", np.zeros(self.out_ch))

    def config(self):
        cfg = self._geometry_config()
        cfg.update(binary_input=self.binary_input, bias=self.bias, backend=self.backend,
                   H=self.H)
        return cfg

    def _forward(self, x, training):
        return F.binary_conv2d_forward(x, self.params["w"], self.params.get("b"), self.stride,
                                       self.padding, self.binary_input, self.backend)

    def _backward(self, grad_out, cache):
        dx, dw, db = F.binary_conv2d_backward(grad_out, cache)
        self._store_grad("w", dw)
        if db is not None:
            self._store_grad("b", db)
        return dx


@_register
class Conv2D(_ConvBase):
    """Float 2-D convolution (im2col + BLAS), Glorot-uniform init, zero padding.

    params: ``w`` (F, C, KH, KW), ``b`` (F,) if ``bias``; ``{"binary": False,
    "lr_scale": 1.0}``.
    """

    uses_rng = True

    def __init__(self, in_ch, out_ch, kernel, stride=1, padding=0, bias=True,
                 rng=None):
        super().__init__()
        self._init_geometry(in_ch, out_ch, kernel, stride, padding)
        self.bias = bool(bias)
        kh, kw = self.kernel
        rng = np.random.default_rng(rng)
        limit = np.sqrt(6.0 / (kh * kw * (self.in_ch + self.out_ch)))
        self._add_param("w", rng.uniform(-limit, limit,
                                         size=(self.out_ch, self.in_ch, kh, kw)))
        if self.bias:
            self._add_param("b", np.zeros(self.out_ch))

    def config(self):
        cfg = self._geometry_config()
        cfg.update(bias=self.bias)
        return cfg

    def _forward(self, x, training):
        return F.conv2d_forward(x, self.params["w"], self.params.get("b"), self.stride,
                                self.padding)

    def _backward(self, grad_out, cache):
        dx, dw, db = F.conv2d_backward(grad_out, cache)
        self._store_grad("w", dw)
        if db is not None:
            self._store_grad("b", db)
        return dx


# ---------------------------------------------------------------------------
# batch normalization
# ---------------------------------------------------------------------------

@_register
class BatchNorm(Layer):
    """Batch normalization, per feature of (N, D) or per channel of (N, C, H, W).

    Forward rule / gradient: :func:`minibnn.functional.batchnorm_forward` / ``_backward``.
    Training uses batch statistics and updates the running ones
    ``r <- (1 - momentum) * r + momentum * batch``; eval uses the running ones.

    Parameters
    ----------
    num_features : int, D or C.
    spatial : bool, False for (N, D) inputs, True for (N, C, H, W).
    momentum : float, default 0.1 (BinaryNet: Lasagne ``alpha=.1``).
    eps : float, default 1e-4 (BinaryNet: ``epsilon=1e-4``).

    params: ``gamma`` (ones), ``beta`` (zeros), shape (num_features,), ``{"binary":
    False, "lr_scale": 1.0}``.  buffers: ``running_mean`` (zeros), ``running_var`` (ones).

    References: Ioffe & Szegedy 2015; Hubara et al. 2016, Sec. 1.4 and BinaryNet code.
    """

    _forward_fn = staticmethod(F.batchnorm_forward)
    _backward_fn = staticmethod(F.batchnorm_backward)

    def __init__(self, num_features, spatial=False, momentum=0.1, eps=1e-4):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features")
        self.spatial = bool(spatial)
        self.momentum = float(momentum)
        self.eps = float(eps)
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self._add_param("gamma", np.ones(self.num_features))
        self._add_param("beta", np.zeros(self.num_features))
        self.buffers["running_mean"] = np.zeros(self.num_features, dtype=np.float32)
        self.buffers["running_var"] = np.ones(self.num_features, dtype=np.float32)

    def config(self):
        return {"num_features": self.num_features, "spatial": self.spatial,
                "momentum": self.momentum, "eps": self.eps}

    def _check_input(self, x):
        if self.spatial:
            if x.ndim != 4 or x.shape[1] != self.num_features:
                raise self._shape_error(f"(N, {self.num_features}, H, W)", x)
        elif x.ndim != 2 or x.shape[1] != self.num_features:
            raise self._shape_error(f"(N, {self.num_features})", x)

    def _forward(self, x, training):
        return self._forward_fn(x, self.params["gamma"], self.params["beta"],
                                "train" if training else "eval",
                                self.buffers["running_mean"], self.buffers["running_var"],
                                self.momentum, self.eps)

    def _backward(self, grad_out, cache):
        dx, dgamma, dbeta = self._backward_fn(grad_out, cache)
        self._store_grad("gamma", dgamma)
        self._store_grad("beta", dbeta)
        return dx


@_register
class ShiftBatchNorm(BatchNorm):
    """Shift-based batch normalization (Alg. 3): AP2 replaces the multiplications.

    Forward rule / straight-through gradient:
    :func:`minibnn.functional.shift_batchnorm_forward` / ``_backward``.  Same
    parameters, params and buffers as :class:`BatchNorm` (the running variance tracks
    the approximate, AP2-based variance).

    References: Hubara et al. 2016, Sec. 1.4, Alg. 3.
    """

    _forward_fn = staticmethod(F.shift_batchnorm_forward)
    _backward_fn = staticmethod(F.shift_batchnorm_backward)


# ---------------------------------------------------------------------------
# activations, pooling, dropout, reshape
# ---------------------------------------------------------------------------

@_register
class SignActivation(Layer):
    """Binarize activations: +-1 out (float32), any shape.

    Forward rule: ``sign(x)`` (sign(0) = +1, Eq. 1); with ``stochastic=True`` and
    ``training``, +1 with probability ``hard_sigmoid(x)`` (Eq. 2) -- inference is always
    deterministic.
    Pseudo-gradient: hard-tanh STE ``g_in = g_out * 1{|x| <= 1}`` (Sec. 1.3), for both.

    References: Hubara et al. 2016, Sec. 1.1 (Eq. 1-2), Sec. 1.3.
    """

    uses_rng = True

    def __init__(self, stochastic=False, rng=None):
        super().__init__()
        self.stochastic = bool(stochastic)
        self.rng = np.random.default_rng(rng)

    def config(self):
        return {"stochastic": self.stochastic}

    def _forward(self, x, training):
        out = stochastic_sign(x, self.rng) if (self.stochastic and training) else sign(x)
        return out, x

    def _backward(self, grad_out, cache):
        return ste_sign_backward(grad_out, cache)

    @property
    def last_input(self):
        """The input of the last forward pass (None before any), for statistics such as
        the fraction whose STE gradient is cancelled (:mod:`minibnn.stats`)."""
        return self._cache


@_register
class HardTanh(Layer):
    """``clip(x, -1, 1)``, gradient ``g * 1{|x| <= 1}``; any shape."""

    def _forward(self, x, training):
        return F.hardtanh_forward(x)

    def _backward(self, grad_out, cache):
        return F.hardtanh_backward(grad_out, cache)


@_register
class MaxPool2D(Layer):
    """Max pooling, (N, C, H, W) -> (N, C, H', W'), ``H' = (H - kernel) // stride + 1``.

    kernel : int (square window), default 2.  stride : int, default ``kernel``.
    """

    def __init__(self, kernel=2, stride=None):
        super().__init__()
        self.kernel = _positive_int(kernel, "kernel")
        self.stride = self.kernel if stride is None else _positive_int(stride, "stride")

    def config(self):
        return {"kernel": self.kernel, "stride": self.stride}

    def _check_input(self, x):
        if x.ndim != 4 or x.shape[2] < self.kernel or x.shape[3] < self.kernel:
            raise self._shape_error(f"(N, C, H, W) with H, W >= {self.kernel}", x)

    def _forward(self, x, training):
        return F.maxpool2d_forward(x, self.kernel, self.stride)

    def _backward(self, grad_out, cache):
        return F.maxpool2d_backward(grad_out, cache)


@_register
class Dropout(Layer):
    """Inverted dropout with drop probability ``p`` in [0, 1); identity at inference.

    The mask comes from this layer's ``rng`` (Generator or int seed).
    """

    uses_rng = True

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng(rng)

    def config(self):
        return {"p": self.p}

    def _forward(self, x, training):
        return F.dropout_forward(x, self.p, "train" if training else "eval", self.rng)

    def _backward(self, grad_out, cache):
        return F.dropout_backward(grad_out, cache)


@_register
class Flatten(Layer):
    """(N, ...) -> (N, prod(...))."""

    def _check_input(self, x):
        if x.ndim < 2:
            raise self._shape_error("(N, ...) with at least 2 axes", x)

    def _forward(self, x, training):
        return F.flatten_forward(x)

    def _backward(self, grad_out, cache):
        return F.flatten_backward(grad_out, cache)


def layer_from_config(class_name, config, rng=None):
    """Build a layer from its class name and :meth:`Layer.config` (e.g. from a saved
    architecture); ``rng`` is passed to layers that take one."""
    cls = LAYERS.get(class_name)
    if cls is None:
        raise ValueError(f"unknown layer class {class_name!r}; known: {', '.join(sorted(LAYERS))}")
    if not isinstance(config, dict):
        raise ValueError(f"config of {class_name} must be a dict, got {type(config).__name__}")
    kwargs = dict(config)
    if cls.uses_rng:
        kwargs["rng"] = rng
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad config for {class_name}: {config!r} ({exc})") from exc
