"""Datasets for minibnn: MNIST, Fashion-MNIST, CIFAR-10, SVHN, an embedded MNIST
sample, and your own arrays.

Quick use::

    from minibnn.data import load_dataset
    ds = load_dataset("mnist")              # data dir: MINIBNN_DATA or ~/.minibnn/data;
                                            # fetched first if missing (download=False: not)
    ds = load_dataset("sample")             # 2,500/500/1,000 MNIST images, no files needed
    ds = load_dataset("npz:mine.npz")       # x_train, y_train, x_test, y_test[, x_val, y_val]
    ds = Dataset.from_arrays(x_tr, y_tr, x_te, y_te)   # the same checks, from memory
    ds.x_train.shape, ds.x_train.dtype      # (50000, 1, 28, 28) float32 in [-1, 1]
    ds.input_shape                          # (1, 28, 28): what the model takes

Files are read (never unpickled) from the data directory resolved by
:func:`data_dir`: the argument, else ``$MINIBNN_DATA``, else
``$XDG_DATA_HOME/minibnn`` or ``~/.minibnn/data``. :func:`fetch_dataset` (the
``minibnn fetch NAME [--from COPY]`` command; ``data_scripts/fetch_*.py`` in a
checkout) downloads or imports them, checksummed and atomically.
:data:`DATASETS` is the table of names (``npz:PATH`` is a pattern, see
:func:`is_dataset_spec`). Everything wrong with a file raises
:class:`DataError` naming the file; see :mod:`.readers` for the checksum
policy and :mod:`.datasets` for the splits and preprocessing.
"""

from .catalog import DATASETS, NPZ_PREFIX, DatasetInfo, canonical_name, is_dataset_spec
from .datasets import (
    Dataset,
    load_cifar10,
    load_cifar10_raw,
    load_dataset,
    load_fashion_mnist,
    load_fashion_mnist_raw,
    load_mnist,
    load_mnist_raw,
    load_npz,
    load_sample,
    load_sample_raw,
    load_svhn,
    load_svhn_raw,
)
from .errors import DataError, MissingDataError
from .fetch import FETCHABLE, FetchError, fetch_dataset
from .paths import ENV_VAR, data_dir, default_data_dir
from .preprocess import apply_zca, fit_zca, global_contrast_normalize, scale_to_pm1
from .readers import (
    read_cifar10_batch,
    read_cifar10_meta,
    read_idx,
    read_idx_images,
    read_idx_labels,
    read_npz_arrays,
    read_svhn_mat,
)

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "ENV_VAR",
    "FETCHABLE",
    "FetchError",
    "MissingDataError",
    "NPZ_PREFIX",
    "apply_zca",
    "canonical_name",
    "data_dir",
    "default_data_dir",
    "fetch_dataset",
    "fit_zca",
    "global_contrast_normalize",
    "is_dataset_spec",
    "load_cifar10",
    "load_cifar10_raw",
    "load_dataset",
    "load_fashion_mnist",
    "load_fashion_mnist_raw",
    "load_mnist",
    "load_mnist_raw",
    "load_npz",
    "load_sample",
    "load_sample_raw",
    "load_svhn",
    "load_svhn_raw",
    "read_cifar10_batch",
    "read_cifar10_meta",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "read_npz_arrays",
    "read_svhn_mat",
    "scale_to_pm1",
]
