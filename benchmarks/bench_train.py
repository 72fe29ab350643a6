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
in one process, is what those kernels buy.  (Since the stride-1 backward of the binary
convolutions runs without any unfolding, :mod:`minibnn.kernels.conv_train`, the swap now
touches only the first layer's float im2col and the pooling.)

    python benchmarks/bench_train.py --vs-torch           # minibnn vs PyTorch, same nets

``--vs-torch`` times one training step (forward, squared hinge, backward, Adam, latent
clipping; median of ``--steps`` steps after warm-up) of minibnn (public API, ``cpu``
kernel backend) and of PyTorch's CPU build on the same networks (MLP 3 x H for each
``--hidden``, batch 100; ``svhn_convnet`` and ``cifar10_convnet``, batch 50; the PyTorch
versions are in ``torch_twins.py``), one after the other in this process, both with the
same number of threads, and prints the ratio.  Each engine is timed in a child process
of its own (as the issue's "one process after the other"): with PyTorch imported, its
OpenMP runtime (libgomp) is the one Numba's ``omp`` threading layer then uses too, and its
spinning threads contend with OpenBLAS's -- a minibnn step timed in the same process as
``import torch`` ran 10-16x slower on this 2-core machine.  The *floor* column is the float32 work a
step cannot avoid, measured in the same process: the two backward GEMMs of every binary
dense layer at this machine's BLAS rate plus the optimizer's memory traffic (parameters,
gradients and two moments read and written, 28 bytes a parameter) at the measured copy
bandwidth.  On a CPU with AVX512-BF16 the MLP rows also time minibnn with
``--grad-dtype bfloat16`` (the bf16 columns; ``--no-bf16`` leaves them out).  The step
is ``model.backward(g, input_grad=False)``, as ``minibnn train`` runs it (PyTorch's
input needs no gradient either).  ``--peak-memory`` also reports each engine's peak RSS
training the MLP (separate child processes).  ``--dropout`` builds the MLPs of both engines
with the paper's MNIST dropout (0.2 on the input, 0.5 after each sign): the step that
``minibnn train --dropout-in 0.2 --dropout-hidden 0.5`` runs (its hidden layers' input is
then 0 or +-2, with no packed form).  Without PyTorch the mode says so and skips.
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

# the caller's own OpenMP wait policy, before minibnn's settings: --vs-torch runs PyTorch
# (whose kernels are OpenMP) under what a PyTorch user would have, not under minibnn's
_CALLER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
# a --vs-torch child that times PyTorch runs with the process settings a PyTorch user has
# (minibnn's OMP_WAIT_POLICY=passive slows PyTorch's OpenMP kernels by 3-30%)
_TORCH_CHILD = (len(sys.argv) > 2 and sys.argv[1] in ("--_step-child", "--_peak-child")
                and sys.argv[2] == "torch")
if not _TORCH_CHILD:
    minibnn.quiet_blas_spin()  # before numpy loads OpenBLAS; see its docstring
    minibnn.keep_large_allocations()  # big per-step buffers stay mapped; see its docstring

import numpy as np  # noqa: E402

from _common import blas_info, median_time, settle, write_json  # noqa: E402
from minibnn import losses, optim, zoo  # noqa: E402

EPOCH_BATCHES = 600

#: --vs-torch MLP kinds: the Dropout settings both engines build the MLP with
#: (``--dropout``: the paper's MNIST recipe, 0.2 on the input, 0.5 after each sign)
MLP_KINDS = {"mlp": dict(dropout_in=0.0, dropout_hidden=0.0),
             "mlp_dropout": dict(dropout_in=0.2, dropout_hidden=0.5)}


def _label(kind, hidden):
    if kind not in MLP_KINDS:
        return kind
    d = MLP_KINDS[kind]
    return f"mlp 3x{hidden}" + (f" dropout {d['dropout_in']}/{d['dropout_hidden']}"
                                if d["dropout_hidden"] or d["dropout_in"] else "")


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

        def timed_bwd(g, input_grad=True, _b=bwd, _c=cat):
            t = time.perf_counter()
            out = _b(g, input_grad=input_grad)
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
        model.backward(g, input_grad=False)
        opt.step()
    totals.clear()
    t0 = time.perf_counter()
    for i in range(2, batches + 2):
        scores = model.forward(x[i], training=True)
        t = time.perf_counter()
        _, g = losses.squared_hinge(scores, y[i], 10)
        totals["loss"] += time.perf_counter() - t
        model.backward(g, input_grad=False)
        t = time.perf_counter()
        opt.step()
        totals["optimizer"] += time.perf_counter() - t
    wall = time.perf_counter() - t0
    scale = EPOCH_BATCHES / batches
    return dict(hidden=hidden, backend=backend, batches_timed=batches,
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
            model.backward(g, input_grad=False)
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


# ---------------------------------------------------------------------------
# minibnn vs PyTorch (--vs-torch)
# ---------------------------------------------------------------------------

def _median_step(step, batches, steps, warmup=3):
    times = []
    for i in range(warmup + steps):
        x, y = batches[i % len(batches)]
        t = time.perf_counter()
        step(x, y)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def minibnn_step_time(kind, hidden, steps, batch_size, seed=0, grad_dtype="float32"):
    if kind in MLP_KINDS:
        model = zoo.build("mnist_mlp", hidden=hidden, depth=3, backend="cpu", seed=seed,
                          **MLP_KINDS[kind])
        shape = (batch_size, 1, 28, 28)
    else:
        model = zoo.build(kind, backend="cpu", seed=seed)
        shape = (batch_size, 3, 32, 32)
    model.set_grad_dtype(grad_dtype)
    opt = optim.Adam(model, lr=1e-3)
    rng = np.random.default_rng(seed)
    batches = [(rng.uniform(-1, 1, size=shape).astype(np.float32),
                rng.integers(0, 10, size=batch_size)) for _ in range(4)]

    def step(x, y):
        scores = model.forward(x, training=True)
        _, g = losses.squared_hinge(scores, y, 10)
        model.backward(g, input_grad=False)
        opt.step()

    return _median_step(step, batches, steps)


def torch_step_time(torch, twins, kind, hidden, steps, batch_size, seed=0):
    torch.manual_seed(seed)
    if kind in MLP_KINDS:
        model = twins.mnist_mlp(hidden, **MLP_KINDS[kind])
        shape = (batch_size, 1, 28, 28)
    else:
        model = twins.convnet(width=0.5 if kind == "svhn_convnet" else 1.0)
        shape = (batch_size, 3, 32, 32)
    model.train()
    step = twins.make_step(model)
    g = torch.Generator().manual_seed(seed)
    batches = [(torch.rand(shape, generator=g) * 2 - 1, torch.randint(0, 10, (batch_size,), generator=g))
               for _ in range(4)]
    return _median_step(step, batches, steps)


def floor_time(hidden, batch_size, steps=10):
    """Seconds of unavoidable float32 work in one MLP step (see the module docstring)."""
    rng = np.random.default_rng(0)
    dims = [784, hidden, hidden, hidden, 10]
    gemm = 0.0
    n_params = 0
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        g = rng.standard_normal((batch_size, b)).astype(np.float32)
        w = rng.standard_normal((b, a)).astype(np.float32)
        x = rng.standard_normal((batch_size, a)).astype(np.float32)
        gemm += median_time(lambda: g.T @ x, steps)                 # dW  (b, a)
        if i > 0:
            gemm += median_time(lambda: g @ w, steps)               # dX  (N, a)
        n_params += a * b + 2 * b
    big = np.ones(32 << 20, np.float32)                              # 128 MB, beyond the caches
    dst = np.empty_like(big)
    t = median_time(lambda: np.copyto(dst, big), 5)
    bandwidth = 2 * big.nbytes / t                                   # bytes read + written per s
    return gemm + n_params * 28 / bandwidth, gemm, bandwidth


def _peak_rss_child(engine, hidden, steps):
    import resource
    if engine == "minibnn":
        minibnn_step_time("mlp", hidden, steps, 100)
    else:
        import torch
        import torch_twins
        torch.set_num_threads(_threads())
        torch_step_time(torch, torch_twins, "mlp", hidden, steps, 100)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _threads():
    return int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count() or 1)


def peak_rss(engine, hidden, steps=5):
    import subprocess
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_peak-child", engine,
                          str(hidden), str(steps)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def _child_json(argv, env=None):
    """Run this script with ``argv`` in a child process; its last stdout line is JSON."""
    import subprocess
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"child {argv} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _step_child(engine, kind, hidden, steps, batch_size):
    """Child process of --vs-torch: time one engine (and, for minibnn's MLP, the floor)."""
    import numba
    threads = _threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    res = {}
    if engine == "minibnn-bf16":
        res["step_s"] = minibnn_step_time(kind, hidden, steps, batch_size, grad_dtype="bfloat16")
    elif engine == "minibnn":
        res["step_s"] = minibnn_step_time(kind, hidden, steps, batch_size)
        if kind in MLP_KINDS:
            settle()
            res["floor_s"], res["floor_gemm_s"], bw = floor_time(hidden, batch_size)
            res["copy_bandwidth_gbs"] = bw / 1e9
    else:
        import torch
        import torch_twins
        torch.set_num_threads(threads)
        res["step_s"] = torch_step_time(torch, torch_twins, kind, hidden, steps, batch_size)
        res["torch"], res["torch_threads"] = torch.__version__, torch.get_num_threads()
    res["numba_threads"] = numba.get_num_threads()
    print(json.dumps(res))


def main_vs_torch(args):
    try:
        import torch  # noqa: F401  (only whether it is installed; timed in children)
        import torch_twins  # noqa: F401
    except ImportError:
        print("--vs-torch: PyTorch is not installed here (pip install torch); skipped")
        return 0
    del torch, torch_twins
    info = dict(blas=blas_info())
    print("BLAS:", json.dumps(info["blas"]))
    rows = []
    mlp = "mlp_dropout" if args.dropout else "mlp"
    nets = [(mlp, h) for h in args.hidden] + [(a, None) for a in args.convnets]
    from minibnn.kernels import bf16
    with_bf16 = args.bf16 and bf16.available()
    if args.bf16 and not with_bf16:
        print("--grad-dtype bfloat16 rows skipped: this CPU has no AVX512-BF16 kernel")
    header = (f"{'network':<22} {'minibnn ms':>10} {'torch ms':>9} {'minibnn vs torch':>17} "
              f"{'floor ms':>9} {'vs floor':>9}"
              + (f" {'bf16 ms':>8} {'bf16 vs torch':>14}" if with_bf16 else ""))
    for kind, h in nets:
        bs = 100 if kind in MLP_KINDS else 50
        steps = args.steps if kind in MLP_KINDS else max(5, args.steps // 3)
        common = [kind, str(h or 0), str(steps), str(bs)]
        ours = _child_json(["--_step-child", "minibnn", *common])
        torch_env = dict(os.environ)
        torch_env.pop("OMP_WAIT_POLICY", None)
        if _CALLER_OMP_WAIT_POLICY is not None:
            torch_env["OMP_WAIT_POLICY"] = _CALLER_OMP_WAIT_POLICY
        theirs = _child_json(["--_step-child", "torch", *common], env=torch_env)
        if not rows:
            info.update(torch=theirs["torch"], torch_threads=theirs["torch_threads"],
                        numba_threads=ours["numba_threads"])
            print(f"PyTorch {theirs['torch']}, {theirs['torch_threads']} threads; Numba "
                  f"{ours['numba_threads']} threads; each engine in its own child process")
            print(header)
        row = dict(network=_label(kind, h), batch_size=bs, steps=steps,
                   minibnn_s=ours["step_s"], torch_s=theirs["step_s"],
                   speedup=theirs["step_s"] / ours["step_s"])
        fl = ""
        if kind in MLP_KINDS:
            row.update(floor_s=ours["floor_s"], floor_gemm_s=ours["floor_gemm_s"],
                       copy_bandwidth_gbs=ours["copy_bandwidth_gbs"],
                       vs_floor=ours["step_s"] / ours["floor_s"])
            fl = f"{ours['floor_s'] * 1e3:9.1f} {row['vs_floor']:8.2f}x"
            if with_bf16:
                half = _child_json(["--_step-child", "minibnn-bf16", *common])
                row.update(minibnn_bf16_s=half["step_s"],
                           speedup_bf16=theirs["step_s"] / half["step_s"])
                fl += f" {half['step_s'] * 1e3:8.1f} {row['speedup_bf16']:13.2f}x"
        rows.append(row)
        print(f"{row['network']:<22} {row['minibnn_s'] * 1e3:10.1f} {row['torch_s'] * 1e3:9.1f} "
              f"{row['speedup']:16.2f}x {fl}", flush=True)
    if args.peak_memory:
        for h in args.peak_memory:
            mem = {e: peak_rss(e, h) for e in ("minibnn", "torch")}
            info[f"peak_rss_mb_mlp_{h}"] = mem
            print(f"peak RSS training mlp 3x{h}: minibnn {mem['minibnn']:.0f} MB, "
                  f"torch {mem['torch']:.0f} MB")
    path = write_json("train_vs_torch", dict(info, rows=rows), args.out_dir)
    print("wrote", path)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="*", default=[1024, 2048, 4096])
    ap.add_argument("--batches", type=int, default=60, help="mini-batches timed per row")
    ap.add_argument("--conv", action="store_true", help="time the ConvNet training step instead")
    ap.add_argument("--arch", default="svhn_convnet", choices=["svhn_convnet", "cifar10_convnet"])
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--vs-torch", action="store_true", help="minibnn vs PyTorch step, same networks")
    ap.add_argument("--steps", type=int, default=30, help="--vs-torch: timed steps per MLP row")
    ap.add_argument("--convnets", nargs="*", default=["svhn_convnet", "cifar10_convnet"],
                    choices=["svhn_convnet", "cifar10_convnet"])
    ap.add_argument("--dropout", action="store_true",
                    help="--vs-torch: the MLPs with the paper's dropout (0.2 input, 0.5 hidden)")
    ap.add_argument("--no-bf16", dest="bf16", action="store_false",
                    help="--vs-torch: leave out the MLP rows with --grad-dtype bfloat16")
    ap.add_argument("--peak-memory", type=int, nargs="*", default=None, metavar="H",
                    help="--vs-torch: also peak RSS training MLP 3xH (child processes)")
    ap.add_argument("--_peak-child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--_step-child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._step_child:
        engine, kind, h, steps, bs = args._step_child
        return _step_child(engine, kind, int(h), int(steps), int(bs))
    if args._peak_child:
        engine, h, steps = args._peak_child
        return _peak_rss_child(engine, int(h), int(steps))
    if args.vs_torch:
        return main_vs_torch(args)
    if args.conv:
        return main_conv(args)
    print("BLAS:", json.dumps(blas_info()))
    rows = []
    for h in args.hidden:
        for backend in ("cpu", "float"):
            r = run(h, backend, args.batches)
            rows.append(r)
            split = ", ".join(f"{k} {v:.1f}s" for k, v in r["split_seconds"].items())
            print(f"H={h:5d} {r['backend']:>5} forward: epoch {r['epoch_seconds']:6.1f} s  ({split})", flush=True)
    path = write_json("train", dict(blas=blas_info(), rows=rows), args.out_dir)
    print("wrote", path)


if __name__ == "__main__":
    main()
