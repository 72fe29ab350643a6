"""The handle a backend returns from ``prepare_weights``: weights laid out for its GEMM."""


class PreparedWeights:
    """Packed weights (N columns of K bits) in a backend's preferred layout.

    Attributes: ``backend`` (name), ``n`` (N), ``k`` (K), ``data`` (the backend's array),
    ``shape`` = ``(N, ceil(K/64))``, the shape of the ``b_words`` it stands for.
    Pass it to :func:`minibnn.kernels.xnor_gemm` in place of ``b_words`` with the same
    backend.
    """

    def __init__(self, backend, data, n, k):
        self.backend = backend
        self.data = data
        self.n = int(n)
        self.k = int(k)

    @property
    def shape(self):
        return (self.n, (self.k + 63) // 64)

    def __repr__(self):
        return f"PreparedWeights(backend={self.backend!r}, n={self.n}, k={self.k})"
