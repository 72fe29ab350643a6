"""``Sequential``: a stack of layers, its parameters by name, and its file format.

Parameter names are ``"<layer index>.<param key>"`` -- ``"0.w"``, ``"2.gamma"`` -- and
BatchNorm running statistics are ``"2.running_mean"`` / ``"2.running_var"``; they are
stable as long as the layer list is, so an optimizer can key its state by name.

File format (:meth:`Sequential.save` / :meth:`Sequential.load`): an uncompressed ``.npz``
written atomically (a temporary file in the target directory, then ``os.replace``) and
read with ``np.load(..., allow_pickle=False)``.  Entries:

* ``format_version``: 0-d int64, :data:`FORMAT_VERSION`;
* ``architecture``: 0-d unicode string, JSON list of ``{"class": <layer class name>,
  "config": <constructor keyword arguments>}``, enough to rebuild the model;
* one entry per :meth:`Sequential.state_dict` item (params and buffers, by name).

A wrong version, a missing or unexpected entry, or a shape mismatch raises
``ValueError`` naming the file and the entry.
"""

import json
import os
import tempfile

import numpy as np

from .layers import Layer, layer_from_config

__all__ = ["Sequential", "FORMAT_VERSION", "spawn_rngs"]

#: version of the file layout written by :meth:`Sequential.save`
FORMAT_VERSION = 1

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
        ``training=None`` uses the model's mode (:meth:`train` / :meth:`eval`)."""
        training = self.training if training is None else bool(training)
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    __call__ = forward

    def backward(self, grad):
        """grad: d loss / d output of the last forward -> d loss / d input; fills every
        layer's ``grads`` (overwritten, not accumulated)."""
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def train(self, mode=True):
        """Set training mode (batch statistics, dropout, stochastic sign); returns self."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Set inference mode; returns self."""
        return self.train(False)

    def set_backend(self, backend):
        """Set ``backend`` on every binary layer (None: float BLAS path; or a kernel
        backend name for the packed XNOR path).  Outputs do not change; returns self."""
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
        if not isinstance(architecture, list) or not all(
                isinstance(d, dict) and "class" in d and "config" in d for d in architecture):
            raise ValueError("architecture must be a list of {'class': ..., 'config': ...} dicts")
        rngs = spawn_rngs(seed, len(architecture))
        return cls([layer_from_config(d["class"], d["config"], rng)
                    for d, rng in zip(architecture, rngs)])

    def save(self, path):
        """Write the architecture and state to ``path`` (exactly that name; see the
        module docstring for the format), atomically."""
        path = os.fspath(path)
        arrays = {"format_version": np.array(FORMAT_VERSION, dtype=np.int64),
                  "architecture": np.array(json.dumps(self.architecture()))}
        arrays.update(self._state_arrays())
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)          # a file object: no ".npz" appended
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)              # atomic: old file or new file, never half
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path, seed=None):
        """Rebuild a model saved by :meth:`save`.  ``seed`` seeds the layers' Generators
        (dropout, stochastic sign); the weights come from the file.  The model is
        returned in training mode, like a new one."""
        path = os.fspath(path)
        try:
            z = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise ValueError(f"{path}: not a readable minibnn model file "
                             f"({type(exc).__name__}: {exc})") from exc
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: not a minibnn model file (a single .npy array, not .npz)")
        with z:
            try:
                files = {k: z[k] for k in z.files}
            except Exception as exc:
                raise ValueError(f"{path}: unreadable entry ({type(exc).__name__}: {exc})") from exc
        if "format_version" not in files:
            raise ValueError(f"{path}: no 'format_version' entry; not a minibnn model file")
        version = files.pop("format_version")
        ok_type = version.shape == () and np.issubdtype(version.dtype, np.integer)
        if not ok_type or int(version) != FORMAT_VERSION:
            shown = int(version) if ok_type else f"{version.tolist()!r} ({version.dtype})"
            raise ValueError(f"{path}: format_version {shown}, this minibnn reads "
                             f"version {FORMAT_VERSION}")
        if "architecture" not in files:
            raise ValueError(f"{path}: no 'architecture' entry")
        try:
            arch = json.loads(str(files.pop("architecture")))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: architecture is not valid JSON ({exc})") from exc
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
