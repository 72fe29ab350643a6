"""minibnn: Binarized Neural Networks from scratch (NumPy model, Numba kernels).

Implements Hubara, Courbariaux, Soudry, El-Yaniv and Bengio, "Binarized Neural Networks"
(NIPS 2016).  The binary conventions are documented in :mod:`minibnn.kernels.bitpack`.
"""

__version__ = "0.1.0"
