"""Packed inference: a trained BNN as bits and integer thresholds, run with XNOR-popcount.

:func:`export` turns a trained :class:`minibnn.model.Sequential` into a ``.bnn`` file and
:class:`PackedModel` runs it with integer arithmetic only (apart from the optional float
first layer and the last batch norm, see below), giving the **same predictions** as the
float model in eval mode.

Supported models
----------------
The zoo's MNIST MLP and ConvNets (and any model of the same shape)::

    [Flatten] BinaryDense(real input) BN Sign  ([BinaryDense BN Sign]*)  BinaryDense BN
    BinaryConv2D(real input) [MaxPool2D] BN Sign ([BinaryConv2D [MaxPool2D] BN Sign]*)
        Flatten ([BinaryDense BN Sign]*) BinaryDense BN

BN is :class:`~minibnn.layers.BatchNorm` or :class:`~minibnn.layers.ShiftBatchNorm`;
``Dropout`` layers are the identity in eval mode and are skipped; binary layers may have
a bias.  Anything else raises ``ValueError`` naming the layer.

Folding "binary layer -> (max-pool) -> BN -> sign" into a threshold
-------------------------------------------------------------------
A hidden layer's pre-BN value is an integer ``s`` (``K - 2 popcount``, int32, exact) with
``|s| <= K``, ``K`` the layer's fan-in (``C * KH * KW`` for a convolution).  Its output
bit is ``sign(BN(s)) = +1  <=>  BN(s) >= 0``.  The threshold is **not** derived
algebraically (``mu - beta * sqrt(var + eps) / gamma`` rounds differently from the float
model at ties); instead the model's own BN layer, in eval mode -- the very code the
float model runs -- is evaluated on every integer candidate ``z`` in
``[-K - 1, K + 1]`` (float32, shape ``(2K + 3, F)`` or ``(2K + 3, F, 1, 1)`` for a
spatial BN, in chunks), and per neuron:

* if ``{z : BN(z) >= 0}`` is an up-set (BN non-decreasing, ``gamma >= 0``):
  ``t = min{z : BN(z) >= 0}`` and the bit is ``s >= t``;
* if it is a down-set (``gamma < 0``): ``t2 = max{z : BN(z) >= 0}``, the neuron is
  *flipped*: its weight row is negated (``s' = -s``) and the threshold is ``-t2``, so
  the bit is again ``s' >= t``;
* a constant BN (``gamma == 0``, ...) passes every candidate (``t = -K - 1``) or none
  (``t = K + 2``);
* anything else (a BN that is not monotone on the candidates) raises ``ValueError``.

So every hidden layer is ``bits = (xnor_popcount_sums >= t)`` with int32 ``t``, packed
straight into the next layer's uint64 words (:func:`threshold_pack`).  Because the
candidates are exactly the integers the float model can feed its BN, the bits equal the
float model's signs for every input.

Max-pooling sits between the layer and its BN in the ConvNet.  It is done on the int32
sums, before the threshold: max-pool commutes with any monotone map, so for
``gamma > 0`` it equals an OR of the output bits (``max(s) >= t  <=>  any(s >= t)``), but
for ``gamma < 0`` it becomes an AND (``max(s) <= t2  <=>  all(s <= t2)``).  Pooling the
integers (max over the original sums, i.e. min over the flipped ones) is exact for both
signs without a per-channel choice of gate.

The first layer (real-valued input)
-----------------------------------
``first_layer="float"``: ``x @ sign(w)`` (or the im2col convolution) is computed by the
same function as the float model (:func:`minibnn.functional.binary_dense_forward` /
:func:`~minibnn.functional.binary_conv2d_forward`, float BLAS), followed by the model's
BN in eval mode and sign; the result is packed.  Identical to the float model when it is
fed the same batches (a BLAS result may depend on the batch's shape).

``first_layer="bitplane"`` (Hubara et al. 2016, Sec. 1.6, Eq. 5): inputs are 8-bit pixels
``p`` (recovered exactly from the preprocessed ``x = 2p/255 - 1``, i.e. ``p / 127.5 - 1``
in float32, checked to round-trip bit for bit; uint8 arrays are taken as pixels).  With
``b_n`` the n-th bit plane of ``p`` (``p = sum_n 2^n b_n``) and ``w_b = sign(w)``::

    255 * (x . w_b) = (2p - 255) . w_b = sum_{n=0}^{7} 2^n (2 b_n - 1) . w_b = u

and ``(2 b_n - 1) . w_b`` is an ordinary +-1 XNOR-popcount product of the packed plane
with the packed weights (bit 1 of a plane means +1, bit 0 means -1), so ``u`` is an exact
integer from eight :func:`~minibnn.kernels.xnor_gemm` calls (eight zero-padded
:func:`~minibnn.kernels.binary_conv2d` calls for a ConvNet: a zero border adds 0 to every
plane, as it adds 0 to ``x``).  The {0, 1} form of the same product is
``b_n . w_b = popcount(B_n AND W) - popcount(B_n AND NOT W) = 2 popcount(B_n AND W) -
popcount(B_n) = ((2 b_n - 1) . w_b + sum(w_b)) / 2``, hence ``s_int = p . w_b =
(u + 255 sum(w_b)) / 2`` (:func:`bitplane_dense`).  The threshold is folded on ``u`` (not
on ``s_int``: with zero padding ``sum(w_b)`` over the taps inside the image depends on the
position, ``u`` does not) by evaluating the model's BN on ``float32(u / 255)`` for every
integer candidate (monotone in ``u``; :data:`EXHAUSTIVE_LIMIT` bounds the exhaustive scan,
above it a vectorized bisection per neuron plus a check on a grid and at the boundary).
Bit-plane mode is exact integer arithmetic; it equals the float model except where the
float model's own float32 rounding of ``x @ w_b`` lands on the other side of a BN
threshold (a handful of hidden bits; measured by the tests on MNIST: 0 or a few
predictions in a thousand).

The last layer
--------------
``integer_scores(x)``: the last layer's int32 XNOR sums (= the float model's values just
before its last BN).  ``scores(x)``: the model's last BN in eval mode applied to
``float32(sums) (+ bias)`` -- the same code on the same values, so the scores are equal to
the float model's bit for bit and ``predict(x) = argmax`` is identical.

Convolutions
------------
Hidden convolutions turn their input bits back into +-1 float32 ``(N, C, H, W)`` and call
:func:`minibnn.kernels.binary_conv2d` (packed im2col, exact zero padding).  That re-packs
the activations and the weights on each call; it is the simplest exact route and fine for
now.  Dense layers keep everything packed: ``(N, ceil(K/64))`` uint64 words against
weights prepared once per backend (:func:`minibnn.kernels.prepare_weights`).

The package
-----------
* :mod:`~minibnn.packed.export` -- parse a Sequential, walk its geometry, fold the
  thresholds (:func:`fold_thresholds`);
* :mod:`~minibnn.packed.fileformat` -- the ``.bnn`` file (an ``.npz`` with a JSON header
  and a checksum): writing, reading, and every check on a file's content;
* :mod:`~minibnn.packed.runtime` -- :class:`PackedModel`, the model that runs;
* the kernels (threshold + pack, bit planes, the fused bit-plane GEMM, integer max
  pooling) are :mod:`minibnn.kernels` functions with NumPy twins in
  :mod:`minibnn.kernels.reference`; :func:`threshold_pack` and :func:`pack_bitplanes`
  are re-exported here.

A truncated, corrupted (checksum), wrong-format or wrong-version file raises
``ValueError`` naming the file.

Shapes: N batch, K fan-in, F outputs, images (N, C, H, W), W = ceil(K/64) words.

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 1.6 (first layer,
Eq. 5), Sec. 3 (XNOR-popcount); the binary conventions are in
:mod:`minibnn.kernels.bitpack`.
"""

from ..kernels import pack_bitplanes, threshold_pack
from .export import EXHAUSTIVE_LIMIT, fold_thresholds
from .fileformat import FIRST_LAYER_MODES, FORMAT_NAME, FORMAT_VERSION, PREPROCESSING
from .runtime import PackedModel, bitplane_dense, export, load, pixels_from_input

# ``export`` here is the function (as before the split); the module is
# ``minibnn.packed.export`` in sys.modules (``importlib.import_module`` reaches it).

__all__ = ["PackedModel", "export", "load", "threshold_pack", "fold_thresholds",
           "pack_bitplanes", "pixels_from_input", "bitplane_dense", "FORMAT_NAME",
           "FORMAT_VERSION", "PREPROCESSING", "FIRST_LAYER_MODES", "EXHAUSTIVE_LIMIT"]
