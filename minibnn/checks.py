"""Argument checks shared by every tier (the one home of "is this a real array").

Tier 0: this module imports nothing from minibnn, so the kernels, the model, the data
layer and the CLI can all use it.  Each helper raises with a message that names the
input (``name``) and the problem, and returns the normalised value on success.
"""

import numbers

import numpy as np

__all__ = ["is_real_dtype", "real_array", "check_int", "check_real_scalar", "check_finite",
           "check_choice"]


def is_real_dtype(dtype):
    """True for float or integer dtypes other than bool (the dtypes a sign is defined on)."""
    dtype = np.dtype(dtype)
    return dtype != np.bool_ and (np.issubdtype(dtype, np.floating)
                                  or np.issubdtype(dtype, np.integer))


def real_array(x, name="x", ndim=None, min_ndim=None, nonempty=False):
    """``np.asarray(x)`` if it holds real numbers, else ``TypeError``.

    ``ndim``: required number of axes (an int or a tuple of allowed ints);
    ``min_ndim``: least number of axes; ``nonempty``: refuse arrays with a zero-length
    axis.  The dtype is kept (no copy, no cast).
    """
    x = np.asarray(x)
    if not is_real_dtype(x.dtype):
        raise TypeError(f"{name} must be a real (float or integer) array, got dtype {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got shape {x.shape}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} axes, got shape {x.shape}")
    if nonempty and x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    return x


def check_finite(x, name="x"):
    """Raise ``ValueError`` naming ``name`` if a float array holds NaN or +-inf."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating) and x.size and not np.isfinite(x).all():
        what = "NaN" if np.isnan(x).any() else "infinity"
        raise ValueError(f"{name} contains {what}")
    return x


def check_int(v, name, minimum=None, maximum=None):
    """``int(v)`` for a true integer (bool refused) within [minimum, maximum]."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


def check_real_scalar(v, name, lo=None, hi=None, lo_open=False, hi_open=False):
    """``float(v)`` for a finite real number within the given bounds."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and (v >= hi if hi_open else v > hi):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {v}")
    return v


def check_choice(v, name, choices):
    """``v`` if it is one of ``choices``, else ``ValueError`` listing them."""
    if v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {v!r}")
    return v
