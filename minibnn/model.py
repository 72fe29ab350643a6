"""``Sequential``: a stack of layers, its parameters by name, and its file format.

Parameter names are ``"<layer index>.<param key>"`` -- ``"0.w"``, ``"2.gamma"`` -- and
BatchNorm running statistics are ``"2.running_mean"`` / ``"2.running_var"``; they are
stable as long as the layer list is, so an optimizer can key its state by name.

File format (:meth:`Sequential.save` / :meth:`Sequential.load`): an uncompressed ``.npz``
written atomically (:func:`minibnn.fileio.atomic_writer`: a temporary file in the target
directory, then ``os.replace``) and read with ``np.load(..., allow_pickle=False)``.
Entries:

* ``format_version``: 0-d int64, :data:`FORMAT_VERSION`;
* ``architecture``: 0-d unicode string, JSON list of ``{"class": <layer class name>,
  "config": <constructor keyword arguments>}``, enough to rebuild the model;
* one entry per :meth:`Sequential.state_dict` item (params and buffers, by name).

A wrong version, a missing or unexpected entry, or a shape mismatch raises
``ValueError`` naming the file and the entry.  :meth:`Sequential.load` checks the shapes
the architecture declares against the stored arrays' headers, and their total size
against :data:`MAX_LOAD_ELEMENTS`, before it allocates anything: a file whose
architecture claims a 10**6 x 10**6 layer is refused, not built.
"""

import json
import os
import zipfile

import numpy as np

from . import dispatch, functional
from .fileio import atomic_writer
from .layers import Layer, layer_class, layer_from_config

__all__ = ["Sequential", "FORMAT_VERSION", "MAX_LOAD_ELEMENTS", "spawn_rngs"]

#: version of the file layout written by :meth:`Sequential.save`
FORMAT_VERSION = 1

#: most array elements (params + buffers) :meth:`Sequential.load` accepts: 2**31, an
#: 8 GiB float32 model -- 150 times the paper's largest network (the CIFAR-10 ConvNet,
#: ~14M weights)
MAX_LOAD_ELEMENTS = 2 ** 31

#: longest architecture string read (characters); real ones are a few KB
_MAX_ARCH_CHARS = 1 << 20

_META_KEYS = ("format_version", "architecture")


def spawn_rngs(seed, n):
    """``n`` independent Generators from one seed: ``default_rng(SeedSequence(seed).spawn(n)[i])``.

    The same expansion as :func:`minibnn.zoo.build_sequential`, so layer ``i`` gets the
    same stream whichever way the model is built.  ``seed``: int or None (fresh entropy).
    """
    return [np.random.default_rng(c) for c in np.random.SeedSequence(seed).spawn(n)]


class Sequential:
    """Layers applied in order; gradients flow back in reverse.

    Parameters
    ----------
    layers : iterable of :class:`minibnn.layers.Layer`.

    Attributes: ``layers`` (list), ``training`` (bool, set by :meth:`train` /
    :meth:`eval`, the default mode of :meth:`forward`).
    """

    def __init__(self, layers):
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is {type(layer).__name__}, not a Layer")
        self.training = True

    # -- running ------------------------------------------------------------
    def forward(self, x, training=None):
        """x: (N, ...) input of the first layer -> output of the last.
        ``training=None`` uses the model's mode (:meth:`train` / :meth:`eval`).

        The input must be a non-empty batch of finite values (``ValueError`` naming NaN
        or infinity otherwise).  A forward that raises -- bad input, or NaN appearing
        inside the network -- leaves the model exactly as it was: each layer's forward
        is held back (:meth:`minibnn.layers.Layer.forward_deferred`) and all are
        committed (backward caches, BatchNorm running statistics) only after the last
        one succeeded; if one raises, the generators of those that ran (dropout,
        stochastic sign and weights) are put back in their states.
        """
        training = self.training if training is None else bool(training)
        F = dispatch.twin(functional, x)
        x = F.as_input(x, "input")
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"Sequential: empty batch: the input has shape {x.shape}, "
                             f"need N >= 1 samples along the first axis")
        F.check_finite(x, "Sequential: input")
        pending = []
        try:
            for layer in self.layers:
                x, p = layer.forward_deferred(x, training)
                pending.append(p)
        except BaseException:
            for p in reversed(pending):
                p.rollback()
            raise
        for p in pending:
            p.commit()
        return x

    __call__ = forward

    def backward(self, grad, input_grad=True):
        """grad: d loss / d output of the last forward -> d loss / d input; fills every
        layer's ``grads`` (overwritten, not accumulated).

        ``input_grad=False`` (what training does) returns None and skips the work only
        the input's gradient needs: the layers below the first one with parameters, and
        that layer's input-gradient product (see :meth:`minibnn.layers.Layer.backward`).
        Every ``grads`` array is the same either way, to float rounding (a first
        convolution then takes its weight gradient from the forward's im2col).
        """
        first = next((i for i, layer in enumerate(self.layers) if layer.params),
                     len(self.layers))
        for i in range(len(self.layers) - 1, -1, -1):
            if not input_grad and i < first:
                break
            grad = self.layers[i].backward(grad, input_grad=input_grad or i > first)
        return grad if input_grad else None

    def set_grad_dtype(self, grad_dtype):
        """Set the backward products' precision of every layer that has one (the
        BinaryDense layers): "float32" (default) or "bfloat16" (see
        :func:`minibnn.functional.binary_dense_backward`).  Returns self; ``ValueError``
        for another name, nothing changed."""
        grad_dtype = functional.check_grad_dtype(grad_dtype)
        for layer in self.layers:
            if hasattr(layer, "grad_dtype"):
                layer.grad_dtype = grad_dtype
        return self

    def train(self, mode=True):
        """Set training mode (batch statistics, dropout, stochastic sign); returns self."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Set inference mode; returns self."""
        return self.train(False)

    def set_backend(self, backend):
        """Set ``backend`` on every binary layer: None (the default kernel backend),
        ``"float"`` (float BLAS path) or a kernel backend name ("cpu", "reference",
        "cuda") for the packed XNOR path.  Outputs do not change; returns self."""
        if backend is not None and backend not in functional.PRODUCT_BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of "
                             f"{', '.join(functional.PRODUCT_BACKENDS)} (or None for the default)")
        for layer in self.layers:
            if hasattr(layer, "backend"):
                layer.backend = backend
        return self

    def astype(self, dtype):
        """Convert every layer's params, grads and buffers (e.g. float64 for gradient
        checks); returns self."""
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def zero_grad(self):
        """Set every layer's gradients to 0."""
        for layer in self.layers:
            layer.zero_grad()

    # -- parameters and state -------------------------------------------------
    def parameters(self):
        """Yield ``(name, param, grad, info)`` for every trainable array, in layer order.

        ``param`` and ``grad`` are the layer's own arrays (update ``param`` in place);
        ``info`` is ``{"binary": bool, "lr_scale": float}`` (see :mod:`minibnn.layers`).
        """
        for i, layer in enumerate(self.layers):
            for key, p in layer.params.items():
                yield f"{i}.{key}", p, layer.grads[key], layer.param_info[key]

    def buffers(self):
        """Yield ``(name, array)`` for every non-trained state array (BN running stats)."""
        for i, layer in enumerate(self.layers):
            for key, b in layer.buffers.items():
                yield f"{i}.{key}", b

    def _state_arrays(self):
        out = {name: p for name, p, _, _ in self.parameters()}
        out.update(dict(self.buffers()))
        return out

    def state_dict(self):
        """``dict`` name -> copy of every param and buffer."""
        return {name: arr.copy() for name, arr in self._state_arrays().items()}

    def load_state_dict(self, state, strict=True, source="state_dict"):
        """Copy ``state`` (name -> array) into the model's arrays, in place.

        Everything is checked before anything is written: missing names, unexpected
        names (when ``strict``) or a shape mismatch raise ``ValueError``.  Values are
        cast to each array's dtype.
        """
        own = self._state_arrays()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing:
            raise ValueError(f"{source}: missing entries {missing}")
        if strict and unexpected:
            raise ValueError(f"{source}: unexpected entries {unexpected}")
        values = {}
        for name, target in own.items():
            v = np.asarray(state[name])
            if v.shape != target.shape:
                raise ValueError(f"{source}: entry {name!r} has shape {v.shape}, the model "
                                 f"expects {target.shape}")
            if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
                raise ValueError(f"{source}: entry {name!r} has non-numeric dtype {v.dtype}")
            values[name] = v
        for name, target in own.items():
            target[...] = values[name]

    # -- architecture and files ---------------------------------------------
    def architecture(self):
        """JSON-able description: ``[{"class": name, "config": kwargs}, ...]``."""
        return [{"class": type(layer).__name__, "config": layer.config()}
                for layer in self.layers]

    @classmethod
    def from_architecture(cls, architecture, seed=None):
        """Build a freshly initialized model from :meth:`architecture`'s output;
        layers that take ``rng`` get ``spawn_rngs(seed, n_layers)[i]``."""
        _check_architecture(architecture)
        rngs = spawn_rngs(seed, len(architecture))
        return cls([layer_from_config(d["class"], d["config"], rng)
                    for d, rng in zip(architecture, rngs)])

    def save(self, path):
        """Write the architecture and state to ``path`` (exactly that name; see the
        module docstring for the format), atomically (:func:`minibnn.fileio.atomic_writer`)."""
        arrays = {"format_version": np.array(FORMAT_VERSION, dtype=np.int64),
                  "architecture": np.array(json.dumps(self.architecture()))}
        arrays.update(self._state_arrays())
        with atomic_writer(path, "wb") as f:
            np.savez(f, **arrays)              # a file object: no ".npz" appended

    @classmethod
    def load(cls, path, seed=None):
        """Rebuild a model saved by :meth:`save`.  ``seed`` seeds the layers' Generators
        (dropout, stochastic sign); the weights come from the file.  The model is
        returned in training mode, like a new one.

        Everything is checked before a layer is built: the version, the architecture
        (JSON, known layer classes, valid configs), and the shape and dtype of every
        stored array against the shapes the architecture declares (read from the
        arrays' headers, before their data), with at most :data:`MAX_LOAD_ELEMENTS`
        elements in all.  ``ValueError`` naming the file and the entry otherwise;
        ``FileNotFoundError`` if there is no file.
        """
        path = os.fspath(path)
        try:
            z = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise
        except IsADirectoryError:
            raise ValueError(f"{path}: is a directory, not a minibnn model file") from None
        except Exception as exc:
            raise ValueError(f"{path}: not a readable minibnn model file "
                             f"({type(exc).__name__}: {exc})") from exc
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: not a minibnn model file (a single .npy array, not .npz)")
        with z:
            headers = _npz_headers(z, path)
            arch = _read_architecture(z, headers, path)
            declared = _declared_shapes(arch, path)
            _check_stored(declared, headers, path)
            try:
                files = {k: z[k] for k in declared}
            except Exception as exc:
                raise ValueError(f"{path}: unreadable entry ({type(exc).__name__}: {exc})") from exc
        model = cls.from_architecture(arch, seed=seed)
        model.load_state_dict(files, strict=True, source=path)
        return model

    # -- container protocol ---------------------------------------------------
    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"


# ---------------------------------------------------------------------------
# loading: everything checked before anything is allocated
# ---------------------------------------------------------------------------

def _check_architecture(architecture, where=""):
    prefix = f"{where}: " if where else ""
    if not isinstance(architecture, list) or not all(
            isinstance(d, dict) and "class" in d and "config" in d for d in architecture):
        raise ValueError(f"{prefix}architecture must be a list of "
                         f"{{'class': ..., 'config': ...}} dicts")


def _npz_headers(z, path):
    """``{entry: (shape, dtype)}`` from each array's .npy header, without reading data.

    A header whose data would not fit in the stored member (a truncated or forged
    entry) is refused here, before numpy allocates an array of the claimed size.
    """
    headers = {}
    for name in z.files:
        member = name + ".npy"
        try:
            info = z.zip.getinfo(member)
            with z.zip.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
                header_len = f.tell()
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: entry {name!r} is not a readable array "
                             f"({type(exc).__name__}: {exc})") from None
        if dtype.hasobject:
            raise ValueError(f"{path}: entry {name!r} holds Python objects (dtype {dtype})")
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if info.file_size - header_len < need:
            raise ValueError(f"{path}: entry {name!r} claims shape {shape} ({need} bytes) but "
                             f"stores {info.file_size - header_len} bytes (truncated or forged)")
        headers[name] = (tuple(shape), dtype)
    return headers


def _read_architecture(z, headers, path):
    for key in ("format_version", "architecture"):
        if key not in headers:
            hint = "; not a minibnn model file" if key == "format_version" else ""
            raise ValueError(f"{path}: no {key!r} entry{hint}")
    shape, dtype = headers["format_version"]
    version = z["format_version"] if shape == () else None
    ok_type = version is not None and np.issubdtype(version.dtype, np.integer)
    if not ok_type or int(version) != FORMAT_VERSION:
        shown = int(version) if ok_type else f"of shape {shape} and dtype {dtype}"
        raise ValueError(f"{path}: format_version {shown}, this minibnn reads "
                         f"version {FORMAT_VERSION}")
    shape, dtype = headers["architecture"]
    if shape != () or dtype.kind != "U" or dtype.itemsize // 4 > _MAX_ARCH_CHARS:
        raise ValueError(f"{path}: architecture must be one string of at most "
                         f"{_MAX_ARCH_CHARS} characters, got shape {shape} dtype {dtype}")
    try:
        arch = json.loads(str(z["architecture"]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: architecture is not valid JSON ({exc})") from exc
    _check_architecture(arch, path)
    return arch


def _declared_shapes(arch, path):
    """``{entry name: shape}`` the architecture declares (no layer is built)."""
    declared = {}
    for i, d in enumerate(arch):
        try:
            shapes = layer_class(d["class"]).state_shapes(d["config"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: layer {i}: {exc}") from None
        declared.update({f"{i}.{k}": v for k, v in shapes.items()})
    total = sum(int(np.prod(s, dtype=object)) for s in declared.values())
    if total > MAX_LOAD_ELEMENTS:
        raise ValueError(f"{path}: the architecture declares {total} parameter and buffer "
                         f"values, more than this minibnn loads (MAX_LOAD_ELEMENTS = "
                         f"{MAX_LOAD_ELEMENTS}); the file is damaged or not a model")
    return declared


def _check_stored(declared, headers, path):
    stored = {k: v for k, v in headers.items() if k not in _META_KEYS}
    missing = [k for k in declared if k not in stored]
    unexpected = [k for k in stored if k not in declared]
    if missing:
        raise ValueError(f"{path}: missing entries {missing}")
    if unexpected:
        raise ValueError(f"{path}: unexpected entries {unexpected}")
    for name, shape in declared.items():
        got, dtype = stored[name]
        if got != tuple(shape):
            raise ValueError(f"{path}: entry {name!r} has shape {got}, the model "
                             f"expects {tuple(shape)}")
        if dtype.kind not in "fiu":
            raise ValueError(f"{path}: entry {name!r} has non-numeric dtype {dtype}")
