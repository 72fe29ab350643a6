"""The packed model that runs: :class:`PackedModel`, XNOR-popcount and integer thresholds.

Built from a trained Sequential (:meth:`PackedModel.from_model`, through
:func:`minibnn.packed.export.build`) or from a ``.bnn`` file (:meth:`PackedModel.load`,
through :mod:`minibnn.packed.fileformat`); every array is checked before any kernel sees
it.  The kernels (threshold + pack, bit planes, the bit-plane GEMM, integer max pooling,
XNOR GEMM, binary convolution) are :mod:`minibnn.kernels` functions on the model's
backend.  See :mod:`minibnn.packed` for what each step computes and why it equals the
float model.  On the ``cuda`` backend the whole network runs on the GPU
(:mod:`minibnn.packed.runtime_cuda`: packed bits between layers, the last layer's sums
copied back).

Shapes: N batch, K fan-in, F outputs, images (N, C, H, W), W = ceil(K/64) words.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 1.6 (first layer,
Eq. 5), Sec. 3 (XNOR-popcount).
"""

import os

import numpy as np

from .. import checks, kernels
from .. import functional as Fn
from ..quantize import sign
from . import fileformat
from .export import bn_eval, build, sum_dtype
from .fileformat import BN_KEYS, PREPROCESSING

__all__ = ["PackedModel", "bitplane_dense", "pixels_from_input"]


def bitplane_dense(p, w_words, k, backend=None):
    """First dense layer on 8-bit pixels with XNOR-popcount only (Sec. 1.6, Eq. 5).

    p : (N, K) uint8 pixels.  w_words : (F, ceil(K/64)) uint64, sign(w) columns packed.
    k : K.  backend : kernel backend (None: the default).

    Returns ``(u, s_int)``, both (N, F) int32: ``u = sum_n 2^n (2 b_n - 1) . w_b =
    (2p - 255) . w_b = 255 * (x . w_b)`` with ``x = 2p/255 - 1``, and ``s_int = p . w_b =
    (u + 255 sum(w_b)) / 2`` (the {0,1}-plane form; see :mod:`minibnn.packed`).
    """
    prepared = kernels.prepare_weights(w_words, k, backend=backend)
    planes = kernels.pack_bitplanes(p, backend=backend)
    u = kernels.bitplane_gemm(planes, prepared, k, backend=backend)
    sw = kernels.unpack(w_words, k).sum(axis=1, dtype=np.int64)        # sum(w_b) per column
    s_int = (u.astype(np.int64) + 255 * sw[None, :]) // 2
    return u, s_int.astype(np.int32)


def pixels_from_input(x):
    """8-bit pixels behind an input: uint8 -> itself; float ``x = p / 127.5 - 1`` (the
    float32 ``2*x/255-1`` preprocessing of :func:`minibnn.data.scale_to_pm1`) -> p.

    Raises ``ValueError`` unless the float input round-trips exactly (same dtype, bit for
    bit), i.e. unless it really is the preprocessing of 8-bit pixels."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"bit-plane input must be uint8 pixels or float 2*p/255-1, got {x.dtype}")
    with np.errstate(invalid="ignore"):
        p = np.rint((x.astype(np.float64) + 1.0) * 127.5)
    if not np.all((p >= 0) & (p <= 255)):
        raise ValueError("bit-plane input: values outside [-1, 1] (or NaN): not 2*p/255-1 of "
                         "8-bit pixels")
    p = p.astype(np.uint8)
    back = (p.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).astype(x.dtype)
    if not np.array_equal(back, x):
        bad = int(np.count_nonzero(back != x))
        raise ValueError(f"bit-plane input: {bad} values are not exactly 2*p/255-1 of an 8-bit "
                         f"pixel p (preprocessing must be {PREPROCESSING!r}, float32)")
    return p


def _pixels_to_float(p):
    out = p.astype(np.float32)
    out /= np.float32(127.5)
    out -= np.float32(1.0)
    return out


class _Op:
    """Runtime form of one header op (arrays bound, weights prepared)."""

    def __init__(self, spec, arrays, i):
        self.spec = spec
        self.i = i
        self.kind, self.role, self.input = spec["kind"], spec["role"], spec["input"]
        self.K, self.F = spec["K"], spec["F"]
        self.conv = self.kind == "conv"
        self.pool = spec["pool"]
        self.conv_shape = tuple(spec["conv_shape"])
        self.out_shape = tuple(spec["out_shape"])
        name = f"op{i}"
        self.words = arrays[f"{name}.weights"]
        self.threshold = spec["threshold"]
        self.prepared = None
        if self.conv:
            kh, kw = spec["kernel"]
            self.stride, self.padding = spec["stride"], spec["padding"]
            self.w_pm1 = np.ascontiguousarray(
                kernels.unpack(self.words, self.K).reshape(self.F, spec["C"], kh, kw))
        if self.threshold:
            self.t = arrays[f"{name}.thresholds"]
            self.flip = arrays[f"{name}.flip"].astype(bool)
            spatial = int(np.prod(self.out_shape[1:])) if self.conv else 1
            self.t_flat = np.ascontiguousarray(np.repeat(self.t, spatial))
            self.t4 = self.t.reshape(1, -1, 1, 1) if self.conv else None
        else:
            self.bias = arrays.get(f"{name}.bias")
            self.bn_kind = spec["bn"]["class"]
            self.bn_eps = spec["bn"]["eps"]
            self.bn_arrays = [arrays[f"{name}.bn.{key}"] for key in BN_KEYS]
            if self.input == "real" and not self.conv:
                # sign(w) as the float model holds it: (K, F) float32, C-contiguous
                self.wb = np.ascontiguousarray(kernels.unpack(self.words, self.K).T)

    def bn(self, v):
        """The op's batch norm in eval mode (the float model's function, same values)."""
        gamma, beta, mean, var = self.bn_arrays
        return bn_eval(self.bn_kind, v, gamma, beta, mean, var, self.bn_eps)

    def prepare(self, backend):
        if not self.conv and self.input != "real":
            self.prepared = kernels.prepare_weights(self.words, self.K, backend=backend)


class PackedModel:
    """A BNN as packed weights and integer thresholds; see :mod:`minibnn.packed`.

    Build with :meth:`from_model` or :meth:`load`; run with :meth:`predict`,
    :meth:`scores`, :meth:`integer_scores`.  ``backend`` (``"cpu"``, ``"reference"``,
    ``"cuda"`` or None for the default) is passed to the kernels; weights are prepared
    once per backend (:meth:`set_backend`).

    Attributes: ``header`` (dict), ``arrays`` (name -> ndarray), ``first_layer``,
    ``input_shape`` (per sample), ``n_classes``, ``backend``.
    """

    def __init__(self, header, arrays, backend=None, source="<packed model>"):
        fileformat.check_header(header, source)
        arrays = dict(arrays)
        fileformat.check_arrays(header, arrays, source)
        ops = header["architecture"]
        self.header = header
        self.arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        self.first_layer = header["first_layer"]
        self.input_shape = tuple(header["input_shape"])
        self.n_classes = header["n_classes"]
        try:
            self.ops = [_Op(op, self.arrays, i) for i, op in enumerate(ops)]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{source}: malformed op ({type(exc).__name__}: {exc})") from None
        self.backend = None
        self._device = None         # a runtime_cuda.DeviceRunner on the cuda backend
        self.set_backend(backend)

    # -- construction -------------------------------------------------------
    @classmethod
    def from_model(cls, model, first_layer="float", input_shape=None, backend=None):
        """Fold a trained ``Sequential`` (see :mod:`minibnn.packed` for the supported
        layer sequences).  ``input_shape``: per-sample input shape, inferred when None
        (``(K,)`` for an MLP, the square image that fits for a ConvNet)."""
        header, arrays = build(model, first_layer, input_shape)
        header["arrays"] = fileformat.array_table(arrays)
        header["sha256"] = fileformat.digest(arrays)
        return cls(header, arrays, backend=backend, source="from_model")

    @classmethod
    def load(cls, path, backend=None):
        """Read a ``.bnn`` file; ``ValueError`` naming the file for anything wrong with it."""
        path = os.fspath(path)
        header, arrays = fileformat.read(path)
        return cls(header, arrays, backend=backend, source=path)

    def save(self, path):
        """Write the ``.bnn`` file atomically (see :mod:`minibnn.packed.fileformat`)."""
        return fileformat.write(path, self.header, self.arrays)

    def set_backend(self, backend):
        """Prepare the dense weights for ``backend`` (validated now); returns self."""
        name = kernels.backend.resolve_name(backend)
        kernels.get_backend(name)
        if name != self.backend:
            prepared = []
            for op in self.ops:     # all or nothing: a failure leaves the model as it was
                prepared.append(op.prepared)
            try:
                for op in self.ops:
                    op.prepare(name)
                device = None
                if name == "cuda":      # the whole network on the GPU, bits between layers
                    from .runtime_cuda import DeviceRunner
                    if DeviceRunner.unsupported(self) is None:
                        device = DeviceRunner(self)
            except BaseException:
                for op, p in zip(self.ops, prepared):
                    op.prepared = p
                raise
            self.backend, self._device = name, device
        return self

    @property
    def device_resident(self):
        """True when the whole network runs on the GPU (backend ``cuda`` and every op
        supported by :mod:`minibnn.packed.runtime_cuda`); False on the CPU backends or
        when the ``cuda`` backend runs kernel by kernel."""
        return self._device is not None

    # -- running ------------------------------------------------------------
    def _inputs(self, x):
        x = checks.real_array(x, "x", min_ndim=1)
        N = x.shape[0]
        first = self.ops[0]
        if first.conv:
            want = (N,) + tuple(first.spec["in_shape"])
            if x.shape != want:
                raise ValueError(f"input has shape {x.shape}, the model expects {want}")
        elif int(np.prod(x.shape[1:])) != first.K:
            raise ValueError(f"input has shape {x.shape}: {int(np.prod(x.shape[1:]))} values per "
                             f"sample, the model expects {first.K}")
        if self.first_layer == "bitplane":
            return pixels_from_input(x)
        if x.dtype == np.uint8:
            return _pixels_to_float(x)
        if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
            raise ValueError("input x contains NaN, which has no sign")
        return x

    def _emit(self, op, nxt, sums=None, y=None):
        """What the next op reads: packed words (dense) or +-1 float32 NCHW (conv)."""
        N = (sums if sums is not None else y).shape[0]
        if nxt.conv:
            if sums is not None:
                return np.where(sums >= op.t4, np.float32(1), np.float32(-1))
            return sign(y)
        if sums is not None:
            return kernels.threshold_pack(sums.reshape(N, -1), op.t_flat, backend=self.backend)
        return kernels.pack(np.ascontiguousarray(y).reshape(N, -1))

    def _maxpool(self, s, op):
        return kernels.maxpool2d(s, op.pool["kernel"], op.pool["stride"],
                                 backend=self.backend)[0]

    def _pool(self, op, s):
        if op.pool is None:
            return s
        if not op.flip.any():
            return self._maxpool(s, op)
        f4 = op.flip.reshape(1, -1, 1, 1)
        orig = np.where(f4, -s, s)                  # undo the folded negation
        m = self._maxpool(orig, op)                 # the float model's max-pool
        return np.where(f4, -m, m)                  # back to the flipped domain

    def _first(self, x):
        op, nxt = self.ops[0], self.ops[1]
        N = x.shape[0]
        if op.input == "real":
            if op.conv:
                y, _ = Fn.binary_conv2d_forward(x, op.w_pm1, op.bias, op.stride, op.padding,
                                                binary_input=False, backend=None)
                if op.pool is not None:
                    y, _ = Fn.maxpool2d_forward(y, op.pool["kernel"], op.pool["stride"])
            else:
                y, _ = Fn.binary_dense_forward(x.reshape(N, -1), op.wb, op.bias,
                                               binary_input=False, backend=None)
            return self._emit(op, nxt, y=op.bn(y))
        # bit planes: exact integer u = 255 * (x . w_b), flips folded into the weights
        if op.conv:
            u = None
            for b in range(8):
                plane = np.where((x >> np.uint8(b)) & np.uint8(1), np.float32(1), np.float32(-1))
                g = kernels.binary_conv2d(plane, op.w_pm1, stride=op.stride, padding=op.padding,
                                          backend=self.backend)
                u = g if u is None else u + (g << b)
            u = self._pool(op, u)
        else:
            planes = kernels.pack_bitplanes(x.reshape(N, -1), backend=self.backend)
            u = kernels.bitplane_gemm(planes, op.prepared, op.K, backend=self.backend)
        return self._emit(op, nxt, sums=u)

    def _sums(self, op, act):
        if op.conv:
            s = kernels.binary_conv2d(act, op.w_pm1, stride=op.stride, padding=op.padding,
                                      backend=self.backend)
            return self._pool(op, s)
        return kernels.xnor_gemm(act, op.prepared, op.K, backend=self.backend)

    def _run(self, x):
        if self._device is not None:
            return self._device.run(self._inputs(x))
        act = self._first(self._inputs(x))
        for op, nxt in zip(self.ops[1:-1], self.ops[2:]):
            act = self._emit(op, nxt, sums=self._sums(op, act))
        return self._sums(self.ops[-1], act)

    def _batched(self, fn, x, batch_size):
        x = np.asarray(x)
        if batch_size is not None:
            batch_size = checks.check_int(batch_size, "batch_size", minimum=1)
        if batch_size is None or len(x) <= batch_size:
            return fn(x)
        return np.concatenate([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])

    def integer_scores(self, x, batch_size=None):
        """The last layer's XNOR-popcount sums: (N, n_classes) int32, equal to the float
        model's values just before its last batch norm.

        x : (N, ...) inputs preprocessed as ``2*x/255-1`` (float) or uint8 pixels; for a
        ConvNet (N, C, H, W) = ``input_shape``.  ``batch_size``: process in chunks."""
        return self._batched(self._run, x, batch_size)

    def _scores_from_sums(self, s):
        op = self.ops[-1]
        v = s.astype(sum_dtype(op.bias))
        if op.bias is not None:
            v = v + op.bias
        return op.bn(v)

    def scores(self, x, batch_size=None):
        """Class scores (N, n_classes): the model's last batch norm (eval) of the integer
        sums -- equal to the float model's output bit for bit."""
        return self._batched(lambda c: self._scores_from_sums(self._run(c)), x, batch_size)

    def predict(self, x, batch_size=None):
        """Labels (N,) int64 = argmax of :meth:`scores`."""
        return self._batched(lambda c: np.argmax(self._scores_from_sums(self._run(c)), axis=1),
                             x, batch_size)

    # -- description ----------------------------------------------------------
    def nbytes(self):
        """Bytes of all arrays (uncompressed)."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    def __repr__(self):
        ops = ", ".join(f"{o.kind}({o.K}->{o.F})" for o in self.ops)
        return (f"PackedModel(first_layer={self.first_layer!r}, input_shape={self.input_shape}, "
                f"ops=[{ops}], backend={self.backend!r})")


def export(model, path, first_layer="float", input_shape=None):
    """Fold ``model`` (a trained Sequential) and write it to ``path`` as a ``.bnn`` file.

    first_layer : ``"float"`` or ``"bitplane"`` (see :mod:`minibnn.packed`).
    input_shape : per-sample input shape, inferred when None.
    Returns the :class:`PackedModel`.
    """
    packed = PackedModel.from_model(model, first_layer=first_layer, input_shape=input_shape)
    packed.save(path)
    return packed


def load(path, backend=None):
    """:meth:`PackedModel.load`."""
    return PackedModel.load(path, backend=backend)
