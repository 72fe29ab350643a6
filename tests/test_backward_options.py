"""The backward's two work-saving options: ``need_dx=False`` / ``input_grad=False`` (skip
the input gradient nobody reads) and ``dw_out`` (the weight gradient written into the
layer's gradient buffer).  Both must leave every result as it was without them."""

import numpy as np
import pytest

from minibnn import functional as F
from minibnn import layers as L
from minibnn import losses, zoo
from minibnn.kernels import conv_train

RNG = np.random.default_rng(7)


def _pm1(shape):
    return np.where(RNG.standard_normal(shape) >= 0, 1.0, -1.0).astype(np.float32)


def _dense_case():
    x = _pm1((5, 70))                                   # K off the word size
    w = RNG.uniform(-1, 1, (70, 9)).astype(np.float32)
    dout = RNG.standard_normal((5, 9)).astype(np.float32)
    _, cache = F.binary_dense_forward(x, w, b=np.zeros(9, np.float32), backend="cpu")
    return cache, dout, w.shape


def _conv_case(stride):
    x = _pm1((2, 3, 6, 5))
    w = RNG.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32)
    out, cache = F.binary_conv2d_forward(x, w, stride=stride, padding=1, backend="cpu")
    dout = RNG.standard_normal(out.shape).astype(np.float32)
    return cache, dout, w.shape


def _float_conv_case():
    x = RNG.standard_normal((2, 3, 5, 5)).astype(np.float32)
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    out, cache = F.conv2d_forward(x, w, padding=1)
    dout = RNG.standard_normal(out.shape).astype(np.float32)
    return cache, dout, w.shape


def _float_conv_case_few_columns():
    # K = C*KH*KW = 18 <= P = 64 positions: the weight gradient sums per-image GEMMs
    x = RNG.standard_normal((3, 2, 8, 8)).astype(np.float32)
    w = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    out, cache = F.conv2d_forward(x, w, padding=1)
    dout = RNG.standard_normal(out.shape).astype(np.float32)
    return cache, dout, w.shape


def _float_dense_case():
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    w = RNG.standard_normal((6, 3)).astype(np.float32)
    _, cache = F.dense_forward(x, w)
    return cache, RNG.standard_normal((4, 3)).astype(np.float32), w.shape


CASES = {
    "binary_dense": (F.binary_dense_backward, _dense_case),
    "binary_conv_stride1": (F.binary_conv2d_backward, lambda: _conv_case(1)),
    "binary_conv_stride2": (F.binary_conv2d_backward, lambda: _conv_case(2)),
    "conv": (F.conv2d_backward, _float_conv_case),
    "conv_few_columns": (F.conv2d_backward, _float_conv_case_few_columns),
    "dense": (F.dense_backward, _float_dense_case),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_options_keep_the_results(name):
    op, make = CASES[name]
    cache, dout, w_shape = make()
    dx, dw, db = op(dout, cache)
    buf = np.full(w_shape, np.nan, dtype=np.float32)
    dx2, dw2, db2 = op(dout, cache, need_dx=False, dw_out=buf)
    assert dx2 is None
    assert dw2 is buf                      # written in place, the very array returned
    np.testing.assert_array_equal(dw2, dw)
    if db is None:
        assert db2 is None
    else:
        np.testing.assert_array_equal(db2, db)
    dx3, dw3, _ = op(dout, cache, need_dx=True, dw_out=None)
    np.testing.assert_array_equal(dx3, dx)
    np.testing.assert_array_equal(dw3, dw)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("bad", ["dtype", "shape", "strided", "readonly", "list"])
def test_unusable_dw_out_is_left_alone(name, bad):
    """A destination that cannot take dw unchanged is ignored, never half-written."""
    op, make = CASES[name]
    cache, dout, w_shape = make()
    _, dw, _ = op(dout, cache)
    if bad == "dtype":
        buf = np.zeros(w_shape, np.float64)
    elif bad == "shape":
        buf = np.zeros((1,) + tuple(w_shape), np.float32)
    elif bad == "strided":
        buf = np.zeros(tuple(w_shape[:-1]) + (2 * w_shape[-1],), np.float32)[..., ::2]
    elif bad == "readonly":
        buf = np.zeros(w_shape, np.float32)
        buf.flags.writeable = False
    else:
        buf = np.zeros(w_shape, np.float32).tolist()
    before = np.array(buf, copy=True)
    _, dw2, _ = op(dout, cache, dw_out=buf)
    assert dw2 is not buf
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(np.asarray(buf), before)


def test_conv_backward_kernel_checks_dw_out():
    x = _pm1((1, 2, 4, 4))
    d = RNG.standard_normal((1, 3, 4, 4)).astype(np.float32)
    wm = _pm1((3, 18))
    if not conv_train.supported(x, d, wm, 1):
        pytest.skip("no bundled CBLAS here: the im2col path runs instead")
    with pytest.raises(ValueError, match="dw_out"):
        conv_train.conv_backward(d, x, wm, 3, 3, 1, dw_out=np.zeros((3, 17), np.float32))
    want = conv_train.conv_backward_reference(d, x, wm, 3, 3, 1)[1]
    out = np.zeros((3, 18), np.float32)
    _, dw = conv_train.conv_backward(d, x, wm, 3, 3, 1, need_dx=False, dw_out=out)
    assert dw is out
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_model_backward_without_input_grad(arch):
    """Same gradients in every layer (to rounding where a route changes); the layers
    below the first parameterized one are not run at all, and the first one computes no
    dx."""
    if arch == "mlp":
        model = zoo.build("mnist_mlp", hidden=16, depth=2, backend="cpu", seed=3)
        x = RNG.uniform(-1, 1, (6, 1, 28, 28)).astype(np.float32)
    else:
        model = zoo.build("svhn_convnet", width=0.0625, backend="cpu", seed=3)
        x = RNG.uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32)
    y = RNG.integers(0, 10, x.shape[0])
    scores = model.forward(x, training=True)
    _, g = losses.squared_hinge(scores, y, 10)
    dx = model.backward(g)
    assert dx.shape == x.shape
    want = [{k: v.copy() for k, v in layer.grads.items()} for layer in model.layers]
    ids = [{k: id(v) for k, v in layer.grads.items()} for layer in model.layers]
    for layer in model.layers:
        for v in layer.grads.values():
            v[...] = np.nan
    calls = []
    first = next(i for i, layer in enumerate(model.layers) if layer.params)
    for i, layer in enumerate(model.layers):
        orig = layer._backward

        def spy(*a, _orig=orig, _i=i, **kw):
            calls.append((_i, kw.get("input_grad", True)))
            return _orig(*a, **kw)
        layer._backward = spy
    assert model.backward(g, input_grad=False) is None
    for j, (layer, w, i) in enumerate(zip(model.layers, want, ids)):
        assert {k: id(v) for k, v in layer.grads.items()} == i   # optimizer refs stay valid
        for k in w:
            if arch == "conv" and j == first:
                # without dx the first conv's dw comes from the forward's im2col (another
                # GEMM order than the no-unfolding kernel): equal to float32 rounding
                scale = float(np.abs(w[k]).max())
                np.testing.assert_allclose(layer.grads[k], w[k], rtol=1e-5, atol=1e-6 * scale,
                                           err_msg=f"{layer!r} {k}")
            else:
                np.testing.assert_array_equal(layer.grads[k], w[k], err_msg=f"{layer!r} {k}")
    assert min(i for i, _ in calls) == first
    assert (first, False) in calls
    assert all(flag for i, flag in calls if i > first)


def test_layer_backward_without_input_grad():
    layer = L.BinaryDense(70, 9, backend="cpu", rng=1)
    x = _pm1((5, 70))
    layer.forward(x)
    g = RNG.standard_normal((5, 9)).astype(np.float32)
    dx = layer.backward(g)
    dw = layer.grads["w"].copy()
    assert layer.backward(g, input_grad=False) is None
    np.testing.assert_array_equal(layer.grads["w"], dw)
    assert dx.shape == x.shape
    sign = L.SignActivation()
    sign.forward(x)
    assert sign.backward(np.ones_like(x), input_grad=False) is None
    bn = L.BatchNorm(70)
    bn.forward(RNG.standard_normal((5, 70)).astype(np.float32))
    gb = RNG.standard_normal((5, 70)).astype(np.float32)
    bn.backward(gb)
    dgamma = bn.grads["gamma"].copy()
    bn.grads["gamma"][...] = 0
    assert bn.backward(gb, input_grad=False) is None
    np.testing.assert_array_equal(bn.grads["gamma"], dgamma)


def test_first_binary_conv_weight_grad_routes_agree():
    """A real-valued input (first layer): with dx the no-unfolding kernel runs, without
    it the weight gradient comes from the forward's im2col; both equal the float64
    formula to float32 rounding."""
    x = RNG.uniform(-1, 1, (3, 3, 9, 9)).astype(np.float32)
    w = RNG.uniform(-1, 1, (5, 3, 3, 3)).astype(np.float32)
    out, cache = F.binary_conv2d_forward(x, w, padding=1, binary_input=False, backend="cpu")
    assert cache["cols"] is not None
    d = RNG.standard_normal(out.shape).astype(np.float32)
    _, dw_a, _ = F.binary_conv2d_backward(d, cache)
    _, dw_b, _ = F.binary_conv2d_backward(d, cache, need_dx=False)
    cols = cache["cols"].astype(np.float64)
    d2 = d.astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, 5)
    want = (d2.T @ cols).reshape(w.shape)
    for got in (dw_a, dw_b):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
