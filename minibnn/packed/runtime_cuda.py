"""Packed inference on the GPU: a whole ``.bnn`` network run on device arrays.

:class:`DeviceRunner` is what :class:`minibnn.packed.PackedModel` runs on the ``cuda``
backend.  The input batch is uploaded once; between layers the activations stay on the
device as packed bits (uint32 words, the uint64 words of the CPU runtime viewed as
uint32): each hidden layer is one XNOR-popcount GEMM
(:func:`minibnn.kernels.cuda.xnor_gemm_device`) and one threshold + pack kernel
(:func:`minibnn.kernels.cuda.threshold_pack_device`, the folded BN + sign); only the last
layer's integer sums, (N, n_classes) int32, come back, and the runtime applies the last
batch norm to them on the host exactly as on the CPU.

First layer:

* ``bitplane``: the 8 bit planes of the uint8 pixels packed on the device
  (:func:`minibnn.kernels.cuda.bitplanes_device`), eight XNOR GEMMs summed with their
  shifts (:func:`minibnn.kernels.cuda.bitplane_gemm_device`), then threshold + pack:
  exact integers, so every bit equals the CPU runtime's;
* ``float``: the float product of :func:`minibnn.functional_cuda.binary_dense_forward`
  (float32 SGEMM), its batch norm in eval mode
  (:func:`minibnn.functional_cuda.batchnorm_forward`) and the packing of the signs: the
  float32 sums differ from BLAS's by rounding only, so a sign (hence a prediction) can
  differ from the CPU runtime's only for a pre-activation within rounding of zero.

Not on the device yet (:meth:`DeviceRunner.unsupported` says why): convolution ops and a
ShiftBatchNorm float first layer; such a model keeps the per-kernel path of the runtime
on the ``cuda`` backend (each kernel's operands copied to the GPU and back).

Shapes: N batch, K fan-in, F outputs, KW = 2 ceil(K/64) uint32 words per row.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 1.6 (first
layer, Eq. 5), Sec. 3 (XNOR-popcount on the GPU).
"""

import numpy as np

from ..kernels import BackendUnavailable
from ..kernels import cuda as kc

cuda = kc.cuda

__all__ = ["DeviceRunner"]


def _up(a, dtype):
    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


class DeviceRunner:
    """The device form of a :class:`~minibnn.packed.PackedModel` whose weights were
    prepared for the ``cuda`` backend (``op.prepared.data`` are device words): thresholds,
    first-layer float weights and BN arrays uploaded once, at construction."""

    @staticmethod
    def unsupported(model):
        """Why ``model`` cannot run here (a sentence), or None if it can."""
        for op in model.ops:
            if op.conv:
                return f"op {op.i} is a convolution (not in the device runtime yet)"
        first = model.ops[0]
        if first.input == "real" and first.bn_kind != "BatchNorm":
            return (f"the float first layer's batch norm is {first.bn_kind}, which has no "
                    "device twin yet")
        return None

    def __init__(self, model):
        why = self.unsupported(model)
        if why is not None:
            raise BackendUnavailable(f"packed inference on the device: {why}")
        self.model = model
        self.ops = model.ops
        first = self.ops[0]
        self.t = {op.i: _up(op.t_flat, np.int32) for op in self.ops if op.threshold}
        self.real = first.input == "real"
        if self.real:
            self.wb = _up(first.wb, np.float32)
            self.bias = None if first.bias is None else _up(first.bias, np.float32)
            self.bn = [_up(a, np.float32) for a in first.bn_arrays]

    def _first(self, x):
        """(N, K) host input (float, or uint8 pixels for bit planes) -> packed words of
        the first layer's output, (N, KW) uint32 on the device."""
        from .. import functional_cuda as G

        op = self.ops[0]
        N = x.shape[0]
        if self.real:
            xd = _up(x.reshape(N, -1), np.float32)
            y, _ = G.binary_dense_forward(xd, self.wb, self.bias, binary_input=False)
            gamma, beta, mean, var = self.bn
            y, _ = G.batchnorm_forward(y, gamma, beta, mode="eval", running_mean=mean,
                                       running_var=var, eps=op.bn_eps)
            return kc.pack_device(y, check_nan=False)
        planes = kc.bitplanes_device(_up(x.reshape(N, -1), np.uint8))
        u = cuda.device_array((N, op.F), dtype=np.int32)
        kc.bitplane_gemm_device(planes, op.prepared.data, op.K, u)
        return kc.threshold_pack_device(u, self.t[op.i])

    def run(self, x):
        """Integer sums of the last layer, (N, n_classes) int32 on the host, for the
        checked host input ``x`` of :meth:`PackedModel._inputs`."""
        N = x.shape[0]
        act = self._first(x)
        for op in self.ops[1:]:
            s = cuda.device_array((N, op.F), dtype=np.int32)
            kc.xnor_gemm_device(act, op.prepared.data, op.K, s)
            if op is self.ops[-1]:
                return s.copy_to_host()
            act = kc.threshold_pack_device(s, self.t[op.i])
        raise ValueError("a packed model needs at least two ops")
