"""Raw, validating readers for the IDX (MNIST, Fashion-MNIST), CIFAR-10 binary,
SVHN .mat and user .npz files.

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
skip the check. The dataset loaders' ``strict=True`` mode additionally
requires the standard record counts, which pins the size and hence forces the
check.

Fashion-MNIST reuses MNIST's file names and uncompressed sizes, so its files
are read with ``dataset="fashion-mnist"``, which swaps the table: Zalando
publishes the MD5 of the *gzip'd* files only, so a ``.gz`` file of the
distributed size is checked by SHA-256 and MD5 of its bytes as stored
(:data:`FASHION_MNIST_FILES`); an uncompressed Fashion-MNIST file cannot be
checked against a published value and gets the structural checks only.
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
    "FASHION_MNIST_FILES",
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
    "parse_cifar10_meta",
    "read_svhn_mat",
    "check_mat5_structure",
    "NPZ_REQUIRED",
    "NPZ_OPTIONAL",
    "read_npz_arrays",
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

# name as distributed (gzip'd) -> (size in bytes, SHA-256, MD5) of the .gz file as stored.
# The MD5s are the ones Zalando publishes in the Fashion-MNIST README (and torchvision
# checks). Zalando publishes no SHA-256: these were taken from two independent public
# repositories that list the same values for the same files; both digests are checked.
FASHION_MNIST_FILES: dict[str, tuple[int, str, str]] = {
    "train-images-idx3-ubyte.gz": (
        26_421_880, "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train-labels-idx1-ubyte.gz": (
        29_515, "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
        "25c81989df183df01b3e8a0aad5dffbe"),
    "t10k-images-idx3-ubyte.gz": (
        4_422_102, "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
        "bef4ecab320f06d8554ea6380940ec79"),
    "t10k-labels-idx1-ubyte.gz": (
        5_148, "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
        "bb300cfdad3c16e7a12a480ee83cd310"),
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


def _check_fashion_gz(path: Path, size_on_disk: int) -> None:
    """Fashion-MNIST's checksum policy: the .gz file as stored (see the module docstring)."""
    entry = FASHION_MNIST_FILES.get(path.name)
    if entry is None or entry[0] != size_on_disk:
        return
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            md5.update(chunk)
    for algo, got, want in (("SHA-256", sha.hexdigest(), entry[1]),
                            ("MD5", md5.hexdigest(), entry[2])):
        if got != want:
            raise DataError(
                f"{path}: {algo} mismatch for Fashion-MNIST's {path.name}: got {got}, "
                f"the published value is {want}; the file is corrupt or is not the "
                f"original (re-fetch it with `minibnn fetch fashion-mnist`)")


def read_idx(path: str | os.PathLike[str], expected_magic: int | None = None,
             *, verify_checksum: bool = True, dataset: str = "mnist") -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or gzip'd).

    Parameters
    ----------
    path : str or os.PathLike
        The file. Gzip is detected from the content (magic ``1f 8b``).
    expected_magic : int, optional
        Required magic number, e.g. 2051 (images) or 2049 (labels).
    verify_checksum : bool, default True
        Apply the module's checksum policy for the dataset's known file names.
    dataset : {"mnist", "fashion-mnist"}, default "mnist"
        Whose checksum table applies (the two share file names and sizes).

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
    if dataset not in ("mnist", "fashion-mnist"):
        raise ValueError(f"dataset must be 'mnist' or 'fashion-mnist', got {dataset!r}")
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

    if verify_checksum and dataset == "fashion-mnist":
        if gz:
            _check_fashion_gz(path, size_on_disk)
    elif verify_checksum:
        def digest() -> str:
            h = hashlib.sha256(head)
            h.update(dims_raw)
            h.update(view)
            return h.hexdigest()
        _check_sha256(path, MNIST_FILES, header_len + count, digest)
    return data.reshape(dims)


def read_idx_images(path: str | os.PathLike[str], *, verify_checksum: bool = True,
                    dataset: str = "mnist") -> np.ndarray:
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
    return read_idx(path, IDX_IMAGES_MAGIC, verify_checksum=verify_checksum,
                    dataset=dataset)


def read_idx_labels(path: str | os.PathLike[str], *, n_classes: int | None = 10,
                    verify_checksum: bool = True, dataset: str = "mnist") -> np.ndarray:
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
    labels = read_idx(path, IDX_LABELS_MAGIC, verify_checksum=verify_checksum,
                      dataset=dataset)
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
    return parse_cifar10_meta(text, path)


def parse_cifar10_meta(text: str, where: object = "batches.meta.txt") -> tuple[str, ...]:
    """The 10 class names of ``batches.meta.txt``'s text (blank lines ignored).

    Raises
    ------
    DataError
        Not exactly 10 non-empty lines; the message starts with ``where``.
    """
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 10:
        raise DataError(f"{where}: expected 10 class names (one per line), "
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
        Missing or unreadable file, a bad MATLAB v5 header or an element that
        claims more bytes than the file holds (:func:`check_mat5_structure`),
        missing ``X``/``y``, wrong shapes or
        dtypes, count mismatch between ``X`` and ``y`` or with
        ``expected_records``, labels outside 1..10.
    """
    import scipy.io  # deferred: only SVHN needs scipy, and it is slow to import

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    # scipy trusts the size an element claims: one that claims more bytes than
    # the file holds makes it skip to the end and report the later variables as
    # missing, which hides the real problem (a truncated or corrupt file).
    check_mat5_structure(path)
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


# ---------------------------------------------------------------- MATLAB v5 structure

_MAT_HEADER_BYTES = 128
_MI_MATRIX = 14  # an array; its sub-elements are each padded to 8 bytes
_MAT_VERSION_5 = 0x0100
_MAT_VERSION_73 = 0x0200  # MATLAB 7.3: an HDF5 file behind a v5-like header


def check_mat5_structure(path: str | os.PathLike[str]) -> None:
    """Check a MATLAB v5 ``.mat`` file's header and element sizes before parsing it.

    A v5 file is a 128-byte header (text, subsystem offset, version 0x0100,
    endian indicator ``IM`` or ``MI``) followed by data elements, each an
    8-byte tag (type, byte count) and that many bytes, or a "small" element
    whose tag holds up to 4 data bytes. Every top-level element must fit in
    the file, and every sub-element of an uncompressed array (``miMATRIX``)
    must fit in its array; compressed elements are checked by their
    compressed size (their content is checked by the parser).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.mat`` file.

    Raises
    ------
    DataError
        File shorter than the header, not a v5 header (bad endian indicator or
        version; MATLAB 7.3 files are HDF5 and not supported), a truncated tag,
        or an element claiming more bytes than the file (or its enclosing
        array) holds.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(_MAT_HEADER_BYTES)
            if len(head) < _MAT_HEADER_BYTES:
                raise DataError(f"{path}: not a readable .mat file: {size} bytes, too "
                                f"short for the 128-byte MATLAB v5 header (truncated, or "
                                f"not a .mat file)")
            endian = {b"IM": "<", b"MI": ">"}.get(head[126:128])
            if endian is None:
                raise DataError(f"{path}: not a readable .mat file: no MATLAB v5 header "
                                f"(its endian indicator is {head[126:128]!r}, expected "
                                f"b'IM' or b'MI')")
            version = int.from_bytes(head[124:126], "little" if endian == "<" else "big")
            if version == _MAT_VERSION_73:
                raise DataError(f"{path}: MATLAB 7.3 (HDF5) .mat files are not "
                                f"supported; SVHN's files are MATLAB v5")
            if version != _MAT_VERSION_5:
                raise DataError(f"{path}: not a readable .mat file: unknown version "
                                f"{version:#06x} in the header, expected 0x0100 (MATLAB v5)")
            _check_mat_elements(f, path, endian, _MAT_HEADER_BYTES, size, None)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from e


def _check_mat_elements(f: BinaryIO, path: Path, endian: str, start: int, end: int,
                        parent: int | None) -> None:
    """Walk the element tags in [start, end) of ``f``; each element must fit."""
    where = ("file" if parent is None else f"array element at byte {parent}")
    ends = (f"the file is {end} bytes long" if parent is None
            else f"that array ends at byte {end}")
    off = start
    while off < end:
        f.seek(off)
        tag = f.read(8)
        if len(tag) < 8 or end - off < 8:
            raise DataError(f"{path}: truncated: {end - off} byte(s) at byte {off} where "
                            f"an 8-byte .mat element tag should be ({ends})")
        first = int.from_bytes(tag[:4], "little" if endian == "<" else "big")
        if first >> 16:
            # small data element: type in the low, byte count in the high half-word
            off += 8
            continue
        mtype = first
        nbytes = int.from_bytes(tag[4:], "little" if endian == "<" else "big")
        room = end - off - 8
        if nbytes > room:
            raise DataError(
                f"{path}: the .mat element at byte {off} claims {nbytes} bytes, but "
                f"only {room} bytes follow it in the {where} ({ends}): the file is "
                f"truncated or corrupt")
        if parent is None and mtype == _MI_MATRIX:
            _check_mat_elements(f, path, endian, off + 8, off + 8 + nbytes, off)
        step = nbytes if parent is None else (nbytes + 7) // 8 * 8
        off += 8 + step


# ---------------------------------------------------------------- user .npz

#: Arrays a dataset ``.npz`` must hold, and those it may hold.
NPZ_REQUIRED = ("x_train", "y_train", "x_test", "y_test")
NPZ_OPTIONAL = ("x_val", "y_val", "class_names")


def read_npz_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a dataset ``.npz`` (never unpickling), checking its structure.

    The archive must hold :data:`NPZ_REQUIRED` and may hold
    :data:`NPZ_OPTIONAL`; any other name is an error (a misspelt
    ``X_train`` should not be ignored). Each member's ``.npy`` header is read
    first and its claimed size compared with what the archive can hold, so a
    corrupt header cannot make numpy allocate gigabytes. Object arrays
    (pickles) are refused. The arrays' dtypes, shapes and values are checked
    by :meth:`minibnn.data.Dataset.from_arrays`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file (``np.savez`` / ``np.savez_compressed``).

    Returns
    -------
    dict of str to numpy.ndarray
        The arrays present, as stored.

    Raises
    ------
    DataError
        Missing file, not a zip archive, a single ``.npy``, unknown or missing
        array names, object (pickled) arrays, a header claiming more data than
        the member holds, or a corrupt member.
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found" if not path.exists()
                        else f"{path}: not a file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise DataError(f"{path}: a single .npy array, expected an .npz archive "
                            f"holding {', '.join(NPZ_REQUIRED)} (np.savez)")
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            names = {n[:-4] if n.endswith(".npy") else n: i for n, i in infos.items()}
            unknown = sorted(set(names) - set(NPZ_REQUIRED) - set(NPZ_OPTIONAL))
            if unknown:
                raise DataError(f"{path}: unexpected array(s) {', '.join(unknown)}; a "
                                f"dataset .npz holds {', '.join(NPZ_REQUIRED)} and "
                                f"optionally {', '.join(NPZ_OPTIONAL)}")
            missing = [n for n in NPZ_REQUIRED if n not in names]
            if missing:
                raise DataError(f"{path}: array(s) {', '.join(missing)} missing; a dataset "
                                f".npz holds {', '.join(NPZ_REQUIRED)} and optionally "
                                f"{', '.join(NPZ_OPTIONAL)}")
            out = {}
            for key, info in names.items():
                out[key] = _read_npz_member(zf, info, path, key)
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable .npz archive: {type(e).__name__}: "
                        f"{e}") from e
    return out


def _read_npz_member(zf, info, path: Path, key: str) -> np.ndarray:
    fmt = np.lib.format
    # What the member can really hold: a stored member is its compressed size,
    # a deflated one at most _MAX_DEFLATE_RATIO times that.
    bound = info.compress_size * (1 if info.compress_type == 0 else _MAX_DEFLATE_RATIO)
    if info.file_size > bound + 1024:
        raise DataError(f"{path}: array {key!r}: the archive claims {info.file_size} "
                        f"bytes for {info.compress_size} stored bytes; the file is corrupt")
    with zf.open(info) as f:
        try:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
        except ValueError as e:
            raise DataError(f"{path}: array {key!r} is not a valid .npy member: {e}") from e
        if dtype.hasobject:
            raise DataError(f"{path}: array {key!r} holds Python objects (dtype "
                            f"{dtype}), which would need unpickling and are never "
                            f"loaded; save plain numeric (or string) arrays")
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize
        header_len = f.tell()
        if nbytes > info.file_size - header_len:
            raise DataError(
                f"{path}: array {key!r}: its header claims shape {shape} of {dtype} "
                f"({nbytes} bytes), but the member holds only "
                f"{max(info.file_size - header_len, 0)} bytes: the file is truncated "
                f"or corrupt")
        try:
            return fmt.read_array(zf.open(info), allow_pickle=False)
        except (ValueError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: array {key!r} cannot be read: {e}") from e
