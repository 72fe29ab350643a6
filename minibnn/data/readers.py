"""Raw, validating readers for the MNIST IDX, CIFAR-10 binary and SVHN .mat files.

Every reader returns uint8 arrays holding exactly the stored values (only the
memory layout may change), and raises :class:`~minibnn.data.errors.DataError`
naming the file for anything it does not accept. Nothing is ever unpickled.

Checksum policy
---------------
A file is checked against its published checksum when its name is one of
the known distribution names (MNIST names with or without ``.gz``, CIFAR-10
batch names) **and** its (uncompressed) size is exactly the size of that known
file. The original files therefore are always verified, bit rot included,
while small files with the same names (tests, subsets) get the structural
checks only. The MNIST checksum is that of the *uncompressed* IDX bytes, so
any gzip compressor gives the same answer. Pass ``verify_checksum=False`` to
skip the check (e.g. for Fashion-MNIST, which reuses MNIST's names and
sizes). The dataset loaders' ``strict=True`` mode additionally requires the
standard record counts, which pins the size and hence forces the check.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import DataError

__all__ = [
    "MNIST_FILES",
    "CIFAR10_FILES",
    "CIFAR10_RECORD_BYTES",
    "CIFAR10_BATCH_RECORDS",
    "SVHN_FILES",
    "is_gzip",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "read_cifar10_batch",
    "read_cifar10_meta",
    "read_svhn_mat",
]

# name (uncompressed) -> (uncompressed size in bytes, SHA-256), from the data README.
MNIST_FILES: dict[str, tuple[int, str]] = {
    "train-images-idx3-ubyte": (
        47_040_016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (
        60_008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (
        7_840_016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (
        10_008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}

CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32  # label byte + R, G, B planes
CIFAR10_BATCH_RECORDS = 10_000
_CIFAR10_BATCH_BYTES = CIFAR10_RECORD_BYTES * CIFAR10_BATCH_RECORDS

CIFAR10_FILES: dict[str, tuple[int, str]] = {
    "data_batch_1.bin": (
        _CIFAR10_BATCH_BYTES, "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5"),
    "data_batch_2.bin": (
        _CIFAR10_BATCH_BYTES, "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed"),
    "data_batch_3.bin": (
        _CIFAR10_BATCH_BYTES, "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67"),
    "data_batch_4.bin": (
        _CIFAR10_BATCH_BYTES, "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48"),
    "data_batch_5.bin": (
        _CIFAR10_BATCH_BYTES, "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add"),
    "test_batch.bin": (
        _CIFAR10_BATCH_BYTES, "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b"),
}

# name -> (number of images, MD5 as published with the files and used by torchvision).
# Only MD5 is published for SVHN; the readers do not check it (sizes are not
# pinned here), the fetch script and the strict SVHN loader do.
SVHN_FILES: dict[str, tuple[int, str]] = {
    "train_32x32.mat": (73_257, "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test_32x32.mat": (26_032, "eb5a983be6a315427106f1b164d9cef3"),
    "extra_32x32.mat": (531_131, "a93ce644f1a588dc4d68dda5feec44a7"),
}

_IDX_UBYTE = 0x08
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
# Deflate cannot expand data by more than ~1032x, so a gzip'd IDX header that
# promises more than this many bytes per compressed byte is lying; checking it
# up front avoids allocating gigabytes for a corrupt header.
_MAX_DEFLATE_RATIO = 1032


def is_gzip(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with the gzip magic bytes ``1f 8b``.

    The content decides, not the name, so ``x.gz`` holding plain bytes or a
    gzip stream without ``.gz`` are both read correctly.
    """
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _known_name(path: Path) -> str:
    name = path.name
    return name[:-3] if name.endswith(".gz") else name


def _check_sha256(path: Path, known: dict[str, tuple[int, str]], size: int,
                  digest_fn) -> None:
    """Apply the checksum policy of this module (see the module docstring)."""
    entry = known.get(_known_name(path))
    if entry is None or entry[0] != size:
        return
    got = digest_fn()
    if got != entry[1]:
        raise DataError(
            f"{path}: SHA-256 mismatch for {_known_name(path)}: got {got}, the "
            f"published value is {entry[1]}; the file is corrupt or is not the "
            f"original (re-fetch it, or pass verify_checksum=False for a "
            f"different dataset with the same file names)")


def _read_exact(f: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise DataError(f"{path}: truncated: the file ends inside the {what} "
                        f"({len(data)} of {n} bytes present)")
    return data


def read_idx(path: str | os.PathLike[str], expected_magic: int | None = None,
             *, verify_checksum: bool = True) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or gzip'd).

    Parameters
    ----------
    path : str or os.PathLike
        The file. Gzip is detected from the content (magic ``1f 8b``).
    expected_magic : int, optional
        Required magic number, e.g. 2051 (images) or 2049 (labels).
    verify_checksum : bool, default True
        Apply the module's checksum policy for known MNIST file names.

    Returns
    -------
    numpy.ndarray
        uint8 array of the shape given by the header's dimension fields,
        writable and C-contiguous.

    Raises
    ------
    DataError
        Missing file, bad magic, non-ubyte element type, data shorter
        (truncated) or longer (trailing bytes) than the dimensions say,
        corrupt gzip stream, or checksum mismatch.
    """
    path = Path(path)
    try:
        size_on_disk = path.stat().st_size
        gz = is_gzip(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from e

    # Bound on the payload size the file can really hold (see _MAX_DEFLATE_RATIO).
    max_bytes = size_on_disk * _MAX_DEFLATE_RATIO + 1024 if gz else size_on_disk
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            head = _read_exact(f, 4, path, "IDX magic number")
            magic = int.from_bytes(head, "big")
            if head[0] != 0 or head[1] != 0:
                raise DataError(f"{path}: not an IDX file (magic number {magic:#010x}, "
                                f"expected {expected_magic or 'an IDX magic'})")
            if expected_magic is not None and magic != expected_magic:
                raise DataError(f"{path}: bad IDX magic number {magic}, expected "
                                f"{expected_magic}")
            if head[2] != _IDX_UBYTE:
                raise DataError(f"{path}: IDX element type {head[2]:#04x} is not "
                                f"unsigned byte (0x08)")
            ndim = head[3]
            if ndim == 0:
                raise DataError(f"{path}: IDX header has 0 dimensions")
            dims_raw = _read_exact(f, 4 * ndim, path, "IDX dimension fields")
            dims = tuple(int.from_bytes(dims_raw[4 * i:4 * i + 4], "big")
                         for i in range(ndim))
            count = 1
            for d in dims:
                count *= d
            header_len = 4 + 4 * ndim
            if header_len + count > max_bytes:
                raise DataError(
                    f"{path}: truncated: the IDX header says {'x'.join(map(str, dims))} "
                    f"= {count} data bytes, more than the file can hold "
                    f"({size_on_disk} bytes{' gzip' if gz else ''})")
            data = np.empty(count, dtype=np.uint8)
            view = memoryview(data)
            got = 0
            while got < count:
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
            if got != count:
                raise DataError(
                    f"{path}: truncated: the IDX header says {'x'.join(map(str, dims))} "
                    f"= {count} data bytes, only {got} present")
            if f.read(1):
                raise DataError(f"{path}: {count} data bytes expected from the IDX "
                                f"header, but the file has trailing bytes after them")
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip stream: {e}") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from e

    if verify_checksum:
        def digest() -> str:
            h = hashlib.sha256(head)
            h.update(dims_raw)
            h.update(view)
            return h.hexdigest()
        _check_sha256(path, MNIST_FILES, header_len + count, digest)
    return data.reshape(dims)


def read_idx_images(path: str | os.PathLike[str], *,
                    verify_checksum: bool = True) -> np.ndarray:
    """Read an IDX image file (magic 2051), e.g. ``train-images-idx3-ubyte[.gz]``.

    Returns
    -------
    numpy.ndarray
        uint8, shape (N, H, W) (MNIST: H = W = 28).

    Raises
    ------
    DataError
        See :func:`read_idx`.
    """
    return read_idx(path, IDX_IMAGES_MAGIC, verify_checksum=verify_checksum)


def read_idx_labels(path: str | os.PathLike[str], *, n_classes: int | None = 10,
                    verify_checksum: bool = True) -> np.ndarray:
    """Read an IDX label file (magic 2049), e.g. ``train-labels-idx1-ubyte[.gz]``.

    Parameters
    ----------
    n_classes : int or None, default 10
        Labels must lie in ``0 .. n_classes-1``; None skips the range check.

    Returns
    -------
    numpy.ndarray
        uint8, shape (N,).

    Raises
    ------
    DataError
        See :func:`read_idx`; also labels out of range.
    """
    path = Path(path)
    labels = read_idx(path, IDX_LABELS_MAGIC, verify_checksum=verify_checksum)
    _check_label_range(path, labels, 0, n_classes)
    return labels


def _check_label_range(path: Path, labels: np.ndarray, lo: int,
                       n_classes: int | None) -> None:
    if n_classes is None or labels.size == 0:
        return
    hi = lo + n_classes - 1
    bad = np.flatnonzero((labels < lo) | (labels > hi))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}: label {int(labels.flat[i])} at index {i} is outside "
                        f"{lo}..{hi} ({bad.size} bad labels in all)")


def read_cifar10_batch(path: str | os.PathLike[str], *,
                       expected_records: int | None = None,
                       verify_checksum: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch (``data_batch_1.bin`` ... ``test_batch.bin``).

    Each 3073-byte record is a label byte (0..9) followed by the 1024 red,
    1024 green and 1024 blue bytes of a 32x32 image in row-major order, so the
    records reshape directly to (N, 3, 32, 32) without any transposition.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.bin`` file (not compressed).
    expected_records : int, optional
        Required number of records (10,000 for the standard batches).
    verify_checksum : bool, default True
        Apply the module's checksum policy for the known batch names.

    Returns
    -------
    x : numpy.ndarray
        uint8, shape (N, 3, 32, 32).
    y : numpy.ndarray
        uint8, shape (N,), values 0..9.

    Raises
    ------
    DataError
        Missing or empty file, size not a multiple of 3073, wrong record
        count, label out of range, or checksum mismatch.
    """
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    size = raw.size
    if size == 0:
        raise DataError(f"{path}: empty file, expected {CIFAR10_RECORD_BYTES}-byte "
                        f"CIFAR-10 records")
    if size % CIFAR10_RECORD_BYTES:
        raise DataError(
            f"{path}: size {size} bytes is not a multiple of the "
            f"{CIFAR10_RECORD_BYTES}-byte CIFAR-10 record (truncated, or not a "
            f"CIFAR-10 binary batch; {size // CIFAR10_RECORD_BYTES} whole records "
            f"+ {size % CIFAR10_RECORD_BYTES} bytes)")
    n = size // CIFAR10_RECORD_BYTES
    if expected_records is not None and n != expected_records:
        raise DataError(f"{path}: {n} records, expected {expected_records}")
    if verify_checksum:
        _check_sha256(path, CIFAR10_FILES, size,
                      lambda: hashlib.sha256(memoryview(raw)).hexdigest())
    records = raw.reshape(n, CIFAR10_RECORD_BYTES)
    y = records[:, 0].copy()
    _check_label_range(path, y, 0, 10)
    x = records[:, 1:].reshape(n, 3, 32, 32).copy()
    return x, y


def read_cifar10_meta(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Read ``batches.meta.txt``: the 10 class names, one per line, in label order.

    Returns
    -------
    tuple of str
        10 names.

    Raises
    ------
    DataError
        Missing file, not UTF-8/ASCII text, or not exactly 10 non-empty lines.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read as text: {e}") from e
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 10:
        raise DataError(f"{path}: expected 10 class names (one per line), "
                        f"found {len(names)}")
    return names


def read_svhn_mat(path: str | os.PathLike[str], *,
                  expected_records: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN cropped-digits file (``train_32x32.mat`` etc., MATLAB v5).

    The file holds ``X``, uint8 of shape (32, 32, 3, N), and ``y`` of shape
    (N, 1) with labels 1..10 where 10 stands for the digit 0.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.mat`` file, read with :func:`scipy.io.loadmat` (no pickle).
    expected_records : int, optional
        Required number of images.

    Returns
    -------
    x : numpy.ndarray
        uint8, shape (N, 3, 32, 32) (transposed from the file's layout; the
        values are unchanged).
    y : numpy.ndarray
        uint8, shape (N,), values 0..9 (file label 10 mapped to 0).

    Raises
    ------
    DataError
        Missing or unreadable file, missing ``X``/``y``, wrong shapes or
        dtypes, count mismatch between ``X`` and ``y`` or with
        ``expected_records``, labels outside 1..10.
    """
    import scipy.io  # deferred: only SVHN needs scipy, and it is slow to import

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except NotImplementedError as e:  # MATLAB v7.3 (HDF5) files
        raise DataError(f"{path}: unsupported .mat version ({e}); SVHN's files "
                        f"are MATLAB v5") from e
    except Exception as e:  # scipy raises many types (ValueError, MatReadError, ...)
        raise DataError(f"{path}: not a readable .mat file: {type(e).__name__}: "
                        f"{e}") from e
    for key in ("X", "y"):
        if key not in mat:
            raise DataError(f"{path}: variable {key!r} missing from the .mat file")
    X, y = mat["X"], mat["y"]
    if X.ndim != 4 or X.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X has shape {X.shape}, expected (32, 32, 3, N)")
    if X.dtype != np.uint8:
        raise DataError(f"{path}: X has dtype {X.dtype}, expected uint8")
    n = X.shape[3]
    if not (y.shape == (n, 1) or y.shape == (n,)):
        raise DataError(f"{path}: y has shape {y.shape}, expected ({n}, 1) to match "
                        f"X's {n} images")
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: y has dtype {y.dtype}, expected integers")
    if expected_records is not None and n != expected_records:
        raise DataError(f"{path}: {n} images, expected {expected_records}")
    y = y.reshape(n)
    _check_label_range(path, y, 1, 10)
    y = (y % 10).astype(np.uint8)  # SVHN stores the digit 0 as label 10
    x = np.ascontiguousarray(X.transpose(3, 2, 0, 1))
    return x, y
