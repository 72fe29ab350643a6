"""Optimizers and schedules against hand-computed steps on tiny arrays.

The models here are fakes (a ``parameters()`` method over fixed arrays), so these tests do
not depend on the layers.  Expected values are computed in float64 from the formulas
written out in each test; the optimizers work in float32.
"""

import io
import math

import numpy as np
import pytest

from minibnn import optim, schedules
from minibnn.optim import _ap2


class FakeModel:
    """``parameters()`` yields ``(name, param, grad, info)``; grads set with ``set_grads``."""

    def __init__(self, **params):
        # params: name -> (initial value, binary, lr_scale)
        self.p, self.g, self.info = {}, {}, {}
        for name, (value, binary, scale) in params.items():
            self.p[name] = np.array(value, dtype=np.float32)
            self.g[name] = np.zeros_like(self.p[name])
            self.info[name] = {"binary": binary, "lr_scale": scale}

    def set_grads(self, **grads):
        for name, g in grads.items():
            # a fresh array each time: the optimizer must re-read model.parameters()
            self.g[name] = np.array(g, dtype=np.float32)

    def parameters(self):
        for name in self.p:
            yield name, self.p[name], self.g[name], self.info[name]

    def copy(self):
        new = FakeModel.__new__(FakeModel)
        new.p = {k: v.copy() for k, v in self.p.items()}
        new.g = {k: v.copy() for k, v in self.g.items()}
        new.info = {k: dict(v) for k, v in self.info.items()}
        return new


def f64(x):
    return np.asarray(x, dtype=np.float64)


def close(got, expected, rtol=2e-6, atol=1e-9):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), f64(expected), rtol=rtol, atol=atol)


GRADS = [
    {"w": [0.5, -1.0, 0.25], "b": [1.0, -2.0]},
    {"w": [-0.3, 0.2, 0.0], "b": [0.5, 0.5]},
    {"w": [0.1, -0.4, 2.0], "b": [-1.0, 0.25]},
]
W0, B0 = [0.1, -0.2, 0.3], [1.0, 0.0]
LR, SCALE = 0.01, 3.0


def two_param_model():
    # w: a latent binary weight (lr_scale 3); b: a BN-like float param whose lr_scale 7 must
    # be ignored (non-binary params always use scale 1)
    return FakeModel(w=(W0, True, SCALE), b=(B0, False, 7.0))


# ---------------------------------------------------------------------------
# _ap2
# ---------------------------------------------------------------------------

def test_ap2_values():
    x = np.array([0.0, 1.0, 3.0, -0.3, 1.4, 1.5, -6.0, 2.0 ** -20, 1e8])
    #             2^0  2^2  -2^-2  2^0  2^1  -2^3  2^-20     2^27 (log2 1e8 = 26.58)
    expected = [0.0, 1.0, 4.0, -0.25, 1.0, 2.0, -8.0, 2.0 ** -20, 2.0 ** 27]
    np.testing.assert_array_equal(_ap2(x), expected)
    assert float(_ap2(0.0)) == 0.0
    assert float(_ap2(-0.75)) == -1.0          # log2 0.75 = -0.415 -> round 0


# ---------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------

def test_sgd_plain_two_steps():
    model = two_param_model()
    opt = optim.SGD(model, lr=LR)
    w, b = f64(W0), f64(B0)
    for g in GRADS[:2]:
        model.set_grads(**g)
        opt.step()
        # w <- clip(w - lr * scale * g, -1, 1);  b <- b - lr * g
        w = np.clip(w - LR * SCALE * f64(g["w"]), -1, 1)
        b = b - LR * f64(g["b"])
        close(model.p["w"], w)
        close(model.p["b"], b)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_three_steps(nesterov):
    mu = 0.9
    model = two_param_model()
    opt = optim.SGD(model, lr=LR, momentum=mu, nesterov=nesterov)
    w, b = f64(W0), f64(B0)
    buf_w, buf_b = np.zeros(3), np.zeros(2)
    for g in GRADS:
        model.set_grads(**g)
        opt.step()
        gw, gb = f64(g["w"]), f64(g["b"])
        # buf <- mu * buf + g;  d = g + mu * buf (nesterov) or buf;  w <- w - eta * d
        buf_w = mu * buf_w + gw
        buf_b = mu * buf_b + gb
        dw = gw + mu * buf_w if nesterov else buf_w
        db = gb + mu * buf_b if nesterov else buf_b
        w = np.clip(w - LR * SCALE * dw, -1, 1)
        b = b - LR * db
        close(model.p["w"], w)
        close(model.p["b"], b)


# ---------------------------------------------------------------------------
# Adam, AdaMax
# ---------------------------------------------------------------------------

def test_adam_three_steps():
    b1, b2, eps = 0.9, 0.999, 1e-8
    model = two_param_model()
    opt = optim.Adam(model, lr=LR, beta1=b1, beta2=b2, eps=eps)
    p = {"w": f64(W0), "b": f64(B0)}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    for t, g in enumerate(GRADS, start=1):
        model.set_grads(**g)
        opt.step()
        for k, eta in (("w", LR * SCALE), ("b", LR)):
            gk = f64(g[k])
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk ** 2
            a_t = eta * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            p[k] = p[k] - a_t * m[k] / (np.sqrt(v[k]) + eps)
        p["w"] = np.clip(p["w"], -1, 1)
        close(model.p["w"], p["w"], rtol=1e-5)
        close(model.p["b"], p["b"], rtol=1e-5)
    assert opt.t == 3


def test_adam_first_step_by_hand():
    # t=1: m = 0.1 g, v = 0.001 g^2, a_1 = lr * sqrt(0.001) / 0.1, so the step is
    # lr * sign(g) * |g| / (|g| + eps / sqrt(0.001)) ~= lr * sign(g)
    model = FakeModel(x=([0.0, 0.0], False, 1.0))
    opt = optim.Adam(model, lr=0.5)
    model.set_grads(x=[2.0, -4.0])
    opt.step()
    close(model.p["x"], [-0.5, 0.5], rtol=1e-6)


def test_adamax_three_steps():
    b1, b2, eps = 0.9, 0.999, 1e-8
    model = two_param_model()
    opt = optim.AdaMax(model, lr=LR, beta1=b1, beta2=b2, eps=eps)
    p = {"w": f64(W0), "b": f64(B0)}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    u = {k: np.zeros_like(v) for k, v in p.items()}
    for t, g in enumerate(GRADS, start=1):
        model.set_grads(**g)
        opt.step()
        for k, eta in (("w", LR * SCALE), ("b", LR)):
            gk = f64(g[k])
            m[k] = b1 * m[k] + (1 - b1) * gk
            u[k] = np.maximum(b2 * u[k], np.abs(gk))
            p[k] = p[k] - (eta / (1 - b1 ** t)) * m[k] / (u[k] + eps)
        p["w"] = np.clip(p["w"], -1, 1)
        close(model.p["w"], p["w"], rtol=1e-5)
        close(model.p["b"], p["b"], rtol=1e-5)


# ---------------------------------------------------------------------------
# ShiftAdaMax
# ---------------------------------------------------------------------------

def test_shift_adamax_first_step_by_hand():
    # defaults: beta1 = 1 - 2^-3, beta2 = 1 - 2^-10; lr = 2^-10, t = 1
    #   m = 2^-3 * g;  v = |g|
    #   AP2(lr / (1 - beta1)) = AP2(2^-10 * 8) = 2^-7
    #   g = 0.3:  AP2(1 / 0.3) = AP2(3.33) = 4    -> step = 2^-7 * 4 * 0.0375
    #   g = -3:   AP2(1 / 3)   = AP2(0.333) = 2^-2 -> step = 2^-7 * 2^-2 * (-0.375)
    #   g = 0:    m = 0                          -> step = 0
    model = FakeModel(x=([0.0, 0.0, 0.5], False, 1.0))
    opt = optim.ShiftAdaMax(model, lr=2.0 ** -10)
    model.set_grads(x=[0.3, -3.0, 0.0])
    opt.step()
    m = np.float32(0.125) * np.array([0.3, -3.0, 0.0], dtype=np.float32)
    expected = np.array([0.0, 0.0, 0.5], dtype=np.float32) - np.array(
        [2.0 ** -7 * 4, 2.0 ** -7 * 2.0 ** -2, 0.0], dtype=np.float32) * m
    np.testing.assert_array_equal(model.p["x"], expected)


def test_shift_adamax_two_steps_formula():
    b1, b2, eps, lr = 0.875, 1 - 2.0 ** -10, 1e-8, 0.003
    model = two_param_model()
    opt = optim.ShiftAdaMax(model, lr=lr)
    p = {"w": f64(W0), "b": f64(B0)}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    for t, g in enumerate(GRADS[:2], start=1):
        model.set_grads(**g)
        opt.step()
        for k, eta in (("w", lr * SCALE), ("b", lr)):
            gk = f64(g[k])
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = np.maximum(b2 * v[k], np.abs(gk))
            # step = AP2(eta / (1 - b1^t)) * AP2(1 / (v + eps)) * m
            p[k] = p[k] - _ap2(eta / (1 - b1 ** t)) * _ap2(1 / (v[k] + eps)) * m[k]
        p["w"] = np.clip(p["w"], -1, 1)
        close(model.p["w"], p["w"], rtol=1e-5)
        close(model.p["b"], p["b"], rtol=1e-5)


@pytest.mark.parametrize("binary,scale", [(False, 1.0), (True, 3.7)])
def test_shift_adamax_steps_are_powers_of_two(binary, scale):
    rng = np.random.default_rng(0)
    model = FakeModel(x=(np.zeros(50), binary, scale))
    opt = optim.ShiftAdaMax(model, lr=0.0013)
    for step_no in range(4):
        model.p["x"][...] = 0.0                 # so the new value is exactly -step
        g = rng.standard_normal(50) * 10.0 ** rng.integers(-3, 2, 50)
        if step_no == 0:
            g[:3] = 0.0                         # m = 0 entries: no step
        model.set_grads(x=g)
        opt.step()
        step = -model.p["x"].astype(np.float64)
        m = opt.state_dict()["m/x"].astype(np.float64)
        nz = m != 0
        assert np.all(step[~nz] == 0)
        ratio = step[nz] / m[nz]
        k = np.log2(ratio)
        assert np.all(ratio > 0)
        np.testing.assert_array_equal(k, np.round(k))   # step / m == 2^k exactly


# ---------------------------------------------------------------------------
# clipping and lr_scale
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda m: optim.SGD(m, lr=1.0),
    lambda m: optim.Adam(m, lr=1.0),
    lambda m: optim.AdaMax(m, lr=1.0),
    lambda m: optim.ShiftAdaMax(m, lr=1.0),
])
def test_binary_params_clipped_float_params_not(make):
    model = FakeModel(w=([0.9, -0.9, 0.0], True, 2.0), b=([0.9, -0.9, 0.0], False, 1.0))
    opt = make(model)
    model.set_grads(w=[-5.0, 5.0, 1e-3], b=[-5.0, 5.0, 1e-3])
    opt.step()
    assert model.p["w"][0] == 1.0 and model.p["w"][1] == -1.0
    assert np.all(np.abs(model.p["w"]) <= 1.0)
    assert model.p["b"][0] > 1.0 and model.p["b"][1] < -1.0


def test_lr_scale_only_for_binary_params():
    # same grads, same start: the binary param moves lr_scale times as far; the float
    # param ignores its (bogus) lr_scale of 7
    model = FakeModel(w=([0.0, 0.0], True, 4.0), b=([0.0, 0.0], False, 7.0), c=([0.0, 0.0], False, 1.0))
    opt = optim.Adam(model, lr=1e-3)
    model.set_grads(w=[0.2, -0.1], b=[0.2, -0.1], c=[0.2, -0.1])
    opt.step()
    close(model.p["w"], 4.0 * model.p["c"].astype(np.float64), rtol=1e-6)
    np.testing.assert_array_equal(model.p["b"], model.p["c"])


def test_lr_setter_and_validation():
    model = two_param_model()
    opt = optim.SGD(model, lr=0.1)
    opt.lr = 0.5
    assert opt.lr == 0.5
    with pytest.raises(ValueError):
        opt.lr = -1.0
    with pytest.raises(ValueError):
        opt.lr = float("nan")
    with pytest.raises(ValueError):
        optim.Adam(model, lr=0.1, beta1=1.0)
    with pytest.raises(ValueError):
        optim.SGD(model, lr=0.1, nesterov=True)


# ---------------------------------------------------------------------------
# Bop
# ---------------------------------------------------------------------------

def test_bop_flips_exactly_where_m_exceeds_threshold_and_signs_agree():
    gamma, tau = 0.5, 0.1
    #         latent:  0.5  -0.2  0.0  -0.7   0.3  -0.4
    model = FakeModel(w=([0.5, -0.2, 0.0, -0.7, 0.3, -0.4], True, 9.0))
    opt = optim.Bop(model, threshold=tau, gamma=gamma)
    # step 1: w <- sign(latent) = [1, -1, 1, -1, 1, -1];  m = 0.5 * g
    g1 = np.array([0.4, -0.4, -0.4, 0.4, 0.1, -0.3])
    model.set_grads(w=g1)
    opt.step()
    m = gamma * g1                                   # [.2, -.2, -.2, .2, .05, -.15]
    # flip where |m| > 0.1 and sign(m) == sign(w):
    #   0: m=.2,  w=+1 -> flip      1: m=-.2, w=-1 -> flip   2: m=-.2, w=+1 -> keep
    #   3: m=.2,  w=-1 -> keep      4: m=.05 (<= tau) -> keep 5: m=-.15, w=-1 -> flip
    expected = np.array([-1, 1, 1, -1, 1, 1], dtype=np.float32)
    np.testing.assert_array_equal(model.p["w"], expected)
    # step 2: m <- 0.5 m + 0.5 g
    g2 = np.array([0.0, 0.4, 0.4, 0.0, 0.2, 0.0])
    model.set_grads(w=g2)
    opt.step()
    m = (1 - gamma) * m + gamma * g2                 # [.1, .1, 0, .1, .125, -.075]
    w_prev = expected.astype(np.float64)
    flip = (np.abs(m) > tau) & (np.sign(m) == np.sign(w_prev))
    expected = np.where(flip, -w_prev, w_prev)       # only index 4 flips (m=.125, w=+1)
    assert flip.tolist() == [False, False, False, False, True, False]
    np.testing.assert_array_equal(model.p["w"], expected.astype(np.float32))
    close(opt.state_dict()["m/w"], m, rtol=1e-6)


def test_bop_delegates_float_params_and_lr():
    model = FakeModel(w=([0.3, -0.3], True, 5.0), b=([1.0, 2.0], False, 1.0))
    opt = optim.Bop(model, threshold=0.0, gamma=1.0, fp_optimizer=optim.SGD(None, lr=0.1))
    model.set_grads(w=[1.0, 1.0], b=[1.0, -1.0])
    opt.step()
    # gamma = 1: m = g; flip where w * m > 0: w = [1, -1] -> [-1, -1]
    np.testing.assert_array_equal(model.p["w"], [-1.0, -1.0])
    close(model.p["b"], [0.9, 2.1])                 # b - 0.1 * g
    opt.lr = 0.01                                    # schedules drive the float optimizer
    assert opt.fp_optimizer.lr == 0.01 and opt.lr == 0.01
    opt.step()
    close(model.p["b"], [0.89, 2.11])


def test_bop_needs_fp_optimizer_for_float_params():
    model = two_param_model()
    opt = optim.Bop(model)
    model.set_grads(**GRADS[0])
    with pytest.raises(ValueError, match="'b'"):
        opt.step()


def test_bop_with_fp_optimizer_sharing_the_model():
    # as in train.py: Bop(model, fp_optimizer=Adam(model, ...)); Adam only sees float params
    model = two_param_model()
    opt = optim.Bop(model, fp_optimizer=optim.Adam(model, lr=LR))
    model.set_grads(**GRADS[0])
    opt.step()
    assert set(np.abs(model.p["w"]).tolist()) == {1.0}
    assert set(opt.fp_optimizer.state["m"]) == {"b"}


# ---------------------------------------------------------------------------
# guards, sources, determinism
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("make", [
    lambda m: optim.SGD(m, lr=0.1, momentum=0.5),
    lambda m: optim.Adam(m, lr=0.1),
    lambda m: optim.AdaMax(m, lr=0.1),
    lambda m: optim.ShiftAdaMax(m, lr=0.1),
    lambda m: optim.Bop(m, fp_optimizer=optim.Adam(None, lr=0.1)),
])
def test_non_finite_grad_raises_and_changes_nothing(make, bad):
    model = two_param_model()
    opt = make(model)
    model.set_grads(**GRADS[0])
    opt.step()
    before = {k: v.copy() for k, v in model.p.items()}
    state_before = opt.state_dict()
    model.set_grads(w=[0.1, 0.2, 0.3], b=[0.5, bad])   # 'w' comes first and is fine
    with pytest.raises(ValueError, match="'b'"):
        opt.step()
    for k in before:
        np.testing.assert_array_equal(model.p[k], before[k])
    after = opt.state_dict()
    assert after.keys() == state_before.keys()
    for k in after:
        np.testing.assert_array_equal(after[k], state_before[k])


def test_iterable_source_and_shape_checks():
    p = np.zeros(2, dtype=np.float32)
    g = np.array([1.0, -1.0], dtype=np.float32)
    opt = optim.SGD([("p", p, g, {"binary": False, "lr_scale": 1.0})], lr=0.5)
    opt.step()
    g[...] = [2.0, 0.0]                              # grads updated in place
    opt.step()
    close(p, [-1.5, 0.5])
    with pytest.raises(ValueError, match="shape"):
        optim.SGD([("q", p, np.zeros(3, np.float32), {})], lr=0.1).step()
    with pytest.raises(ValueError, match="duplicate"):
        optim.SGD([("q", p, g, {}), ("q", p.copy(), g, {})], lr=0.1).step()


def test_zero_grad():
    model = two_param_model()
    model.set_grads(**GRADS[0])
    optim.SGD(model, lr=0.1).zero_grad()
    assert not any(g.any() for g in model.g.values())


ALL = {
    "sgd": lambda m: optim.SGD(m, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda m: optim.Adam(m, lr=0.05),
    "adamax": lambda m: optim.AdaMax(m, lr=0.05),
    "shift": lambda m: optim.ShiftAdaMax(m, lr=0.05),
    "bop": lambda m: optim.Bop(m, threshold=1e-3, gamma=0.3, fp_optimizer=optim.Adam(None, lr=0.05)),
}


def _npz_roundtrip(d):
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in d.items()})
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", sorted(ALL))
def test_state_dict_roundtrip_continues_identically(name):
    model = two_param_model()
    opt = ALL[name](model)
    for g in GRADS[:2]:
        model.set_grads(**g)
        opt.step()
    state = _npz_roundtrip(opt.state_dict())         # through an .npz, no pickle
    clone = model.copy()
    opt2 = ALL[name](clone)
    opt2.lr = 123.0                                  # overwritten by the state dict
    opt2.load_state_dict(state)
    assert opt2.lr == opt.lr and opt2.t == opt.t
    for g in GRADS[2:] + GRADS[:1]:
        model.set_grads(**g)
        clone.set_grads(**g)
        opt.step()
        opt2.step()
        for k in model.p:
            np.testing.assert_array_equal(clone.p[k], model.p[k])


def test_state_dict_keys_and_type_check():
    model = two_param_model()
    opt = optim.Adam(model, lr=0.1)
    model.set_grads(**GRADS[0])
    opt.step()
    d = opt.state_dict()
    assert {"optimizer", "lr", "t", "beta1", "beta2", "eps", "m/w", "v/w", "m/b", "v/b"} == set(d)
    assert d["optimizer"] == "Adam" and d["t"] == 1
    with pytest.raises(ValueError, match="Adam"):
        optim.SGD(model, lr=0.1).load_state_dict(d)
    bop = optim.Bop(model, fp_optimizer=optim.Adam(None, lr=0.1))
    model.set_grads(**GRADS[0])
    bop.step()
    keys = set(bop.state_dict())
    assert {"m/w", "fp/m/b", "fp/v/b", "fp/lr", "fp/optimizer"} <= keys


@pytest.mark.parametrize("name", sorted(ALL))
def test_deterministic(name):
    results = []
    for _ in range(2):
        model = two_param_model()
        opt = ALL[name](model)
        for g in GRADS:
            model.set_grads(**g)
            opt.step()
        results.append({k: v.copy() for k, v in model.p.items()})
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k])


# ---------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------

def test_exponential_decay():
    s = schedules.exponential_decay(3e-3, 3e-7, 1000)       # the paper's MNIST recipe
    decay = (3e-7 / 3e-3) ** (1 / 1000)
    assert s.lr_decay == pytest.approx(decay, rel=1e-15)
    assert s(0) == 3e-3
    assert s(1) == pytest.approx(3e-3 * decay, rel=1e-12)
    assert s(500) == pytest.approx(3e-3 * decay ** 500, rel=1e-12)
    assert s(1000) == 3e-7                                   # lr_end after the last epoch
    assert s(999) == pytest.approx(3e-7 / decay, rel=1e-12)
    # multiplying by lr_decay once per epoch (the paper's loop) gives the same values
    lr = 3e-3
    for e in range(1000):
        assert s(e) == pytest.approx(lr, rel=1e-9)
        lr *= s.lr_decay
    assert lr == pytest.approx(3e-7, rel=1e-9)
    assert "exponential_decay(lr_start=0.003, lr_end=3e-07, epochs=1000)" == repr(s)
    d = s.to_dict()
    assert d["name"] == "exponential_decay" and d["epochs"] == 1000
    assert schedules.from_dict(d) == s
    with pytest.raises(ValueError):
        s(-1)
    with pytest.raises(ValueError):
        schedules.exponential_decay(1e-3, 0.0, 10)


def test_step_decay_and_constant():
    s = schedules.step_decay(0.1, 0.5, 3)
    assert [s(e) for e in range(7)] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]
    assert repr(s) == "step_decay(lr_start=0.1, factor=0.5, every=3)"
    assert schedules.from_dict(s.to_dict()) == s
    c = schedules.constant(1e-3)
    assert c(0) == c(100) == 1e-3
    assert c.to_dict() == {"name": "constant", "lr": 1e-3}
    assert repr(c) == "constant(lr=0.001)"
    with pytest.raises(ValueError):
        schedules.from_dict({"name": "cosine"})


def test_schedule_drives_optimizer_lr():
    model = two_param_model()
    opt = optim.Adam(model, lr=1.0)
    s = schedules.exponential_decay(1e-2, 1e-4, 2)
    for epoch in range(3):
        opt.lr = s(epoch)
    assert opt.lr == 1e-4


@pytest.mark.parametrize("cls", ["Adam", "AdaMax"])
def test_fused_kernel_matches_numpy_fallback(cls):
    # the fused one-pass kernel (contiguous arrays) and the NumPy form (non-contiguous
    # arrays) compute the same formulas; they may differ only by float32 rounding
    import minibnn.optim as optim_mod
    rng = np.random.default_rng(3)
    base = rng.uniform(-1, 1, (64, 6)).astype(np.float32)
    grads = [rng.standard_normal((64, 6)).astype(np.float32) * 0.1 for _ in range(3)]
    info = {"binary": True, "lr_scale": 3.0}
    p_fast = base[:, :3].copy()                 # contiguous -> fused kernel
    p_slow = np.asfortranarray(base[:, :3])     # not C-contiguous -> NumPy fallback
    assert not p_slow.flags.c_contiguous
    runs = []
    for p in (p_fast, p_slow):
        opt = getattr(optim_mod, cls)([("w", p, np.zeros_like(p), info)], lr=0.05)
        for g in grads:
            opt._fixed = [("w", p, g[:, :3], info)]
            opt.step()
        runs.append(p)
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-5, atol=1e-6)
    assert np.abs(runs[0]).max() <= 1.0


def test_nonfinite_check_on_large_gradient():
    import minibnn.optim as optim_mod
    p = np.zeros(10000, np.float32)
    g = np.zeros(10000, np.float32)
    g[1234] = np.inf
    g[77] = np.nan
    opt = optim_mod.Adam([("big", p, g, {"binary": False})], lr=0.1)
    with pytest.raises(ValueError, match="'big'.*2 non-finite"):
        opt.step()
