"""Where datasets live on disk.

Layout under a data directory ``ROOT`` (the same one the fetch scripts write)::

    ROOT/mnist/                 train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
                                t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]
    ROOT/fashion-mnist/         the same four names (Zalando's Fashion-MNIST files)
    ROOT/cifar-10-batches-bin/  data_batch_1.bin .. data_batch_5.bin, test_batch.bin,
                                batches.meta.txt (optional)
    ROOT/svhn/                  train_32x32.mat, test_32x32.mat, extra_32x32.mat (optional)

The loaders also look directly in ``ROOT`` itself, so pointing ``data_dir`` at
e.g. an existing ``mnist/`` folder works too.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "SUBDIRS", "data_dir", "default_data_dir", "fetch_hint",
           "offline_hint"]

#: Environment variable naming the data directory.
ENV_VAR = "MINIBNN_DATA"

#: Sub-directory of the data directory for each dataset.
SUBDIRS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist",
           "cifar10": "cifar-10-batches-bin", "svhn": "svhn"}


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


def _script(dataset: str) -> str:
    return f"data_scripts/fetch_{dataset.replace('-', '_')}.py"


def fetch_hint(dataset: str, root: Path) -> str:
    """One-paragraph instruction on how to get ``dataset`` into ``root``.

    Names the installed command (``minibnn fetch``), its ``--from`` import of
    a local copy, the equivalent checkout script, the data-directory settings
    and the no-download alternative ``--dataset sample``.
    """
    return (
        f"To get it, run `minibnn fetch {dataset} --data-dir {root}` (downloads and "
        f"verifies; `minibnn train` does this itself unless --no-download is given), "
        f"or `minibnn fetch {dataset} --data-dir {root} --from COPY` to import a "
        f"local copy (the same as `python {_script(dataset)} ... --from COPY` in a "
        f"checkout); or point the {ENV_VAR} environment variable (or the data_dir "
        f"argument / --data-dir option) at a folder that holds {SUBDIRS[dataset]}/; "
        f"or try `--dataset sample` (an MNIST subset inside the package, no download)."
    )


def offline_hint(dataset: str, root: Path) -> str:
    """What to do when downloading ``dataset`` into ``root`` failed (e.g. offline)."""
    return (
        f"Without network access: import a copy with `minibnn fetch {dataset} "
        f"--data-dir {root} --from COPY` (or `python {_script(dataset)} --from COPY`), "
        f"or point {ENV_VAR} / --data-dir at a folder that holds {SUBDIRS[dataset]}/; "
        f"pass --no-download to fail at once instead of trying to download; or use "
        f"`--dataset sample` (an MNIST subset inside the package, no download)."
    )
