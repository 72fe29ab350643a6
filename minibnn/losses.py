"""Losses: ``loss_fn(scores, y) -> (loss, grad)`` with ``grad = d loss / d scores``.

Shapes: ``scores`` (N, C) float32/64 class scores, ``y`` (N,) integer labels in
[0, C).  ``loss`` is a Python float, ``grad`` (N, C) in the scores' float dtype (at
least float32).  Scores with NaN or inf raise ``ValueError`` -- training has diverged,
and a NaN loss would otherwise propagate silently into every weight.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 4 and
Courbariaux's BinaryNet code (squared hinge loss on the last BatchNorm's output).
"""

import numpy as np

__all__ = ["squared_hinge", "softmax_cross_entropy", "error_rate", "one_hot_pm1"]


def _check(scores, y, where, n_classes=None):
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float32)
    if scores.ndim != 2:
        raise ValueError(f"{where}: scores must be (N, C), got shape {scores.shape}")
    N, C = scores.shape
    if n_classes is not None and int(n_classes) != C:
        raise ValueError(f"{where}: n_classes={n_classes} but scores have {C} columns")
    if not np.isfinite(scores).all():
        bad = "NaN" if np.isnan(scores).any() else "inf"
        raise ValueError(f"{where}: scores contain {bad} (training diverged?)")
    y = np.asarray(y)
    if y.shape != (N,):
        raise ValueError(f"{where}: y must be (N,) = ({N},) labels, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"{where}: y must hold integer class labels, got dtype {y.dtype}")
    if N == 0:
        raise ValueError(f"{where}: empty batch")
    if y.min() < 0 or y.max() >= C:
        raise ValueError(f"{where}: labels must be in [0, {C}), got range [{y.min()}, {y.max()}]")
    dtype = np.result_type(np.float32, scores.dtype)
    return scores.astype(dtype, copy=False), y


def one_hot_pm1(y, n_classes, dtype=np.float32):
    """(N,) int labels -> (N, n_classes) targets: +1 at the label, -1 elsewhere."""
    t = np.full((len(y), n_classes), -1, dtype=dtype)
    t[np.arange(len(y)), y] = 1
    return t


def squared_hinge(scores, y, n_classes=None):
    """Squared hinge loss, mean over the batch **and** the classes.

    Rule: targets ``t`` (N, C) one-hot in {-1, +1}; ``margin = max(0, 1 - t * s)``;
    ``loss = mean(margin ** 2)`` over all N * C entries (the paper's code:
    ``T.mean(T.sqr(T.maximum(0., 1. - y * out)))``);
    ``grad = -2 * t * margin / (N * C)``.

    Parameters
    ----------
    scores : (N, C) float.  y : (N,) int labels.  n_classes : int or None (= C, checked).

    Returns
    -------
    loss : float.  grad : (N, C), scores' float dtype.

    References: Hubara et al. 2016, Sec. 4; BinaryNet Train-time/binary_net.py.
    """
    s, y = _check(scores, y, "squared_hinge", n_classes)
    t = one_hot_pm1(y, s.shape[1], s.dtype)
    margin = np.maximum(0, 1 - t * s)
    loss = float(np.mean(margin ** 2))
    grad = (-2.0 / s.size) * t * margin
    return loss, grad.astype(s.dtype, copy=False)


def softmax_cross_entropy(scores, y):
    """Softmax cross-entropy, mean over the batch.

    Rule: ``p = softmax(s)`` (computed from ``s - max(s)`` for stability);
    ``loss = -mean_n log p[n, y_n]``; ``grad = (p - onehot(y)) / N``.

    Parameters
    ----------
    scores : (N, C) float.  y : (N,) int labels.

    Returns
    -------
    loss : float.  grad : (N, C), scores' float dtype.
    """
    s, y = _check(scores, y, "softmax_cross_entropy")
    N = s.shape[0]
    shifted = s - s.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_z
    loss = float(-log_p[np.arange(N), y].mean())
    grad = np.exp(log_p)
    grad[np.arange(N), y] -= 1
    grad /= N
    return loss, grad


def error_rate(scores, y):
    """Fraction of rows whose argmax differs from the label: (N, C), (N,) -> float in
    [0, 1] (ties go to the first maximal class)."""
    scores = np.asarray(scores)
    y = np.asarray(y)
    if scores.ndim != 2 or y.shape != (scores.shape[0],):
        raise ValueError(f"error_rate: scores must be (N, C) and y (N,), got {scores.shape}, {y.shape}")
    if len(y) == 0:
        raise ValueError("error_rate: empty batch")
    return float(np.mean(np.argmax(scores, axis=1) != y))
