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

Convolutions (:func:`minibnn.kernels.cuda.binary_conv2d_device`) keep +-1 float32 NCHW
activations between them (the packed convolution packs its input itself), integer max
pooling in the folded domain (:func:`minibnn.kernels.cuda.maxpool_flip_device`) and
threshold + sign (:func:`minibnn.kernels.cuda.threshold_sign_device`); the first dense
layer after them reads packed words again.  A bit-plane first convolution runs eight
packed convolutions of the +-1 bit planes, summed with their shifts.

Not on the device yet (:meth:`DeviceRunner.unsupported` says why): a ShiftBatchNorm
float first layer; such a model keeps the per-kernel path of the runtime on the
``cuda`` backend (each kernel's operands copied to the GPU and back).

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
    prepared for the ``cuda`` backend (dense ops: ``op.prepared.data`` are device words;
    conv ops: packed filters uploaded here): thresholds, flips, the float first layer's
    weights and BN arrays uploaded once, at construction."""

    @staticmethod
    def unsupported(model):
        """Why ``model`` cannot run here (a sentence), or None if it can."""
        first = model.ops[0]
        if first.input == "real" and first.bn_kind != "BatchNorm":
            return (f"the float first layer's batch norm is {first.bn_kind}, which has no "
                    "device twin yet")
        return None

    def __init__(self, model):
        why = self.unsupported(model)
        if why is not None:
            raise BackendUnavailable(f"packed inference on the device: {why}")
        from ..kernels import cuda_float as kf

        kf.quiet_low_occupancy_warnings()
        self.model = model
        self.ops = model.ops
        self.t, self.t_flat, self.flip, self.conv = {}, {}, {}, {}
        for op in self.ops:
            if op.threshold:
                self.t[op.i] = _up(op.t, np.int32)
                self.t_flat[op.i] = _up(op.t_flat, np.int32)
                self.flip[op.i] = _up(op.flip, np.int32)
            if op.conv:
                self.conv[op.i] = kc.prepare_conv_weights(op.w_pm1)
        first = self.ops[0]
        self.real = first.input == "real"
        if self.real:
            w = first.w_pm1 if first.conv else first.wb
            self.w_real = _up(w, np.float32)
            self.bias = None if first.bias is None else _up(first.bias, np.float32)
            self.bn = [_up(a, np.float32) for a in first.bn_arrays]

    # -- the activations between ops -----------------------------------------------
    def _emit(self, op, nxt, sums=None, y=None):
        """What ``nxt`` reads, on the device: packed words (dense) or +-1 float32 NCHW
        (conv); from integer ``sums`` (thresholds) or float ``y`` (signs)."""
        from .. import functional_cuda as G

        if sums is not None:
            if nxt.conv:
                return kc.threshold_sign_device(sums, self.t[op.i])
            N = sums.shape[0]
            return kc.threshold_pack_device(sums.reshape(N, sums.size // N),
                                            self.t_flat[op.i])
        if nxt.conv:
            return G.sign(y)
        N = y.shape[0]
        return kc.pack_device(y.reshape(N, y.size // N), check_nan=False)

    def _pool(self, op, s):
        if op.pool is None:
            return s
        return kc.maxpool_flip_device(s, self.flip[op.i], op.pool["kernel"], op.pool["stride"])

    def _first(self, x):
        """Host input (float, or uint8 pixels for bit planes) -> the second op's input."""
        from .. import functional_cuda as G

        op, nxt = self.ops[0], self.ops[1]
        N = x.shape[0]
        if self.real:
            if op.conv:
                y, _ = G.binary_conv2d_forward(_up(x, np.float32), self.w_real, self.bias,
                                               op.stride, op.padding, binary_input=False)
                if op.pool is not None:
                    y, _ = G.maxpool2d_forward(y, op.pool["kernel"], op.pool["stride"])
            else:
                y, _ = G.binary_dense_forward(_up(x.reshape(N, -1), np.float32), self.w_real,
                                              self.bias, binary_input=False)
            gamma, beta, mean, var = self.bn
            y, _ = G.batchnorm_forward(y, gamma, beta, mode="eval", running_mean=mean,
                                       running_var=var, eps=op.bn_eps)
            return self._emit(op, nxt, y=y)
        if op.conv:       # u = sum_b 2^b conv(plane_b), planes as +-1 floats
            p = _up(x, np.uint8)
            plane = cuda.device_array(p.shape, dtype=np.float32)
            u = None
            for b in range(8):
                kc.bitplane_pm1_device(p, b, plane)
                g = kc.binary_conv2d_device(plane, self.conv[op.i], op.stride, op.padding,
                                            check_nan=False)
                if u is None:
                    u = g
                else:
                    kc.launch_shift_add(u, g, b)
            return self._emit(op, nxt, sums=self._pool(op, u))
        planes = kc.bitplanes_device(_up(x.reshape(N, -1), np.uint8))
        u = cuda.device_array((N, op.F), dtype=np.int32)
        kc.bitplane_gemm_device(planes, op.prepared.data, op.K, u)
        return self._emit(op, nxt, sums=u)

    def _sums(self, op, act):
        if op.conv:
            s = kc.binary_conv2d_device(act, self.conv[op.i], op.stride, op.padding,
                                        check_nan=False)
            return self._pool(op, s)
        s = cuda.device_array((act.shape[0], op.F), dtype=np.int32)
        return kc.xnor_gemm_device(act, op.prepared.data, op.K, s)

    def run(self, x):
        """Integer sums of the last op (N, ...) int32 on the host, for the checked host
        input ``x`` of :meth:`PackedModel._inputs`."""
        act = self._first(x)
        for op, nxt in zip(self.ops[1:-1], self.ops[2:]):
            act = self._emit(op, nxt, sums=self._sums(op, act))
        return self._sums(self.ops[-1], act).copy_to_host()
