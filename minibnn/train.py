"""The training loop: epochs of shuffled mini-batches, evaluation, checkpoints, resume.

A run directory holds:

* ``config.json`` -- the :class:`TrainConfig` of the run;
* ``metrics.jsonl`` -- one JSON line per epoch (epoch, lr, train loss/error, validation
  and test error, seconds, plus the per-layer statistics of :mod:`minibnn.stats`);
* ``best.npz`` -- the model (``Sequential.save`` format) of the epoch with the lowest
  validation error (the paper's selection rule);
* ``last.npz`` -- a resumable checkpoint: model, optimizer state, the data order of the
  current epoch, every random generator's state and the position inside the epoch;
* ``summary.json`` -- best validation error, the test error at that epoch, total time.

Resuming (``resume=True``) continues from ``last.npz``; because data order and random
state are part of the checkpoint, an interrupted-and-resumed run ends with weights
identical, bit for bit, to an uninterrupted one.  Ctrl-C (SIGINT) is caught between two
mini-batches: the loop writes ``last.npz`` at that point and returns cleanly.

The last incomplete mini-batch of an epoch is dropped, as in the paper's code.
"""

import dataclasses
import json
import math
import os
import signal
import sys
import time
from typing import Optional

import numpy as np

from . import stats
from .checkpoint import atomic_write_text, load_checkpoint, save_checkpoint

DEFAULT_ARCH = {"mnist": "mnist_mlp", "sample": "mnist_mlp", "cifar10": "cifar10_convnet",
                "svhn": "svhn_convnet"}


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run (written to ``config.json``)."""

    dataset: str = "mnist"
    arch: Optional[str] = None          # default: DEFAULT_ARCH[dataset]
    hidden: int = 4096                  # MLP width
    depth: int = 3                      # MLP hidden layers
    width: float = 1.0                  # ConvNet channel multiplier
    epochs: int = 10
    batch_size: int = 100
    lr_start: float = 3e-3
    lr_end: float = 3e-7
    schedule: str = "exponential"       # or "constant"
    optimizer: str = "adam"             # adam, adamax, shift-adamax, bop, sgd
    bn: str = "standard"                # or "shift"
    loss: str = "squared_hinge"         # or "cross_entropy"
    dropout_in: float = 0.0
    dropout_hidden: float = 0.0
    seed: int = 0
    backend: str = "cpu"
    limit_train: Optional[int] = None
    data_dir: Optional[str] = None
    eval_batch_size: int = 1000

    def resolved_arch(self):
        return self.arch or DEFAULT_ARCH[self.dataset]

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)


def build_model(config, input_shape):
    """The model of ``config`` for inputs of ``input_shape`` (C, H, W)."""
    from . import zoo

    arch = config.resolved_arch()
    if arch == "mnist_mlp":
        return zoo.build(arch, hidden=config.hidden, depth=config.depth,
                         in_features=int(np.prod(input_shape)), dropout_in=config.dropout_in,
                         dropout_hidden=config.dropout_hidden, bn=config.bn,
                         backend=config.backend, seed=config.seed)
    return zoo.build(arch, width=config.width, bn=config.bn, backend=config.backend,
                     seed=config.seed, in_channels=input_shape[0])


def build_optimizer(config, model):
    from . import optim

    name = config.optimizer
    if name == "adam":
        return optim.Adam(model, lr=config.lr_start)
    if name == "adamax":
        return optim.AdaMax(model, lr=config.lr_start)
    if name == "shift-adamax":
        return optim.ShiftAdaMax(model, lr=config.lr_start)
    if name == "sgd":
        return optim.SGD(model, lr=config.lr_start, momentum=0.9)
    if name == "bop":
        return optim.Bop(model, fp_optimizer=optim.Adam(model, lr=config.lr_start))
    raise ValueError(f"unknown optimizer {name!r} (adam, adamax, shift-adamax, sgd, bop)")


def build_schedule(config):
    from . import schedules

    if config.schedule == "exponential":
        return schedules.exponential_decay(config.lr_start, config.lr_end, config.epochs)
    if config.schedule == "constant":
        return schedules.constant(config.lr_start)
    raise ValueError(f"unknown schedule {config.schedule!r}")


def loss_function(name):
    from . import losses

    if name == "squared_hinge":
        return lambda scores, y: losses.squared_hinge(scores, y, scores.shape[1])
    if name == "cross_entropy":
        return losses.softmax_cross_entropy
    raise ValueError(f"unknown loss {name!r}")


def evaluate(model, x, y, batch_size=1000):
    """Error rate (fraction) of ``model`` in evaluation mode on x (N, ...), y (N,) int."""
    if len(x) == 0:
        return float("nan")
    wrong = 0
    for i in range(0, len(x), batch_size):
        scores = model.forward(x[i:i + batch_size], training=False)
        wrong += int(np.sum(np.argmax(scores, axis=1) != y[i:i + batch_size]))
    return wrong / len(x)


# ---------------------------------------------------------------------------
# random state of the layers (dropout masks, stochastic binarization)
# ---------------------------------------------------------------------------

def _generators(model):
    """(key, Generator) for every np.random.Generator attribute of the model's layers."""
    found = []
    for i, layer in enumerate(getattr(model, "layers", [])):
        for attr, val in sorted(vars(layer).items()):
            if isinstance(val, np.random.Generator):
                found.append((f"{i}.{attr}", val))
    return found


def _rng_states(model, data_rng):
    states = {key: g.bit_generator.state for key, g in _generators(model)}
    states["data"] = data_rng.bit_generator.state
    return states


def _restore_rng_states(model, data_rng, states):
    data_rng.bit_generator.state = states["data"]
    for key, g in _generators(model):
        if key in states:
            g.bit_generator.state = states[key]


# ---------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------

class Progress:
    """One line per epoch; on a terminal, a live bar with images/s, loss and error."""

    def __init__(self, stream=None, enabled=True):
        self.stream = stream or sys.stderr
        self.live = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last = 0.0

    def update(self, epoch, epochs, done, total, images_per_s, loss, err):
        if not self.live or (time.time() - self.last < 0.2 and done < total):
            return
        self.last = time.time()
        width = 24
        filled = int(width * done / max(1, total))
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\repoch {epoch}/{epochs} [{bar}] {done}/{total} "
                          f"{images_per_s:7.0f} img/s  loss {loss:.4f}  err {100 * err:5.2f}%")
        self.stream.flush()

    def end_epoch(self):
        if self.live:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()


class _InterruptFlag:
    """SIGINT sets a flag checked between mini-batches; a second Ctrl-C aborts at once."""

    def __init__(self):
        self.set = False
        self.previous = None

    def __enter__(self):
        def handler(signum, frame):
            if self.set:
                raise KeyboardInterrupt
            self.set = True
            print("\ninterrupt: finishing this mini-batch, then saving last.npz "
                  "(Ctrl-C again to abort without saving)", file=sys.stderr)

        try:
            self.previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


# ---------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------

def train(config, out_dir, resume=False, dataset=None, progress=True, log=print,
          stop_after_batches=None):
    """Train ``config`` into ``out_dir``; returns the summary dict.

    ``dataset``: an already loaded :class:`minibnn.data.Dataset` (else loaded from
    ``config``).  ``stop_after_batches``: stop (as Ctrl-C would) after that many
    mini-batches of this call -- used by the tests to simulate a crash.
    """
    from .data import load_dataset

    os.makedirs(out_dir, exist_ok=True)
    last_path = os.path.join(out_dir, "last.npz")
    best_path = os.path.join(out_dir, "best.npz")
    metrics_path = os.path.join(out_dir, "metrics.jsonl")

    if resume:
        if not os.path.exists(last_path):
            raise FileNotFoundError(f"--resume: no checkpoint at {last_path}")
        model_state, optim_state, meta = load_checkpoint(last_path)
        saved = TrainConfig.from_dict(meta["config"])
        if dataclasses.asdict(saved) != dataclasses.asdict(config):
            log("resume: using the configuration stored in last.npz")
        config = saved
    atomic_write_text(os.path.join(out_dir, "config.json"),
                      json.dumps(dataclasses.asdict(config), indent=2) + "\n")

    if dataset is None:
        dataset = load_dataset(config.dataset, data_dir=config.data_dir, limit_train=config.limit_train)
    x_train, y_train = dataset.x_train, dataset.y_train
    model = build_model(config, x_train.shape[1:])
    opt = build_optimizer(config, model)
    schedule = build_schedule(config)
    loss_fn = loss_function(config.loss)
    data_rng = np.random.default_rng(config.seed)

    start_epoch, start_batch, perm = 0, 0, None
    best = {"val_error": math.inf, "test_error": math.nan, "epoch": -1}
    elapsed_before = 0.0
    if resume:
        model.load_state_dict(model_state)
        opt.load_state_dict({k: v for k, v in optim_state.items() if not k.startswith("_run/")})
        _restore_rng_states(model, data_rng, meta["rng"])
        start_epoch, start_batch = meta["epoch"], meta["batch"]
        if start_batch:
            perm = optim_state["_run/perm"]
        best = meta["best"]
        elapsed_before = meta["elapsed"]
        log(f"resumed from {last_path}: epoch {start_epoch}, batch {start_batch}")
    else:
        # a fresh run starts a fresh metrics file
        atomic_write_text(metrics_path, "")

    n = len(x_train)
    bs = config.batch_size
    n_batches = n // bs
    if n_batches == 0:
        raise ValueError(f"batch size {bs} is larger than the training set ({n} images)")
    bar = Progress(enabled=progress)
    t_start = time.time()
    batches_this_call = 0
    interrupted = False

    def save_last(epoch, batch, perm_now):
        optim_arrays = dict(opt.state_dict())
        if batch:
            optim_arrays["_run/perm"] = perm_now
        meta_now = dict(config=dataclasses.asdict(config), epoch=epoch, batch=batch,
                        rng=_rng_states(model, data_rng), best=best,
                        elapsed=elapsed_before + time.time() - t_start)
        save_checkpoint(last_path, model.state_dict(), optim_arrays, meta_now)

    with _InterruptFlag() as flag:
        for epoch in range(start_epoch, config.epochs):
            lr = float(schedule(epoch))
            opt.lr = lr
            if perm is None:
                perm = data_rng.permutation(n)
            tracker = stats.EpochStats(model)
            t_epoch = time.time()
            loss_sum, wrong, seen = 0.0, 0, 0
            for b in range(start_batch, n_batches):
                idx = perm[b * bs:(b + 1) * bs]
                xb, yb = x_train[idx], y_train[idx]
                scores = model.forward(xb, training=True)
                loss, grad = loss_fn(scores, yb)
                model.backward(grad)
                opt.step()
                tracker.after_batch(model)
                loss_sum += float(loss) * len(yb)
                wrong += int(np.sum(np.argmax(scores, axis=1) != yb))
                seen += len(yb)
                batches_this_call += 1
                bar.update(epoch + 1, config.epochs, b + 1, n_batches,
                           seen / max(1e-9, time.time() - t_epoch), loss_sum / seen, wrong / seen)
                stop = stop_after_batches is not None and batches_this_call >= stop_after_batches
                if (flag.set or stop) and b + 1 < n_batches:
                    save_last(epoch, b + 1, perm)
                    interrupted = True
                    break
                if flag.set or stop:
                    interrupted = True  # finish the epoch's bookkeeping, then stop
            if interrupted and b + 1 < n_batches:
                bar.end_epoch()
                log(f"stopped in epoch {epoch + 1} after batch {b + 1}; resume with --resume")
                break
            bar.end_epoch()
            start_batch = 0
            perm = None
            val_err = evaluate(model, dataset.x_val, dataset.y_val, config.eval_batch_size)
            test_err = evaluate(model, dataset.x_test, dataset.y_test, config.eval_batch_size)
            seconds = time.time() - t_epoch
            row = dict(epoch=epoch + 1, lr=lr, train_loss=loss_sum / max(1, seen),
                       train_error=wrong / max(1, seen), val_error=val_err, test_error=test_err,
                       seconds=seconds, elapsed=elapsed_before + time.time() - t_start)
            row.update(tracker.summary(model))
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            improved = best["epoch"] < 0 or val_err < best["val_error"]
            if improved:
                best = {"val_error": val_err, "test_error": test_err, "epoch": epoch + 1}
                model.save(best_path)
            log(f"epoch {epoch + 1:3d}/{config.epochs}  lr {lr:.2e}  loss {row['train_loss']:.4f}  "
                f"train {100 * row['train_error']:5.2f}%  val {100 * val_err:5.2f}%  "
                f"test {100 * test_err:5.2f}%  {seconds:6.1f}s" + ("  *" if improved else ""))
            save_last(epoch + 1, 0, None)
            if interrupted:
                log(f"stopped after epoch {epoch + 1}; resume with --resume")
                break

    summary = dict(best_epoch=best["epoch"], best_val_error=best["val_error"],
                   test_error_at_best=best["test_error"],
                   total_seconds=elapsed_before + time.time() - t_start,
                   finished=not interrupted, epochs_planned=config.epochs)
    atomic_write_text(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return summary
