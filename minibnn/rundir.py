"""The run directory: every file a training run reads or writes, in one object.

    config.json     the run's TrainConfig
    metrics.jsonl   one JSON line per finished epoch
    best.npz        the model of the epoch with the lowest validation error
    last.npz        the resumable checkpoint (model, optimizer, run state, meta)
    summary.json    best validation error, test error at that epoch, total time

Crash safety: every file is replaced atomically (:mod:`minibnn.fileio`) except
``metrics.jsonl``, which is appended one whole line per ``write`` + ``fsync``.  A kill
between the row of epoch ``e`` and ``last.npz`` of epoch ``e`` leaves a row the
checkpoint does not cover; on resume :meth:`RunDir.trim_metrics` drops every row past
the checkpoint's epoch (and a torn last line), atomically, so the resumed run writes
the same rows an uninterrupted one does.  Temporaries of a killed writer (``.tmp-*``)
are removed when a run starts.

JSON files hold standard JSON: a non-finite number (no epoch yet, an empty split) is
written as ``null``.

Test hook: ``MINIBNN_TEST_KILL_AT=POINT:N`` kills the process with SIGKILL at the N-th
time it passes ``POINT`` (:func:`kill_point`; ``POINT:N:INT`` sends SIGINT instead, a
Ctrl-C at that moment); the points are ``batch`` (after an
optimizer step), ``metrics_row`` (after a row is appended, before ``best.npz`` /
``last.npz``) and ``checkpoint`` (``last.npz`` written to its temporary name, not yet
renamed).  ``tests/test_crash.py`` uses it.
"""

import json
import math
import os
import signal

import numpy as np

from .checkpoint import load_checkpoint, save_checkpoint
from .fileio import atomic_write_text, remove_stale_temporaries

__all__ = ["RunDir", "Checkpoint", "kill_point", "json_safe", "KILL_ENV", "KILL_POINTS"]

KILL_ENV = "MINIBNN_TEST_KILL_AT"
KILL_POINTS = ("batch", "metrics_row", "checkpoint")
_passes = {}


def kill_point(name):
    """SIGKILL this process at the N-th pass of point ``name`` if ``$MINIBNN_TEST_KILL_AT``
    is ``name:N`` (SIGINT if ``name:N:INT``); tests only, a no-op otherwise."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    point, _, rest = spec.partition(":")
    if point != name:
        return
    n, _, sig = rest.partition(":")
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(n or 1):
        os.kill(os.getpid(), signal.SIGINT if sig == "INT" else signal.SIGKILL)


def json_safe(obj):
    """``obj`` with every non-finite float replaced by ``None`` (JSON ``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _dumps(obj, **kw):
    return json.dumps(json_safe(obj), allow_nan=False, **kw)


class Checkpoint:
    """A checked ``last.npz``: ``model_state``, ``optim_state``, ``run_state`` (dicts
    name -> array), ``meta`` (dict) and ``path``.  ``epoch``/``batch``: the position
    (``batch`` > 0: inside epoch ``epoch``, ``run_state["perm"]`` the data order)."""

    #: meta keys every resumable checkpoint has, and their JSON types
    REQUIRED = {"config": dict, "epoch": int, "batch": int, "rng": dict, "best": dict,
                "elapsed": (int, float)}

    def __init__(self, path, model_state, optim_state, meta, run_state):
        self.path, self.meta = path, meta
        self.model_state, self.optim_state, self.run_state = model_state, optim_state, run_state
        for key, kind in self.REQUIRED.items():
            if key not in meta:
                raise ValueError(f"{path}: the checkpoint's meta has no {key!r} entry")
            if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
                raise ValueError(f"{path}: the checkpoint's meta entry {key!r} is "
                                 f"{type(meta[key]).__name__}, not a valid value")
        self.epoch, self.batch = meta["epoch"], meta["batch"]
        if self.epoch < 0 or self.batch < 0:
            raise ValueError(f"{path}: negative position (epoch {self.epoch}, batch {self.batch})")
        if "data" not in meta["rng"]:
            raise ValueError(f"{path}: the checkpoint's random state lacks the data order "
                             "generator ('rng' has no 'data')")
        for key in ("val_error", "test_error", "epoch"):
            if key not in meta["best"]:
                raise ValueError(f"{path}: the checkpoint's 'best' entry lacks {key!r}")
        if self.batch > 0:
            perm = run_state.get("perm")
            if perm is None:
                raise ValueError(f"{path}: stopped inside an epoch (batch {self.batch}) but "
                                 "holds no data order ('run/perm')")
            if perm.ndim != 1 or not np.issubdtype(perm.dtype, np.integer):
                raise ValueError(f"{path}: the data order 'run/perm' must be 1-D integers, got "
                                 f"{perm.dtype} {perm.shape}")

    def check_perm(self, n):
        """The stored data order, checked to be a permutation of ``range(n)``."""
        perm = self.run_state["perm"]
        if len(perm) != n or not np.array_equal(np.sort(perm), np.arange(n)):
            raise ValueError(f"{self.path}: the stored data order is not a permutation of the "
                             f"{n} training images (was the dataset changed?)")
        return perm


class RunDir:
    """The files of a run in directory ``path`` (nothing is created until :meth:`create`)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.config_path = os.path.join(self.path, "config.json")
        self.metrics_path = os.path.join(self.path, "metrics.jsonl")
        self.best_path = os.path.join(self.path, "best.npz")
        self.last_path = os.path.join(self.path, "last.npz")
        self.summary_path = os.path.join(self.path, "summary.json")

    def __repr__(self):
        return f"RunDir({self.path!r})"

    # -- the directory ---------------------------------------------------------
    def check(self):
        """``ValueError`` naming the directory if it cannot hold a run (a file, below a
        file, not writable); creates nothing."""
        p = self.path
        if os.path.exists(p) and not os.path.isdir(p):
            raise ValueError(f"run directory {p}: exists and is not a directory")
        parent = os.path.abspath(p)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise ValueError(f"run directory {p}: cannot be created, {parent} is a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"run directory {p}: {parent} is not writable (permission denied)")

    def create(self):
        """Make the directory and remove temporaries a killed writer left there."""
        self.check()
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"run directory {self.path}: cannot be created "
                             f"({exc.strerror or exc})") from None
        remove_stale_temporaries(self.path)

    def write_config(self, config_dict):
        atomic_write_text(self.config_path, _dumps(config_dict, indent=2) + "\n")

    # -- metrics.jsonl -----------------------------------------------------------
    def start_metrics(self):
        """A fresh run starts a fresh (empty) metrics file."""
        atomic_write_text(self.metrics_path, "")

    def append_metrics(self, row):
        """Append one epoch's row as one whole line (one write, then fsync)."""
        line = _dumps(row) + "\n"
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        kill_point("metrics_row")

    def read_metrics(self):
        """The rows of ``metrics.jsonl`` (a torn last line is skipped)."""
        return self._read_rows()[0]

    def _read_rows(self):
        try:
            with open(self.metrics_path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return [], False
        rows, dirty = [], False
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                if i == len(lines) - 1:       # torn last line of a killed writer
                    dirty = True
                    continue
                raise ValueError(f"{self.metrics_path}: line {i + 1} is not JSON") from None
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                raise ValueError(f"{self.metrics_path}: line {i + 1} is not an epoch row")
            rows.append(row)
        return rows, dirty

    def trim_metrics(self, epoch):
        """Keep the rows of epochs ``<= epoch`` (those the checkpoint covers), atomically;
        returns the number of rows dropped."""
        rows, dirty = self._read_rows()
        keep = [r for r in rows if r["epoch"] <= epoch]
        if dirty or len(keep) != len(rows):
            atomic_write_text(self.metrics_path, "".join(_dumps(r) + "\n" for r in keep))
        return len(rows) - len(keep)

    # -- checkpoints and summary -----------------------------------------------------
    def save_last(self, model_state, optim_state, meta, run_state):
        save_checkpoint(self.last_path, model_state, optim_state, json_safe(meta), run_state,
                        before_replace=lambda: kill_point("checkpoint"))

    def has_last(self):
        return os.path.isfile(self.last_path)

    def load_last(self):
        """The checked :class:`Checkpoint` in ``last.npz``; ``FileNotFoundError`` if none."""
        if not os.path.exists(self.last_path):
            raise FileNotFoundError(f"--resume: no checkpoint at {self.last_path}")
        model_state, optim_state, meta, run_state = load_checkpoint(self.last_path,
                                                                    with_run_state=True)
        return Checkpoint(self.last_path, model_state, optim_state, meta, run_state)

    def save_best(self, model):
        model.save(self.best_path)

    def write_summary(self, summary):
        atomic_write_text(self.summary_path, _dumps(summary, indent=2) + "\n")
