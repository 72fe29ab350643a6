"""Export: fold a trained Sequential into a packed model's header and arrays.

Parses the layer sequence into blocks (binary layer, optional max-pool, batch norm,
optional sign), walks the geometry, and folds each hidden "BN -> sign" into an int32
threshold per neuron by evaluating the model's own batch norm, in eval mode, on every
integer the layer can produce (:func:`fold_thresholds`; the argument is in the
:mod:`minibnn.packed` docstring).  The result is what :mod:`~minibnn.packed.fileformat`
writes and :mod:`~minibnn.packed.runtime` runs.

Shapes: K fan-in, F outputs; dense weights (K, F), conv filters (F, C, KH, KW).

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 1.4 (batch
norm), Sec. 1.6 (first layer), Sec. 3 (XNOR-popcount).
"""

import numpy as np

from .. import functional as Fn
from .. import kernels
from ..kernels import conv_output_size
from ..layers import (BatchNorm, BinaryConv2D, BinaryDense, Dropout, Flatten, MaxPool2D,
                      ShiftBatchNorm, SignActivation)
from ..quantize import sign
from .fileformat import (BN_KEYS, FIRST_LAYER_MODES, FORMAT_NAME, FORMAT_VERSION,
                         PREPROCESSING)

__all__ = ["build", "fold_thresholds", "bn_eval", "bn_eval_layer", "sum_dtype",
           "EXHAUSTIVE_LIMIT"]

#: at most this many (candidate, neuron) BN evaluations are done exhaustively
EXHAUSTIVE_LIMIT = 1 << 26

#: the eval-mode forward of each batch norm a packed model may hold: the very functions
#: the float layers call
_BN_FORWARD = {"BatchNorm": Fn.batchnorm_forward, "ShiftBatchNorm": Fn.shift_batchnorm_forward}


def bn_eval(kind, v, gamma, beta, running_mean, running_var, eps):
    """A batch norm in eval mode, as the float model computes it.

    kind : "BatchNorm" or "ShiftBatchNorm".  v : (N, F) or (N, F, H, W) float.
    gamma, beta, running_mean, running_var : (F,) float.  eps : float > 0.
    Returns the like-shaped output of :func:`minibnn.functional.batchnorm_forward` /
    :func:`~minibnn.functional.shift_batchnorm_forward` with ``mode="eval"``.
    """
    out, _ = _BN_FORWARD[kind](v, gamma, beta, mode="eval", running_mean=running_mean,
                               running_var=running_var, eps=eps)
    return out


def bn_eval_layer(bn, v):
    """:func:`bn_eval` with a BatchNorm / ShiftBatchNorm layer's params and buffers (the
    layer itself, its backward cache included, is not touched)."""
    return bn_eval(type(bn).__name__, v, bn.params["gamma"], bn.params["beta"],
                   bn.buffers["running_mean"], bn.buffers["running_var"], bn.eps)


def sum_dtype(bias):
    """The float dtype the float model holds a binary layer's output in: float32, promoted
    by the bias's dtype when the layer has one (a float64 bias makes float64)."""
    return np.result_type(np.float32, bias.dtype) if bias is not None else np.dtype(np.float32)


# ---------------------------------------------------------------------------
# folding BN + sign into thresholds
# ---------------------------------------------------------------------------

def fold_thresholds(post, lo, hi, n, exhaustive_limit=None, chunk_elems=1 << 20, what="layer"):
    """Per-neuron integer threshold of ``post(z) >= 0`` over the integers ``z in [lo, hi]``.

    post : callable, int64 ``(R, n)`` candidates (column f for neuron f) -> ``(R, n)``
        float values (the model's BN in eval mode applied to the float value of z).
    lo, hi : int, the candidate range (``-K-1, K+1`` for a hidden layer).
    n : number of neurons.

    Returns ``(t, flip)``: int32 (n,) and bool (n,).  Not flipped: ``post(z) >= 0 <=> z >=
    t``; flipped: ``post(z) >= 0 <=> -z >= t``.  All pass: ``t = lo``; none: ``t = hi+1``.
    Raises ``ValueError`` if ``post`` is not monotone on the candidates or gives NaN.

    Up to ``exhaustive_limit`` (default :data:`EXHAUSTIVE_LIMIT`) evaluations every
    candidate is evaluated (chunks of about ``chunk_elems``); above it a vectorized
    bisection per neuron is run and its result checked on an evenly spaced grid of
    candidates and at each boundary.
    """
    if exhaustive_limit is None:
        exhaustive_limit = EXHAUSTIVE_LIMIT
    lo, hi, n = int(lo), int(hi), int(n)
    R = hi - lo + 1

    def passes(z):
        v = np.asarray(post(z))
        if np.isnan(v).any():
            raise ValueError(f"{what}: batch norm gives NaN for some integer input; "
                             "the float model would fail on sign(NaN)")
        return v >= 0

    if R * n <= exhaustive_limit:
        first = np.full(n, hi + 1, dtype=np.int64)
        last = np.full(n, lo - 1, dtype=np.int64)
        count = np.zeros(n, dtype=np.int64)
        rows = max(1, chunk_elems // max(n, 1))
        for z0 in range(lo, hi + 1, rows):
            z = np.arange(z0, min(hi, z0 + rows - 1) + 1, dtype=np.int64)
            ok = passes(np.broadcast_to(z[:, None], (len(z), n)))
            anyp = ok.any(axis=0)
            fi = z[np.argmax(ok, axis=0)]
            li = z[len(z) - 1 - np.argmax(ok[::-1], axis=0)]
            first = np.where(anyp & (first > hi), fi, first)
            last = np.where(anyp, li, last)
            count += ok.sum(axis=0)
        up = count == hi - first + 1          # first..hi all pass (also: none / all pass)
        down = count == last - lo + 1         # lo..last all pass
        bad = ~(up | down)
        if bad.any():
            raise ValueError(f"{what}: batch norm is not monotone on the integer inputs of "
                             f"neuron(s) {np.flatnonzero(bad)[:10].tolist()}; cannot fold "
                             "it into a threshold")
        flip = ~up
        t = np.where(up, first, -last)
        return t.astype(np.int32), flip

    ends = passes(np.array([[lo] * n, [hi] * n], dtype=np.int64))
    p_lo, p_hi = ends[0], ends[1]
    up = ~p_lo & p_hi
    down = p_lo & ~p_hi
    a = np.full(n, lo, dtype=np.int64)      # pred(a) false
    b = np.full(n, hi, dtype=np.int64)      # pred(b) true; pred = pass (up) / not pass (down)
    active = up | down
    while True:
        todo = active & (b - a > 1)
        if not todo.any():
            break
        mid = np.where(todo, (a + b) // 2, a)
        pm = passes(mid[None, :])[0]
        pred = np.where(up, pm, ~pm)
        b = np.where(todo & pred, mid, b)
        a = np.where(todo & ~pred, mid, a)
    t = np.select([p_lo & p_hi, ~p_lo & ~p_hi, up], [lo, hi + 1, b], -a)
    flip = down

    def check(z):
        z = np.asarray(z, dtype=np.int64)
        want = np.where(flip[None, :], -z >= t[None, :], z >= t[None, :])
        if not np.array_equal(passes(z), want):
            raise ValueError(f"{what}: batch norm is not monotone on the integer inputs; "
                             "cannot fold it into a threshold")

    grid = np.unique(np.linspace(lo, hi, min(R, 4097)).round().astype(np.int64))
    rows = max(1, chunk_elems // max(n, 1))
    for g0 in range(0, len(grid), rows):
        g = grid[g0:g0 + rows]
        check(np.broadcast_to(g[:, None], (len(g), n)))
    edge = np.where(flip, -t, t)            # first pass (up) / last pass (down)
    near = np.stack([edge - 1, edge, edge + 1])
    check(np.clip(near, lo, hi))
    return t.astype(np.int32), flip


# ---------------------------------------------------------------------------
# parsing a Sequential
# ---------------------------------------------------------------------------

class _Block:
    """binary layer [+ max-pool] + BN [+ sign], with the layer indices for messages."""

    def __init__(self, layer, index):
        self.layer, self.index = layer, index
        self.pool = None
        self.bn = None
        self.sign = False
        self.flatten = False


def _describe(i, layer):
    return f"layer {i} ({layer!r})"


def _parse(model):
    items = [(i, l) for i, l in enumerate(model.layers) if not isinstance(l, Dropout)]
    blocks = []
    pending_flatten = False
    seen_dense = False
    pos = 0
    expect = "a BinaryDense or BinaryConv2D layer"

    def err(i, layer, wanted):
        return ValueError(f"export: {_describe(i, layer)} is not supported here; expected "
                          f"{wanted} (supported: [Flatten] BinaryDense/BinaryConv2D "
                          "[MaxPool2D] BatchNorm/ShiftBatchNorm SignActivation ... BinaryDense "
                          "BatchNorm; Dropout is skipped)")

    while pos < len(items):
        i, layer = items[pos]
        kind = type(layer)
        if blocks and not blocks[-1].sign:
            raise err(i, layer, "nothing after the last batch norm (the scores)")
        if kind is Flatten:
            if pending_flatten or seen_dense:
                raise err(i, layer, expect)
            pending_flatten = True
            pos += 1
            continue
        if kind not in (BinaryDense, BinaryConv2D):
            raise err(i, layer, expect)
        if kind is BinaryConv2D and (seen_dense or pending_flatten):
            raise err(i, layer, "a BinaryDense layer (no convolution after Flatten)")
        if kind is BinaryDense and blocks and not pending_flatten and \
                isinstance(blocks[-1].layer, BinaryConv2D):
            raise err(i, layer, "a Flatten between the convolutions and the dense layers")
        blk = _Block(layer, i)
        blk.flatten = pending_flatten
        pending_flatten = False
        seen_dense |= kind is BinaryDense
        pos += 1
        if pos < len(items) and type(items[pos][1]) is MaxPool2D:
            if kind is not BinaryConv2D:
                raise err(*items[pos], "a batch norm after a dense layer")
            blk.pool = items[pos]
            pos += 1
        if pos >= len(items) or type(items[pos][1]) not in (BatchNorm, ShiftBatchNorm):
            if pos >= len(items):
                raise ValueError(f"export: {_describe(i, layer)} is not followed by a batch norm")
            raise err(*items[pos], "a BatchNorm or ShiftBatchNorm")
        bn_i, bn = items[pos]
        want_spatial = kind is BinaryConv2D
        F = layer.out_ch if want_spatial else layer.out_features
        if bn.spatial != want_spatial or bn.num_features != F:
            raise ValueError(f"export: {_describe(bn_i, bn)} does not match {_describe(i, layer)} "
                             f"(need num_features={F}, spatial={want_spatial})")
        blk.bn = bn
        pos += 1
        if pos < len(items) and type(items[pos][1]) is SignActivation:
            blk.sign = True
            pos += 1
        elif pos < len(items):
            raise err(*items[pos], "a SignActivation after the batch norm")
        blocks.append(blk)
    if pending_flatten or not blocks:
        raise ValueError("export: the model has no binary layer after its last Flatten")
    if len(blocks) < 2:
        raise ValueError("export: need at least one hidden block (binary layer, BN, sign) "
                         "before the output layer")
    last = blocks[-1]
    if last.sign or not isinstance(last.layer, BinaryDense):
        raise ValueError(f"export: the model must end with BinaryDense -> batch norm (the "
                         f"scores), not {_describe(last.index, last.layer)}"
                         + (" -> sign" if last.sign else ""))
    for blk in blocks[:-1]:
        if not blk.sign:
            raise ValueError(f"export: {_describe(blk.index, blk.layer)}: every block but the "
                             "last needs a SignActivation")
    return blocks


def _conv_geometry(blocks, input_shape):
    """Walk the blocks from a (C, H, W) input; returns per-block (in_shape, conv_shape,
    out_shape) or raises ValueError."""
    shapes = []
    shape = tuple(int(v) for v in input_shape)
    for blk in blocks:
        layer = blk.layer
        if isinstance(layer, BinaryConv2D):
            if len(shape) != 3 or shape[0] != layer.in_ch:
                raise ValueError(f"export: input shape {shape} does not fit "
                                 f"{_describe(blk.index, layer)}")
            C, H, W = shape
            kh, kw = layer.kernel
            Ho = conv_output_size(H, kh, layer.stride, layer.padding)
            Wo = conv_output_size(W, kw, layer.stride, layer.padding)
            if Ho < 1 or Wo < 1:
                raise ValueError(f"export: input {shape} too small for {_describe(blk.index, layer)}")
            conv = (layer.out_ch, Ho, Wo)
            out = conv
            if blk.pool is not None:
                mp = blk.pool[1]
                Hp = conv_output_size(Ho, mp.kernel, mp.stride, 0)
                Wp = conv_output_size(Wo, mp.kernel, mp.stride, 0)
                if Hp < 1 or Wp < 1:
                    raise ValueError(f"export: {_describe(*blk.pool)} larger than its input {conv}")
                out = (layer.out_ch, Hp, Wp)
            shapes.append((shape, conv, out))
            shape = out
        else:
            k = int(np.prod(shape))
            if k != layer.in_features:
                raise ValueError(f"export: {int(np.prod(shape))} features reach "
                                 f"{_describe(blk.index, layer)} (input shape {input_shape})")
            shapes.append(((k,), (layer.out_features,), (layer.out_features,)))
            shape = (layer.out_features,)
    return shapes


def _exact_geometry(blocks, shapes):
    """True when no convolution or pooling drops a row or column (floor mode)."""
    for blk, (in_shape, conv, _) in zip(blocks, shapes):
        if isinstance(blk.layer, BinaryConv2D):
            kh, kw = blk.layer.kernel
            p, st = blk.layer.padding, blk.layer.stride
            if (in_shape[1] + 2 * p - kh) % st or (in_shape[2] + 2 * p - kw) % st:
                return False
            if blk.pool is not None:
                mp = blk.pool[1]
                if (conv[1] - mp.kernel) % mp.stride or (conv[2] - mp.kernel) % mp.stride:
                    return False
    return True


def _infer_input_shape(blocks):
    """(K,) for an MLP; for a ConvNet the smallest square (C, S, S) whose flattened
    features fit the first dense layer, preferring sizes no layer crops (several sizes
    can fit because of floor-mode pooling: pass ``input_shape`` to be sure)."""
    first = blocks[0].layer
    if isinstance(first, BinaryDense):
        return (first.in_features,)
    fits = []
    for s in range(1, 1025):
        try:
            shapes = _conv_geometry(blocks, (first.in_ch, s, s))
        except ValueError:
            if fits:
                break
            continue
        fits.append((not _exact_geometry(blocks, shapes), s))
    if not fits:
        raise ValueError("export: cannot infer the (square) input size of the ConvNet; "
                         "pass input_shape=(C, H, W)")
    s = min(fits)[1]
    return (first.in_ch, s, s)


# ---------------------------------------------------------------------------
# building the arrays
# ---------------------------------------------------------------------------

def _make_post(bn, bias, spatial, to_float):
    """z (R, F) int64 -> BN(to_float(z) + bias) as (R, F), the float model's ops
    (``bn`` a BatchNorm / ShiftBatchNorm layer, evaluated by :func:`bn_eval`)."""
    def post(z):
        v = to_float(z)
        R, F = v.shape
        if spatial:
            v = v.reshape(R, F, 1, 1)
            if bias is not None:
                v = v + bias.reshape(1, F, 1, 1)
        elif bias is not None:
            v = v + bias
        return bn_eval_layer(bn, v).reshape(R, F)
    return post


def _weights_pm1(layer):
    """sign(w) as float32 +-1: dense (K, F), conv (F, C, KH, KW)."""
    return sign(layer.params["w"])


def _pack_weights(wb, conv):
    """+-1 weights -> (F, ceil(K/64)) uint64 (dense: columns; conv: flattened filters)."""
    if conv:
        return kernels.pack(np.ascontiguousarray(wb.reshape(wb.shape[0], -1)))
    return kernels.pack_columns(wb)


def _negate_outputs(wb, flip, conv):
    if not flip.any():
        return wb
    s = np.where(flip, np.float32(-1), np.float32(1)).astype(wb.dtype)
    return wb * (s.reshape(-1, 1, 1, 1) if conv else s[None, :])


def build(model, first_layer="float", input_shape=None):
    """Fold a trained Sequential: ``(header, arrays)`` of a packed model (see
    :mod:`minibnn.packed`), without the ``arrays`` table and the checksum (added when the
    model is built or saved).  ``ValueError`` naming the layer for anything unsupported."""
    if first_layer not in FIRST_LAYER_MODES:
        raise ValueError(f"first_layer must be one of {FIRST_LAYER_MODES}, got {first_layer!r}")
    blocks = _parse(model)
    if input_shape is None:
        input_shape = _infer_input_shape(blocks)
    input_shape = tuple(int(v) for v in input_shape)
    if isinstance(blocks[0].layer, BinaryDense):
        if int(np.prod(input_shape)) != blocks[0].layer.in_features:
            raise ValueError(f"export: input shape {input_shape} has {int(np.prod(input_shape))} "
                             f"values, the first layer expects {blocks[0].layer.in_features}")
        geo = _conv_geometry(blocks, (blocks[0].layer.in_features,))
    else:
        geo = _conv_geometry(blocks, input_shape)

    ops, arrays = [], {}
    for i, (blk, (in_shape, conv_shape, out_shape)) in enumerate(zip(blocks, geo)):
        layer, bn = blk.layer, blk.bn
        conv = isinstance(layer, BinaryConv2D)
        role = "first" if i == 0 else ("last" if i == len(blocks) - 1 else "hidden")
        bias = layer.params.get("b")
        if conv:
            kh, kw = layer.kernel
            K, F = layer.in_ch * kh * kw, layer.out_ch
        else:
            K, F = layer.in_features, layer.out_features
        op = {"kind": "conv" if conv else "dense", "role": role,
              "input": "bits" if i else ("real" if first_layer == "float" else "bitplane"),
              "K": K, "F": F, "in_shape": list(in_shape), "conv_shape": list(conv_shape),
              "out_shape": list(out_shape), "flatten": bool(blk.flatten),
              "bias": bias is not None,
              "bn": {"class": type(bn).__name__, "num_features": bn.num_features,
                     "spatial": bn.spatial, "momentum": bn.momentum, "eps": bn.eps},
              "pool": None, "C": None, "kernel": None, "stride": None, "padding": None}
        if conv:
            op.update(C=layer.in_ch, kernel=[kh, kw], stride=layer.stride, padding=layer.padding)
        if blk.pool is not None:
            mp = blk.pool[1]
            op["pool"] = {"kernel": mp.kernel, "stride": mp.stride}
        name = f"op{i}"
        wb = _weights_pm1(layer)
        float_op = op["input"] == "real" or role == "last"
        op["threshold"] = not float_op
        if float_op:
            arrays[f"{name}.weights"] = _pack_weights(wb, conv)
            if bias is not None:
                arrays[f"{name}.bias"] = np.array(bias)
            for key in BN_KEYS:
                src = bn.params if key in bn.params else bn.buffers
                arrays[f"{name}.bn.{key}"] = np.array(src[key])
        else:
            dtype = sum_dtype(bias)
            if op["input"] == "bitplane":
                lo, hi = -255 * K - 1, 255 * K + 1
                to_float = lambda z, d=dtype: (z.astype(np.float64) / 255.0).astype(d)  # noqa: E731
            else:
                lo, hi = -K - 1, K + 1
                to_float = lambda z, d=dtype: z.astype(d)  # noqa: E731
            post = _make_post(bn, bias, conv, to_float)
            t, flip = fold_thresholds(post, lo, hi, F,
                                      what=f"export: {_describe(blk.index, layer)} + its batch norm")
            arrays[f"{name}.weights"] = _pack_weights(_negate_outputs(wb, flip, conv), conv)
            arrays[f"{name}.thresholds"] = t
            arrays[f"{name}.flip"] = flip.astype(np.uint8)
        ops.append(op)
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "first_layer": first_layer, "input_shape": list(input_shape),
              "preprocessing": PREPROCESSING, "n_classes": ops[-1]["F"],
              "architecture": ops, "source_architecture": model.architecture()}
    return header, arrays
