"""Model zoo: the paper's architectures as layer specs and as built ``Sequential`` models.

Each architecture has two functions:

* ``<name>_specs(...)`` -> ``list[LayerSpec]``: pure data (layer class name, constructor
  keyword arguments, per-sample input and output shapes).  No layer code is imported; a
  spec list is JSON-able (:meth:`LayerSpec.to_dict`) and printable (:func:`summary`).
* ``<name>(..., seed=0)`` -> ``Sequential``: :func:`build_sequential` of those specs.

:func:`build` looks a builder up by name in :data:`ARCHITECTURES`, :func:`specs` a spec
function in :data:`SPECS`.  Layer classes are imported lazily from :mod:`minibnn.layers`
(then :mod:`minibnn.model`), at build time.

Randomness: ``seed`` is expanded with ``numpy.random.SeedSequence(seed).spawn(n_layers)``
and layer ``i`` gets ``numpy.random.default_rng(children[i])`` (if its class takes
``rng``), so a layer's initialization depends only on ``seed`` and its position, not on
how many numbers the layers before it drew.

Shapes are per sample: ``(features,)`` for dense layers, ``(C, H, W)`` for convolutions
(batches are ``(N, ...)``, NCHW).

References
----------
Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 4 (MNIST MLP 3x4096,
CIFAR-10 / SVHN ConvNet) and the authors' Theano code (BinaryNet, Train-time/mnist.py,
cifar10.py, svhn.py): BatchNorm after every layer (after the pooling where there is one),
sign after every BatchNorm except the last, the first layer sees real inputs.
"""

import dataclasses
import inspect

import numpy as np

from .checks import check_int, check_real_scalar

__all__ = ["LayerSpec", "mnist_mlp_specs", "mnist_mlp", "cifar10_convnet_specs",
           "cifar10_convnet", "svhn_convnet_specs", "svhn_convnet", "build_sequential",
           "build", "specs", "summary", "ARCHITECTURES", "SPECS"]

#: BatchNorm flavours: ``bn="standard"`` or ``bn="shift"`` (shift-based BN, Alg. 3)
BN_KINDS = {"standard": "BatchNorm", "shift": "ShiftBatchNorm"}


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One layer: ``kind`` (class name), ``kwargs`` (constructor arguments, no ``rng``),
    ``in_shape`` / ``out_shape`` (per sample)."""

    kind: str
    kwargs: dict
    in_shape: tuple
    out_shape: tuple

    def to_dict(self):
        """JSON-able form."""
        return {"kind": self.kind, "kwargs": dict(self.kwargs),
                "in_shape": list(self.in_shape), "out_shape": list(self.out_shape)}

    def describe(self):
        """``"BinaryDense(784, 4096, binary_input=False)"``-style text."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items() if k != "backend")
        return f"{self.kind}({args})"


def _bn_kind(bn):
    try:
        return BN_KINDS[bn]
    except KeyError:
        raise ValueError(f"bn must be one of {sorted(BN_KINDS)}, got {bn!r}") from None


def _check_p(name, p):
    return check_real_scalar(p, name, lo=0.0, hi=1.0, hi_open=True)


def _check_int(name, value, lo=1):
    return check_int(value, name, minimum=lo)


# ---------------------------------------------------------------------------
# MNIST MLP
# ---------------------------------------------------------------------------

def _binary_kwargs(backend, stochastic_weights):
    """The keyword arguments every binary layer of a zoo model gets."""
    kw = {"backend": backend}
    if stochastic_weights:          # only when set, as in the layers' config()
        kw["stochastic_weights"] = True
    return kw


def mnist_mlp_specs(hidden=4096, depth=3, in_features=784, n_classes=10, dropout_in=0.0,
                    dropout_hidden=0.0, bn="standard", backend=None, stochastic_weights=False):
    """Layer specs of the paper's MNIST MLP; see :func:`mnist_mlp`."""
    hidden = _check_int("hidden", hidden)
    depth = _check_int("depth", depth, lo=0)
    in_features = _check_int("in_features", in_features)
    n_classes = _check_int("n_classes", n_classes)
    dropout_in = _check_p("dropout_in", dropout_in)
    dropout_hidden = _check_p("dropout_hidden", dropout_hidden)
    bn_kind = _bn_kind(bn)
    binary = _binary_kwargs(backend, stochastic_weights)

    out = [LayerSpec("Flatten", {}, (in_features,), (in_features,))]
    if dropout_in > 0:
        out.append(LayerSpec("Dropout", {"p": dropout_in}, (in_features,), (in_features,)))
    fan_in = in_features
    for i in range(depth):
        h = (hidden,)
        out.append(LayerSpec("BinaryDense", {"in_features": fan_in, "out_features": hidden,
                                             "binary_input": i > 0, **binary},
                             (fan_in,), h))
        out.append(LayerSpec(bn_kind, {"num_features": hidden, "spatial": False}, h, h))
        out.append(LayerSpec("SignActivation", {}, h, h))
        if dropout_hidden > 0:
            out.append(LayerSpec("Dropout", {"p": dropout_hidden}, h, h))
        fan_in = hidden
    c = (n_classes,)
    out.append(LayerSpec("BinaryDense", {"in_features": fan_in, "out_features": n_classes,
                                         "binary_input": depth > 0, **binary},
                         (fan_in,), c))
    out.append(LayerSpec(bn_kind, {"num_features": n_classes, "spatial": False}, c, c))
    return out


def mnist_mlp(hidden=4096, depth=3, in_features=784, n_classes=10, dropout_in=0.0,
              dropout_hidden=0.0, bn="standard", backend=None, seed=0, stochastic_weights=False):
    """The paper's MNIST MLP (Hubara et al. 2016, Sec. 4: 3 x 4096 binary units).

    Default shapes (``hidden=4096, depth=3``; ``Dropout`` layers appear only when
    ``dropout_in`` / ``dropout_hidden`` > 0, at the marked places)::

        layer                                              output
        Flatten                                            784     (any input of 784 values)
        [Dropout(dropout_in)]                              784
        BinaryDense(784, 4096, binary_input=False)         4096    real pixels in
        BatchNorm(4096) -> SignActivation                  4096
        [Dropout(dropout_hidden)]                          4096
        BinaryDense(4096, 4096) -> BatchNorm -> Sign       4096    (x depth - 1)
        [Dropout(dropout_hidden)]                          4096
        BinaryDense(4096, 10) -> BatchNorm(10)             10      scores (no sign)

    The first dense layer binarizes its weights but not its input (``binary_input=False``:
    the pixels are real); all later layers see +-1 activations.  The paper's code uses
    ``dropout_in=0.2, dropout_hidden=0.5``; the defaults here are 0 (no Dropout layers).

    Parameters
    ----------
    hidden, depth : int
        Width and number of hidden layers.
    in_features, n_classes : int
    dropout_in, dropout_hidden : float in [0, 1)
    bn : {"standard", "shift"}
        ``BatchNorm`` or ``ShiftBatchNorm`` (shift-based BN, Hubara et al. Alg. 3).
    backend : str or None
        How the hidden binary layers compute their products: None (default) on the
        packed XNOR kernels of the default kernel backend (``$MINIBNN_BACKEND``, else
        "cpu"), a kernel backend name ("cpu", "cuda", "reference") on that one,
        "float" with float BLAS (same result, slower).
    seed : int
        Seeds every layer's rng (see the module docstring).
    stochastic_weights : bool
        Stochastic binarization of the weights in training (Sec. 1.1, Eq. 2; the
        ``stochastic`` option of the authors' code); inference stays deterministic.

    Returns
    -------
    Sequential

    References
    ----------
    Hubara et al. 2016, Sec. 4; BinaryNet Train-time/mnist.py.
    """
    return build_sequential(mnist_mlp_specs(hidden, depth, in_features, n_classes, dropout_in,
                                            dropout_hidden, bn, backend, stochastic_weights),
                            seed=seed)


# ---------------------------------------------------------------------------
# CIFAR-10 / SVHN ConvNet
# ---------------------------------------------------------------------------

def _channels(base, width):
    return max(1, int(round(base * width)))


def cifar10_convnet_specs(width=1.0, n_classes=10, bn="standard", backend=None, in_channels=3,
                          image_size=32, fc_units=1024, stochastic_weights=False):
    """Layer specs of the paper's CIFAR-10 ConvNet; see :func:`cifar10_convnet`."""
    width = check_real_scalar(width, "width", lo=0.0, lo_open=True)
    n_classes = _check_int("n_classes", n_classes)
    in_channels = _check_int("in_channels", in_channels)
    image_size = _check_int("image_size", image_size)
    fc_units = _check_int("fc_units", fc_units)
    if image_size % 8:
        raise ValueError(f"image_size must be a multiple of 8 (three 2x2 poolings), got {image_size}")
    bn_kind = _bn_kind(bn)
    binary = _binary_kwargs(backend, stochastic_weights)

    out = []
    c_in, s = in_channels, image_size
    first = True
    for base in (128, 256, 512):
        c = _channels(base, width)
        for j in range(2):
            conv = {"in_ch": c_in, "out_ch": c, "kernel": 3, "stride": 1, "padding": 1,
                    "binary_input": not first, **binary}
            out.append(LayerSpec("BinaryConv2D", conv, (c_in, s, s), (c, s, s)))
            first = False
            if j == 1:
                out.append(LayerSpec("MaxPool2D", {"kernel": 2, "stride": 2}, (c, s, s),
                                     (c, s // 2, s // 2)))
                s //= 2
            out.append(LayerSpec(bn_kind, {"num_features": c, "spatial": True}, (c, s, s), (c, s, s)))
            out.append(LayerSpec("SignActivation", {}, (c, s, s), (c, s, s)))
            c_in = c
    feat = c_in * s * s
    out.append(LayerSpec("Flatten", {}, (c_in, s, s), (feat,)))
    for units, last in ((fc_units, False), (fc_units, False), (n_classes, True)):
        out.append(LayerSpec("BinaryDense", {"in_features": feat, "out_features": units,
                                             "binary_input": True, **binary},
                             (feat,), (units,)))
        out.append(LayerSpec(bn_kind, {"num_features": units, "spatial": False}, (units,), (units,)))
        if not last:
            out.append(LayerSpec("SignActivation", {}, (units,), (units,)))
        feat = units
    return out


def cifar10_convnet(width=1.0, n_classes=10, bn="standard", backend=None, seed=0, in_channels=3,
                    image_size=32, fc_units=1024, stochastic_weights=False):
    """The paper's CIFAR-10 ConvNet: (2x128C3)-MP2-(2x256C3)-MP2-(2x512C3)-MP2-(2x1024FC)-10.

    Default shapes (``width=1``, 3 x 32 x 32 input; every conv is 3x3, stride 1,
    padding 1; ``C`` = ``round(base * width)`` channels)::

        layer                                                   output
        BinaryConv2D(3, 128, binary_input=False) -> BN -> Sign  128 x 32 x 32
        BinaryConv2D(128, 128) -> MaxPool2D(2) -> BN -> Sign    128 x 16 x 16
        BinaryConv2D(128, 256) -> BN -> Sign                    256 x 16 x 16
        BinaryConv2D(256, 256) -> MaxPool2D(2) -> BN -> Sign    256 x 8 x 8
        BinaryConv2D(256, 512) -> BN -> Sign                    512 x 8 x 8
        BinaryConv2D(512, 512) -> MaxPool2D(2) -> BN -> Sign    512 x 4 x 4
        Flatten                                                 8192
        BinaryDense(8192, 1024) -> BN -> Sign                   1024
        BinaryDense(1024, 1024) -> BN -> Sign                   1024
        BinaryDense(1024, 10) -> BN                             10     scores (no sign)

    BN is ``BatchNorm(C, spatial=True)`` after a conv (per channel) and
    ``BatchNorm(F, spatial=False)`` after a dense layer (or the ``ShiftBatchNorm`` twins
    with ``bn="shift"``).  It comes after the pooling where there is one, as in the
    paper's code.  The first conv sees the real (preprocessed) image.

    Parameters
    ----------
    width : float
        Multiplies the conv channels (128, 256, 512); the dense layers keep ``fc_units``.
    n_classes : int
    bn : {"standard", "shift"}
    backend : str or None
        As :func:`mnist_mlp`: None (default kernel backend), a kernel backend name, or
        "float" (float BLAS, same result).
    seed : int
    in_channels : int
        3 for CIFAR-10 / SVHN.
    image_size : int, multiple of 8
        Input height = width (32 for CIFAR-10 / SVHN).
    fc_units : int
        Units of the two hidden dense layers (1024 in the paper).
    stochastic_weights : bool
        As :func:`mnist_mlp`.

    Returns
    -------
    Sequential

    References
    ----------
    Hubara et al. 2016, Sec. 4 (the architecture of Courbariaux et al. 2015's BinaryConnect
    ConvNet); BinaryNet Train-time/cifar10.py.
    """
    return build_sequential(cifar10_convnet_specs(width, n_classes, bn, backend, in_channels,
                                                  image_size, fc_units, stochastic_weights),
                            seed=seed)


def svhn_convnet_specs(width=1.0, n_classes=10, bn="standard", backend=None, in_channels=3,
                       image_size=32, fc_units=1024, stochastic_weights=False):
    """Layer specs of the SVHN ConvNet: :func:`cifar10_convnet_specs` with ``0.5 * width``."""
    return cifar10_convnet_specs(0.5 * float(width), n_classes, bn, backend, in_channels,
                                 image_size, fc_units, stochastic_weights)


def svhn_convnet(width=1.0, n_classes=10, bn="standard", backend=None, seed=0, in_channels=3,
                 image_size=32, fc_units=1024, stochastic_weights=False):
    """The paper's SVHN ConvNet: the CIFAR-10 ConvNet with half the conv channels.

    (2x64C3)-MP2-(2x128C3)-MP2-(2x256C3)-MP2-(2x1024FC)-10, i.e.
    ``cifar10_convnet(width=0.5 * width, ...)``; ``width`` is relative to the SVHN net
    (``width=1`` is the paper's).  Default shapes: 64 x 32 x 32, 64 x 16 x 16,
    128 x 16 x 16, 128 x 8 x 8, 256 x 8 x 8, 256 x 4 x 4, 4096, 1024, 1024, 10.  The dense
    layers keep 1024 units, as in the authors' svhn.py.

    References
    ----------
    Hubara et al. 2016, Sec. 4; BinaryNet Train-time/svhn.py.
    """
    return build_sequential(svhn_convnet_specs(width, n_classes, bn, backend, in_channels,
                                               image_size, fc_units, stochastic_weights),
                            seed=seed)


# ---------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------

def _layer_class(kind):
    import importlib

    for modname in ("minibnn.layers", "minibnn.model"):
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:
            if getattr(exc, "name", None) != modname:
                raise
            continue
        cls = getattr(mod, kind, None)
        if cls is not None:
            return cls
    raise ImportError(f"minibnn.zoo: no layer class {kind!r} in minibnn.layers or minibnn.model")


def _accepts(cls, name):
    if name == "rng" and hasattr(cls, "uses_rng"):       # minibnn.layers declares it
        return bool(cls.uses_rng)
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def build_sequential(layer_specs, seed=0):
    """Instantiate ``layer_specs`` and wrap them in a ``Sequential``.

    Layer ``i`` whose class takes ``rng`` gets
    ``numpy.random.default_rng(SeedSequence(seed).spawn(n)[i])``.
    """
    layer_specs = list(layer_specs)
    children = np.random.SeedSequence(int(seed)).spawn(len(layer_specs))
    layers = []
    for spec, child in zip(layer_specs, children):
        cls = _layer_class(spec.kind)
        kwargs = dict(spec.kwargs)
        if _accepts(cls, "rng"):
            kwargs["rng"] = np.random.default_rng(child)
        layers.append(cls(**kwargs))
    return _layer_class("Sequential")(layers)


def summary(layer_specs):
    """A text table: index, layer, output shape, parameter count (weights + BN gamma/beta)."""
    rows = [("#", "layer", "output", "params")]
    total = 0
    for i, spec in enumerate(layer_specs):
        n = 0
        kw = spec.kwargs
        if spec.kind == "BinaryDense":
            n = kw["in_features"] * kw["out_features"]
        elif spec.kind == "BinaryConv2D":
            n = kw["in_ch"] * kw["out_ch"] * kw["kernel"] ** 2
        elif spec.kind in BN_KINDS.values():
            n = 2 * kw["num_features"]
        total += n
        rows.append((str(i), spec.describe(), " x ".join(map(str, spec.out_shape)), str(n) if n else ""))
    rows.append(("", "total", "", str(total)))
    w = [max(len(r[j]) for r in rows) for j in range(4)]
    return "\n".join(f"{r[0]:>{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:>{w[3]}}".rstrip()
                     for r in rows)


#: name -> builder returning a ``Sequential``
ARCHITECTURES = {
    "mnist_mlp": mnist_mlp,
    "cifar10_convnet": cifar10_convnet,
    "svhn_convnet": svhn_convnet,
}

#: name -> function returning the ``list[LayerSpec]``
SPECS = {
    "mnist_mlp": mnist_mlp_specs,
    "cifar10_convnet": cifar10_convnet_specs,
    "svhn_convnet": svhn_convnet_specs,
}


def build(name, **kw):
    """``ARCHITECTURES[name](**kw)``; ``ValueError`` for an unknown name."""
    try:
        builder = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r} (known: {', '.join(sorted(ARCHITECTURES))})") from None
    return builder(**kw)


def specs(name, **kw):
    """``SPECS[name](**kw)`` (``seed`` is accepted and ignored, so the same keywords as
    :func:`build` work)."""
    try:
        fn = SPECS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r} (known: {', '.join(sorted(SPECS))})") from None
    kw.pop("seed", None)
    return fn(**kw)
