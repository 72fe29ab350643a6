"""Bad inputs to layers, functional ops, Sequential and its files (ids ``layer-``, ``fn-``,
``model-``).

Each row is a Python call that must raise with a message naming the input and the
problem (see ``bad_inputs/__init__.py``).
"""

import json

import numpy as np

from bad_inputs import Case

from minibnn import functional as F
from minibnn import layers as L
from minibnn import zoo
from minibnn.model import Sequential
from minibnn.quantize import ap2, sign, stochastic_sign


def _mlp():
    return Sequential([L.BinaryDense(4, 3, binary_input=False, rng=0), L.BatchNorm(3),
                       L.SignActivation(), L.BinaryDense(3, 2, rng=1), L.BatchNorm(2)])


def _x(*shape, value=None):
    x = np.ones(shape, np.float32)
    if value is not None:
        x.flat[1] = value
    return x


def _saved(tmp_path, **changes):
    """A good model file with entries replaced (None deletes), at tmp_path/bad.npz."""
    good = tmp_path / "good.npz"
    _mlp().save(good)
    with np.load(good, allow_pickle=False) as z:
        files = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            files.pop(k)
        else:
            files[k] = v
    bad = tmp_path / "bad.npz"
    np.savez(bad, **files)
    return bad


def _arch(*layers):
    return np.array(json.dumps([{"class": c, "config": cfg} for c, cfg in layers]))


def _load(tmp_path, **changes):
    return Sequential.load(_saved(tmp_path, **changes))


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _backward_before_forward(layer, shape):
    return layer.backward(np.zeros(shape))


ROWS = [
    # -- layer constructors ---------------------------------------------------
    Case("layer-dense-zero-in", lambda t: L.BinaryDense(0, 3), ValueError,
         ["in_features", ">= 1"]),
    Case("layer-dense-float-out", lambda t: L.Dense(3, 2.5), ValueError,
         ["out_features", "integer"]),
    Case("layer-dense-bool-in", lambda t: L.BinaryDense(True, 3), ValueError, ["in_features"]),
    Case("layer-binary-dense-bad-backend", lambda t: L.BinaryDense(3, 2, backend="gpu"),
         ValueError, ["backend", "gpu", "float", "cpu"]),
    Case("layer-binary-dense-H-zero", lambda t: L.BinaryDense(3, 2, H=0), ValueError,
         ["H", "> 0"]),
    Case("layer-binary-dense-H-nan", lambda t: L.BinaryDense(3, 2, H=float("nan")), ValueError,
         ["H", "finite"]),
    Case("layer-conv-kernel-string", lambda t: L.BinaryConv2D(3, 4, "3"), TypeError,
         ["kernel", "pair of ints"]),
    Case("layer-conv-kernel-float-pair", lambda t: L.Conv2D(3, 4, (3, 2.5)), TypeError,
         ["kernel", "pair of ints"]),
    Case("layer-conv-negative-padding", lambda t: L.BinaryConv2D(3, 4, 3, padding=-1),
         ValueError, ["padding", ">= 0"]),
    Case("layer-conv-zero-stride", lambda t: L.Conv2D(3, 4, 3, stride=0), ValueError,
         ["stride", ">= 1"]),
    Case("layer-conv-bad-backend", lambda t: L.BinaryConv2D(3, 4, 3, backend=3), ValueError,
         ["backend"]),
    Case("layer-bn-eps-zero", lambda t: L.BatchNorm(3, eps=0), ValueError, ["eps", "> 0"]),
    Case("layer-bn-momentum-above-one", lambda t: L.BatchNorm(3, momentum=1.5), ValueError,
         ["momentum", "<= 1"]),
    Case("layer-bn-momentum-string", lambda t: L.BatchNorm(3, momentum="0.1"), TypeError,
         ["momentum", "real number"]),
    Case("layer-dropout-p-one", lambda t: L.Dropout(1.0), ValueError, ["Dropout p", "< 1"]),
    Case("layer-dropout-p-negative", lambda t: L.Dropout(-0.1), ValueError, ["Dropout p", ">= 0"]),
    Case("layer-dropout-p-nan", lambda t: L.Dropout(float("nan")), ValueError,
         ["Dropout p", "finite"]),
    Case("layer-maxpool-zero-kernel", lambda t: L.MaxPool2D(0), ValueError, ["kernel", ">= 1"]),
    Case("layer-from-config-unknown", lambda t: L.layer_from_config("Nope", {}), ValueError,
         ["unknown layer class", "Nope"]),
    Case("layer-from-config-bad-kwarg",
         lambda t: L.layer_from_config("Dense", {"in_features": 2, "out_features": 2, "x": 1}),
         ValueError, ["bad config for Dense"]),
    Case("layer-from-config-not-dict", lambda t: L.layer_from_config("Flatten", [1]),
         ValueError, ["config of Flatten must be a dict"]),
    # -- layer inputs -----------------------------------------------------------
    Case("layer-dense-wrong-width", lambda t: L.BinaryDense(10, 4, rng=0).forward(_x(2, 9)),
         ValueError, ["BinaryDense", "(N, 10)", "(2, 9)"]),
    Case("layer-conv-wrong-channels", lambda t: L.BinaryConv2D(3, 4, 3, rng=0).forward(_x(2, 2, 5, 5)),
         ValueError, ["BinaryConv2D", "(N, 3, H, W)"]),
    Case("layer-conv-image-too-small", lambda t: L.Conv2D(1, 2, 3, rng=0).forward(_x(1, 1, 2, 2)),
         ValueError, ["Conv2D", "H + 2*0 >= 3"]),
    Case("layer-bn-spatial-given-2d", lambda t: L.BatchNorm(4, spatial=True).forward(_x(2, 4)),
         ValueError, ["BatchNorm", "(N, 4, H, W)"]),
    Case("layer-maxpool-window-too-big", lambda t: L.MaxPool2D(3).forward(_x(1, 1, 2, 2)),
         ValueError, ["MaxPool2D", "H, W >= 3"]),
    Case("layer-flatten-no-feature-axis", lambda t: L.Flatten().forward(_x(3)), ValueError,
         ["Flatten", "at least 2 axes"]),
    Case("layer-empty-batch-dense", lambda t: L.BinaryDense(3, 2, rng=0).forward(_x(0, 3)),
         ValueError, ["BinaryDense", "empty batch", "(0, 3)"]),
    Case("layer-empty-batch-flatten", lambda t: L.Flatten().forward(_x(0, 3, 4)), ValueError,
         ["empty batch"]),
    Case("layer-scalar-input", lambda t: L.SignActivation().forward(np.float32(1.0)), ValueError,
         ["empty batch", "shape ()"]),
    Case("layer-nan-input", lambda t: L.BatchNorm(3).forward(_x(2, 3, value=np.nan)), ValueError,
         ["BatchNorm", "input contains NaN"]),
    Case("layer-inf-input-eval",
         lambda t: L.BinaryDense(3, 2, binary_input=False, rng=0).forward(_x(2, 3, value=np.inf), False),
         ValueError, ["BinaryDense", "input contains infinity"]),
    Case("layer-bool-input", lambda t: L.SignActivation().forward(np.ones((2, 2), bool)),
         TypeError, ["x must be a real", "bool"]),
    Case("layer-string-input", lambda t: L.Flatten().forward(np.array([["a", "b"]])),
         TypeError, ["x must be a real"]),
    Case("layer-backward-before-forward",
         lambda t: _backward_before_forward(L.BinaryDense(3, 2, rng=0), (2, 2)), RuntimeError,
         ["BinaryDense", "before forward"]),
    Case("layer-backward-wrong-shape",
         lambda t: (lambda d: (d.forward(_x(4, 3)), d.backward(_x(4, 3))))(L.Dense(3, 2, rng=0)),
         ValueError, ["grad_out has shape (4, 3)", "(4, 2)"]),
    Case("layer-backward-bool-grad",
         lambda t: (lambda d: (d.forward(_x(4, 3)), d.backward(np.ones((4, 2), bool))))(L.Dense(3, 2, rng=0)),
         TypeError, ["grad_out must be a real"]),
    # -- functional ops ------------------------------------------------------------
    Case("fn-bn-bad-mode",
         lambda t: F.batchnorm_forward(_x(2, 2), np.ones(2), np.zeros(2), mode="training"),
         ValueError, ["mode", "'train' or 'eval'"]),
    Case("fn-bn-eval-without-running",
         lambda t: F.batchnorm_forward(_x(2, 2), np.ones(2), np.zeros(2), mode="eval"),
         ValueError, ["eval mode needs running_mean"]),
    Case("fn-bn-3d-input",
         lambda t: F.batchnorm_forward(_x(2, 2, 2), np.ones(2), np.zeros(2)), ValueError,
         ["(N, D) or (N, C, H, W)"]),
    Case("fn-dropout-p-one", lambda t: F.dropout_forward(_x(2, 2), 1.0, "train", None),
         ValueError, ["p must be in [0, 1)"]),
    Case("fn-dropout-bad-mode",
         lambda t: F.dropout_forward(_x(2, 2), 0.5, "inference", np.random.default_rng(0)),
         ValueError, ["mode"]),
    Case("fn-binary-dense-shapes",
         lambda t: F.binary_dense_forward(_x(2, 3), np.ones((4, 2))), ValueError,
         ["binary_dense_forward", "(N, K)", "(K, F)"]),
    Case("fn-binary-dense-nan-weight",
         lambda t: F.binary_dense_forward(_x(2, 3), _x(3, 2, value=np.nan), backend="float"),
         ValueError, ["NaN"]),
    Case("fn-binary-dense-unknown-backend",
         lambda t: F.binary_dense_forward(_x(2, 3), np.ones((3, 2)), backend="gpu"), ValueError,
         ["unknown backend 'gpu'", "float"]),
    Case("fn-binary-dense-prepared-and-stochastic",
         lambda t: F.binary_dense_forward(
             _x(2, 64), np.ones((64, 2)),
             prepared=F.prepare_binary_weights(np.ones((64, 2)), "cpu"),
             stochastic_rng=np.random.default_rng(0)),
         ValueError, ["prepared", "stochastic_rng"]),
    Case("fn-conv-channel-mismatch",
         lambda t: F.conv2d_forward(_x(1, 2, 4, 4), np.ones((3, 1, 2, 2))), ValueError,
         ["C=2", "expects 1"]),
    Case("fn-maxpool-window-too-big", lambda t: F.maxpool2d_forward(_x(1, 1, 2, 2), 3),
         ValueError, ["window 3 larger than input 2x2"]),
    Case("fn-as-input-complex", lambda t: F.as_input(np.ones(2, complex), "scores"), TypeError,
         ["scores must be a real", "complex"]),
    Case("fn-sign-nan", lambda t: sign(np.array([1.0, np.nan])), ValueError, ["NaN"]),
    Case("fn-sign-bool", lambda t: sign(np.array([True])), TypeError, ["real", "bool"]),
    Case("fn-stochastic-sign-seed-not-generator", lambda t: stochastic_sign(np.zeros(2), 3),
         TypeError, ["numpy.random.Generator", "int"]),
    Case("fn-ap2-object", lambda t: ap2(np.array([object()])), TypeError, ["real", "object"]),
    # -- Sequential -------------------------------------------------------------------
    Case("model-not-a-layer", lambda t: Sequential([L.Flatten(), "relu"]), TypeError,
         ["item 1", "str", "not a Layer"]),
    Case("model-empty-batch", lambda t: _mlp().forward(_x(0, 4)), ValueError,
         ["Sequential", "empty batch"]),
    Case("model-nan-input-train", lambda t: _mlp().forward(_x(3, 4, value=np.nan)), ValueError,
         ["Sequential: input contains NaN"]),
    Case("model-inf-input-eval", lambda t: _mlp().eval().forward(_x(3, 4, value=-np.inf)),
         ValueError, ["Sequential: input contains infinity"]),
    Case("model-wrong-width", lambda t: _mlp().forward(_x(3, 5)), ValueError,
         ["BinaryDense", "(N, 4)", "(3, 5)"]),
    Case("model-set-backend-unknown", lambda t: _mlp().set_backend("tpu"), ValueError,
         ["unknown backend 'tpu'"]),
    Case("model-state-dict-missing",
         lambda t: _mlp().load_state_dict({}), ValueError, ["missing entries", "0.w"]),
    Case("model-architecture-not-list", lambda t: Sequential.from_architecture({"a": 1}),
         ValueError, ["architecture must be a list"]),
    Case("model-zoo-unknown-architecture", lambda t: zoo.build("resnet"), ValueError,
         ["unknown architecture 'resnet'", "mnist_mlp"]),
    Case("model-zoo-bad-bn", lambda t: zoo.mnist_mlp_specs(bn="group"), ValueError,
         ["bn must be one of"]),
    Case("model-zoo-hidden-zero", lambda t: zoo.mnist_mlp_specs(hidden=0), ValueError,
         ["hidden", ">= 1"]),
    Case("model-zoo-dropout-one", lambda t: zoo.mnist_mlp_specs(dropout_hidden=1.0), ValueError,
         ["dropout_hidden", "< 1"]),
    Case("model-zoo-width-negative", lambda t: zoo.cifar10_convnet_specs(width=-1), ValueError,
         ["width", "> 0"]),
    # -- model files -------------------------------------------------------------------
    Case("model-load-missing-file", lambda t: Sequential.load(t / "nope.npz"), FileNotFoundError),
    Case("model-load-directory", lambda t: Sequential.load(t), ValueError,
         ["is a directory"]),
    Case("model-load-not-zip", lambda t: Sequential.load(_write(t, "junk.npz", b"not a zip")),
         ValueError, ["junk.npz", "not a readable minibnn model file"]),
    Case("model-load-empty-file", lambda t: Sequential.load(_write(t, "empty.npz", b"")),
         ValueError, ["empty.npz", "not a readable"]),
    Case("model-load-npy", lambda t: (np.save(t / "a.npy", np.zeros(3)), Sequential.load(t / "a.npy")),
         ValueError, ["a.npy", "not a minibnn model file"]),
    Case("model-load-no-version", lambda t: _load(t, format_version=None), ValueError,
         ["bad.npz", "no 'format_version'"]),
    Case("model-load-future-version", lambda t: _load(t, format_version=np.array(99)), ValueError,
         ["bad.npz", "format_version 99", "reads version 1"]),
    Case("model-load-float-version", lambda t: _load(t, format_version=np.array(1.0)), ValueError,
         ["bad.npz", "format_version of shape ()", "float64"]),
    Case("model-load-no-architecture", lambda t: _load(t, architecture=None), ValueError,
         ["bad.npz", "no 'architecture'"]),
    Case("model-load-architecture-not-json",
         lambda t: _load(t, architecture=np.array("[{oops")), ValueError,
         ["bad.npz", "architecture is not valid JSON"]),
    Case("model-load-architecture-not-string", lambda t: _load(t, architecture=np.arange(3)),
         ValueError, ["bad.npz", "architecture must be one string"]),
    Case("model-load-architecture-dict", lambda t: _load(t, architecture=np.array('{"a": 1}')),
         ValueError, ["bad.npz", "architecture must be a list"]),
    Case("model-load-unknown-layer",
         lambda t: _load(t, architecture=_arch(("Dense", {"in_features": 4, "out_features": 3}),
                                               ("Magic", {}))),
         ValueError, ["bad.npz", "layer 1", "unknown layer class 'Magic'"]),
    Case("model-load-bad-layer-config",
         lambda t: _load(t, architecture=_arch(("BinaryDense", {"in_features": -4, "out_features": 3}))),
         ValueError, ["bad.npz", "layer 0", "in_features must be an integer >= 1"]),
    Case("model-load-huge-declared-layer",
         lambda t: _load(t, architecture=_arch(("BinaryDense", {"in_features": 10 ** 6,
                                                                "out_features": 10 ** 6}))),
         ValueError, ["bad.npz", "declares 1000000000000", "MAX_LOAD_ELEMENTS"]),
    Case("model-load-missing-weight", lambda t: _load(t, **{"3.w": None}), ValueError,
         ["bad.npz", "missing entries", "3.w"]),
    Case("model-load-unexpected-entry", lambda t: _load(t, extra=np.zeros(2)), ValueError,
         ["bad.npz", "unexpected entries", "extra"]),
    Case("model-load-wrong-shape", lambda t: _load(t, **{"0.w": np.zeros((4, 5), np.float32)}),
         ValueError, ["bad.npz", "'0.w' has shape (4, 5)", "expects (4, 3)"]),
    Case("model-load-string-weights", lambda t: _load(t, **{"1.gamma": np.array(["a", "b", "c"])}),
         ValueError, ["bad.npz", "'1.gamma'", "non-numeric dtype"]),
    Case("model-save-into-directory", lambda t: _mlp().save(t), IsADirectoryError,
         ["is a directory"]),
]
