"""Learning-rate schedules: small callables ``epoch -> lr``.

``epoch`` counts *completed* epochs: ``schedule(0)`` is the learning rate of the first
epoch, ``schedule(e)`` the one used after ``e`` epochs.  The training loop sets
``opt.lr = schedule(epoch)`` at the start of each epoch.

Every schedule has a readable ``repr``, ``to_dict()`` (JSON-able, for ``config.json``) and
is rebuilt by :func:`from_dict`.

References
----------
Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 4 and the authors' code
(``LR_decay = (LR_fin / LR_start) ** (1. / num_epochs)``, ``LR *= LR_decay`` after each
epoch).
"""

import numbers
from collections.abc import Mapping

from .checks import check_int, check_real_scalar

__all__ = ["Schedule", "exponential_decay", "step_decay", "constant", "from_dict",
           "PAPER_RECIPES", "paper_schedule"]

#: The paper's learning-rate schedules, ``dataset -> (lr_start, lr_end, epochs)``: the
#: ``LR_start``, ``LR_fin`` and ``num_epochs`` of BinaryNet's ``Train-time/mnist.py``,
#: ``cifar10.py`` and ``svhn.py`` (Adam, ``LR *= LR_decay`` after each epoch).
PAPER_RECIPES = {
    "mnist": (3e-3, 3e-7, 1000),
    "cifar10": (1e-3, 3e-7, 500),
    "svhn": (1e-3, 1e-6, 200),
}


def _positive(name, value):
    return check_real_scalar(value, name, lo=0.0, lo_open=True)


def _count(value, name, minimum):
    """``int(value)`` for an integer (an integral float is accepted) >= ``minimum``."""
    if (isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
            and not isinstance(value, bool)):
        if not float(value).is_integer():
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        value = int(value)
    return check_int(value, name, minimum=minimum)


def _epoch(epoch):
    return _count(epoch, "epoch", 0)


class Schedule:
    """Base class: ``__call__(epoch) -> float``, ``to_dict()``, ``repr``."""

    name = "schedule"
    _fields = ()

    def __call__(self, epoch):  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self):
        """``{"name": ..., <constructor arguments>}``, JSON-able; see :func:`from_dict`."""
        return {"name": self.name, **{f: getattr(self, f) for f in self._fields}}

    def __repr__(self):
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{self.name}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(tuple(sorted(self.to_dict().items())))


class ExponentialDecay(Schedule):
    """``lr(e) = lr_start * lr_decay ** e`` with ``lr_decay = (lr_end / lr_start) ** (1 / epochs)``.

    So ``lr(0) = lr_start`` (first epoch) and ``lr(epochs) = lr_end``: the paper's code
    multiplies the lr by ``lr_decay`` *after* each of its ``epochs`` epochs, so the last
    training epoch (``e = epochs - 1``) runs at ``lr_end / lr_decay`` and ``lr_end`` is the
    value reached when training ends.  Beyond ``epochs`` the formula continues (no clamp).
    """

    name = "exponential_decay"
    _fields = ("lr_start", "lr_end", "epochs")

    def __init__(self, lr_start, lr_end, epochs):
        self.lr_start = _positive("lr_start", lr_start)
        self.lr_end = _positive("lr_end", lr_end)
        self.epochs = _count(epochs, "epochs", 1)
        self.lr_decay = (self.lr_end / self.lr_start) ** (1.0 / self.epochs)

    def __call__(self, epoch):
        e = _epoch(epoch)
        if e == self.epochs:
            return self.lr_end                      # exact, not lr_start * decay**epochs
        return self.lr_start * self.lr_decay ** e

    def to_dict(self):
        return {**super().to_dict(), "lr_decay": self.lr_decay}


class StepDecay(Schedule):
    """``lr(e) = lr_start * factor ** (e // every)``: multiply by ``factor`` every ``every`` epochs."""

    name = "step_decay"
    _fields = ("lr_start", "factor", "every")

    def __init__(self, lr_start, factor, every):
        self.lr_start = _positive("lr_start", lr_start)
        self.factor = _positive("factor", factor)
        self.every = _count(every, "every", 1)

    def __call__(self, epoch):
        return self.lr_start * self.factor ** (_epoch(epoch) // self.every)


class Constant(Schedule):
    """``lr(e) = lr`` for every epoch."""

    name = "constant"
    _fields = ("lr",)

    def __init__(self, lr):
        self.lr = check_real_scalar(lr, "lr", lo=0.0)

    def __call__(self, epoch):
        _epoch(epoch)
        return self.lr


def exponential_decay(lr_start, lr_end, epochs):
    """Exponential decay from ``lr_start`` (epoch 0) to ``lr_end`` (epoch ``epochs``).

    ``lr(e) = lr_start * lr_decay ** e``, ``lr_decay = (lr_end / lr_start) ** (1 / epochs)``
    -- the paper's ``LR_decay`` per epoch.  The paper's recipes (:data:`PAPER_RECIPES`,
    :func:`paper_schedule`): MNIST ``exponential_decay(0.003, 3e-07, 1000)``, CIFAR-10
    ``exponential_decay(0.001, 3e-07, 500)``, SVHN ``exponential_decay(0.001, 1e-06, 200)``.

    Returns
    -------
    ExponentialDecay
        Callable ``epoch -> lr`` with ``.lr_decay``, ``to_dict()`` and a readable repr.
    """
    return ExponentialDecay(lr_start, lr_end, epochs)


def step_decay(lr_start, factor, every):
    """``lr(e) = lr_start * factor ** (e // every)``; returns a :class:`StepDecay`."""
    return StepDecay(lr_start, factor, every)


def constant(lr):
    """``lr(e) = lr``; returns a :class:`Constant`."""
    return Constant(lr)


def paper_schedule(dataset):
    """The paper's exponential decay for ``dataset`` ("mnist", "cifar10" or "svhn").

    References: BinaryNet's ``Train-time/{mnist,cifar10,svhn}.py`` (:data:`PAPER_RECIPES`).
    """
    if dataset not in PAPER_RECIPES:
        raise ValueError(f"dataset must be one of {', '.join(PAPER_RECIPES)}; got {dataset!r}")
    return ExponentialDecay(*PAPER_RECIPES[dataset])


_REGISTRY = {"exponential_decay": ExponentialDecay, "step_decay": StepDecay, "constant": Constant}
#: keys that to_dict() writes but the constructor does not take (recomputed, not read)
_DERIVED = {"exponential_decay": ("lr_decay",)}


def from_dict(d):
    """Rebuild a schedule from its :meth:`Schedule.to_dict` (derived keys such as
    ``lr_decay`` are recomputed, not read).  A missing or unknown key is a ValueError
    naming it."""
    if not isinstance(d, Mapping):
        raise TypeError(f"a schedule must be given as a dict (Schedule.to_dict()), got {type(d).__name__}")
    d = dict(d)
    name = d.pop("name", None)
    if name not in _REGISTRY:
        raise ValueError(f"unknown schedule {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    cls = _REGISTRY[name]
    missing = [f for f in cls._fields if f not in d]
    if missing:
        raise ValueError(f"schedule {name!r} needs {', '.join(map(repr, missing))} "
                         f"(its fields: {', '.join(cls._fields)})")
    unknown = sorted(set(d) - set(cls._fields) - set(_DERIVED.get(name, ())))
    if unknown:
        raise ValueError(f"schedule {name!r} has unknown keys {unknown} (its fields: {', '.join(cls._fields)})")
    return cls(**{f: d[f] for f in cls._fields})
