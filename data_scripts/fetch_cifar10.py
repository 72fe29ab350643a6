#!/usr/bin/env python3
"""Fetch CIFAR-10 (binary version) into DATA_DIR/cifar-10-batches-bin/.

Usage::

    python data_scripts/fetch_cifar10.py [--data-dir DIR] [--from LOCAL_COPY]

Without ``--from`` the files are downloaded; with it they are imported from
a local copy. Checksums are verified and every file is written atomically.
All logic lives in :mod:`minibnn.data.fetch`.
"""

import sys
from pathlib import Path

try:
    from minibnn.data.fetch import main
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from minibnn.data.fetch import main

if __name__ == "__main__":
    sys.exit(main("cifar10"))
