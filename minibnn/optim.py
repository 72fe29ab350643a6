"""Optimizers for binarized networks: SGD, Adam, AdaMax, shift-based AdaMax and Bop.

Read this module in two parts: first the *update rules*, small NumPy functions
(:func:`sgd_update`, :func:`adam_update`, :func:`adamax_update`,
:func:`shift_adamax_update`, :func:`bop_update`) that update one parameter array and its
state arrays in place, each with its formula and reference; then the *optimizer classes*,
which walk a model's parameters, keep the state arrays, and call a rule per parameter.

The parameter contract
----------------------
An optimizer reads its parameters from a *source*: a model (anything with a
``parameters()`` method, called afresh at every step, so layers may replace their gradient
arrays between steps) or an iterable of tuples (materialized once).  Each parameter is a
tuple ``(name, param, grad, info)``:

* ``param``, ``grad`` -- same-shape arrays, ``param`` floating point (float32 in minibnn),
  ``grad`` real; ``param`` is updated **in place**;
* ``info`` -- ``{"binary": bool, "lr_scale": float}``.  ``binary=True`` marks a *latent*
  binary weight (the real-valued weight whose sign the layer uses in the forward pass).

Latent clipping and the per-layer learning-rate scale are applied here, by the optimizer
step, not in the layers (Hubara et al. 2016, Alg. 1; Courbariaux's ``clipping_scaling``):

* binary params: the step uses ``lr * info["lr_scale"]``, where the layer computed
  ``lr_scale = W_LR_scale = 1 / sqrt(1.5 / (fan_in + fan_out))`` (Glorot), and after the
  update the latent weight is clipped, ``w <- clip(w, -1, 1)``;
* every other param (BatchNorm gamma/beta, float layers): the step uses ``lr`` (scale 1,
  ``info["lr_scale"]`` is ignored) and there is no clipping.

For every rule below the step is linear in the learning rate, except
:class:`ShiftAdaMax`, whose learning rate is rounded to a power of two *after* the scale
is applied.  A step with ``lr * s`` is therefore the same as Courbariaux's
``param + W_LR_scale * (update - param)``.

Guards: every parameter is checked before *any* is touched -- a NaN or infinite gradient,
a shape mismatch, a bad ``lr_scale`` raises ``ValueError`` naming the parameter -- so a
failed step leaves the model and the optimizer state unchanged.

Numerics: :func:`sgd_update`, :func:`adam_update`, :func:`adamax_update` and
:func:`shift_adamax_update` compute in float64 and round once, when they store into
``param`` and the state arrays (which keep their dtype, float32 in minibnn).  The fused
kernels of :mod:`minibnn.kernels.optim_cpu` (used for contiguous arrays; the rules above
run otherwise) evaluate the same float64 expressions in the same order, so the two agree
to the last bit in practice.  :func:`bop_update` computes in the arrays' dtype (its only
arithmetic is a moving average and a comparison).  Steps are deterministic.

Devices: the kernel module is picked with ``dispatch.twin(optim_cpu, param, grad)``
(:mod:`minibnn.dispatch`): for numba.cuda device arrays the twin
:mod:`minibnn.kernels.optim_cuda` runs the rules under the same names.

State dicts
-----------
:meth:`Optimizer.state_dict` returns a flat ``dict`` of numpy arrays, Python scalars and
strings -- everything ``np.savez`` stores without pickle.  Keys:

* ``"optimizer"`` (class name), ``"lr"``, ``"t"`` (steps taken) and the hyperparameters;
* ``"<slot>/<param name>"`` for each state array, e.g. ``"m/0.W"``, ``"v/0.W"`` (the slot
  is the text before the first ``/``, so parameter names may contain ``/``);
* :class:`Bop` adds its float optimizer's entries under ``"fp/"``, e.g. ``"fp/m/1.gamma"``.

:meth:`Optimizer.load_state_dict` accepts the same dict, also with values read back from
an ``.npz`` (0-d arrays), checks all of it first (kind, keys, every slot for every
parameter, shapes and dtypes against the parameters, hyperparameter ranges) and only
then replaces the optimizer's state and hyperparameters.

References
----------
Hubara, Courbariaux, Soudry, El-Yaniv, Bengio, "Binarized Neural Networks", NIPS 2016
(arXiv:1602.02830v3): Alg. 1 (training; clipping; per-layer scale), Alg. 4 (shift-based
AdaMax).  Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015: Alg. 1
(Adam), Alg. 2 (AdaMax).  Helwegen, Widdicombe, Geiger, Liu, Cheng, Nusselder, "Latent
Weights Do Not Exist: Rethinking Binarized Neural Network Optimization", NeurIPS 2019
(Bop).
"""

import math
from collections.abc import Mapping

import numpy as np

from . import dispatch
from .checks import check_int, check_real_scalar
from .kernels import optim_cpu
from .kernels.backend import BackendUnavailable
from .quantize import ap2

__all__ = ["Optimizer", "SGD", "Adam", "AdaMax", "ShiftAdaMax", "Bop",
           "sgd_update", "adam_update", "adamax_update", "shift_adamax_update", "bop_update"]


# ---------------------------------------------------------------------------
# the update rules (the readable text; fused twins in minibnn/kernels/optim_cpu.py)
#
# Shapes and dtypes, for every rule: p (the parameter) and its state arrays (m, v, u,
# buf) are same-shape float32/float64 arrays updated in place; g is a same-shape real
# array; the scalars are Python numbers, t >= 1 the number of the step being taken (for
# the bias corrections).  clip=True clips p to [-1, 1] after the step (latent binary
# weights, Hubara et al. 2016, Alg. 1).  Each returns None.
# ---------------------------------------------------------------------------

def _f64(*arrays):
    """float64 versions of the arrays (the rules compute in float64, store once)."""
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def sgd_update(p, g, buf, lr, momentum, nesterov, clip):
    """One SGD step with optional (Nesterov) momentum, in place.

    ::

        momentum == 0:  p <- p - lr * g                        (buf unused, may be None)
        momentum  > 0:  buf <- momentum * buf + g
                        d    = g + momentum * buf  if nesterov  else  buf
                        p   <- p - lr * d

    then ``p <- clip(p, -1, 1)`` if ``clip``.  ``buf`` holds gradients, not steps (as in
    PyTorch).  Computed in float64, stored once in the arrays' dtype.

    References: Sutskever, Martens, Dahl, Hinton, ICML 2013 (momentum, Nesterov);
    Hubara et al. 2016, Alg. 1 (clip).
    """
    g, w = _f64(g, p)
    if momentum == 0.0:
        d = g
    else:
        (b,) = _f64(buf)
        b = momentum * b + g
        d = g + momentum * b if nesterov else b
        buf[...] = b
    w = w - lr * d
    if clip:
        w = np.clip(w, -1.0, 1.0)
    p[...] = w


def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, clip):
    """One Adam step, in place, in the "efficient" form of Kingma & Ba, Sec. 2::

        m   <- beta1 * m + (1 - beta1) * g
        v   <- beta2 * v + (1 - beta2) * g**2
        a_t  = lr * sqrt(1 - beta2**t) / (1 - beta1**t)
        p   <- p - a_t * m / (sqrt(v) + eps)

    then ``p <- clip(p, -1, 1)`` if ``clip``.  ``eps`` is added to ``sqrt(v)``, not to
    ``sqrt(v_hat)`` (Lasagne's ``adam``, which the paper's code runs).  Computed in
    float64, stored once in the arrays' dtype; :func:`minibnn.kernels.optim_cpu.adam_update`
    is the one-pass twin.

    References: Kingma & Ba, ICLR 2015, Alg. 1; Hubara et al. 2016, Alg. 1 (clip).
    """
    g, m64, v64, w = _f64(g, m, v, p)
    m64 = beta1 * m64 + (1.0 - beta1) * g
    v64 = beta2 * v64 + (1.0 - beta2) * g * g
    a_t = lr * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
    w = w - a_t * m64 / (np.sqrt(v64) + eps)
    if clip:
        w = np.clip(w, -1.0, 1.0)
    m[...] = m64
    v[...] = v64
    p[...] = w


def adamax_update(p, g, m, u, lr, beta1, beta2, eps, t, clip):
    """One AdaMax step (the infinity-norm variant of Adam), in place::

        m  <- beta1 * m + (1 - beta1) * g
        u  <- max(beta2 * u, |g|)
        p  <- p - (lr / (1 - beta1**t)) * m / (u + eps)

    then ``p <- clip(p, -1, 1)`` if ``clip``.  ``eps`` (Lasagne's ``adamax``) only guards
    ``u = 0``, i.e. a parameter whose gradients were all 0 (then ``m = 0`` too).  Computed
    in float64, stored once in the arrays' dtype;
    :func:`minibnn.kernels.optim_cpu.adamax_update` is the one-pass twin.

    References: Kingma & Ba, ICLR 2015, Alg. 2; Hubara et al. 2016, Alg. 1 (clip).
    """
    g, m64, u64, w = _f64(g, m, u, p)
    m64 = beta1 * m64 + (1.0 - beta1) * g
    u64 = np.maximum(beta2 * u64, np.abs(g))
    step = lr / (1.0 - beta1 ** t)
    w = w - step * m64 / (u64 + eps)
    if clip:
        w = np.clip(w, -1.0, 1.0)
    m[...] = m64
    u[...] = u64
    p[...] = w


def shift_adamax_update(p, g, m, v, lr, beta1, beta2, eps, t, clip):
    """One shift-based AdaMax step (Hubara et al. 2016, Alg. 4), in place::

        m     <- beta1 * m + (1 - beta1) * g
        v     <- max(beta2 * v, |g|)
        step   = AP2(lr / (1 - beta1**t)) * AP2(1 / (v + eps)) * m
        p     <- p - step

    then ``p <- clip(p, -1, 1)`` if ``clip``.  ``AP2(x) = sign(x) * 2**round(log2|x|)``
    (:func:`minibnn.quantize.ap2`), so ``step / m`` is, elementwise, an exact power of two
    and the step is ``m`` shifted twice.  Computed in float64 (the product of two powers
    of two and ``m`` is exact there), stored once in the arrays' dtype;
    :func:`minibnn.kernels.optim_cpu.shift_adamax_update` is the one-pass twin.

    References: Hubara et al., NIPS 2016, Sec. 1.5 and Alg. 4; Kingma & Ba 2015, Alg. 2.
    """
    g, m64, v64, w = _f64(g, m, v, p)
    m64 = beta1 * m64 + (1.0 - beta1) * g
    v64 = np.maximum(beta2 * v64, np.abs(g))
    factor = ap2(np.float64(lr / (1.0 - beta1 ** t))) * ap2(1.0 / (v64 + eps))
    w = w - factor * m64
    if clip:
        w = np.clip(w, -1.0, 1.0)
    m[...] = m64
    v[...] = v64
    p[...] = w


def bop_update(p, g, m, gamma, threshold):
    """One Bop step on binary weights ``p`` (entries exactly +-1), in place::

        m <- (1 - gamma) * m + gamma * g
        p <- -p   where  p * m > threshold     (|m| > threshold and sign(m) == sign(p))
             p    elsewhere

    i.e. a weight flips when the moving average of its gradient is strong enough and
    pushes it to the other sign.  Computed in the arrays' dtype (the comparison too: NumPy
    casts the Python ``threshold`` to it).  No learning rate and no clip.

    References: Helwegen et al., NeurIPS 2019, Alg. 1; larq's ``Bop``.
    """
    m *= 1.0 - gamma
    m += gamma * g
    flip = (p * m) > threshold
    np.negative(p, out=p, where=flip)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _scalar(key, v, kind=float):
    """A Python scalar from a scalar or a 0-d array (as read back from an .npz)."""
    if isinstance(v, np.ndarray):
        if v.ndim != 0:
            raise ValueError(f"state dict key {key!r}: expected a scalar, got an array of shape {v.shape}")
        v = v.item()
    if kind is str:
        if not isinstance(v, str):
            raise ValueError(f"state dict key {key!r}: expected a string, got {type(v).__name__} {v!r}")
        return v
    return v


def _host_array(a):
    """A NumPy copy of a host or device array (state dicts hold NumPy arrays)."""
    return dispatch.twin(optim_cpu, a).to_host(a)


# ---------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------

class Optimizer:
    """Base optimizer: parameter iteration, guards, clipping, ``lr`` and state dicts.

    Parameters
    ----------
    params_source : model, iterable of ``(name, param, grad, info)`` tuples, or None
        A model's ``parameters()`` is called at every :meth:`step`; a plain iterable is
        read once.  ``None`` makes an optimizer that is only driven by another one (the
        float optimizer inside :class:`Bop`) through :meth:`step_params`.
    lr : float
        Learning rate (>= 0), settable: ``opt.lr = schedule(epoch)``.

    Notes
    -----
    A subclass implements ``_update(name, param, grad, info, lr_eff, clip) -> bool``,
    which updates ``param`` in place with the effective learning rate ``lr_eff``
    (``lr * lr_scale`` for binary params, ``lr`` otherwise) and its state arrays
    (:meth:`_slot`), and returns whether it applied the ``[-1, 1]`` clip itself: every
    built-in rule does when ``clip`` is True (the clip is part of the rule's single pass)
    and so returns ``clip``; a subclass that returns False when ``clip`` is True gets the
    clip from the base class.  ``self.t`` counts the steps taken (1 during the first
    step), for bias corrections.  A subclass with hyperparameters lists them in ``hyper``
    and checks them in ``_checked_hyper``.
    """

    #: state slots of the subclass, e.g. ("m", "v"); each is a dict name -> array
    slots = ()
    #: hyperparameter attribute names saved in the state dict
    hyper = ()
    #: clip binary params to [-1, 1] after the update
    clip_binary = True

    def __init__(self, params_source, lr):
        if params_source is None:
            self._model, self._fixed = None, None
        elif callable(getattr(params_source, "parameters", None)):
            self._model, self._fixed = params_source, None
        else:
            try:
                self._model, self._fixed = None, list(params_source)
            except TypeError:
                raise TypeError("params_source must be a model (with a parameters() method), an "
                                "iterable of (name, param, grad, info) tuples, or None; got "
                                f"{type(params_source).__name__}") from None
        self.lr = lr
        self.t = 0
        self.state = {slot: {} for slot in self.slots}

    # -- hyperparameters ---------------------------------------------------
    @property
    def lr(self):
        """The learning rate (float >= 0); schedules set it once per epoch."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = check_real_scalar(value, "lr", lo=0.0)

    def _checked_hyper(self, **values):
        """The hyperparameters ``values`` (all of ``self.hyper``), checked and normalised.

        Raises TypeError/ValueError naming the hyperparameter; a subclass overrides it.
        """
        return {}

    def _set_hyper(self, **values):
        for k, v in self._checked_hyper(**values).items():
            setattr(self, k, v)

    # -- parameters --------------------------------------------------------
    def _raw_params(self):
        if self._model is not None:
            return list(self._model.parameters())
        if self._fixed is not None:
            return self._fixed
        raise RuntimeError(f"{type(self).__name__} was built without a parameter source "
                           "(params_source=None); it can only be driven by another optimizer "
                           "through step_params(params)")

    def _validate(self, items):
        """Checked ``[(name, param, grad, info)]``: ValueError/TypeError naming the parameter.

        ``info`` comes back as a new dict with ``"binary"`` a bool and, for binary params,
        ``"lr_scale"`` a checked float.  Nothing is modified.
        """
        out, seen = [], set()
        # The gradients are counted after the loop, all of a kernel module's in one call
        # (on the device: one synchronization per step, not one per parameter).
        finite_due = []         # (name, kernel module, grad), in parameter order
        try:
            for item in items:
                try:
                    name, param, grad, info = item
                except (TypeError, ValueError):
                    raise ValueError("a parameter must be a (name, param, grad, info) tuple, "
                                     f"got {type(item).__name__}") from None
                name = str(name)
                if name in seen:
                    raise ValueError(f"duplicate parameter name {name!r}")
                seen.add(name)
                if grad is None:
                    raise ValueError(f"parameter {name!r}: no gradient (grad is None); "
                                     "run backward first")
                kern = dispatch.twin(optim_cpu, param, grad)    # TypeError if host and device mix
                if kern is optim_cpu:
                    if not isinstance(param, np.ndarray) or not np.issubdtype(param.dtype, np.floating):
                        raise ValueError(f"parameter {name!r}: param must be a floating-point "
                                         "numpy array")
                    grad = np.asarray(grad)
                    if grad.dtype == np.bool_ or grad.dtype.kind not in "fiu":
                        raise ValueError(f"parameter {name!r}: grad must be a real array, "
                                         f"got dtype {grad.dtype}")
                    if not grad.flags.c_contiguous:
                        grad = np.ascontiguousarray(grad)       # only read: a copy lets the kernels run
                elif np.dtype(param.dtype).kind != "f":
                    raise ValueError(f"parameter {name!r}: param must be a floating-point array")
                if tuple(grad.shape) != tuple(param.shape):
                    raise ValueError(f"parameter {name!r}: grad shape {tuple(grad.shape)} != "
                                     f"param shape {tuple(param.shape)}")
                finite_due.append((name, kern, grad))
                info = dict(info) if info is not None else {}
                info["binary"] = bool(info.get("binary", False))
                if info["binary"]:
                    info["lr_scale"] = check_real_scalar(info.get("lr_scale", 1.0),
                                                         f"parameter {name!r}: lr_scale", lo=0.0)
                for slot in self.slots:
                    arr = self.state[slot].get(name)
                    if arr is not None and tuple(arr.shape) != tuple(param.shape):
                        raise ValueError(f"parameter {name!r}: optimizer state {slot!r} has shape "
                                         f"{tuple(arr.shape)}, param has shape {tuple(param.shape)}")
                out.append((name, param, grad, info))
        except Exception:
            # an earlier parameter's non-finite gradient is still the error reported, as
            # when each gradient was counted before the next parameter was looked at
            err = self._nonfinite_gradient_error(finite_due)
            if err is not None:
                raise err from None
            raise
        err = self._nonfinite_gradient_error(finite_due)
        if err is not None:
            raise err
        return out

    @staticmethod
    def _nonfinite_gradient_error(checked):
        """ValueError naming the first parameter, in order, of ``checked`` (``(name,
        kernel module, grad)`` tuples) whose gradient has NaN/inf entries, or None; one
        ``count_nonfinite_many`` call per kernel module."""
        groups = {}
        for i, (_, kern, _) in enumerate(checked):
            groups.setdefault(kern, []).append(i)
        bad = [0] * len(checked)
        for kern, idx in groups.items():
            for i, n in zip(idx, kern.count_nonfinite_many([checked[i][2] for i in idx])):
                bad[i] = n
        for (name, _, _), n in zip(checked, bad):
            if n:
                return ValueError(f"parameter {name!r}: gradient has {n} non-finite value(s) (NaN/inf)")
        return None

    # -- the step ----------------------------------------------------------
    def step(self):
        """One update of every parameter of the source (after the checks of all of them)."""
        self.step_params(self._raw_params())

    def step_params(self, params):
        """One update of the given ``(name, param, grad, info)`` parameters.

        All are checked first (see :meth:`_validate`); then ``t`` advances and each is
        updated.  :class:`Bop` drives its float optimizer through this method.
        """
        params = self._validate(params)
        self.t += 1
        for name, param, grad, info in params:
            binary = info["binary"]
            if binary:
                scale = info["lr_scale"]
                lr_eff = self.lr * scale
            else:
                lr_eff = self.lr
            clipped = self._update(name, param, grad, info, lr_eff, binary and self.clip_binary)
            if binary and self.clip_binary and not clipped:
                np.clip(param, -1.0, 1.0, out=param)

    def _update(self, name, param, grad, info, lr_eff, clip):  # pragma: no cover - abstract
        """Update ``param`` in place; return True if it also applied the [-1, 1] clip."""
        raise NotImplementedError

    @staticmethod
    def _pick(rule_name, readable, *arrays):
        """The function that runs rule ``rule_name`` on ``arrays``.

        The kernel module's fused version (same name and signature) when the module has
        one and it applies to these arrays, else ``readable`` (the NumPy rule above).  For
        device arrays there is no NumPy fallback: a missing twin is BackendUnavailable.
        """
        kern = dispatch.twin(optim_cpu, *arrays)
        fused = getattr(kern, rule_name, None)
        if fused is not None and kern.fusable(*arrays):
            return fused
        if kern is not optim_cpu:
            raise BackendUnavailable(f"{kern.__name__} cannot run {rule_name} on these device arrays "
                                     "(no such function, or the arrays are not fusable)")
        return readable

    def _slot(self, slot, name, like):
        """State array ``self.state[slot][name]``, created as zeros like ``like``.

        A state array loaded from a state dict (NumPy) moves to ``like``'s memory here.
        """
        kern = dispatch.twin(optim_cpu, like)
        arr = self.state[slot].get(name)
        if arr is None:
            arr = kern.zeros_like(like)
            self.state[slot][name] = arr
        elif dispatch.on_device(arr) != dispatch.on_device(like):
            arr = kern.from_host(_host_array(arr))
            self.state[slot][name] = arr
        return arr

    def zero_grad(self):
        """Set every gradient array to 0, in place (layers that overwrite grads need not)."""
        for item in self._raw_params():
            grad = item[2]
            if isinstance(grad, np.ndarray):
                grad.fill(0)

    # -- state dicts -------------------------------------------------------
    def state_dict(self):
        """Flat dict: ``optimizer``, ``lr``, ``t``, hyperparameters, ``"<slot>/<name>"`` arrays.

        Arrays are NumPy copies.  Everything is storable by ``np.savez`` without pickle.
        """
        d = {"optimizer": type(self).__name__, "lr": float(self.lr), "t": int(self.t)}
        for h in self.hyper:
            d[h] = getattr(self, h)
        for slot in self.slots:
            for name, arr in self.state[slot].items():
                d[f"{slot}/{name}"] = _host_array(arr)
        return d

    def load_state_dict(self, state, params=None):
        """Restore from :meth:`state_dict` output (values may be 0-d arrays from an .npz).

        Everything is checked before anything is assigned, so on error the optimizer is
        unchanged.  ``ValueError`` (naming the key) for: another optimizer class, a missing
        ``optimizer``/``t``/``lr``/hyperparameter key, unknown keys or slots, a negative or
        non-integer ``t``, hyperparameters out of range, a parameter with some of its
        state slots but not all, state arrays of different shapes or a non-float dtype,
        and -- checked against ``params`` (default: this optimizer's source, if it has
        one) -- state for an unknown parameter, a shape or dtype different from the
        parameter's, or, after steps were taken (``t > 0``), a parameter with no state.
        The next :meth:`step` continues exactly as the saved optimizer would.

        Parameters
        ----------
        state : mapping, as returned by :meth:`state_dict`
        params : iterable of ``(name, param, grad, info)`` or None
            The parameters this optimizer updates (``grad`` is not read).
        """
        self._apply_state(self._parse_state(state, params))

    def _param_map(self, params):
        """``{name: (param, info)}`` of the parameters this optimizer updates, or None."""
        if params is None:
            if self._model is None and self._fixed is None:
                return None
            params = self._raw_params()
        out = {}
        for item in params:
            try:
                name, param, _, info = item
            except (TypeError, ValueError):
                raise ValueError("a parameter must be a (name, param, grad, info) tuple, "
                                 f"got {type(item).__name__}") from None
            info = dict(info) if info is not None else {}
            if self._owns(info):
                out[str(name)] = (param, info)
        return out

    def _owns(self, info):
        """True if this optimizer keeps state for a parameter with this ``info``."""
        return True

    def _slots_in_use(self, hyper):
        """The slots each parameter has after a step, under hyperparameters ``hyper``."""
        return self.slots

    def _required_scalars(self):
        return ("lr", "t", *self.hyper)

    def _parse_state(self, state, params):
        """Check ``state`` completely; return what :meth:`_apply_state` assigns."""
        cls = type(self).__name__
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping (a {cls}.state_dict()), got {type(state).__name__}")
        state = dict(state)
        if "optimizer" not in state:
            raise ValueError(f"state dict has no 'optimizer' key (the optimizer class, {cls!r})")
        kind = _scalar("optimizer", state["optimizer"], str)
        if kind != cls:
            raise ValueError(f"state dict key 'optimizer': the state is for {kind}, not {cls}")
        scalars, arrays = {}, {}
        for key, value in state.items():
            if not isinstance(key, str):
                raise ValueError(f"state dict key {key!r}: keys must be strings")
            if key == "optimizer":
                continue
            if "/" in key:
                slot, name = key.split("/", 1)
                if slot not in self.slots:
                    known = ", ".join(self.slots) or "none"
                    raise ValueError(f"state dict key {key!r}: unknown slot {slot!r} for {cls} "
                                     f"(its slots: {known})")
                arr = np.asarray(value)
                if arr.dtype.kind != "f":
                    raise ValueError(f"state dict key {key!r}: state arrays must be floating point, "
                                     f"got dtype {arr.dtype}")
                arrays.setdefault(name, {})[slot] = arr
            else:
                scalars[key] = value
        required = self._required_scalars()
        unknown = sorted(set(scalars) - set(required))
        if unknown:
            raise ValueError(f"state dict has unknown keys {unknown} for {cls} "
                             f"(scalar keys: {', '.join(required)})")
        for key in required:
            if key not in scalars:
                raise ValueError(f"state dict has no {key!r} key (needed to restore {cls})")
        new = {}
        try:
            if "lr" in required:
                new["lr"] = check_real_scalar(_scalar("lr", scalars["lr"]), "lr", lo=0.0)
            new["t"] = check_int(_scalar("t", scalars["t"]), "t (steps taken)", minimum=0)
            new["hyper"] = self._checked_hyper(**{h: _scalar(h, scalars[h]) for h in self.hyper})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"state dict: {exc}") from None
        in_use = self._slots_in_use(new["hyper"])
        for name, slots in arrays.items():
            for slot in slots:
                if slot not in in_use:
                    raise ValueError(f"state dict key '{slot}/{name}': {cls} with these "
                                     f"hyperparameters keeps no {slot!r} state")
            for slot in in_use:
                if slot not in slots:
                    have = next(iter(slots))
                    raise ValueError(f"state dict key '{slot}/{name}' is missing: the state has "
                                     f"'{have}/{name}', and {cls} keeps {', '.join(in_use)} "
                                     "for each parameter")
            shapes = {s: a.shape for s, a in slots.items()}
            dtypes = {s: a.dtype for s, a in slots.items()}
            if len(set(shapes.values())) > 1 or len(set(dtypes.values())) > 1:
                raise ValueError(f"state dict: the state arrays of parameter {name!r} disagree in "
                                 "shape or dtype: " + ", ".join(f"'{s}/{name}' shape {shapes[s]} {dtypes[s]}"
                                                                for s in slots))
        pmap = self._param_map(params)
        if pmap is not None:
            for name, slots in arrays.items():
                slot, arr = next(iter(slots.items()))
                key = f"{slot}/{name}"
                if name not in pmap:
                    raise ValueError(f"state dict key {key!r}: no parameter named {name!r} among "
                                     f"the {len(pmap)} parameters {cls} updates")
                param = pmap[name][0]
                if tuple(arr.shape) != tuple(param.shape):
                    raise ValueError(f"state dict key {key!r}: shape {tuple(arr.shape)} != parameter "
                                     f"shape {tuple(param.shape)}")
                if arr.dtype != np.dtype(param.dtype):
                    raise ValueError(f"state dict key {key!r}: dtype {arr.dtype} != parameter "
                                     f"dtype {np.dtype(param.dtype)}")
            if new["t"] > 0 and in_use:
                for name in pmap:
                    if name not in arrays:
                        raise ValueError(f"state dict key '{in_use[0]}/{name}' is missing: {cls} "
                                         f"took {new['t']} step(s), so parameter {name!r} has state")
        new["state"] = {slot: {name: np.array(slots[slot], copy=True, order="C")
                               for name, slots in arrays.items() if slot in slots}
                        for slot in self.slots}
        return new

    def _apply_state(self, new):
        """Assign what :meth:`_parse_state` checked (cannot fail)."""
        for k, v in new["hyper"].items():
            setattr(self, k, v)
        if "lr" in new:
            self.lr = new["lr"]
        self.t = new["t"]
        self.state = new["state"]

    def __repr__(self):
        hp = ", ".join(f"{h}={getattr(self, h)!r}" for h in self.hyper)
        return f"{type(self).__name__}(lr={self.lr!r}{', ' + hp if hp else ''}, t={self.t})"


# ---------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------

class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum (rule: :func:`sgd_update`).

    With ``eta = lr * lr_scale`` (binary params) or ``lr`` (others) and ``mu = momentum``::

        mu == 0:    w <- w - eta * g
        mu > 0:     b <- mu * b + g                         (b_0 = 0, slot "buf")
                    d  = g + mu * b   if nesterov else   b
                    w <- w - eta * d

    then binary params are clipped to ``[-1, 1]``.  (The momentum buffer holds gradients,
    not steps, as in PyTorch; with a constant lr it equals Lasagne's
    ``v <- mu * v - eta * g; w <- w + v``.)

    Parameters
    ----------
    params_source : model or iterable of ``(name, param, grad, info)``
    lr : float
    momentum : float, default 0.0, in ``[0, 1)``
    nesterov : bool, default False (needs ``momentum > 0``)

    References
    ----------
    Sutskever, Martens, Dahl, Hinton, "On the importance of initialization and momentum in
    deep learning", ICML 2013.  Hubara et al. 2016, Alg. 1 (clipping).
    """

    slots = ("buf",)
    hyper = ("momentum", "nesterov")

    def __init__(self, params_source, lr, momentum=0.0, nesterov=False):
        super().__init__(params_source, lr)
        self._set_hyper(momentum=momentum, nesterov=nesterov)

    def _checked_hyper(self, momentum, nesterov):
        momentum = check_real_scalar(momentum, "momentum", lo=0.0, hi=1.0, hi_open=True)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be True or False, got {type(nesterov).__name__} {nesterov!r}")
        nesterov = bool(nesterov)
        if nesterov and momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0")
        return {"momentum": momentum, "nesterov": nesterov}

    def _slots_in_use(self, hyper):
        return self.slots if hyper["momentum"] > 0.0 else ()

    def _update(self, name, param, grad, info, lr_eff, clip=False):
        buf = self._slot("buf", name, param) if self.momentum != 0.0 else None
        rule = self._pick("sgd_update", sgd_update, param, grad, buf)
        rule(param, grad, buf, lr_eff, self.momentum, self.nesterov, clip)
        return clip


# ---------------------------------------------------------------------------
# Adam / AdaMax
# ---------------------------------------------------------------------------

class _MomentOptimizer(Optimizer):
    """Common part of the Adam family: checked ``beta1``, ``beta2`` in [0, 1), ``eps`` > 0."""

    hyper = ("beta1", "beta2", "eps")

    def __init__(self, params_source, lr, beta1, beta2, eps):
        Optimizer.__init__(self, params_source, lr)
        self._set_hyper(beta1=beta1, beta2=beta2, eps=eps)

    def _checked_hyper(self, beta1, beta2, eps):
        return {"beta1": check_real_scalar(beta1, "beta1", lo=0.0, hi=1.0, hi_open=True),
                "beta2": check_real_scalar(beta2, "beta2", lo=0.0, hi=1.0, hi_open=True),
                "eps": check_real_scalar(eps, "eps", lo=0.0, lo_open=True)}


class Adam(_MomentOptimizer):
    """Adam (Kingma & Ba 2015, Alg. 1, in the "efficient" form of their Sec. 2; rule:
    :func:`adam_update`).

    With ``eta = lr * lr_scale`` (binary params) or ``lr`` (others), step ``t = 1, 2, ...``
    and ``m_0 = v_0 = 0``::

        m   <- beta1 * m + (1 - beta1) * g
        v   <- beta2 * v + (1 - beta2) * g**2
        a_t  = eta * sqrt(1 - beta2**t) / (1 - beta1**t)
        w   <- w - a_t * m / (sqrt(v) + eps)

    then binary params are clipped to ``[-1, 1]``.  This is Lasagne's ``adam`` (eps added
    to ``sqrt(v)``, not to ``sqrt(v_hat)``), which the paper's MNIST / CIFAR-10 / SVHN code
    runs on the binary weights with ``lr * W_LR_scale`` and clipping, and on the other
    parameters with ``lr``.  Contiguous arrays run the fused one-pass kernel
    :func:`minibnn.kernels.optim_cpu.adam_update`.

    Parameters
    ----------
    params_source : model or iterable of ``(name, param, grad, info)``
    lr : float
    beta1, beta2 : float, default 0.9, 0.999, in ``[0, 1)``
    eps : float, default 1e-8, > 0

    References
    ----------
    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Alg. 1.
    Hubara et al. 2016, Alg. 1 and Sec. 4 (Adam for MNIST).
    """

    slots = ("m", "v")

    def __init__(self, params_source, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(params_source, lr, beta1, beta2, eps)

    def _update(self, name, param, grad, info, lr_eff, clip=False):
        m = self._slot("m", name, param)
        v = self._slot("v", name, param)
        rule = self._pick("adam_update", adam_update, param, grad, m, v)
        rule(param, grad, m, v, lr_eff, self.beta1, self.beta2, self.eps, self.t, clip)
        return clip


class AdaMax(_MomentOptimizer):
    """AdaMax, the infinity-norm variant of Adam (Kingma & Ba 2015, Alg. 2; rule:
    :func:`adamax_update`).

    With ``eta = lr * lr_scale`` (binary params) or ``lr`` (others), step ``t`` and
    ``m_0 = u_0 = 0``::

        m  <- beta1 * m + (1 - beta1) * g
        u  <- max(beta2 * u, |g|)
        w  <- w - (eta / (1 - beta1**t)) * m / (u + eps)

    then binary params are clipped to ``[-1, 1]``.  ``eps`` (Lasagne's ``adamax``) only
    guards ``u = 0``, i.e. a parameter whose gradients were all 0 (then ``m = 0`` too).
    Contiguous arrays run the fused kernel :func:`minibnn.kernels.optim_cpu.adamax_update`.

    Parameters
    ----------
    params_source : model or iterable of ``(name, param, grad, info)``
    lr : float
    beta1, beta2 : float, default 0.9, 0.999, in ``[0, 1)``
    eps : float, default 1e-8, > 0

    References
    ----------
    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Alg. 2.
    """

    slots = ("m", "u")

    def __init__(self, params_source, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(params_source, lr, beta1, beta2, eps)

    def _update(self, name, param, grad, info, lr_eff, clip=False):
        m = self._slot("m", name, param)
        u = self._slot("u", name, param)
        rule = self._pick("adamax_update", adamax_update, param, grad, m, u)
        rule(param, grad, m, u, lr_eff, self.beta1, self.beta2, self.eps, self.t, clip)
        return clip


class ShiftAdaMax(_MomentOptimizer):
    """Shift-based AdaMax (Hubara et al. 2016, Alg. 4): AdaMax with power-of-two factors
    (rule: :func:`shift_adamax_update`).

    Alg. 4 writes the update as ``theta <- theta - (alpha >>> (1 - beta1)) * m >>> v^-1``,
    where ``>>>`` is a shift, i.e. a multiplication by a power-of-two approximation
    ``AP2(x) = sign(x) * 2**round(log2|x|)``.  What this class computes, exactly, with
    ``eta = lr * lr_scale`` (binary params) or ``lr`` (others), step ``t`` and
    ``m_0 = v_0 = 0``::

        m     <- beta1 * m + (1 - beta1) * g
        v     <- max(beta2 * v, |g|)
        step   = AP2(eta / (1 - beta1**t)) * AP2(1 / (v + eps)) * m
        theta <- theta - step

    then binary params are clipped to ``[-1, 1]``.  So ``step / m`` is, elementwise, an
    exact power of two (the product of two), and the step is ``m`` shifted: the bias
    correction ``1 / (1 - beta1**t)`` of the learning rate and the division by ``v`` are
    the two shifts.  The per-layer scale enters *before* the rounding (``AP2(eta / ...)``,
    not ``lr_scale * AP2(lr / ...)``), so binary-weight steps stay shifts too.

    The moment updates are ordinary float arithmetic here; with the paper's defaults,
    ``1 - beta1 = 2**-3`` and ``1 - beta2 = 2**-10``, they are shift-and-add operations
    already (``beta * x = x - (x >> k)``).  ``eps`` guards ``v = 0`` (then ``m = 0``).

    Parameters
    ----------
    params_source : model or iterable of ``(name, param, grad, info)``
    lr : float
        The paper's default is ``alpha = 2**-10``.
    beta1 : float, default ``1 - 2**-3 = 0.875`` (the paper's default)
    beta2 : float, default ``1 - 2**-10`` (the paper's default)
    eps : float, default 1e-8, > 0

    References
    ----------
    Hubara et al., "Binarized Neural Networks", NIPS 2016 (arXiv:1602.02830v3), Sec. 1.5
    and Alg. 4.  Kingma & Ba 2015, Alg. 2 (AdaMax).
    """

    slots = ("m", "v")

    def __init__(self, params_source, lr, beta1=1.0 - 2.0 ** -3, beta2=1.0 - 2.0 ** -10, eps=1e-8):
        super().__init__(params_source, lr, beta1, beta2, eps)

    def _update(self, name, param, grad, info, lr_eff, clip=False):
        m = self._slot("m", name, param)
        v = self._slot("v", name, param)
        rule = self._pick("shift_adamax_update", shift_adamax_update, param, grad, m, v)
        rule(param, grad, m, v, lr_eff, self.beta1, self.beta2, self.eps, self.t, clip)
        return clip


# ---------------------------------------------------------------------------
# Bop
# ---------------------------------------------------------------------------

class Bop(Optimizer):
    """Bop, the binary optimizer without latent weights (Helwegen et al. 2019, Alg. 1;
    rule: :func:`bop_update`).

    Binary params (``info["binary"]``) hold exactly ``+-1``: on the first step that sees a
    binary param it is set to its sign, ``w <- +1 if w >= 0 else -1`` (sign(0) = +1, see
    :mod:`minibnn.kernels.bitpack`).  Then, with ``m_0 = 0``, each step::

        m <- (1 - gamma) * m + gamma * g
        w <- -w   where  |m| > threshold  and  sign(m) == sign(w)
              w   elsewhere

    i.e. a weight flips when the exponential moving average of its gradient is strong
    enough and pushes it to the other sign (as ``w * m > threshold`` for ``w = +-1``;
    larq's ``sign(-sign(w * m - threshold) * w)`` except at exact equality, where this
    keeps ``w``).  No learning rate, no ``lr_scale``, no clipping apply to binary params.

    Every other parameter (BatchNorm gamma/beta, float layers) is passed to
    ``fp_optimizer`` (through its public :meth:`Optimizer.step_params`), which runs its
    own rule on them only (its ``lr``, its state and its step counter; its own parameter
    source, if any, is ignored).  A model with non-binary params and no ``fp_optimizer``
    raises ``ValueError`` at :meth:`step`.

    ``lr`` reads and sets ``fp_optimizer.lr`` (so learning-rate schedules drive the float
    parameters); ``gamma`` and ``threshold`` are plain attributes that can be decayed by
    hand.

    Parameters
    ----------
    params_source : model or iterable of ``(name, param, grad, info)``
    threshold : float, default 1e-8 (larq's default), >= 0
    gamma : float, default 1e-4 (larq's default), in ``(0, 1]``
    fp_optimizer : Optimizer or None
        E.g. ``Bop(model, fp_optimizer=Adam(model, lr=1e-3))`` or ``Adam(None, lr=1e-3)``.

    References
    ----------
    Helwegen et al., "Latent Weights Do Not Exist: Rethinking Binarized Neural Network
    Optimization", NeurIPS 2019, Alg. 1; larq's ``Bop`` (defaults).
    """

    slots = ("m",)
    hyper = ("threshold", "gamma")
    clip_binary = False

    def __init__(self, params_source, threshold=1e-8, gamma=1e-4, fp_optimizer=None):
        if fp_optimizer is not None and not isinstance(fp_optimizer, Optimizer):
            raise TypeError("fp_optimizer must be a minibnn.optim.Optimizer (or None), "
                            f"got {type(fp_optimizer).__name__}")
        if isinstance(fp_optimizer, Bop):
            raise TypeError("fp_optimizer cannot be another Bop")
        self.fp_optimizer = fp_optimizer
        super().__init__(params_source, fp_optimizer.lr if fp_optimizer is not None else 0.0)
        self._set_hyper(threshold=threshold, gamma=gamma)

    def _checked_hyper(self, threshold, gamma):
        return {"threshold": check_real_scalar(threshold, "threshold", lo=0.0),
                "gamma": check_real_scalar(gamma, "gamma", lo=0.0, hi=1.0, lo_open=True)}

    @property
    def lr(self):
        """The float optimizer's learning rate (0.0 without one)."""
        fp = getattr(self, "fp_optimizer", None)
        return fp.lr if fp is not None else self._lr

    @lr.setter
    def lr(self, value):
        self._lr = check_real_scalar(value, "lr", lo=0.0)
        fp = getattr(self, "fp_optimizer", None)
        if fp is not None:
            fp.lr = self._lr

    def step(self):
        """Flip binary params (Bop rule); run ``fp_optimizer`` on the others."""
        self.step_params(self._raw_params())

    def step_params(self, params):
        """One Bop step on the given parameters (all checked before any is touched)."""
        params = self._validate(params)
        binary = [p for p in params if p[3]["binary"]]
        other = [p for p in params if not p[3]["binary"]]
        if other and self.fp_optimizer is None:
            raise ValueError(f"Bop got non-binary parameters ({', '.join(repr(p[0]) for p in other)}) "
                             "and no fp_optimizer to update them")
        if self.fp_optimizer is not None:
            # first: it checks its own state against the params and may raise; Bop's flips
            # below cannot fail, so a failed step changes nothing
            self.fp_optimizer.step_params(other)
        self.t += 1
        for name, param, grad, info in binary:
            self._flip(name, param, grad)

    def _flip(self, name, param, grad):
        if name not in self.state["m"]:
            # first step: Bop's weights are the signs themselves (sign(0) = +1)
            kern = dispatch.twin(optim_cpu, param)
            if kern is optim_cpu:
                param[...] = np.where(param >= 0, 1.0, -1.0).astype(param.dtype)
            else:
                kern.set_signs(param)     # a device array has no comparisons or np.where
        m = self._slot("m", name, param)
        rule = self._pick("bop_update", bop_update, param, grad, m)
        rule(param, grad, m, self.gamma, self.threshold)

    def _owns(self, info):
        return bool(info.get("binary", False))

    def _required_scalars(self):
        return ("t", *self.hyper)                 # lr lives in the float optimizer

    def state_dict(self):
        """Bop's entries plus the float optimizer's under ``"fp/"`` (``"fp/lr"``, ``"fp/m/..."``)."""
        d = super().state_dict()
        if self.fp_optimizer is not None:
            for k, v in self.fp_optimizer.state_dict().items():
                d[f"fp/{k}"] = v
        return d

    def load_state_dict(self, state, params=None):
        """Restore Bop's entries and, from the ``"fp/"`` ones, its float optimizer's.

        Checked as :meth:`Optimizer.load_state_dict` (binary params against Bop's state,
        the others against the float optimizer's); on error nothing changes.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping (a Bop.state_dict()), got {type(state).__name__}")
        fp = {k[3:]: v for k, v in state.items() if isinstance(k, str) and k.startswith("fp/")}
        own = {k: v for k, v in state.items() if not (isinstance(k, str) and k.startswith("fp/"))}
        own.pop("lr", None)                      # lr lives in the float optimizer
        if fp and self.fp_optimizer is None:
            raise ValueError("state dict has fp_optimizer entries ('fp/...') but this Bop has no fp_optimizer")
        if self.fp_optimizer is not None and not fp:
            raise ValueError(f"state dict has no 'fp/...' entries, but this Bop has an fp_optimizer "
                             f"({type(self.fp_optimizer).__name__}) whose state they would restore")
        if params is None and (self._model is not None or self._fixed is not None):
            params = self._raw_params()
        new = self._parse_state(own, params)     # check Bop's part first ...
        if self.fp_optimizer is not None:        # ... then the float optimizer loads (or raises)
            other = None if params is None else [p for p in params
                                                 if not bool(dict(p[3] or {}).get("binary", False))]
            self.fp_optimizer.load_state_dict(fp, params=other)
        self._apply_state(new)                   # cannot fail

    def __repr__(self):
        return (f"Bop(threshold={self.threshold!r}, gamma={self.gamma!r}, "
                f"fp_optimizer={self.fp_optimizer!r}, t={self.t})")
