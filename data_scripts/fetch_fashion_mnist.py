#!/usr/bin/env python3
"""Fetch Fashion-MNIST (the four IDX files): the same as ``minibnn fetch fashion-mnist``.

    python data_scripts/fetch_fashion_mnist.py [--data-dir DIR] [--from LOCAL_COPY]

All logic (checksums, atomic writes, progress) lives in :mod:`minibnn.data.fetch`.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout, installed or not
from minibnn.data.fetch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("fashion-mnist"))
