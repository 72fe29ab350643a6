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
from minibnn.quantize import ap2


def _ap2(x):
    """AP2 in float64, the oracle of the shift-based rules (``ap2`` of a float64 copy)."""
    return ap2(np.asarray(x, dtype=np.float64))


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


def test_count_nonfinite_many_is_count_nonfinite_of_each():
    from minibnn.kernels import optim_cpu
    big = np.zeros(5000, np.float32)                   # > 4096: the parallel kernel
    big[[3, 4999]] = [np.inf, np.nan]
    small = np.array([[np.nan, 1.0], [-np.inf, 0.0]])
    grads = [big, small, np.zeros(0, np.float32), np.arange(3), np.ones(4, np.float32)]
    assert optim_cpu.count_nonfinite_many(grads) == [2, 2, 0, 0, 0]
    assert optim_cpu.count_nonfinite_many(grads) == [optim_cpu.count_nonfinite(g) for g in grads]
    assert optim_cpu.count_nonfinite_many([]) == []


def test_gradients_are_counted_once_per_step(monkeypatch):
    # issue 13: one count_nonfinite_many call per kernel module and step (on the device:
    # one synchronization), no per-parameter count_nonfinite
    from minibnn.kernels import optim_cpu
    calls = []
    one = optim_cpu.count_nonfinite
    monkeypatch.setattr(optim_cpu, "count_nonfinite_many",
                        lambda grads: calls.append(len(grads)) or [one(g) for g in grads])
    monkeypatch.setattr(optim_cpu, "count_nonfinite", None)     # not called by the optimizer
    model = two_param_model()
    opt = optim.Adam(model, lr=0.1)
    model.set_grads(**GRADS[0])
    opt.step()
    assert calls == [2]
    model.set_grads(w=[0.1, np.nan, np.inf], b=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"^parameter 'w': gradient has 2 non-finite "
                                         r"value\(s\) \(NaN/inf\)$"):
        opt.step()
    assert calls == [2, 2] and opt.t == 1


@pytest.mark.parametrize("items,match", [
    # the first offending parameter in parameter order, whichever error each has
    ([("a", [0.0, 1.0], {}), ("b", [np.nan, 0.0], {}), ("c", [np.inf, np.inf], {})],
     "'b': gradient has 1 non-finite"),
    ([("a", [np.nan, 1.0], {}), ("b", [0.0, 0.0, 0.0], {})], "'a': gradient has 1 non-finite"),
    ([("a", [0.0, 0.0, 0.0], {}), ("b", [np.nan, 0.0], {})], "'a': grad shape"),
    # a gradient was counted before its lr_scale and the next parameter were looked at
    ([("a", [np.nan, 1.0], {"binary": True, "lr_scale": -1.0})], "'a': gradient has 1"),
    ([("a", [np.nan, 1.0], {}), ("a", [0.0, 0.0], {})], "'a': gradient has 1"),
    ([("a", [0.0, 1.0], {"binary": True, "lr_scale": -1.0}), ("b", [np.nan, 0.0], {})],
     "'a': lr_scale"),
])
def test_nonfinite_gradient_error_keeps_the_parameter_order(items, match):
    # the counts are batched after the loop (issue 13); which error a bad step reports
    # is the one the per-parameter check reported
    params = [(n, np.zeros(2, np.float32), np.array(g, np.float32), info) for n, g, info in items]
    opt = optim.Adam(None, lr=0.1)
    with pytest.raises(ValueError, match=match):
        opt.step_params(params)
    assert opt.t == 0 and not opt.state["m"]


# ---------------------------------------------------------------------------
# readable rules and fused kernels (issue 12.3)
# ---------------------------------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from minibnn.kernels import optim_cpu  # noqa: E402


@st.composite
def rule_case(draw):
    """Arrays and scalars for one update: small shapes, float32/float64, gradients over
    eight decades (so v spans many exponents), state as a few steps would leave it."""
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    p = rng.uniform(-1.5, 1.5, shape).astype(dtype)
    g = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 2, shape)).astype(dtype)
    m = (rng.standard_normal(shape) * 0.01).astype(dtype)
    v = np.abs(rng.standard_normal(shape) * 0.01).astype(dtype)
    scalars = dict(lr=draw(st.floats(1e-5, 1.0)), beta1=draw(st.floats(0.0, 0.999)),
                   beta2=draw(st.floats(0.0, 0.9999)), eps=draw(st.floats(1e-10, 1e-3)),
                   t=draw(st.integers(1, 5000)), clip=draw(st.booleans()),
                   nesterov=draw(st.booleans()))
    return p, g, m, v, scalars


def _run_rule(module, name, arrays, s):
    p, g, m, v = (a.copy() for a in arrays)
    if name == "sgd_update":
        getattr(module, name)(p, g, m, s["lr"], s["beta1"], s["nesterov"] and s["beta1"] > 0, s["clip"])
    else:
        getattr(module, name)(p, g, m, v, s["lr"], s["beta1"], s["beta2"], s["eps"], s["t"], s["clip"])
    return p, m, v


@settings(max_examples=60, deadline=None)
@given(case=rule_case(), name=st.sampled_from(["adam_update", "adamax_update", "sgd_update",
                                                 "shift_adamax_update"]))
def test_fused_kernels_equal_the_readable_rules(case, name):
    # Tolerance: 1 unit in the last place of the stored dtype.  Both sides evaluate the
    # same float64 expressions in the same order (the readable rule on float64 copies,
    # the kernel in float64 registers; numba compiles without fast-math, so no fused
    # multiply-add or reassociation; sqrt and / are correctly rounded) and round once on
    # store, so they agree bit for bit here.  The one ulp allows a libm whose pow (the
    # bias corrections beta**t) differs from numba's by one float64 ulp, which can move a
    # stored value across a float32 rounding boundary.
    p, g, m, v, s = case
    slow = _run_rule(optim, name, (p, g, m, v), s)
    fast = _run_rule(optim_cpu, name, (p, g, m, v), s)
    for a, b in zip(fast, slow):
        assert a.dtype == b.dtype == p.dtype
        np.testing.assert_array_max_ulp(a, b, maxulp=1)
    if s["clip"]:
        assert np.abs(fast[0]).max() <= 1.0


def test_fused_kernels_have_the_readable_names():
    # one name per rule, so that a device twin (minibnn.kernels.optim_cuda) can mirror it
    for name in optim_cpu.__all__:
        if name.endswith("_update"):
            assert hasattr(optim, name), name
    assert set(optim_cpu.__all__) >= {"adam_update", "adamax_update", "sgd_update", "fusable",
                                      "count_nonfinite", "count_nonfinite_many", "zeros_like",
                                      "to_host", "from_host"}


@pytest.mark.parametrize("cls,rule", [("Adam", "adam_update"), ("AdaMax", "adamax_update"),
                                      ("ShiftAdaMax", "shift_adamax_update"),
                                      ("SGD", "sgd_update")])
def test_optimizer_picks_the_fused_kernel_when_it_applies(cls, rule, monkeypatch):
    calls = []
    fused = getattr(optim_cpu, rule)

    def spy(*args):
        calls.append(args[0].flags.c_contiguous)
        return fused(*args)

    monkeypatch.setattr(optim_cpu, rule, spy)
    kwargs = {"momentum": 0.9} if cls == "SGD" else {}
    base = np.linspace(-0.5, 0.5, 12, dtype=np.float32).reshape(4, 3)
    for p, expect_fused in ((base.copy(), True), (np.asfortranarray(base), False)):
        calls.clear()
        opt = getattr(optim, cls)([("w", p, np.ones_like(p), {"binary": True, "lr_scale": 1.0})],
                                  lr=0.01, **kwargs)
        opt.step()
        assert calls == ([True] if expect_fused else [])
        assert not np.array_equal(p, base)              # the readable rule ran instead


@pytest.mark.parametrize("cls", ["Adam", "AdaMax", "SGD", "ShiftAdaMax"])
def test_strided_and_contiguous_params_step_identically(cls):
    # Fails before the fix of issue 12.6: the NumPy fallback (strided params) computed in
    # float32 while the fused kernels compute in float64, so they differed in the last
    # bits.  Now every rule computes in float64 and rounds once on store.
    kwargs = {"momentum": 0.9, "nesterov": True} if cls == "SGD" else {}
    rng = np.random.default_rng(5)
    base = rng.uniform(-1, 1, (64, 6)).astype(np.float32)
    grads = [rng.standard_normal((64, 6)).astype(np.float32) * 10.0 ** rng.uniform(-4, 0, (64, 6))
             for _ in range(4)]
    info = {"binary": True, "lr_scale": 3.0}
    p_fast, p_slow = base[:, :3].copy(), np.asfortranarray(base[:, :3])
    opts = []
    for p in (p_fast, p_slow):
        opt = getattr(optim, cls)([("w", p, np.zeros_like(p), info)], lr=0.05, **kwargs)
        for g in grads:
            opt._fixed = [("w", p, g[:, :3], info)]
            opt.step()
        opts.append(opt)
    np.testing.assert_array_equal(p_fast, p_slow)
    a, b = opts[0].state_dict(), opts[1].state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == np.float32                 # state keeps the param's dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_param_and_state_keep_their_dtype(dtype):
    for make in ALL.values():
        model = two_param_model()
        for k in model.p:
            model.p[k] = model.p[k].astype(dtype)
        opt = make(model)
        model.g = {k: np.asarray(v, dtype) for k, v in GRADS[0].items()}
        opt.step()
        assert all(p.dtype == dtype for p in model.p.values())
        assert all(v.dtype == dtype for v in opt.state_dict().values() if isinstance(v, np.ndarray))


# ---------------------------------------------------------------------------
# the _update contract and Bop's public hook into its float optimizer (issue 12.3/12.6)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda m: optim.SGD(m, lr=0.1),
    lambda m: optim.SGD(m, lr=0.1, momentum=0.5),
    lambda m: optim.Adam(m, lr=0.1),
    lambda m: optim.AdaMax(m, lr=0.1),
    lambda m: optim.ShiftAdaMax(m, lr=0.1),
])
@pytest.mark.parametrize("strided", [False, True])
def test_update_returns_whether_it_clipped(make, strided):
    # Fails before: SGD and ShiftAdaMax returned None, and Adam/AdaMax returned False on
    # strided arrays even when asked to clip.  Contract: _update returns a bool, True
    # when it applied the [-1, 1] clip itself; every built-in rule clips when asked.
    model = two_param_model()
    if strided:
        for k in model.p:
            model.p[k] = np.repeat(model.p[k], 2)[::2]
            assert not model.p[k].flags.c_contiguous
    opt = make(model)
    returned = []
    inner = opt._update
    opt._update = lambda *a, **k: returned.append(inner(*a, **k)) or returned[-1]
    model.set_grads(w=[-50.0, 50.0, 1.0], b=[1.0, -1.0])
    opt.step()
    assert [type(r) for r in returned] == [bool, bool]
    assert returned == [True, False]                   # w is binary (clip asked), b is not
    assert np.abs(model.p["w"]).max() <= 1.0


def test_bop_drives_its_float_optimizer_through_the_public_step_params(monkeypatch):
    # Fails before: Bop called fp_optimizer._step_params, another class's private method.
    fp = optim.SGD(None, lr=0.1)
    seen = []
    monkeypatch.setattr(fp, "step_params", lambda params: seen.append([p[0] for p in params]))
    model = two_param_model()
    optim.Bop(model, fp_optimizer=fp).step()
    assert seen == [["b"]]


def test_step_params_checks_what_it_is_given():
    p = np.zeros(3, np.float32)
    opt = optim.Adam(None, lr=0.1)
    with pytest.raises(ValueError, match="'w'.*shape"):
        opt.step_params([("w", p, np.zeros(2, np.float32), {})])
    with pytest.raises(ValueError, match="'w'.*non-finite"):
        opt.step_params([("w", p, np.array([0, np.nan, 0], np.float32), {})])
    with pytest.raises(ValueError, match="lr_scale"):
        opt.step_params([("w", p, np.zeros(3, np.float32), {"binary": True, "lr_scale": -1.0})])
    assert opt.t == 0 and not opt.state["m"]
    with pytest.raises(RuntimeError, match="step_params"):
        opt.step()


def test_bad_lr_scale_fails_before_anything_moves():
    # the lr_scale of the *second* param is bad: the first must not have been stepped
    model = FakeModel(a=([0.1, 0.2], True, 1.0), w=([0.1, 0.2], True, float("nan")))
    opt = optim.SGD(model, lr=0.1)
    model.set_grads(a=[1.0, 1.0], w=[1.0, 1.0])
    with pytest.raises(ValueError, match="'w'.*lr_scale"):
        opt.step()
    close(model.p["a"], [0.1, 0.2])
    assert opt.t == 0


class _FakeDeviceArray:
    """Looks like a numba.cuda device array to minibnn.dispatch (no GPU needed)."""

    __cuda_array_interface__ = {}

    def __init__(self, a):
        self.a = np.asarray(a)
        self.shape, self.dtype = self.a.shape, self.a.dtype


def test_device_arrays_go_through_the_dispatch_seam(monkeypatch):
    from minibnn import dispatch
    from minibnn.kernels import BackendUnavailable
    # host param with a device grad: refused by dispatch.twin, naming the mix
    p = np.zeros(3, np.float32)
    opt = optim.Adam([("w", p, _FakeDeviceArray(np.ones(3, np.float32)), {})], lr=0.1)
    with pytest.raises(TypeError, match="mixing host and device"):
        opt.step()
    # device arrays with no usable twin: BackendUnavailable saying why, nothing changed
    monkeypatch.setitem(dispatch.TWINS, "minibnn.kernels.optim_cpu", "minibnn.no_such_twin_module")
    dispatch.clear_cache()
    try:
        dev = _FakeDeviceArray(np.zeros(3, np.float32))
        opt = optim.Adam([("w", dev, _FakeDeviceArray(np.ones(3, np.float32)), {})], lr=0.1)
        with pytest.raises(BackendUnavailable, match="no_such_twin_module"):
            opt.step()
        assert opt.t == 0
    finally:
        dispatch.clear_cache()


# ---------------------------------------------------------------------------
# load_state_dict refuses bad state and changes nothing (issue 11.3)
# ---------------------------------------------------------------------------

def _stepped(make, steps=2):
    model = two_param_model()
    opt = make(model)
    for g in GRADS[:steps]:
        model.set_grads(**g)
        opt.step()
    return model, opt


def _snapshot(opt):
    d = opt.state_dict()
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert type(a[k]) is type(b[k])


def _drop(*keys):
    return lambda d: {k: v for k, v in d.items() if k not in keys}


def _set(**kv):
    return lambda d: {**d, **{k.replace("__", "/"): v for k, v in kv.items()}}


BAD_ADAM_STATES = [
    ("missing-moment", _drop("v/w"), ["'v/w'", "missing"]),
    ("missing-both-moments", _drop("m/b", "v/b"), ["'m/b'", "missing"]),
    ("wrong-shape", _set(m__w=np.zeros(4, np.float32)), ["'m/w'"]),
    ("wrong-dtype", lambda d: {**d, "m/w": d["m/w"].astype(np.float64),
                               "v/w": d["v/w"].astype(np.float64)}, ["'m/w'", "dtype"]),
    ("int-state", _set(m__w=np.zeros(3, np.int32)), ["'m/w'", "floating"]),
    ("moments-disagree", _set(m__w=np.zeros(4, np.float32), v__w=np.zeros(3, np.float32)), ["'w'", "disagree"]),
    ("unknown-key", _set(foo=1.0), ["foo", "unknown"]),
    ("unknown-slot", _set(q__w=np.zeros(3, np.float32)), ["'q/w'", "slot"]),
    ("unknown-param", _set(m__zzz=np.zeros(3, np.float32), v__zzz=np.zeros(3, np.float32)), ["zzz", "no parameter"]),
    ("wrong-kind", _set(optimizer="AdaMax"), ["optimizer", "AdaMax"]),
    ("kind-not-string", _set(optimizer=3), ["optimizer", "string"]),
    ("no-kind", _drop("optimizer"), ["optimizer"]),
    ("negative-t", _set(t=-1), ["t (steps taken)", ">= 0"]),
    ("float-t", _set(t=1.5), ["t (steps taken)", "integer"]),
    ("array-t", _set(t=np.array([1, 2])), ["'t'", "scalar"]),
    ("no-t", _drop("t"), ["'t'"]),
    ("no-hyper", _drop("beta2"), ["'beta2'"]),
    ("bad-hyper", _set(beta1=1.0), ["beta1", "< 1.0"]),
    ("bad-eps", _set(eps=0.0), ["eps", "> 0"]),
    ("bad-lr", _set(lr=-0.5), ["lr", ">= 0"]),
    ("nan-lr", _set(lr=float("nan")), ["lr", "finite"]),
]


@pytest.mark.parametrize("mutate,phrases", [r[1:] for r in BAD_ADAM_STATES],
                         ids=[r[0] for r in BAD_ADAM_STATES])
def test_load_state_dict_refuses_bad_state_and_changes_nothing(mutate, phrases):
    model, opt = _stepped(lambda m: optim.Adam(m, lr=0.01))
    good = opt.state_dict()
    _, other = _stepped(lambda m: optim.Adam(m, lr=0.5, beta1=0.8), steps=1)   # to be kept
    before = _snapshot(other)
    with pytest.raises(ValueError) as info:
        other.load_state_dict(mutate(dict(good)))
    msg = str(info.value)
    for ph in phrases:
        assert ph.lower() in msg.lower(), (ph, msg)
    _assert_same(_snapshot(other), before)
    other.load_state_dict(good)                      # and the good dict still loads
    _assert_same(_snapshot(other), _snapshot(opt))


def test_load_state_dict_after_steps_needs_state_for_every_param():
    model, opt = _stepped(lambda m: optim.AdaMax(m, lr=0.01))
    state = {k: v for k, v in opt.state_dict().items() if not k.endswith("/b")}
    fresh = optim.AdaMax(model.copy(), lr=0.01)
    with pytest.raises(ValueError, match="'m/b' is missing.*2 step"):
        fresh.load_state_dict(state)
    assert fresh.t == 0 and not fresh.state["m"]
    # a fresh optimizer's dict (t = 0, no state) is fine
    fresh.load_state_dict(optim.AdaMax(model, lr=0.02).state_dict())
    assert fresh.lr == 0.02


def test_load_state_dict_sgd_checks():
    _, opt = _stepped(lambda m: optim.SGD(m, lr=0.1, momentum=0.9, nesterov=True))
    good = opt.state_dict()
    target = optim.SGD(two_param_model(), lr=0.3)
    before = _snapshot(target)
    for bad, phrase in (({**good, "momentum": 0.0}, "nesterov"),
                        ({**good, "nesterov": False, "momentum": 0.0}, "'buf/w'"),
                        ({**good, "nesterov": "yes"}, "nesterov"),
                        ({**good, "momentum": 1.0}, "momentum")):
        with pytest.raises(ValueError, match=phrase):
            target.load_state_dict(bad)
        _assert_same(_snapshot(target), before)


def test_bop_load_state_dict_is_all_or_nothing():
    make = ALL["bop"]
    _, opt = _stepped(make)
    good = opt.state_dict()
    _, target = _stepped(lambda m: optim.Bop(m, threshold=0.5, gamma=0.5,
                                             fp_optimizer=optim.Adam(None, lr=0.7)), steps=1)
    before = _snapshot(target)
    fp_before = _snapshot(target.fp_optimizer)
    cases = [
        ({k: v for k, v in good.items() if k != "fp/v/b"}, "'v/b'"),        # fp part bad
        ({**good, "gamma": 0.0}, "gamma"),                                    # own part bad
        ({**good, "m/w": np.zeros(5, np.float32)}, "'m/w'"),                  # own part bad
        ({k: v for k, v in good.items() if not k.startswith("fp/")}, "fp/"),  # fp part missing
        ({**good, "fp/optimizer": "SGD"}, "SGD"),
    ]
    for bad, phrase in cases:
        with pytest.raises(ValueError, match=phrase):
            target.load_state_dict(bad)
        _assert_same(_snapshot(target), before)
        _assert_same(_snapshot(target.fp_optimizer), fp_before)
    target.load_state_dict(good)
    _assert_same(_snapshot(target), _snapshot(opt))
    with pytest.raises(ValueError, match="no fp_optimizer"):
        optim.Bop(two_param_model()).load_state_dict(good)


def test_load_state_dict_refuses_non_mappings():
    with pytest.raises(TypeError, match="mapping"):
        optim.Adam(two_param_model(), lr=0.1).load_state_dict([("t", 1)])


# ---------------------------------------------------------------------------
# hyperparameters
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("call,exc,phrase", [
    (lambda m: optim.SGD(m, lr="0.1"), TypeError, "lr"),
    (lambda m: optim.SGD(m, lr=0.1, momentum=-0.1), ValueError, "momentum"),
    (lambda m: optim.SGD(m, lr=0.1, momentum=0.9, nesterov="no"), TypeError, "nesterov"),
    (lambda m: optim.Adam(m, lr=0.1, beta2=1.5), ValueError, "beta2"),
    (lambda m: optim.AdaMax(m, lr=0.1, eps=-1e-8), ValueError, "eps"),
    (lambda m: optim.ShiftAdaMax(m, lr=0.1, beta1=float("nan")), ValueError, "beta1"),
    (lambda m: optim.Bop(m, threshold=-1.0), ValueError, "threshold"),
    (lambda m: optim.Bop(m, gamma=0.0), ValueError, "gamma"),
    (lambda m: optim.Bop(m, fp_optimizer="adam"), TypeError, "fp_optimizer"),
    (lambda m: optim.Adam(42, lr=0.1), TypeError, "params_source"),
])
def test_constructor_errors_name_the_hyperparameter(call, exc, phrase):
    with pytest.raises(exc, match=phrase):
        call(two_param_model())


# ---------------------------------------------------------------------------
# schedules: the paper's recipes (issue 12.6) and bad parameters
# ---------------------------------------------------------------------------

def test_paper_recipes_match_binarynet():
    # BinaryNet's Train-time/{mnist,cifar10,svhn}.py: LR_start, LR_fin, num_epochs.
    # Fails before: the text said CIFAR-10 decays to 1e-6 (that is SVHN's LR_fin).
    assert schedules.PAPER_RECIPES == {"mnist": (3e-3, 3e-7, 1000), "cifar10": (1e-3, 3e-7, 500),
                                       "svhn": (1e-3, 1e-6, 200)}
    doc = schedules.exponential_decay.__doc__
    for dataset, (start, end, epochs) in schedules.PAPER_RECIPES.items():
        s = schedules.paper_schedule(dataset)
        assert (s.lr_start, s.lr_end, s.epochs) == (start, end, epochs)
        assert f"exponential_decay({start:g}, {end:g}, {epochs})" in doc, dataset
    with pytest.raises(ValueError, match="dataset"):
        schedules.paper_schedule("imagenet")


@pytest.mark.parametrize("call,exc,phrase", [
    (lambda: schedules.exponential_decay("a", 1e-6, 10), TypeError, "lr_start"),
    (lambda: schedules.exponential_decay(1e-3, -1e-6, 10), ValueError, "lr_end"),
    (lambda: schedules.exponential_decay(1e-3, 1e-6, 0), ValueError, "epochs"),
    (lambda: schedules.exponential_decay(1e-3, 1e-6, 2.5), ValueError, "epochs"),
    (lambda: schedules.step_decay(0.1, float("inf"), 3), ValueError, "factor"),
    (lambda: schedules.step_decay(0.1, 0.5, "3"), TypeError, "every"),
    (lambda: schedules.constant(-1.0), ValueError, "lr"),
    (lambda: schedules.constant(1e-3)(-2), ValueError, "epoch"),
    (lambda: schedules.constant(1e-3)(1.5), ValueError, "epoch"),
    (lambda: schedules.from_dict({"name": "step_decay", "lr_start": 0.1, "factor": 0.5}), ValueError, "every"),
    (lambda: schedules.from_dict({"name": "constant", "lr": 0.1, "extra": 1}), ValueError, "extra"),
    (lambda: schedules.from_dict("constant"), TypeError, "dict"),
])
def test_schedule_errors_name_the_parameter(call, exc, phrase):
    with pytest.raises(exc, match=phrase):
        call()
