#!/usr/bin/env python3
"""Build ``minibnn/data/mnist_sample.npz``, the MNIST subset shipped in the package.

Usage::

    python data_scripts/make_mnist_sample.py [--data-dir DIR] [--out PATH]

Reads the full MNIST from the data directory (strictly: the original files,
SHA-256 verified) and stores the first 3,000 training and first 1,000 test
images and labels, uint8, with ``np.savez_compressed`` plus an
``attribution`` string. The output is written to a temporary name in the
same folder and then ``os.replace``'d, so a failed run never leaves a broken
sample behind.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    from minibnn.data import load_mnist_raw
    from minibnn.fileio import atomic_writer
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from minibnn.data import load_mnist_raw
    from minibnn.fileio import atomic_writer

N_TRAIN, N_TEST = 3000, 1000
ATTRIBUTION = (
    "MNIST by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, "
    "licensed under CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/). "
    f"Subset: first {N_TRAIN} train / {N_TEST} test images of the original files "
    "(train-images-idx3-ubyte, t10k-images-idx3-ubyte), unmodified."
)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "minibnn" / "data" / "mnist_sample.npz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None,
                    help="data directory holding mnist/ (default: $MINIBNN_DATA, "
                         "else the per-user default)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="output file (default: %(default)s)")
    args = ap.parse_args(argv)

    x_tr, y_tr, x_te, y_te = load_mnist_raw(args.data_dir, strict=True)
    arrays = {
        # (N, 28, 28): the IDX layout; load_sample_raw adds the channel axis.
        "x_train": np.ascontiguousarray(x_tr[:N_TRAIN, 0]),
        "y_train": y_tr[:N_TRAIN].copy(),
        "x_test": np.ascontiguousarray(x_te[:N_TEST, 0]),
        "y_test": y_te[:N_TEST].copy(),
        "attribution": np.array(ATTRIBUTION),  # unicode dtype, loads without pickle
    }
    with atomic_writer(args.out, "wb") as f:
        np.savez_compressed(f, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
