"""Input preprocessing: the BNN paper's [-1, 1] scaling, and optional GCN + ZCA.

The Courbariaux/Hubara BinaryNet code feeds all three datasets to the network
as ``2 * x / 255 - 1`` (see :func:`scale_to_pm1`). Global contrast
normalization followed by ZCA whitening is the pylearn2 pipeline used for
CIFAR-10 in BinaryConnect; it is offered here as an option, in plain NumPy,
fitted on the training split only.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "scale_to_pm1",
    "global_contrast_normalize",
    "fit_zca",
    "apply_zca",
]

# Rows processed at once, to keep float64 temporaries at a few tens of MB.
_CHUNK = 4096


def scale_to_pm1(x: np.ndarray) -> np.ndarray:
    """Map uint8 pixels to float32 ``2 * x / 255 - 1``, i.e. into [-1, 1].

    Parameters
    ----------
    x : numpy.ndarray
        uint8, any shape (typically (N, C, H, W)).

    Returns
    -------
    numpy.ndarray
        float32, same shape; 0 maps to exactly -1 and 255 to exactly +1.
    """
    out = x.astype(np.float32)
    # Dividing by 127.5 (exact in float32) rather than multiplying by 2/255
    # (rounded) keeps 255 -> 1.0 exactly instead of 1.0000001.
    out /= np.float32(127.5)
    out -= np.float32(1.0)
    return out


def global_contrast_normalize(x: np.ndarray, *, scale: float = 1.0,
                              sqrt_bias: float = 10.0,
                              min_divisor: float = 1e-8) -> np.ndarray:
    """Per-example global contrast normalization (pylearn2's ``use_std=True``).

    Each example (row of the flattened input) has its mean subtracted and is
    divided by ``sqrt(sqrt_bias + var) / scale`` (``var`` with ddof=1). The
    defaults ``sqrt_bias=10, scale=1`` are those of pylearn2's CIFAR-10
    GCN + ZCA recipe, for pixel values in 0..255.

    Parameters
    ----------
    x : numpy.ndarray
        shape (N, ...), any real dtype.

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``x``.
    """
    n = x.shape[0]
    out = np.array(x, dtype=np.float32, copy=True).reshape(n, -1)
    for i in range(0, n, _CHUNK):
        blk = out[i:i + _CHUNK].astype(np.float64)
        blk -= blk.mean(axis=1, keepdims=True)
        ddof = 1 if blk.shape[1] > 1 else 0
        norm = np.sqrt(sqrt_bias + blk.var(axis=1, ddof=ddof, keepdims=True)) / scale
        norm[norm < min_divisor] = 1.0
        out[i:i + _CHUNK] = blk / norm
    return out.reshape(x.shape)


def fit_zca(x: np.ndarray, *, bias: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Fit a ZCA whitening transform on training data.

    With the training covariance ``C = V diag(e) V^T`` the transform is
    ``W = V diag(1 / sqrt(e + bias)) V^T`` (symmetric), applied as
    ``(x - mean) @ W``. ``bias`` regularizes the tiny eigenvalues (pylearn2's
    ``filter_bias``, default 0.1 there too).

    Parameters
    ----------
    x : numpy.ndarray
        shape (N, ...), the training examples; flattened to (N, D).
    bias : float, default 0.1
        Added to the eigenvalues before the inverse square root.

    Returns
    -------
    mean : numpy.ndarray
        float32, shape (D,).
    W : numpy.ndarray
        float32, shape (D, D).
    """
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"ZCA needs at least 2 training examples, got {n}")
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    mean = flat.mean(axis=0, dtype=np.float64)
    cov = np.zeros((d, d), dtype=np.float64)
    # Accumulating in float64 blocks: one float64 copy of 45k CIFAR images
    # would need 1.1 GB, and float32 sums lose the small eigenvalues.
    for i in range(0, n, _CHUNK):
        blk = flat[i:i + _CHUNK].astype(np.float64) - mean
        cov += blk.T @ blk
    cov /= n
    eigval, eigvec = np.linalg.eigh(cov)
    eigval = np.clip(eigval, 0.0, None)  # round-off can make them slightly negative
    w = (eigvec * (1.0 / np.sqrt(eigval + bias))) @ eigvec.T
    return mean.astype(np.float32), w.astype(np.float32)


def apply_zca(x: np.ndarray, mean: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Apply a transform from :func:`fit_zca`.

    Parameters
    ----------
    x : numpy.ndarray
        shape (N, ...) with prod(...) == D.
    mean : numpy.ndarray
        shape (D,).
    w : numpy.ndarray
        shape (D, D).

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``x``.
    """
    n = x.shape[0]
    flat = x.reshape(n, -1)
    out = np.empty(flat.shape, dtype=np.float32)
    for i in range(0, n, _CHUNK):
        out[i:i + _CHUNK] = (flat[i:i + _CHUNK].astype(np.float32) - mean) @ w
    return out.reshape(x.shape)
