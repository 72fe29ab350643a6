"""minibnn: Binarized Neural Networks from scratch (NumPy model, Numba kernels).

Implements Hubara, Courbariaux, Soudry, El-Yaniv and Bengio, "Binarized Neural Networks"
(NIPS 2016).  The binary conventions are documented in :mod:`minibnn.kernels.bitpack`.
"""

import os
import sys

__version__ = "0.1.0"


def quiet_blas_spin():
    """Ask OpenBLAS and OpenMP to put their idle threads to sleep at once.

    A training step alternates float BLAS (backward products) with Numba parallel kernels
    (packing, XNOR GEMM, optimizer).  By default OpenBLAS threads keep spinning for a
    while after each call and steal the cores from Numba's threads: on the 2-core
    reference machine this made an MNIST-MLP (3x4096) epoch 190 s instead of 126 s
    (``OPENBLAS_THREAD_TIMEOUT=1``).  The same holds the other way round for Numba's
    OpenMP workers, which spin after each parallel kernel unless
    ``OMP_WAIT_POLICY=passive``: measured side by side in one process, that made a step
    8-19% faster (MLP 3x1024 13.9 -> 11.2 ms, 3x4096 100.0 -> 92.5 ms, svhn_convnet
    229.6 -> 207.0 ms).  Sleeping at once has its own price, though: waking a sleeping
    worker costs ~35 us per parallel kernel, and a step runs dozens of small ones (a
    100 x 1024 pack took 133 us instead of 5).  GNU OpenMP (libgomp, the runtime behind
    Numba's ``omp`` layer on Linux) lets its workers spin for ``GOMP_SPINCOUNT``
    iterations first even when passive; 10,000 (about 0.1 ms) keeps them awake between
    the kernels of one layer but not through a BLAS call.  Measured side by side on the
    2-core reference machine, passive alone -> passive + ``GOMP_SPINCOUNT=10000``: MLP
    3x1024 11.2 -> 9.2 ms, 3x4096 98.9 -> 94.1 ms, svhn_convnet 208.0 -> 186.1 ms (1,000
    to 30,000 all within noise of each other; the default 300,000 made the MLP backward
    1.6x slower).  Other OpenMP runtimes ignore the variable and stay passive.  All three
    variables are read when their runtime loads, so this only works before numpy is
    imported; the ``minibnn`` command and the benchmarks call it first thing.  An
    explicit setting in the environment is kept.  Returns True if it could take effect.
    """
    if "numpy" in sys.modules:
        return False
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    return True


def keep_large_allocations(limit=1 << 30):
    """Let glibc's malloc serve and keep array buffers up to ``limit`` bytes from its heap.

    A convolution's training backward allocates several arrays of 50-120 MB per step
    (im2col, the dx product).  glibc hands every block above its mmap threshold (at most
    32 MB) straight back to the kernel when freed, so each step page-faults the same
    memory in again; on the 2-core reference machine that was ~18% of a CIFAR-10
    training step (0.68 s -> 0.56 s per batch of 50, svhn_convnet).  Raising the mmap and
    trim thresholds keeps freed blocks for reuse; the price is that the process keeps its
    peak memory.  Does nothing off glibc, or when ``MALLOC_MMAP_THRESHOLD_`` is set in the
    environment (an explicit choice wins).  Returns True if the setting was applied.
    Called by the ``minibnn`` command and the training benchmarks, never by the library.
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3          # <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, int(limit))
                    and libc.mallopt(m_trim_threshold, 2 * int(limit)))
    except (OSError, AttributeError):                        # musl, or no libc.so.6
        return False
