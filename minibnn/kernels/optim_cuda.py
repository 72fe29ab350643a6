"""Device twin of :mod:`minibnn.kernels.optim_cpu`: the fused optimizer updates on
numba.cuda device arrays.

Same module contract, names and signatures as :mod:`minibnn.kernels.optim_cpu` (read it
for the contract, and :mod:`minibnn.optim` for the readable rules): ``fusable``,
``count_nonfinite``, ``count_nonfinite_many``, ``zeros_like``, ``to_host``, ``from_host``,
``adam_update``, ``adamax_update``, ``sgd_update``, ``shift_adamax_update``.  The
optimizer picks this module with ``dispatch.twin(optim_cpu, param, grad)`` when its parameters live on the device, so
latent clipping (``clip``) and the per-layer learning-rate scale (folded into ``lr`` by
the optimizer) work unchanged.

One thread per element, grid-stride: read ``p, g, m, v`` once, write ``p, m, v`` once, in
float64 registers like the CPU kernels (the update is memory-bound, so the float64
arithmetic costs nothing measurable), rounded once to float32 on store: the device and
CPU kernels agree to float32 rounding (the tests use ``rtol 1e-5``; the last bit can
differ where a device ``sqrt``/division rounds differently from libm's).

Finite-gradient check: :func:`count_nonfinite_many` counts the NaN/inf entries of all the
gradients of an optimizer step into one int32 array (a slot per gradient) and copies it
back once: one device synchronization per step instead of one per parameter.

Flip count: each update takes an optional ``flips`` counter (a 1-element int32 device
array from :func:`new_counter`); when given, the kernel adds the number of elements
whose sign changed in this step (``sign(0) = +1``, the binary convention of
:mod:`minibnn.kernels.bitpack`) -- for a latent binary weight, how many binary weights
flipped.  :func:`read_counter` copies it back (one sync).

``bop_update`` (the optional rule of the contract: optim_cpu has none, Bop runs the
readable NumPy rule on the host) is here, with the flip count; :func:`set_signs` is the
device form of Bop's first-step set-up ``w <- +1 if w >= 0 else -1``.

References: Kingma & Ba, ICLR 2015, Alg. 1-2; Hubara et al., NIPS 2016, Alg. 1
(clipping, per-layer scale).
"""

import math

import numpy as np

from . import cuda as kc
from . import cuda_float as kf

cuda = kc.cuda
if cuda is not None:
    from numba import float32, float64

__all__ = ["check_available", "fusable", "count_nonfinite", "count_nonfinite_many",
           "zeros_like", "to_host", "from_host", "adam_update", "adamax_update", "sgd_update",
           "shift_adamax_update", "bop_update", "set_signs", "new_counter", "read_counter"]


def check_available():
    """Raise :class:`minibnn.kernels.BackendUnavailable` unless CUDA kernels run here."""
    kc.check_available()


def _is_dev(a):
    return not isinstance(a, np.ndarray) and cuda.devicearray.is_cuda_ndarray(a)


def fusable(*arrays):
    """True when every non-None array is a C-contiguous float32 device array, all of one
    shape (the only form the kernels below accept)."""
    shape = None
    for a in arrays:
        if a is None:
            continue
        if not _is_dev(a) or np.dtype(a.dtype) != np.float32 or not a.is_c_contiguous():
            return False
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            return False
    return shape is not None


def count_nonfinite(g):
    """Number of NaN/+-inf entries of the float device array ``g`` (0 for a non-float
    array; one sync)."""
    return count_nonfinite_many([g])[0]


def count_nonfinite_many(grads):
    """Number of NaN/+-inf entries of each device array of the sequence ``grads``: a list
    of ints, in order (0 for a non-float or empty array).

    One device synchronization for all of them: an int32 counter slot per array, zeroed
    by a kernel (a host->device copy of zeros would synchronize too), one launch per
    array adding into its own slot, then one ``copy_to_host``.  Float arrays must be
    C-contiguous (checked for all before anything is launched).
    """
    grads = list(grads)
    todo = []
    for i, g in enumerate(grads):
        if np.dtype(g.dtype).kind == "f" and g.size:
            if not g.is_c_contiguous():
                raise ValueError(f"count_nonfinite_many: grads[{i}] must be C-contiguous "
                                 f"(shape {tuple(g.shape)})")
            todo.append(i)
    if not todo:
        return [0] * len(grads)
    counts = cuda.device_array(len(grads), dtype=np.int32)
    kf.launch_elem(_zero_counts_kernel, counts.size, counts)
    for i in todo:
        kf.launch_elem(_nonfinite_into_kernel, grads[i].size, kf.flat(grads[i]), counts, i)
    return [int(c) for c in counts.copy_to_host()]


def zeros_like(a):
    """A zeroed float device array with ``a``'s shape and dtype (a fresh state slot)."""
    out = cuda.device_array(a.shape, dtype=a.dtype)
    if out.size:
        kf.launch_elem(_fill_kernel, out.size, kf.flat(out), 0.0)
    return out


def to_host(a):
    """A NumPy copy of the device array ``a`` (for state dicts)."""
    return a.copy_to_host()


def from_host(x):
    """A C-contiguous device copy of the NumPy array ``x`` (state from a state dict)."""
    return cuda.to_device(np.ascontiguousarray(x))


def new_counter():
    """A zeroed 1-element int32 device counter for the ``flips`` argument."""
    return kf.zeros_flag(1)


def read_counter(counter):
    """The counter's value (one sync)."""
    return int(counter.copy_to_host()[0])


_DUMMY = {}


def _counter(flips):
    if flips is not None:
        return flips, True
    if "c" not in _DUMMY:
        _DUMMY["c"] = new_counter()
    return _DUMMY["c"], False


def _check(where, *arrays):
    if not fusable(*arrays):
        raise TypeError(f"{where}: every array must be a C-contiguous float32 device array "
                        "of one shape")


if cuda is not None:
    @cuda.jit
    def _fill_kernel(x, value):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            x[i] = value

    @cuda.jit
    def _zero_counts_kernel(counts):
        for i in range(cuda.grid(1), counts.size, cuda.gridsize(1)):
            counts[i] = 0

    @cuda.jit
    def _nonfinite_into_kernel(x, counts, slot):
        """counts[slot] += number of NaN/+-inf entries of the 1-D float array x."""
        n = 0
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = x[i]
            if v != v or v == math.inf or v == -math.inf:
                n += 1
        if n:
            # one atomic per thread that saw any (none in the usual all-finite case)
            cuda.atomic.add(counts, slot, n)

    @cuda.jit(device=True)
    def _finish(pf, i, w, old, clip, flips, count):
        if clip:
            w = min(1.0, max(-1.0, w))
        nw = float32(w)
        pf[i] = nw
        if count and ((old >= 0) != (nw >= 0)):
            cuda.atomic.add(flips, 0, 1)

    @cuda.jit
    def _adam_kernel(pf, gf, mf, vf, beta1, beta2, a_t, eps, clip, flips, count):
        for i in range(cuda.grid(1), pf.size, cuda.gridsize(1)):
            gi = float64(gf[i])
            mi = beta1 * float64(mf[i]) + (1.0 - beta1) * gi
            vi = beta2 * float64(vf[i]) + (1.0 - beta2) * gi * gi
            old = pf[i]
            w = float64(old) - a_t * mi / (math.sqrt(vi) + eps)
            mf[i] = mi
            vf[i] = vi
            _finish(pf, i, w, old, clip, flips, count)

    @cuda.jit
    def _adamax_kernel(pf, gf, mf, uf, beta1, beta2, step, eps, clip, flips, count):
        for i in range(cuda.grid(1), pf.size, cuda.gridsize(1)):
            gi = float64(gf[i])
            mi = beta1 * float64(mf[i]) + (1.0 - beta1) * gi
            ui = max(beta2 * float64(uf[i]), abs(gi))
            old = pf[i]
            w = float64(old) - step * mi / (ui + eps)
            mf[i] = mi
            uf[i] = ui
            _finish(pf, i, w, old, clip, flips, count)

    @cuda.jit
    def _sgd_kernel(pf, gf, bf, lr, momentum, nesterov, use_buf, clip, flips, count):
        for i in range(cuda.grid(1), pf.size, cuda.gridsize(1)):
            gi = float64(gf[i])
            d = gi
            if use_buf:
                bi = momentum * float64(bf[i]) + gi
                bf[i] = bi
                d = gi + momentum * bi if nesterov else bi
            old = pf[i]
            _finish(pf, i, float64(old) - lr * d, old, clip, flips, count)


if cuda is not None:
    @cuda.jit(device=True)
    def _ap2_nonnegative(x):
        """AP2 of a finite ``x >= 0`` (:func:`minibnn.quantize.ap2`), exactly, without
        frexp: ``p = 2**floor(log2 x)`` corrected to ``p <= x < 2 p``, then ``2 p`` when
        ``x / p >= sqrt(2)`` (frexp's ``f >= sqrt(1/2)``), else ``p`` (x / p is exact)."""
        if x == 0.0:
            return 0.0
        e = math.floor(math.log2(x))
        p = 2.0 ** e
        while p > x:
            p = p * 0.5
        while p * 2.0 <= x:
            p = p * 2.0
        if x / p >= math.sqrt(2.0):
            return 2.0 * p
        return p

    @cuda.jit
    def _shift_adamax_kernel(pf, gf, mf, vf, beta1, beta2, alpha, eps, clip, flips, count):
        for i in range(cuda.grid(1), pf.size, cuda.gridsize(1)):
            gi = float64(gf[i])
            mi = beta1 * float64(mf[i]) + (1.0 - beta1) * gi
            vi = max(beta2 * float64(vf[i]), abs(gi))
            old = pf[i]
            w = float64(old) - alpha * _ap2_nonnegative(1.0 / (vi + eps)) * mi
            mf[i] = mi
            vf[i] = vi
            _finish(pf, i, w, old, clip, flips, count)


def _ap2_host(x):
    """AP2 of a finite float ``x >= 0`` on the host (frexp, as in optim_cpu)."""
    if x == 0.0:
        return 0.0
    f, e = math.frexp(x)
    return math.ldexp(1.0, e - 1 if f < math.sqrt(0.5) else e)


def shift_adamax_update(p, g, m, v, lr, beta1, beta2, eps, t, clip, flips=None):
    """Twin of ``optim_cpu.shift_adamax_update`` (Alg. 4): ``v <- max(b2 v, |g|)``,
    ``p -= AP2(lr / (1 - b1^t)) * AP2(1 / (v + eps)) * m``, then ``clip``."""
    _check("shift_adamax_update", p, g, m, v)
    alpha = _ap2_host(lr / (1.0 - beta1 ** float(int(t))))
    c, count = _counter(flips)
    kf.launch_elem(_shift_adamax_kernel, p.size, kf.flat(p), kf.flat(g), kf.flat(m), kf.flat(v),
                   float(beta1), float(beta2), alpha, float(eps), bool(clip), c, count)


def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, clip, flips=None):
    """Twin of ``optim_cpu.adam_update``: in place, ``a_t = lr sqrt(1 - b2^t) / (1 - b1^t)``,
    ``m, v`` moments, ``p -= a_t m / (sqrt(v) + eps)``, then ``clip`` to [-1, 1]."""
    _check("adam_update", p, g, m, v)
    t = int(t)
    a_t = lr * math.sqrt(1.0 - beta2 ** float(t)) / (1.0 - beta1 ** float(t))
    c, count = _counter(flips)
    kf.launch_elem(_adam_kernel, p.size, kf.flat(p), kf.flat(g), kf.flat(m), kf.flat(v),
                   float(beta1), float(beta2), a_t, float(eps), bool(clip), c, count)


def adamax_update(p, g, m, u, lr, beta1, beta2, eps, t, clip, flips=None):
    """Twin of ``optim_cpu.adamax_update``: ``u <- max(b2 u, |g|)``,
    ``p -= lr / (1 - b1^t) * m / (u + eps)``, then ``clip``."""
    _check("adamax_update", p, g, m, u)
    step = lr / (1.0 - beta1 ** float(int(t)))
    c, count = _counter(flips)
    kf.launch_elem(_adamax_kernel, p.size, kf.flat(p), kf.flat(g), kf.flat(m), kf.flat(u),
                   float(beta1), float(beta2), step, float(eps), bool(clip), c, count)


def sgd_update(p, g, buf, lr, momentum, nesterov, clip, flips=None):
    """Twin of ``optim_cpu.sgd_update`` (``buf`` is None when momentum is 0)."""
    use_buf = momentum != 0.0
    _check("sgd_update", p, g, buf if use_buf else None)
    c, count = _counter(flips)
    kf.launch_elem(_sgd_kernel, p.size, kf.flat(p), kf.flat(g),
                   kf.flat(buf) if use_buf else kf.flat(p), float(lr), float(momentum),
                   bool(nesterov), use_buf, bool(clip), c, count)


if cuda is not None:
    @cuda.jit
    def _bop_kernel(pf, gf, mf, keep, gamma, threshold, flips, count):
        for i in range(cuda.grid(1), pf.size, cuda.gridsize(1)):
            # float32 throughout, rounded after each operation like NumPy's in-place
            # ``m *= 1 - gamma; m += gamma * g`` (Python scalars cast to float32)
            mi = mf[i] * keep
            mi = mi + gamma * gf[i]
            mf[i] = mi
            p = pf[i]
            if p * mi > threshold:
                pf[i] = -p
                if count:
                    cuda.atomic.add(flips, 0, 1)

    @cuda.jit
    def _set_signs_kernel(pf):
        for i in range(cuda.grid(1), pf.size, cuda.gridsize(1)):
            pf[i] = float32(1.0) if pf[i] >= 0 else float32(-1.0)


def bop_update(p, g, m, gamma, threshold, flips=None):
    """Twin of :func:`minibnn.optim.bop_update` (Helwegen et al. 2019, Alg. 1), in place:
    ``m <- (1 - gamma) m + gamma g``; ``p <- -p`` where ``p m > threshold``.

    Computed in float32 like the NumPy rule on float32 arrays (``1 - gamma``, ``gamma``
    and ``threshold`` cast to float32; one rounding per operation), so ``m`` and the flips
    equal NumPy's -- on a GPU that fuses the multiply-add, ``m`` may differ in its last
    bit, and a flip only where ``p m`` is within that of ``threshold``.  ``p`` holds
    exactly +-1 (Bop sets it up, :func:`set_signs`).  ``flips``: the optional counter of
    the module contract (here: the number of flipped weights)."""
    _check("bop_update", p, g, m)
    c, count = _counter(flips)
    kf.launch_elem(_bop_kernel, p.size, kf.flat(p), kf.flat(g), kf.flat(m),
                   np.float32(1.0 - gamma), np.float32(gamma), np.float32(threshold), c, count)


def set_signs(p):
    """In place ``p <- +1 where p >= 0 else -1`` on a float32 device array (NaN -> -1):
    the device form of Bop's first-step ``np.where(param >= 0, 1.0, -1.0)``."""
    _check("set_signs", p)
    kf.launch_elem(_set_signs_kernel, p.size, kf.flat(p))
