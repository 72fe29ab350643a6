#!/usr/bin/env python3
"""Fetch Fashion-MNIST (the four IDX files, Zalando) into DATA_DIR/fashion-mnist/.

Usage::

    python data_scripts/fetch_fashion_mnist.py [--data-dir DIR] [--from LOCAL_COPY]

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
    sys.exit(main("fashion-mnist"))
