"""The ``minibnn`` command line (also ``python -m minibnn``).

    minibnn train --dataset mnist --hidden 4096 --depth 3 --epochs 10 --out runs/mnist
    minibnn train --out runs/mnist --resume
    minibnn plot runs/mnist
"""

import argparse
import dataclasses
import json
import sys

from .train import TrainConfig


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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="minibnn", description="Binarized Neural Networks from scratch")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    p = sub.add_parser("plot", help="draw error/loss curves (and weight statistics) of a run")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="PNG path (default RUN_DIR/curves.png)")
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _cmd_train(args)
        if args.command == "plot":
            return _cmd_plot(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"minibnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
