"""The dataset names minibnn knows: the one table the loaders, the fetcher and the CLI read.

``DATASETS`` maps each name to a :class:`DatasetInfo` (classes, image shape,
whether ``minibnn fetch`` can download it). Besides these names a dataset can
be given as ``npz:PATH`` (:data:`NPZ_PREFIX`): one ``.npz`` file of the user's
own arrays, see :func:`minibnn.data.load_npz`. :func:`is_dataset_spec` says
whether a string is either.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetInfo", "DATASETS", "NPZ_PREFIX", "canonical_name", "is_dataset_spec",
           "DIGITS", "CIFAR10_CLASSES", "FASHION_MNIST_CLASSES"]

#: ``npz:PATH`` names a dataset stored in one .npz file (a pattern, not a name).
NPZ_PREFIX = "npz:"

DIGITS = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a built-in dataset before loading it.

    Attributes
    ----------
    name : str
        The canonical name (the key of :data:`DATASETS`).
    n_classes : int
        Number of labels (0 .. n_classes-1).
    input_shape : tuple of int
        (C, H, W) of one image as the loaders return it.
    fetchable : bool
        ``minibnn fetch NAME`` can download it (False for ``sample``, which
        ships inside the package).
    subdir : str or None
        Folder under the data directory (None: needs no files).
    class_names : tuple of str
        Label names in label order.
    description : str
        One line for help texts.
    """

    name: str
    n_classes: int
    input_shape: tuple[int, int, int]
    fetchable: bool
    subdir: str | None
    class_names: tuple[str, ...]
    description: str


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 10, (1, 28, 28), True, "mnist", DIGITS,
                         "MNIST handwritten digits, 60,000 + 10,000 images"),
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, (1, 28, 28), True, "fashion-mnist",
                                 FASHION_MNIST_CLASSES,
                                 "Zalando's Fashion-MNIST, 60,000 + 10,000 images"),
    "cifar10": DatasetInfo("cifar10", 10, (3, 32, 32), True, "cifar-10-batches-bin",
                           CIFAR10_CLASSES, "CIFAR-10, 50,000 + 10,000 colour images"),
    "svhn": DatasetInfo("svhn", 10, (3, 32, 32), True, "svhn", DIGITS,
                        "SVHN cropped digits, 73,257 + 26,032 (+ 531,131 extra) images"),
    "sample": DatasetInfo("sample", 10, (1, 28, 28), False, None, DIGITS,
                          "3,000 + 1,000 MNIST images shipped in the package"),
}

# Spellings accepted besides the canonical names: case, '-' and '_' are ignored.
_KEYS = {n.replace("-", ""): n for n in DATASETS}


def canonical_name(name: str) -> str:
    """The :data:`DATASETS` key ``name`` stands for (``"MNIST"``, ``"cifar-10"``, ...).

    Raises
    ------
    ValueError
        Not a string, or no such dataset (the message lists the names).
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = _KEYS.get(name.lower().replace("-", "").replace("_", ""))
    if key is None:
        raise ValueError(f"unknown dataset {name!r}; choose one of "
                         f"{', '.join(DATASETS)}, or {NPZ_PREFIX}PATH")
    return key


def is_dataset_spec(text: object) -> bool:
    """True if ``text`` names a dataset :func:`~minibnn.data.load_dataset` accepts:
    a :data:`DATASETS` name (any spelling :func:`canonical_name` takes) or
    ``npz:PATH`` with a non-empty PATH. Whether the files exist is not checked."""
    if not isinstance(text, str):
        return False
    if text.startswith(NPZ_PREFIX):
        return len(text) > len(NPZ_PREFIX)
    try:
        canonical_name(text)
    except ValueError:
        return False
    return True
