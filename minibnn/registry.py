"""The one registry of names: what ``--optimizer adam`` or ``--dataset sample`` stands for.

The command line (``choices=``), :class:`minibnn.train.TrainConfig` validation and the
training loop all read these tables, so a new optimizer, schedule, loss, architecture,
dataset or backend is added in one place.  The objects themselves live in their own
modules (``optim.Adam``, ``schedules.ExponentialDecay``, ``zoo.ARCHITECTURES``,
``kernels.BACKENDS``, ``data.DATASETS``); this module only maps names to them.  Modules
are imported when a factory runs, so reading the names stays cheap.

Every factory takes the run's :class:`~minibnn.train.TrainConfig` (and the model, for an
optimizer) and returns the object.
"""

import importlib
import inspect

__all__ = ["OPTIMIZERS", "SCHEDULES", "LOSSES", "BN_KINDS", "grad_dtypes", "DEFAULT_ARCH", "architectures",
           "backends", "datasets", "fetchable", "input_shape", "NPZ_PREFIX", "default_arch",
           "make_optimizer", "make_schedule", "make_loss", "make_model", "accepts"]


def _mod(name):
    return importlib.import_module(f"minibnn.{name}")


# -- optimizers: name -> factory(config, model) -------------------------------
def _adam(config, model):
    return _mod("optim").Adam(model, lr=config.lr_start)


def _adamax(config, model):
    return _mod("optim").AdaMax(model, lr=config.lr_start)


def _shift_adamax(config, model):
    return _mod("optim").ShiftAdaMax(model, lr=config.lr_start)


def _sgd(config, model):
    return _mod("optim").SGD(model, lr=config.lr_start, momentum=0.9)


def _bop(config, model):
    # Bop flips the binary weights; the float parameters (BN) run Adam at lr_start
    optim = _mod("optim")
    return optim.Bop(model, fp_optimizer=optim.Adam(model, lr=config.lr_start))


OPTIMIZERS = {"adam": _adam, "adamax": _adamax, "shift-adamax": _shift_adamax, "sgd": _sgd,
              "bop": _bop}


# -- learning-rate schedules: name -> factory(config) -------------------------
def _exponential(config):
    # the decay horizon is the run's planned epochs, or the original plan of a run
    # continued with --extend-epochs (the decay factor per epoch is kept)
    horizon = config.schedule_epochs or config.epochs
    return _mod("schedules").ExponentialDecay(config.lr_start, config.lr_end, horizon)


def _constant(config):
    return _mod("schedules").Constant(config.lr_start)


SCHEDULES = {"exponential": _exponential, "constant": _constant}


# -- losses: name -> factory() returning loss(scores (N, C), y (N,)) -> (loss, dscores)
def _squared_hinge():
    losses = _mod("losses")
    return lambda scores, y: losses.squared_hinge(scores, y, scores.shape[1])


def _cross_entropy():
    return _mod("losses").softmax_cross_entropy


LOSSES = {"squared_hinge": _squared_hinge, "cross_entropy": _cross_entropy}

#: batch-norm kinds of the zoo builders
BN_KINDS = ("standard", "shift")


def grad_dtypes():
    """The backward products' precisions (``minibnn.functional.GRAD_DTYPES``)."""
    return _mod("functional").GRAD_DTYPES


# -- architectures, datasets, backends: the names their owners publish ---------
def architectures():
    """Names of ``zoo.ARCHITECTURES``, sorted."""
    return sorted(_mod("zoo").ARCHITECTURES)


def backends():
    """``kernels.BACKENDS`` (every name; whether one runs here is decided at selection)."""
    from .kernels.backend import BACKENDS
    return tuple(BACKENDS)


#: ``--dataset npz:PATH`` reads a dataset from one .npz file (the data layer's pattern)
NPZ_PREFIX = getattr(_mod("data"), "NPZ_PREFIX", "npz:")


def datasets():
    """Dataset names ``minibnn.data.load_dataset`` accepts (the keys of ``data.DATASETS``)."""
    return tuple(_mod("data").DATASETS)


def fetchable():
    """Datasets ``minibnn fetch`` can download (``data.FETCHABLE``; empty without it)."""
    return tuple(getattr(_mod("data"), "FETCHABLE", ()))


def input_shape(dataset):
    """(C, H, W) of a named dataset (``data.DATASETS[name].input_shape``), else None."""
    info = getattr(_mod("data"), "DATASETS", {})
    info = info.get(dataset) if isinstance(info, dict) else None
    shape = getattr(info, "input_shape", None)
    return tuple(shape) if shape is not None else None


#: the paper's architecture for its ConvNet datasets; others go by input shape
DEFAULT_ARCH = {"cifar10": "cifar10_convnet", "svhn": "svhn_convnet"}


def default_arch(dataset, input_shape_=None):
    """The architecture for ``dataset``: the paper's ConvNet for CIFAR-10 / SVHN, else
    by the input shape (C, H, W; ``input_shape_`` or the dataset's): the MLP for one
    channel (MNIST, Fashion-MNIST, the sample), the CIFAR-10 ConvNet otherwise."""
    if dataset in DEFAULT_ARCH:
        return DEFAULT_ARCH[dataset]
    shape = input_shape_ or input_shape(dataset)
    if shape is not None and len(shape) == 3 and shape[0] != 1:
        return "cifar10_convnet"
    return "mnist_mlp"


def accepts(fn, name):
    """True if callable ``fn`` names a parameter ``name`` (a ``**kwargs`` that forwards
    elsewhere does not count: the feature must be there, not just accepted)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


# -- the factories the training loop calls ------------------------------------
def _lookup(table, kind, name):
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r} (known: {', '.join(table)})") from None


def make_optimizer(config, model):
    return _lookup(OPTIMIZERS, "optimizer", config.optimizer)(config, model)


def make_schedule(config):
    return _lookup(SCHEDULES, "schedule", config.schedule)(config)


def make_loss(name):
    return _lookup(LOSSES, "loss", name)()


def make_model(config, input_shape, n_classes=10):
    """The model of ``config`` for inputs of ``input_shape`` (C, H, W) and ``n_classes``."""
    import numpy as np

    zoo = _mod("zoo")
    arch = config.resolved_arch(input_shape)
    builder = zoo.ARCHITECTURES.get(arch)
    if builder is None:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(architectures())})")
    if arch == "mnist_mlp":
        kw = dict(hidden=config.hidden, depth=config.depth,
                  in_features=int(np.prod(input_shape)), dropout_in=config.dropout_in,
                  dropout_hidden=config.dropout_hidden)
    else:
        if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
            raise ValueError(f"architecture {arch!r} needs square (C, H, H) images, "
                             f"got {tuple(input_shape)}")
        kw = dict(width=config.width, in_channels=input_shape[0], image_size=input_shape[1])
    kw.update(n_classes=n_classes, bn=config.bn, backend=config.backend, seed=config.seed)
    if config.stochastic_weights:
        if not accepts(builder, "stochastic_weights"):
            raise ValueError(f"stochastic_weights: architecture {arch!r} does not support "
                             "stochastic weight binarization in this minibnn")
        kw["stochastic_weights"] = True
    return builder(**kw).set_grad_dtype(config.grad_dtype)
