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

import math

__all__ = ["Schedule", "exponential_decay", "step_decay", "constant", "from_dict"]


def _positive(name, value):
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def _epoch(epoch):
    if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
    return int(epoch)


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
        if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        self.epochs = int(epochs)
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
        if isinstance(every, bool) or int(every) != every or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.every = int(every)

    def __call__(self, epoch):
        return self.lr_start * self.factor ** (_epoch(epoch) // self.every)


class Constant(Schedule):
    """``lr(e) = lr`` for every epoch."""

    name = "constant"
    _fields = ("lr",)

    def __init__(self, lr):
        lr = float(lr)
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"lr must be a finite number >= 0, got {lr}")
        self.lr = lr

    def __call__(self, epoch):
        _epoch(epoch)
        return self.lr


def exponential_decay(lr_start, lr_end, epochs):
    """Exponential decay from ``lr_start`` (epoch 0) to ``lr_end`` (epoch ``epochs``).

    ``lr(e) = lr_start * lr_decay ** e``, ``lr_decay = (lr_end / lr_start) ** (1 / epochs)``
    -- the paper's ``LR_decay`` per epoch.  E.g. MNIST: ``exponential_decay(3e-3, 3e-7,
    1000)``; CIFAR-10 / SVHN: ``exponential_decay(1e-3, 1e-6, 500 / 200)``.

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


_REGISTRY = {"exponential_decay": ExponentialDecay, "step_decay": StepDecay, "constant": Constant}


def from_dict(d):
    """Rebuild a schedule from its :meth:`Schedule.to_dict` (derived keys such as
    ``lr_decay`` are recomputed, not read)."""
    d = dict(d)
    name = d.pop("name", None)
    if name not in _REGISTRY:
        raise ValueError(f"unknown schedule {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    cls = _REGISTRY[name]
    return cls(**{f: d[f] for f in cls._fields})
