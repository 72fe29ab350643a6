"""Optimizers for binarized networks: SGD, Adam, AdaMax, shift-based AdaMax and Bop.

The parameter contract
----------------------
An optimizer reads its parameters from a *source*: a model (anything with a
``parameters()`` method, called afresh at every step, so layers may replace their gradient
arrays between steps) or an iterable of tuples (materialized once).  Each parameter is a
tuple ``(name, param, grad, info)``:

* ``param``, ``grad`` -- same-shape floating-point numpy arrays (float32 in minibnn);
  ``param`` is updated **in place**;
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

Guards: a NaN or infinite gradient raises ``ValueError`` naming the parameter, and it is
checked for *every* parameter before *any* parameter is touched, so a failed step leaves
the model and the optimizer state unchanged.  Everything is elementwise NumPy arithmetic
in the dtype of the parameter: steps are deterministic.

State dicts
-----------
:meth:`Optimizer.state_dict` returns a flat ``dict`` of numpy arrays, Python scalars and
strings -- everything ``np.savez`` stores without pickle.  Keys:

* ``"optimizer"`` (class name), ``"lr"``, ``"t"`` (steps taken) and the hyperparameters;
* ``"<slot>/<param name>"`` for each state array, e.g. ``"m/0.W"``, ``"v/0.W"`` (the slot
  is the text before the first ``/``, so parameter names may contain ``/``);
* :class:`Bop` adds its float optimizer's entries under ``"fp/"``, e.g. ``"fp/m/1.gamma"``.

:meth:`Optimizer.load_state_dict` accepts the same dict, also with values read back from
an ``.npz`` (0-d arrays).  Hyperparameters are restored from it.

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

import numpy as np
from numba import njit, prange

from .quantize import ap2

__all__ = ["Optimizer", "SGD", "Adam", "AdaMax", "ShiftAdaMax", "Bop"]


# ---------------------------------------------------------------------------
# fused update kernels
#
# The NumPy form of an Adam step makes about ten passes over each weight array
# (temporaries for (1-b1)*g, g*g, sqrt(v), the quotient, then the clip); for the paper's
# 3x4096 MLP that is the largest single cost of a training step.  These kernels make one
# pass (read w, g, m, v; write w, m, v) with the clip folded in.  They compute the same
# formulas as the NumPy fallbacks below (which run for non-contiguous arrays), in float64
# registers, so results agree to float32 rounding, not bit for bit.
# ---------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _count_nonfinite(g):
    bad = 0
    for i in prange(g.size):
        if not np.isfinite(g[i]):
            bad += 1
    return bad


@njit(cache=True, parallel=True)
def _adam_kernel(p, g, m, v, b1, b2, a_t, eps, clip):
    for i in prange(p.size):
        gi = g[i]
        mi = b1 * m[i] + (1.0 - b1) * gi
        vi = b2 * v[i] + (1.0 - b2) * gi * gi
        m[i] = mi
        v[i] = vi
        w = p[i] - a_t * mi / (math.sqrt(vi) + eps)
        if clip:
            w = min(1.0, max(-1.0, w))
        p[i] = w


@njit(cache=True, parallel=True)
def _adamax_kernel(p, g, m, u, b1, b2, step, eps, clip):
    for i in prange(p.size):
        gi = g[i]
        mi = b1 * m[i] + (1.0 - b1) * gi
        ui = max(b2 * u[i], abs(gi))
        m[i] = mi
        u[i] = ui
        w = p[i] - step * mi / (ui + eps)
        if clip:
            w = min(1.0, max(-1.0, w))
        p[i] = w


def _flat_views(*arrays):
    """1-D views of C-contiguous arrays (None if any is not contiguous: a reshape would
    then copy, and an in-place update of the copy would be lost)."""
    if not all(a.flags.c_contiguous for a in arrays):
        return None
    return [a.reshape(-1) for a in arrays]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _ap2(x):
    """AP2 (:func:`minibnn.quantize.ap2`) in float64: ``sign(x) * 2**round(log2|x|)``, AP2(0) = 0."""
    return ap2(np.asarray(x, dtype=np.float64))




def _scalar(v, kind=float):
    """A Python scalar from a scalar or a 0-d array (as read back from an .npz)."""
    if isinstance(v, np.ndarray):
        if v.ndim != 0:
            raise ValueError(f"expected a scalar, got an array of shape {v.shape}")
        v = v.item()
    return kind(v)


def _check_hyper(name, value, lo=None, hi=None, lo_open=False, hi_open=False):
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {value}")
    return value


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
        float optimizer inside :class:`Bop`).
    lr : float
        Learning rate (>= 0), settable: ``opt.lr = schedule(epoch)``.

    Notes
    -----
    A subclass implements ``_update(name, param, grad, info, lr_eff)``, which updates
    ``param`` in place with the effective learning rate ``lr_eff`` (``lr * lr_scale`` for
    binary params, ``lr`` otherwise) and its state arrays in ``self.state[slot][name]``;
    the base class clips binary params to ``[-1, 1]`` afterwards.  ``self.t`` counts the
    steps taken (1 during the first step), for bias corrections.
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
            self._model, self._fixed = None, list(params_source)
        self.lr = lr
        self.t = 0
        self.state = {slot: {} for slot in self.slots}

    # -- learning rate -----------------------------------------------------
    @property
    def lr(self):
        """The learning rate (float >= 0); schedules set it once per epoch."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _check_hyper("lr", value, lo=0.0)

    # -- parameters --------------------------------------------------------
    def _raw_params(self):
        if self._model is not None:
            return list(self._model.parameters())
        if self._fixed is not None:
            return self._fixed
        raise RuntimeError(f"{type(self).__name__} was built without a parameter source "
                           "(params_source=None); it can only be driven by another optimizer")

    def _collect(self):
        """Validated ``[(name, param, grad, info)]``; ValueError on bad or non-finite grads."""
        out, seen = [], set()
        for item in self._raw_params():
            try:
                name, param, grad, info = item
            except (TypeError, ValueError):
                raise ValueError("a parameter must be a (name, param, grad, info) tuple, "
                                 f"got {type(item).__name__}") from None
            name = str(name)
            if name in seen:
                raise ValueError(f"duplicate parameter name {name!r}")
            seen.add(name)
            if not isinstance(param, np.ndarray) or not np.issubdtype(param.dtype, np.floating):
                raise ValueError(f"parameter {name!r}: param must be a floating-point numpy array")
            if grad is None:
                raise ValueError(f"parameter {name!r}: no gradient (grad is None); run backward first")
            grad = np.asarray(grad)
            if grad.shape != param.shape:
                raise ValueError(f"parameter {name!r}: grad shape {grad.shape} != param shape {param.shape}")
            if grad.flags.c_contiguous and grad.dtype.kind == "f" and grad.size > 4096:
                bad = int(_count_nonfinite(grad.reshape(-1)))
            else:
                bad = int(np.size(grad) - np.count_nonzero(np.isfinite(grad)))
            if bad:
                raise ValueError(f"parameter {name!r}: gradient has {bad} non-finite value(s) (NaN/inf)")
            info = dict(info) if info is not None else {}
            out.append((name, param, grad, info))
        return out

    # -- the step ----------------------------------------------------------
    def step(self):
        """One update of every parameter (after the checks of all gradients)."""
        self._step_params(self._collect())

    def _step_params(self, params):
        self.t += 1
        for name, param, grad, info in params:
            binary = bool(info.get("binary", False))
            if binary:
                scale = _check_hyper(f"parameter {name!r}: lr_scale", info.get("lr_scale", 1.0), lo=0.0)
                lr_eff = self.lr * scale
            else:
                lr_eff = self.lr
            clipped = self._update(name, param, grad, info, lr_eff, binary and self.clip_binary)
            if binary and self.clip_binary and not clipped:
                np.clip(param, -1.0, 1.0, out=param)

    def _update(self, name, param, grad, info, lr_eff, clip):  # pragma: no cover - abstract
        """Update ``param`` in place; return True if it also applied the [-1, 1] clip."""
        raise NotImplementedError

    def _slot(self, slot, name, like):
        """State array ``self.state[slot][name]``, created as zeros like ``like``."""
        arr = self.state[slot].get(name)
        if arr is None:
            arr = np.zeros(like.shape, dtype=like.dtype)
            self.state[slot][name] = arr
        elif arr.shape != like.shape:
            raise ValueError(f"parameter {name!r}: optimizer state {slot!r} has shape {arr.shape}, "
                             f"param has shape {like.shape}")
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

        Arrays are copies.  Everything is storable by ``np.savez`` without pickle.
        """
        d = {"optimizer": type(self).__name__, "lr": float(self.lr), "t": int(self.t)}
        for h in self.hyper:
            d[h] = getattr(self, h)
        for slot in self.slots:
            for name, arr in self.state[slot].items():
                d[f"{slot}/{name}"] = arr.copy()
        return d

    def load_state_dict(self, state):
        """Restore from :meth:`state_dict` output (values may be 0-d arrays from an .npz).

        Raises ``ValueError`` when the dict is from another optimizer class or holds an
        unknown slot.  The next :meth:`step` continues exactly as the saved optimizer would.
        """
        state = dict(state)
        kind = _scalar(state.get("optimizer", type(self).__name__), str)
        if kind != type(self).__name__:
            raise ValueError(f"state dict is for {kind}, not {type(self).__name__}")
        new_state = {slot: {} for slot in self.slots}
        scalars = {}
        for key, value in state.items():
            if key in ("optimizer",):
                continue
            if "/" in key:
                slot, name = key.split("/", 1)
                if slot not in new_state:
                    raise ValueError(f"state dict key {key!r}: unknown slot {slot!r} for {type(self).__name__}")
                new_state[slot][name] = np.array(value, copy=True)
            else:
                scalars[key] = value
        unknown = set(scalars) - {"lr", "t", *self.hyper}
        if unknown:
            raise ValueError(f"state dict has unknown keys {sorted(unknown)} for {type(self).__name__}")
        for h in self.hyper:
            if h in scalars:
                setattr(self, h, _scalar(scalars[h], type(getattr(self, h))))
        if "lr" in scalars:
            self.lr = _scalar(scalars["lr"])
        self.t = _scalar(scalars.get("t", 0), int)
        self.state = new_state

    def __repr__(self):
        hp = ", ".join(f"{h}={getattr(self, h)!r}" for h in self.hyper)
        return f"{type(self).__name__}(lr={self.lr!r}{', ' + hp if hp else ''}, t={self.t})"


# ---------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------

class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

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
        self.momentum = _check_hyper("momentum", momentum, lo=0.0, hi=1.0, hi_open=True)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0")

    def _update(self, name, param, grad, info, lr_eff, clip=False):
        mu = self.momentum
        if mu == 0.0:
            param -= lr_eff * grad
            return
        buf = self._slot("buf", name, param)
        buf *= mu
        buf += grad
        d = grad + mu * buf if self.nesterov else buf
        param -= lr_eff * d


# ---------------------------------------------------------------------------
# Adam / AdaMax
# ---------------------------------------------------------------------------

class _MomentOptimizer(Optimizer):
    """Common part of the Adam family: checked ``beta1``, ``beta2`` in [0, 1), ``eps`` > 0."""

    hyper = ("beta1", "beta2", "eps")

    def __init__(self, params_source, lr, beta1, beta2, eps):
        Optimizer.__init__(self, params_source, lr)
        self.beta1 = _check_hyper("beta1", beta1, lo=0.0, hi=1.0, hi_open=True)
        self.beta2 = _check_hyper("beta2", beta2, lo=0.0, hi=1.0, hi_open=True)
        self.eps = _check_hyper("eps", eps, lo=0.0, lo_open=True)


class Adam(_MomentOptimizer):
    """Adam (Kingma & Ba 2015, Alg. 1, in the "efficient" form of their Sec. 2).

    With ``eta = lr * lr_scale`` (binary params) or ``lr`` (others), step ``t = 1, 2, ...``
    and ``m_0 = v_0 = 0``::

        m   <- beta1 * m + (1 - beta1) * g
        v   <- beta2 * v + (1 - beta2) * g**2
        a_t  = eta * sqrt(1 - beta2**t) / (1 - beta1**t)
        w   <- w - a_t * m / (sqrt(v) + eps)

    then binary params are clipped to ``[-1, 1]``.  This is Lasagne's ``adam`` (eps added
    to ``sqrt(v)``, not to ``sqrt(v_hat)``), which the paper's MNIST / CIFAR-10 / SVHN code
    runs on the binary weights with ``lr * W_LR_scale`` and clipping, and on the other
    parameters with ``lr``.

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
        b1, b2, t = self.beta1, self.beta2, self.t
        m = self._slot("m", name, param)
        v = self._slot("v", name, param)
        a_t = lr_eff * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
        flat = _flat_views(param, np.asarray(grad, dtype=param.dtype), m, v)
        if flat is not None:
            _adam_kernel(*flat, b1, b2, a_t, self.eps, clip)
            return clip
        m *= b1
        m += (1.0 - b1) * grad
        v *= b2
        v += (1.0 - b2) * (grad * grad)
        param -= a_t * m / (np.sqrt(v) + self.eps)
        return False


class AdaMax(_MomentOptimizer):
    """AdaMax, the infinity-norm variant of Adam (Kingma & Ba 2015, Alg. 2).

    With ``eta = lr * lr_scale`` (binary params) or ``lr`` (others), step ``t`` and
    ``m_0 = u_0 = 0``::

        m  <- beta1 * m + (1 - beta1) * g
        u  <- max(beta2 * u, |g|)
        w  <- w - (eta / (1 - beta1**t)) * m / (u + eps)

    then binary params are clipped to ``[-1, 1]``.  ``eps`` (Lasagne's ``adamax``) only
    guards ``u = 0``, i.e. a parameter whose gradients were all 0 (then ``m = 0`` too).

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
        b1, b2, t = self.beta1, self.beta2, self.t
        m = self._slot("m", name, param)
        u = self._slot("u", name, param)
        flat = _flat_views(param, np.asarray(grad, dtype=param.dtype), m, u)
        if flat is not None:
            _adamax_kernel(*flat, b1, b2, lr_eff / (1.0 - b1 ** t), self.eps, clip)
            return clip
        m *= b1
        m += (1.0 - b1) * grad
        np.maximum(u * b2, np.abs(grad), out=u)
        param -= (lr_eff / (1.0 - b1 ** t)) * m / (u + self.eps)
        return False


class ShiftAdaMax(_MomentOptimizer):
    """Shift-based AdaMax (Hubara et al. 2016, Alg. 4): AdaMax with power-of-two factors.

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
        b1, b2, t = self.beta1, self.beta2, self.t
        m = self._slot("m", name, param)
        v = self._slot("v", name, param)
        m *= b1
        m += (1.0 - b1) * grad
        np.maximum(v * b2, np.abs(grad), out=v)
        alpha = float(_ap2(lr_eff / (1.0 - b1 ** t)))
        inv_v = _ap2(1.0 / (v.astype(np.float64) + self.eps))
        factor = (alpha * inv_v).astype(param.dtype)      # product of powers of two: exact
        param -= factor * m                               # factor * m is exact (no underflow)


# ---------------------------------------------------------------------------
# Bop
# ---------------------------------------------------------------------------

class Bop(Optimizer):
    """Bop, the binary optimizer without latent weights (Helwegen et al. 2019, Alg. 1).

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
    ``fp_optimizer``, which runs its own rule on them only (its ``lr``, its state and its
    step counter; its own parameter source, if any, is ignored).  A model with non-binary
    params and no ``fp_optimizer`` raises ``ValueError`` at :meth:`step`.

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
            raise TypeError("fp_optimizer must be a minibnn.optim.Optimizer (or None)")
        if isinstance(fp_optimizer, Bop):
            raise TypeError("fp_optimizer cannot be another Bop")
        self.fp_optimizer = fp_optimizer
        super().__init__(params_source, fp_optimizer.lr if fp_optimizer is not None else 0.0)
        self.threshold = _check_hyper("threshold", threshold, lo=0.0)
        self.gamma = _check_hyper("gamma", gamma, lo=0.0, hi=1.0, lo_open=True)

    @property
    def lr(self):
        """The float optimizer's learning rate (0.0 without one)."""
        fp = getattr(self, "fp_optimizer", None)
        return fp.lr if fp is not None else self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _check_hyper("lr", value, lo=0.0)
        fp = getattr(self, "fp_optimizer", None)
        if fp is not None:
            fp.lr = self._lr

    def step(self):
        """Flip binary params (Bop rule); run ``fp_optimizer`` on the others."""
        params = self._collect()
        binary = [p for p in params if p[3].get("binary", False)]
        other = [p for p in params if not p[3].get("binary", False)]
        if other and self.fp_optimizer is None:
            raise ValueError(f"Bop got non-binary parameters ({', '.join(repr(p[0]) for p in other)}) "
                             "and no fp_optimizer to update them")
        self.t += 1
        for name, param, grad, info in binary:
            self._flip(name, param, grad)
        if self.fp_optimizer is not None:
            self.fp_optimizer._step_params(other)

    def _flip(self, name, param, grad):
        if name not in self.state["m"]:
            param[...] = np.where(param >= 0, 1.0, -1.0).astype(param.dtype)
        m = self._slot("m", name, param)
        m *= 1.0 - self.gamma
        m += self.gamma * grad
        flip = (param * m) > self.threshold          # |m| > tau and sign(m) == sign(w), w = +-1
        np.negative(param, out=param, where=flip)

    def state_dict(self):
        """Bop's entries plus the float optimizer's under ``"fp/"`` (``"fp/lr"``, ``"fp/m/..."``)."""
        d = super().state_dict()
        if self.fp_optimizer is not None:
            for k, v in self.fp_optimizer.state_dict().items():
                d[f"fp/{k}"] = v
        return d

    def load_state_dict(self, state):
        state = dict(state)
        fp = {k[3:]: v for k, v in state.items() if k.startswith("fp/")}
        own = {k: v for k, v in state.items() if not k.startswith("fp/")}
        if fp and self.fp_optimizer is None:
            raise ValueError("state dict has fp_optimizer entries ('fp/...') but this Bop has no fp_optimizer")
        own.pop("lr", None)                      # lr lives in the float optimizer
        super().load_state_dict(own)
        if fp:
            self.fp_optimizer.load_state_dict(fp)

    def __repr__(self):
        return (f"Bop(threshold={self.threshold!r}, gamma={self.gamma!r}, "
                f"fp_optimizer={self.fp_optimizer!r}, t={self.t})")
