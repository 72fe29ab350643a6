"""The caching allocator of :mod:`minibnn.device` (``use_caching_allocator``), without a GPU.

Numba's CUDA simulator cannot run External Memory Management plugins, so the allocator's
logic is tested against fakes: the manager class is built (``device._make_manager``) on a
fake parent whose ``memalloc`` stands for the driver (it counts the allocations, can run
out of memory, and frees a block when the block object dies, like numba's own pointers)
and a fake ``MemoryPointer`` whose finalizer runs when the array holding it dies.

What must hold: size classes are powers of two >= 512 bytes with at most 2x slack; a
block handed back when its pointer dies is reused by the next request of the same
class, never by another class, and never handed out twice at a time; the driver is
called for a class only as often as the class's peak number of live blocks; cached
blocks go back to the driver before an allocation fails for want of memory.
"""

import gc
import itertools
import weakref

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minibnn import device


class FakeOOM(Exception):
    """The fake driver's CUDA_ERROR_OUT_OF_MEMORY."""


class FakeBlock:
    """A device allocation: freed (leaves ``driver.live``) when the object dies."""

    def __init__(self, driver, nbytes):
        self.device_pointer = next(driver.addresses)
        self.nbytes = nbytes
        driver.live[self.device_pointer] = nbytes
        weakref.finalize(self, driver.live.pop, self.device_pointer)


class FakeParent:
    """numba's NumbaCUDAMemoryManager, as far as the caching manager uses it."""

    def __init__(self, context=None):
        self.context = context
        self.calls = []             # nbytes of every successful driver allocation
        self.live = {}              # device pointer -> nbytes, blocks not yet freed
        self.addresses = itertools.count(0x1000, 0x1000)
        self.capacity = None        # bytes the fake driver can hand out (None: no limit)
        self.fail_with = None       # an exception every allocation raises
        self.resets = 0

    def initialize(self):
        pass

    def memalloc(self, nbytes):
        if self.fail_with is not None:
            raise self.fail_with
        if self.capacity is not None and sum(self.live.values()) + nbytes > self.capacity:
            raise FakeOOM(f"out of memory: {nbytes} bytes")
        self.calls.append(nbytes)
        return FakeBlock(self, nbytes)

    def reset(self):
        self.resets += 1


class FakePointer:
    """numba's MemoryPointer: ``finalizer`` runs when the pointer (its array) dies."""

    def __init__(self, context, pointer, size, owner=None, finalizer=None):
        self.context = context
        self.device_pointer = pointer
        self.size = size
        if finalizer is not None:
            self._finalizer = weakref.finalize(self, finalizer)


class FakeContext:
    pass


def make_manager():
    cls = device._make_manager(FakeParent, FakePointer, lambda exc: isinstance(exc, FakeOOM))
    context = FakeContext()
    mgr = cls(context=context)
    mgr.initialize()
    mgr._test_context = context     # the manager holds only a weak proxy of it
    return mgr


# ---------------------------------------------------------------- size classes

@pytest.mark.parametrize("size,cls", [(0, 512), (1, 512), (256, 512), (511, 512), (512, 512),
                                      (513, 1024), (1024, 1024), (1025, 2048),
                                      (4096 * 4096 * 4, 4096 * 4096 * 4),
                                      (10 ** 9, 2 ** 30)])
def test_size_class_values(size, cls):
    assert device._size_class(size) == cls


@given(st.integers(1, 2 ** 40))
def test_size_class_is_a_power_of_two_with_at_most_2x_slack(size):
    c = device._size_class(size)
    assert c >= 512 and c & (c - 1) == 0
    assert c >= size
    if size > 256:
        assert c < 2 * size
    else:
        assert c == 512


# ---------------------------------------------------------------- recycling

def test_a_freed_block_is_reused_by_its_class_only():
    mgr = make_manager()
    drv = mgr                                       # the fake driver's records are on mgr
    p = mgr.memalloc(1000)                          # class 1024: a driver allocation
    assert drv.calls == [1024] and p.size == 1000
    addr = p.device_pointer
    del p                                           # the array died: block cached
    assert mgr._pool.free_counts() == {1024: 1} and addr in drv.live
    q = mgr.memalloc(3000)                          # another class: not that block
    assert drv.calls == [1024, 4096] and q.device_pointer != addr
    r = mgr.memalloc(600)                           # same class: the cached block
    assert drv.calls == [1024, 4096] and r.device_pointer == addr and r.size == 600
    s = mgr.memalloc(1024)                          # same class, block in use: a new one
    assert drv.calls == [1024, 4096, 1024] and s.device_pointer != addr
    assert mgr._pool.free_counts() == {}
    del q, r, s
    assert mgr._pool.free_counts() == {1024: 2, 4096: 1}
    assert len(drv.live) == 3                       # cached, never returned to the driver


def test_pointer_refers_to_the_context_weakly():
    # as numba's own pointers: an array does not keep a context alive
    mgr = make_manager()
    p = mgr.memalloc(10)
    assert isinstance(p.context, weakref.ProxyType) and p.size == 10


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5000), st.integers(0, 50)),
                max_size=60))
def test_random_alloc_free_sequences(ops):
    """No block is handed out twice at a time; each pointer's block is of its request's
    class; the driver is asked for a class only when its free list is empty, so its
    allocations of a class equal the class's peak number of live pointers."""
    mgr = make_manager()
    live = []                                       # (pointer, size class)
    peak = {}
    for alloc, size, pick in ops:
        if alloc or not live:
            c = device._size_class(size)
            live.append((mgr.memalloc(size), c))        # no other reference to it
            assert mgr.live[live[-1][0].device_pointer] == c
            n = sum(1 for _, k in live if k == c)
            peak[c] = max(peak.get(c, 0), n)
        else:
            live.pop(pick % len(live))
        pointers = [q.device_pointer for q, _ in live]
        assert len(set(pointers)) == len(pointers)
    counted = {}
    for nbytes in mgr.calls:
        counted[nbytes] = counted.get(nbytes, 0) + 1
    assert counted == peak


def test_initialize_again_keeps_the_cache():
    # Fails before: initialize() made new free lists, and numba calls it at every context
    # push ("safe to be called multiple times"): the cache was dropped, blocks in use
    # went back to lists nothing read
    mgr = make_manager()
    p = mgr.memalloc(1000)
    addr = p.device_pointer
    del p
    mgr.initialize()
    q = mgr.memalloc(1000)
    assert q.device_pointer == addr and mgr.calls == [1024]
    del q
    mgr.initialize()
    assert mgr._pool.free_counts() == {1024: 1}


# ---------------------------------------------------------------- out of memory

def test_out_of_memory_drops_the_cache_and_retries():
    # Fails before: blocks cached in other classes were never given back, so a request
    # the driver could serve after freeing them failed with out-of-memory
    mgr = make_manager()
    mgr.capacity = 4096
    a, b = mgr.memalloc(1000), mgr.memalloc(2000)   # 1024 + 2048 bytes
    del a, b                                        # both cached
    assert sum(mgr.live.values()) == 3072
    c = mgr.memalloc(3000)                          # 4096: only after the cache is dropped
    assert mgr.calls == [1024, 2048, 4096]
    assert mgr.live == {c.device_pointer: 4096}
    assert mgr._pool.free_counts() == {}
    del c
    assert mgr._pool.free_counts() == {4096: 1}


def test_out_of_memory_with_nothing_cached_is_raised():
    mgr = make_manager()
    mgr.capacity = 1024
    keep = mgr.memalloc(1000)
    with pytest.raises(FakeOOM):
        mgr.memalloc(1000)                          # nothing to drop: the driver's error
    assert mgr.calls == [1024] and keep.size == 1000


def test_other_allocation_errors_keep_the_cache():
    mgr = make_manager()
    p = mgr.memalloc(1000)
    del p
    mgr.fail_with = RuntimeError("driver error")
    with pytest.raises(RuntimeError, match="driver error"):
        mgr.memalloc(5000)
    assert mgr._pool.free_counts() == {1024: 1}


# ---------------------------------------------------------------- reset

def test_reset_forgets_the_cache():
    mgr = make_manager()
    old = mgr.memalloc(1000)
    cached = mgr.memalloc(1000)
    addr_old, addr_cached = old.device_pointer, cached.device_pointer
    del cached
    mgr.reset()
    assert mgr.resets == 1                          # numba's own reset ran too
    assert mgr._pool.free_counts() == {}
    assert addr_cached not in mgr.live              # the cached block was freed now
    del old                                         # a block of the old context comes back
    gc.collect()
    assert mgr._pool.free_counts() == {}            # ... to no list handed out from
    assert addr_old not in mgr.live                 # and is freed with that list
    new = mgr.memalloc(1000)
    assert mgr.calls == [1024, 1024, 1024] and new.device_pointer not in (addr_old, addr_cached)


# ---------------------------------------------------------------- installation

def test_simulator_no_op(monkeypatch):
    monkeypatch.setattr(device.kc, "SIMULATOR", True)
    if device.cuda is not None:
        monkeypatch.setattr(device.cuda, "set_memory_manager",      # the simulator has none
                            lambda cls: pytest.fail("installed under the simulator"), raising=False)
    assert device.use_caching_allocator() is False


def test_the_real_manager_class_builds():
    # numba's own classes, constructed as numba.cuda.set_memory_manager does (context
    # None, no CUDA call); without installing it for this process
    if device.cuda is None or device.kc.SIMULATOR:
        pytest.skip("numba's CUDA driver classes are not importable under the simulator")
    from numba.cuda.cudadrv.driver import NumbaCUDAMemoryManager
    cls = device._make_manager()
    assert issubclass(cls, NumbaCUDAMemoryManager)
    mgr = cls(context=None)
    assert mgr.interface_version == 1
    assert mgr._pool.free_counts() == {}
