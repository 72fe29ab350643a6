"""Pickle-free checkpoints: ``.npz`` archives of plain arrays plus one JSON string.

A checkpoint holds three groups of arrays, ``model/<name>``, ``optim/<name>`` and
``run/<name>`` (the training loop's own state: data order, epoch accumulators), and
``meta``, a JSON object.  ``meta["arrays"]`` lists every array written with its shape and
dtype, so a file that lost an entry (or had one replaced by another shape) is refused
when read, naming the file and the entry.  Files are written atomically
(:mod:`minibnn.fileio`) and read with ``np.load(..., allow_pickle=False)``.

Version 1 files (no ``run/`` group, no manifest; the data order in ``optim/_run/perm``)
are still read.
"""

import json
import zipfile

import numpy as np

from .fileio import atomic_writer

CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)
GROUPS = ("model", "optim", "run")

#: what reading a damaged file can raise (numpy's zip/npy readers, JSON); turned into
#: ValueError naming the file
FILE_ERRORS = (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile,
               zipfile.LargeZipFile, UnicodeDecodeError)


def pack_checkpoint(model_state, optim_state, meta, run_state=None):
    """The archive entries (name -> array) of a checkpoint, ``meta`` with its manifest."""
    arrays = {}
    for group, state in zip(GROUPS, (model_state, optim_state, run_state or {})):
        arrays.update({f"{group}/{k}": np.asarray(v) for k, v in state.items()})
    manifest = {k: [list(v.shape), v.dtype.str] for k, v in arrays.items()}
    meta = dict(meta, checkpoint_version=CHECKPOINT_VERSION, arrays=manifest)
    arrays["meta"] = np.array(json.dumps(meta))
    return arrays


def save_checkpoint(path, model_state, optim_state, meta, run_state=None, before_replace=None):
    """Write a checkpoint atomically.

    ``model_state`` / ``optim_state`` / ``run_state``: dicts name -> array; ``meta``: a
    JSON-able dict.  ``before_replace()`` (tests) runs after the temporary file is written
    and before it replaces ``path``.
    """
    arrays = pack_checkpoint(model_state, optim_state, meta, run_state)
    # Stored, not deflated, and streamed into the file: latent weights and Adam moments
    # barely compress, and deflating a 3x4096 MLP's ~450 MB took ~13 s per epoch on the
    # 2-core machine (a quarter of the epoch); a BytesIO copy would also double the peak.
    with atomic_writer(path, "wb") as f:
        np.savez(f, **arrays)
        if before_replace is not None:
            f.flush()
            before_replace()


def load_checkpoint(path, with_run_state=False):
    """Inverse of :func:`save_checkpoint`: ``(model_state, optim_state, meta)``, plus
    ``run_state`` last when ``with_run_state``.

    ``FileNotFoundError`` for a missing file; ``ValueError`` naming the file for anything
    else wrong with it (not an archive, meta not a JSON object, unknown version, an entry
    of the manifest missing or of another shape or dtype).
    """
    path_s = str(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path_s}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path_s}: is a directory, not a minibnn checkpoint") from None
    except FILE_ERRORS as exc:
        raise ValueError(f"{path_s}: not a readable minibnn checkpoint "
                         f"({type(exc).__name__}: {exc})") from exc
    if "meta" not in files:
        raise ValueError(f"{path_s}: not a minibnn checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(str(files.pop("meta")))
    except ValueError as exc:
        raise ValueError(f"{path_s}: the checkpoint's meta is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path_s}: the checkpoint's meta is not a JSON object")
    version = meta.get("checkpoint_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{path_s}: checkpoint version {version!r}, this minibnn reads "
                         f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    manifest = meta.get("arrays")
    if version >= 2:
        if not isinstance(manifest, dict):
            raise ValueError(f"{path_s}: the checkpoint's meta has no array manifest ('arrays')")
        missing = sorted(k for k in manifest if k not in files)
        if missing:
            raise ValueError(f"{path_s}: the checkpoint lacks {len(missing)} entr"
                             f"{'y' if len(missing) == 1 else 'ies'} it lists: "
                             f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
        for k, v in files.items():
            want = manifest.get(k)
            if want is None:
                raise ValueError(f"{path_s}: entry {k!r} is not in the checkpoint's manifest")
            try:
                shape, dtype = tuple(want[0]), np.dtype(want[1])
            except (TypeError, ValueError, IndexError):
                raise ValueError(f"{path_s}: malformed manifest entry for {k!r}") from None
            if v.shape != shape or v.dtype != dtype:
                raise ValueError(f"{path_s}: entry {k!r} is {v.dtype} {v.shape}, the checkpoint "
                                 f"lists {dtype} {shape}")
    groups = {g: {} for g in GROUPS}
    for k, v in files.items():
        group, _, name = k.partition("/")
        if group not in groups or not name:
            raise ValueError(f"{path_s}: unexpected entry {k!r}")
        groups[group][name] = v
    if version == 1:  # the data order lived among the optimizer's entries
        for k in [k for k in groups["optim"] if k.startswith("_run/")]:
            groups["run"][k[len("_run/"):]] = groups["optim"].pop(k)
    out = (groups["model"], groups["optim"], meta)
    return out + (groups["run"],) if with_run_state else out
