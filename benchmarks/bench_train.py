"""Time a training epoch of the paper's MNIST MLP (60k MNIST-shaped images, batch 100).

    python benchmarks/bench_train.py                      # H = 1024, 2048, 4096
    python benchmarks/bench_train.py --hidden 4096 --batches 100

For each width the packed-forward engine (hidden layers through the XNOR kernels) and the
same engine with float forward are timed over ``--batches`` mini-batches of random
MNIST-shaped data (timing does not depend on the values) and scaled to one epoch of 600
batches.  The time is split by where it goes: forward of the binary layers, backward of
the binary layers (float BLAS), batch norm (both directions), sign/STE, loss, optimizer.
Results are printed and written to benchmarks/results/train_<time>.json.

    python benchmarks/bench_train.py --conv               # CIFAR-10 ConvNets, batch 50

``--conv`` times the training step of the ConvNets instead (``--arch svhn_convnet``, the
half-width layout, by default; 32x32x3 inputs, batch 50, scaled to a 900-batch epoch of
45,000 images), once with the Numba im2col/col2im and max-pool kernels
(:mod:`minibnn.kernels.unfold`, :mod:`minibnn.kernels.pool`) and once with their NumPy
twins from :mod:`minibnn.kernels.reference` swapped in -- the ratio of the two, measured
in one process, is what those kernels buy.
"""

import argparse
import collections
import contextlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minibnn  # noqa: E402

minibnn.quiet_blas_spin()  # before numpy loads OpenBLAS; see its docstring
minibnn.keep_large_allocations()  # big per-step buffers stay mapped; see its docstring

import numpy as np  # noqa: E402

from _common import blas_info, write_json  # noqa: E402
from minibnn import losses, optim, zoo  # noqa: E402

EPOCH_BATCHES = 600


def category(layer):
    name = type(layer).__name__
    if "Conv" in name:
        return "conv layers"
    if "Dense" in name:
        return "binary layers"
    if "Pool" in name:
        return "max-pool"
    if "BatchNorm" in name:
        return "batch norm"
    return "sign/other"


def instrument(model, totals):
    """Wrap each layer's forward/backward to add its time to ``totals``."""
    for layer in model.layers:
        cat = category(layer)
        fwd, bwd = layer.forward, layer.backward

        def timed_fwd(x, training=True, _f=fwd, _c=cat):
            t = time.perf_counter()
            out = _f(x, training=training)
            totals[f"{_c} forward"] += time.perf_counter() - t
            return out

        def timed_bwd(g, _b=bwd, _c=cat):
            t = time.perf_counter()
            out = _b(g)
            totals[f"{_c} backward"] += time.perf_counter() - t
            return out

        layer.forward, layer.backward = timed_fwd, timed_bwd


def run(hidden, backend, batches, seed=0):
    model = zoo.build("mnist_mlp", hidden=hidden, depth=3, backend=backend, seed=seed)
    opt = optim.Adam(model, lr=3e-3)
    totals = collections.defaultdict(float)
    instrument(model, totals)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(batches + 2, 100, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=(batches + 2, 100))
    # two warm-up batches (JIT compile, first allocations) are not timed
    for i in range(2):
        scores = model.forward(x[i], training=True)
        _, g = losses.squared_hinge(scores, y[i], 10)
        model.backward(g)
        opt.step()
    totals.clear()
    t0 = time.perf_counter()
    for i in range(2, batches + 2):
        scores = model.forward(x[i], training=True)
        t = time.perf_counter()
        _, g = losses.squared_hinge(scores, y[i], 10)
        totals["loss"] += time.perf_counter() - t
        model.backward(g)
        t = time.perf_counter()
        opt.step()
        totals["optimizer"] += time.perf_counter() - t
    wall = time.perf_counter() - t0
    scale = EPOCH_BATCHES / batches
    return dict(hidden=hidden, backend=backend or "float", batches_timed=batches,
                epoch_seconds=wall * scale,
                split_seconds={k: v * scale for k, v in sorted(totals.items())})


class NumpyTwins:
    """Context manager: functional's im2col/col2im/max-pool use the NumPy twins."""

    def __enter__(self):
        from minibnn import functional
        from minibnn.kernels import reference

        class Unfold:
            im2col = staticmethod(reference.im2col)
            col2im = staticmethod(lambda c, s, kh, kw, st, p:
                                  np.ascontiguousarray(reference.col2im(c, s, kh, kw, st, p)))

        class Pool:
            maxpool2d = staticmethod(reference.maxpool2d)
            maxpool2d_backward = staticmethod(reference.maxpool2d_backward)

        self.saved = functional.unfold, functional.pool
        functional.unfold, functional.pool = Unfold, Pool
        return self

    def __exit__(self, *exc):
        from minibnn import functional
        functional.unfold, functional.pool = self.saved


def run_conv(arch, batches, numpy_twins, batch_size=50, seed=0):
    model = zoo.build(arch, backend="cpu", seed=seed)
    opt = optim.Adam(model, lr=1e-3)
    totals = collections.defaultdict(float)
    instrument(model, totals)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(batches + 2, batch_size, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=(batches + 2, batch_size))
    ctx = NumpyTwins() if numpy_twins else contextlib.nullcontext()
    with ctx:
        for i in range(batches + 2):
            if i == 2:                  # two untimed warm-up steps (JIT, first allocations)
                totals.clear()
                t0 = time.perf_counter()
            scores = model.forward(x[i], training=True)
            _, g = losses.squared_hinge(scores, y[i], 10)
            model.backward(g)
            t = time.perf_counter()
            opt.step()
            totals["optimizer"] += time.perf_counter() - t
        wall = time.perf_counter() - t0
    scale = 45000 / batch_size / batches
    return dict(arch=arch, batch_size=batch_size, unfold_pool="numpy twins" if numpy_twins
                else "numba", batches_timed=batches, step_seconds=wall / batches,
                epoch_seconds=wall * scale,
                split_seconds={k: v * scale for k, v in sorted(totals.items())})


def main_conv(args):
    print("BLAS:", json.dumps(blas_info()))
    rows = []
    for twins in (False, True):
        r = run_conv(args.arch, args.batches, twins)
        rows.append(r)
        split = ", ".join(f"{k} {v:.0f}s" for k, v in r["split_seconds"].items())
        print(f"{args.arch} {r['unfold_pool']:>11}: {r['step_seconds'] * 1e3:6.0f} ms/step, "
              f"epoch {r['epoch_seconds'] / 60:5.1f} min  ({split})", flush=True)
    print(f"numba kernels vs numpy twins: {rows[1]['step_seconds'] / rows[0]['step_seconds']:.2f}x per step")
    path = write_json("train_conv", dict(blas=blas_info(), rows=rows), args.out_dir)
    print("wrote", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="*", default=[1024, 2048, 4096])
    ap.add_argument("--batches", type=int, default=60, help="mini-batches timed per row")
    ap.add_argument("--conv", action="store_true", help="time the ConvNet training step instead")
    ap.add_argument("--arch", default="svhn_convnet", choices=["svhn_convnet", "cifar10_convnet"])
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    if args.conv:
        return main_conv(args)
    print("BLAS:", json.dumps(blas_info()))
    rows = []
    for h in args.hidden:
        for backend in ("cpu", None):
            r = run(h, backend, args.batches)
            rows.append(r)
            split = ", ".join(f"{k} {v:.1f}s" for k, v in r["split_seconds"].items())
            print(f"H={h:5d} {r['backend']:>5} forward: epoch {r['epoch_seconds']:6.1f} s  ({split})", flush=True)
    path = write_json("train", dict(blas=blas_info(), rows=rows), args.out_dir)
    print("wrote", path)


if __name__ == "__main__":
    main()
