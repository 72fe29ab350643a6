"""Draw the static figures of docs/ (matplotlib, the ``plot`` extra):

* ``sign_htanh.png`` (chapter 2) -- sign and hard tanh, their derivatives (the STE gate),
  and the mean of the stochastic sign;
* ``graph.png`` (chapter 3) -- the computational graph of chapter 3's 3 -> 4 -> 2 network
  with the value (black) and the gradient (red) at every node, computed here with the
  same functions and the same seed as the chapter (``tests/test_docs.py`` checks that the
  numbers agree).

    python docs/img/make_figures.py [OUT_DIR]        # default: this directory

The pictures of a training run (curves.png, latent_hist.png, cifar10_curves.png) are
drawn by ``minibnn plot RUN_DIR`` (:mod:`minibnn.viz`), not here.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# ---------------------------------------------------------------------------
# sign, hard tanh and their (pseudo-)derivatives
# ---------------------------------------------------------------------------

def draw_sign_htanh(path):
    from minibnn import quantize

    plt = _pyplot()
    x = np.linspace(-2.5, 2.5, 1001)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.6, 3.6))

    ax1.plot(x, quantize.sign(x), color="C0", lw=2.2, label="sign(x)  (forward)")
    ax1.plot(x, np.clip(x, -1, 1), color="C1", lw=2, ls="--",
             label="Htanh(x) = clip(x, -1, 1)\n= E[stochastic sign(x)]")
    rng = np.random.default_rng(0)
    xs = np.linspace(-2.4, 2.4, 25)
    mean = quantize.stochastic_sign(np.broadcast_to(xs, (4000, xs.size)), rng).mean(axis=0)
    ax1.plot(xs, mean, "o", ms=3.5, color="C2", label="mean of 4000 stochastic signs")
    ax1.set_title("forward: what the network computes", fontsize=10)
    ax1.set_xlabel("x (the BN output in front of the sign)")
    ax1.set_ylabel("value")
    ax1.set_ylim(-1.4, 1.4)
    ax1.legend(fontsize=7.5, loc="upper left")

    ax2.plot(x, np.zeros_like(x), color="C0", lw=2.2, label="d sign / dx = 0  (x != 0)")
    ax2.annotate("", xy=(0, 1.35), xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color="C0",
                                                                  lw=2))
    ax2.text(0.08, 1.28, "spike at 0\n(no derivative)", color="C0", fontsize=7.5, va="top")
    gate = (np.abs(x) <= 1).astype(float)
    ax2.plot(x, gate + 0.015, color="C1", lw=2, ls="--",
             label="Htanh'(x) = 1{|x| <= 1}\n= the STE gate (backward)")
    ax2.axvspan(-2.5, -1, color="0.9")
    ax2.axvspan(1, 2.5, color="0.9")
    ax2.text(1.75, 0.5, "gradient\ncancelled", ha="center", fontsize=8, color="0.35")
    ax2.text(-1.75, 0.5, "gradient\ncancelled", ha="center", fontsize=8, color="0.35")
    ax2.set_title("backward: what the gradient uses", fontsize=10)
    ax2.set_xlabel("x")
    ax2.set_ylabel("derivative")
    ax2.set_ylim(-0.25, 1.5)
    ax2.legend(fontsize=7.5, loc="upper left")
    for ax in (ax1, ax2):
        ax.set_xlim(-2.5, 2.5)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# chapter 3's network, its values and gradients
# ---------------------------------------------------------------------------

def chapter3_values():
    """The forward values and gradients of chapter 3's network (same seed, same calls).

    Returns a dict name -> float64 array: x, W1, a1, z1, h1, W2, a2, s, gamma1, beta1,
    gamma2, beta2, loss and d<name> for each (dW1, dW2 are for sign(W1), sign(W2))."""
    from minibnn import functional as F
    from minibnn import losses, quantize

    rng = np.random.default_rng(167)
    x = rng.uniform(-1, 1, size=(4, 3))
    y = np.array([0, 1, 1, 0])
    W1 = rng.uniform(-1, 1, size=(3, 4))
    W2 = rng.uniform(-1, 1, size=(4, 2))
    gamma1, beta1 = rng.uniform(0.5, 1.5, 4), rng.uniform(-0.3, 0.3, 4)
    gamma2, beta2 = rng.uniform(0.5, 1.5, 2), rng.uniform(-0.3, 0.3, 2)

    a1, c_a1 = F.binary_dense_forward(x, W1, binary_input=False)
    z1, c_z1 = F.batchnorm_forward(a1, gamma1, beta1, mode="train")
    h1, c_h1 = quantize.ste_sign_forward(z1)
    h1 = h1.astype(np.float64)
    a2, c_a2 = F.binary_dense_forward(h1, W2, binary_input=True, backend="cpu")
    s, c_s = F.batchnorm_forward(a2, gamma2, beta2, mode="train")
    loss, ds = losses.squared_hinge(s, y)
    da2, dgamma2, dbeta2 = F.batchnorm_backward(ds, c_s)
    dh1, dW2, _ = F.binary_dense_backward(da2, c_a2)
    dz1 = quantize.ste_sign_backward(dh1, c_h1)
    da1, dgamma1, dbeta1 = F.batchnorm_backward(dz1, c_z1)
    dx, dW1, _ = F.binary_dense_backward(da1, c_a1)
    return dict(x=x, y=y, W1=W1, a1=a1, z1=z1, h1=h1, W2=W2, a2=a2, s=s, loss=np.array(loss),
                gamma1=gamma1, beta1=beta1, gamma2=gamma2, beta2=beta2,
                dx=dx, dW1=dW1, da1=da1, dz1=dz1, dh1=dh1, dW2=dW2, da2=da2, ds=ds,
                dgamma1=dgamma1, dbeta1=dbeta1, dgamma2=dgamma2, dbeta2=dbeta2,
                dloss=np.array(1.0))


def _fmt(a):
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    return "\n".join(" ".join(f"{v:+.2f}" for v in row) for row in a)


def draw_graph(path):
    plt = _pyplot()
    v = chapter3_values()
    from minibnn.quantize import sign

    # (key, title, value text, gradient text, x, y)
    nodes = [
        ("x", "x (4, 3)  input", _fmt(v["x"]), _fmt(v["dx"]), 0.0, 1.0),
        ("W1", "sign(W1) (3, 4)", _fmt(sign(v["W1"])), _fmt(v["dW1"]), 0.0, 0.0),
        ("a1", "a1 = x @ sign(W1)  (4, 4)", _fmt(v["a1"]), _fmt(v["da1"]), 1.0, 0.5),
        ("bn1", "gamma1, beta1 (4,)", _fmt(np.vstack([v["gamma1"], v["beta1"]])),
         _fmt(np.vstack([v["dgamma1"], v["dbeta1"]])), 1.0, -0.55),
        ("z1", "z1 = BN1(a1)  (4, 4)", _fmt(v["z1"]), _fmt(v["dz1"]), 2.0, 0.5),
        ("h1", "h1 = sign(z1)  (4, 4)", _fmt(v["h1"]), _fmt(v["dh1"]), 3.0, 0.5),
        ("W2", "sign(W2) (4, 2)", _fmt(sign(v["W2"])), _fmt(v["dW2"]), 3.0, -0.55),
        ("a2", "a2 = h1 @ sign(W2)  (4, 2)\nXNOR-popcount", _fmt(v["a2"]), _fmt(v["da2"]),
         4.0, 0.5),
        ("bn2", "gamma2, beta2 (2,)", _fmt(np.vstack([v["gamma2"], v["beta2"]])),
         _fmt(np.vstack([v["dgamma2"], v["dbeta2"]])), 4.0, -0.55),
        ("s", "s = BN2(a2)  (4, 2)", _fmt(v["s"]), _fmt(v["ds"]), 5.0, 0.5),
        ("L", "L = squared hinge(s, y)", f"{float(v['loss']):.4f}", "1", 6.0, 0.5),
    ]
    edges = [("x", "a1"), ("W1", "a1"), ("a1", "z1"), ("bn1", "z1"), ("z1", "h1"),
             ("h1", "a2"), ("W2", "a2"), ("a2", "s"), ("bn2", "s"), ("s", "L")]
    notes = {("z1", "h1"): "STE:\ndz1 = dh1 * 1{|z1|<=1}",
             ("a1", "z1"): "BN backward\n(batch stats)"}

    fig, ax = plt.subplots(figsize=(17.5, 7.2))
    ax.set_xlim(-0.55, 6.45)
    ax.set_ylim(-1.15, 1.5)
    ax.axis("off")
    pos = {}
    for key, title, val, grad, x, y in nodes:
        pos[key] = (x, y)
        ax.text(x, y + 0.02, title, ha="center", va="bottom", fontsize=8.5, weight="bold")
        ax.text(x, y, val, ha="center", va="top", family="monospace", fontsize=7.5,
                bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="0.4"))
        nlines = val.count("\n") + 1
        ax.text(x, y - 0.075 * nlines - 0.06, grad, ha="center", va="top", family="monospace",
                fontsize=7.5, color="firebrick",
                bbox=dict(boxstyle="round,pad=0.3", fc="#fff4f2", ec="firebrick"))
    for a, b in edges:
        (xa, ya), (xb, yb) = pos[a], pos[b]
        if ya == yb:
            start, end = (xa + 0.36, ya - 0.08), (xb - 0.36, yb - 0.08)
        else:
            start, end = (xa + 0.3, ya + (0.1 if ya < yb else -0.1)), (xb - 0.36, yb - 0.12)
        ax.annotate("", xy=end, xytext=start,
                    arrowprops=dict(arrowstyle="-|>", color="0.3", lw=1.2))
        if (a, b) in notes:
            ax.text((xa + xb) / 2, ya + 0.25, notes[(a, b)], ha="center", fontsize=7.5,
                    color="firebrick", style="italic")
    ax.text(-0.5, 1.45, "forward values (black boxes), gradients dL/d(node) (red boxes); "
            "rows of x, a1, z1, h1, a2, s = the 4 samples; dW is the gradient for sign(W), "
            "applied to the latent W",
            fontsize=9, va="top")
    ax.text(-0.5, 1.37, "y = " + str(v["y"].tolist()) + ";  gamma/beta boxes: first row gamma, "
            "second row beta", fontsize=9, va="top")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def main(out_dir=HERE):
    os.makedirs(out_dir, exist_ok=True)
    return [draw_sign_htanh(os.path.join(out_dir, "sign_htanh.png")),
            draw_graph(os.path.join(out_dir, "graph.png"))]


if __name__ == "__main__":
    for p in main(*sys.argv[1:2]):
        print(p)
