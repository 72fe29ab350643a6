"""Bad inputs to the kernels and to packed models / ``.bnn`` files (ids ``kern-``,
``packed-``).

Python rows raise with a message naming the input and the problem; CLI rows run
``python -m minibnn eval|summary`` on a damaged ``.bnn`` (see ``bad_inputs/__init__.py``).
Numba does not bounds-check, so every one of these must be stopped at the Python
boundary: never a segfault, a hang or a silently wrong answer.
"""

import io
import json

import numpy as np

from bad_inputs import Case, CliCase

from minibnn import kernels
from minibnn import layers as L
from minibnn.model import Sequential

U64 = np.uint64
ALL_ONES = 2 ** 64 - 1


def _words(rows, w, value=0):
    return np.full((rows, w), value, U64)


def _gemm(a=None, b=None, k=10, **kw):
    return lambda _: kernels.xnor_gemm(_words(1, 1) if a is None else a,
                                       _words(2, 1) if b is None else b, k, **kw)


def _conv(x_shape=(1, 2, 5, 5), w_shape=(3, 2, 3, 3), nan=False, **kw):
    def call(_):
        x = np.ones(x_shape)
        if nan:
            x.flat[3] = np.nan
        return kernels.binary_conv2d(x, np.ones(w_shape), **kw)
    return call


# ---------------------------------------------------------------------------
# .bnn files: a good one (built once per process), then damaged copies
# ---------------------------------------------------------------------------

_GOOD = {}


def _model(conv):
    if conv:
        return Sequential([L.BinaryConv2D(1, 2, 3, padding=1, binary_input=False, rng=0),
                           L.BatchNorm(2, spatial=True), L.SignActivation(), L.Flatten(),
                           L.BinaryDense(32, 70, rng=1), L.BatchNorm(70), L.SignActivation(),
                           L.BinaryDense(70, 3, rng=2), L.BatchNorm(3)])
    # K = 70 in the hidden and last layers: their packed weights have padding bits
    return Sequential([L.Flatten(), L.BinaryDense(6, 70, binary_input=False, rng=0),
                       L.BatchNorm(70), L.SignActivation(), L.BinaryDense(70, 70, rng=1),
                       L.BatchNorm(70), L.SignActivation(), L.BinaryDense(70, 3, rng=2),
                       L.BatchNorm(3)])


def _good_bytes(tmp_path, conv=False):
    if conv not in _GOOD:
        from minibnn.packed import export
        p = tmp_path / ("good_conv.bnn" if conv else "good.bnn")
        export(_model(conv), p, input_shape=(1, 4, 4) if conv else None)
        _GOOD[conv] = p.read_bytes()
    return _GOOD[conv]


def _good(tmp_path, name="m.bnn", conv=False):
    p = tmp_path / name
    p.write_bytes(_good_bytes(tmp_path, conv))
    return p


def _edited(tmp_path, name, edit=None, header=None, conv=False, reseal=True):
    """A good file with ``edit(arrays)`` / ``header(h)`` applied; ``reseal`` recomputes the
    checksum and the array table so that the deeper checks are the ones that fire."""
    from minibnn.packed import fileformat
    with np.load(io.BytesIO(_good_bytes(tmp_path, conv)), allow_pickle=False) as z:
        files = {k: z[k] for k in z.files}
    h = json.loads(str(files.pop("header")))
    if edit:
        edit(files)
    if header:
        header(h)
    if reseal:
        h["sha256"] = fileformat.digest(files)
        h["arrays"] = fileformat.array_table(files)
    buf = io.BytesIO()
    np.savez_compressed(buf, header=np.array(json.dumps(h)), **files)
    p = tmp_path / name
    p.write_bytes(buf.getvalue())
    return p


def _load(path_fn):
    def call(tmp_path):
        from minibnn.packed import PackedModel
        return PackedModel.load(path_fn(tmp_path))
    return call


def _set(key, value, op=None, sub=None):
    def header(h):
        d = h if op is None else h["architecture"][op]
        if sub is not None:
            d = d[sub]
        d[key] = value
    return header


def _set_padding_bits(files):
    w = files["op1.weights"].copy()
    w[0, -1] |= U64(1) << U64(63)            # K = 70: bits 6..63 of the last word are padding
    files["op1.weights"] = w


def _run(x, **kw):
    def call(tmp_path):
        from minibnn.packed import PackedModel
        m = PackedModel.load(_good(tmp_path))
        return m.predict(x, **kw)
    return call


def _export(tmp_path, **kw):
    from minibnn.packed import export
    return export(_model(False), tmp_path / "x.bnn", **kw)


def _nan_input():
    x = np.zeros((2, 6), np.float32)
    x[1, 2] = np.nan
    return x


def _cli(cmd, make):
    def argv(tmp_path):
        p = make(tmp_path)
        return [cmd, p, "--dataset", "sample"] if cmd == "eval" else [cmd, p]
    return argv


def _truncated(tmp_path):
    p = tmp_path / "cut.bnn"
    p.write_bytes(_good_bytes(tmp_path)[:200])
    return p


def _text_file(tmp_path):
    p = tmp_path / "magic.bnn"
    p.write_bytes(b"BNN1 this is not a zip archive\n")
    return p


def _npy_file(tmp_path):
    p = tmp_path / "npy.bnn"
    with open(p, "wb") as f:
        np.save(f, np.zeros(3))
    return p


def _nohdr(tmp_path):
    buf = io.BytesIO()
    np.savez_compressed(buf, w=np.zeros(2))
    p = tmp_path / "nohdr.bnn"
    p.write_bytes(buf.getvalue())
    return p


def _bad_json(tmp_path):
    buf = io.BytesIO()
    np.savez_compressed(buf, header=np.array("{not json"), w=np.zeros(2))
    p = tmp_path / "json.bnn"
    p.write_bytes(buf.getvalue())
    return p


def _checksum(tmp_path):
    def bump(files):
        files["op1.thresholds"] = files["op1.thresholds"] + 1
    return _edited(tmp_path, "sum.bnn", bump, reseal=False)


ROWS = [
    # --- packing -----------------------------------------------------------
    Case("kern-pack-bool", lambda _: kernels.pack(np.array([True, False])), TypeError,
         ["x", "real", "bool"]),
    Case("kern-pack-nan", lambda _: kernels.pack(np.array([[1.0, np.nan]])), ValueError,
         ["NaN", "no sign"]),
    Case("kern-pack-k0", lambda _: kernels.pack(np.zeros((3, 0))), ValueError, ["K = 0"]),
    Case("kern-pack-scalar", lambda _: kernels.pack(np.float64(1.0)), ValueError,
         ["at least one axis"]),
    Case("kern-unpack-dtype", lambda _: kernels.unpack(np.zeros((2, 1), np.int64), 10), TypeError,
         ["words", "uint64"]),
    Case("kern-sign-complex", lambda _: kernels.sign_f32(np.ones(3, complex)), TypeError,
         ["real", "complex"]),
    # --- xnor_gemm: padding bits and k (issue 11.1) --------------------------
    Case("kern-xnor-a-padding-bits", _gemm(a=_words(1, 1, ALL_ONES), b=_words(1, 1)), ValueError,
         ["a_words", "padding bits"]),
    Case("kern-xnor-b-padding-bits", _gemm(b=_words(3, 1, 1 << 10)), ValueError,
         ["b_words", "padding bits", "row 0"]),
    Case("kern-prepare-padding-bits",
         lambda _: kernels.prepare_weights(_words(2, 2, ALL_ONES), 100), ValueError,
         ["b_words", "padding bits"]),
    Case("kern-bitplane-gemm-padding-bits",
         lambda _: kernels.bitplane_gemm(kernels.pack_bitplanes(np.zeros((2, 70), np.uint8)),
                                         _words(3, 2, ALL_ONES), 70), ValueError,
         ["b_words", "padding bits"]),
    Case("kern-xnor-k-too-big", _gemm(k=2 ** 31), ValueError, ["k", "2147483647"]),
    Case("kern-xnor-k-negative", _gemm(k=-3), ValueError, ["k", ">= 1"]),
    Case("kern-xnor-k-zero", _gemm(k=0), ValueError, ["k", ">= 1"]),
    Case("kern-xnor-k-float", _gemm(k=10.0), TypeError, ["k", "integer"]),
    Case("kern-xnor-k-bool", _gemm(k=True), TypeError, ["k", "integer"]),
    Case("kern-xnor-k-more-than-words", _gemm(k=65), ValueError, ["a_words", "k=65", "words"]),
    Case("kern-xnor-k-fewer-than-words", _gemm(a=_words(1, 2), b=_words(2, 2), k=64), ValueError,
         ["a_words", "2 words", "64*(W-1)"]),
    Case("kern-xnor-dtype", _gemm(a=np.zeros((1, 1), np.int64)), TypeError, ["a_words", "uint64"]),
    Case("kern-xnor-ndim", _gemm(a=np.zeros(1, U64)), ValueError, ["a_words", "2-D"]),
    Case("kern-xnor-not-array", _gemm(a=[[0]]), TypeError, ["a_words", "numpy array"]),
    Case("kern-xnor-noncontiguous", _gemm(a=_words(2, 2)[:, ::2], b=_words(2, 1)), ValueError,
         ["a_words", "C-contiguous"]),
    Case("kern-xnor-words-differ", _gemm(b=_words(2, 2)), ValueError, ["b_words", "a_words"]),
    Case("kern-xnor-out-dtype", _gemm(out=np.zeros((1, 2), np.int64)), TypeError,
         ["out", "int32"]),
    Case("kern-xnor-out-shape", _gemm(out=np.zeros((2, 1), np.int32)), ValueError,
         ["out", "shape"]),
    Case("kern-xnor-backend-unknown", _gemm(backend="gpu"), ValueError,
         ["unknown backend", "gpu"]),
    Case("kern-prepared-hand-made",
         _gemm(b=kernels.PreparedWeights("cpu", np.zeros((1, 1, 8), U64), 1000, 10)),
         ValueError, ["prepared weights", "n=1000"]),
    Case("kern-prepared-other-backend",
         lambda _: kernels.xnor_gemm(_words(1, 1), kernels.prepare_weights(_words(2, 1), 10,
                                                                           backend="cpu"),
                                     10, backend="reference"), ValueError,
         ["prepared for backend", "cpu"]),
    # --- binary_conv2d geometry (issue 11) -----------------------------------
    Case("kern-conv-huge-padding", _conv(x_shape=(1, 1, 5, 5), w_shape=(1, 1, 3, 3),
                                         padding=10 ** 9), ValueError,
         ["padding=1000000000", "padded input"]),
    Case("kern-conv-stride-zero", _conv(stride=0), ValueError, ["stride", ">= 1"]),
    Case("kern-conv-padding-negative", _conv(padding=-1), ValueError, ["padding", ">= 0"]),
    Case("kern-conv-stride-float", _conv(stride=1.5), TypeError, ["stride", "integer"]),
    Case("kern-conv-kernel-larger", _conv(x_shape=(1, 2, 2, 2)), ValueError,
         ["kernel 3x3", "larger than the padded input"]),
    Case("kern-conv-nan", _conv(nan=True), ValueError, ["x", "NaN"]),
    Case("kern-conv-zero-channels", _conv(x_shape=(1, 0, 5, 5), w_shape=(3, 0, 3, 3)),
         ValueError, ["zero-size"]),
    Case("kern-conv-channels-differ", _conv(w_shape=(3, 4, 3, 3)), ValueError, ["channels"]),
    Case("kern-conv-ndim", _conv(x_shape=(2, 5, 5)), ValueError, ["x", "4-D"]),
    Case("kern-matmul-inner", lambda _: kernels.binary_matmul(np.ones((2, 3)), np.ones((4, 2))),
         ValueError, ["inner"]),
    Case("kern-matmul-empty-k", lambda _: kernels.binary_matmul(np.ones((2, 0)), np.ones((0, 2))),
         ValueError, ["K = 0"]),
    # --- packed-inference kernels --------------------------------------------
    Case("kern-threshold-float-sums",
         lambda _: kernels.threshold_pack(np.zeros((2, 3)), np.zeros(3, np.int32)), TypeError,
         ["s", "integer"]),
    Case("kern-threshold-int64-overflow",
         lambda _: kernels.threshold_pack(np.full((1, 3), 2 ** 40), np.zeros(3, np.int32)),
         ValueError, ["s", "int32"]),
    Case("kern-threshold-shape",
         lambda _: kernels.threshold_pack(np.zeros((2, 3), np.int32), np.zeros(4, np.int32)),
         ValueError, ["t", "shape"]),
    Case("kern-bitplanes-dtype", lambda _: kernels.pack_bitplanes(np.zeros((2, 3), np.int16)),
         TypeError, ["uint8"]),
    Case("kern-bitplane-gemm-k-too-big",
         lambda _: kernels.bitplane_gemm(np.zeros((8, 1, 131587), U64), _words(1, 131587),
                                         64 * 131587), ValueError, ["255*k", "int32"]),
    Case("kern-bitplane-gemm-planes", lambda _: kernels.bitplane_gemm(
        np.zeros((4, 1, 1), U64), _words(1, 1), 10), ValueError, ["planes", "8 bit planes"]),
    Case("kern-maxpool-window", lambda _: kernels.maxpool2d(np.zeros((1, 1, 2, 2), np.int32), 3),
         ValueError, ["window 3x3", "larger"]),
    Case("kern-maxpool-stride-zero",
         lambda _: kernels.maxpool2d(np.zeros((1, 1, 4, 4), np.int32), 2, 0), ValueError,
         ["stride", ">= 1"]),
    # --- .bnn files -----------------------------------------------------------
    Case("packed-truncated", _load(_truncated), ValueError, ["cut.bnn"]),
    Case("packed-wrong-magic", _load(_text_file), ValueError, ["magic.bnn", "not a readable"]),
    Case("packed-npy-not-npz", _load(_npy_file), ValueError, ["npy.bnn", "not an .npz"]),
    Case("packed-bad-json-header", _load(_bad_json), ValueError,
         ["json.bnn", "header is not valid JSON"]),
    Case("packed-no-header", _load(_nohdr), ValueError, ["nohdr.bnn", "no 'header'"]),
    Case("packed-checksum-mismatch", _load(_checksum), ValueError, ["sum.bnn", "checksum mismatch"]),
    Case("packed-format-version", _load(lambda t: _edited(t, "v2.bnn", header=_set(
        "format_version", 2))), ValueError, ["v2.bnn", "format_version 2"]),
    Case("packed-format-name", _load(lambda t: _edited(t, "fmt.bnn", header=_set(
        "format", "onnx"))), ValueError, ["fmt.bnn", "format 'onnx'"]),
    Case("packed-array-shape", _load(lambda t: _edited(t, "shape.bnn", edit=lambda f: f.update(
        {"op1.thresholds": f["op1.thresholds"][:5]}))), ValueError,
         ["shape.bnn", "op1.thresholds", "expected"]),
    Case("packed-array-dtype", _load(lambda t: _edited(t, "dtype.bnn", edit=lambda f: f.update(
        {"op1.weights": f["op1.weights"].astype(np.int64)}))), ValueError,
         ["dtype.bnn", "op1.weights", "int64"]),
    Case("packed-array-missing", _load(lambda t: _edited(t, "missing.bnn", edit=lambda f: f.pop(
        "op1.flip"))), ValueError, ["missing.bnn", "missing arrays", "op1.flip"]),
    Case("packed-weights-padding-bits", _load(lambda t: _edited(t, "pad.bnn", _set_padding_bits)),
         ValueError, ["pad.bnn", "op1.weights", "padding bits"]),
    Case("packed-flip-not-01", _load(lambda t: _edited(t, "flip.bnn", edit=lambda f: f.update(
        {"op1.flip": np.full_like(f["op1.flip"], 2)}))), ValueError,
         ["flip.bnn", "flip must be 0 or 1"]),
    Case("packed-bn-eps", _load(lambda t: _edited(t, "eps.bnn", header=_set("eps", -1.0, 2, "bn"))),
         ValueError, ["eps.bnn", "op 2", "eps"]),
    Case("packed-k-mismatch", _load(lambda t: _edited(t, "k.bnn", header=_set("K", 71, 1))),
         ValueError, ["k.bnn", "op 1", "K=71"]),
    Case("packed-input-shape-negative", _load(lambda t: _edited(
        t, "ishape.bnn", header=_set("input_shape", [-6]))), ValueError,
         ["ishape.bnn", "input_shape"]),
    Case("packed-conv-huge-padding", _load(lambda t: _edited(
        t, "hugepad.bnn", header=_set("padding", 10 ** 9, 0), conv=True)), ValueError,
         ["hugepad.bnn", "op 0", "padding=1000000000"]),
    Case("packed-conv-stride-zero", _load(lambda t: _edited(
        t, "stride.bnn", header=_set("stride", 0, 0), conv=True)), ValueError,
         ["stride.bnn", "op 0", "stride must be >= 1"]),
    # --- running a packed model -----------------------------------------------
    Case("packed-input-wrong-shape", _run(np.zeros((2, 7), np.float32)), ValueError,
         ["input has shape (2, 7)", "expects 6"]),
    Case("packed-input-nan", _run(_nan_input()), ValueError, ["x", "NaN"]),
    Case("packed-input-complex", _run(np.zeros((2, 6), complex)), TypeError, ["x", "real"]),
    Case("packed-batch-size-zero", _run(np.zeros((2, 6), np.float32), batch_size=0), ValueError,
         ["batch_size", ">= 1"]),
    Case("packed-first-layer-mode", lambda t: _export(t, first_layer="binary"), ValueError,
         ["first_layer", "binary"]),
    # --- the CLI on damaged files ---------------------------------------------
    CliCase("packed-cli-eval-padding-bits",
            _cli("eval", lambda t: _edited(t, "pad.bnn", _set_padding_bits)),
            ["pad.bnn", "padding bits"]),
    CliCase("packed-cli-summary-checksum", _cli("summary", _checksum),
            ["sum.bnn", "checksum mismatch"]),
]
