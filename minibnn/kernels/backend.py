"""Backend selection: the only place that decides which kernel module runs.

Backends are ``"reference"`` (NumPy float oracle), ``"cpu"`` (numba.njit, parallel) and
``"cuda"`` (numba.cuda, imported lazily).  ``name=None`` means ``$MINIBNN_BACKEND`` if set,
else ``"cpu"``.  An unavailable backend raises :class:`BackendUnavailable` here, at
selection time, with the reason -- never later inside a kernel.
"""

import importlib
import os

BACKENDS = ("reference", "cpu", "cuda")
DEFAULT_BACKEND = "cpu"


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine (the message says why)."""


_modules = {}
_failures = {}


def _load(name):
    if name in _modules:
        return _modules[name]
    if name in _failures:
        raise BackendUnavailable(_failures[name])
    try:
        mod = importlib.import_module(f"minibnn.kernels.{name}")
        check = getattr(mod, "check_available", None)
        if check is not None:
            check()
    except BackendUnavailable as exc:
        _failures[name] = str(exc)
        raise
    except Exception as exc:  # missing driver, missing numba-cuda, ...
        _failures[name] = f"backend {name!r} is not available here: {type(exc).__name__}: {exc}"
        raise BackendUnavailable(_failures[name]) from exc
    _modules[name] = mod
    return mod


def resolve_name(name=None):
    """The backend name that ``name`` stands for (``None`` -> env or default)."""
    if name is None:
        name = os.environ.get("MINIBNN_BACKEND") or DEFAULT_BACKEND
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def get_backend(name=None):
    """Return the kernel module for ``name``; raise :class:`BackendUnavailable` if it cannot run."""
    return _load(resolve_name(name))


def available_backends():
    """Names of the backends that work on this machine, e.g. ``['reference', 'cpu']``."""
    found = []
    for name in BACKENDS:
        try:
            _load(name)
        except BackendUnavailable:
            continue
        found.append(name)
    return found
