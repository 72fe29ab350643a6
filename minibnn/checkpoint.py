"""Crash-safe files: atomic writes and pickle-free checkpoints.

Every file minibnn writes goes to a temporary name in the target directory and is then
``os.replace``-d over the final name, so a crash leaves either the old file or the new
one, never half a file.  Checkpoints are ``.npz`` archives of plain arrays plus one JSON
string (``meta``); they are read with ``np.load(..., allow_pickle=False)``.
"""

import io
import json
import os
import tempfile

import numpy as np

CHECKPOINT_VERSION = 1


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` through a temporary file + rename."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def save_npz(path, arrays):
    """Save a dict of arrays as a compressed .npz, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def save_checkpoint(path, model_state, optim_state, meta):
    """``model_state`` / ``optim_state``: dicts name -> array; ``meta``: JSON-able dict."""
    arrays = {f"model/{k}": np.asarray(v) for k, v in model_state.items()}
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in optim_state.items()})
    meta = dict(meta, checkpoint_version=CHECKPOINT_VERSION)
    arrays["meta"] = np.array(json.dumps(meta))
    save_npz(path, arrays)


def load_checkpoint(path):
    """Inverse of :func:`save_checkpoint`: returns ``(model_state, optim_state, meta)``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: not a readable minibnn checkpoint ({type(exc).__name__}: {exc})") from exc
    if "meta" not in files:
        raise ValueError(f"{path}: not a minibnn checkpoint (no 'meta' entry)")
    meta = json.loads(str(files.pop("meta")))
    version = meta.get("checkpoint_version")
    if version != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {version}, this minibnn reads version {CHECKPOINT_VERSION}")
    model_state = {k[len("model/"):]: v for k, v in files.items() if k.startswith("model/")}
    optim_state = {k[len("optim/"):]: v for k, v in files.items() if k.startswith("optim/")}
    return model_state, optim_state, meta
