#!/usr/bin/env python
"""Device-resident training step of the paper's MNIST MLP (3 x 4096), timed step by step.

    python benchmarks/bench_gpu_train.py --json OUT.json         # on a CUDA machine
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/bench_gpu_train.py --simulate   # smoke test

Everything stays on the GPU: the parameters, the Adam moments, the dataset (uploaded once;
one permutation per epoch, each batch gathered on the device by index).  A step is
forward, squared hinge loss, backward and the Adam update with latent clipping and the
per-layer learning-rate scale (Hubara et al. 2016, Alg. 1), written directly on the device
ops (:mod:`minibnn.functional_cuda`, :mod:`minibnn.losses_cuda`,
:mod:`minibnn.kernels.optim_cuda`).  Modes:

* ``xnor``: hidden layers on the XNOR-popcount GEMM (``backend=None``, the default);
* ``float``: every product on the float SGEMM (``backend="float"``) -- the paper's
  comparison of the binary kernel against an unoptimized float one, here within a whole
  training step;
* ``layers``: the same network as a :class:`minibnn.model.Sequential`
  (:func:`minibnn.zoo.mnist_mlp`) moved with :func:`minibnn.device.to_device` and trained
  with :class:`minibnn.optim.Adam` -- the path ``minibnn train --backend cuda`` takes
  (:class:`minibnn.device.DeviceLoop`);
* ``convnet``: the paper's CIFAR-10 ConvNet (:func:`minibnn.zoo.cifar10_convnet`, batch
  50, 3 x 32 x 32 random images) the same way; its epoch is 45,000 / 50 = 900 steps.

Per mode: the first steps (kernel compilation) are timed apart, then up to ``--steps``
steps (default one epoch: 60000 / 100 = 600) within ``--budget`` seconds, each step
synchronized (the loss is copied back every step anyway).  Reported: median / mean / p90
step time, the epoch-equivalent time, the loss of the first and last steps and the number
of binary weights that flipped in the last step.  The JSON is rewritten (atomically) after
every mode, so a run cut short keeps what it measured.

Data: MNIST from ``--data-dir`` / ``$MINIBNN_DATA`` if present, else random data of the
same shape (timing does not depend on the values; the JSON says which).

References: Hubara et al., "Binarized Neural Networks", NIPS 2016, Sec. 3-4, Alg. 1.
"""

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--simulate", action="store_true",
                   help="tiny shapes for NUMBA_ENABLE_CUDASIM=1 (times are meaningless)")
    p.add_argument("--in-features", type=int, default=784, help=argparse.SUPPRESS)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=None, help="timed steps per mode (default: one epoch)")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation)")
    p.add_argument("--budget", type=float, default=60.0, help="seconds of timed steps per mode")
    p.add_argument("--modes", default="xnor,float,layers")
    p.add_argument("--conv-width", type=float, default=1.0, help="ConvNet channel multiplier")
    p.add_argument("--conv-image", type=int, default=32)
    p.add_argument("--conv-batch", type=int, default=50)
    p.add_argument("--conv-fc", type=int, default=1024)
    p.add_argument("--allocator", choices=("caching", "default"), default="caching",
                   help="numba memory manager (minibnn.device.use_caching_allocator)")
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="where to write results (JSON)")
    args = p.parse_args(argv)
    if args.simulate:
        # the simulator's barriers poll Python threads: a short GIL switch interval
        # makes the simulated kernels several times faster
        sys.setswitchinterval(1e-5)
        # every CUDA thread is a Python thread in the simulator: a 784-wide input alone
        # takes minutes per step, so the smoke test shrinks the input too (random data)
        args.in_features, args.hidden, args.depth, args.batch = 70, 24, 2, 8
        args.conv_width, args.conv_image, args.conv_batch, args.conv_fc = 1 / 64, 8, 4, 8
        args.steps = 1 if args.steps is None else args.steps
        args.warmup = 1
    return args


def log(msg=""):
    print(msg, flush=True)


def load_data(args, np):
    """(x (N, 784) float32 in [-1, 1], y (N,) int, description)."""
    n = 32 if args.simulate else 60000
    if not args.simulate:
        try:
            from minibnn.data.datasets import load_mnist_raw
            xtr, ytr, _, _ = load_mnist_raw(args.data_dir)[:4]
            x = (xtr.reshape(len(xtr), -1).astype(np.float32) / 127.5 - 1.0)
            return x, ytr.astype(np.int64), f"MNIST train ({len(x)} images)"
        except Exception as exc:
            log(f"MNIST not found ({type(exc).__name__}: {exc}); using random data")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(n, args.in_features)).astype(np.float32)
    return x, rng.integers(0, 10, n), f"random data ({n} x {args.in_features})"


def glorot_lr_scale(fan_in, fan_out):
    return 1.0 / math.sqrt(1.5 / (fan_in + fan_out))


class OpsMLP:
    """The MLP written directly on the device ops: [BinaryDense -> BN -> Sign] x depth,
    BinaryDense -> BN (scores).  Latent weights ~ U(-1, 1), BN gamma 1, beta 0."""

    def __init__(self, np, cuda, G, OG, dims, backend, seed=0):
        self.np, self.cuda, self.G, self.OG, self.backend = np, cuda, G, OG, backend
        rng = np.random.default_rng(seed)
        self.layers = []
        for k, f in zip(dims[:-1], dims[1:]):
            up = lambda a: cuda.to_device(np.ascontiguousarray(a, dtype=np.float32))
            L = {"w": up(rng.uniform(-1, 1, (k, f))), "gamma": up(np.ones(f)), "beta": up(np.zeros(f)),
                 "rm": up(np.zeros(f)), "rv": up(np.ones(f)), "scale": glorot_lr_scale(k, f)}
            L["state"] = {name: (OG.zeros_like(L[name]), OG.zeros_like(L[name]))
                          for name in ("w", "gamma", "beta")}
            self.layers.append(L)
        self.t = 0
        self.flips = OG.new_counter()

    def step(self, xb, yb, LG, lr):
        G = self.G
        caches = []
        h = xb
        last = len(self.layers) - 1
        for i, L in enumerate(self.layers):
            h, cd = G.binary_dense_forward(h, L["w"], None, binary_input=i > 0, backend=self.backend)
            h, cb = G.batchnorm_forward(h, L["gamma"], L["beta"], "train", L["rm"], L["rv"], 0.1, 1e-4)
            cs = None
            if i < last:
                h, cs = G.ste_sign_forward(h)
            caches.append((cd, cb, cs))
        loss, g = LG.squared_hinge(h, yb)
        grads = []
        for i in range(last, -1, -1):
            cd, cb, cs = caches[i]
            if cs is not None:
                g = G.ste_sign_backward(g, cs)
            g, dgamma, dbeta = G.batchnorm_backward(g, cb)
            g, dw, _ = G.binary_dense_backward(g, cd)
            grads.append((self.layers[i], dw, dgamma, dbeta))
        self.t += 1
        self.flips = self.OG.new_counter()
        for L, dw, dgamma, dbeta in grads:
            for name, grad, binary in (("w", dw, True), ("gamma", dgamma, False), ("beta", dbeta, False)):
                m, v = L["state"][name]
                self.OG.adam_update(L[name], grad, m, v, lr * (L["scale"] if binary else 1.0),
                                    0.9, 0.999, 1e-8, self.t, binary,
                                    flips=self.flips if binary else None)
        return loss


def time_mode(name, make_step, n_steps, args, np, cuda):
    """Warm-up, then timed synchronized steps; returns the result dict."""
    res = {"mode": name}
    t0 = time.perf_counter()
    losses = []
    for _ in range(args.warmup):
        losses.append(make_step())
    cuda.synchronize()
    res["warmup_s"] = time.perf_counter() - t0
    times = []
    start = time.perf_counter()
    for _ in range(n_steps):
        t = time.perf_counter()
        losses.append(make_step())
        cuda.synchronize()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > args.budget:
            break
    ts = np.sort(np.array(times))
    res.update(steps_timed=len(times), step_ms_median=1e3 * float(np.median(ts)),
               step_ms_mean=1e3 * float(ts.mean()), step_ms_p90=1e3 * float(ts[int(0.9 * (len(ts) - 1))]),
               epoch_s_equivalent=float(np.median(ts)) * args.steps_per_epoch,
               loss_first=float(losses[0]), loss_last=float(losses[-1]))
    return res


def main(argv=None):
    args = parse_args(argv)
    import numpy as np

    from minibnn import device
    if args.allocator == "caching":
        try:
            installed = device.use_caching_allocator()
        except Exception as exc:
            log(f"caching allocator not installed: {type(exc).__name__}: {exc}")
            installed = False
    else:
        installed = False
    from minibnn import kernels
    if "cuda" not in kernels.available_backends():
        log("no GPU (and NUMBA_ENABLE_CUDASIM is not set): nothing measured")
        return 0
    from numba import cuda

    from minibnn import functional_cuda as G
    from minibnn import losses_cuda as LG
    from minibnn.kernels import optim_cuda as OG

    x, y, data_desc = load_data(args, np)
    args.steps_per_epoch = len(x) // args.batch
    n_steps = args.steps if args.steps is not None else args.steps_per_epoch
    data = device.DeviceDataset(x, y)
    dims = [x.shape[1]] + [args.hidden] * args.depth + [10]
    out = {"benchmark": "gpu_train_step", "simulate": args.simulate, "data": data_desc,
           "dims": dims, "batch": args.batch, "steps_per_epoch": args.steps_per_epoch,
           "allocator": "caching" if installed else "numba default",
           "python": platform.python_version(), "numpy": np.__version__, "results": []}
    try:
        import numba
        out["numba"] = numba.__version__
        if not args.simulate:
            out["gpu"] = cuda.get_current_device().name.decode() if isinstance(
                cuda.get_current_device().name, bytes) else str(cuda.get_current_device().name)
    except Exception:
        pass

    def write():
        if args.json:
            from minibnn.fileio import atomic_write_text
            atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")

    rng = np.random.default_rng(1)

    def batch_stream():
        while True:
            yield from data.batches(args.batch, rng, drop_last=True)

    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        log(f"--- mode {mode}")
        try:
            stream = batch_stream()
            if mode in ("xnor", "float"):
                net = OpsMLP(np, cuda, G, OG, dims, None if mode == "xnor" else "float")

                def make_step(net=net, stream=stream):
                    xb, yb = next(stream)
                    return net.step(xb, yb, LG, args.lr)
                res = time_mode(mode, make_step, n_steps, args, np, cuda)
                res["flips_last_step"] = OG.read_counter(net.flips)
            elif mode == "layers":
                from minibnn import optim, zoo
                model = zoo.mnist_mlp(hidden=args.hidden, depth=args.depth,
                                      in_features=x.shape[1], seed=0)
                device.to_device(model)
                opt = optim.Adam(model, lr=args.lr)

                def make_step(model=model, opt=opt, stream=stream):
                    xb, yb = next(stream)
                    scores = model.forward(xb)
                    loss, g = LG.squared_hinge(scores, yb)
                    model.backward(g, input_grad=False)
                    opt.step()
                    return loss
                res = time_mode(mode, make_step, n_steps, args, np, cuda)
            elif mode == "convnet":
                from minibnn import optim, zoo
                model = zoo.cifar10_convnet(width=args.conv_width, image_size=args.conv_image,
                                            fc_units=args.conv_fc, seed=0)
                device.to_device(model)
                opt = optim.Adam(model, lr=args.lr)
                r = np.random.default_rng(2)
                n_img = 2 * args.conv_batch
                cdata = device.DeviceDataset(
                    r.uniform(-1, 1, (n_img, 3, args.conv_image, args.conv_image)).astype(np.float32),
                    r.integers(0, 10, n_img))

                def conv_batches():
                    while True:
                        yield from cdata.batches(args.conv_batch, r, drop_last=True)
                cstream = conv_batches()

                def make_step(model=model, opt=opt, stream=cstream):
                    xb, yb = next(stream)
                    scores = model.forward(xb)
                    loss, g = LG.squared_hinge(scores, yb)
                    model.backward(g, input_grad=False)
                    opt.step()
                    return loss
                saved = args.steps_per_epoch
                args.steps_per_epoch = 45000 // args.conv_batch
                try:
                    res = time_mode(mode, make_step, 1 if args.simulate else args.steps_per_epoch,
                                    args, np, cuda)
                finally:
                    args.steps_per_epoch = saved
                res.update(batch=args.conv_batch, width=args.conv_width, image=args.conv_image,
                           steps_per_epoch=45000 // args.conv_batch)
            else:
                raise ValueError(f"unknown mode {mode!r}")
        except Exception as exc:
            traceback.print_exc()
            res = {"mode": mode, "error": f"{type(exc).__name__}: {exc}"}
        out["results"].append(res)
        log(json.dumps(res))
        write()
    ok = {r["mode"]: r for r in out["results"] if "error" not in r}
    if "xnor" in ok and "float" in ok:
        out["float_over_xnor_step"] = ok["float"]["step_ms_median"] / ok["xnor"]["step_ms_median"]
        write()
    log("")
    log(f"{'mode':8s} {'median ms':>10s} {'mean ms':>9s} {'p90 ms':>8s} {'epoch s':>8s}  loss first -> last")
    for r in out["results"]:
        if "error" in r:
            log(f"{r['mode']:8s} ERROR {r['error']}")
        else:
            log(f"{r['mode']:8s} {r['step_ms_median']:10.3f} {r['step_ms_mean']:9.3f} "
                f"{r['step_ms_p90']:8.3f} {r['epoch_s_equivalent']:8.2f}  "
                f"{r['loss_first']:.4f} -> {r['loss_last']:.4f}")
    return 0 if all("error" not in r for r in out["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
