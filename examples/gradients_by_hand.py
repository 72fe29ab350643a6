"""Gradients of a tiny binary network, by hand, checked with finite differences.

    python examples/gradients_by_hand.py

Network (five inputs of 6 features, 3 hidden binary units, 3 classes, cross-entropy):

    x (5, 6) -> x @ sign(W1) -> BN -> sign -> h (5, 3) +-1 -> h @ sign(W2) -> BN -> scores (5, 3)

Forward and backward use only the ``*_forward`` / ``*_backward`` pairs of
``minibnn.functional`` and the STE pair of ``minibnn.quantize``.  The check is done on the
surrogate the straight-through estimator stands for (docs/03_backward_layer_by_layer.md):

1. sign(z) replaced by Htanh(z) = clip(z, -1, 1), the binary weights held fixed as +-1
   matrices B = sign(W): every backward rule is the exact derivative of its forward rule;
2. sign(z) replaced by Htanh(z) + (sign(z0) - Htanh(z0)), the offset frozen at the
   current point z0: same forward values as the BNN, derivative = the STE gate, so the
   finite differences reproduce the BNN's own gradients.

Also shown: ``minibnn.testing.check_layer_gradients`` on one layer.

References: Hubara et al. 2016 (arXiv:1602.02830v3), Sec. 1.3, Alg. 1.
"""

import os
import sys

import numpy as np

try:
    import minibnn  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minibnn import functional as F
from minibnn import layers, losses, quantize
from minibnn.testing import check_layer_gradients, numeric_gradient, rel_error

np.set_printoptions(precision=3, suppress=True, floatmode="fixed")


def make_point(seed):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.uniform(-1, 1, size=(5, 6)),
        "W1": rng.uniform(-1, 1, size=(6, 3)),         # latent weights
        "gamma1": rng.uniform(0.5, 1.5, 3), "beta1": rng.uniform(-0.3, 0.3, 3),
        "W2": rng.uniform(-1, 1, size=(3, 3)),
        "gamma2": rng.uniform(0.5, 1.5, 3), "beta2": rng.uniform(-0.3, 0.3, 3),
    }


Y = np.array([0, 2, 1, 1, 0])


def bnn_forward_backward(p, verbose=True):
    """The BNN: forward with sign, backward with the STE.  Returns (loss, grads, z1)."""
    a1, c1 = F.binary_dense_forward(p["x"], p["W1"], binary_input=False)
    z1, c2 = F.batchnorm_forward(a1, p["gamma1"], p["beta1"], mode="train")
    h1, c3 = quantize.ste_sign_forward(z1)
    h1 = h1.astype(np.float64)
    a2, c4 = F.binary_dense_forward(h1, p["W2"], binary_input=True, backend="cpu")
    s, c5 = F.batchnorm_forward(a2, p["gamma2"], p["beta2"], mode="train")
    loss, ds = losses.softmax_cross_entropy(s, Y)

    da2, dg2, db2 = F.batchnorm_backward(ds, c5)
    dh1, dW2, _ = F.binary_dense_backward(da2, c4)
    dz1 = quantize.ste_sign_backward(dh1, c3)
    da1, dg1, db1 = F.batchnorm_backward(dz1, c2)
    dx, dW1, _ = F.binary_dense_backward(da1, c1)

    if verbose:
        for name, v in [("a1 = x @ sign(W1)", a1), ("z1 = BN1(a1)", z1), ("h1 = sign(z1)", h1),
                        ("a2 = h1 @ sign(W2)  (XNOR-popcount, integers)", a2),
                        ("scores = BN2(a2)", s)]:
            print(f"{name}\n{v}")
        print(f"loss (cross-entropy) = {loss:.4f}\n")
        for name, v in [("dL/dscores", ds), ("dL/da2", da2), ("dL/dsign(W2)", dW2),
                        ("dL/dh1", dh1), ("STE gate 1{|z1| <= 1}", quantize.ste_mask(z1).astype(int)),
                        ("dL/dz1 = dL/dh1 * gate", dz1), ("dL/da1", da1),
                        ("dL/dsign(W1)", dW1)]:
            print(f"{name}\n{v}")
        print()
    grads = {"x": dx, "B1": dW1, "gamma1": dg1, "beta1": db1, "B2": dW2, "gamma2": dg2,
             "beta2": db2}
    return loss, grads, z1


def surrogate_loss(point, activation):
    """Loss of the float network with fixed +-1 weights B1, B2 and ``activation`` in
    place of sign."""
    a1, _ = F.dense_forward(point["x"], point["B1"])
    z1, _ = F.batchnorm_forward(a1, point["gamma1"], point["beta1"])
    a2, _ = F.dense_forward(activation(z1), point["B2"])
    s, _ = F.batchnorm_forward(a2, point["gamma2"], point["beta2"])
    return losses.softmax_cross_entropy(s, Y)[0]


def surrogate_gradients(point):
    """Analytic gradients of the Htanh surrogate, from the functional pairs."""
    a1, c1 = F.dense_forward(point["x"], point["B1"])
    z1, c2 = F.batchnorm_forward(a1, point["gamma1"], point["beta1"])
    h1, c3 = F.hardtanh_forward(z1)
    a2, c4 = F.dense_forward(h1, point["B2"])
    s, c5 = F.batchnorm_forward(a2, point["gamma2"], point["beta2"])
    _, ds = losses.softmax_cross_entropy(s, Y)
    da2, dg2, db2 = F.batchnorm_backward(ds, c5)
    dh1, dB2, _ = F.dense_backward(da2, c4)
    da1, dg1, db1 = F.batchnorm_backward(F.hardtanh_backward(dh1, c3), c2)
    dx, dB1, _ = F.dense_backward(da1, c1)
    return {"x": dx, "B1": dB1, "gamma1": dg1, "beta1": db1, "B2": dB2, "gamma2": dg2,
            "beta2": db2}


def finite_difference_check(title, loss_fn, analytic, point, tol=1e-7):
    print(title)
    worst = 0.0
    for name in point:
        arr = point[name].copy()

        def f(v, name=name):
            return np.array(loss_fn({**point, name: v}))

        err = rel_error(analytic[name], numeric_gradient(f, arr, np.array(1.0)))
        worst = max(worst, err)
        print(f"  d/d{name:<7} rel_error {err:.1e}")
    status = "OK" if worst < tol else "FAILED"
    print(f"  worst {worst:.1e} (tolerance {tol:.0e}): {status}\n")
    return worst < tol


def main():
    p = make_point(seed=3)
    print("x =\n", p["x"], "\nlabels", Y, "\n")
    loss, bnn_grads, z1 = bnn_forward_backward(p)

    point = {"x": p["x"], "B1": quantize.sign(p["W1"]).astype(np.float64),
             "gamma1": p["gamma1"], "beta1": p["beta1"],
             "B2": quantize.sign(p["W2"]).astype(np.float64),
             "gamma2": p["gamma2"], "beta2": p["beta2"]}
    if np.any(np.abs(np.abs(z1) - 1) < 1e-4):
        print("note: a sign input sits on a kink of Htanh; finite differences are unreliable there")

    ok1 = finite_difference_check(
        "1. Htanh surrogate (sign -> clip(z, -1, 1), sign(W) fixed) vs its finite differences:",
        lambda q: surrogate_loss(q, lambda z: np.clip(z, -1, 1)), surrogate_gradients(point), point)

    offset = quantize.sign(z1) - np.clip(z1, -1, 1)             # frozen at the forward point
    frozen = lambda q: surrogate_loss(q, lambda z: np.clip(z, -1, 1) + offset)  # noqa: E731
    assert np.isclose(frozen(point), loss), "the frozen-offset surrogate has the BNN's loss"
    ok2 = finite_difference_check(
        "2. the BNN's own STE gradients vs finite differences of Htanh + frozen offset:",
        frozen, bnn_grads, point)

    # the same kind of check for one layer, with minibnn.testing's helper (float64 params;
    # a random dout; d/dx and d/d every param).  rel_error is relative per entry, so an
    # entry that happens to be ~0 can fail it spuriously: pick an input without one.
    bn = layers.BatchNorm(3).astype(np.float64)
    errors = check_layer_gradients(bn, np.random.default_rng(1).standard_normal((8, 3)))
    print("3. check_layer_gradients(BatchNorm(3)):",
          ", ".join(f"d/d{k} {v:.1e}" for k, v in errors.items()))

    print("\nThe latent weights W1, W2 would now be updated with dL/dsign(W1), dL/dsign(W2) "
          "and clipped to [-1, 1] (docs/02_why_a_sign_can_be_trained.md).")
    return 0 if (ok1 and ok2) else 1


if __name__ == "__main__":
    sys.exit(main())
