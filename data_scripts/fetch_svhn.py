#!/usr/bin/env python3
"""Fetch SVHN (train/test .mat files; --extra for extra_32x32.mat): the same as ``minibnn fetch svhn``.

    python data_scripts/fetch_svhn.py [--data-dir DIR] [--from LOCAL_COPY]

All logic (checksums, atomic writes, progress) lives in :mod:`minibnn.data.fetch`.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout, installed or not
from minibnn.data.fetch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("svhn"))
