"""A larq-like summary of a BNN: per layer output shape, parameters, bits per weight,
memory packed vs float32, binary vs float multiply-accumulates.

Works on a trained :class:`minibnn.model.Sequential` (a ``.npz`` from ``Sequential.save``,
folded with the ``"float"`` first layer) or on a packed ``.bnn`` model
(:mod:`minibnn.packed`); both go through :class:`~minibnn.packed.PackedModel`, whose
architecture lists the blocks ``binary layer -> [max-pool] -> BN -> [sign]``.

Counting rules (per image; shapes per sample):

* **params**: binary layer ``K * F`` weights (+ ``F`` bias); BN ``4 * F`` (gamma, beta,
  running mean and variance, as larq counts them); Flatten, MaxPool2D, Sign: 0.
* **bits/w**: 1 for binary weights, 32 for float parameters.
* **packed bytes**: what the ``.bnn`` stores (uncompressed): binary weights as
  ``F * ceil(K/64)`` uint64 words (so the padding of the last word counts), a folded BN as
  an int32 threshold + a uint8 flip per neuron (``5 F`` bytes), a float BN (first layer in
  float mode, last layer) as its four float32 vectors (``16 F``), a float bias ``4 F``
  (a bias folded into a threshold costs nothing).
* **float32 bytes**: every parameter as float32 (``4 * params``).
* **MACs**: ``K * F`` for a dense layer, ``K * F * H' * W'`` for a convolution (before
  pooling).  Binary MACs when both operands are bits; the first layer's are float MACs
  in float mode and ``8 x`` binary MACs in bit-plane mode (one per bit plane).  BN,
  pooling and signs are not counted.

Totals: params, packed and float32 bytes, the compression ratio float32 / packed, MACs.
"""

import json
import os

import numpy as np

from .kernels.bitpack import n_words

__all__ = ["summarize", "format_summary", "summary", "load_any"]


def load_any(path, backend=None):
    """A ``.bnn`` file -> :class:`~minibnn.packed.PackedModel`; anything else is read as a
    ``Sequential.save`` ``.npz`` -> ``Sequential``."""
    from .model import Sequential
    from .packed import FORMAT_NAME, PackedModel

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            is_packed = "header" in z.files and FORMAT_NAME in str(z["header"])
    except Exception as exc:
        raise ValueError(f"{path}: not a readable model file ({type(exc).__name__}: {exc})") from exc
    if is_packed:
        return PackedModel.load(path, backend=backend)
    return Sequential.load(path)


def _row(layer, shape, params=0, bits="", packed=0, float32=0, bmacs=0, fmacs=0):
    return {"layer": layer, "output": [int(v) for v in shape], "params": int(params),
            "bits_per_weight": bits, "packed_bytes": int(packed), "float32_bytes": int(float32),
            "binary_macs": int(bmacs), "float_macs": int(fmacs)}


def summarize(model, input_shape=None):
    """Summary of ``model`` (Sequential, PackedModel, or a path to a .npz / .bnn file).

    Returns ``{"rows": [...], "totals": {...}, "first_layer": str, "input_shape": list}``;
    each row has ``layer, output, params, bits_per_weight, packed_bytes, float32_bytes,
    binary_macs, float_macs``; totals add ``compression`` (float32 / packed bytes).
    """
    from .packed import PackedModel

    if isinstance(model, (str, os.PathLike)):
        model = load_any(model)
    if not isinstance(model, PackedModel):
        model = PackedModel.from_model(model, first_layer="float", input_shape=input_shape)
    rows = []
    for op in model.header["architecture"]:
        K, F = op["K"], op["F"]
        conv = op["kind"] == "conv"
        if op["flatten"]:
            rows.append(_row("Flatten", [K]))
        n_w = K * F
        positions = int(np.prod(op["conv_shape"][1:])) if conv else 1
        macs = K * F * positions
        bias = F if op["bias"] else 0
        if op["input"] == "real":
            note, bm, fm = " (real input)", 0, macs
        elif op["input"] == "bitplane":
            note, bm, fm = " (8 bit-planes)", 8 * macs, 0
        else:
            note, bm, fm = "", macs, 0
        name = "BinaryConv2D" if conv else "BinaryDense"
        if conv:
            kh, kw = op["kernel"]
            name += f" {op['C']}->{F} {kh}x{kw}/{op['stride']} pad {op['padding']}"
        else:
            name += f" {K}->{F}"
        packed = F * n_words(K) * 8 + (4 * bias if not op["threshold"] else 0)
        rows.append(_row(name + note, op["conv_shape"], n_w + bias, "1" if not bias else "1 (+32 bias)",
                         packed, 4 * (n_w + bias), bm, fm))
        if op["pool"] is not None:
            rows.append(_row(f"MaxPool2D {op['pool']['kernel']}/{op['pool']['stride']}",
                             op["out_shape"]))
        bn = op["bn"]["class"]
        if op["threshold"]:
            rows.append(_row(f"{bn} -> int32 threshold", op["out_shape"], 4 * F, "32", 5 * F, 16 * F))
        else:
            rows.append(_row(bn, op["out_shape"], 4 * F, "32", 16 * F, 16 * F))
        if op["role"] != "last":
            rows.append(_row("Sign", op["out_shape"]))
    totals = {k: int(sum(r[k] for r in rows))
              for k in ("params", "packed_bytes", "float32_bytes", "binary_macs", "float_macs")}
    totals["compression"] = totals["float32_bytes"] / totals["packed_bytes"]
    return {"rows": rows, "totals": totals, "first_layer": model.first_layer,
            "input_shape": list(model.input_shape)}


def _human(n):
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def _count(n):
    for unit, div in (("G", 10 ** 9), ("M", 10 ** 6), ("k", 10 ** 3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n) if n else "0"


def format_summary(info):
    """The :func:`summarize` dict as a text table."""
    head = ("#", "layer", "output", "params", "bits/w", "packed", "float32", "binary MACs",
            "float MACs")
    lines = [head]
    for i, r in enumerate(info["rows"]):
        lines.append((str(i), r["layer"], " x ".join(map(str, r["output"])),
                      str(r["params"]) if r["params"] else "0", r["bits_per_weight"] or "-",
                      _human(r["packed_bytes"]) if r["packed_bytes"] else "-",
                      _human(r["float32_bytes"]) if r["float32_bytes"] else "-",
                      _count(r["binary_macs"]) if r["binary_macs"] else "-",
                      _count(r["float_macs"]) if r["float_macs"] else "-"))
    t = info["totals"]
    lines.append(("", "total", "", str(t["params"]), "", _human(t["packed_bytes"]),
                  _human(t["float32_bytes"]), _count(t["binary_macs"]), _count(t["float_macs"])))
    widths = [max(len(row[j]) for row in lines) for j in range(len(head))]
    left = {1, 2}

    def fmt(row):
        return "  ".join(c.ljust(w) if j in left else c.rjust(w)
                         for j, (c, w) in enumerate(zip(row, widths))).rstrip()

    sep = "-" * len(fmt(head))
    out = [f"input {' x '.join(map(str, info['input_shape']))}, first layer: "
           f"{info['first_layer']}", fmt(head), sep]
    out += [fmt(r) for r in lines[1:-1]]
    out += [sep, fmt(lines[-1]),
            f"compression (float32 / packed): {t['compression']:.2f}x"]
    return "\n".join(out)


def summary(model, input_shape=None, as_json=False):
    """Text table (or JSON with ``as_json``) of :func:`summarize`."""
    info = summarize(model, input_shape=input_shape)
    return json.dumps(info, indent=1) if as_json else format_summary(info)
