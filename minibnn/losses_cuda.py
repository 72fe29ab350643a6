"""Device twin of :mod:`minibnn.losses`: the same losses on numba.cuda device arrays.

``loss_fn(scores, y) -> (loss, grad)`` exactly as in :mod:`minibnn.losses` (read the
rules there): ``scores`` (N, C) float32 device array, ``y`` (N,) integer labels (a
device array, or a host array that is uploaded), ``loss`` a Python float, ``grad`` (N, C)
float32 device array.  The per-element (or per-row) terms and the gradient come from one
kernel, the loss is summed on the device (one block, float64 accumulation) and copied
back together with the error flags: one small copy, which is the step's one
synchronization.  NaN / inf scores and labels outside [0, C) raise ``ValueError`` with
the CPU's messages.

:func:`error_count` returns the number of misclassified rows, or, given ``out`` (a
1-element int32 device array), adds to it on the device without synchronizing, so an
evaluation loop copies one number at the end.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 4 and
Courbariaux's BinaryNet code (squared hinge loss).
"""

import numpy as np

from .kernels import cuda as kc
from .kernels import cuda_float as kf

cuda = kc.cuda

__all__ = ["check_available", "squared_hinge", "softmax_cross_entropy", "error_rate",
           "error_count", "new_error_counter", "Accumulator"]


def check_available():
    """Raise :class:`minibnn.kernels.BackendUnavailable` unless CUDA kernels run here."""
    kc.check_available()


def _is_dev(a):
    return not isinstance(a, np.ndarray) and cuda.devicearray.is_cuda_ndarray(a)


def _check(scores, y, where, n_classes=None):
    if not _is_dev(scores):
        raise TypeError(f"{where}: scores must be a CUDA device array, got {type(scores).__name__}")
    if np.dtype(scores.dtype) != np.float32 or not scores.is_c_contiguous():
        raise TypeError(f"{where}: scores must be a C-contiguous float32 device array, "
                        f"got {scores.dtype}")
    if scores.ndim != 2:
        raise ValueError(f"{where}: scores must be (N, C), got shape {scores.shape}")
    N, C = scores.shape
    if n_classes is not None and int(n_classes) != C:
        raise ValueError(f"{where}: n_classes={n_classes} but scores have {C} columns")
    if not _is_dev(y):
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            raise ValueError(f"{where}: y must hold integer class labels, got dtype {y.dtype}")
        y = cuda.to_device(np.ascontiguousarray(y, dtype=np.int32))
    elif np.dtype(y.dtype).kind not in "iu":
        raise ValueError(f"{where}: y must hold integer class labels, got dtype {y.dtype}")
    if y.shape != (N,):
        raise ValueError(f"{where}: y must be (N,) = ({N},) labels, got shape {y.shape}")
    if N == 0:
        raise ValueError(f"{where}: empty batch")
    return scores, y


def _finish(stats, flags, where, C):
    """One copy of (loss sum, flags); raise on bad scores or labels."""
    f = flags.copy_to_host()
    if f[0] or f[1]:
        raise ValueError(f"{where}: scores contain {'NaN' if f[0] else 'inf'} (training diverged?)")
    if f[2]:
        raise ValueError(f"{where}: labels must be in [0, {C}), {int(f[2])} are not")
    return float(stats.copy_to_host()[0])


def _squared_hinge_terms(s, y):
    """(grad, per-element terms, flags, denominator N C) of the squared hinge."""
    N, C = s.shape
    grad = cuda.device_array((N, C), dtype=np.float32)
    sq = cuda.device_array(N * C, dtype=np.float32)
    flags = kf.zeros_flag(3)
    kf.launch_elem(kf.squared_hinge_kernel, N * C, s, y, grad, sq, flags)
    return grad, sq, flags, N * C


def _cross_entropy_terms(s, y):
    """(grad, per-row terms, flags, denominator N) of the softmax cross-entropy."""
    N, C = s.shape
    grad = cuda.device_array((N, C), dtype=np.float32)
    nll = cuda.device_array(N, dtype=np.float32)
    flags = kf.zeros_flag(3)
    kf.launch_elem(kf.softmax_ce_kernel, N, s, y, grad, nll, flags)
    return grad, nll, flags, N


def squared_hinge(scores, y, n_classes=None):
    """Twin of :func:`minibnn.losses.squared_hinge`: ``mean(max(0, 1 - t s)**2)`` over N C
    entries, ``grad = -2 t margin / (N C)``."""
    s, y = _check(scores, y, "squared_hinge", n_classes)
    grad, sq, flags, denom = _squared_hinge_terms(s, y)
    stats = cuda.device_array(1, dtype=np.float64)
    kf.sum_all(sq, stats)
    return _finish(stats, flags, "squared_hinge", s.shape[1]) / denom, grad


def softmax_cross_entropy(scores, y):
    """Twin of :func:`minibnn.losses.softmax_cross_entropy`: ``-mean log p[y]``,
    ``grad = (p - onehot(y)) / N`` (one thread per row)."""
    s, y = _check(scores, y, "softmax_cross_entropy")
    grad, nll, flags, denom = _cross_entropy_terms(s, y)
    stats = cuda.device_array(1, dtype=np.float64)
    kf.sum_all(nll, stats)
    return _finish(stats, flags, "softmax_cross_entropy", s.shape[1]) / denom, grad


#: loss name (:data:`minibnn.registry.LOSSES`) -> (terms function, name in messages)
_TERMS = {"squared_hinge": (_squared_hinge_terms, "squared_hinge"),
          "cross_entropy": (_cross_entropy_terms, "softmax_cross_entropy")}


class Accumulator:
    """A training epoch's sums, kept on the device: the loss summed as ``loss * N`` per
    batch (float64, the host loop's ``loss_sum``), the misclassified rows (int32, its
    ``wrong``) and the error flags of every batch; :meth:`read` copies them back (one
    sync) and raises there if any batch had NaN / inf scores or bad labels.

    ``loss`` : a :data:`minibnn.registry.LOSSES` name (``"squared_hinge"`` or
    ``"cross_entropy"``).  The float64 operations are the host's, in its order
    (``sum += (batch_sum / denom) * N``), so a run resumed from ``read()`` values
    continues the same sums.
    """

    def __init__(self, loss, loss_sum=0.0, wrong=0):
        if loss not in _TERMS:
            raise ValueError(f"Accumulator: unknown loss {loss!r} (known: {', '.join(_TERMS)})")
        self.loss = loss
        self._sum = cuda.device_array(1, dtype=np.float64)
        self._wrong = new_error_counter()
        self._flags = kf.zeros_flag(3)
        self._stats = cuda.device_array(1, dtype=np.float64)
        self._classes = 0
        self.reset(loss_sum, wrong)

    def reset(self, loss_sum=0.0, wrong=0):
        """Start from host values (a new epoch: zeros; a resumed one: the checkpoint's)."""
        self._sum.copy_to_device(np.array([float(loss_sum)], dtype=np.float64))
        self._wrong.copy_to_device(np.array([int(wrong)], dtype=np.int32))
        self._flags.copy_to_device(np.zeros(3, dtype=np.int32))

    def add(self, scores, y):
        """The loss gradient ``(N, C)`` float32 device array of one batch; its loss and
        errors are added on the device (nothing is copied back)."""
        terms, where = _TERMS[self.loss]
        s, y = _check(scores, y, where)
        grad, parts, flags, denom = terms(s, y)
        self._classes = s.shape[1]
        kf.sum_all(parts, self._stats)
        kf.add_batch_loss_kernel[1, 1](self._stats, self._sum, denom, s.shape[0])
        kf.launch_elem(kf.add_flags_kernel, 3, flags, self._flags)
        kf.launch_elem(kf.error_count_kernel, s.shape[0], s, y, self._wrong)
        return grad

    def read(self):
        """``(loss_sum float, wrong int)`` (one sync); ``ValueError`` with the host
        loss's message if a batch since the last :meth:`reset` had bad scores or labels."""
        f = self._flags.copy_to_host()
        where = _TERMS[self.loss][1]
        if f[0] or f[1]:
            raise ValueError(f"{where}: scores contain {'NaN' if f[0] else 'inf'} "
                             "(training diverged?)")
        if f[2]:
            raise ValueError(f"{where}: labels must be in [0, {self._classes}), "
                             f"{int(f[2])} are not")
        return float(self._sum.copy_to_host()[0]), int(self._wrong.copy_to_host()[0])


def new_error_counter():
    """A zeroed 1-element int32 device array for :func:`error_count`'s ``out``."""
    return kf.zeros_flag(1)


def error_count(scores, y, out=None):
    """Rows whose first argmax differs from the label: an int (one sync) or, with ``out``
    (1-element int32 device array), added to ``out[0]`` on the device and ``out`` returned."""
    s, y = _check(scores, y, "error_count")
    acc = new_error_counter() if out is None else out
    kf.launch_elem(kf.error_count_kernel, s.shape[0], s, y, acc)
    return int(acc.copy_to_host()[0]) if out is None else out


def error_rate(scores, y):
    """Twin of :func:`minibnn.losses.error_rate`: fraction of misclassified rows."""
    return error_count(scores, y) / scores.shape[0]
