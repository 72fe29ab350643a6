"""What do shift-based BatchNorm and shift-based AdaMax cost in accuracy?

Trains the paper's MNIST MLP twice from the same seed -- same initial weights, same data
order, same learning-rate schedule -- once with standard BatchNorm + Adam and once with
shift-based BatchNorm (Alg. 3) + shift-based AdaMax (Alg. 4), and prints the test errors.
Only the normalization and the optimizer differ.

    python examples/shift_vs_standard.py                  # embedded sample, 10 epochs
    python examples/shift_vs_standard.py --seeds 0 1 2    # repeat for three seeds
    MINIBNN_DATA=~/data python examples/shift_vs_standard.py --dataset mnist --epochs 20
    python examples/shift_vs_standard.py --quick          # CI smoke test, a few seconds

Data: ``--dataset auto`` (the default) uses real MNIST when ``MINIBNN_DATA`` is set and
the embedded sample otherwise (2,500 train / 500 validation / 1,000 test images, no files
needed).  ``--quick`` always uses a few hundred images of the sample.

The test error reported for each run is the one at the epoch with the lowest validation
error (the paper's selection rule), and the last epoch's, both in percent.

References: Hubara et al. 2016 (arXiv:1602.02830v3), Sec. 1.4 / Alg. 3 (shift-based BN),
Sec. 1.5 / Alg. 4 (shift-based AdaMax); docs/04_batchnorm_shift_and_adamax.md.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

try:
    import minibnn  # noqa: F401
except ImportError:  # run from a checkout without installing: python examples/...
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minibnn.data import load_dataset
from minibnn.train import TrainConfig, train

VARIANTS = (
    ("standard BN + Adam", dict(bn="standard", optimizer="adam")),
    ("shift BN + shift-AdaMax", dict(bn="shift", optimizer="shift-adamax")),
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=["auto", "sample", "mnist"], default="auto",
                   help="auto: mnist if MINIBNN_DATA is set, else the embedded sample")
    p.add_argument("--hidden", type=int, default=256, help="MLP width (paper: 4096)")
    p.add_argument("--depth", type=int, default=2, help="hidden layers (paper: 3)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr-start", type=float, default=3e-3)
    p.add_argument("--lr-end", type=float, default=3e-5)
    p.add_argument("--limit-train", type=int, default=None,
                   help="use only the first N training images")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 epoch on 300 sample images, hidden 64")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.hidden, args.epochs, args.limit_train = "sample", 64, 1, 300
        args.seeds = args.seeds[:1]
    if args.dataset == "auto":
        args.dataset = "mnist" if os.environ.get("MINIBNN_DATA") else "sample"
    return args


def run(args):
    ds = load_dataset(args.dataset, limit_train=args.limit_train)
    print(f"data: {ds!r}")
    print(f"model: MNIST MLP, {args.depth} x {args.hidden} binary units; {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr_start:g} -> {args.lr_end:g} (exponential)")
    print(f"machine: {platform.machine()} CPU, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, NumPy {np.__version__}")
    results = []
    for seed in args.seeds:
        for label, kw in VARIANTS:
            config = TrainConfig(dataset=args.dataset, hidden=args.hidden, depth=args.depth,
                                 epochs=args.epochs, batch_size=args.batch_size,
                                 lr_start=args.lr_start, lr_end=args.lr_end, seed=seed,
                                 backend="cpu", limit_train=args.limit_train, **kw)
            t0 = time.time()
            with tempfile.TemporaryDirectory() as out_dir:
                summary = train(config, out_dir, dataset=ds, progress=False, log=lambda *a: None)
                with open(os.path.join(out_dir, "metrics.jsonl")) as f:
                    last = [json.loads(line) for line in f if line.strip()][-1]
            row = dict(variant=label, seed=seed, bn=kw["bn"], optimizer=kw["optimizer"],
                       test_error_at_best=100 * summary["test_error_at_best"],
                       best_epoch=summary["best_epoch"],
                       test_error_last=100 * last["test_error"],
                       train_error_last=100 * last["train_error"],
                       seconds=time.time() - t0)
            results.append(row)
            print(f"  seed {seed}  {label:<24} test error {row['test_error_at_best']:5.2f}% "
                  f"(best val, epoch {row['best_epoch']}), last epoch {row['test_error_last']:5.2f}%  "
                  f"[{row['seconds']:.0f} s]", flush=True)
    return results


def report(results):
    print()
    print(f"{'':26}{'test error (best val)':>24}{'test error (last)':>20}")
    means = {}
    for label, _ in VARIANTS:
        rows = [r for r in results if r["variant"] == label]
        best = np.array([r["test_error_at_best"] for r in rows])
        last = np.array([r["test_error_last"] for r in rows])
        means[label] = best.mean()
        spread = f" +- {best.std(ddof=1):.2f}" if len(rows) > 1 else ""
        print(f"{label:<26}{best.mean():>16.2f}%{spread:<8}{last.mean():>19.2f}%")
    (std_label, _), (shift_label, _) = VARIANTS
    print(f"\nAP2 cost (shift - standard): {means[shift_label] - means[std_label]:+.2f} "
          f"percentage points of test error, mean over seeds {sorted({r['seed'] for r in results})}")


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    results = run(args)
    report(results)
    print(f"total {time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
