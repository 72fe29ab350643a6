"""Every backward against central differences (float64), and the straight-through pieces.

Smooth operations must match finite differences to rel_error < 1e-6.  Quantizers are
checked against their documented pseudo-gradient instead: the STE formula, the binary
layers' gradient w.r.t. sign(w) with sign(w) held fixed, and the shift-based BN against
its smooth STE surrogate (see :func:`minibnn.functional.shift_batchnorm_forward`).
"""

import numpy as np
import pytest
from hypothesis import given

from minibnn import functional as F
from minibnn import layers as L
from minibnn import losses
from minibnn.quantize import (ap2, hard_sigmoid, sign, ste_sign_backward, ste_sign_forward,
                              stochastic_sign)
from minibnn.testing import (check_gradient, check_layer_gradients, numeric_gradient,
                             real_arrays, rel_error)

TOL = 1e-6


def rand(rng, *shape):
    return rng.standard_normal(shape)


# ---------------------------------------------------------------------------
# float layers
# ---------------------------------------------------------------------------

def test_dense_gradients():
    rng = np.random.default_rng(0)
    x, w, b = rand(rng, 4, 5), rand(rng, 5, 3), rand(rng, 3)
    dout = rand(rng, 4, 3)
    dx, dw, db = F.dense_backward(dout, F.dense_forward(x, w, b)[1])
    check_gradient(lambda v: F.dense_forward(v, w, b)[0], x, dout, dx)
    check_gradient(lambda v: F.dense_forward(x, v, b)[0], w, dout, dw)
    check_gradient(lambda v: F.dense_forward(x, w, v)[0], b, dout, db)


@pytest.mark.parametrize("stride,padding,kernel", [(1, 0, 3), (1, 1, 3), (2, 1, 3), (2, 0, 2),
                                                   (3, 2, (2, 3))])
def test_conv2d_gradients(stride, padding, kernel):
    rng = np.random.default_rng(1)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x, w, b = rand(rng, 2, 3, 6, 5), rand(rng, 4, 3, kh, kw), rand(rng, 4)
    out, cache = F.conv2d_forward(x, w, b, stride, padding)
    dout = rand(rng, *out.shape)
    dx, dw, db = F.conv2d_backward(dout, cache)
    check_gradient(lambda v: F.conv2d_forward(v, w, b, stride, padding)[0], x, dout, dx)
    check_gradient(lambda v: F.conv2d_forward(x, v, b, stride, padding)[0], w, dout, dw)
    check_gradient(lambda v: F.conv2d_forward(x, w, v, stride, padding)[0], b, dout, db)


def test_float_layers_via_helper():
    rng = np.random.default_rng(2)
    check_layer_gradients(L.Dense(5, 3, rng=0).astype(np.float64), rand(rng, 4, 5))
    check_layer_gradients(L.Conv2D(2, 3, 3, stride=2, padding=1, rng=0).astype(np.float64),
                          rand(rng, 2, 2, 5, 5))


# ---------------------------------------------------------------------------
# binary layers: dx exact for fixed sign(w); dw = gradient w.r.t. sign(w)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("binary_input", [False, True])
def test_binary_dense_gradients(binary_input):
    rng = np.random.default_rng(3)
    x, w, b = rand(rng, 4, 7), rand(rng, 7, 3), rand(rng, 3)
    out, cache = F.binary_dense_forward(x, w, b, binary_input=binary_input)
    dout = rand(rng, *out.shape)
    dx, dw, db = F.binary_dense_backward(dout, cache)
    # dx: finite differences in x, sign(w) fixed (w itself is not perturbed)
    check_gradient(lambda v: F.binary_dense_forward(v, w, b, binary_input)[0], x, dout, dx)
    # dw: the gradient w.r.t. sign(w) (straight through to w), by formula and by
    # finite differences of the float layer at w_b = sign(w)
    wb = sign(w).astype(np.float64)
    np.testing.assert_allclose(dw, x.T @ dout, rtol=1e-12)
    check_gradient(lambda v: F.dense_forward(x, v, b)[0], wb, dout, dw)
    check_gradient(lambda v: F.binary_dense_forward(x, w, v, binary_input)[0], b, dout, db)


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1)])
def test_binary_conv2d_gradients(stride, padding):
    rng = np.random.default_rng(4)
    x, w = rand(rng, 2, 3, 5, 5), rand(rng, 2, 3, 3, 3)
    out, cache = F.binary_conv2d_forward(x, w, None, stride, padding, binary_input=False)
    dout = rand(rng, *out.shape)
    dx, dw, db = F.binary_conv2d_backward(dout, cache)
    assert db is None
    check_gradient(lambda v: F.binary_conv2d_forward(v, w, None, stride, padding, False)[0],
                   x, dout, dx)
    wb = sign(w).astype(np.float64)
    check_gradient(lambda v: F.conv2d_forward(x, v, None, stride, padding)[0], wb, dout, dw)
    ref = F.conv2d_backward(dout, F.conv2d_forward(x, wb, None, stride, padding)[1])[1]
    np.testing.assert_allclose(dw, ref, rtol=1e-12)


def test_binary_conv2d_backward_after_packed_forward():
    # the packed forward keeps no im2col; the backward must rebuild the same gradients
    rng = np.random.default_rng(5)
    x = sign(rand(rng, 2, 3, 6, 6)).astype(np.float64)
    w = rand(rng, 4, 3, 3, 3)
    dout = rand(rng, 2, 4, 3, 3)
    g_packed = F.binary_conv2d_backward(dout, F.binary_conv2d_forward(x, w, None, 2, 1, True, "cpu")[1])
    g_float = F.binary_conv2d_backward(dout, F.binary_conv2d_forward(x, w, None, 2, 1, True, "float")[1])
    for a, b in zip(g_packed[:2], g_float[:2]):
        np.testing.assert_array_equal(a, b)


def test_binary_layers_dx_via_helper():
    rng = np.random.default_rng(6)
    check_layer_gradients(L.BinaryDense(6, 4, binary_input=False, bias=True, rng=0).astype(np.float64),
                          rand(rng, 3, 6), params=["b"])
    check_layer_gradients(L.BinaryConv2D(2, 3, 3, padding=1, binary_input=False, rng=0).astype(np.float64),
                          rand(rng, 2, 2, 4, 4), params=[])


# ---------------------------------------------------------------------------
# batch normalization
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 3, 2)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm_gradients(shape, mode):
    rng = np.random.default_rng(7)
    C = shape[1]
    x = 2 * rand(rng, *shape) + 1
    gamma, beta = rand(rng, C), rand(rng, C)
    rm, rv = rand(rng, C), rng.uniform(0.5, 2, C)
    out, cache = F.batchnorm_forward(x, gamma, beta, mode, rm.copy(), rv.copy())
    dout = rand(rng, *shape)
    dx, dgamma, dbeta = F.batchnorm_backward(dout, cache)

    def f(xx=x, g=gamma, b=beta):
        return F.batchnorm_forward(xx, g, b, mode, rm.copy(), rv.copy())[0]

    # h = 1e-5: BN is smooth, and with h = 1e-6 the central difference's own rounding
    # noise (~1e-16 / h relative to outputs of order 1) is ~1e-6 relative to small dx
    # entries -- the check would measure the reference's noise, not the formula
    check_gradient(lambda v: f(xx=v), x, dout, dx, h=1e-5)
    check_gradient(lambda v: f(g=v), gamma, dout, dgamma, h=1e-5)
    check_gradient(lambda v: f(b=v), beta, dout, dbeta, h=1e-5)


def _shift_bn_surrogate(x, gamma, beta, off_a, off_s, off_g, eps):
    """Shift BN with every AP2(v) replaced by v + offset (offsets frozen): the smooth
    function whose exact gradient the straight-through backward is.  x: (m, D) rows."""
    c = x - x.mean(axis=0)
    var = (c * (c + off_a)).mean(axis=0)
    r = 1.0 / np.sqrt(var + eps)
    return (gamma + off_g) * (c * (r + off_s)) + beta


@pytest.mark.parametrize("shape", [(8, 3), (2, 3, 3, 2)])
def test_shift_batchnorm_matches_ste_surrogate(shape):
    rng = np.random.default_rng(8)
    C, eps = shape[1], 1e-4
    x = 3 * rand(rng, *shape) + 0.5
    gamma, beta = rng.uniform(0.3, 2, C), rand(rng, C)
    out, cache = F.shift_batchnorm_forward(x, gamma, beta, "train", eps=eps)
    dout = rand(rng, *shape)
    dx, dgamma, dbeta = F.shift_batchnorm_backward(dout, cache)

    def rows(a):
        return a if a.ndim == 2 else a.transpose(0, 2, 3, 1).reshape(-1, C)

    def unrows(r):
        if len(shape) == 2:
            return r
        N, _, H, W = shape
        return r.reshape(N, H, W, C).transpose(0, 3, 1, 2)

    # offsets frozen at the forward point
    c0 = rows(x) - rows(x).mean(axis=0)
    off_a = ap2(c0) - c0
    r0 = 1.0 / np.sqrt((c0 * ap2(c0)).mean(axis=0) + eps)
    off_s = ap2(r0) - r0
    off_g = ap2(gamma) - gamma

    def sur(xx=x, g=gamma, b=beta):
        return unrows(_shift_bn_surrogate(rows(xx), g, b, off_a, off_s, off_g, eps))

    # the surrogate is the shift BN at the forward point...
    np.testing.assert_allclose(sur(), out, rtol=1e-12, atol=1e-12)
    # ...and the backward is its exact gradient
    check_gradient(lambda v: sur(xx=v), x, dout, dx)
    check_gradient(lambda v: sur(g=v), gamma, dout, dgamma)
    check_gradient(lambda v: sur(b=v), beta, dout, dbeta)


def test_shift_batchnorm_eval_gradient():
    rng = np.random.default_rng(9)
    x, gamma, beta = rand(rng, 5, 3), rng.uniform(0.3, 2, 3), rand(rng, 3)
    rm, rv = rand(rng, 3), rng.uniform(0.5, 2, 3)
    out, cache = F.shift_batchnorm_forward(x, gamma, beta, "eval", rm, rv)
    dout = rand(rng, 5, 3)
    dx, dgamma, _ = F.shift_batchnorm_backward(dout, cache)
    # eval is affine in x: exact finite differences; gamma only through AP2 (STE)
    check_gradient(lambda v: F.shift_batchnorm_forward(v, gamma, beta, "eval", rm, rv)[0], x, dout, dx)
    np.testing.assert_allclose(dgamma, (dout * cache["xhat"]).sum(axis=0))


def test_batchnorm_layers_via_helper():
    rng = np.random.default_rng(10)
    check_layer_gradients(L.BatchNorm(4).astype(np.float64), rand(rng, 6, 4))
    check_layer_gradients(L.BatchNorm(3, spatial=True).astype(np.float64), rand(rng, 2, 3, 3, 3))
    bn = L.BatchNorm(4).astype(np.float64)
    bn.forward(rand(rng, 8, 4))                       # moves the running stats off (0, 1)
    check_layer_gradients(bn, rand(rng, 6, 4), training=False)


# ---------------------------------------------------------------------------
# pooling, dropout, activations, reshape
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 2), (2, 1), (3, 3)])
def test_maxpool_gradients(kernel, stride):
    rng = np.random.default_rng(11)
    x = rand(rng, 2, 2, 7, 6)               # continuous random values: no ties
    out, cache = F.maxpool2d_forward(x, kernel, stride)
    dout = rand(rng, *out.shape)
    dx = F.maxpool2d_backward(dout, cache)
    check_gradient(lambda v: F.maxpool2d_forward(v, kernel, stride)[0], x, dout, dx)


def test_dropout_gradient_fixed_mask():
    rng = np.random.default_rng(12)
    x = rand(rng, 5, 6)
    out, mask = F.dropout_forward(x, 0.4, "train", np.random.default_rng(7))
    dout = rand(rng, 5, 6)
    dx = F.dropout_backward(dout, mask)
    # reseeding the generator on every call keeps the mask fixed
    check_gradient(lambda v: F.dropout_forward(v, 0.4, "train", np.random.default_rng(7))[0],
                   x, dout, dx)
    assert set(np.unique(mask)) <= {0.0, 1 / 0.6}


def test_hardtanh_gradient_away_from_kinks():
    rng = np.random.default_rng(13)
    x = rng.uniform(-2, 2, (6, 7))
    x[np.abs(np.abs(x) - 1) < 0.05] = 0.5       # finite differences need |x| != 1
    dout = rand(rng, 6, 7)
    dx = F.hardtanh_backward(dout, F.hardtanh_forward(x)[1])
    check_gradient(lambda v: F.hardtanh_forward(v)[0], x, dout, dx)
    check_layer_gradients(L.HardTanh(), x)


def test_flatten_gradient():
    rng = np.random.default_rng(14)
    x = rand(rng, 2, 3, 2, 2)
    check_layer_gradients(L.Flatten(), x)


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["squared_hinge", "softmax_cross_entropy"])
def test_loss_gradients(loss):
    rng = np.random.default_rng(15)
    s = 2 * rand(rng, 6, 4)
    y = rng.integers(0, 4, 6)
    fn = (lambda v: losses.squared_hinge(v, y, 4)) if loss == "squared_hinge" else \
        (lambda v: losses.softmax_cross_entropy(v, y))
    _, grad = fn(s)
    check_gradient(lambda v: np.array(fn(v)[0]), s, np.array(1.0), grad)


def test_squared_hinge_value_by_hand():
    s = np.array([[0.5, -2.0, 1.5], [0.0, 0.2, -0.3]])
    y = np.array([0, 2])
    # targets [[1,-1,-1],[-1,-1,1]]; margins [[.5,0,2.5],[1,1.2,1.3]]
    expected = (0.25 + 0 + 6.25 + 1 + 1.44 + 1.69) / 6
    loss, _ = losses.squared_hinge(s, y, 3)
    assert loss == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------
# quantizers and the straight-through estimator
# ---------------------------------------------------------------------------

@given(real_arrays((5, 7)), real_arrays((5, 7)))
def test_ste_gradient_equals_formula(x, g):
    x = x.copy()
    x[0, :4] = [1.0, -1.0, 1.0 + 1e-9, -1.0 - 1e-9]        # the gate's boundary
    out, cache = ste_sign_forward(x)
    np.testing.assert_array_equal(out, np.where(x >= 0, 1.0, -1.0))
    np.testing.assert_array_equal(ste_sign_backward(g, cache), g * (np.abs(x) <= 1))
    assert ste_sign_backward(g, cache)[0, :4].tolist() == [g[0, 0], g[0, 1], 0, 0]


def test_sign_convention():
    got = sign(np.array([0.0, -0.0, 1e-30, -1e-30, 3, -3]))
    assert got.dtype == np.float32
    assert got.tolist() == [1, 1, 1, -1, 1, -1]
    with pytest.raises(ValueError, match="NaN"):
        sign(np.array([1.0, np.nan]))


def test_stochastic_sign_frequencies_match_hard_sigmoid():
    rng = np.random.default_rng(1234)
    xs = np.array([-1.5, -1.0, -0.6, -0.2, 0.0, 0.3, 0.8, 1.0, 2.0])
    n = 20000
    draws = stochastic_sign(np.repeat(xs[:, None], n, axis=1), rng)
    freq = (draws == 1).mean(axis=1)
    p = hard_sigmoid(xs)
    # 5 standard deviations of a binomial proportion (0 at p in {0, 1}: exact there)
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12)
    assert set(np.unique(draws)) == {-1.0, 1.0}


def test_stochastic_sign_is_seeded():
    x = np.linspace(-1, 1, 50)
    a = stochastic_sign(x, np.random.default_rng(3))
    b = stochastic_sign(x, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError):
        stochastic_sign(x, 3)


@given(real_arrays((40,)))
def test_ap2_is_the_nearest_power_of_two_in_log_domain(x):
    a = ap2(x)
    nz = x != 0
    assert np.all(a[~nz] == 0)
    assert np.all(np.sign(a[nz]) == np.sign(x[nz]))
    e = np.log2(np.abs(a[nz]))
    np.testing.assert_array_equal(e, np.round(e))                       # powers of two
    assert np.all(np.abs(np.log2(np.abs(x[nz])) - e) <= 0.5 + 1e-12)    # nearest in log2


def test_ap2_examples():
    assert ap2(np.array([3.0, -3.0, 0.7, 0.3, 1.0, 0.0])).tolist() == [4, -4, 0.5, 0.25, 1, 0]
    assert ap2(np.float32(5.0)).dtype == np.float32


def test_ap2_non_finite_values_pass_through():
    # sign(x) * 2**round(log2|x|) at +-inf is +-inf; NaN stays NaN so that a diverged
    # statistic reaches the callers' NaN checks instead of turning into 0
    got = ap2(np.array([np.inf, -np.inf, np.nan, -0.0, 2.0]))
    assert got[0] == np.inf and got[1] == -np.inf and np.isnan(got[2])
    assert got[3:].tolist() == [0.0, 2.0]
    assert ap2(np.array([np.nan], np.float32)).dtype == np.float32
    # the midpoint between powers (2**k * sqrt 2) is no float: float64(sqrt 2) lies just
    # above it (-> 2), the float before it just below (-> 1)
    r2 = np.sqrt(2.0)
    assert ap2(np.array([r2, np.nextafter(r2, 0.0), -r2])).tolist() == [2.0, 1.0, -2.0]
    # the top of the range rounds up past the largest float
    assert ap2(np.array([np.finfo(np.float32).max], np.float32))[0] == np.inf


def test_shift_batchnorm_nan_propagates():
    x = np.ones((4, 2))
    x[0, 0] = np.nan
    out, _ = F.shift_batchnorm_forward(x, np.ones(2), np.zeros(2))
    assert np.isnan(out[:, 0]).all() and np.isfinite(out[:, 1]).all()


def test_stochastic_weights_gradient_is_straight_through():
    # with stochastic w_b the rule is the same: dx = dout @ w_b.T for the drawn w_b,
    # dw = x.T @ dout (the gradient w.r.t. w_b, passed to the latent w)
    rng = np.random.default_rng(18)
    x, w = rand(rng, 4, 6), rng.uniform(-1, 1, (6, 3))
    out, cache = F.binary_dense_forward(x, w, None, False, "float",
                                        stochastic_rng=np.random.default_rng(3))
    wb = cache["w_b"]
    assert set(np.unique(wb)) <= {-1.0, 1.0}
    np.testing.assert_allclose(out, x @ wb, rtol=1e-12)
    dout = rand(rng, 4, 3)
    dx, dw, _ = F.binary_dense_backward(dout, cache)
    np.testing.assert_allclose(dx, dout @ wb.T, rtol=1e-12)
    np.testing.assert_allclose(dw, x.T @ dout, rtol=1e-12)
    check_gradient(lambda v: F.dense_forward(x, v)[0], wb.astype(np.float64), dout, dw)


# ---------------------------------------------------------------------------
# the checker itself must catch a wrong backward
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("bug", ["transposed", "scaled"])
def test_gradient_checker_fails_on_wrong_backward(bug):
    rng = np.random.default_rng(16)
    x, w = rand(rng, 4, 4), rand(rng, 4, 4)
    dout = rand(rng, 4, 4)
    right = dout @ w.T
    wrong = dout @ w if bug == "transposed" else 1.001 * right
    check_gradient(lambda v: F.dense_forward(v, w)[0], x, dout, right)
    with pytest.raises(AssertionError, match="gradient check failed"):
        check_gradient(lambda v: F.dense_forward(v, w)[0], x, dout, wrong)


def test_layer_checker_fails_on_wrong_backward():
    class BrokenDense(L.Dense):
        def _backward(self, grad_out, cache):
            dx = super()._backward(grad_out, cache)
            self.grads["w"] *= 2                 # wrong dw, right dx
            return dx

    rng = np.random.default_rng(17)
    layer = BrokenDense(3, 2, rng=0).astype(np.float64)
    with pytest.raises(AssertionError, match="d/dw"):
        check_layer_gradients(layer, rand(rng, 4, 3))


def test_numeric_gradient_restores_input():
    x = np.arange(6.0).reshape(2, 3)
    before = x.copy()
    numeric_gradient(lambda v: v ** 2, x, np.ones_like(x))
    np.testing.assert_array_equal(x, before)
    assert rel_error(x, before) == 0.0
