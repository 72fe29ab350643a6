"""The ``.bnn`` file: writing, reading, and every check on what comes out of a file.

Format
------
An ``.npz`` (``np.savez_compressed``, written atomically with
:func:`minibnn.fileio.atomic_write_bytes`, read with ``allow_pickle=False``):

* ``header``: 0-d str, JSON: ``format`` (``"minibnn-packed"``), ``format_version`` (1),
  ``first_layer``, ``input_shape``, ``preprocessing`` (``"2*x/255-1"``), ``n_classes``,
  ``architecture`` (a list of ops: kind, role, input, K, F, C, kernel, stride, padding,
  pool, in_shape, out_shape, conv_shape, flatten, bias, bn, threshold), ``arrays``
  (name -> dtype, shape), ``sha256`` (of every array's name, dtype, shape and bytes,
  sorted by name) and ``source_architecture`` (the Sequential's).
* per op ``i``: ``op{i}.weights`` uint64 ``(F, ceil(K/64))`` -- dense: column f of
  sign(w) packed along K; conv: filter f flattened in (C, KH, KW) order -- with the flips
  folded in (padding bits zero); ``op{i}.thresholds`` int32 ``(F,)`` and ``op{i}.flip``
  uint8 ``(F,)`` (0 or 1; 1 = the row was negated) for thresholded ops; ``op{i}.bias`` and
  ``op{i}.bn.{gamma,beta,running_mean,running_var}`` (float, ``(F,)``) for the float first
  layer and the last layer.

Anything wrong with a file -- truncated, not an archive, no or bad JSON header, wrong
format or version, checksum mismatch, an array table that does not match, a malformed
or inconsistent op, a missing/extra array, a wrong dtype or shape, nonzero padding bits
in the packed weights, a flip that is not 0/1, a batch norm with a bad ``eps`` -- raises
``ValueError`` whose message starts with the file name and says what is wrong.

References: the binary conventions (padding bits, bit order) are in
:mod:`minibnn.kernels.bitpack`.
"""

import hashlib
import io
import json
import numbers
import os

import numpy as np

from .. import checks, kernels
from ..fileio import atomic_write_bytes
from ..kernels import bitpack, geometry

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "PREPROCESSING", "FIRST_LAYER_MODES",
           "BN_CLASS_NAMES", "BN_KEYS", "digest", "array_table", "expected_arrays",
           "check_header", "check_arrays", "read", "write"]

FORMAT_NAME = "minibnn-packed"
FORMAT_VERSION = 1
PREPROCESSING = "2*x/255-1"
FIRST_LAYER_MODES = ("float", "bitplane")
#: the batch norm layers a file may name (their eval forward is in minibnn.functional)
BN_CLASS_NAMES = ("BatchNorm", "ShiftBatchNorm")
BN_KEYS = ("gamma", "beta", "running_mean", "running_var")


def digest(arrays):
    """sha256 hex of every array's name, dtype, shape and bytes, sorted by name."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(a.dtype.str.encode())
        h.update(repr(tuple(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def array_table(arrays):
    """name -> {"dtype", "shape"}, sorted by name (the header's ``arrays``)."""
    return {k: {"dtype": np.asarray(v).dtype.str, "shape": list(np.shape(v))}
            for k, v in sorted(arrays.items())}


def expected_arrays(op, i):
    """name -> (dtype code, shape) of the arrays op ``i`` must have ("f": any float >= 32 bit)."""
    F, K = op["F"], op["K"]
    name = f"op{i}"
    out = {f"{name}.weights": ("u8", (F, bitpack.n_words(K)))}
    if op["threshold"]:
        out[f"{name}.thresholds"] = ("i4", (F,))
        out[f"{name}.flip"] = ("u1", (F,))
    else:
        if op["bias"]:
            out[f"{name}.bias"] = ("f", (F,))
        for key in BN_KEYS:
            out[f"{name}.bn.{key}"] = ("f", (F,))
    return out


def check_header(header, src):
    """Validate a header's content (``ValueError`` naming ``src`` for anything malformed)."""
    try:
        _check_header_fields(header, src)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"{src}: malformed header ({type(exc).__name__}: {exc})") from None


def _positive_ints(v, n=None):
    return (isinstance(v, list) and (n is None or len(v) == n) and len(v) > 0
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 1 for i in v))


def _conv_out(op, H, W):
    """(conv_shape, out_shape) of a conv op from its (validated-here) geometry fields."""
    C = checks.check_int(op["C"], "C", minimum=1)
    if not _positive_ints(op["kernel"], 2):
        raise ValueError(f"kernel must be two positive integers, got {op['kernel']!r}")
    kh, kw = op["kernel"]
    stride = checks.check_int(op["stride"], "stride", minimum=1)
    padding = checks.check_int(op["padding"], "padding", minimum=0)
    Ho, Wo = geometry.check_conv_geometry(H, W, kh, kw, stride, padding, where="convolution")
    out = (op["F"], Ho, Wo)
    if op["pool"] is not None:
        pk = checks.check_int(op["pool"]["kernel"], "pool kernel", minimum=1)
        ps = checks.check_int(op["pool"]["stride"], "pool stride", minimum=1)
        Hp, Wp = geometry.check_conv_geometry(Ho, Wo, pk, pk, ps, 0, where="max-pool",
                                              what="window")
        out = (op["F"], Hp, Wp)
    return C, kh, kw, (op["F"], Ho, Wo), out


def _check_header_fields(header, src):
    def bad(msg):
        return ValueError(f"{src}: {msg}")

    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    if header.get("format") != FORMAT_NAME:
        raise bad(f"format {header.get('format')!r}, not {FORMAT_NAME!r}: not a minibnn packed model")
    if header.get("format_version") != FORMAT_VERSION:
        raise bad(f"format_version {header.get('format_version')!r}, this minibnn reads "
                  f"version {FORMAT_VERSION}")
    if header.get("first_layer") not in FIRST_LAYER_MODES:
        raise bad(f"unknown first_layer {header.get('first_layer')!r}")
    if header.get("preprocessing") != PREPROCESSING:
        raise bad(f"unknown preprocessing {header.get('preprocessing')!r}")
    if not _positive_ints(header.get("input_shape")):
        raise bad(f"input_shape must be a list of positive integers, got "
                  f"{header.get('input_shape')!r}")
    ops = header.get("architecture")
    if not isinstance(ops, list) or len(ops) < 2:
        raise bad("architecture must be a list of at least two ops")
    need = ("kind", "role", "input", "K", "F", "in_shape", "conv_shape", "out_shape", "flatten",
            "bias", "bn", "pool", "threshold")
    prev_out = tuple(header["input_shape"])
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or any(k not in op for k in need):
            raise bad(f"architecture op {i} is malformed")
        role = "first" if i == 0 else ("last" if i == len(ops) - 1 else "hidden")
        inp = "bits" if i else ("real" if header["first_layer"] == "float" else "bitplane")
        if op["kind"] not in ("dense", "conv") or op["role"] != role or op["input"] != inp:
            raise bad(f"architecture op {i}: unexpected kind/role/input")
        if op["threshold"] is not (role == "hidden" or inp == "bitplane"):
            raise bad(f"architecture op {i}: inconsistent threshold flag")
        for key in ("K", "F"):
            if not isinstance(op[key], int) or isinstance(op[key], bool) or op[key] < 1:
                raise bad(f"architecture op {i}: bad {key} {op[key]!r}")
        if op["K"] > bitpack.MAX_K or (inp == "bitplane" and op["K"] > kernels.MAX_BITPLANE_K):
            raise bad(f"architecture op {i}: K={op['K']} is too large for int32 sums")
        bn = op["bn"]
        if bn.get("class") not in BN_CLASS_NAMES:
            raise bad(f"architecture op {i}: unknown batch norm {bn.get('class')!r}")
        if bn.get("num_features") != op["F"] or bn.get("spatial") is not (op["kind"] == "conv"):
            raise bad(f"architecture op {i}: batch norm num_features/spatial do not match the op")
        eps = bn.get("eps")
        if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not 0 < eps < float("inf"):
            raise bad(f"architecture op {i}: batch norm eps must be a positive number, got {eps!r}")
        if op["kind"] == "conv":
            try:
                if not _positive_ints(op["in_shape"], 3):
                    raise ValueError(f"in_shape must be 3 positive integers, got {op['in_shape']!r}")
                _, H, W = op["in_shape"]
                C, kh, kw, conv, out = _conv_out(op, H, W)
            except (TypeError, ValueError, KeyError) as exc:
                raise bad(f"architecture op {i}: malformed convolution ({exc})") from None
            if (op["K"] != C * kh * kw or op["in_shape"][0] != C
                    or tuple(op["conv_shape"]) != conv or tuple(op["out_shape"]) != out):
                raise bad(f"architecture op {i}: inconsistent convolution shapes")
            if tuple(op["in_shape"]) != prev_out:
                raise bad(f"architecture op {i}: input shape {op['in_shape']} != {list(prev_out)}")
        else:
            if int(np.prod(prev_out)) != op["K"] or op["pool"] is not None or \
                    tuple(op["out_shape"]) != (op["F"],):
                raise bad(f"architecture op {i}: K={op['K']} but {int(np.prod(prev_out))} "
                          "features come in (or a bad dense op)")
        prev_out = tuple(op["out_shape"])
    if ops[-1]["kind"] != "dense" or header.get("n_classes") != ops[-1]["F"]:
        raise bad("the last op must be dense with n_classes outputs")


def check_arrays(header, arrays, src):
    """Validate the arrays against a checked header: names, dtypes, shapes, zero padding
    bits of the packed weights, flips in {0, 1} (``ValueError`` naming ``src``)."""
    ops = header["architecture"]
    expected = {}
    for i, op in enumerate(ops):
        expected.update(expected_arrays(op, i))
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ValueError(f"{src}: missing arrays {missing}, unexpected arrays {extra}")
    for name, (kind, shape) in expected.items():
        a = arrays[name]
        ok = (a.dtype.kind == "f" and a.dtype.itemsize >= 4) if kind == "f" else \
            a.dtype == np.dtype("<" + kind if kind != "u1" else "u1")
        if not ok or a.shape != shape:
            raise ValueError(f"{src}: array {name!r} is {a.dtype} {a.shape}, expected "
                             f"{kind} {shape}")
    for i, op in enumerate(ops):
        try:
            bitpack.check_padding_bits(arrays[f"op{i}.weights"], op["K"], f"op{i}.weights")
        except ValueError as exc:
            raise ValueError(f"{src}: {exc}") from None
        if op["threshold"] and np.any(arrays[f"op{i}.flip"] > 1):
            raise ValueError(f"{src}: op{i}.flip must be 0 or 1")


def read(path):
    """``(header, arrays)`` of a ``.bnn`` file, every check done (``ValueError`` naming the
    file and the problem; ``FileNotFoundError`` if it does not exist)."""
    path = os.fspath(path)
    header, arrays = _read_archive(path)
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        fmt = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"{path}: format {fmt!r}, not {FORMAT_NAME!r}: not a minibnn packed model")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {header.get('format_version')!r}, this "
                         f"minibnn reads version {FORMAT_VERSION}")
    if header.get("sha256") != digest(arrays):
        raise ValueError(f"{path}: checksum mismatch: the arrays are corrupted")
    if header.get("arrays") != array_table(arrays):
        raise ValueError(f"{path}: the array table in the header does not match the file")
    check_header(header, path)
    check_arrays(header, arrays, path)
    return header, arrays


def write(path, header, arrays):
    """Write a ``.bnn`` file atomically; the array table and the checksum are (re)computed.
    Returns ``os.fspath(path)``."""
    header = dict(header, arrays=array_table(arrays), sha256=digest(arrays))
    buf = io.BytesIO()
    np.savez_compressed(buf, header=np.array(json.dumps(header)), **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return os.fspath(path)


def _read_archive(path):
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: not a readable .bnn file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a .bnn file (a single .npy array, not an .npz archive)")
    try:
        with z:
            files = {k: z[k] for k in z.files}
    except Exception as exc:
        raise ValueError(f"{path}: corrupted or truncated .bnn file "
                         f"({type(exc).__name__}: {exc})") from exc
    if "header" not in files:
        raise ValueError(f"{path}: no 'header' entry: not a minibnn packed model")
    h = files.pop("header")
    if h.shape != () or h.dtype.kind != "U":
        raise ValueError(f"{path}: 'header' is not a JSON string")
    try:
        header = json.loads(str(h))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: header is not valid JSON ({exc})") from exc
    return header, files
