"""Fetching datasets into the data directory: download or import a local copy.

Shared by ``data_scripts/fetch_{mnist,cifar10,svhn}.py``. Every file is
written to a temporary name in its target folder, verified, and only then
``os.replace``'d into place, so an interrupted or failed fetch never leaves a
partial file under a real name. Downloads use :mod:`urllib` with a short
timeout and fail fast with a hint to use ``--from DIR`` or ``MINIBNN_DATA``.

What is verified: MNIST files by the SHA-256 of their uncompressed bytes,
CIFAR-10 batches by SHA-256, SVHN files by their published MD5.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
from pathlib import Path
from typing import BinaryIO, Callable, Iterator
from urllib.request import Request, urlopen

from .errors import DataError
from .paths import ENV_VAR, SUBDIRS, data_dir as resolve_data_dir
from .readers import CIFAR10_FILES, MNIST_FILES, SVHN_FILES, read_cifar10_meta

__all__ = [
    "FetchError",
    "DEFAULT_TIMEOUT",
    "MNIST_MIRRORS",
    "CIFAR10_URL",
    "SVHN_URL",
    "sha256_file",
    "content_sha256",
    "md5_file",
    "atomic_output",
    "atomic_copy",
    "download",
    "fetch_mnist",
    "fetch_cifar10",
    "fetch_svhn",
    "main",
]

DEFAULT_TIMEOUT = 15.0  # seconds per network operation

# Tried in order; yann.lecun.com itself has refused anonymous downloads at times.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"

_CHUNK = 1 << 20
_USER_AGENT = "minibnn-fetch/0.1 (+python urllib)"

Log = Callable[[str], None]


class FetchError(RuntimeError):
    """A download or import failed (network, HTTP status, bad checksum, ...)."""


class _NetworkError(FetchError):
    """Connection-level failure: the next mirror would most likely fail too."""


# ---------------------------------------------------------------- hashing

def _digest_stream(f: BinaryIO, algo: str) -> str:
    h = hashlib.new(algo)
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of the file's bytes as stored."""
    with open(path, "rb") as f:
        return _digest_stream(f, "sha256")


def md5_file(path: str | os.PathLike[str]) -> str:
    """MD5 (hex) of the file's bytes as stored (SVHN only publishes MD5)."""
    with open(path, "rb") as f:
        return _digest_stream(f, "md5")


def content_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the *uncompressed* content: gunzipped when the file is gzip.

    Raises
    ------
    DataError
        Corrupt or truncated gzip stream.
    """
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        if not gz:
            return _digest_stream(raw, "sha256")
        try:
            with gzip.GzipFile(fileobj=raw) as f:
                return _digest_stream(f, "sha256")
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: corrupt or truncated gzip stream: {e}") from e


# ---------------------------------------------------------------- atomic writes

@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike[str],
                  verify: Callable[[Path], None] | None = None) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``dest``; on success, move it onto ``dest``.

    The temporary file lives in ``dest``'s folder so that ``os.replace`` is an
    atomic rename on the same file system. If the ``with`` body or ``verify``
    raises, the temporary file is deleted and ``dest`` is left untouched.

    Parameters
    ----------
    dest : str or os.PathLike
        Final path; its folder is created if needed.
    verify : callable, optional
        Called with the temporary path after the file is closed and before
        the rename; raise to reject the content.

    Yields
    ------
    BinaryIO
        The open temporary file (binary, write mode).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part",
                                    dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; data files should be readable
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_copy(src: BinaryIO | str | os.PathLike[str], dest: str | os.PathLike[str],
                verify: Callable[[Path], None] | None = None) -> Path:
    """Copy a file (path or open binary stream) to ``dest`` atomically.

    See :func:`atomic_output` for ``verify``. Returns ``dest`` as a Path.
    """
    with contextlib.ExitStack() as stack:
        if isinstance(src, (str, os.PathLike)):
            src = stack.enter_context(open(src, "rb"))
        with atomic_output(dest, verify) as out:
            shutil.copyfileobj(src, out, _CHUNK)
    return Path(dest)


# ---------------------------------------------------------------- download

def download(url: str, dest: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT,
             verify: Callable[[Path], None] | None = None, log: Log | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically.

    Parameters
    ----------
    url : str
    dest : str or os.PathLike
    timeout : float
        Seconds allowed for connecting and for each read.
    verify : callable, optional
        See :func:`atomic_output`.
    log : callable, optional
        Progress messages.

    Raises
    ------
    FetchError
        HTTP error status, network failure or timeout (no file is left).
    DataError
        Raised by ``verify`` (no file is left).
    """
    if log:
        log(f"downloading {url}")
    dest = Path(dest)
    # Created before connecting so that an unwritable target is reported as
    # such rather than as a network error.
    dest.parent.mkdir(parents=True, exist_ok=True)
    req = Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urlopen(req, timeout=timeout) as resp:
            atomic_copy(resp, dest, verify)
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError, EOFError) as e:
        # URLError wraps DNS/connection failures; a read timeout surfaces as
        # TimeoutError (an OSError); IncompleteRead as an HTTPException.
        reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
        raise _NetworkError(f"{url}: network error: {reason}") from e
    return Path(dest)


# ---------------------------------------------------------------- per dataset

def _sha_verifier(expected: str, name: str, content: bool) -> Callable[[Path], None]:
    def verify(p: Path) -> None:
        got = content_sha256(p) if content else sha256_file(p)
        if got != expected:
            raise DataError(f"{name}: SHA-256 {'of the uncompressed content ' if content else ''}"
                            f"is {got}, expected {expected}; the copy is corrupt or "
                            f"not the original file")
    return verify


def _md5_verifier(expected: str, name: str) -> Callable[[Path], None]:
    def verify(p: Path) -> None:
        got = md5_file(p)
        if got != expected:
            raise DataError(f"{name}: MD5 is {got}, expected {expected}; the copy is "
                            f"corrupt or not the original file")
    return verify


def _already_ok(path: Path, verify: Callable[[Path], None], log: Log) -> bool:
    if not path.is_file():
        return False
    try:
        verify(path)
    except DataError as e:
        log(f"{path}: present but fails verification, replacing it ({e})")
        return False
    log(f"{path}: already present, checksum OK")
    return True


def _source_dirs(source: Path, dataset: str) -> list[Path]:
    return [source / SUBDIRS[dataset], source]


def _find_in(dirs: list[Path], names: list[str]) -> Path | None:
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


def _missing_source(name: str, dirs: list[Path]) -> FetchError:
    return FetchError(f"--from: {name} not found in {' or '.join(map(str, dirs))}")


def fetch_mnist(root: str | os.PathLike[str], source: str | os.PathLike[str] | None = None,
                *, timeout: float = DEFAULT_TIMEOUT, log: Log = print) -> list[Path]:
    """Put the four MNIST files into ``<root>/mnist/``, verified.

    Parameters
    ----------
    root : str or os.PathLike
        Data directory.
    source : str or os.PathLike, optional
        Local copy to import from (a folder with the files, plain or ``.gz``,
        directly or in ``mnist/``); files are copied in the form found.
        Without it the ``.gz`` files are downloaded from :data:`MNIST_MIRRORS`.
    timeout : float
        Network timeout in seconds.
    log : callable
        Progress messages.

    Returns
    -------
    list of pathlib.Path
        The four files in place.

    Raises
    ------
    FetchError, DataError
    """
    dest_dir = Path(root) / SUBDIRS["mnist"]
    done = []
    for name, (_, sha) in MNIST_FILES.items():
        verify = _sha_verifier(sha, name, content=True)
        existing = [dest_dir / name, dest_dir / (name + ".gz")]
        ok = next((p for p in existing if _already_ok(p, verify, log)), None)
        if ok is not None:
            done.append(ok)
            continue
        if source is not None:
            dirs = _source_dirs(Path(source), "mnist")
            src = _find_in(dirs, [name, name + ".gz"])
            if src is None:
                raise _missing_source(f"{name} (or {name}.gz)", dirs)
            log(f"importing {src}")
            target = atomic_copy(src, dest_dir / src.name, verify)
        else:
            target = _download_mirrors(name + ".gz", dest_dir / (name + ".gz"),
                                       verify, timeout, log)
        # A corrupt copy under the other name would shadow or confuse the
        # loader (it prefers the uncompressed file), so it goes.
        for p in existing:
            if p != target and p.is_file():
                log(f"removing corrupt {p}")
                p.unlink()
        done.append(target)
    return done


def _download_mirrors(fname: str, dest: Path, verify: Callable[[Path], None],
                      timeout: float, log: Log) -> Path:
    errors = []
    for base in MNIST_MIRRORS:
        try:
            return download(base + fname, dest, timeout=timeout, verify=verify, log=log)
        except _NetworkError:
            # The network itself is down or blocked: more mirrors would only
            # multiply the wait before the user gets the --from hint.
            raise
        except (FetchError, DataError) as e:
            log(f"  failed: {e}")
            errors.append(str(e))
    raise FetchError(f"all MNIST mirrors failed for {fname}: " + "; ".join(errors))


def fetch_cifar10(root: str | os.PathLike[str], source: str | os.PathLike[str] | None = None,
                  *, timeout: float = DEFAULT_TIMEOUT, log: Log = print) -> list[Path]:
    """Put the CIFAR-10 binary batches into ``<root>/cifar-10-batches-bin/``, verified.

    Parameters
    ----------
    root : str or os.PathLike
        Data directory.
    source : str or os.PathLike, optional
        Local copy: a folder with the ``.bin`` files (directly or in
        ``cifar-10-batches-bin/``), a folder holding
        ``cifar-10-binary.tar.gz``, or that archive itself. Without it the
        archive is downloaded from :data:`CIFAR10_URL`.
    timeout, log
        As in :func:`fetch_mnist`.

    Returns
    -------
    list of pathlib.Path
        The six batch files (and ``batches.meta.txt`` when available).
    """
    dest_dir = Path(root) / SUBDIRS["cifar10"]
    wanted = {name: _sha_verifier(sha, name, content=False)
              for name, (_, sha) in CIFAR10_FILES.items()}
    todo = {n: v for n, v in wanted.items() if not _already_ok(dest_dir / n, v, log)}
    meta_ok = (dest_dir / "batches.meta.txt").is_file()
    if not todo and meta_ok:
        return [dest_dir / n for n in wanted] + [dest_dir / "batches.meta.txt"]

    archive: Path | None = None
    tmp_archive: Path | None = None
    if source is not None:
        src = Path(source)
        if src.is_file():
            archive = src
        else:
            dirs = _source_dirs(src, "cifar10")
            if _find_in(dirs, list(todo) or ["data_batch_1.bin"]) is None:
                archive = _find_in(dirs, ["cifar-10-binary.tar.gz"])
                if archive is None:
                    raise _missing_source("data_batch_1.bin (or cifar-10-binary.tar.gz)",
                                          dirs)
            else:
                for name, verify in todo.items():
                    p = _find_in(dirs, [name])
                    if p is None:
                        raise _missing_source(name, dirs)
                    log(f"importing {p}")
                    atomic_copy(p, dest_dir / name, verify)
                meta = _find_in(dirs, ["batches.meta.txt"])
                if meta is not None and not meta_ok:
                    atomic_copy(meta, dest_dir / "batches.meta.txt", _meta_verifier)
                todo = {}
    else:
        dest_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".cifar-10-binary.", suffix=".tar.gz.part",
                                    dir=dest_dir)
        os.close(fd)
        tmp_archive = archive = Path(name)
        try:
            download(CIFAR10_URL, archive, timeout=timeout, log=log)
        except BaseException:
            archive.unlink(missing_ok=True)
            raise

    try:
        if archive is not None:
            _extract_cifar(archive, dest_dir, todo, need_meta=not meta_ok, log=log)
    finally:
        if tmp_archive is not None:
            tmp_archive.unlink(missing_ok=True)
    out = [dest_dir / n for n in wanted]
    if (dest_dir / "batches.meta.txt").is_file():
        out.append(dest_dir / "batches.meta.txt")
    return out


def _meta_verifier(p: Path) -> None:
    read_cifar10_meta(p)  # raises DataError unless 10 class names


def _extract_cifar(archive: Path, dest_dir: Path, todo: dict[str, Callable[[Path], None]],
                   *, need_meta: bool, log: Log) -> None:
    log(f"extracting {archive}")
    found = set()
    try:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf:
                # Only known base names are written, so member paths such as
                # "../x" or absolute names can never escape dest_dir.
                base = os.path.basename(member.name)
                if not member.isfile():
                    continue
                if base in todo:
                    verify = todo[base]
                elif base == "batches.meta.txt" and need_meta:
                    verify = _meta_verifier
                else:
                    continue
                f = tf.extractfile(member)
                assert f is not None  # isfile() members always have content
                with f:
                    atomic_copy(f, dest_dir / base, verify)
                found.add(base)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{archive}: cannot read the archive: {e}") from e
    missing = sorted(set(todo) - found)
    if missing:
        raise DataError(f"{archive}: archive lacks {', '.join(missing)}")


def fetch_svhn(root: str | os.PathLike[str], source: str | os.PathLike[str] | None = None,
               *, extra: bool = False, timeout: float = DEFAULT_TIMEOUT,
               log: Log = print) -> list[Path]:
    """Put SVHN's ``train_32x32.mat`` and ``test_32x32.mat`` (+ extra) into ``<root>/svhn/``.

    Parameters
    ----------
    root : str or os.PathLike
        Data directory.
    source : str or os.PathLike, optional
        Local copy: folder with the ``.mat`` files (directly or in ``svhn/``).
        Without it they are downloaded from :data:`SVHN_URL`.
    extra : bool, default False
        Also fetch ``extra_32x32.mat`` (1.3 GB).
    timeout, log
        As in :func:`fetch_mnist`.
    """
    dest_dir = Path(root) / SUBDIRS["svhn"]
    names = ["train_32x32.mat", "test_32x32.mat"] + (["extra_32x32.mat"] if extra else [])
    done = []
    for name in names:
        verify = _md5_verifier(SVHN_FILES[name][1], name)
        dest = dest_dir / name
        if not _already_ok(dest, verify, log):
            if source is not None:
                dirs = _source_dirs(Path(source), "svhn")
                src = _find_in(dirs, [name])
                if src is None:
                    raise _missing_source(name, dirs)
                log(f"importing {src}")
                atomic_copy(src, dest, verify)
            else:
                download(SVHN_URL + name, dest, timeout=timeout, verify=verify, log=log)
        done.append(dest)
    return done


# ---------------------------------------------------------------- CLI

_FETCHERS = {"mnist": fetch_mnist, "cifar10": fetch_cifar10, "svhn": fetch_svhn}


def main(dataset: str, argv: list[str] | None = None) -> int:
    """Command line of ``data_scripts/fetch_<dataset>.py``.

    Parameters
    ----------
    dataset : {"mnist", "cifar10", "svhn"}
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 on failure (the reason is printed to stderr).
    """
    script = f"data_scripts/fetch_{dataset}.py"
    ap = argparse.ArgumentParser(
        prog=script,
        description=f"Fetch {dataset} into DATA_DIR/{SUBDIRS[dataset]}/ "
                    f"(downloading, or importing a local copy with --from), "
                    f"verifying checksums; files are written atomically.")
    ap.add_argument("--data-dir", default=None,
                    help=f"data directory (default: ${ENV_VAR}, else "
                         f"$XDG_DATA_HOME/minibnn or ~/.minibnn/data); now "
                         f"{resolve_data_dir()}")
    ap.add_argument("--from", dest="source", metavar="DIR", default=None,
                    help="import from a local copy instead of downloading")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                    help="network timeout in seconds (default %(default)s)")
    if dataset == "svhn":
        ap.add_argument("--extra", action="store_true",
                        help="also fetch extra_32x32.mat (1.3 GB)")
    args = ap.parse_args(argv)
    root = resolve_data_dir(args.data_dir)
    kwargs = {"extra": args.extra} if dataset == "svhn" else {}

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        files = _FETCHERS[dataset](root, args.source, timeout=args.timeout, log=log,
                                   **kwargs)
    except (FetchError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        if args.source is None:
            print(f"The download failed. If you have a copy of the files, import it "
                  f"with `python {script} --data-dir {root} --from DIR`, or point "
                  f"{ENV_VAR} (or --data-dir) at a folder that already holds "
                  f"{SUBDIRS[dataset]}/.", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. the data directory is not writable
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{dataset}: {len(files)} files ready in {root / SUBDIRS[dataset]}")
    return 0
