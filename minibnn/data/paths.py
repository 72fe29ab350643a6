"""Where datasets live on disk.

Layout under a data directory ``ROOT`` (the same one the fetch scripts write)::

    ROOT/mnist/                 train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
                                t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]
    ROOT/cifar-10-batches-bin/  data_batch_1.bin .. data_batch_5.bin, test_batch.bin,
                                batches.meta.txt (optional)
    ROOT/svhn/                  train_32x32.mat, test_32x32.mat, extra_32x32.mat (optional)

The loaders also look directly in ``ROOT`` itself, so pointing ``data_dir`` at
e.g. an existing ``mnist/`` folder works too.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "SUBDIRS", "data_dir", "default_data_dir", "fetch_hint"]

#: Environment variable naming the data directory.
ENV_VAR = "MINIBNN_DATA"

#: Sub-directory of the data directory for each dataset.
SUBDIRS = {"mnist": "mnist", "cifar10": "cifar-10-batches-bin", "svhn": "svhn"}


def default_data_dir() -> Path:
    """Per-user default data directory.

    Returns
    -------
    pathlib.Path
        ``$XDG_DATA_HOME/minibnn`` when ``XDG_DATA_HOME`` is set to an absolute
        path, else ``~/.minibnn/data``.
    """
    xdg = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "minibnn"
    return Path.home() / ".minibnn" / "data"


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data directory.

    Precedence: the ``path`` argument, else the ``MINIBNN_DATA`` environment
    variable, else :func:`default_data_dir`. Empty strings count as unset.
    The directory is not created and need not exist.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Explicit data directory (``~`` is expanded).

    Returns
    -------
    pathlib.Path
        Absolute path of the data directory.
    """
    if path is not None and os.fspath(path) != "":
        chosen = Path(path)
    elif os.environ.get(ENV_VAR, ""):
        chosen = Path(os.environ[ENV_VAR])
    else:
        chosen = default_data_dir()
    return chosen.expanduser().absolute()


def fetch_hint(dataset: str, root: Path) -> str:
    """One-paragraph instruction on how to get ``dataset`` into ``root``."""
    script = {"mnist": "fetch_mnist.py", "cifar10": "fetch_cifar10.py",
              "svhn": "fetch_svhn.py"}[dataset]
    return (
        f"To get it, run `python data_scripts/{script} --data-dir {root}` "
        f"(downloads), or `python data_scripts/{script} --data-dir {root} "
        f"--from LOCAL_COPY` to import a local copy; or point the "
        f"{ENV_VAR} environment variable (or the data_dir argument / "
        f"--data-dir option) at a folder that holds {SUBDIRS[dataset]}/."
    )
