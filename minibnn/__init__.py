"""minibnn: Binarized Neural Networks from scratch (NumPy model, Numba kernels).

Implements Hubara, Courbariaux, Soudry, El-Yaniv and Bengio, "Binarized Neural Networks"
(NIPS 2016).  The binary conventions are documented in :mod:`minibnn.kernels.bitpack`.
"""

import os
import sys

__version__ = "0.1.0"


def quiet_blas_spin():
    """Ask OpenBLAS to put its idle threads to sleep at once (``OPENBLAS_THREAD_TIMEOUT``).

    A training step alternates float BLAS (backward products) with Numba parallel kernels
    (packing, XNOR GEMM, optimizer).  By default OpenBLAS threads keep spinning for a
    while after each call and steal the cores from Numba's threads: on the 2-core
    reference machine this made an MNIST-MLP (3x4096) epoch 190 s instead of 126 s.
    The variable is read when OpenBLAS loads, so this only works before numpy is
    imported; the ``minibnn`` command and the benchmarks call it first thing.  An
    explicit setting in the environment is kept.  Returns True if it could take effect.
    """
    if "numpy" in sys.modules:
        return False
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")
    return True
