"""Bad inputs of the optimizers (minibnn.optim) and schedules (minibnn.schedules).

Each row: a constructor, setter or load_state_dict call with one bad value; the error
must name the hyperparameter or the state-dict key, and the problem.
"""

import numpy as np

from bad_inputs import Case
from minibnn import optim, schedules


def _params():
    return [("w", np.zeros(3, np.float32), np.ones(3, np.float32), {"binary": True, "lr_scale": 2.0}),
            ("b", np.zeros(2, np.float32), np.ones(2, np.float32), {"binary": False})]


def _adam_state(**changes):
    """A one-step Adam state dict with ``changes`` ("__" stands for "/"; None drops)."""
    opt = optim.Adam(_params(), lr=0.01)
    opt.step()
    d = opt.state_dict()
    for k, v in changes.items():
        k = k.replace("__", "/")
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    return d


def _load(state, make=lambda: optim.Adam(_params(), lr=0.01)):
    return lambda tmp_path: make().load_state_dict(state() if callable(state) else state)


def _set_lr(value):
    def call(tmp_path):
        optim.SGD(_params(), lr=0.1).lr = value
    return call


ROWS = [
    # hyperparameters
    Case("optim-lr-negative", lambda p: optim.SGD(_params(), lr=-0.1), ValueError, ["lr", ">= 0"]),
    Case("optim-lr-nan", lambda p: optim.Adam(_params(), lr=float("nan")), ValueError, ["lr", "finite"]),
    Case("optim-lr-string", lambda p: optim.Adam(_params(), lr="1e-3"), TypeError, ["lr", "real number"]),
    Case("optim-lr-setter-inf", _set_lr(float("inf")), ValueError, ["lr", "finite"]),
    Case("optim-beta1-one", lambda p: optim.Adam(_params(), lr=0.1, beta1=1.0), ValueError, ["beta1", "< 1"]),
    Case("optim-beta2-negative", lambda p: optim.AdaMax(_params(), lr=0.1, beta2=-0.1), ValueError,
         ["beta2", ">= 0"]),
    Case("optim-eps-zero", lambda p: optim.ShiftAdaMax(_params(), lr=0.1, eps=0.0), ValueError, ["eps", "> 0"]),
    Case("optim-momentum-one", lambda p: optim.SGD(_params(), lr=0.1, momentum=1.0), ValueError,
         ["momentum", "< 1"]),
    Case("optim-nesterov-no-momentum", lambda p: optim.SGD(_params(), lr=0.1, nesterov=True), ValueError,
         ["nesterov", "momentum > 0"]),
    Case("optim-nesterov-string", lambda p: optim.SGD(_params(), lr=0.1, momentum=0.5, nesterov="False"),
         TypeError, ["nesterov", "True or False"]),
    Case("optim-bop-threshold-negative", lambda p: optim.Bop(_params(), threshold=-1e-8), ValueError,
         ["threshold", ">= 0"]),
    Case("optim-bop-gamma-zero", lambda p: optim.Bop(_params(), gamma=0.0), ValueError, ["gamma", "> 0"]),
    Case("optim-bop-gamma-above-one", lambda p: optim.Bop(_params(), gamma=1.5), ValueError, ["gamma", "<= 1"]),
    Case("optim-bop-fp-not-optimizer", lambda p: optim.Bop(_params(), fp_optimizer="adam"), TypeError,
         ["fp_optimizer", "str"]),
    Case("optim-params-source-int", lambda p: optim.Adam(3, lr=0.1), TypeError, ["params_source", "int"]),
    # parameters at step time
    Case("optim-step-lr-scale-negative",
         lambda p: optim.SGD([("w", np.zeros(2), np.ones(2), {"binary": True, "lr_scale": -1.0})], lr=0.1).step(),
         ValueError, ["'w'", "lr_scale", ">= 0"]),
    Case("optim-step-grad-nan",
         lambda p: optim.Adam([("w", np.zeros(2), np.array([0.0, np.nan]), {})], lr=0.1).step(),
         ValueError, ["'w'", "non-finite"]),
    Case("optim-step-grad-shape",
         lambda p: optim.Adam([("w", np.zeros(2), np.ones(3), {})], lr=0.1).step(),
         ValueError, ["'w'", "shape (3,)", "(2,)"]),
    Case("optim-step-grad-complex",
         lambda p: optim.Adam([("w", np.zeros(2), np.ones(2, complex), {})], lr=0.1).step(),
         ValueError, ["'w'", "real", "complex"]),
    Case("optim-step-int-param",
         lambda p: optim.Adam([("w", np.zeros(2, int), np.ones(2), {})], lr=0.1).step(),
         ValueError, ["'w'", "floating-point"]),
    Case("optim-step-no-source", lambda p: optim.Adam(None, lr=0.1).step(), RuntimeError,
         ["params_source=None", "step_params"]),
    # load_state_dict
    Case("optim-load-missing-moment", _load(lambda: _adam_state(v__w=None)), ValueError, ["'v/w'", "missing"]),
    Case("optim-load-wrong-shape", _load(lambda: _adam_state(m__w=np.zeros(4, np.float32))), ValueError,
         ["'m/w'", "shape"]),
    Case("optim-load-shape-not-param",
         _load(lambda: _adam_state(m__w=np.zeros(4, np.float32), v__w=np.zeros(4, np.float32))), ValueError,
         ["'m/w'", "shape (4,)", "parameter shape (3,)"]),
    Case("optim-load-wrong-dtype",
         _load(lambda: _adam_state(m__b=np.zeros(2, np.float64), v__b=np.zeros(2, np.float64))),
         ValueError, ["'m/b'", "dtype float64", "float32"]),
    Case("optim-load-unknown-key", _load(lambda: _adam_state(momentum=0.9)), ValueError,
         ["unknown keys", "momentum"]),
    Case("optim-load-unknown-slot", _load(lambda: _adam_state(buf__w=np.zeros(3, np.float32))), ValueError,
         ["'buf/w'", "unknown slot"]),
    Case("optim-load-unknown-param",
         _load(lambda: _adam_state(m__x=np.zeros(3, np.float32), v__x=np.zeros(3, np.float32))), ValueError,
         ["'m/x'", "no parameter named 'x'"]),
    Case("optim-load-wrong-kind", _load(lambda: _adam_state(), lambda: optim.AdaMax(_params(), lr=0.1)),
         ValueError, ["optimizer", "Adam", "not AdaMax"]),
    Case("optim-load-negative-t", _load(lambda: _adam_state(t=-3)), ValueError, ["t (steps taken)", ">= 0"]),
    Case("optim-load-missing-t", _load(lambda: _adam_state(t=None)), ValueError, ["no 't' key"]),
    Case("optim-load-bad-hyper", _load(lambda: _adam_state(beta2=2.0)), ValueError, ["beta2", "< 1"]),
    Case("optim-load-not-a-mapping", _load([("t", 1)]), TypeError, ["state must be a mapping"]),
    Case("optim-load-bop-missing-fp",
         _load(lambda: {k: v for k, v in optim.Bop(_params(), fp_optimizer=optim.Adam(None, lr=0.1))
                        .state_dict().items() if not k.startswith("fp/")},
               lambda: optim.Bop(_params(), fp_optimizer=optim.Adam(None, lr=0.1))),
         ValueError, ["'fp/...'", "fp_optimizer"]),
    # schedules
    Case("sched-lr-start-zero", lambda p: schedules.exponential_decay(0.0, 1e-6, 10), ValueError,
         ["lr_start", "> 0"]),
    Case("sched-lr-end-nan", lambda p: schedules.exponential_decay(1e-3, float("nan"), 10), ValueError,
         ["lr_end", "finite"]),
    Case("sched-epochs-zero", lambda p: schedules.exponential_decay(1e-3, 1e-6, 0), ValueError,
         ["epochs", ">= 1"]),
    Case("sched-epochs-fraction", lambda p: schedules.exponential_decay(1e-3, 1e-6, 2.5), ValueError,
         ["epochs", "integer"]),
    Case("sched-factor-negative", lambda p: schedules.step_decay(0.1, -0.5, 3), ValueError, ["factor", "> 0"]),
    Case("sched-every-string", lambda p: schedules.step_decay(0.1, 0.5, "3"), TypeError, ["every", "integer"]),
    Case("sched-constant-negative", lambda p: schedules.constant(-1e-3), ValueError, ["lr", ">= 0"]),
    Case("sched-epoch-negative", lambda p: schedules.constant(1e-3)(-1), ValueError, ["epoch", ">= 0"]),
    Case("sched-from-dict-unknown-name", lambda p: schedules.from_dict({"name": "cosine"}), ValueError,
         ["unknown schedule", "cosine"]),
    Case("sched-from-dict-missing-field",
         lambda p: schedules.from_dict({"name": "exponential_decay", "lr_start": 1e-3, "lr_end": 1e-6}),
         ValueError, ["'epochs'"]),
    Case("sched-paper-unknown-dataset", lambda p: schedules.paper_schedule("imagenet"), ValueError,
         ["dataset", "imagenet"]),
]
