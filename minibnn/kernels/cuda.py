"""CUDA backend (numba.cuda).  Imported lazily by :mod:`minibnn.kernels.backend`.

Placeholder until the CUDA kernels land: :func:`check_available` reports why the backend
cannot be used, so selecting ``backend="cuda"`` fails at selection time.
"""

from .backend import BackendUnavailable


def check_available():
    try:
        from numba import cuda
    except Exception as exc:  # numba-cuda missing or broken
        raise BackendUnavailable(f"backend 'cuda' needs numba-cuda: {exc}") from exc
    if not cuda.is_available():
        raise BackendUnavailable(
            "backend 'cuda' is not available: no CUDA GPU/driver found "
            "(set NUMBA_ENABLE_CUDASIM=1 to run the kernels in Numba's simulator)")
    raise BackendUnavailable("backend 'cuda' is not implemented yet")
