"""Train a small BNN on the embedded MNIST sample, then export it to packed bits.

    python examples/train_sample_and_export.py                 # ~3 epochs, well under a minute
    python examples/train_sample_and_export.py --epochs 10 --hidden 256 --out runs/sample

1. ``minibnn.train.train`` trains the paper's MNIST MLP (here 2 x 128 binary units) on
   the embedded sample (2,500 train / 500 validation / 1,000 test images, shipped inside
   the package) and writes a run directory: config.json, metrics.jsonl, best.npz,
   last.npz, summary.json.
2. The best model (lowest validation error) is reloaded with ``Sequential.load`` and its
   float test error printed.
3. ``minibnn.packed`` (when installed) folds every "binary layer -> BN -> sign" into
   integer thresholds and runs the network on packed bits with XNOR-popcount; its test
   error and predictions are compared with the float model's, and the ``.bnn`` file size
   with the float checkpoint's.

See docs/05_training_to_deployment.md for how the fold works.  ``minibnn plot RUN_DIR``
draws the curves of a kept run (``--out``).
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

try:
    import minibnn  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minibnn.data import load_dataset
from minibnn.model import Sequential
from minibnn.train import TrainConfig, evaluate, train


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr-end", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="keep the run directory here (default: a "
                                               "temporary directory, deleted at the end)")
    return p.parse_args(argv)


def export_and_compare(model, ds, out_dir, float_error):
    try:
        from minibnn import packed
    except ImportError:
        print("\nminibnn.packed is not available in this checkout: skipping the export "
              "(see docs/05_training_to_deployment.md for the fold by hand).")
        return
    if not hasattr(packed, "export"):
        print("\nminibnn.packed has no export(): skipping the export.")
        return
    path = os.path.join(out_dir, "model.bnn")
    t0 = time.time()
    pm = packed.export(model, path)                     # first layer in float (default)
    print(f"\nexported {pm!r}\n  to {path} in {time.time() - t0:.1f} s")
    float_pred = np.argmax(model.forward(ds.x_test, training=False), axis=1)
    packed_pred = pm.predict(ds.x_test)
    packed_error = float(np.mean(packed_pred != ds.y_test))
    print(f"packed test error     {100 * packed_error:6.2f} %   "
          f"(float {100 * float_error:.2f} %; identical predictions: "
          f"{bool((packed_pred == float_pred).all())})")
    npz = os.path.join(out_dir, "best.npz")
    print(f"file sizes: best.npz (float32 latent weights + BN) {os.path.getsize(npz):,d} bytes, "
          f"model.bnn (bits + thresholds, compressed) {os.path.getsize(path):,d} bytes")
    try:
        bitplane = packed.PackedModel.from_model(model, first_layer="bitplane")
    except (TypeError, ValueError) as exc:               # an older packed module
        print(f"(bit-plane first layer not available: {exc})")
        return
    bp_pred = bitplane.predict(ds.x_test)
    print(f"bit-plane first layer (8 XNOR passes over the pixel bits, integers only): "
          f"test error {100 * np.mean(bp_pred != ds.y_test):.2f} %, "
          f"{int(np.sum(bp_pred != float_pred))} of {len(bp_pred)} predictions differ from float")


def run(args, out_dir):
    ds = load_dataset("sample")
    print(f"data: {ds!r}")
    config = TrainConfig(dataset="sample", hidden=args.hidden, depth=args.depth,
                         epochs=args.epochs, lr_end=args.lr_end, seed=args.seed, backend="cpu")
    print(f"training MNIST MLP {args.depth} x {args.hidden}, {args.epochs} epochs "
          f"(Adam, squared hinge, lr {config.lr_start:g} -> {config.lr_end:g})")
    t0 = time.time()
    summary = train(config, out_dir, dataset=ds, progress=False)
    print(f"trained in {time.time() - t0:.1f} s; best epoch {summary['best_epoch']}, "
          f"validation error {100 * summary['best_val_error']:.2f} %")
    model = Sequential.load(os.path.join(out_dir, "best.npz"))
    float_error = evaluate(model, ds.x_test, ds.y_test)
    print(f"float test error      {100 * float_error:6.2f} %   (best.npz, eval mode)")
    export_and_compare(model, ds, out_dir, float_error)
    print(f"\nrun directory: {sorted(os.listdir(out_dir))}")


def main(argv=None):
    args = parse_args(argv)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        run(args, args.out)
        print(f"kept in {args.out}; draw the curves with: python -m minibnn plot {args.out}")
    else:
        with tempfile.TemporaryDirectory() as out_dir:
            run(args, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
