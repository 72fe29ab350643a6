"""Time packed (XNOR-popcount) inference of the paper's MNIST MLP against float32.

    python benchmarks/bench_inference.py              # 3 x 4096 MLP, 10,000 images (~1-2 min)
    python benchmarks/bench_inference.py --quick      # 3 x 1024, 2,000 images

Rows, each over the same images at batch 10,000 and batch 100:

* ``packed (bitplane)`` -- :class:`minibnn.packed.PackedModel`, first layer on the 8 bit
  planes of the pixels (Sec. 1.6), every layer XNOR-popcount + integer thresholds;
* ``packed (float first)`` -- the same with the first layer as float32 BLAS;
* ``engine float eval`` -- ``model.forward(x, training=False)`` with ``backend="float"``
  (the float model the packed one reproduces);
* ``plain numpy float32`` -- the same network written directly in NumPy: ``x @ W`` with
  W = sign(w) float32, BN as a fused per-neuron affine, sign, ... (the baseline of the
  targets: >= 15x at batch 10,000, >= 5x at batch 100).

Weights are random (timing does not depend on them) with BN statistics on the scale of the
real pre-activations; the images are MNIST's test set when ``$MINIBNN_DATA`` (or the default
data directory) has it, else random pixels.  Also reported: the BLAS in use
(threadpoolctl), the .bnn file size against the float32 weights (target <= 1/25), the bytes
of weights read per image, and the agreement of the packed predictions with the engine's.
The table is printed and written as JSON to ``benchmarks/results/inference_<time>.json``
(atomically).
"""

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minibnn  # noqa: E402

minibnn.quiet_blas_spin()  # before numpy loads OpenBLAS; see its docstring
minibnn.keep_large_allocations()  # big per-step buffers stay mapped; see its docstring

import numpy as np  # noqa: E402

from _common import blas_info, settle  # noqa: E402
from minibnn import zoo  # noqa: E402
from minibnn.fileio import atomic_write_text  # noqa: E402
from minibnn.layers import BatchNorm, BinaryDense  # noqa: E402
from minibnn.packed import export  # noqa: E402
from minibnn.quantize import sign  # noqa: E402

TARGETS = {10000: 15.0, 100: 5.0}


def load_images(n, rng):
    """(x float32 (n, 1, 28, 28) = 2p/255 - 1, y or None, source)."""
    try:
        from minibnn.data import load_dataset
        ds = load_dataset("mnist")
        return ds.x_test[:n], ds.y_test[:n], "mnist test set"
    except Exception as exc:  # no data here: random pixels are as good for timing
        p = rng.integers(0, 256, (n, 1, 28, 28)).astype(np.uint8)
        x = p.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
        return x, None, f"random pixels ({type(exc).__name__}: MNIST not found)"


def build_model(hidden, depth, x, rng):
    """The zoo MLP with random weights and BN statistics matched to the pre-activations
    of a few real inputs (so the hidden bits are not constant)."""
    model = zoo.mnist_mlp(hidden=hidden, depth=depth, seed=0)
    h = x[:256].reshape(min(256, len(x)), -1)
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            F = layer.num_features
            layer.buffers["running_mean"][:] = h.mean(axis=0)
            layer.buffers["running_var"][:] = h.var(axis=0) + 1.0
            layer.params["gamma"][:] = rng.choice([-1.0, 1.0], F) * rng.uniform(0.5, 1.5, F)
            layer.params["beta"][:] = rng.normal(0, 0.2, F)
        h = layer.forward(h, training=False)
    return model


def plain_numpy_net(model):
    """The network as plain float32 NumPy: [(W (K, F) float32 +-1, scale, shift, sign?)]."""
    layers = [l for l in model.layers if isinstance(l, (BinaryDense, BatchNorm))]
    net = []
    for dense, bn in zip(layers[::2], layers[1::2]):
        inv = 1.0 / np.sqrt(bn.buffers["running_var"].astype(np.float64) + bn.eps)
        scale = (bn.params["gamma"] * inv).astype(np.float32)
        shift = (bn.params["beta"] - bn.buffers["running_mean"] * bn.params["gamma"] * inv).astype(np.float32)
        net.append((np.ascontiguousarray(sign(dense.params["w"])), scale, shift))
    return net


def plain_numpy_predict(net, x):
    h = x.reshape(len(x), -1)
    for i, (w, scale, shift) in enumerate(net):
        h = h @ w
        h *= scale
        h += shift
        if i < len(net) - 1:
            h = np.where(h >= 0, np.float32(1), np.float32(-1))
    return np.argmax(h, axis=1)


def time_pass(fn, x, batch, repeats):
    """Median seconds of one pass over x in batches of ``batch`` (warm-up excluded);
    returns (seconds, predictions of the last pass)."""
    fn(x[:batch])
    times, pred = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred = np.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)])
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), pred


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--n", type=int, default=10000, help="images")
    ap.add_argument("--batches", default="10000,100", help="batch sizes, comma separated")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--quick", action="store_true", help="3 x 1024, 2,000 images, 1 repeat")
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.n, args.repeats = 1024, 2000, 1
        args.batches = "2000,100"
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    t_start = time.perf_counter()

    x, y, source = load_images(args.n, rng)
    model = build_model(args.hidden, args.depth, x, rng)
    model.set_backend("float").eval()
    net = plain_numpy_net(model)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        bp = export(model, os.path.join(tmp, "m.bnn"), first_layer="bitplane")
        t_export = time.perf_counter() - t0
        file_bytes = os.path.getsize(os.path.join(tmp, "m.bnn"))
        ff = export(model, os.path.join(tmp, "f.bnn"), first_layer="float")
        file_bytes_float_first = os.path.getsize(os.path.join(tmp, "f.bnn"))
    bp.set_backend(args.backend)
    ff.set_backend(args.backend)
    w_float32 = 4 * sum(l.params["w"].size for l in model.layers if isinstance(l, BinaryDense))
    w_packed = sum(a.nbytes for k, a in bp.arrays.items() if k.endswith(".weights"))

    rows = {
        "packed (bitplane)": lambda xb: bp.predict(xb),
        "packed (float first)": lambda xb: ff.predict(xb),
        "engine float eval": lambda xb: np.argmax(model.forward(xb, training=False), axis=1),
        "plain numpy float32": lambda xb: plain_numpy_predict(net, xb),
    }
    results = {}
    preds = {}
    for batch in batches:
        for name, fn in rows.items():
            settle()
            sec, pred = time_pass(fn, x, batch, args.repeats)
            results[(name, batch)] = sec
            preds[(name, batch)] = pred
            print(f"  {name:22s} batch {batch:6d}: {sec * 1e3:9.1f} ms", flush=True)

    # agreement with the engine (float-first mode is the identical one, same batches)
    agree = {}
    for batch in batches:
        ref = preds[("engine float eval", batch)]
        agree[batch] = {name: int(np.sum(preds[(name, batch)] != ref))
                        for name in rows if name != "engine float eval"}

    table = []
    print()
    head = f"{'':22s} " + " ".join(f"{'batch ' + str(b):>26s}" for b in batches)
    print(head)
    for name in rows:
        cells = []
        for b in batches:
            sec = results[(name, b)]
            ips = args.n / sec
            cells.append(f"{sec * 1e3:8.1f} ms {ips:9.0f} img/s")
        print(f"{name:22s} " + " ".join(f"{c:>26s}" for c in cells))
    ratios = {}
    for b in batches:
        r = {}
        for name in ("packed (bitplane)", "packed (float first)"):
            r[name] = {"vs_plain_numpy": results[("plain numpy float32", b)] / results[(name, b)],
                       "vs_engine": results[("engine float eval", b)] / results[(name, b)]}
        ratios[b] = r
        target = TARGETS.get(b)
        for name, v in r.items():
            verdict = "" if target is None else \
                f"  (target >= {target:.0f}x: {'met' if v['vs_plain_numpy'] >= target else 'NOT met'})"
            print(f"batch {b:6d}  {name:22s} {v['vs_plain_numpy']:6.1f}x plain numpy, "
                  f"{v['vs_engine']:6.1f}x engine{verdict}")
        table.append({"batch": b, **{name: {"seconds": results[(name, b)],
                                            "images_per_s": args.n / results[(name, b)]}
                                     for name in rows}})
    print(f"\n.bnn file (bitplane): {file_bytes / 2**20:.2f} MiB vs float32 weights "
          f"{w_float32 / 2**20:.2f} MiB = 1/{w_float32 / file_bytes:.1f} (target <= 1/25: "
          f"{'met' if w_float32 / file_bytes >= 25 else 'NOT met'})")
    for b in batches:
        print(f"weights read per image at batch {b}: packed {w_packed / b / 1024:.1f} KiB, "
              f"float32 {w_float32 / b / 1024:.1f} KiB")
    print(f"predictions differing from the engine: {agree}")
    if y is not None:
        print("test error: " + ", ".join(
            f"{name} {np.mean(preds[(name, batches[0])] != y):.4f}" for name in rows))
    print(f"BLAS: {blas_info()}")

    from numba import get_num_threads
    report = {
        "env": {"python": platform.python_version(), "numpy": np.__version__,
                "numba_threads": get_num_threads(), "cpu": platform.machine(),
                "blas": blas_info(), "load_average": os.getloadavg()},
        "config": {"hidden": args.hidden, "depth": args.depth, "n": args.n, "batches": batches,
                   "repeats": args.repeats, "backend": args.backend, "data": source},
        "table": table,
        "ratios": {str(b): r for b, r in ratios.items()},
        "targets": {"vs_plain_numpy": {str(b): t for b, t in TARGETS.items()},
                    "file_vs_float32_weights": 1 / 25},
        "file_bytes_bitplane": file_bytes, "file_bytes_float_first": file_bytes_float_first,
        "float32_weight_bytes": w_float32, "packed_weight_bytes": w_packed,
        "file_ratio": w_float32 / file_bytes,
        "weight_bytes_per_image": {str(b): {"packed": w_packed / b, "float32": w_float32 / b}
                                   for b in batches},
        "disagreements_with_engine": {str(b): v for b, v in agree.items()},
        "export_seconds_bitplane": t_export,
        "total_seconds": time.perf_counter() - t_start,
    }
    if y is not None:
        report["test_error"] = {name: float(np.mean(preds[(name, batches[0])] != y)) for name in rows}
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out_dir, f"inference_{stamp}.json")
    atomic_write_text(path, json.dumps(report, indent=1))
    print(f"wrote {path} ({report['total_seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
