"""Crash-safe file writing: the one home of atomic writes.

Tier 0: imports nothing from minibnn.  Every file minibnn writes goes to a temporary
name (``.tmp-*``) in the target directory, is flushed and fsync'd, then ``os.replace``-d
over the final name, so a crash (even ``kill -9``) leaves either the old file or the new
one, never half a file.  New files get the usual mode ``0666 & ~umask`` (``mkstemp``
alone would create them 0600).  :func:`remove_stale_temporaries` deletes what a killed
writer left behind.
"""

import contextlib
import os
import tempfile

__all__ = ["TMP_PREFIX", "atomic_write_bytes", "atomic_write_text", "atomic_writer",
           "remove_stale_temporaries"]

TMP_PREFIX = ".tmp-"


def _umask():
    # os.umask can only be read by setting it; set it back at once
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_target(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, expected a file path")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"{path}: cannot create a file there "
                                 f"({directory} or a folder above it is a file)") from None
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"{path}: {directory} is not a directory")
    return path, directory


@contextlib.contextmanager
def atomic_writer(path, mode="wb"):
    """Context manager yielding a file object; on success it becomes ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path, directory = _check_target(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX,
                               suffix="-" + os.path.basename(path))
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` through a temporary file + rename."""
    with atomic_writer(path, "wb") as f:
        f.write(data)


def atomic_write_text(path, text):
    """Write ``text`` (str, UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(directory):
    """Delete ``.tmp-*`` files a killed writer left in ``directory``; returns their names.

    Call it only when no other process writes there (e.g. at the start of a run).
    """
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in sorted(names):
        if name.startswith(TMP_PREFIX):
            p = os.path.join(directory, name)
            if os.path.isfile(p):
                with contextlib.suppress(OSError):
                    os.unlink(p)
                    removed.append(name)
    return removed
