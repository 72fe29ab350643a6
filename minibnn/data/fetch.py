"""Fetching datasets into the data directory: download or import a local copy.

:func:`fetch_dataset` is the one entry point: ``minibnn fetch NAME [--from COPY]``,
``minibnn train``'s automatic download (:func:`minibnn.data.load_dataset` with
``download=True``) and ``data_scripts/fetch_*.py`` (through :func:`main`) all
call it. Every file is written through :func:`minibnn.fileio.atomic_writer`
(a temporary name in the target folder, flushed, then renamed), and verified
*before* the rename, so an interrupted or failed fetch never leaves a partial
or corrupt file under a real name.

Downloads use :mod:`urllib` (no extra dependency): name resolution and
connecting must succeed within :data:`DEFAULT_TIMEOUT` seconds, so an offline
machine fails within seconds with a hint to use ``--from COPY``; once
connected, each read may take :data:`READ_TIMEOUT` seconds. A progress bar is
drawn on stderr (redrawn in place on a terminal, one line per file
otherwise). ``file://`` URLs work too, which is how the tests download
without a network.

What is verified: MNIST files by the SHA-256 of their uncompressed bytes,
Fashion-MNIST ``.gz`` files by SHA-256 and MD5 of the file as distributed,
CIFAR-10 batches by SHA-256, SVHN files by their published MD5 (see
:mod:`minibnn.data.readers` for the tables).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import http.client
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator
from urllib.request import Request

from ..fileio import TMP_PREFIX, atomic_writer
from .catalog import DATASETS, canonical_name
from .errors import DataError
from .paths import ENV_VAR, SUBDIRS, data_dir as resolve_data_dir
from .readers import (
    CIFAR10_FILES,
    FASHION_MNIST_FILES,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    MNIST_FILES,
    SVHN_FILES,
    parse_cifar10_meta,
)

__all__ = [
    "FetchError",
    "DEFAULT_TIMEOUT",
    "READ_TIMEOUT",
    "FETCHABLE",
    "MNIST_MIRRORS",
    "FASHION_MNIST_MIRRORS",
    "CIFAR10_URL",
    "SVHN_URL",
    "sha256_file",
    "content_sha256",
    "md5_file",
    "atomic_output",
    "atomic_copy",
    "urlopen",
    "download",
    "fetch_dataset",
    "fetch_mnist",
    "fetch_fashion_mnist",
    "fetch_cifar10",
    "fetch_svhn",
    "main",
]

#: Seconds allowed for resolving the host name and connecting (TLS handshake
#: included). Short, so that an offline machine gets its answer quickly.
DEFAULT_TIMEOUT = 10.0
#: Seconds allowed for each read once connected (a slow server is not an offline one).
READ_TIMEOUT = 60.0

# Tried in order; yann.lecun.com itself has refused anonymous downloads at times.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# Zalando's own locations first (GitHub, then the S3 bucket the README names),
# then the copy Keras downloads; every file is checked against the same digests.
FASHION_MNIST_MIRRORS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"

#: Names :func:`fetch_dataset` accepts (``sample`` ships inside the package).
FETCHABLE = tuple(n for n, info in DATASETS.items() if info.fetchable)

_CHUNK = 1 << 20
_USER_AGENT = "minibnn-fetch/0.2 (+python urllib)"

Log = Callable[[str], None]
#: A verifier reads a candidate file (binary, seekable, positioned at 0) and
#: raises DataError to reject it.
Verify = Callable[[BinaryIO], None]


class FetchError(RuntimeError):
    """A download or import failed (network, HTTP status, missing local copy, ...)."""


class _NetworkError(FetchError):
    """Connection-level failure: the next mirror would most likely fail too.

    ``detail``: the failure without advice (for callers that give their own).
    """

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = message if detail is None else detail


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


def _content_sha256_stream(raw: BinaryIO, where: object) -> str:
    raw.seek(0)
    gz = raw.read(2) == b"\x1f\x8b"
    raw.seek(0)
    if not gz:
        return _digest_stream(raw, "sha256")
    try:
        with gzip.GzipFile(fileobj=raw) as f:  # closing it leaves ``raw`` open
            return _digest_stream(f, "sha256")
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{where}: corrupt or truncated gzip stream: {e}") from e


def content_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the *uncompressed* content: gunzipped when the file is gzip.

    Raises
    ------
    DataError
        Corrupt or truncated gzip stream.
    """
    with open(path, "rb") as raw:
        return _content_sha256_stream(raw, path)


# ---------------------------------------------------------------- atomic writes

@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike[str],
                  verify: Verify | None = None) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``dest``; on success, move it onto ``dest``.

    The writing is :func:`minibnn.fileio.atomic_writer` (temporary name in
    ``dest``'s folder, fsync, rename; mode ``0666 & ~umask``). If the ``with``
    body or ``verify`` raises, the temporary file is deleted and ``dest`` is
    left untouched.

    Parameters
    ----------
    dest : str or os.PathLike
        Final path; its folder is created if needed.
    verify : callable, optional
        Called after the body with the temporary file (binary, readable,
        positioned at 0) before the rename; raise to reject the content.

    Yields
    ------
    BinaryIO
        The open temporary file (binary, read/write).
    """
    with atomic_writer(dest, "w+b") as f:
        yield f
        if verify is not None:
            f.flush()
            f.seek(0)
            verify(f)


def atomic_copy(src: BinaryIO | str | os.PathLike[str], dest: str | os.PathLike[str],
                verify: Verify | None = None) -> Path:
    """Copy a file (path or open binary stream) to ``dest`` atomically.

    See :func:`atomic_output` for ``verify``. Returns ``dest`` as a Path.
    """
    with contextlib.ExitStack() as stack:
        if isinstance(src, (str, os.PathLike)):
            src = stack.enter_context(open(src, "rb"))
        with atomic_output(dest, verify) as out:
            shutil.copyfileobj(src, out, _CHUNK)
    return Path(dest)


# ---------------------------------------------------------------- progress

class _Bar:
    """Download progress on a stream (stderr): redrawn in place on a terminal, else
    one line when the file is complete (logs and CI output stay readable)."""

    def __init__(self, label: str, total: int | None, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.label, self.total, self.done, self.width = label, total, 0, 0
        self.t0 = self.last = time.monotonic()
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False

    def _line(self) -> str:
        # padded to the longest line drawn so far, so a redraw leaves no remnants
        line = self._text()
        self.width = max(self.width, len(line))
        return line.ljust(self.width)

    def _text(self) -> str:
        mb = self.done / 1e6
        rate = mb / max(time.monotonic() - self.t0, 1e-6)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            filled = int(24 * frac)
            return (f"{self.label} [{'#' * filled}{'.' * (24 - filled)}] {100 * frac:3.0f}% "
                    f"{mb:.1f}/{self.total / 1e6:.1f} MB {rate:.1f} MB/s")
        return f"{self.label} {mb:.1f} MB {rate:.1f} MB/s"

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and now - self.last >= 0.1:
            self.last = now
            self.stream.write("\r" + self._line())
            self.stream.flush()

    def close(self, ok: bool) -> None:
        if ok:
            self.stream.write(("\r" if self.tty else "") + self._line() + "\n")
        elif self.tty:
            self.stream.write("\n")  # the error message gets a line of its own
        self.stream.flush()


# ---------------------------------------------------------------- download

class _ConnectThenRead:
    """Mixin: connect under the (short) connect timeout, then read under READ_TIMEOUT."""

    def connect(self):
        super().connect()
        self.sock.settimeout(max(READ_TIMEOUT, self.timeout or 0))


class _HTTPConnection(_ConnectThenRead, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_ConnectThenRead, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_HTTPSConnection, req, context=self._context)


_OPENER = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)


def _resolve_within(host: str, port: int, timeout: float) -> None:
    """Resolve ``host`` or fail after ``timeout`` s (getaddrinfo itself has no timeout,
    and a machine without a reachable DNS server can block in it for a long time)."""
    result: list[BaseException | None] = []

    def work():
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            result.append(None)
        except BaseException as e:  # reported to the caller below
            result.append(e)
    t = threading.Thread(target=work, daemon=True, name="minibnn-resolve")
    t.start()
    t.join(timeout)
    if not result:
        raise urllib.error.URLError(f"could not resolve {host} within {timeout:g} s")
    if result[0] is not None:
        raise urllib.error.URLError(result[0])


def urlopen(req: Request, timeout: float = DEFAULT_TIMEOUT):
    """Open ``req`` with ``timeout`` bounding name resolution and connecting.

    Like :func:`urllib.request.urlopen` (http, https, file URLs; proxies from
    the environment), except that once connected each read may take
    :data:`READ_TIMEOUT` seconds.
    """
    parts = urllib.parse.urlsplit(req.full_url)
    if parts.scheme in ("http", "https") and parts.hostname and not (
            urllib.request.getproxies().get(parts.scheme)
            and not urllib.request.proxy_bypass(parts.hostname)):
        # Behind a proxy the proxy resolves the name; only a direct connection
        # needs our own resolution under the deadline.
        _resolve_within(parts.hostname, parts.port or (443 if parts.scheme == "https"
                                                       else 80), timeout)
    return _OPENER.open(req, timeout=timeout)


def _content_length(resp) -> int | None:
    headers = getattr(resp, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def download(url: str, dest: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT,
             verify: Verify | None = None, log: Log | None = None,
             progress: bool = False) -> Path:
    """Download ``url`` to ``dest`` atomically.

    Parameters
    ----------
    url : str
        http, https or file URL.
    dest : str or os.PathLike
    timeout : float
        Seconds allowed for resolving and connecting (reads get
        :data:`READ_TIMEOUT`).
    verify : callable, optional
        See :func:`atomic_output`.
    log : callable, optional
        Progress messages.
    progress : bool, default False
        Draw a progress bar on stderr.

    Raises
    ------
    FetchError
        HTTP error status, network failure, timeout or a short body (no file
        is left).
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
        resp = urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError, EOFError) as e:
        # URLError wraps DNS/connection failures; a timeout surfaces as
        # TimeoutError (an OSError).
        reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
        raise _NetworkError(f"{url}: network error: {reason}") from e
    total = _content_length(resp)
    bar = _Bar(dest.name, total) if progress else None
    ok = False
    try:
        with resp, atomic_output(dest, verify) as out:
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except (http.client.HTTPException, OSError, EOFError) as e:
                    # a read timeout is a TimeoutError, a cut connection an
                    # IncompleteRead (HTTPException)
                    raise _NetworkError(f"{url}: network error while reading: "
                                        f"{type(e).__name__}: {e}") from e
                if not chunk:
                    break
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            got = out.tell()
            if total is not None and got != total:
                raise _NetworkError(f"{url}: the connection ended after {got} of "
                                    f"{total} bytes")
        ok = True
    finally:
        if bar is not None:
            bar.close(ok)
    return dest


# ---------------------------------------------------------------- verifiers

def _sha_verifier(expected: str, name: str, content: bool) -> Verify:
    def verify(f: BinaryIO) -> None:
        got = _content_sha256_stream(f, name) if content else _digest_stream(f, "sha256")
        if got != expected:
            raise DataError(f"{name}: SHA-256 {'of the uncompressed content ' if content else ''}"
                            f"is {got}, expected {expected}; the copy is corrupt or "
                            f"not the original file")
    return verify


def _md5_verifier(expected: str, name: str) -> Verify:
    def verify(f: BinaryIO) -> None:
        got = _digest_stream(f, "md5")
        if got != expected:
            raise DataError(f"{name}: MD5 is {got}, expected {expected}; the copy is "
                            f"corrupt or not the original file")
    return verify


def _fashion_gz_verifier(name: str) -> Verify:
    size, sha, md5 = FASHION_MNIST_FILES[name]

    def verify(f: BinaryIO) -> None:
        h_sha, h_md5, n = hashlib.sha256(), hashlib.md5(), 0
        while chunk := f.read(_CHUNK):
            h_sha.update(chunk)
            h_md5.update(chunk)
            n += len(chunk)
        if n != size and size:
            raise DataError(f"{name}: {n} bytes, the published file has {size}; the "
                            f"copy is corrupt or not the original file")
        for algo, got, want in (("SHA-256", h_sha.hexdigest(), sha),
                                ("MD5", h_md5.hexdigest(), md5)):
            if got != want:
                raise DataError(f"{name}: {algo} is {got}, expected {want}; the copy is "
                                f"corrupt or not the original file")
    return verify


def _idx_plain_verifier(name: str, magic: int, dims: tuple[int, ...]) -> Verify:
    """Structure-only check of an uncompressed IDX file (no published checksum exists
    for uncompressed Fashion-MNIST): magic, dimensions, exact length, label range."""
    def verify(f: BinaryIO) -> None:
        head = f.read(4 + 4 * len(dims))
        want = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
        if head != want:
            raise DataError(f"{name}: not the expected IDX header (magic {magic}, "
                            f"dimensions {'x'.join(map(str, dims))})")
        count = 1
        for d in dims:
            count *= d
        body = 0
        top = 0
        while chunk := f.read(_CHUNK):
            body += len(chunk)
            if magic == IDX_LABELS_MAGIC:
                top = max(top, max(chunk))
        if body != count:
            raise DataError(f"{name}: {body} data bytes, the header says {count}")
        if top > 9:
            raise DataError(f"{name}: label {top} is outside 0..9")
    return verify


def _already_ok(path: Path, verify: Verify, log: Log) -> bool:
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            verify(f)
    except DataError as e:
        log(f"{path}: present but fails verification, replacing it ({e})")
        return False
    log(f"{path}: already present, checksum OK")
    return True


# ---------------------------------------------------------------- per dataset

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


def _quiet(msg: str) -> None:
    pass


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fetch_mnist(root: str | os.PathLike[str], source: str | os.PathLike[str] | None = None,
                *, timeout: float = DEFAULT_TIMEOUT, log: Log = print,
                progress: bool = False) -> list[Path]:
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
        Connect timeout in seconds.
    log : callable
        Progress messages.
    progress : bool, default False
        Progress bar on stderr while downloading.

    Returns
    -------
    list of pathlib.Path
        The four files in place.

    Raises
    ------
    FetchError, DataError
    """
    verifiers = {}
    for name, (_, sha) in MNIST_FILES.items():
        # the digest is of the uncompressed content: one verifier serves both forms
        verify = _sha_verifier(sha, name, content=True)
        verifiers[name] = (verify, verify)
    return _fetch_idx_files("mnist", "MNIST", MNIST_MIRRORS, verifiers, root, source,
                            timeout, log, progress)


def _fetch_idx_files(dataset: str, what: str, mirrors: tuple[str, ...],
                     verifiers: dict[str, tuple[Verify, Verify]],
                     root: str | os.PathLike[str], source: str | os.PathLike[str] | None,
                     timeout: float, log: Log, progress: bool) -> list[Path]:
    """The IDX files of ``dataset`` (MNIST, Fashion-MNIST) into ``<root>/<subdir>/``.

    ``verifiers``: file name (without ``.gz``) -> ``(plain_verify, gz_verify)``.  A file
    already in place in either form and verified is kept; otherwise it is imported from
    ``source`` in the form found there, or its ``.gz`` is downloaded from ``mirrors``; a
    corrupt copy under the other name is removed.  Returns the files in place.
    """
    dest_dir = Path(root) / SUBDIRS[dataset]
    done = []
    for name, (plain_verify, gz_verify) in verifiers.items():
        plain_path, gz_path = dest_dir / name, dest_dir / (name + ".gz")
        existing = [plain_path, gz_path]
        ok = next((p for p, verify in ((plain_path, plain_verify), (gz_path, gz_verify))
                   if _already_ok(p, verify, log)), None)
        if ok is not None:
            done.append(ok)
            continue
        if source is not None:
            dirs = _source_dirs(Path(source), dataset)
            src = _find_in(dirs, [name, name + ".gz"])
            if src is None:
                raise _missing_source(f"{name} (or {name}.gz)", dirs)
            log(f"importing {src}")
            gz = src.name.endswith(".gz")
            target = atomic_copy(src, gz_path if gz else plain_path,
                                 gz_verify if gz else plain_verify)
        else:
            target = _download_mirrors(mirrors, what, name + ".gz", gz_path, gz_verify,
                                       timeout, log, progress)
        _remove_others(existing, target, log)
        done.append(target)
    return done


def _remove_others(existing: list[Path], target: Path, log: Log) -> None:
    # A corrupt copy under the other name would shadow or confuse the loader
    # (it prefers the uncompressed file), so it goes.
    for p in existing:
        if p != target and p.is_file():
            log(f"removing corrupt {p}")
            p.unlink()


def _download_mirrors(mirrors: tuple[str, ...], what: str, fname: str, dest: Path,
                      verify: Verify, timeout: float, log: Log, progress: bool) -> Path:
    errors = []
    for base in mirrors:
        try:
            return download(base + fname, dest, timeout=timeout, verify=verify, log=log,
                            progress=progress)
        except _NetworkError:
            # The network itself is down or blocked: more mirrors would only
            # multiply the wait before the user gets the --from hint.
            raise
        except (FetchError, DataError) as e:
            log(f"  failed: {e}")
            errors.append(str(e))
    raise FetchError(f"all {what} mirrors failed for {fname}: " + "; ".join(errors))


# split name -> (IDX magic, dimensions) of the uncompressed Fashion-MNIST files
_FASHION_SHAPES = {
    "train-images-idx3-ubyte": (IDX_IMAGES_MAGIC, (60_000, 28, 28)),
    "train-labels-idx1-ubyte": (IDX_LABELS_MAGIC, (60_000,)),
    "t10k-images-idx3-ubyte": (IDX_IMAGES_MAGIC, (10_000, 28, 28)),
    "t10k-labels-idx1-ubyte": (IDX_LABELS_MAGIC, (10_000,)),
}


def fetch_fashion_mnist(root: str | os.PathLike[str],
                        source: str | os.PathLike[str] | None = None, *,
                        timeout: float = DEFAULT_TIMEOUT, log: Log = print,
                        progress: bool = False) -> list[Path]:
    """Put the four Fashion-MNIST files into ``<root>/fashion-mnist/``, verified.

    The ``.gz`` files (downloaded from :data:`FASHION_MNIST_MIRRORS`, or found
    in ``source``) are checked by SHA-256 and MD5 of the file as distributed.
    An uncompressed copy in ``source`` cannot be checked against a published
    value (Zalando publishes digests of the ``.gz`` files only): it is
    checked by IDX magic, dimensions (60,000 / 10,000 images of 28x28),
    exact length and label range.

    Parameters
    ----------
    root, source, timeout, log, progress
        As in :func:`fetch_mnist` (``source``: a folder with the files, directly
        or in ``fashion-mnist/``).

    Returns
    -------
    list of pathlib.Path
        The four files in place.
    """
    verifiers = {name: (_idx_plain_verifier(name, magic, dims),
                        _fashion_gz_verifier(name + ".gz"))
                 for name, (magic, dims) in _FASHION_SHAPES.items()}
    return _fetch_idx_files("fashion-mnist", "Fashion-MNIST", FASHION_MNIST_MIRRORS,
                            verifiers, root, source, timeout, log, progress)


def fetch_cifar10(root: str | os.PathLike[str], source: str | os.PathLike[str] | None = None,
                  *, timeout: float = DEFAULT_TIMEOUT, log: Log = print,
                  progress: bool = False) -> list[Path]:
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
    timeout, log, progress
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
        # The archive only lives until it is extracted; the fileio prefix lets
        # remove_stale_temporaries() clean up after a killed fetch.
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix="-cifar-10-binary.tar.gz",
                                    dir=dest_dir)
        os.close(fd)
        tmp_archive = archive = Path(name)
        try:
            download(CIFAR10_URL, archive, timeout=timeout, log=log, progress=progress)
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


def _meta_verifier(f: BinaryIO) -> None:
    try:
        text = f.read(1 << 16).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"batches.meta.txt: not UTF-8 text: {e}") from e
    parse_cifar10_meta(text)  # raises DataError unless 10 class names


def _extract_cifar(archive: Path, dest_dir: Path, todo: dict[str, Verify],
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
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{archive}: cannot read the archive: {e}") from e
    missing = sorted(set(todo) - found)
    if missing:
        raise DataError(f"{archive}: archive lacks {', '.join(missing)}")


def fetch_svhn(root: str | os.PathLike[str], source: str | os.PathLike[str] | None = None,
               *, extra: bool = False, timeout: float = DEFAULT_TIMEOUT,
               log: Log = print, progress: bool = False) -> list[Path]:
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
    timeout, log, progress
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
                download(SVHN_URL + name, dest, timeout=timeout, verify=verify, log=log,
                         progress=progress)
        done.append(dest)
    return done


_FETCHERS = {"mnist": fetch_mnist, "fashion-mnist": fetch_fashion_mnist,
             "cifar10": fetch_cifar10, "svhn": fetch_svhn}


def fetch_dataset(name: str, data_dir: str | os.PathLike[str] | None = None,
                  source: str | os.PathLike[str] | None = None, progress: bool = True, *,
                  extra: bool = False, timeout: float = DEFAULT_TIMEOUT,
                  log: Log | None = None) -> Path:
    """Download (or import from ``source``) a dataset into the data directory, verified.

    What ``minibnn fetch NAME [--from COPY]`` runs, and what
    :func:`~minibnn.data.load_dataset` calls when a dataset is missing. Files
    already present and passing their checksum are kept; the others are
    downloaded (or copied) to a temporary name, verified, and renamed into
    place.

    Parameters
    ----------
    name : str
        One of :data:`FETCHABLE` (``mnist``, ``fashion-mnist``, ``cifar10``,
        ``svhn``; other spellings as :func:`~minibnn.data.catalog.canonical_name`).
    data_dir : str or os.PathLike, optional
        Data directory (see :func:`~minibnn.data.paths.data_dir`).
    source : str or os.PathLike, optional
        A local copy (folder or, for CIFAR-10, the ``.tar.gz``) to import
        instead of downloading.
    progress : bool, default True
        Messages and a download progress bar on stderr (False: silent).
    extra : bool, default False
        SVHN only: also fetch ``extra_32x32.mat``.
    timeout : float
        Seconds allowed for resolving and connecting.
    log : callable, optional
        Where messages go (default: stderr when ``progress``, else nowhere).

    Returns
    -------
    pathlib.Path
        The dataset's folder, ``<data_dir>/<subdir>``.

    Raises
    ------
    ValueError
        Unknown name, or ``sample`` (it ships inside the package).
    FetchError
        ``source`` does not exist or lacks a file; download failed (network,
        HTTP status).
    DataError
        A file fails its checksum (nothing is left under its name).
    """
    key = canonical_name(name)
    if key not in _FETCHERS:
        raise ValueError(f"{key!r} ships inside the package and needs no fetching; "
                         f"fetchable datasets: {', '.join(FETCHABLE)}")
    root = resolve_data_dir(data_dir)
    if source is not None:
        source = Path(source).expanduser()
        if not source.exists():
            raise FetchError(f"--from {source}: no such file or directory (the local "
                             f"copy of {key} to import)")
    if log is None:
        log = _stderr if progress else _quiet
    kwargs = {"extra": extra} if key == "svhn" else {}
    try:
        _FETCHERS[key](root, source, timeout=timeout, log=log, progress=progress, **kwargs)
    except _NetworkError as e:
        raise _NetworkError(f"{e}; without network access, import a local copy with "
                            f"`minibnn fetch {key} --data-dir {root} --from COPY`",
                            detail=str(e)) from e
    return root / SUBDIRS[key]


# ---------------------------------------------------------------- CLI

def main(dataset: str, argv: list[str] | None = None) -> int:
    """Command line of ``data_scripts/fetch_<dataset>.py``: :func:`fetch_dataset`.

    Parameters
    ----------
    dataset : {"mnist", "fashion-mnist", "cifar10", "svhn"}
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 on failure (the reason is printed to stderr).
    """
    script = f"data_scripts/fetch_{dataset.replace('-', '_')}.py"
    ap = argparse.ArgumentParser(
        prog=script,
        description=f"Fetch {dataset} into DATA_DIR/{SUBDIRS[dataset]}/ "
                    f"(downloading, or importing a local copy with --from), "
                    f"verifying checksums; files are written atomically. The same "
                    f"as `minibnn fetch {dataset}`.")
    ap.add_argument("--data-dir", default=None,
                    help=f"data directory (default: ${ENV_VAR}, else "
                         f"$XDG_DATA_HOME/minibnn or ~/.minibnn/data); now "
                         f"{resolve_data_dir()}")
    ap.add_argument("--from", dest="source", metavar="DIR", default=None,
                    help="import from a local copy instead of downloading")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                    help="seconds allowed to connect (default %(default)s)")
    if dataset == "svhn":
        ap.add_argument("--extra", action="store_true",
                        help="also fetch extra_32x32.mat (1.3 GB)")
    args = ap.parse_args(argv)
    root = resolve_data_dir(args.data_dir)

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        folder = fetch_dataset(dataset, root, args.source, progress=True,
                               extra=getattr(args, "extra", False), timeout=args.timeout,
                               log=log)
    except (FetchError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        if args.source is None:
            print(f"The download failed. If you have a copy of the files, import it "
                  f"with `python {script} --data-dir {root} --from DIR` (or `minibnn "
                  f"fetch {dataset} --data-dir {root} --from DIR`), or point "
                  f"{ENV_VAR} (or --data-dir) at a folder that already holds "
                  f"{SUBDIRS[dataset]}/.", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. the data directory is not writable
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    print(f"{dataset}: {n} files ready in {folder}")
    return 0
