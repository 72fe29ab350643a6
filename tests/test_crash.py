"""A training process killed at a chosen moment resumes to the uninterrupted result.

Each case runs ``python -m minibnn train`` on the embedded sample with
``MINIBNN_TEST_KILL_AT`` (see :mod:`minibnn.rundir`) so that it dies (SIGKILL, or a
Ctrl-C) at one exact point, then ``--resume``-s it to the end.  The weights must be
bit-identical to an uninterrupted run's and ``metrics.jsonl`` equal field by field,
wall-clock fields aside.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from minibnn.checkpoint import load_checkpoint
from minibnn.rundir import KILL_ENV

# 400 images / 100 = 4 mini-batches an epoch, 3 epochs; dropout exercises the layers'
# random generators
ARGS = ["train", "--dataset", "sample", "--hidden", "32", "--depth", "1", "--epochs", "3",
        "--batch-size", "100", "--limit-train", "400", "--dropout-in", "0.1",
        "--dropout-hidden", "0.1", "--seed", "5", "--no-progress"]
WALL_CLOCK = ("seconds", "elapsed", "total_seconds")


def _run(out, kill_at=None, resume=False):
    env = dict(os.environ)
    env.pop(KILL_ENV, None)
    if kill_at:
        env[KILL_ENV] = kill_at
    argv = [sys.executable, "-m", "minibnn", *ARGS, "--out", str(out)]
    if resume:
        argv.append("--resume")
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def _rows(run):
    with open(run / "metrics.jsonl") as f:
        return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK} for line in f]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    proc = _run(out)
    assert proc.returncode == 0, proc.stderr
    return out


def _assert_same_run(run, reference):
    a, _, meta_a = load_checkpoint(reference / "last.npz")
    b, _, meta_b = load_checkpoint(run / "last.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert meta_b["epoch"] == meta_a["epoch"] == 3 and meta_b["batch"] == 0
    assert _rows(run) == _rows(reference)
    sa, sb = (json.load(open(r / "summary.json")) for r in (reference, run))
    for s in (sa, sb):
        s.pop("total_seconds")
    assert sa == sb and sb["finished"]
    assert not [n for n in os.listdir(run) if n.startswith(".tmp-")]


@pytest.mark.parametrize("kill_at, code, rows_left", [
    ("metrics_row:2", -signal.SIGKILL, 2),    # row of epoch 2 written, last.npz still epoch 1
    ("checkpoint:2", -signal.SIGKILL, 2),     # killed inside the write of last.npz (epoch 2)
    ("batch:6", -signal.SIGKILL, 1),          # mid-epoch 2, no checkpoint of that point
    ("batch:6:INT", 130, 1),                  # Ctrl-C mid-epoch 2: checkpoint at batch 2
])
def test_killed_run_resumes_to_the_same_result(tmp_path, reference, kill_at, code, rows_left):
    run = tmp_path / "run"
    first = _run(run, kill_at=kill_at)
    assert first.returncode == code, first.stderr
    assert len(_rows(run)) == rows_left
    if kill_at.startswith("checkpoint"):
        assert [n for n in os.listdir(run) if n.startswith(".tmp-")], "no temporary left behind"
    if kill_at.endswith(":INT"):
        meta = load_checkpoint(run / "last.npz")[2]
        assert (meta["epoch"], meta["batch"]) == (1, 2)
    second = _run(run, resume=True)
    assert second.returncode == 0, second.stderr
    _assert_same_run(run, reference)
