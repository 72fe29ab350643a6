"""Model zoo: layer specs (pure data) and, where the layers exist, built models."""

import json

import numpy as np
import pytest

from minibnn import zoo


def _chain_ok(specs):
    for a, b in zip(specs, specs[1:]):
        assert a.out_shape == b.in_shape, (a, b)


# ---------------------------------------------------------------------------
# specs: no layer code involved
# ---------------------------------------------------------------------------

def test_mnist_mlp_specs_default_table():
    s = zoo.mnist_mlp_specs()
    kinds = [x.kind for x in s]
    assert kinds == (["Flatten"] + ["BinaryDense", "BatchNorm", "SignActivation"] * 3
                     + ["BinaryDense", "BatchNorm"])
    dense = [x for x in s if x.kind == "BinaryDense"]
    assert [(d.kwargs["in_features"], d.kwargs["out_features"]) for d in dense] == [
        (784, 4096), (4096, 4096), (4096, 4096), (4096, 10)]
    assert [d.kwargs["binary_input"] for d in dense] == [False, True, True, True]
    assert s[-1].out_shape == (10,)
    _chain_ok(s)


def test_mnist_mlp_specs_dropout_and_shift_bn():
    s = zoo.mnist_mlp_specs(hidden=32, depth=2, dropout_in=0.2, dropout_hidden=0.5, bn="shift")
    kinds = [x.kind for x in s]
    assert kinds == ["Flatten", "Dropout",
                     "BinaryDense", "ShiftBatchNorm", "SignActivation", "Dropout",
                     "BinaryDense", "ShiftBatchNorm", "SignActivation", "Dropout",
                     "BinaryDense", "ShiftBatchNorm"]
    assert [x.kwargs["p"] for x in s if x.kind == "Dropout"] == [0.2, 0.5, 0.5]
    _chain_ok(s)
    with pytest.raises(ValueError):
        zoo.mnist_mlp_specs(bn="group")
    with pytest.raises(ValueError):
        zoo.mnist_mlp_specs(dropout_in=1.0)


def test_cifar10_convnet_specs_default_table():
    s = zoo.cifar10_convnet_specs()
    convs = [x for x in s if x.kind == "BinaryConv2D"]
    assert [(c.kwargs["in_ch"], c.kwargs["out_ch"]) for c in convs] == [
        (3, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    assert all(c.kwargs["kernel"] == 3 and c.kwargs["padding"] == 1 and c.kwargs["stride"] == 1
               for c in convs)
    assert [c.kwargs["binary_input"] for c in convs] == [False] + [True] * 5
    # BN after the pooling, Sign after each BN but the last
    kinds = [x.kind for x in s]
    assert kinds[:9] == ["BinaryConv2D", "BatchNorm", "SignActivation",
                         "BinaryConv2D", "MaxPool2D", "BatchNorm", "SignActivation",
                         "BinaryConv2D", "BatchNorm"]
    assert kinds[-3:] == ["SignActivation", "BinaryDense", "BatchNorm"]
    assert kinds.count("BatchNorm") == 9 and kinds.count("SignActivation") == 8
    flat = [x for x in s if x.kind == "Flatten"][0]
    assert flat.in_shape == (512, 4, 4) and flat.out_shape == (8192,)
    dense = [x for x in s if x.kind == "BinaryDense"]
    assert [(d.kwargs["in_features"], d.kwargs["out_features"]) for d in dense] == [
        (8192, 1024), (1024, 1024), (1024, 10)]
    bns = [x for x in s if x.kind == "BatchNorm"]
    assert [b.kwargs["spatial"] for b in bns] == [True] * 6 + [False] * 3
    _chain_ok(s)


def test_convnet_width_and_svhn():
    s = zoo.cifar10_convnet_specs(width=1 / 16)
    assert [c.kwargs["out_ch"] for c in s if c.kind == "BinaryConv2D"] == [8, 8, 16, 16, 32, 32]
    sv = zoo.svhn_convnet_specs()
    assert [c.kwargs["out_ch"] for c in sv if c.kind == "BinaryConv2D"] == [64, 64, 128, 128, 256, 256]
    assert [x.to_dict() for x in sv] == [x.to_dict() for x in zoo.cifar10_convnet_specs(width=0.5)]
    assert [x.kwargs["out_features"] for x in sv if x.kind == "BinaryDense"] == [1024, 1024, 10]
    with pytest.raises(ValueError):
        zoo.cifar10_convnet_specs(image_size=30)


def test_registry_summary_and_json():
    assert set(zoo.ARCHITECTURES) == set(zoo.SPECS) == {"mnist_mlp", "cifar10_convnet", "svhn_convnet"}
    s = zoo.specs("mnist_mlp", hidden=8, depth=1, seed=3)
    assert [x.kind for x in s][-2:] == ["BinaryDense", "BatchNorm"]
    json.dumps([x.to_dict() for x in s])
    table = zoo.summary(s)
    # params: 784*8 + 2*8 + 8*10 + 2*10
    assert "total" in table and str(784 * 8 + 16 + 80 + 20) in table
    with pytest.raises(ValueError, match="unknown architecture"):
        zoo.build("resnet18")
    with pytest.raises(ValueError, match="unknown architecture"):
        zoo.specs("resnet18")


# ---------------------------------------------------------------------------
# built models: need minibnn.layers and minibnn.model
# ---------------------------------------------------------------------------

def _need_layers():
    pytest.importorskip("minibnn.layers")
    pytest.importorskip("minibnn.model")


def _layers_of(model):
    return list(getattr(model, "layers"))


def test_mnist_mlp_forward_shape():
    _need_layers()
    model = zoo.mnist_mlp(hidden=32, depth=2, seed=0)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 1, 28, 28)).astype(np.float32)
    for training in (True, False):
        out = model.forward(x, training=training)
        assert out.shape == (2, 10)
        assert np.all(np.isfinite(out))
    names = [n for n, _p, _g, info in model.parameters() if info["binary"]]
    assert len(names) == 3


def test_cifar10_convnet_forward_shape():
    _need_layers()
    model = zoo.cifar10_convnet(width=1 / 16, seed=0)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out = model.forward(x, training=True)
    assert out.shape == (2, 10)
    assert np.all(np.isfinite(out))


def test_built_layers_match_specs_and_seed():
    _need_layers()
    s = zoo.mnist_mlp_specs(hidden=16, depth=2, dropout_in=0.1, bn="shift")
    model = zoo.build_sequential(s, seed=5)
    layers = _layers_of(model)
    assert [type(l).__name__ for l in layers] == [x.kind for x in s]
    for layer, spec in zip(layers, s):
        cfg = layer.config()
        for k, v in spec.kwargs.items():
            assert cfg[k] == v, (spec.kind, k)
    same = zoo.build_sequential(s, seed=5)
    other = zoo.build_sequential(s, seed=6)
    p5 = [p.copy() for _n, p, _g, _i in model.parameters()]
    assert all(np.array_equal(a, p) for a, (_n, p, _g, _i) in zip(p5, same.parameters()))
    assert not all(np.array_equal(a, p) for a, (_n, p, _g, _i) in zip(p5, other.parameters()))


def test_zoo_model_trains_one_step_with_optimizer():
    _need_layers()
    from minibnn import optim

    model = zoo.mnist_mlp(hidden=16, depth=1, in_features=12, seed=0)
    x = np.random.default_rng(2).standard_normal((4, 12)).astype(np.float32)
    out = model.forward(x, training=True)
    model.backward(np.ones_like(out) / out.size)
    opt = optim.Adam(model, lr=1e-2)
    before = {n: p.copy() for n, p, _g, _i in model.parameters()}
    opt.step()
    moved = [n for n, p, _g, _i in model.parameters() if not np.array_equal(p, before[n])]
    assert moved
    for n, p, _g, info in model.parameters():
        if info["binary"]:
            assert np.all(np.abs(p) <= 1.0)
