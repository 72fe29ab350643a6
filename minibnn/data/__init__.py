"""Datasets for minibnn: MNIST, CIFAR-10, SVHN and an embedded MNIST sample.

Quick use::

    from minibnn.data import load_dataset
    ds = load_dataset("mnist")              # data dir: MINIBNN_DATA or ~/.minibnn/data
    ds = load_dataset("sample")             # 2,500/500/1,000 MNIST images, no files needed
    ds.x_train.shape, ds.x_train.dtype      # (50000, 1, 28, 28) float32 in [-1, 1]

Files are read (never unpickled) from the data directory resolved by
:func:`data_dir`: the argument, else ``$MINIBNN_DATA``, else
``$XDG_DATA_HOME/minibnn`` or ``~/.minibnn/data``. Get them with
``python data_scripts/fetch_mnist.py`` (or ``fetch_cifar10.py`` /
``fetch_svhn.py``), optionally ``--from LOCAL_COPY``. Everything wrong with a
file raises :class:`DataError` naming the file; see :mod:`.readers` for the
checksum policy and :mod:`.datasets` for the splits and preprocessing.
"""

from .datasets import (
    DATASETS,
    Dataset,
    load_cifar10,
    load_cifar10_raw,
    load_dataset,
    load_mnist,
    load_mnist_raw,
    load_sample,
    load_sample_raw,
    load_svhn,
    load_svhn_raw,
)
from .errors import DataError
from .paths import ENV_VAR, data_dir, default_data_dir
from .preprocess import apply_zca, fit_zca, global_contrast_normalize, scale_to_pm1
from .readers import (
    read_cifar10_batch,
    read_cifar10_meta,
    read_idx,
    read_idx_images,
    read_idx_labels,
    read_svhn_mat,
)

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "ENV_VAR",
    "apply_zca",
    "data_dir",
    "default_data_dir",
    "fit_zca",
    "global_contrast_normalize",
    "load_cifar10",
    "load_cifar10_raw",
    "load_dataset",
    "load_mnist",
    "load_mnist_raw",
    "load_sample",
    "load_sample_raw",
    "load_svhn",
    "load_svhn_raw",
    "read_cifar10_batch",
    "read_cifar10_meta",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "read_svhn_mat",
    "scale_to_pm1",
]
