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
  shape, an empty batch (N = 0) or an input holding NaN or infinity raises
  ``ValueError`` naming the layer and the problem.
* A forward that raises leaves the layer exactly as it was: new state (BatchNorm's
  running statistics, the cache for ``backward``) is committed only once the forward
  has succeeded, and the generators a failed forward drew from (dropout, stochastic
  sign) are put back in their states (:meth:`Layer.forward_deferred`;
  :class:`minibnn.model.Sequential` commits all its layers only when the whole forward
  succeeded).

Binary layers (:class:`BinaryDense`, :class:`BinaryConv2D`) take ``backend``: ``None``
(the default) runs hidden layers (``binary_input=True``, +-1 inputs) through the
XNOR-popcount kernels of the default kernel backend (``$MINIBNN_BACKEND``, else
``"cpu"``; see :func:`minibnn.functional.product_backend`), a kernel backend name
(``"cpu"``, ``"reference"``, ``"cuda"``) picks one, and ``"float"`` computes
``x @ sign(w)`` with float BLAS.  All give identical outputs; ``layer.backend`` may be
changed at any time (``Sequential.set_backend`` does it for a whole model).

Where the arrays live: every layer runs its ops through
``F = minibnn.dispatch.twin(minibnn.functional, x)`` -- :mod:`minibnn.functional` for
NumPy arrays, its device twin for numba.cuda device arrays -- so ``params``, ``grads``
and ``buffers`` may hold device arrays once a model has been moved there.  Building a
layer and :meth:`Layer.astype` work on the host.

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

import inspect

import numpy as np

from . import dispatch, functional
from .checks import check_choice, check_real_scalar

__all__ = ["Layer", "BinaryDense", "BinaryConv2D", "Dense", "Conv2D", "BatchNorm",
           "ShiftBatchNorm", "SignActivation", "HardTanh", "MaxPool2D", "Dropout", "Flatten",
           "LAYERS", "layer_from_config", "layer_class", "glorot_lr_scale"]

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
    if any(isinstance(u, bool) or not isinstance(u, (int, np.integer)) for u in (a, b)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    return int(a), int(b)


def _positive_int(v, name, minimum=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _check_backend(backend):
    return check_choice(backend, "backend", (None,) + functional.PRODUCT_BACKENDS)


def _ops(*arrays):
    """The op module for these arrays: :mod:`minibnn.functional` or its device twin."""
    return dispatch.twin(functional, *arrays)


class PendingForward:
    """The effects of one :meth:`Layer.forward_deferred` on its layer, held back.

    ``commit()`` makes the layer keep the cache for :meth:`Layer.backward` and take the
    new buffers (BatchNorm's running statistics).  ``rollback()`` undoes the one thing a
    forward cannot hold back, its random draws, by putting back the generator states
    saved before it (reading a state costs ~1 us; forking a generator ~20 us).  Call
    exactly one of the two.
    """

    __slots__ = ("layer", "out_shape", "cache", "buffers", "rng_states")

    def __init__(self, layer, out_shape, cache, buffers, rng_states):
        self.layer, self.out_shape, self.cache = layer, out_shape, cache
        self.buffers, self.rng_states = buffers, rng_states

    def commit(self):
        layer = self.layer
        layer._cache = self.cache
        layer._out_shape = self.out_shape
        if self.buffers:
            layer.buffers.update(self.buffers)

    def rollback(self):
        _restore(self.rng_states)


def _restore(rng_states):
    for g, state in rng_states:
        g.bit_generator.state = state


#: the cache of a layer that has not run forward yet (None is a valid cache: Dropout's)
_NO_FORWARD = object()


class Layer:
    """Base class; see the module docstring for the conventions.

    Subclasses implement

    * ``_forward(x, training) -> (out, cache, new_buffers)``: ``new_buffers`` is None or
      ``{name: array}``, buffers computed by the forward that replace the old ones when
      it is committed.  ``_forward`` must not change the layer, except by drawing from
      the generators ``_generators_used(training)`` returns;
    * ``_backward(grad_out, cache) -> grad_in``, storing param gradients with
      :meth:`_store_grad`;
    * optionally ``_check_input(x)``, and ``config()`` returning the JSON-able
      constructor arguments (everything but ``rng``), and ``_state_shapes(args)`` (the
      shapes of params and buffers, for :meth:`state_shapes`).

    Ops come from ``_ops(x)`` (the module for where ``x`` lives), never from NumPy
    directly on activations.
    """

    #: whether the constructor takes ``rng`` (initialization or sampling)
    uses_rng = False

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.param_info = {}
        self.buffers = {}
        self._cache = _NO_FORWARD
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
        if g is target:
            return                       # the op wrote it in place (its dw_out)
        if target is not None and target.shape == p.shape and target.dtype == p.dtype:
            _ops(target, g).copy_into(target, g)
        else:
            self.grads[name] = g if dispatch.on_device(g) else np.array(g, dtype=p.dtype)

    def zero_grad(self):
        """Set every gradient to 0."""
        for g in self.grads.values():
            g[...] = 0

    def astype(self, dtype):
        """Convert params, grads and buffers to ``dtype`` (e.g. float64 for gradient
        checks); host arrays only.  Returns self."""
        for d in (self.params, self.grads, self.buffers):
            for k in d:
                d[k] = np.ascontiguousarray(d[k], dtype=dtype)
        return self

    # -- description --------------------------------------------------------
    def config(self):
        """Constructor arguments (JSON-able, without ``rng``)."""
        return {}

    @classmethod
    def state_shapes(cls, config):
        """``{name: shape}`` of the params and buffers a layer built from ``config``
        would have, computed without building it (no allocation).

        Used by :meth:`minibnn.model.Sequential.load` to check a file's arrays against
        its architecture before anything is allocated.  ``ValueError`` for a config
        the constructor would refuse (unknown or bad arguments).
        """
        if not isinstance(config, dict):
            raise ValueError(f"config of {cls.__name__} must be a dict, got {type(config).__name__}")
        try:
            bound = inspect.signature(cls).bind(**config)
        except TypeError as exc:
            raise ValueError(f"bad config for {cls.__name__}: {config!r} ({exc})") from None
        bound.apply_defaults()
        try:
            return cls._state_shapes(bound.arguments)
        except TypeError as exc:
            raise ValueError(f"bad config for {cls.__name__}: {exc}") from None

    @classmethod
    def _state_shapes(cls, args):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -- forward / backward -------------------------------------------------
    def _check_input(self, x):
        """Raise ``ValueError`` if x has the wrong shape for this layer."""

    def _generators_used(self, training):
        """The ``numpy.random.Generator`` objects a forward in this mode draws from."""
        return ()

    def _shape_error(self, expected, x):
        return ValueError(f"{self!r}: expected input of shape {expected}, got {x.shape}")

    def forward(self, x, training=True):
        """Compute the layer output; keeps what :meth:`backward` needs.

        x : float32/64 array of the layer's input shape (integers become float32), a
            batch of N >= 1 samples, finite (NaN or infinity raise ``ValueError``).
        training : True for the training behaviour (batch statistics, dropout,
            stochastic binarization), False for inference.

        A forward that raises leaves the layer as it was (see :meth:`forward_deferred`).
        """
        F = _ops(x)
        x = F.as_input(x, "x")
        try:
            F.check_finite(x, "input")
        except ValueError as exc:
            raise ValueError(f"{self!r}: {exc}") from None
        out, pending = self.forward_deferred(x, training)
        pending.commit()
        return out

    __call__ = forward

    def forward_deferred(self, x, training=True):
        """The forward pass with its effects on the layer held back: ``(out, pending)``.

        The layer keeps nothing until ``pending.commit()`` (a :class:`PendingForward`):
        then it keeps the cache for :meth:`backward` and takes the new buffers
        (BatchNorm's running statistics).  ``pending.rollback()`` puts back the states
        of the generators the forward drew from (dropout masks, stochastic signs), so
        that the layer is exactly as before.  A caller running several layers commits
        them all once every forward has succeeded and rolls back the ones that ran if a
        later one raises (:meth:`minibnn.model.Sequential.forward`).  A forward that
        raises here leaves the layer as it was.  Unlike :meth:`forward`, the input is
        not checked for NaN / infinity (a model checks its input once).
        """
        F = _ops(x)
        x = F.as_input(x, "x")
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"{self!r}: empty batch: the input has shape {x.shape}, "
                             f"need N >= 1 samples along the first axis")
        self._check_input(x)
        training = bool(training)
        rng_states = [(g, g.bit_generator.state) for g in self._generators_used(training)]
        try:
            out, cache, new_buffers = self._forward(x, training)
        except BaseException:
            _restore(rng_states)
            raise
        return out, PendingForward(self, out.shape, cache, new_buffers, rng_states)

    def backward(self, grad_out, input_grad=True):
        """Gradient w.r.t. the input of the last :meth:`forward`; param gradients go to
        ``self.grads`` (overwritten).  grad_out has the shape of that forward's output.

        ``input_grad=False`` says the caller does not want the input's gradient (the
        first layers of a model: nothing is below them): the layer then returns None and
        computes only its parameter gradients -- nothing at all if it has no parameters,
        and no input-gradient product in a dense or convolution layer (one of a layer's
        two backward GEMMs).  The parameter gradients are the same either way, to float
        rounding where the op then takes a cheaper route.
        """
        if self._cache is _NO_FORWARD:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        grad_out = _ops(grad_out).as_input(grad_out, "grad_out")
        if grad_out.shape != self._out_shape:
            raise ValueError(f"{self!r}: grad_out has shape {grad_out.shape}, but the last "
                             f"forward output had shape {self._out_shape}")
        if input_grad:
            return self._backward(grad_out, self._cache)
        if not self.params:
            return None
        if self._skips_input_grad:
            return self._backward(grad_out, self._cache, input_grad=False)
        self._backward(grad_out, self._cache)   # its dx is cheap here (BatchNorm)
        return None

    #: whether ``_backward`` takes ``input_grad=False`` (and then skips dx)
    _skips_input_grad = False

    def _forward(self, x, training):
        raise NotImplementedError

    def _backward(self, grad_out, cache):
        raise NotImplementedError


class _ProductLayer(Layer):
    """Dense and convolution layers: ``w`` and an optional bias ``b``.

    ``_backward_op`` names the op (in :mod:`minibnn.functional` or its device twin)
    returning ``(dx, dw, db)``; the gradients are stored here, once for all four.  The
    op writes dw straight into ``grads["w"]`` when that buffer has dw's shape and dtype
    (``dw_out``), and skips dx when the caller does not want it.
    """

    _backward_op = None
    _skips_input_grad = True

    def _backward_options(self):
        """Extra keyword arguments of the backward op (BinaryDense: ``grad_dtype``)."""
        return {}

    def _backward(self, grad_out, cache, input_grad=True):
        op = getattr(_ops(grad_out), self._backward_op)
        dx, dw, db = op(grad_out, cache, need_dx=input_grad, dw_out=self.grads.get("w"),
                        **self._backward_options())
        self._store_grad("w", dw)
        if db is not None:
            self._store_grad("b", db)
        return dx


class _BinaryWeights:
    """What the binary layers share: ``backend``, ``stochastic_weights`` and the rng."""

    def _init_binary(self, binary_input, bias, backend, H, stochastic_weights, rng):
        self.binary_input = bool(binary_input)
        self.bias = bool(bias)
        self.backend = _check_backend(backend)
        self.H = check_real_scalar(H, "H", lo=0, lo_open=True)
        self.stochastic_weights = bool(stochastic_weights)
        return np.random.default_rng(rng)

    def _binary_config(self):
        cfg = {"binary_input": self.binary_input, "bias": self.bias,
               "backend": self.backend, "H": self.H}
        # only when set: deterministic models keep the architecture older versions read
        if self.stochastic_weights:
            cfg["stochastic_weights"] = True
        return cfg

    def _generators_used(self, training):
        return (self.rng,) if self.stochastic_weights and training else ()

    def _stochastic_kwargs(self, training):
        # passed only when used, so a device twin without stochastic weights still serves
        # the deterministic layers
        return {"stochastic_rng": self.rng} if self.stochastic_weights and training else {}

    @property
    def prepared(self):
        """The packed weights the last forward used (a
        :class:`minibnn.kernels.PreparedWeights`), or None: before any forward, after a
        forward on the float path, and for convolutions (their kernel packs internally).
        Read-only; tells which path the last forward took."""
        cache = self._cache
        return cache.get("prepared") if isinstance(cache, dict) else None


# ---------------------------------------------------------------------------
# dense and convolution
# ---------------------------------------------------------------------------

class _DenseBase(_ProductLayer):
    def _check_input(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise self._shape_error(f"(N, {self.in_features})", x)

    @classmethod
    def _state_shapes(cls, args):
        k = _positive_int(args["in_features"], "in_features")
        f = _positive_int(args["out_features"], "out_features")
        shapes = {"w": (k, f)}
        if args["bias"]:
            shapes["b"] = (f,)
        return shapes


@_register
class BinaryDense(_BinaryWeights, _DenseBase):
    """Binary fully connected layer: ``out = x_b @ w_b (+ b)``, ``w_b = sign(w)``.

    Forward rule: see :func:`minibnn.functional.binary_dense_forward` (sign(w) with
    sign(0) = +1; packed XNOR GEMM for hidden layers on a kernel backend).  With
    ``stochastic_weights`` the training forward draws ``w_b = +1`` with probability
    ``hard_sigmoid(w)`` (Eq. 2) from the layer's ``rng``; inference always uses sign(w).
    Pseudo-gradient: ``dx = dout @ w_b.T``; ``dw = x.T @ dout`` is the gradient
    w.r.t. w_b, applied straight through to the latent w.

    Parameters
    ----------
    in_features, out_features : int (K and F).
    binary_input : True for hidden layers (input +-1 from a SignActivation), False for
        the first layer (real input, always the float path).
    bias : bool, default False -- every binary layer of the paper is followed by batch
        norm, whose beta makes a bias redundant.
    backend : None (default: the default kernel backend, ``$MINIBNN_BACKEND`` or
        "cpu", resolved at each forward), "float" (float BLAS ``x @ sign(w)``), or a
        kernel backend name ("cpu", "reference", "cuda"); same outputs on every path;
        a mutable attribute.
    H : float > 0, latent weights start ~ U(-H, H) (BinaryNet's ``H = 1``).
    stochastic_weights : bool, default False -- stochastic binarization of the weights
        in training (paper Sec. 1.1; BinaryNet's ``stochastic`` option).
    rng : numpy Generator or int seed for the initialization; kept as ``self.rng``
        for the stochastic weights (so a run's saved generator states include it).

    params: ``w`` (K, F) float32, ``{"binary": True, "lr_scale":
    glorot_lr_scale(K, F)}``; ``b`` (F,) float32 if ``bias``.
    ``prepared``: the packed weights of the last forward (None on the float path).
    ``grad_dtype``: the backward products' precision, "float32" (default) or "bfloat16"
    (:func:`minibnn.functional.binary_dense_backward`); a training setting, not part of
    the architecture (set it with :meth:`minibnn.model.Sequential.set_grad_dtype`).

    References: Hubara et al. 2016, Sec. 1.1 (Eq. 1-2), 1.3, Alg. 1.
    """

    uses_rng = True
    _backward_op = "binary_dense_backward"
    grad_dtype = "float32"

    def _backward_options(self):
        # only when set: the float32 call is the plain one every twin takes
        return {} if self.grad_dtype == "float32" else {"grad_dtype": self.grad_dtype}

    def __init__(self, in_features, out_features, binary_input=True, bias=False, backend=None,
                 H=1.0, stochastic_weights=False, rng=None):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        rng = self._init_binary(binary_input, bias, backend, H, stochastic_weights, rng)
        w = rng.uniform(-self.H, self.H, size=(self.in_features, self.out_features))
        self._add_param("w", w, binary=True,
                        lr_scale=glorot_lr_scale(self.in_features, self.out_features))
        if self.bias:
            self._add_param("b", np.zeros(self.out_features))
        self.rng = rng

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                **self._binary_config()}

    def _forward(self, x, training):
        # w_b is re-derived on every call: the optimizer changes w between steps
        out, cache = _ops(x).binary_dense_forward(x, self.params["w"], self.params.get("b"),
                                                  self.binary_input, self.backend,
                                                  **self._stochastic_kwargs(training))
        return out, cache, None


@_register
class Dense(_DenseBase):
    """Float fully connected layer ``out = x @ w + b`` (Glorot-uniform init).

    params: ``w`` (in_features, out_features), ``b`` (out_features,) if ``bias``; both
    ``{"binary": False, "lr_scale": 1.0}``.
    """

    uses_rng = True
    _backward_op = "dense_backward"

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
        out, cache = _ops(x).dense_forward(x, self.params["w"], self.params.get("b"))
        return out, cache, None


class _ConvBase(_ProductLayer):
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

    @classmethod
    def _state_shapes(cls, args):
        c = _positive_int(args["in_ch"], "in_ch")
        f = _positive_int(args["out_ch"], "out_ch")
        kh, kw = (_positive_int(k, "kernel") for k in _pair(args["kernel"], "kernel"))
        shapes = {"w": (f, c, kh, kw)}
        if args["bias"]:
            shapes["b"] = (f,)
        return shapes


@_register
class BinaryConv2D(_BinaryWeights, _ConvBase):
    """Binary 2-D convolution (cross-correlation, zero padding): ``x_b (*) w_b``.

    Forward rule: see :func:`minibnn.functional.binary_conv2d_forward` (``w_b = sign(w)``;
    packed kernel :func:`minibnn.kernels.binary_conv2d` for hidden layers on a kernel
    backend; stochastic ``w_b`` in training with ``stochastic_weights``, as
    :class:`BinaryDense`).
    Pseudo-gradient: dx exact for fixed w_b; dw w.r.t. w_b, straight through.

    Parameters
    ----------
    in_ch, out_ch : int (C and F).
    kernel : int or (KH, KW).  stride : int >= 1.  padding : int >= 0 (zeros).
    binary_input, bias, backend, H, stochastic_weights, rng : as :class:`BinaryDense`
        (``backend=None``: the default kernel backend; ``"float"``: im2col + BLAS).

    params: ``w`` (F, C, KH, KW) float32, ``{"binary": True, "lr_scale":
    glorot_lr_scale(KH*KW*C, KH*KW*F)}``; ``b`` (F,) if ``bias``.

    References: Hubara et al. 2016, Sec. 1.1 (Eq. 1-2), 1.3, Sec. 3.
    """

    uses_rng = True
    _backward_op = "binary_conv2d_backward"

    def __init__(self, in_ch, out_ch, kernel, stride=1, padding=0,
                 binary_input=True, bias=False, backend=None, H=1.0, stochastic_weights=False,
                 rng=None):
        super().__init__()
        self._init_geometry(in_ch, out_ch, kernel, stride, padding)
        rng = self._init_binary(binary_input, bias, backend, H, stochastic_weights, rng)
        kh, kw = self.kernel
        w = rng.uniform(-self.H, self.H, size=(self.out_ch, self.in_ch, kh, kw))
        self._add_param("w", w, binary=True,
                        lr_scale=glorot_lr_scale(kh * kw * self.in_ch,
                                                 kh * kw * self.out_ch))
        if self.bias:
            self._add_param("b", np.zeros(self.out_ch))
        self.rng = rng

    def config(self):
        cfg = self._geometry_config()
        cfg.update(self._binary_config())
        return cfg

    def _forward(self, x, training):
        out, cache = _ops(x).binary_conv2d_forward(
            x, self.params["w"], self.params.get("b"), self.stride, self.padding,
            self.binary_input, self.backend, **self._stochastic_kwargs(training))
        return out, cache, None


@_register
class Conv2D(_ConvBase):
    """Float 2-D convolution (im2col + BLAS), Glorot-uniform init, zero padding.

    params: ``w`` (F, C, KH, KW), ``b`` (F,) if ``bias``; ``{"binary": False,
    "lr_scale": 1.0}``.
    """

    uses_rng = True
    _backward_op = "conv2d_backward"

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
        out, cache = _ops(x).conv2d_forward(x, self.params["w"], self.params.get("b"),
                                            self.stride, self.padding)
        return out, cache, None


# ---------------------------------------------------------------------------
# batch normalization
# ---------------------------------------------------------------------------

@_register
class BatchNorm(Layer):
    """Batch normalization, per feature of (N, D) or per channel of (N, C, H, W).

    Forward rule / gradient: :func:`minibnn.functional.batchnorm_forward` / ``_backward``.
    Training uses batch statistics and updates the running ones
    ``r <- (1 - momentum) * r + momentum * batch`` (:func:`minibnn.functional.running_average`,
    committed only when the forward succeeded: the buffers are replaced by the new
    arrays); eval uses the running ones.

    Parameters
    ----------
    num_features : int, D or C.
    spatial : bool, False for (N, D) inputs, True for (N, C, H, W).
    momentum : float in [0, 1], default 0.1 (BinaryNet: Lasagne ``alpha=.1``).
    eps : float > 0, default 1e-4 (BinaryNet: ``epsilon=1e-4``).

    params: ``gamma`` (ones), ``beta`` (zeros), shape (num_features,), ``{"binary":
    False, "lr_scale": 1.0}``.  buffers: ``running_mean`` (zeros), ``running_var`` (ones).

    References: Ioffe & Szegedy 2015; Hubara et al. 2016, Sec. 1.4 and BinaryNet code.
    """

    _forward_op = "batchnorm_forward"
    _backward_op = "batchnorm_backward"

    def __init__(self, num_features, spatial=False, momentum=0.1, eps=1e-4):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features")
        self.spatial = bool(spatial)
        self.momentum = check_real_scalar(momentum, "momentum", lo=0.0, hi=1.0)
        self.eps = check_real_scalar(eps, "eps", lo=0.0, lo_open=True)
        self._add_param("gamma", np.ones(self.num_features))
        self._add_param("beta", np.zeros(self.num_features))
        self.buffers["running_mean"] = np.zeros(self.num_features, dtype=np.float32)
        self.buffers["running_var"] = np.ones(self.num_features, dtype=np.float32)

    def config(self):
        return {"num_features": self.num_features, "spatial": self.spatial,
                "momentum": self.momentum, "eps": self.eps}

    @classmethod
    def _state_shapes(cls, args):
        d = (_positive_int(args["num_features"], "num_features"),)
        return {"gamma": d, "beta": d, "running_mean": d, "running_var": d}

    def _check_input(self, x):
        if self.spatial:
            if x.ndim != 4 or x.shape[1] != self.num_features:
                raise self._shape_error(f"(N, {self.num_features}, H, W)", x)
        elif x.ndim != 2 or x.shape[1] != self.num_features:
            raise self._shape_error(f"(N, {self.num_features})", x)

    def _forward(self, x, training):
        F = _ops(x)
        fn = getattr(F, self._forward_op)
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        if not training:
            out, cache = fn(x, self.params["gamma"], self.params["beta"], "eval", rm, rv,
                            self.momentum, self.eps)
            return out, cache, None
        # running statistics are not passed (not written); the new ones are returned and
        # replace the old ones when the forward is committed
        out, cache = fn(x, self.params["gamma"], self.params["beta"], "train", None, None,
                        self.momentum, self.eps)
        return out, cache, {
            "running_mean": F.running_average(rm, cache["batch_mean"], self.momentum),
            "running_var": F.running_average(rv, cache["batch_var"], self.momentum)}

    def _backward(self, grad_out, cache):
        dx, dgamma, dbeta = getattr(_ops(grad_out), self._backward_op)(grad_out, cache)
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

    _forward_op = "shift_batchnorm_forward"
    _backward_op = "shift_batchnorm_backward"


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

    def _generators_used(self, training):
        return (self.rng,) if self.stochastic and training else ()

    def _forward(self, x, training):
        F = _ops(x)
        if self.stochastic and training:
            return F.stochastic_sign(x, self.rng), x, None
        out, cache = F.ste_sign_forward(x)
        return out, cache, None

    def _backward(self, grad_out, cache):
        return _ops(grad_out).ste_sign_backward(grad_out, cache)

    @property
    def last_input(self):
        """The input of the last forward pass (None before any), for statistics such as
        the fraction whose STE gradient is cancelled (:mod:`minibnn.stats`)."""
        return None if self._cache is _NO_FORWARD else self._cache


@_register
class HardTanh(Layer):
    """``clip(x, -1, 1)``, gradient ``g * 1{|x| <= 1}``; any shape."""

    def _forward(self, x, training):
        out, cache = _ops(x).hardtanh_forward(x)
        return out, cache, None

    def _backward(self, grad_out, cache):
        return _ops(grad_out).hardtanh_backward(grad_out, cache)


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
        out, cache = _ops(x).maxpool2d_forward(x, self.kernel, self.stride)
        return out, cache, None

    def _backward(self, grad_out, cache):
        return _ops(grad_out).maxpool2d_backward(grad_out, cache)


@_register
class Dropout(Layer):
    """Inverted dropout with drop probability ``p`` in [0, 1); identity at inference.

    The mask comes from this layer's ``rng`` (Generator or int seed).  With ``p = 0``
    or in evaluation nothing is dropped (the cache is None, and backward passes the
    gradient through).
    """

    uses_rng = True

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        self.p = check_real_scalar(p, "Dropout p (the drop probability)", lo=0.0, hi=1.0,
                                   hi_open=True)
        self.rng = np.random.default_rng(rng)

    def config(self):
        return {"p": self.p}

    def _generators_used(self, training):
        return (self.rng,) if training and self.p > 0 else ()

    def _forward(self, x, training):
        out, cache = _ops(x).dropout_forward(x, self.p, "train" if training else "eval",
                                             self.rng)
        return out, cache, None

    def _backward(self, grad_out, cache):
        return _ops(grad_out).dropout_backward(grad_out, cache)


@_register
class Flatten(Layer):
    """(N, ...) -> (N, prod(...))."""

    def _check_input(self, x):
        if x.ndim < 2:
            raise self._shape_error("(N, ...) with at least 2 axes", x)

    def _forward(self, x, training):
        out, cache = _ops(x).flatten_forward(x)
        return out, cache, None

    def _backward(self, grad_out, cache):
        return _ops(grad_out).flatten_backward(grad_out, cache)


def layer_from_config(class_name, config, rng=None):
    """Build a layer from its class name and :meth:`Layer.config` (e.g. from a saved
    architecture); ``rng`` is passed to layers that take one."""
    cls = layer_class(class_name)
    if not isinstance(config, dict):
        raise ValueError(f"config of {class_name} must be a dict, got {type(config).__name__}")
    kwargs = dict(config)
    if cls.uses_rng:
        kwargs["rng"] = rng
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad config for {class_name}: {config!r} ({exc})") from exc


def layer_class(class_name):
    """The layer class registered under ``class_name`` (``ValueError`` if none)."""
    cls = LAYERS.get(class_name) if isinstance(class_name, str) else None
    if cls is None:
        raise ValueError(f"unknown layer class {class_name!r}; known: {', '.join(sorted(LAYERS))}")
    return cls
