"""The device seam: pick an op module by where the arrays live (the one home of it).

The model code is written once, against a module of ops: :mod:`minibnn.functional` for
NumPy arrays.  Each such module may have a *device twin* with the same function names,
signatures and cache contract that works on numba.cuda device arrays (e.g.
:mod:`minibnn.functional_cuda`).  Callers write::

    F = dispatch.twin(functional, x)        # functional itself for NumPy x
    out, cache = F.dense_forward(x, w, b)

so a layer never tests where its arrays are, and NumPy code pays one ``type(x) is
np.ndarray`` check per call.

A *device array* is an object whose type exposes ``__cuda_array_interface__`` (numba's
``DeviceNDArray``; other CUDA arrays can be wrapped by the twin with
``numba.cuda.as_cuda_array``), or that numba.cuda recognises as one (the arrays of the
CUDA simulator, ``NUMBA_ENABLE_CUDASIM=1``).  Nothing here imports numba.cuda: twins are imported
lazily, on the first call that sees a device array, so ``import minibnn`` stays free of
the CUDA driver.
"""

import importlib
import sys
import threading

import numpy as np

from .kernels.backend import BackendUnavailable

__all__ = ["TWINS", "on_device", "twin", "clear_cache"]

#: host op module name -> its device twin's module name
TWINS = {
    "minibnn.functional": "minibnn.functional_cuda",
    "minibnn.losses": "minibnn.losses_cuda",
    "minibnn.kernels.optim_cpu": "minibnn.kernels.optim_cuda",
}

_loaded = {}        # twin module name -> module
_failures = {}      # twin module name -> reason it cannot be used
_lock = threading.Lock()


def on_device(x):
    """True if ``x`` is a CUDA device array: its type has ``__cuda_array_interface__``
    (numba's ``DeviceNDArray``), or numba.cuda says so (the CUDA simulator's arrays).

    NumPy arrays, Python scalars, lists and ``None`` are host values (False).
    """
    t = type(x)
    if t is np.ndarray:             # the hot path: one identity test
        return False
    if getattr(t, "__cuda_array_interface__", None) is not None:
        return True
    cuda = sys.modules.get("numba.cuda")
    if cuda is None:                # no device array exists before numba.cuda is imported
        return False
    try:
        return bool(cuda.devicearray.is_cuda_ndarray(x))
    except AttributeError:
        return False


def _load_twin(module_name):
    twin_name = TWINS.get(module_name)
    if twin_name is None:
        raise BackendUnavailable(
            f"{module_name} has no device twin: its ops run on NumPy arrays only "
            f"(copy device arrays to the host first, e.g. with .copy_to_host())")
    with _lock:
        if twin_name in _loaded:
            return _loaded[twin_name]
        if twin_name in _failures:
            raise BackendUnavailable(_failures[twin_name])
        try:
            mod = importlib.import_module(twin_name)
            check = getattr(mod, "check_available", None)
            if check is not None:
                check()
        except BackendUnavailable as exc:
            _failures[twin_name] = str(exc)
            raise
        except Exception as exc:  # no numba-cuda, no driver, module not written yet ...
            _failures[twin_name] = (f"device arrays need {twin_name} (the device twin of "
                                    f"{module_name}), which cannot be used here: "
                                    f"{type(exc).__name__}: {exc}")
            raise BackendUnavailable(_failures[twin_name]) from exc
        _loaded[twin_name] = mod
        return mod


def twin(module, *arrays):
    """``module`` for host arrays, its registered device twin for device arrays.

    Parameters
    ----------
    module : a host op module listed in :data:`TWINS` (e.g. :mod:`minibnn.functional`).
    *arrays : the arrays the ops will receive; ``None`` entries are skipped (optional
        inputs), anything that is not a device array counts as host.

    Returns
    -------
    ``module`` itself when no array is on the device (always, for NumPy arrays: the
    check is one ``type(a) is np.ndarray`` per array); else the twin module.

    Raises
    ------
    TypeError : some arrays are device arrays and others host arrays (say which); move
        them to one side first.
    minibnn.kernels.BackendUnavailable : device arrays, but the twin cannot be imported
        (no numba-cuda, no driver, no twin registered); the message says why.
    """
    device = host = None
    for i, a in enumerate(arrays):
        if type(a) is np.ndarray or a is None:
            if host is None and a is not None:
                host = i
            continue
        if on_device(a):
            if device is None:
                device = i
        elif host is None:
            host = i
    if device is None:
        return module
    if host is not None:
        raise TypeError(
            f"{module.__name__}: argument {device} is a device array ({type(arrays[device]).__name__}) "
            f"but argument {host} is a host array ({type(arrays[host]).__name__}); "
            f"mixing host and device arrays is not supported: move them to one side first "
            f"(numba.cuda.to_device / .copy_to_host())")
    return _load_twin(module.__name__)


def clear_cache():
    """Forget loaded twins and failures (tests that monkeypatch :data:`TWINS` call it)."""
    with _lock:
        _loaded.clear()
        _failures.clear()
