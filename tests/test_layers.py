"""Layer semantics: packed == float exactly, forward rules, init, param_info, errors."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minibnn import functional as F
from minibnn import layers as L
from minibnn.kernels import reference
from minibnn.model import Sequential
from minibnn.testing import assert_exact, conv_cases, k_values, pm1_arrays, real_arrays


# ---------------------------------------------------------------------------
# packed XNOR path == float BLAS path, bit for bit
# ---------------------------------------------------------------------------

def _twin(layer):
    """Same config and weights, float path (backend="float")."""
    cfg = dict(layer.config(), backend="float")
    other = type(layer)(**cfg)
    for k, v in layer.params.items():
        other.params[k][...] = v
    return other


@st.composite
def dense_cases(draw):
    n = draw(st.integers(1, 5))
    k = draw(k_values(200))
    f = draw(st.integers(1, 12))
    x = draw(pm1_arrays((n, k)))
    w = draw(real_arrays((k, f)))        # exact zeros: sign(0) = +1 on both paths
    return x, w, draw(st.booleans())


@given(dense_cases(), st.booleans())
def test_binary_dense_packed_equals_float(fast_backend, case, training):
    x, w, bias = case
    k, f = w.shape
    packed = L.BinaryDense(k, f, binary_input=True, bias=bias, backend=fast_backend, rng=0)
    packed.params["w"][...] = w
    if bias:
        packed.params["b"][...] = np.linspace(-1, 1, f)
    flt = _twin(packed)
    model_p = Sequential([packed, L.BatchNorm(f)])
    model_f = Sequential([flt, L.BatchNorm(f)])
    out_p = model_p.forward(x, training=training)
    out_f = model_f.forward(x, training=training)
    assert_exact(out_p, out_f, f"BinaryDense packed[{fast_backend}] vs float")
    # the packed weights actually used are kept on the layer
    assert packed.prepared is not None and packed.prepared.k == k and packed.prepared.n == f
    if not bias:   # and the layer output is the integer sign(x) . sign(w)
        assert_exact(packed.forward(x, training).astype(np.int32),
                     reference.binary_matmul(x, packed.params["w"]), "BinaryDense vs reference")


@given(conv_cases(max_c=70, max_hw=6, max_f=4), st.booleans(), st.booleans())
def test_binary_conv2d_packed_equals_float(fast_backend, case, bias, training):
    x, w, stride, padding = case
    xb = np.where(x >= 0, 1.0, -1.0).astype(np.float32)
    Fn, C, KH, KW = w.shape
    packed = L.BinaryConv2D(C, Fn, (KH, KW), stride=stride, padding=padding, bias=bias,
                            backend=fast_backend, rng=0)
    packed.params["w"][...] = w
    if bias:
        packed.params["b"][...] = np.linspace(-1, 1, Fn)
    flt = _twin(packed)
    out_p = Sequential([packed, L.BatchNorm(Fn, spatial=True)]).forward(xb, training=training)
    out_f = Sequential([flt, L.BatchNorm(Fn, spatial=True)]).forward(xb, training=training)
    assert_exact(out_p, out_f, f"BinaryConv2D packed[{fast_backend}] vs float")
    if not bias:
        got = packed.forward(xb, training)
        assert_exact(got.astype(np.int32),
                     reference.binary_conv2d(xb, packed.params["w"], stride, padding),
                     "BinaryConv2D vs reference")


def test_set_backend_switches_path_not_result():
    rng = np.random.default_rng(0)
    model = Sequential([L.BinaryDense(70, 30, binary_input=False, rng=1), L.BatchNorm(30),
                        L.SignActivation(), L.BinaryDense(30, 5, rng=2), L.BatchNorm(5)])
    model.set_backend("float")
    x = rng.standard_normal((6, 70)).astype(np.float32)
    a = model.forward(x, training=False)
    assert model[3].prepared is None               # float BLAS path
    model.set_backend("cpu")
    assert model[3].backend == "cpu"
    b = model.forward(x, training=False)
    assert model[3].prepared is not None           # hidden layer went through the kernels
    assert model[0].prepared is None               # first layer: real input, float path
    assert_exact(a, b)


def test_non_binary_input_takes_the_float_path():
    # the packed path reads only sign bits; an input that is not all +-1 (e.g. dropout-
    # scaled 0 / +-2 in training) must give the float product x @ sign(w), not its sign
    x = np.array([[1.0, -1.0, 0.5, 1.0], [2.0, 0.0, -2.0, 2.0]])
    packed = L.BinaryDense(4, 3, backend="cpu", rng=0)
    plain = L.BinaryDense(4, 3, backend="float", rng=0)
    assert_exact(packed.forward(x), plain.forward(x))
    assert packed.prepared is None
    assert_exact(packed.forward(np.sign(x + 0.1)), plain.forward(np.sign(x + 0.1)))
    assert packed.prepared is not None
    xc = np.zeros((1, 1, 3, 3))
    conv_packed = L.BinaryConv2D(1, 2, 2, backend="cpu", rng=0)
    conv_plain = L.BinaryConv2D(1, 2, 2, backend="float", rng=0)
    assert_exact(conv_packed.forward(xc), conv_plain.forward(xc))
    assert np.any(conv_plain.forward(xc) == 0)   # zeros, not the +1 a sign would give


# ---------------------------------------------------------------------------
# forward rules
# ---------------------------------------------------------------------------

def _naive_conv(x, w, b, stride, padding):
    N, C, H, W = x.shape
    Fn, _, KH, KW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Ho = (H + 2 * padding - KH) // stride + 1
    Wo = (W + 2 * padding - KW) // stride + 1
    out = np.zeros((N, Fn, Ho, Wo))
    for n in range(N):
        for f in range(Fn):
            for i in range(Ho):
                for j in range(Wo):
                    patch = xp[n, :, i * stride:i * stride + KH, j * stride:j * stride + KW]
                    out[n, f, i, j] = (patch * w[f]).sum() + (0 if b is None else b[f])
    return out


@pytest.mark.parametrize("stride,padding,kh,kw", [(1, 0, 3, 3), (2, 1, 3, 2), (1, 2, 1, 4)])
def test_conv2d_forward_matches_naive_loops(stride, padding, kh, kw):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 3, 5, 6)), rng.standard_normal((4, 3, kh, kw)), rng.standard_normal(4)
    out, _ = F.conv2d_forward(x, w, b, stride, padding)
    np.testing.assert_allclose(out, _naive_conv(x, w, b, stride, padding), rtol=1e-12, atol=1e-12)
    out_b, _ = F.binary_conv2d_forward(x, w, b, stride, padding, binary_input=False)
    np.testing.assert_allclose(out_b, _naive_conv(x, np.where(w >= 0, 1.0, -1.0), b, stride, padding),
                               rtol=1e-12, atol=1e-12)


def test_im2col_col2im_are_adjoint():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 4))
    cols = F.im2col(x, 3, 2, stride=2, padding=1)
    c = rng.standard_normal(cols.shape)
    lhs = (cols * c).sum()
    rhs = (x * F.col2im(c, x.shape, 3, 2, stride=2, padding=1)).sum()
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_binary_dense_forward_rule():
    x = np.array([[0.5, -2.0, 0.0]], dtype=np.float32)           # first layer: real input
    w = np.array([[0.3], [-0.1], [0.0]], dtype=np.float32)        # sign -> [1, -1, +1]
    out, _ = F.binary_dense_forward(x, w, np.array([0.25], np.float32), binary_input=False)
    assert out.dtype == np.float32
    assert out.tolist() == [[0.5 + 2.0 + 0.0 + 0.25]]


def test_batchnorm_forward_and_running_stats():
    rng = np.random.default_rng(3)
    bn = L.BatchNorm(3)
    x = (rng.standard_normal((50, 3)) * [1, 2, 3] + [0, 1, -1]).astype(np.float32)
    out = bn.forward(x, training=True)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=0), x.var(axis=0) / (x.var(axis=0) + 1e-4), rtol=1e-4)
    # running <- 0.9 * running + 0.1 * batch  (Lasagne alpha = .1)
    np.testing.assert_allclose(bn.buffers["running_mean"], 0.1 * x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.buffers["running_var"], 0.9 + 0.1 * x.var(axis=0), rtol=1e-5)
    ev = bn.forward(x, training=False)
    np.testing.assert_allclose(ev, (x - bn.buffers["running_mean"]) / np.sqrt(bn.buffers["running_var"] + 1e-4),
                               rtol=1e-5)


def test_spatial_batchnorm_is_per_channel():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3, 5, 5)) * np.array([1, 5, 9])[None, :, None, None]
    out = L.BatchNorm(3, spatial=True).astype(np.float64).forward(x)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, rtol=1e-3)


def test_shift_batchnorm_uses_powers_of_two():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 4)) * 3 + 1
    gamma = np.array([0.7, 1.0, 1.6, 3.1])
    out, cache = F.shift_batchnorm_forward(x, gamma, np.zeros(4))
    for v in (cache["s"], cache["g"]):
        e = np.log2(v)
        np.testing.assert_array_equal(e, np.round(e))
    np.testing.assert_allclose(out, (x - x.mean(0)) * cache["s"] * cache["g"])
    # the approximate normalization keeps the scale within a factor 2 of vanilla BN
    vanilla = F.batchnorm_forward(x, np.ones(4), np.zeros(4))[0]
    ratio = out.std(axis=0) / (vanilla.std(axis=0) * cache["g"])
    assert np.all((ratio > 0.5) & (ratio < 2.0))


def test_sign_activation_stochastic_only_in_training():
    x = np.full((4, 1000), 0.2)
    act = L.SignActivation(stochastic=True, rng=0)
    train_out = act.forward(x, training=True)
    assert 0.5 < (train_out == 1).mean() < 0.7                # p = hard_sigmoid(0.2) = 0.6
    assert np.all(act.forward(x, training=False) == 1)
    act.forward(np.array([[-1.5, -1.0, 0.0, 1.0, 1.5]]), training=True)
    assert act.backward(np.ones((1, 5))).tolist() == [[0, 1, 1, 1, 0]]     # STE gate


def test_maxpool_forward_and_dropout_eval():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    assert L.MaxPool2D().forward(x).tolist() == [[[[5, 7], [13, 15]]]]
    assert L.MaxPool2D(3, 1).forward(x).tolist() == [[[[10, 11], [14, 15]]]]
    d = L.Dropout(0.5, rng=0)
    y = np.ones((10, 10))
    assert np.array_equal(d.forward(y, training=False), y)
    out = d.forward(y, training=True)
    assert set(np.unique(out)) <= {0.0, 2.0}
    assert np.array_equal(d.backward(np.ones_like(y)), out)


# ---------------------------------------------------------------------------
# init, param_info, determinism
# ---------------------------------------------------------------------------

def test_param_info_and_init():
    d = L.BinaryDense(100, 50, rng=0)
    assert set(d.params) == set(d.grads) == set(d.param_info) == {"w"}
    assert d.param_info["w"] == {"binary": True, "lr_scale": pytest.approx(1 / np.sqrt(1.5 / 150))}
    w = d.params["w"]
    assert w.dtype == np.float32 and w.shape == (100, 50)
    assert -1 <= w.min() < -0.9 and 0.9 < w.max() <= 1           # U(-H, H), H = 1
    c = L.BinaryConv2D(3, 8, 3, bias=True, rng=0)
    assert c.params["w"].shape == (8, 3, 3, 3)
    assert c.param_info["w"]["lr_scale"] == pytest.approx(1 / np.sqrt(1.5 / (27 + 72)))
    assert c.param_info["b"] == {"binary": False, "lr_scale": 1.0}
    bn = L.BatchNorm(5)
    assert bn.param_info == {"gamma": {"binary": False, "lr_scale": 1.0},
                             "beta": {"binary": False, "lr_scale": 1.0}}
    assert bn.params["gamma"].tolist() == [1] * 5 and bn.params["beta"].tolist() == [0] * 5
    for layer in (L.SignActivation(), L.HardTanh(), L.MaxPool2D(), L.Dropout(0.1), L.Flatten()):
        assert layer.params == {} and layer.grads == {} and layer.param_info == {}
    dense = L.Dense(10, 4, rng=0)
    assert dense.param_info["w"] == {"binary": False, "lr_scale": 1.0}
    assert np.abs(dense.params["w"]).max() <= np.sqrt(6 / 14)


def test_same_seed_same_layer():
    a, b = L.BinaryConv2D(2, 3, 3, rng=7), L.BinaryConv2D(2, 3, 3, rng=7)
    assert_exact(a.params["w"], b.params["w"])
    assert not np.array_equal(a.params["w"], L.BinaryConv2D(2, 3, 3, rng=8).params["w"])


def test_grads_overwritten_in_place():
    layer = L.Dense(3, 2, rng=0)
    g = layer.grads["w"]
    x = np.ones((2, 3), np.float32)
    layer.forward(x)
    layer.backward(np.ones((2, 2), np.float32))
    first = g.copy()
    layer.forward(x)
    layer.backward(np.ones((2, 2), np.float32))
    assert layer.grads["w"] is g                                  # same array...
    assert_exact(g, first)                                        # ...overwritten, not summed


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("layer,x,expected", [
    (L.BinaryDense(10, 4, rng=0), np.zeros((2, 9)), r"BinaryDense\(in_features=10.*\(N, 10\)"),
    (L.Dense(10, 4, rng=0), np.zeros((2, 10, 1)), r"Dense.*\(N, 10\)"),
    (L.BinaryConv2D(3, 4, 3, rng=0), np.zeros((2, 2, 5, 5)), r"BinaryConv2D.*\(N, 3, H, W\)"),
    (L.BinaryConv2D(3, 4, 3, rng=0), np.zeros((2, 3, 2, 5)), r"BinaryConv2D.*H \+ 2\*0 >= 3"),
    (L.Conv2D(3, 4, 3, rng=0), np.zeros((3, 5, 5)), r"Conv2D.*\(N, 3, H, W\)"),
    (L.BatchNorm(4), np.zeros((2, 5)), r"BatchNorm.*\(N, 4\)"),
    (L.BatchNorm(4, spatial=True), np.zeros((2, 4)), r"BatchNorm.*\(N, 4, H, W\)"),
    (L.MaxPool2D(), np.zeros((2, 3)), r"MaxPool2D.*\(N, C, H, W\)"),
    (L.Flatten(), np.zeros(3), r"Flatten"),
])
def test_wrong_input_shape(layer, x, expected):
    with pytest.raises(ValueError, match=expected):
        layer.forward(x)


@pytest.mark.parametrize("layer", [L.BinaryDense(3, 2, rng=0), L.BatchNorm(3), L.SignActivation(),
                                   L.Dropout(0.2), L.MaxPool2D(), L.Flatten()])
def test_backward_before_forward(layer):
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((2, 3)))


def test_backward_with_wrong_grad_shape():
    layer = L.BinaryDense(3, 2, rng=0)
    layer.forward(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"grad_out has shape \(4, 3\).*\(4, 2\)"):
        layer.backward(np.ones((4, 3)))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError):
        L.Dropout(1.0)
    with pytest.raises(ValueError):
        L.BinaryDense(0, 3)
    with pytest.raises(ValueError):
        L.BatchNorm(3, eps=0)
    with pytest.raises(TypeError):
        L.BinaryConv2D(3, 4, "3")
    with pytest.raises(ValueError, match="mode"):
        F.batchnorm_forward(np.zeros((2, 2)), np.ones(2), np.zeros(2), mode="training")
    with pytest.raises(ValueError, match="running"):
        F.batchnorm_forward(np.zeros((2, 2)), np.ones(2), np.zeros(2), mode="eval")


def test_dropout_before_binary_layer_falls_back_to_float_in_training():
    # Dropout after a Sign gives 0 and +-1/(1-p): no packed form, so the layer computes the
    # same product with float BLAS in training; evaluation (no dropout) stays packed
    from minibnn import zoo
    model = zoo.build("mnist_mlp", hidden=32, depth=2, dropout_hidden=0.5, backend="cpu", seed=3)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 1, 28, 28)).astype(np.float32)
    ref = zoo.build("mnist_mlp", hidden=32, depth=2, dropout_hidden=0.5, backend="float", seed=3)
    out = model.forward(x, training=True)          # same seed: same dropout masks
    assert out.shape == (8, 10) and np.isfinite(out).all()
    assert_exact(out, ref.forward(x, training=True))
    assert_exact(model.forward(x, training=False), ref.forward(x, training=False))
    assert model[5].prepared is not None           # the hidden layer ran packed in eval


def test_backward_after_a_forward_that_dropped_nothing():
    # Dropout(p=0) in training and any Dropout in eval cache None (nothing dropped); that
    # must not read as "no forward yet"
    g = np.arange(6.0).reshape(2, 3)
    for p, training in ((0.0, True), (0.5, False), (0.0, False)):
        d = L.Dropout(p, rng=0)
        d.forward(np.ones((2, 3)), training=training)
        assert_exact(d.backward(g), g)


# ---------------------------------------------------------------------------
# a forward that raises changes nothing
# ---------------------------------------------------------------------------

def _snapshot(model):
    """Everything a forward may change: buffers, generator states, caches."""
    state = {k: v.copy() for k, v in model.state_dict().items()}
    rngs = {i: layer.rng.bit_generator.state for i, layer in enumerate(model)
            if hasattr(layer, "rng")}
    caches = [layer._cache for layer in model]      # identity of the kept caches
    return state, rngs, caches


def _assert_unchanged(model, snap):
    state, rngs, caches = snap
    for k, v in model.state_dict().items():
        assert_exact(v, state[k], k)
    for i, s in rngs.items():
        assert model[i].rng.bit_generator.state == s, f"layer {i} generator advanced"
    assert all(layer._cache is c for layer, c in zip(model, caches))


def test_failed_forward_leaves_model_unchanged():
    # NaN appears inside the network (a diverged BN gamma): the Sign after the BN raises,
    # after the Dropout drew its mask and the BN computed new running statistics
    model = Sequential([L.Dropout(0.5, rng=1), L.BatchNorm(3), L.SignActivation(stochastic=True, rng=2),
                        L.BinaryDense(3, 2, rng=3), L.BatchNorm(2)])
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    model.forward(x)                                # a good forward first: caches exist
    model[1].params["gamma"][1] = np.nan
    snap = _snapshot(model)
    with pytest.raises(ValueError, match="NaN"):
        model.forward(x, training=True)
    _assert_unchanged(model, snap)
    # the last good forward's caches still serve backward
    assert model.backward(np.ones((8, 2), np.float32)).shape == (8, 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused_before_any_layer(bad):
    model = Sequential([L.BinaryDense(3, 4, binary_input=False, rng=0), L.BatchNorm(4),
                        L.SignActivation(), L.Dropout(0.3, rng=1)])
    x = np.ones((5, 3), np.float32)
    x[2, 1] = bad
    snap = _snapshot(model)
    word = "NaN" if np.isnan(bad) else "infinity"
    for training in (True, False):
        with pytest.raises(ValueError, match=f"input contains {word}"):
            model.forward(x, training=training)
        _assert_unchanged(model, snap)
    with pytest.raises(ValueError, match=rf"BinaryDense.*input contains {word}"):
        model[0].forward(x, training=False)


def test_single_layer_failed_forward_changes_nothing():
    bn = L.BatchNorm(2)
    bn.params["gamma"][0] = np.nan                     # BN itself does not raise on NaN...
    out = bn.forward(np.ones((3, 2)))
    assert np.isnan(out[:, 0]).all()                   # ...but a wrong shape does:
    before = {k: v.copy() for k, v in bn.buffers.items()}
    cache = bn._cache
    with pytest.raises(ValueError, match="expected input"):
        bn.forward(np.ones((3, 5)))
    assert bn._cache is cache
    for k, v in bn.buffers.items():
        assert_exact(v, before[k], k)


@pytest.mark.parametrize("layer,shape", [
    (L.Flatten(), (0, 3, 4)), (L.BinaryDense(3, 2, rng=0), (0, 3)), (L.BatchNorm(3), (0, 3)),
    (L.BinaryConv2D(1, 2, 2, rng=0), (0, 1, 3, 3)), (L.SignActivation(), (0,)),
    (L.Dropout(0.2), ()),
])
def test_empty_batch_is_a_clear_error(layer, shape):
    with pytest.raises(ValueError, match="empty batch"):
        layer.forward(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match="empty batch"):
        Sequential([layer]).forward(np.zeros(shape, np.float32))


# ---------------------------------------------------------------------------
# default backend: the kernels, "float" by name
# ---------------------------------------------------------------------------

def test_default_backend_is_the_kernel_path(monkeypatch):
    monkeypatch.delenv("MINIBNN_BACKEND", raising=False)
    x = np.where(np.random.default_rng(0).standard_normal((4, 70)) >= 0, 1.0, -1.0)
    default = L.BinaryDense(70, 5, rng=0)
    flt = L.BinaryDense(70, 5, backend="float", rng=0)
    out = default.forward(x)
    assert default.backend is None and default.prepared is not None
    assert default.prepared.backend == "cpu"
    assert_exact(out, flt.forward(x))
    assert flt.prepared is None
    monkeypatch.setenv("MINIBNN_BACKEND", "reference")        # resolved at each forward
    default.forward(x)
    assert default.prepared.backend == "reference"
    from minibnn import zoo
    assert all(layer.backend is None for layer in zoo.build("mnist_mlp", hidden=8, depth=1)
               if hasattr(layer, "backend"))


def test_unknown_backend_is_refused_early():
    with pytest.raises(ValueError, match="backend must be one of"):
        L.BinaryDense(3, 2, backend="gpu")
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        Sequential([L.BinaryDense(3, 2, rng=0)]).set_backend("gpu")
    with pytest.raises(ValueError, match="unknown backend"):
        F.binary_dense_forward(np.ones((1, 3)), np.ones((3, 2)), backend="fast")


# ---------------------------------------------------------------------------
# stochastic binarization of the weights (Sec. 1.1, Eq. 2)
# ---------------------------------------------------------------------------

def _effective_weights(layer, training):
    """The w_b a dense layer used: its output on the identity (real input, float path)."""
    k = layer.in_features
    return layer.forward(np.eye(k, dtype=np.float32), training=training)


def test_stochastic_weights_frequencies_and_deterministic_eval():
    layer = L.BinaryDense(9, 1, binary_input=False, stochastic_weights=True, rng=5)
    w = np.array([-1.0, -0.6, -0.2, 0.0, 0.1, 0.5, 0.9, 1.0, 0.3], np.float32)[:, None]
    layer.params["w"][...] = w
    n = 4000
    draws = np.stack([_effective_weights(layer, True) for _ in range(n)])
    assert set(np.unique(draws)) == {-1.0, 1.0}
    mean = draws.mean(axis=0)
    expect = np.clip(w, -1, 1)                       # E[w_b] = 2 hard_sigmoid(w) - 1 = Htanh(w)
    sd = np.sqrt(np.maximum(1 - expect ** 2, 0) / n)
    assert np.all(np.abs(mean - expect) <= 5 * sd + 1e-12), (mean.ravel(), expect.ravel())
    # inference: sign(w), the same every time, and the generator is not used
    state = layer.rng.bit_generator.state
    for _ in range(3):
        assert_exact(_effective_weights(layer, False), np.where(w >= 0, 1.0, -1.0).astype(np.float32))
    assert layer.rng.bit_generator.state == state


def test_stochastic_weights_conv_config_and_seed(tmp_path):
    a = L.BinaryConv2D(2, 3, 2, stochastic_weights=True, rng=4)
    assert a.config()["stochastic_weights"] is True
    assert "stochastic_weights" not in L.BinaryConv2D(2, 3, 2, rng=4).config()
    x = np.where(np.random.default_rng(1).standard_normal((2, 2, 4, 4)) >= 0, 1.0, -1.0)
    b = L.layer_from_config("BinaryConv2D", a.config(), rng=4)
    assert_exact(a.forward(x, training=True), b.forward(x, training=True))   # same stream
    outs = {a.forward(x, training=True).tobytes() for _ in range(5)}
    assert len(outs) > 1                                                     # it is random
    det = a.forward(x, training=False)
    flt = L.BinaryConv2D(2, 3, 2, backend="float", rng=0)
    flt.params["w"][...] = a.params["w"]
    assert_exact(det, flt.forward(x, training=False))
    # the packed path uses the drawn weights too: same draws as the float path
    c = L.layer_from_config("BinaryConv2D", dict(a.config(), backend="float"), rng=4)
    d = L.layer_from_config("BinaryConv2D", dict(a.config(), backend="cpu"), rng=4)
    assert_exact(c.forward(x, training=True), d.forward(x, training=True))


def test_zoo_passes_stochastic_weights():
    from minibnn import zoo
    model = zoo.build("cifar10_convnet", width=1 / 64, fc_units=8, stochastic_weights=True)
    binary = [layer for layer in model if hasattr(layer, "stochastic_weights")]
    assert binary and all(layer.stochastic_weights for layer in binary)
    specs = zoo.specs("mnist_mlp", hidden=8, depth=1, stochastic_weights=True)
    assert all(s.kwargs["stochastic_weights"] for s in specs if s.kind == "BinaryDense")
    assert not any("stochastic_weights" in s.kwargs for s in zoo.mnist_mlp_specs(hidden=8))


# ---------------------------------------------------------------------------
# the device seam: minibnn.dispatch
# ---------------------------------------------------------------------------

class FakeDeviceArray:
    """Stands for a numba.cuda device array: has __cuda_array_interface__, wraps a host
    array so that a fake twin module can compute with it."""

    def __init__(self, host):
        self.host = host

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.host.shape, "typestr": self.host.dtype.str, "version": 3}

    shape = property(lambda self: self.host.shape)
    ndim = property(lambda self: self.host.ndim)
    dtype = property(lambda self: self.host.dtype)


def _fake_twin_module(calls):
    """A 'device twin' of minibnn.functional: unwraps FakeDeviceArrays, runs the host op,
    wraps array results again, and records each op name."""
    import types

    def unwrap(v):
        if isinstance(v, FakeDeviceArray):
            return v.host
        if isinstance(v, tuple):
            return tuple(unwrap(u) for u in v)
        return v

    def wrap(v):
        if isinstance(v, np.ndarray):
            return FakeDeviceArray(v)
        if isinstance(v, tuple):
            return tuple(wrap(u) for u in v)
        return v

    mod = types.ModuleType("fake_functional_cuda")

    def op(name):
        fn = getattr(F, name)

        def run(*args, **kw):
            calls.append(name)
            out = fn(*unwrap(args), **{k: unwrap(v) for k, v in kw.items()})
            if name.endswith("_forward") and isinstance(out, tuple):   # (out, host cache)
                return (wrap(out[0]),) + out[1:]
            return wrap(out)
        return run

    for name in F.__all__:
        if callable(getattr(F, name)):
            setattr(mod, name, op(name))
    return mod


@pytest.fixture
def fake_device(monkeypatch):
    import sys
    from minibnn import dispatch
    calls = []
    monkeypatch.setitem(sys.modules, "fake_functional_cuda", _fake_twin_module(calls))
    monkeypatch.setitem(dispatch.TWINS, "minibnn.functional", "fake_functional_cuda")
    dispatch.clear_cache()
    yield calls
    dispatch.clear_cache()


def test_dispatch_picks_the_module_by_where_arrays_live(fake_device):
    from minibnn import dispatch
    from minibnn.kernels import BackendUnavailable
    x = np.zeros(3)
    d = FakeDeviceArray(np.zeros(3))
    assert dispatch.twin(F, x, None, x) is F
    assert not dispatch.on_device(x) and not dispatch.on_device(None) and not dispatch.on_device(3.0)
    assert dispatch.on_device(d)
    assert dispatch.twin(F, d, None, d).__name__ == "fake_functional_cuda"
    with pytest.raises(TypeError, match="argument 1 is a host array.*mixing host and device"):
        dispatch.twin(F, d, x)
    with pytest.raises(BackendUnavailable, match="has no device twin"):
        dispatch.twin(reference, d)


def test_dispatch_unavailable_twin_says_why(monkeypatch):
    from minibnn import dispatch
    from minibnn.kernels import BackendUnavailable
    monkeypatch.setitem(dispatch.TWINS, "minibnn.functional", "minibnn.no_such_twin")
    dispatch.clear_cache()
    try:
        with pytest.raises(BackendUnavailable, match="minibnn.no_such_twin.*cannot be used here"):
            dispatch.twin(F, FakeDeviceArray(np.zeros(2)))
        with pytest.raises(BackendUnavailable, match="no_such_twin"):    # remembered
            dispatch.twin(F, FakeDeviceArray(np.zeros(2)))
    finally:
        dispatch.clear_cache()


def test_layers_run_through_the_twin(fake_device):
    """A model whose arrays are 'on the device' runs every op through the twin module and
    gives the host model's results; nothing calls NumPy on a device array."""
    def build():
        return Sequential([L.BinaryDense(6, 4, binary_input=False, rng=0), L.BatchNorm(4),
                           L.SignActivation(), L.Dropout(0.25, rng=1), L.Dense(4, 3, rng=2)])
    host, dev = build(), build()
    for layer in dev:
        for d in (layer.params, layer.grads, layer.buffers):
            for k in d:
                d[k] = FakeDeviceArray(d[k])
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    g = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    out_h = host.forward(x)
    out_d = dev.forward(FakeDeviceArray(x))
    assert isinstance(out_d, FakeDeviceArray)
    assert_exact(out_d.host, out_h)
    assert_exact(dev.backward(FakeDeviceArray(g)).host, host.backward(g))
    for (n, _, gh, _), (_, _, gd, _) in zip(host.parameters(), dev.parameters()):
        assert_exact(gd.host, gh, n)
    for (n, bh), (_, bd) in zip(host.buffers(), dev.buffers()):
        assert_exact(bd.host, bh, n)
    for op in ("as_input", "check_finite", "binary_dense_forward", "batchnorm_forward",
               "running_average", "ste_sign_forward", "dropout_forward", "dense_backward",
               "ste_sign_backward", "batchnorm_backward", "binary_dense_backward", "copy_into"):
        assert op in fake_device, op


def test_importing_minibnn_does_not_import_numba_cuda():
    import os
    import subprocess
    import sys
    code = ("import sys, numpy as np\n"
            "import minibnn, minibnn.dispatch, minibnn.layers, minibnn.model, minibnn.zoo\n"
            "m = minibnn.zoo.build('mnist_mlp', hidden=8, depth=1, in_features=4)\n"
            "m.forward(np.ones((2, 4), np.float32))\n"
            "assert 'numba.cuda' not in sys.modules, 'numba.cuda imported'\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MINIBNN_BACKEND", "NUMBA_ENABLE_CUDASIM")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_simulator_arrays_count_as_device_arrays():
    # the CUDA simulator's arrays have no __cuda_array_interface__; numba.cuda knows them
    import os
    import subprocess
    import sys
    code = ("import numpy as np\n"
            "from numba import cuda\n"
            "from minibnn import dispatch\n"
            "assert dispatch.on_device(cuda.to_device(np.zeros(3, np.float32)))\n"
            "assert not dispatch.on_device(np.zeros(3)) and not dispatch.on_device([1.0])\n")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
