"""``grad_dtype="bfloat16"``: the binary dense layers' backward products with the upstream
gradient rounded to bfloat16 (float32 sums) -- against the definition, through the layer,
the model, the training config and the command line."""

import json
from unittest import mock

import numpy as np
import pytest

from minibnn import functional as F
from minibnn import losses, zoo
from minibnn.cli import main
from minibnn.kernels import BackendUnavailable, bf16, reference
from minibnn.train import HostLoop, TrainConfig, train

RNG = np.random.default_rng(11)


def _pm1(shape):
    return np.where(RNG.standard_normal(shape) >= 0, 1.0, -1.0).astype(np.float32)


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("fallback", [False, True])
def test_hidden_layer_products_are_the_definition(fallback):
    x = _pm1((9, 130))                                       # K off the word size
    w = RNG.uniform(-1, 1, (130, 70)).astype(np.float32)
    w[0, :5] = 0.0                                           # sign(0) = +1
    out, cache = F.binary_dense_forward(x, w, backend="cpu")
    assert "prepared" in cache                                # the packed path: x is +-1
    d = (RNG.standard_normal(out.shape) * 1e-3).astype(np.float32)
    d[0, :3] = 0.0
    real = bf16.available()
    with mock.patch.object(bf16, "available", lambda: real and not fallback):
        buf = np.empty(w.shape, np.float32)
        dx, dw, _ = F.binary_dense_backward(d, cache, dw_out=buf, grad_dtype="bfloat16")
    assert dw is buf
    _close(dx, reference.matmul_bf16(d, cache["w_b"].T))
    _close(dw, reference.matmul_bf16(x.T, d))
    # only dout is rounded: +-1 times the rounded gradient, exactly representable sums
    dq = bf16.round_bf16(d)
    _close(dw, x.T.astype(np.float64) @ dq.astype(np.float64))
    assert not np.array_equal(dq, d)                          # the rounding did happen


def test_first_layer_keeps_float32_weight_gradient():
    x = RNG.uniform(-1, 1, (6, 40)).astype(np.float32)        # real-valued input
    w = RNG.uniform(-1, 1, (40, 8)).astype(np.float32)
    out, cache = F.binary_dense_forward(x, w, binary_input=False, backend="cpu")
    d = RNG.standard_normal(out.shape).astype(np.float32)
    dx, dw, _ = F.binary_dense_backward(d, cache, grad_dtype="bfloat16")
    _, dw32, _ = F.binary_dense_backward(d, cache)
    np.testing.assert_array_equal(dw, dw32)
    _close(dx, reference.matmul_bf16(d, cache["w_b"].T))


def _dropped(x, p, seed=0):
    """x after the model's own inverted dropout (train mode) with drop probability p."""
    out, _ = F.dropout_forward(x, p, "train", np.random.default_rng(seed))
    assert out.dtype == np.float32
    return out


def test_dropped_pm1_is_recognised_only_when_exact_in_bfloat16():
    x = _pm1((7, 131))
    assert F._dropped_pm1(_dropped(x, 0.5))                   # scale 2
    assert F._dropped_pm1(_dropped(x, 0.2))                   # scale 1.25: 8 bits suffice
    assert not F._dropped_pm1(_dropped(x, 0.3))               # 1/0.7 is not a bfloat16
    assert not F._dropped_pm1(x.astype(np.float64) * 2)       # float64: the float product
    assert not F._dropped_pm1(np.zeros((3, 4), np.float32))   # no scale to find
    assert not F._dropped_pm1(np.zeros((0, 4), np.float32))
    two_scales = _dropped(x, 0.5)
    two_scales[0, 0] = 1.0
    assert not F._dropped_pm1(two_scales)
    for bad in (np.nan, np.inf):
        y = _dropped(x, 0.5)
        y[1, 2] = bad
        assert not F._dropped_pm1(y)
    assert not F._dropped_pm1(RNG.uniform(-1, 1, (4, 9)).astype(np.float32))


@pytest.mark.parametrize("p", [0.5, 0.2])
@pytest.mark.parametrize("fallback", [False, True])
def test_hidden_layer_behind_dropout(p, fallback):
    # a +-1 input after dropout has no packed form; its forward is the float product
    # bit for bit (exact either way) and, with bfloat16 gradients, its dw is the
    # definition with x exact in bfloat16
    x = _dropped(_pm1((12, 200)), p)                          # K off the word size
    w = RNG.uniform(-1, 1, (200, 33)).astype(np.float32)
    w[3, :4] = 0.0
    b = RNG.standard_normal(33).astype(np.float32)
    real = bf16.available()
    with mock.patch.object(bf16, "available", lambda: real and not fallback):
        out, cache = F.binary_dense_forward(x, w, b, backend="cpu")
    want, ref_cache = F.binary_dense_forward(x, w, b, backend="float")
    np.testing.assert_array_equal(out, want)
    assert "prepared" not in cache and not ref_cache["x_bf16_exact"]
    assert cache["x_bf16_exact"] == (real and not fallback)
    exact = x.astype(np.float64) @ np.where(w >= 0, 1.0, -1.0)
    np.testing.assert_array_equal(out, exact.astype(np.float32) + b)    # exact, then + b
    d = (RNG.standard_normal(out.shape) * 1e-3).astype(np.float32)
    dx, dw, db = F.binary_dense_backward(d, cache, grad_dtype="bfloat16")
    _close(dx, reference.matmul_bf16(d, cache["w_b"].T))
    if cache["x_bf16_exact"]:
        _close(dw, x.T.astype(np.float64) @ bf16.round_bf16(d).astype(np.float64))
    else:
        np.testing.assert_array_equal(dw, x.T @ d)            # float32 weight gradient
    np.testing.assert_array_equal(db, d.sum(axis=0))


def test_float64_and_bad_names():
    x = _pm1((4, 10)).astype(np.float64)
    w = RNG.uniform(-1, 1, (10, 3))
    out, cache = F.binary_dense_forward(x, w, backend="cpu")
    d = RNG.standard_normal(out.shape)
    a = F.binary_dense_backward(d, cache, grad_dtype="bfloat16")
    b = F.binary_dense_backward(d, cache)
    for u, v in zip(a[:2], b[:2]):
        np.testing.assert_array_equal(u, v)                   # float64: the float64 products
    with pytest.raises(ValueError, match="grad_dtype"):
        F.binary_dense_backward(d, cache, grad_dtype="float16")


def test_model_set_grad_dtype_trains_close_to_float32():
    m32 = zoo.build("mnist_mlp", hidden=64, depth=2, backend="cpu", seed=2)
    m16 = zoo.build("mnist_mlp", hidden=64, depth=2, backend="cpu", seed=2)
    assert m16.set_grad_dtype("bfloat16") is m16
    dense = [layer for layer in m16.layers if hasattr(layer, "grad_dtype")]
    assert len(dense) == 3 and all(layer.grad_dtype == "bfloat16" for layer in dense)
    with pytest.raises(ValueError, match="grad_dtype"):
        m16.set_grad_dtype("half")
    assert all(layer.grad_dtype == "bfloat16" for layer in dense)   # unchanged
    x = RNG.uniform(-1, 1, (16, 1, 28, 28)).astype(np.float32)
    y = np.arange(16) % 10
    for m in (m32, m16):
        _, g = losses.squared_hinge(m.forward(x, training=True), y, 10)
        m.backward(g, input_grad=False)
    for a, b in zip(m32.layers, m16.layers):
        for k in a.grads:
            ga, gb = a.grads[k], b.grads[k]
            # 8-bit rounding of the upstream gradient: within a few 2^-8 of the scale
            assert np.abs(ga - gb).max() <= 2 ** -6 * max(np.abs(ga).max(), 1e-30), (a, k)
    assert any(not np.array_equal(a.grads[k], b.grads[k])
               for a, b in zip(m32.layers, m16.layers) for k in a.grads)


def test_config_and_loop_checks():
    with pytest.raises(ValueError, match="grad_dtype"):
        TrainConfig(dataset="sample", grad_dtype="fp8").validated()
    cfg = TrainConfig(dataset="sample", grad_dtype="bfloat16").validated()
    with mock.patch.object(bf16, "available", lambda: False):
        with pytest.raises(BackendUnavailable, match="AVX512-BF16"):
            HostLoop.check(cfg)
    HostLoop.check(TrainConfig(dataset="sample").validated())   # float32: always


needs_bf16 = pytest.mark.skipif(not bf16.available(),
                                reason="this CPU has no AVX512-BF16 kernel")


@needs_bf16
def test_train_with_bfloat16_gradients(tmp_path):
    from minibnn.data import load_dataset
    sample = load_dataset("sample", limit_train=600)
    cfg = TrainConfig(dataset="sample", hidden=64, depth=2, epochs=2, batch_size=50,
                      lr_start=3e-3, lr_end=3e-4, limit_train=600, seed=7,
                      grad_dtype="bfloat16")
    summary = train(cfg, tmp_path, dataset=sample, progress=False, log=lambda *a: None)
    assert json.load(open(tmp_path / "config.json"))["grad_dtype"] == "bfloat16"
    assert summary["best_val_error"] < 0.5                      # chance is 0.9


@needs_bf16
def test_cli_grad_dtype(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--dataset", "sample", "--hidden", "32", "--depth", "1", "--epochs",
               "1", "--batch-size", "50", "--limit-train", "200", "--grad-dtype", "bfloat16",
               "--no-progress", "--out", str(out)])
    assert rc in (0, None)
    assert json.load(open(out / "config.json"))["grad_dtype"] == "bfloat16"
    # a resume with the other precision is a different run: refused, naming it
    capsys.readouterr()
    assert main(["train", "--resume", "--grad-dtype", "float32", "--out", str(out)]) == 2
    assert "grad_dtype 'float32' (stored: 'bfloat16')" in capsys.readouterr().err
