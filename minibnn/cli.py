"""The ``minibnn`` command line (also ``python -m minibnn``).

    minibnn train --dataset mnist --hidden 4096 --depth 3 --epochs 10 --out runs/mnist
    minibnn train --out runs/mnist --resume
    minibnn plot runs/mnist
    minibnn export runs/mnist/best.npz --out mnist.bnn [--first-layer bitplane]
    minibnn eval mnist.bnn --dataset mnist [--backend cpu]
    minibnn summary mnist.bnn
"""

from . import keep_large_allocations, quiet_blas_spin

quiet_blas_spin()  # before anything imports numpy (see its docstring)
keep_large_allocations()  # per-step backward buffers are reused, not page-faulted in

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

from .train import TrainConfig  # noqa: E402


def _add_train(sub):
    p = sub.add_parser("train", help="train a BNN on a dataset",
                       description="Train a binarized network; writes config.json, metrics.jsonl, "
                                   "best.npz, last.npz and summary.json into --out.")
    d = TrainConfig()
    p.add_argument("--dataset", choices=["mnist", "cifar10", "svhn", "sample"], default=d.dataset)
    p.add_argument("--arch", choices=["mnist_mlp", "cifar10_convnet", "svhn_convnet"], default=None,
                   help="default: mnist_mlp for mnist/sample, the paper's ConvNet for cifar10/svhn")
    p.add_argument("--hidden", type=int, default=d.hidden, help="MLP width (paper: 4096)")
    p.add_argument("--depth", type=int, default=d.depth, help="MLP hidden layers (paper: 3)")
    p.add_argument("--width", type=float, default=d.width, help="ConvNet channel multiplier")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr-start", type=float, default=d.lr_start)
    p.add_argument("--lr-end", type=float, default=d.lr_end)
    p.add_argument("--schedule", choices=["exponential", "constant"], default=d.schedule)
    p.add_argument("--optimizer", choices=["adam", "adamax", "shift-adamax", "bop", "sgd"], default=d.optimizer)
    p.add_argument("--bn", choices=["standard", "shift"], default=d.bn)
    p.add_argument("--loss", choices=["squared_hinge", "cross_entropy"], default=d.loss)
    p.add_argument("--dropout-in", type=float, default=d.dropout_in)
    p.add_argument("--dropout-hidden", type=float, default=d.dropout_hidden)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--backend", choices=["cpu", "reference", "cuda"], default=d.backend)
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--data-dir", default=None, help="dataset root (else $MINIBNN_DATA, else ~/.minibnn/data)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.npz")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")


def _cmd_train(args):
    from .kernels import get_backend
    from .train import train

    get_backend(args.backend)  # an unavailable backend fails here, before any data is read
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    summary = train(config, args.out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(summary))
    return 0 if summary["finished"] else 130


def _cmd_plot(args):
    from .viz import plot_curves, plot_latent_histograms

    paths = [plot_curves(args.run_dir, args.out)]
    try:
        paths.append(plot_latent_histograms(args.run_dir))
    except ValueError:
        pass
    for p in paths:
        print(p)
    return 0


def _input_shape_arg(text):
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must look like 1,28,28, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"input shape must be positive integers, got {text!r}")
    return shape


def _add_packed(sub):
    p = sub.add_parser("export", help="fold a trained model into bits and integer thresholds (.bnn)",
                       description="Export a trained model (Sequential .npz, e.g. RUN_DIR/best.npz) "
                                   "as a packed .bnn file run with XNOR-popcount only.")
    p.add_argument("model", help="a Sequential.save .npz (e.g. RUN_DIR/best.npz)")
    p.add_argument("--out", required=True, help="the .bnn file to write")
    p.add_argument("--first-layer", choices=["float", "bitplane"], default="float",
                   help="float: the first layer as the float model computes it; bitplane: "
                        "8-bit pixels as 8 binary bit planes (exact integers)")
    p.add_argument("--input-shape", type=_input_shape_arg, default=None,
                   help="per-sample input shape, e.g. 1,28,28 (default: from RUN_DIR/config.json, "
                        "else inferred)")
    p = sub.add_parser("eval", help="test error and speed of a packed .bnn model",
                       description="Evaluate a .bnn model on a dataset's test split; prints JSON.")
    p.add_argument("model", help="a .bnn file from `minibnn export`")
    p.add_argument("--dataset", choices=["mnist", "cifar10", "svhn", "sample"], required=True)
    p.add_argument("--backend", choices=["cpu", "cuda", "reference"], default="cpu")
    p.add_argument("--data-dir", default=None, help="dataset root (else $MINIBNN_DATA, else ~/.minibnn/data)")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--limit", type=int, default=None, help="use only the first N test images")
    p = sub.add_parser("summary", help="per-layer table: shapes, params, bits, memory, MACs",
                       description="Summarize a model (.npz or .bnn): output shapes, parameters, "
                                   "bits per weight, packed vs float32 memory, binary vs float MACs.")
    p.add_argument("model", help="a Sequential.save .npz or a .bnn file")
    p.add_argument("--input-shape", type=_input_shape_arg, default=None,
                   help="per-sample input shape for a .npz model (default: inferred)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _run_input_shape(model_path):
    """Input shape from the run directory's config.json (dataset), if there is one."""
    import os

    cfg = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    try:
        with open(cfg) as f:
            dataset = json.load(f).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None
    return {"mnist": (1, 28, 28), "sample": (1, 28, 28), "cifar10": (3, 32, 32),
            "svhn": (3, 32, 32)}.get(dataset)


def _cmd_export(args):
    import os

    from .model import Sequential
    from .packed import export

    model = Sequential.load(args.model)
    shape = args.input_shape or _run_input_shape(args.model)
    packed = export(model, args.out, first_layer=args.first_layer, input_shape=shape)
    n_float = sum(p.size for _, p, _, _ in model.parameters()) + sum(b.size for _, b in model.buffers())
    size = os.path.getsize(args.out)
    print(json.dumps({"out": os.fspath(args.out), "first_layer": args.first_layer,
                      "input_shape": list(packed.input_shape), "file_bytes": size,
                      "float32_bytes": 4 * int(n_float),
                      "ratio": round(4 * int(n_float) / size, 2)}))
    return 0


def _cmd_eval(args):
    import time

    import numpy as np

    from .data import load_dataset
    from .packed import PackedModel

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    model = PackedModel.load(args.model, backend=args.backend)
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    x, y = ds.x_test, ds.y_test
    if args.limit is not None:
        x, y = x[:args.limit], y[:args.limit]
    model.predict(x[:min(len(x), args.batch_size)])          # warm-up (JIT, caches)
    t0 = time.perf_counter()
    pred = model.predict(x, batch_size=args.batch_size)
    seconds = time.perf_counter() - t0
    errors = int(np.sum(pred != y))
    print(json.dumps({"model": args.model, "dataset": args.dataset, "n": int(len(y)),
                      "test_error": errors / max(1, len(y)), "errors": errors,
                      "images_per_s": len(y) / seconds if seconds > 0 else None,
                      "seconds": seconds, "batch_size": args.batch_size,
                      "backend": model.backend, "first_layer": model.first_layer}))
    return 0


def _cmd_summary(args):
    from .summary import load_any, summary

    print(summary(load_any(args.model), input_shape=args.input_shape, as_json=args.json))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="minibnn", description="Binarized Neural Networks from scratch")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    p = sub.add_parser("plot", help="draw error/loss curves (and weight statistics) of a run")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="PNG path (default RUN_DIR/curves.png)")
    _add_packed(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _cmd_train(args)
        if args.command == "plot":
            return _cmd_plot(args)
        if args.command == "export":
            return _cmd_export(args)
        if args.command == "eval":
            return _cmd_eval(args)
        if args.command == "summary":
            return _cmd_summary(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"minibnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
