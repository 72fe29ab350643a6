"""Dataset loaders: train / validation / test splits, preprocessed as in the BNN paper.

All loaders return a :class:`Dataset` whose images are float32 in (N, C, H, W)
layout and whose labels are int64 in 0..9. By default pixels are mapped to
``2 * x / 255 - 1`` (the Courbariaux/Hubara BinaryNet code does this for
MNIST, CIFAR-10 and SVHN). The validation splits are the paper's:

* MNIST: the last 10,000 of the 60,000 training images (50,000 remain);
* CIFAR-10: the last 5,000 of the 50,000 training images (45,000 remain);
* SVHN: the last 5 % of ``train_32x32.mat`` (3,663 of 73,257 images). The
  BinaryNet code used pylearn2's class-balanced 6,000-image split taken from
  train *and* extra; a contiguous tail of ``train`` is used here instead so
  that the split does not depend on whether ``extra`` is loaded (with
  ``extra=True`` the extra images are appended to the training part only).

* Fashion-MNIST: as MNIST (the same IDX format and split), its own files;
* ``npz:PATH`` / :meth:`Dataset.from_arrays`: the user's own arrays, with the
  validation split given or taken from the end of the training arrays.

``limit_train=N`` then keeps the first N images of the training part. The
data directory is resolved by :func:`minibnn.data.paths.data_dir`.
:func:`load_dataset` fetches a missing built-in dataset itself (checksummed,
atomic, with a progress bar) unless ``download=False``.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .catalog import (
    CIFAR10_CLASSES,
    DATASETS,
    DIGITS,
    FASHION_MNIST_CLASSES,
    NPZ_PREFIX,
    canonical_name,
)
from .errors import DataError, MissingDataError
from .fetch import FetchError, fetch_dataset
from .paths import SUBDIRS, data_dir as resolve_data_dir, fetch_hint, offline_hint
from .preprocess import apply_zca, fit_zca, global_contrast_normalize, scale_to_pm1
from .readers import (
    CIFAR10_BATCH_RECORDS,
    MNIST_FILES,
    SVHN_FILES,
    read_cifar10_batch,
    read_cifar10_meta,
    read_idx_images,
    read_idx_labels,
    read_npz_arrays,
    read_svhn_mat,
)

__all__ = [
    "Dataset",
    "DATASETS",
    "load_dataset",
    "load_mnist",
    "load_mnist_raw",
    "load_fashion_mnist",
    "load_fashion_mnist_raw",
    "load_npz",
    "load_cifar10",
    "load_cifar10_raw",
    "load_svhn",
    "load_svhn_raw",
    "load_sample",
    "load_sample_raw",
    "SAMPLE_FILE",
]

PathLike = str | os.PathLike[str]


#: Name of the embedded MNIST subset inside the ``minibnn.data`` package.
SAMPLE_FILE = "mnist_sample.npz"
_SAMPLE_TRAIN, _SAMPLE_TEST = 3000, 1000


@dataclass(repr=False)
class Dataset:
    """A dataset split into train / validation / test, ready for training.

    Attributes
    ----------
    x_train, x_val, x_test : numpy.ndarray
        float32, shape (N, C, H, W): MNIST and Fashion-MNIST (N, 1, 28, 28),
        CIFAR-10 and SVHN (N, 3, 32, 32), user arrays as given (see
        :meth:`from_arrays`).
    y_train, y_val, y_test : numpy.ndarray
        int64, shape (N,), values 0 .. n_classes-1.
    name : str
        ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"svhn"``,
        ``"sample"``, ``"npz:PATH"`` or the ``name`` given to :meth:`from_arrays`.
    input_shape : tuple of int
        (C, H, W) of one image: what a model for this data takes (the
        architecture follows it).
    n_classes : int
        Number of classes (10 for the built-in datasets).
    class_names : tuple of str
        Label names in label order.
    preprocessing : str
        ``"2x/255-1"`` (uint8 pixels scaled to [-1, 1]), ``"gcn+zca"`` or
        ``"as given"`` (float arrays passed to :meth:`from_arrays`).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    input_shape: tuple[int, int, int]
    n_classes: int = 10
    class_names: tuple[str, ...] = DIGITS
    preprocessing: str = "2x/255-1"

    @classmethod
    def from_arrays(cls, x_train, y_train, x_test, y_test, x_val=None, y_val=None, *,
                    n_val: int | None = None, limit_train: int | None = None,
                    n_classes: int | None = None, class_names=None,
                    name: str = "arrays") -> "Dataset":
        """A Dataset from your own arrays, checked as strictly as the built-in files.

        Images (``x_*``) are uint8 pixels 0..255, scaled to ``2x/255-1`` like
        the built-in datasets, or floating point, used as given (cast to
        float32; NaN and infinity are refused). Every split must have the same
        form and image shape. The layout is decided by the shape:

        * (N, C, H, W) -- NCHW, unless the last axis is 1 or 3, then it is
          (N, H, W, C) (NHWC) and is transposed;
        * (N, H, W) -- grayscale, becomes (N, 1, H, W);
        * (N, D) -- flat vectors, become (N, 1, 1, D) (no guessing at a square).

        Labels (``y_*``) are integers 0 .. n_classes-1 of shape (N,) (or
        (N, 1)), one per image.

        Parameters
        ----------
        x_train, y_train, x_test, y_test : array_like
            The training and test splits (non-empty).
        x_val, y_val : array_like, optional
            The validation split (both or neither). Without them the last
            ``n_val`` training images become the validation split.
        n_val : int, optional
            Only without ``x_val``: validation images taken from the end of the
            training arrays; default 10 % of them, rounded.
        limit_train : int, optional
            Keep only the first ``limit_train`` training images (after the split).
        n_classes : int, optional
            Number of classes (>= 2); default ``len(class_names)``, else the
            largest label + 1.
        class_names : sequence of str, optional
            Label names (default ``"0"``, ``"1"``, ...).
        name : str, default "arrays"
            Stored as :attr:`name`.

        Returns
        -------
        Dataset
            x float32 (N, C, H, W) C-contiguous (uint8 input: new arrays; float32
            NCHW input may be shared, not copied), y int64 (N,).

        Raises
        ------
        TypeError
            An image array that is not uint8 or floating point, labels that are
            not integers.
        ValueError
            Anything else wrong, naming the argument: shapes, mismatched
            lengths or image shapes, NaN, labels out of range, bad options.
        """
        return _from_arrays(
            {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
             "x_val": x_val, "y_val": y_val}, n_val=n_val, limit_train=limit_train,
            n_classes=n_classes, class_names=class_names, name=name)

    def __repr__(self) -> str:
        # The default dataclass repr would print the arrays.
        return (f"Dataset(name={self.name!r}, input_shape={self.input_shape}, "
                f"train={len(self.y_train)}, val={len(self.y_val)}, "
                f"test={len(self.y_test)}, n_classes={self.n_classes}, "
                f"preprocessing={self.preprocessing!r})")


# ---------------------------------------------------------------- file lookup

def _locate_dir(root: Path, dataset: str, first_file: str, gz_ok: bool) -> Path:
    """Folder holding ``dataset``'s files: ``root/<subdir>`` or ``root`` itself.

    One folder is picked for all files of a dataset (by its first file) so a
    stray copy in the other folder is never mixed in.
    """
    candidates = [root / SUBDIRS[dataset], root]
    names = [first_file, first_file + ".gz"] if gz_ok else [first_file]
    for d in candidates:
        if any((d / n).is_file() for n in names):
            return d
    shown = " or ".join(repr(n) for n in names)
    raise MissingDataError(
        f"{dataset} file {shown} not found; searched {candidates[0]} and "
        f"{candidates[1]}. " + fetch_hint(dataset, root))


def _require(d: Path, root: Path, dataset: str, name: str, gz_ok: bool) -> Path:
    # The uncompressed file wins when both exist: it is what a user who
    # unpacked the archive by hand most likely meant.
    names = [name, name + ".gz"] if gz_ok else [name]
    for n in names:
        if (d / n).is_file():
            return d / n
    shown = " or ".join(repr(n) for n in names)
    raise MissingDataError(f"{dataset} file {shown} missing from {d}. "
                           + fetch_hint(dataset, root))


def _md5_check(path: Path, expected: str) -> None:
    with open(path, "rb") as f:
        got = hashlib.file_digest(f, "md5").hexdigest()
    if got != expected:
        raise DataError(f"{path}: MD5 mismatch: got {got}, the published value is "
                        f"{expected}; the file is corrupt or not the original")


# ---------------------------------------------------------------- raw loaders

def load_mnist_raw(data_dir: PathLike | None = None, *, strict: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the four MNIST IDX files (plain or ``.gz``), validated, unprocessed.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Data directory (see :func:`~minibnn.data.paths.data_dir`); the files
        are looked for in ``<data_dir>/mnist/``, else in ``<data_dir>``.
    strict : bool, default True
        Require the original 60,000 / 10,000 images of 28x28, which (by the
        checksum policy of :mod:`minibnn.data.readers`) also forces the
        SHA-256 check of every file. With False only structural checks are
        made (plus the checksum for files of the original size).

    Returns
    -------
    x_train : numpy.ndarray
        uint8, shape (N_train, 1, 28, 28).
    y_train : numpy.ndarray
        uint8, shape (N_train,).
    x_test : numpy.ndarray
        uint8, shape (N_test, 1, 28, 28).
    y_test : numpy.ndarray
        uint8, shape (N_test,).

    Raises
    ------
    DataError
        A file is missing, malformed, truncated or fails its checksum, or
        images and labels disagree in count.
    """
    return _load_idx_dataset("mnist", data_dir, strict)


def load_fashion_mnist_raw(data_dir: PathLike | None = None, *, strict: bool = True
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the four Fashion-MNIST IDX files (plain or ``.gz``), validated, unprocessed.

    The files have MNIST's names, format and sizes and live in
    ``<data_dir>/fashion-mnist/`` (else ``<data_dir>``). A ``.gz`` file of the
    distributed size is checked against the published digests
    (:data:`~minibnn.data.readers.FASHION_MNIST_FILES`); an uncompressed file
    can only be checked structurally (no published checksum exists for it).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Data directory (see :func:`~minibnn.data.paths.data_dir`).
    strict : bool, default True
        Require the original 60,000 / 10,000 images of 28x28.

    Returns
    -------
    x_train, y_train, x_test, y_test : numpy.ndarray
        uint8; x of shape (N, 1, 28, 28), y of shape (N,) with values 0..9.

    Raises
    ------
    DataError
        As :func:`load_mnist_raw`.
    """
    return _load_idx_dataset("fashion-mnist", data_dir, strict)


_PRETTY = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def _load_idx_dataset(dataset: str, data_dir: PathLike | None, strict: bool
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST and Fashion-MNIST: the same four IDX names, validated pairwise."""
    root = resolve_data_dir(data_dir)
    d = _locate_dir(root, dataset, "train-images-idx3-ubyte", gz_ok=True)
    out = []
    for split in ("train", "t10k"):
        img_path = _require(d, root, dataset, f"{split}-images-idx3-ubyte", True)
        lab_path = _require(d, root, dataset, f"{split}-labels-idx1-ubyte", True)
        x = read_idx_images(img_path, dataset=dataset)
        y = read_idx_labels(lab_path, n_classes=10, dataset=dataset)
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{img_path} has {x.shape[0]} images but {lab_path} has "
                            f"{y.shape[0]} labels")
        if strict:
            want = MNIST_FILES[f"{split}-labels-idx1-ubyte"][0] - 8
            if x.shape != (want, 28, 28):
                raise DataError(f"{img_path}: images of shape {x.shape}, the original "
                                f"{_PRETTY[dataset]} file has {(want, 28, 28)} (pass strict=False "
                                f"to load a non-standard set)")
        out += [x[:, None], y]
    if out[0].shape[2:] != out[2].shape[2:]:
        raise DataError(f"{d}: training images are {out[0].shape[2:]} but test images "
                        f"are {out[2].shape[2:]}")
    return out[0], out[1], out[2], out[3]


def load_cifar10_raw(data_dir: PathLike | None = None, *, strict: bool = True
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                tuple[str, ...]]:
    """Read the six CIFAR-10 binary batches, validated, unprocessed.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Data directory; files are looked for in
        ``<data_dir>/cifar-10-batches-bin/``, else in ``<data_dir>``.
    strict : bool, default True
        Require exactly 10,000 records per batch file, which also forces the
        SHA-256 check of every batch. With False: structural checks only.

    Returns
    -------
    x_train : numpy.ndarray
        uint8, shape (N_train, 3, 32, 32), batches 1..5 in order.
    y_train : numpy.ndarray
        uint8, shape (N_train,).
    x_test : numpy.ndarray
        uint8, shape (N_test, 3, 32, 32).
    y_test : numpy.ndarray
        uint8, shape (N_test,).
    class_names : tuple of str
        From ``batches.meta.txt`` when present, else the standard names.
    """
    root = resolve_data_dir(data_dir)
    d = _locate_dir(root, "cifar10", "data_batch_1.bin", gz_ok=False)
    expected = CIFAR10_BATCH_RECORDS if strict else None
    xs, ys = [], []
    for i in range(1, 6):
        p = _require(d, root, "cifar10", f"data_batch_{i}.bin", False)
        x, y = read_cifar10_batch(p, expected_records=expected)
        xs.append(x)
        ys.append(y)
    p = _require(d, root, "cifar10", "test_batch.bin", False)
    x_test, y_test = read_cifar10_batch(p, expected_records=expected)
    meta = d / "batches.meta.txt"
    names = read_cifar10_meta(meta) if meta.is_file() else CIFAR10_CLASSES
    return np.concatenate(xs), np.concatenate(ys), x_test, y_test, names


def load_svhn_raw(data_dir: PathLike | None = None, extra: bool = False, *,
                  strict: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                             np.ndarray | None, np.ndarray | None]:
    """Read SVHN's ``train_32x32.mat``, ``test_32x32.mat`` (and ``extra_32x32.mat``).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Data directory; files are looked for in ``<data_dir>/svhn/``, else in
        ``<data_dir>``.
    extra : bool, default False
        Also read the 531,131-image ``extra_32x32.mat`` (about 1.3 GB).
    strict : bool, default True
        Require the published image counts and MD5 checksums (the only
        checksums published for SVHN). With False: structural checks only.

    Returns
    -------
    x_train, y_train, x_test, y_test, x_extra, y_extra : numpy.ndarray
        uint8; x of shape (N, 3, 32, 32), y of shape (N,) with the digit 0 as
        label 0. ``x_extra``/``y_extra`` are None unless ``extra``.
    """
    root = resolve_data_dir(data_dir)
    d = _locate_dir(root, "svhn", "train_32x32.mat", gz_ok=False)
    names = ["train_32x32.mat", "test_32x32.mat"] + (["extra_32x32.mat"] if extra else [])
    arrays: list[np.ndarray | None] = []
    for name in names:
        p = _require(d, root, "svhn", name, False)
        count, md5 = SVHN_FILES[name]
        if strict:
            _md5_check(p, md5)
        arrays += list(read_svhn_mat(p, expected_records=count if strict else None))
    if not extra:
        arrays += [None, None]
    return tuple(arrays)  # type: ignore[return-value]


def load_sample_raw() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Read the embedded MNIST subset ``minibnn/data/mnist_sample.npz``.

    It holds the first 3,000 training and the first 1,000 test images of the
    original MNIST files (MNIST by Yann LeCun, Corinna Cortes and Christopher
    J.C. Burges, CC BY-SA 3.0).

    Returns
    -------
    x_train : numpy.ndarray
        uint8, shape (3000, 1, 28, 28).
    y_train : numpy.ndarray
        uint8, shape (3000,).
    x_test : numpy.ndarray
        uint8, shape (1000, 1, 28, 28).
    y_test : numpy.ndarray
        uint8, shape (1000,).
    attribution : str
    """
    res = resources.files(__package__).joinpath(SAMPLE_FILE)
    with resources.as_file(res) as path:
        if not path.is_file():
            raise DataError(f"{path}: the embedded MNIST sample is missing from the "
                            f"package; rebuild it with `python "
                            f"data_scripts/make_mnist_sample.py --data-dir DIR`")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrs = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read the embedded sample: {e}") from e
    want = {"x_train": (_SAMPLE_TRAIN, 28, 28), "y_train": (_SAMPLE_TRAIN,),
            "x_test": (_SAMPLE_TEST, 28, 28), "y_test": (_SAMPLE_TEST,)}
    for key, shape in want.items():
        a = arrs.get(key)
        if a is None or a.shape != shape or a.dtype != np.uint8:
            got = "missing" if a is None else f"{a.dtype} {a.shape}"
            raise DataError(f"{path}: {key} is {got}, expected uint8 {shape}")
    for key in ("y_train", "y_test"):
        if arrs[key].max() > 9:
            raise DataError(f"{path}: {key} has labels above 9")
    attribution = "\n".join(np.atleast_1d(arrs.get("attribution", np.array(""))).tolist())
    return (arrs["x_train"][:, None], arrs["y_train"], arrs["x_test"][:, None],
            arrs["y_test"], attribution)


# ---------------------------------------------------------------- preprocessed

def _build(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
           y_test: np.ndarray, *, n_val: int, limit_train: int | None, zca: bool = False,
           zca_bias: float = 0.1, class_names: tuple[str, ...] = DIGITS,
           extra_train: tuple[np.ndarray, np.ndarray] | None = None) -> Dataset:
    """Split, limit and preprocess uint8 (N, C, H, W) arrays into a Dataset."""
    n = x_train.shape[0]
    n_val = int(n_val)
    if not 0 <= n_val < n:
        raise ValueError(f"{name}: n_val={n_val} must be in 0..{n - 1} "
                         f"({n} training images)")
    if limit_train is not None and int(limit_train) < 1:
        raise ValueError(f"limit_train must be >= 1 or None, got {limit_train}")
    x_tr, y_tr = x_train[:n - n_val], y_train[:n - n_val]
    x_va, y_va = x_train[n - n_val:], y_train[n - n_val:]
    if extra_train is not None:
        x_tr = np.concatenate([x_tr, extra_train[0]])
        y_tr = np.concatenate([y_tr, extra_train[1]])
    if limit_train is not None:
        # Limiting before the float conversion keeps memory proportional to N.
        x_tr, y_tr = x_tr[:int(limit_train)], y_tr[:int(limit_train)]

    if zca:
        # GCN is defined on 0..255 pixel values (pylearn2 recipe), so it is
        # applied to the raw bytes rather than after the [-1, 1] scaling.
        g_tr, g_va, g_te = (global_contrast_normalize(a) for a in (x_tr, x_va, x_test))
        mean, w = fit_zca(g_tr, bias=zca_bias)  # fitted on the training part only
        f_tr, f_va, f_te = (apply_zca(a, mean, w) for a in (g_tr, g_va, g_te))
        prep = "gcn+zca"
    else:
        f_tr, f_va, f_te = (scale_to_pm1(a) for a in (x_tr, x_va, x_test))
        prep = "2x/255-1"
    return Dataset(
        x_train=f_tr, y_train=y_tr.astype(np.int64),
        x_val=f_va, y_val=y_va.astype(np.int64),
        x_test=f_te, y_test=y_test.astype(np.int64),
        name=name, input_shape=tuple(int(s) for s in x_train.shape[1:]),
        n_classes=len(class_names), class_names=tuple(class_names), preprocessing=prep)


def load_mnist(data_dir: PathLike | None = None, *, n_val: int = 10_000,
               limit_train: int | None = None, strict: bool = True) -> Dataset:
    """MNIST: 50,000 train / 10,000 validation (last of train) / 10,000 test.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        See :func:`load_mnist_raw`.
    n_val : int, default 10000
        Validation images, taken from the end of the training file.
    limit_train : int, optional
        Keep only the first ``limit_train`` training images (after the split).
    strict : bool, default True
        See :func:`load_mnist_raw`.

    Returns
    -------
    Dataset
        x float32 (N, 1, 28, 28) in [-1, 1], y int64.
    """
    x_tr, y_tr, x_te, y_te = load_mnist_raw(data_dir, strict=strict)
    return _build("mnist", x_tr, y_tr, x_te, y_te, n_val=n_val, limit_train=limit_train)


def load_fashion_mnist(data_dir: PathLike | None = None, *, n_val: int = 10_000,
                       limit_train: int | None = None, strict: bool = True) -> Dataset:
    """Fashion-MNIST: 50,000 train / 10,000 validation (last of train) / 10,000 test.

    The same split and preprocessing as :func:`load_mnist`, and the class
    names of Zalando's README (``"T-shirt/top"`` ... ``"Ankle boot"``).

    Parameters
    ----------
    data_dir, n_val, limit_train, strict
        As in :func:`load_mnist`; see :func:`load_fashion_mnist_raw`.

    Returns
    -------
    Dataset
        x float32 (N, 1, 28, 28) in [-1, 1], y int64.
    """
    x_tr, y_tr, x_te, y_te = load_fashion_mnist_raw(data_dir, strict=strict)
    return _build("fashion-mnist", x_tr, y_tr, x_te, y_te, n_val=n_val,
                  limit_train=limit_train, class_names=FASHION_MNIST_CLASSES)


def load_cifar10(data_dir: PathLike | None = None, *, n_val: int = 5_000,
                 limit_train: int | None = None, zca: bool = False,
                 zca_bias: float = 0.1, strict: bool = True) -> Dataset:
    """CIFAR-10: 45,000 train / 5,000 validation (last of train) / 10,000 test.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        See :func:`load_cifar10_raw`.
    n_val : int, default 5000
        Validation images, taken from the end of the training batches.
    limit_train : int, optional
        Keep only the first ``limit_train`` training images (after the split).
    zca : bool, default False
        Instead of ``2x/255-1``, apply global contrast normalization
        (per image, on 0..255 values) then ZCA whitening fitted on the
        (limited) training part only. Costs a 3072x3072 eigendecomposition.
    zca_bias : float, default 0.1
        Eigenvalue regularizer of the ZCA (see :func:`fit_zca`).
    strict : bool, default True
        See :func:`load_cifar10_raw`.

    Returns
    -------
    Dataset
        x float32 (N, 3, 32, 32), y int64.
    """
    x_tr, y_tr, x_te, y_te, names = load_cifar10_raw(data_dir, strict=strict)
    return _build("cifar10", x_tr, y_tr, x_te, y_te, n_val=n_val,
                  limit_train=limit_train, zca=zca, zca_bias=zca_bias,
                  class_names=names)


def load_svhn(data_dir: PathLike | None = None, extra: bool = False, *,
              val_fraction: float = 0.05, limit_train: int | None = None,
              zca: bool = False, zca_bias: float = 0.1, strict: bool = True) -> Dataset:
    """SVHN: validation = last 5 % of ``train_32x32.mat``; test = ``test_32x32.mat``.

    With ``extra=True`` the 531,131 ``extra`` images are appended to the
    training part (after the split, so validation is the same either way).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        See :func:`load_svhn_raw`.
    extra : bool, default False
        Add ``extra_32x32.mat`` to the training part.
    val_fraction : float, default 0.05
        Fraction of ``train_32x32.mat`` (rounded to the nearest image) held
        out from its end: 3,663 of 73,257.
    limit_train, zca, zca_bias, strict
        As in :func:`load_cifar10` / :func:`load_svhn_raw`.

    Returns
    -------
    Dataset
        x float32 (N, 3, 32, 32), y int64 (digit 0 is label 0).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    x_tr, y_tr, x_te, y_te, x_ex, y_ex = load_svhn_raw(data_dir, extra, strict=strict)
    n_val = int(round(val_fraction * x_tr.shape[0]))
    return _build("svhn", x_tr, y_tr, x_te, y_te, n_val=n_val, limit_train=limit_train,
                  zca=zca, zca_bias=zca_bias,
                  extra_train=(x_ex, y_ex) if extra else None)


def load_sample(*, n_val: int = 500, limit_train: int | None = None) -> Dataset:
    """The embedded MNIST subset: 2,500 train / 500 validation / 1,000 test.

    Needs no data directory (it ships inside the package), so it is what
    tests, examples and smoke runs use.

    Parameters
    ----------
    n_val : int, default 500
        Validation images, taken from the end of the 3,000 training images.
    limit_train : int, optional
        Keep only the first ``limit_train`` training images (after the split).

    Returns
    -------
    Dataset
        name ``"sample"``, x float32 (N, 1, 28, 28) in [-1, 1], y int64.
    """
    x_tr, y_tr, x_te, y_te, _ = load_sample_raw()
    return _build("sample", x_tr, y_tr, x_te, y_te, n_val=n_val, limit_train=limit_train)


# ---------------------------------------------------------------- user arrays

def _from_arrays(arrays: dict, *, n_val, limit_train, n_classes, class_names, name,
                 ) -> Dataset:
    """Validate and convert the user's arrays (see :meth:`Dataset.from_arrays`).

    Raises TypeError / ValueError naming the array; nothing given is modified.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if (arrays["x_val"] is None) != (arrays["y_val"] is None):
        given = "x_val" if arrays["x_val"] is not None else "y_val"
        raise ValueError(f"{given} given without "
                         f"{'y_val' if given == 'x_val' else 'x_val'}: give both or neither")
    has_val = arrays["x_val"] is not None
    if has_val and n_val is not None:
        raise ValueError("n_val applies only without x_val/y_val (the validation split "
                         "is then taken from the end of x_train)")
    splits = ("train", "val", "test") if has_val else ("train", "test")
    xs, ys = {}, {}
    for split in splits:
        xs[split] = _check_images(arrays[f"x_{split}"], f"x_{split}",
                                  allow_empty=split == "val")
        ys[split] = _check_labels(arrays[f"y_{split}"], f"y_{split}", len(xs[split]),
                                  f"x_{split}")
    for split in splits[1:]:
        if xs[split].shape[1:] != xs["train"].shape[1:]:
            raise ValueError(f"x_{split} images are {xs[split].shape[1:]} (C, H, W) but "
                             f"x_train images are {xs['train'].shape[1:]}")
        if (xs[split].dtype == np.uint8) != (xs["train"].dtype == np.uint8):
            raise ValueError(f"x_{split} is {xs[split].dtype} but x_train is "
                             f"{xs['train'].dtype}: give every split as uint8 pixels or "
                             f"every split as floats")

    if class_names is not None:
        if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
            raise TypeError("class_names must be a sequence of strings")
        class_names = tuple(class_names)
        if n_classes is not None and n_classes != len(class_names):
            raise ValueError(f"n_classes={n_classes} but {len(class_names)} class_names")
        n_classes = len(class_names)
    top = max((int(y.max()) for y in ys.values() if y.size), default=0)
    if n_classes is None:
        n_classes = top + 1
        if n_classes < 2:
            raise ValueError("the labels hold a single class (0); a classifier needs at "
                             "least 2 (pass n_classes to say how many there are)")
    else:
        if isinstance(n_classes, (bool, np.bool_)) or not isinstance(n_classes,
                                                                     numbers.Integral):
            raise TypeError(f"n_classes must be an integer, got {n_classes!r}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        n_classes = int(n_classes)
        for split in splits:
            bad = np.flatnonzero(ys[split] >= n_classes)
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"y_{split}: label {int(ys[split][i])} at index {i} is "
                                 f"outside 0..{n_classes - 1} (n_classes={n_classes}; "
                                 f"{bad.size} such labels)")
    if class_names is None:
        class_names = tuple(str(i) for i in range(n_classes))

    n = len(xs["train"])
    if has_val:
        x_tr, y_tr, x_va, y_va = xs["train"], ys["train"], xs["val"], ys["val"]
    else:
        if n_val is None:
            n_val = int(round(0.1 * n))
        if isinstance(n_val, (bool, np.bool_)) or not isinstance(n_val, numbers.Integral):
            raise TypeError(f"n_val must be an integer, got {n_val!r}")
        if not 0 <= n_val < n:
            raise ValueError(f"n_val={n_val} must be in 0..{n - 1} ({n} training images)")
        x_tr, y_tr = xs["train"][:n - n_val], ys["train"][:n - n_val]
        x_va, y_va = xs["train"][n - n_val:], ys["train"][n - n_val:]
    if limit_train is not None:
        if isinstance(limit_train, (bool, np.bool_)) or not isinstance(
                limit_train, numbers.Integral) or limit_train < 1:
            raise ValueError(f"limit_train must be an integer >= 1 or None, got "
                             f"{limit_train!r}")
        x_tr, y_tr = x_tr[:int(limit_train)], y_tr[:int(limit_train)]

    if xs["train"].dtype == np.uint8:
        def prep(a):
            return np.ascontiguousarray(scale_to_pm1(a))
        how = "2x/255-1"
    else:
        def prep(a):
            return np.ascontiguousarray(a, dtype=np.float32)
        how = "as given"
    out = [prep(x_tr), prep(x_va), prep(xs["test"])]
    for key, a in zip(("x_train", "x_val", "x_test"), out):
        # finite float64 values can still overflow float32
        if how == "as given" and a.size and not np.isfinite(a).all():
            raise ValueError(f"{key} has values beyond the float32 range")
    return Dataset(
        x_train=out[0], y_train=y_tr.astype(np.int64), x_val=out[1],
        y_val=y_va.astype(np.int64), x_test=out[2], y_test=ys["test"].astype(np.int64),
        name=name, input_shape=tuple(int(d) for d in xs["train"].shape[1:]),
        n_classes=n_classes, class_names=class_names, preprocessing=how)


def _check_images(x, key: str, allow_empty: bool) -> np.ndarray:
    """(N, C, H, W) view of an image array (see Dataset.from_arrays for the layouts)."""
    if x is None:
        raise ValueError(f"{key} is missing")
    x = np.asarray(x)
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise TypeError(f"{key} has dtype {x.dtype}; images must be uint8 (pixels 0..255, "
                        f"scaled to [-1, 1]) or floating point (used as given)")
    if x.ndim == 2:
        x = x[:, None, None, :]
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3):
            x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    else:
        raise ValueError(f"{key} has shape {x.shape}; images must be (N, C, H, W), "
                         f"(N, H, W, C) with C = 1 or 3 last, (N, H, W) or (N, D)")
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{key} is empty (shape {x.shape})")
    if 0 in x.shape[1:]:
        raise ValueError(f"{key} has an empty image axis (C, H, W) = {x.shape[1:]}")
    if x.dtype.kind == "f" and x.size and not np.isfinite(x).all():
        what = "NaN" if np.isnan(x).any() else "infinity"
        raise ValueError(f"{key} contains {what}")
    return x


def _check_labels(y, key: str, n: int, xkey: str) -> np.ndarray:
    """(N,) integer labels >= 0, one per image of ``xkey``."""
    if y is None:
        raise ValueError(f"{key} is missing")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind not in "iu":
        raise TypeError(f"{key} has dtype {y.dtype}; labels must be integers "
                        f"0..n_classes-1")
    if y.ndim != 1:
        raise ValueError(f"{key} has shape {y.shape}; labels must be (N,) or (N, 1)")
    if len(y) != n:
        raise ValueError(f"{xkey} has {n} images but {key} has {len(y)} labels")
    if y.size:
        neg = np.flatnonzero(y < 0)
        if neg.size:
            i = int(neg[0])
            raise ValueError(f"{key}: label {int(y[i])} at index {i} is negative "
                             f"(labels are 0..n_classes-1)")
    return y


def load_npz(path: PathLike, *, n_val: int | None = None, limit_train: int | None = None,
             n_classes: int | None = None, name: str | None = None) -> Dataset:
    """A dataset from one ``.npz`` file: what ``--dataset npz:PATH`` loads.

    The file holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` and
    optionally ``x_val``/``y_val`` and ``class_names`` (a 1-D string array),
    written with ``np.savez`` or ``np.savez_compressed``. It is read with
    ``allow_pickle=False`` (object arrays are refused) and checked by
    :func:`~minibnn.data.readers.read_npz_arrays` and then exactly as
    :meth:`Dataset.from_arrays` checks arrays (dtypes, layouts, lengths, NaN,
    label range).

    Parameters
    ----------
    path : str or os.PathLike
        The file (``~`` is expanded).
    n_val, limit_train, n_classes
        As in :meth:`Dataset.from_arrays`.
    name : str, optional
        Default ``"npz:PATH"``.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        Anything wrong with the file or its arrays; the message names the file
        and the array.
    """
    path = Path(os.fspath(path)).expanduser()
    arrays = read_npz_arrays(path)
    class_names = arrays.pop("class_names", None)
    if class_names is not None:
        if class_names.dtype.kind != "U" or class_names.ndim != 1:
            raise DataError(f"{path}: class_names must be a 1-D array of strings, got "
                            f"{class_names.dtype} of shape {class_names.shape}")
        class_names = tuple(str(c) for c in class_names)
    arrays.setdefault("x_val", None)
    arrays.setdefault("y_val", None)
    try:
        return _from_arrays(arrays, n_val=n_val, limit_train=limit_train,
                            n_classes=n_classes, class_names=class_names,
                            name=name if name is not None else f"{NPZ_PREFIX}{path}")
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: {e}") from e


# ---------------------------------------------------------------- by name

_LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist,
            "cifar10": load_cifar10, "svhn": load_svhn}


def load_dataset(name: str, data_dir: PathLike | None = None,
                 limit_train: int | None = None, download: bool = True,
                 progress: bool = True, **kwargs) -> Dataset:
    """Load a dataset by name, fetching a missing built-in one first.

    Parameters
    ----------
    name : str
        A :data:`~minibnn.data.catalog.DATASETS` name (``"mnist"``,
        ``"fashion-mnist"``, ``"cifar10"``, ``"svhn"``, ``"sample"``;
        case-insensitive, ``-``/``_`` ignored, so ``"cifar-10"`` works), or
        ``"npz:PATH"`` for one ``.npz`` file of your own arrays
        (:func:`load_npz`).
    data_dir : str or os.PathLike, optional
        Data directory (ignored for ``"sample"`` and ``npz:``); default:
        ``MINIBNN_DATA`` or the per-user default, see
        :func:`~minibnn.data.paths.data_dir`.
    limit_train : int, optional
        Keep only the first ``limit_train`` training images (after the split).
    download : bool, default True
        When the dataset's files are not in the data directory, fetch them
        first (:func:`~minibnn.data.fetch.fetch_dataset`: checksummed, atomic).
        False raises :class:`~minibnn.data.errors.MissingDataError` instead.
        Files that are present but bad are reported, never re-downloaded.
    progress : bool, default True
        Messages and a progress bar on stderr while fetching.
    **kwargs
        Passed to the loader (``n_val``, ``strict``, ``zca``, ``extra``, ...).

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        Unknown name, bad option.
    DataError
        A file is bad; or missing and not fetched (``download=False``), or the
        fetch failed -- then :class:`MissingDataError`, whose message says why
        and what to do offline (``--no-download``, ``minibnn fetch NAME --from
        COPY``, ``--dataset sample``).
    """
    if isinstance(name, str) and name.startswith(NPZ_PREFIX):
        path = name[len(NPZ_PREFIX):]
        if not path:
            raise ValueError(f"{NPZ_PREFIX} needs a path, e.g. {NPZ_PREFIX}data/mine.npz")
        return load_npz(path, limit_train=limit_train, name=name, **kwargs)
    key = canonical_name(name)
    if key == "sample":
        return load_sample(limit_train=limit_train, **kwargs)
    loader = _LOADERS[key]
    try:
        return loader(data_dir, limit_train=limit_train, **kwargs)
    except MissingDataError:
        if not download:
            raise
    root = resolve_data_dir(data_dir)
    if progress:
        print(f"{key}: not found in {root}; fetching it (--no-download / download=False "
              f"forbids this)", file=sys.stderr, flush=True)
    try:
        fetch_dataset(key, root, progress=progress, extra=bool(kwargs.get("extra", False)))
    except (FetchError, DataError, OSError) as e:
        # a network failure carries its own --from advice; offline_hint says more
        why = getattr(e, "detail", None) or str(e)
        raise MissingDataError(f"{key} is not in {root}, and fetching it failed: {why}. "
                               + offline_hint(key, root)) from e
    return loader(data_dir, limit_train=limit_train, **kwargs)
