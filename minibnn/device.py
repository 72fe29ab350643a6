"""Device-resident training: moving a model and its optimizer to the GPU, a dataset
uploaded once, batches gathered on the device.

A training step on the GPU is the CPU step with every array on the device::

    from minibnn import device, losses_cuda
    device.use_caching_allocator()           # optional, before the first CUDA call
    device.to_device(model)                  # params, grads, buffers -> device arrays
    opt = Adam(model, lr=...)                # state slots are created on the device
    data = device.DeviceDataset(x_train, y_train)
    for xb, yb in data.batches(100, rng):    # (100, ...) float32, (100,) int32 on device
        out = model.forward(xb)
        loss, dout = losses_cuda.squared_hinge(out, yb)
        model.backward(dout)
        opt.step()
    device.to_host(model)                    # back to NumPy (checkpoints, packing)

``minibnn train --backend cuda`` runs this through :class:`DeviceLoop` (chosen once by
:func:`minibnn.train.loop_class`): the same step, with the loss and error counts summed
on the device (:class:`minibnn.losses_cuda.Accumulator`) and the epoch's statistics
counted there (:class:`minibnn.stats.DeviceEpochStats`); a host copy of the model is
refreshed at the end of each epoch for ``best.npz`` / ``last.npz``.

The layers pick their op module by where the arrays live (:func:`minibnn.dispatch.twin`:
:mod:`minibnn.functional` or :mod:`minibnn.functional_cuda`), the optimizer its kernels
likewise (:mod:`minibnn.kernels.optim_cpu` or :mod:`minibnn.kernels.optim_cuda`), so the
model code is the CPU code.  Nothing in a step copies to the host except the small flags
of the binary layers' +-1 / NaN checks and of the optimizer's finite-gradient check (and,
outside :class:`DeviceLoop`, the loss: one float).

Memory: numba.cuda allocates every array with ``cuMemAlloc`` and frees in batches with
``cuMemFree``, which synchronizes the device; a step allocates a few dozen temporaries.
:func:`use_caching_allocator` installs a caching allocator (blocks kept in size classes
and reused; returned to the driver only when an allocation would otherwise run out of
memory) through numba's External Memory Management interface; it must run before the
process's first CUDA call.  It is opt-in and, like the rest of the device code, has run
only under the simulator and on fakes so far (``tests/test_device_allocator.py``).  Reuse is safe because
every kernel and copy here runs on the one default stream, in order.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Alg. 1 (the training
step); numba documentation, "External Memory Management (EMM) Plugin interface".
"""

import numpy as np

from .kernels import cuda as kc
from .kernels import cuda_float as kf

cuda = kc.cuda

__all__ = ["to_device", "to_host", "optimizer_to_device", "optimizer_to_host",
           "DeviceDataset", "DeviceLoop", "use_caching_allocator", "is_device_array"]


def is_device_array(a):
    """True for a numba.cuda device array (also the simulator's)."""
    return cuda is not None and not isinstance(a, np.ndarray) and cuda.devicearray.is_cuda_ndarray(a)


def _up(a, name):
    if is_device_array(a):
        return a
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise TypeError(f"{name}: only float arrays move to the device, got {a.dtype}")
    return cuda.to_device(np.ascontiguousarray(a, dtype=np.float32))


def _down(a):
    return a.copy_to_host() if is_device_array(a) else a


def _move(model, fn):
    layers = getattr(model, "layers", None)
    if layers is None:
        raise TypeError(f"expected a model with .layers (a Sequential), got {type(model).__name__}")
    # convert everything first, then assign: a failure leaves the model as it was
    new = []
    for i, layer in enumerate(layers):
        new.append([{k: fn(v, f"{i}.{k}") for k, v in d.items()}
                    for d in (layer.params, layer.grads, layer.buffers)])
    for layer, (p, g, b) in zip(layers, new):
        layer.params.update(p)
        layer.grads.update(g)
        layer.buffers.update(b)
    return model


def to_device(model):
    """Move every layer's params, grads and buffers to float32 device arrays, in place
    (arrays already on the device are kept); returns the model.  The layers then run
    :mod:`minibnn.functional_cuda` on device inputs."""
    return _move(model, _up)


def to_host(model):
    """Copy every device param, grad and buffer back to a NumPy array, in place; returns
    the model (e.g. before ``model.save`` or packing for inference)."""
    return _move(model, lambda a, name: _down(a))


def _optimizers(opt):
    yield opt
    fp = getattr(opt, "fp_optimizer", None)
    if fp is not None:
        yield from _optimizers(fp)


def _move_state(opt, fn):
    for o in _optimizers(opt):
        state = getattr(o, "state", None)
        if not isinstance(state, dict):
            raise TypeError(f"expected a minibnn optimizer with .state, got {type(o).__name__}")
        moved = {slot: {name: fn(a, f"{slot}/{name}") for name, a in arrays.items()}
                 for slot, arrays in state.items()}
        for slot, arrays in moved.items():
            state[slot].update(arrays)
    return opt


def optimizer_to_device(opt):
    """Move an optimizer's state arrays (moments, momentum buffers; also those of a
    Bop's float optimizer) to the device, in place; returns ``opt``.  Needed only for
    state loaded from a checkpoint: slots created after :func:`to_device` are born on
    the device."""
    return _move_state(opt, _up)


def optimizer_to_host(opt):
    """Copy an optimizer's device state arrays back to NumPy, in place; returns ``opt``."""
    return _move_state(opt, lambda a, name: _down(a))


class DeviceDataset:
    """A dataset uploaded to the device once; batches are gathered there.

    Parameters
    ----------
    x : (N, ...) real array (e.g. (N, 784) or (N, C, H, W)), stored as float32.
    y : (N,) integer labels, stored as int32.

    :meth:`batches` uploads one permutation per epoch (N int32) and gathers each batch
    with one kernel from it; nothing else crosses the bus.
    """

    def __init__(self, x, y):
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim < 2 or y.shape != (x.shape[0],):
            raise ValueError(f"DeviceDataset: x must be (N, ...) and y (N,), got {x.shape}, {y.shape}")
        if y.dtype.kind not in "iu":
            raise TypeError(f"DeviceDataset: y must hold integer labels, got {y.dtype}")
        if x.dtype.kind not in "fiu" or x.dtype == np.bool_:
            raise TypeError(f"DeviceDataset: x must be real, got {x.dtype}")
        self.n = x.shape[0]
        self.sample_shape = x.shape[1:]
        self.x = cuda.to_device(np.ascontiguousarray(x, dtype=np.float32).reshape(self.n, -1))
        self.y = cuda.to_device(np.ascontiguousarray(y, dtype=np.int32))

    def __len__(self):
        return self.n

    def gather(self, idx):
        """Rows ``idx`` ((B,) int32 device array or host integers) -> ``(x (B, ...)
        float32, y (B,) int32)`` new device arrays."""
        if not is_device_array(idx):
            idx = np.asarray(idx)
            if idx.ndim != 1 or idx.dtype.kind not in "iu":
                raise ValueError("DeviceDataset.gather: idx must be a 1-D integer array")
            if idx.size and (idx.min() < 0 or idx.max() >= self.n):
                raise IndexError(f"DeviceDataset.gather: indices must be in [0, {self.n})")
            idx = cuda.to_device(np.ascontiguousarray(idx, dtype=np.int32))
        B = idx.shape[0]
        xb = cuda.device_array((B, self.x.shape[1]), dtype=np.float32)
        yb = cuda.device_array(B, dtype=np.int32)
        kf.launch_elem(kf.gather_rows_kernel, xb.size, self.x, idx, xb)
        kf.launch_elem(kf.gather_labels_kernel, B, self.y, idx, yb)
        return xb.reshape(B, *self.sample_shape), yb

    def rows(self, start, stop):
        """Rows ``start:stop`` as ``(x (B, ...), y (B,))`` device views (no copy, no
        kernel): the contiguous batches of an evaluation pass."""
        start, stop = max(0, int(start)), min(self.n, int(stop))
        x = self.x[start:stop]
        return x.reshape(x.shape[0], *self.sample_shape), self.y[start:stop]

    def batches(self, batch_size, rng=None, shuffle=True, drop_last=False):
        """Yield ``(x, y)`` device batches of ``batch_size`` rows for one epoch, in the
        order of ``rng.permutation(N)`` (``shuffle``) or 0..N-1."""
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        batch_size = int(batch_size)
        if shuffle:
            rng = np.random.default_rng(rng)
            order = rng.permutation(self.n)
        else:
            order = np.arange(self.n)
        order_dev = cuda.to_device(order.astype(np.int32))
        stop = self.n - self.n % batch_size if drop_last else self.n
        for i in range(0, stop, batch_size):
            yield self.gather(order_dev[i:min(i + batch_size, stop)])


# ---------------------------------------------------------------------------
# the training loop's device half (minibnn.train picks it for backend "cuda")
# ---------------------------------------------------------------------------

class DeviceLoop:
    """What :func:`minibnn.train.train` does per mini-batch and per epoch, on the device.

    The same methods as the host loop of :mod:`minibnn.train` (``new_tracker``,
    ``begin``, ``step``, ``sync``, ``evaluate``, ``host_model``); the training loop picks
    one of the two once, by backend, and calls them without knowing which.

    * At construction (after a resume has loaded the checkpoint into the host model):
      a host copy of the model is kept (``host_model``), then the model's params, grads
      and buffers and the optimizer's state move to the device for the rest of the run;
      the training images are uploaded once (:class:`DeviceDataset`), the validation and
      test images on their first evaluation.
    * Per epoch (``begin``): the permutation goes up once (N int32); per batch (``step``)
      the batch is gathered on the device from a slice of it, forward, loss, backward
      and optimizer step run there, and the loss and error counts are added to device
      accumulators (:class:`minibnn.losses_cuda.Accumulator`); ``sync`` copies them back
      (end of the epoch, a checkpoint, a progress-bar refresh).
    * ``host_model()`` refreshes the host copy from the device (one copy of each param
      and buffer, only if a step ran since the last one): the epoch's statistics,
      ``best.npz`` and ``last.npz`` are written from it, in the format of a CPU run.

    The layers' random generators (dropout masks, stochastic signs: a seed per draw, see
    :mod:`minibnn.functional_cuda`) stay NumPy Generators on the host, saved and restored
    with the checkpoint like the CPU's, so a resumed run on the same device continues
    the same device random streams.
    """

    #: run settings whose ops have no device twin: setting -> (value, why); shift BN
    #: (functional_cuda) and Bop (kernels.optim_cuda.bop_update and set_signs) have
    #: theirs, the bfloat16 backward GEMM (a CPU kernel) has none
    UNSUPPORTED = {"grad_dtype": ("bfloat16", "the bfloat16 backward GEMM is a CPU kernel "
                                            "(kernels/bf16.py); use grad_dtype 'float32'")}

    @classmethod
    def check(cls, config):
        """Refuse, before a run directory is made, a config this loop cannot train:
        :class:`minibnn.kernels.BackendUnavailable` naming the setting."""
        from .kernels import BackendUnavailable

        for field, (value, why) in cls.UNSUPPORTED.items():
            if getattr(config, field) == value:
                raise BackendUnavailable(f"backend 'cuda': {field} {value!r}: {why}, or "
                                         "train on backend 'cpu'")

    def __init__(self, session):
        import copy

        from . import losses_cuda

        kf.quiet_low_occupancy_warnings()
        self.model, self.opt = session.model, session.opt
        self._host = copy.deepcopy(session.model)
        to_device(self.model)
        optimizer_to_device(self.opt)
        self._losses = losses_cuda
        self._train = DeviceDataset(session.x_train, session.y_train)
        self._eval = {}
        self._acc = losses_cuda.Accumulator(session.config.loss)
        self._perm = None
        self._dirty = False

    def new_tracker(self):
        """The epoch statistics (:class:`minibnn.stats.DeviceEpochStats`)."""
        from .stats import DeviceEpochStats
        return DeviceEpochStats(self.host_model())

    def begin(self, state):
        """Start (or resume) epoch ``state``: upload its order, load its sums."""
        self._perm = cuda.to_device(np.ascontiguousarray(state.perm, dtype=np.int32))
        self._acc.reset(state.loss_sum, state.wrong)

    def step(self, state, lo, hi):
        """One mini-batch: the rows ``perm[lo:hi]``."""
        xb, yb = self._train.gather(self._perm[lo:hi])
        scores = self.model.forward(xb, training=True)
        grad = self._acc.add(scores, yb)
        self.model.backward(grad, input_grad=False)   # nothing below the input
        self.opt.step()
        self._dirty = True
        state.tracker.after_batch(self.model)
        state.seen += hi - lo

    def sync(self, state):
        """Copy the epoch's loss sum and error count into ``state`` (one sync)."""
        state.loss_sum, state.wrong = self._acc.read()

    def evaluate(self, x, y, batch_size):
        """Error rate of the model (evaluation mode) on host arrays ``x``, ``y`` (uploaded
        on the first call and kept); errors counted on the device, one copy at the end."""
        if len(x) == 0:
            return float("nan")
        key = (id(x), id(y))
        if key not in self._eval:
            self._eval[key] = (DeviceDataset(x, y), x, y)   # keep x, y: ids stay theirs
        data = self._eval[key][0]
        wrong = self._losses.new_error_counter()
        for i in range(0, data.n, batch_size):
            xb, yb = data.rows(i, i + batch_size)
            scores = self.model.forward(xb, training=False)
            self._losses.error_count(scores, yb, out=wrong)
        return int(wrong.copy_to_host()[0]) / data.n

    def host_model(self):
        """The host copy of the model, refreshed from the device if a step ran since."""
        if self._dirty:
            for dev, host in zip(self.model.layers, self._host.layers):
                for d, h in ((dev.params, host.params), (dev.buffers, host.buffers)):
                    for k, v in d.items():
                        h[k] = v.copy_to_host(h[k]) if h[k].flags.c_contiguous else v.copy_to_host()
            self._dirty = False
        return self._host


# ---------------------------------------------------------------------------
# caching allocator (numba EMM plugin)
# ---------------------------------------------------------------------------

def _size_class(size):
    """Round up to a power of two (at least 512 bytes): few classes, at most 2x slack."""
    return max(512, 1 << (int(size) - 1).bit_length())


class _BlockPool:
    """The caching allocator's bookkeeping, in pure Python (tested without a GPU): free
    device blocks kept per size class (:func:`_size_class`) and handed out again.

    ``allocate(nbytes) -> block`` gets a new block from the driver (numba's own manager:
    an object that keeps ``nbytes`` of device memory alive while it is referenced).
    ``is_oom(exc)`` says whether ``allocate`` failed for want of memory: then the cached
    free blocks are dropped, their memory goes back to the driver, and ``allocate`` is
    tried once more -- without that, blocks cached in other classes could make a
    request fail that the driver could serve.
    """

    def __init__(self, allocate, is_oom=lambda exc: False):
        self._allocate = allocate
        self._is_oom = is_oom
        self._free = {}         # size class (bytes) -> [block], last in, first out

    def take(self, size):
        """``(block, give_back)`` for a request of ``size`` bytes: a free block of its size
        class, else a new one.  ``give_back()`` puts the block back on the free list of
        that class (the finalizer of the pointer handed out: it runs once the last
        array using the block is gone)."""
        nbytes = _size_class(size)
        free = self._free.setdefault(nbytes, [])
        block = free.pop() if free else self._new(nbytes)

        def give_back():
            free.append(block)
        return block, give_back

    def _new(self, nbytes):
        try:
            return self._allocate(nbytes)
        except Exception as exc:
            if not (self._is_oom(exc) and self.release()):
                raise
        return self._allocate(nbytes)

    def release(self):
        """Drop every cached free block (its memory returns to the driver once nothing
        else holds it); blocks in use come back to their lists later.  Returns how many
        were dropped."""
        n = 0
        for free in self._free.values():
            n += len(free)
            free.clear()
        return n

    def free_counts(self):
        """``{size class: number of free blocks}`` (for tests and statistics)."""
        return {nbytes: len(free) for nbytes, free in self._free.items() if free}


def _make_manager(parent=None, pointer=None, is_oom=None):
    """The caching memory manager class: a subclass of ``parent`` (numba's
    ``NumbaCUDAMemoryManager``) whose ``memalloc`` hands out ``pointer`` (numba's
    ``MemoryPointer``) views of pooled blocks.  The arguments are for tests: fakes with
    the same interface build the class without CUDA."""
    import weakref

    oom_test = is_oom or (lambda exc: False)
    if parent is None:
        from numba.cuda.cudadrv.driver import (CudaAPIError, MemoryPointer,
                                               NumbaCUDAMemoryManager, binding)

        oom = binding.CUresult.CUDA_ERROR_OUT_OF_MEMORY
        parent, pointer = NumbaCUDAMemoryManager, MemoryPointer

        def oom_test(exc):
            return isinstance(exc, CudaAPIError) and exc.code == oom

    class CachingMemoryManager(parent):
        """numba's own manager, with freed blocks kept per size class and handed out
        again instead of ``cuMemFree`` + ``cuMemAlloc``."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # here, not in initialize(): numba calls that at every context push ("safe
            # to be called multiple times"), and a new pool there would drop the cache
            self._pool = self._new_pool()

        def _new_pool(self):
            # new blocks come from the parent's memalloc (which, on OOM, flushes numba's
            # pending frees and retries once; the pool, on OOM, drops its cache and
            # calls it again)
            return _BlockPool(lambda nbytes: parent.memalloc(self, nbytes), oom_test)

        def memalloc(self, size):
            block, give_back = self._pool.take(size)
            # the array gets a view of the block; when it dies the block goes back to
            # the free list (until then the finalizer's closure keeps the block alive)
            return pointer(weakref.proxy(self.context), block.device_pointer, size,
                           finalizer=give_back)

        def reset(self):
            # the context's memory is going away: the cached blocks are dropped now, and
            # blocks still in use come back to the old pool's lists, which nothing hands
            # out any more (and which die with the last of them)
            self._pool.release()
            self._pool = self._new_pool()
            super().reset()

    return CachingMemoryManager


_ALLOCATOR = {}


def use_caching_allocator():
    """Install the caching allocator for this process; returns True if installed.

    Freed blocks stay cached in their size class (:class:`_BlockPool`) and go back to
    the driver only when an allocation would otherwise fail for want of memory.  Must be
    called before the first CUDA call of the process (numba binds a context to its
    memory manager when the context is created).  A no-op returning False under
    ``NUMBA_ENABLE_CUDASIM=1`` (the simulator has no device memory).
    """
    if kc.SIMULATOR or cuda is None:
        return False
    if "cls" not in _ALLOCATOR:
        _ALLOCATOR["cls"] = _make_manager()
        cuda.set_memory_manager(_ALLOCATOR["cls"])
    return True
