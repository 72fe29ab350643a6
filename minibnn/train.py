"""The training loop: epochs of shuffled mini-batches, evaluation, checkpoints, resume.

A run directory (:class:`minibnn.rundir.RunDir`) holds:

* ``config.json`` -- the :class:`TrainConfig` of the run;
* ``metrics.jsonl`` -- one JSON line per epoch (epoch, lr, train loss/error, validation
  and test error, seconds, plus the per-layer statistics of :mod:`minibnn.stats`);
* ``best.npz`` -- the model (``Sequential.save`` format) of the epoch with the lowest
  validation error (the paper's selection rule);
* ``last.npz`` -- a resumable checkpoint: model, optimizer state, the data order of the
  current epoch, the epoch's accumulators so far (loss sum, error count, statistics),
  every random generator's state and the position inside the epoch;
* ``summary.json`` -- best validation error, the test error at that epoch, total time.

Resuming (``resume=True``) continues from ``last.npz``; because data order, random state
and the partial epoch's accumulators are part of the checkpoint, an interrupted-and-
resumed run ends with weights identical, bit for bit, and ``metrics.jsonl`` rows equal
(wall-clock fields aside) to an uninterrupted one -- also after ``kill -9``, see
:mod:`minibnn.rundir`.  Ctrl-C (SIGINT) is caught between two mini-batches: the loop
writes ``last.npz`` at that point and returns cleanly.

Resume uses the settings stored in ``last.npz``; asking for different ones is refused
with the list of differences, except ``data_dir`` and ``backend`` (where the data and
the kernels are, not what is trained).  ``extend_epochs=N`` continues a run (finished
or not) for ``N`` more epochs than it planned; the learning-rate schedule keeps its
original horizon (``schedule_epochs``), so exponential decay continues at the same
factor per epoch, below ``lr_end``.

The last incomplete mini-batch of an epoch is dropped, as in the paper's code.

Backends: the loop body (one mini-batch, the epoch's sums, evaluation, the host view of
the model for statistics and checkpoints) is an object chosen once by
:func:`loop_class`: :class:`HostLoop` on the CPU backends, and on ``cuda``
:class:`minibnn.device.DeviceLoop`, which keeps the model, the optimizer state and the
dataset on the GPU for the whole run, sums the loss and errors there and copies them
back once per epoch (or per progress-bar refresh).  Checkpoints have the same format
either way (written from host copies), so a run moves between backends on resume; on
the same device a resumed ``cuda`` run is bit-exact too.
"""

import dataclasses
import math
import signal
import sys
import time
from typing import Optional

import numpy as np

from . import registry, stats
from .checks import check_choice, check_int, check_real_scalar
from .rundir import RunDir, kill_point


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run (written to ``config.json``)."""

    dataset: str = "mnist"              # a registry.datasets() name or "npz:PATH"
    arch: Optional[str] = None          # default: registry.default_arch(dataset)
    hidden: int = 4096                  # MLP width
    depth: int = 3                      # MLP hidden layers
    width: float = 1.0                  # ConvNet channel multiplier
    epochs: int = 10
    batch_size: int = 100
    lr_start: float = 3e-3
    lr_end: float = 3e-7
    schedule: str = "exponential"       # registry.SCHEDULES
    optimizer: str = "adam"             # registry.OPTIMIZERS
    bn: str = "standard"                # registry.BN_KINDS
    loss: str = "squared_hinge"         # registry.LOSSES
    dropout_in: float = 0.0
    dropout_hidden: float = 0.0
    seed: int = 0
    backend: str = "cpu"                # registry.backends()
    limit_train: Optional[int] = None
    data_dir: Optional[str] = None
    eval_batch_size: int = 1000
    schedule_epochs: Optional[int] = None  # the LR schedule's horizon (default: epochs)
    stochastic_weights: bool = False    # stochastic binarization of the weights
    grad_dtype: str = "float32"         # registry.grad_dtypes(): the backward products

    #: settings a resume may change: where the data and the kernels are, not what is trained
    RESUME_MAY_CHANGE = ("data_dir", "backend")

    def resolved_arch(self, input_shape=None):
        return self.arch or registry.default_arch(self.dataset, input_shape)

    def validated(self, own_data=False):
        """``self`` after checking every field; ``ValueError``/``TypeError`` naming it.

        ``own_data``: the run trains on a :class:`minibnn.data.Dataset` handed to
        :func:`train` (e.g. ``Dataset.from_arrays``), so ``dataset`` is only its label."""
        datasets = registry.datasets()
        if own_data:
            if not isinstance(self.dataset, str) or not self.dataset:
                raise ValueError(f"dataset must be a non-empty label, got {self.dataset!r}")
        elif not isinstance(self.dataset, str) or not (
                self.dataset in datasets or self.dataset.startswith(registry.NPZ_PREFIX)):
            raise ValueError(f"dataset must be one of {', '.join(datasets)} or "
                             f"{registry.NPZ_PREFIX}PATH; got {self.dataset!r}")
        if self.arch is not None:
            check_choice(self.arch, "arch", registry.architectures())
        check_int(self.hidden, "hidden", minimum=1)
        check_int(self.depth, "depth", minimum=1)
        check_real_scalar(self.width, "width", lo=0.0, lo_open=True)
        check_int(self.epochs, "epochs", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_real_scalar(self.lr_start, "lr_start", lo=0.0, lo_open=True)
        check_real_scalar(self.lr_end, "lr_end", lo=0.0, lo_open=True)
        check_choice(self.schedule, "schedule", list(registry.SCHEDULES))
        check_choice(self.optimizer, "optimizer", list(registry.OPTIMIZERS))
        check_choice(self.bn, "bn", registry.BN_KINDS)
        check_choice(self.loss, "loss", list(registry.LOSSES))
        check_real_scalar(self.dropout_in, "dropout_in", lo=0.0, hi=1.0, hi_open=True)
        check_real_scalar(self.dropout_hidden, "dropout_hidden", lo=0.0, hi=1.0, hi_open=True)
        check_int(self.seed, "seed", minimum=0)
        check_choice(self.backend, "backend", registry.backends())
        if self.limit_train is not None:
            check_int(self.limit_train, "limit_train", minimum=1)
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise TypeError(f"data_dir must be a str path, got {type(self.data_dir).__name__}")
        check_int(self.eval_batch_size, "eval_batch_size", minimum=1)
        if self.schedule_epochs is not None:
            check_int(self.schedule_epochs, "schedule_epochs", minimum=1)
        if not isinstance(self.stochastic_weights, bool):
            raise TypeError(f"stochastic_weights must be True or False, got {self.stochastic_weights!r}")
        check_choice(self.grad_dtype, "grad_dtype", registry.grad_dtypes())
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)


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

    def due(self, done, total):
        """True when :meth:`update` would draw now (the device loop copies its sums
        back only then)."""
        return self.live and (time.time() - self.last >= 0.2 or done >= total)

    def update(self, epoch, epochs, done, total, images_per_s, loss, err):
        if not self.due(done, total):
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
# resume: which settings
# ---------------------------------------------------------------------------

def resume_config(stored, requested=None, extend_epochs=None, source="last.npz", own_data=False):
    """The config a resumed run uses: ``stored`` (a dict from the checkpoint), with
    ``requested`` checked against it.

    ``requested``: ``None`` (use the stored settings), a :class:`TrainConfig` (every field
    compared) or a mapping field -> value (only those compared; the command line passes
    the flags that were given).  A difference outside ``RESUME_MAY_CHANGE`` raises
    ``ValueError`` listing every one.  ``extend_epochs=N``: ``epochs`` becomes the stored
    plan + N (``requested`` epochs are not compared) and ``schedule_epochs`` keeps the
    original horizon.  ``own_data``: see :meth:`TrainConfig.validated`.
    """
    try:
        config = TrainConfig.from_dict(stored).validated(own_data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: the stored configuration is not valid ({exc})") from None
    if requested is None:
        asked = {}
    elif isinstance(requested, TrainConfig):
        asked = dataclasses.asdict(requested)
        asked.pop("schedule_epochs")  # internal: set by extend_epochs, not asked for
    else:
        asked = dict(requested)
        unknown = set(asked) - set(dataclasses.asdict(config))
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
    if extend_epochs is not None:
        asked.pop("epochs", None)
    changes = {k: v for k, v in asked.items() if getattr(config, k) != v}
    refused = {k: v for k, v in changes.items() if k not in TrainConfig.RESUME_MAY_CHANGE}
    if refused:
        diff = "; ".join(f"{k} {v!r} (stored: {getattr(config, k)!r})" for k, v in refused.items())
        raise ValueError(f"{source} was written with other settings: {diff}. Resume with the "
                         "stored settings (leave these out), start a new run in another "
                         "directory, or continue for more epochs with extend_epochs / "
                         "--extend-epochs N")
    config = dataclasses.replace(config, **changes)
    if extend_epochs is not None:
        n = check_int(extend_epochs, "extend_epochs", minimum=1)
        config = dataclasses.replace(config, epochs=config.epochs + n,
                                     schedule_epochs=config.schedule_epochs or config.epochs)
    return config.validated(own_data), changes


# ---------------------------------------------------------------------------
# one epoch
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class EpochState:
    """Where a run is inside epoch ``epoch`` (0-based) and what it has summed so far."""

    epoch: int
    perm: np.ndarray                     # (N,) int data order of the epoch
    tracker: stats.EpochStats
    batch: int = 0                       # mini-batches done
    loss_sum: float = 0.0                # sum of loss * batch size
    wrong: int = 0
    seen: int = 0
    seconds: float = 0.0                 # wall time spent in the epoch before this call

    def to_checkpoint(self):
        """``(run_state arrays, JSON-able dict)`` for ``last.npz``."""
        arrays, tracker = self.tracker.state_dict()
        arrays = {f"stats/{k}": v for k, v in arrays.items()}
        arrays["perm"] = self.perm
        return arrays, dict(loss_sum=self.loss_sum, wrong=self.wrong, seen=self.seen,
                            seconds=self.seconds, stats=tracker)

    @classmethod
    def from_checkpoint(cls, ckpt, tracker, n):
        """``tracker``: a fresh :class:`minibnn.stats.EpochStats` of the model (the
        loop's ``new_tracker()``), loaded here with the checkpoint's statistics."""
        acc = ckpt.meta.get("epoch_acc")
        state = cls(epoch=ckpt.epoch, perm=ckpt.check_perm(n), tracker=tracker, batch=ckpt.batch)
        if acc is None:   # a version-1 checkpoint: the epoch's row counts from here
            return state
        try:
            tracker.load_state_dict({k[len("stats/"):]: v for k, v in ckpt.run_state.items()
                                     if k.startswith("stats/")}, acc["stats"])
            state.loss_sum, state.wrong = float(acc["loss_sum"]), int(acc["wrong"])
            state.seen, state.seconds = int(acc["seen"]), float(acc["seconds"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{ckpt.path}: the partial epoch's accumulators are not valid "
                             f"({type(exc).__name__}: {exc})") from None
        return state


class HostLoop:
    """What :func:`train` does per mini-batch and per epoch, on NumPy arrays (the CPU
    backends).  :class:`minibnn.device.DeviceLoop` is its device twin, with the same
    methods; :func:`make_loop` picks one of the two once, by backend.

    ``new_tracker()`` -> the epoch's :class:`minibnn.stats.EpochStats`; ``begin(state)``
    starts or resumes an epoch; ``step(state, lo, hi)`` trains on the rows
    ``state.perm[lo:hi]`` and adds to the epoch's sums; ``sync(state)`` brings sums kept
    elsewhere into ``state`` (nothing to do here); ``evaluate(x, y, batch_size)`` -> error
    rate; ``host_model()`` -> the model with NumPy arrays (statistics, checkpoints).
    """

    def __init__(self, session):
        self.s = session

    @classmethod
    def check(cls, config):
        """Every valid config trains on the host, ``grad_dtype="bfloat16"`` only on a CPU
        whose AVX512-BF16 kernel runs (:func:`minibnn.kernels.bf16.available`):
        :class:`minibnn.kernels.BackendUnavailable` otherwise (its NumPy definition would
        train, but slower than float32 -- not what the setting is for)."""
        if config.grad_dtype == "bfloat16":
            from .kernels import BackendUnavailable, bf16
            if not bf16.available():
                raise BackendUnavailable(
                    "grad_dtype 'bfloat16' needs a CPU with AVX512-BF16 (vdpbf16ps) that "
                    "Numba compiles for; this one has none: use grad_dtype 'float32'")

    def new_tracker(self):
        return stats.EpochStats(self.s.model)

    def begin(self, state):
        pass

    def step(self, state, lo, hi):
        s = self.s
        idx = state.perm[lo:hi]
        xb, yb = s.x_train[idx], s.y_train[idx]
        scores = s.model.forward(xb, training=True)
        loss, grad = s.loss_fn(scores, yb)
        s.model.backward(grad, input_grad=False)   # nothing below the input
        s.opt.step()
        state.tracker.after_batch(s.model)
        state.loss_sum += float(loss) * len(yb)
        state.wrong += int(np.sum(np.argmax(scores, axis=1) != yb))
        state.seen += len(yb)

    def sync(self, state):
        pass

    def evaluate(self, x, y, batch_size):
        return evaluate(self.s.model, x, y, batch_size)

    def host_model(self):
        return self.s.model


def loop_class(config):
    """The loop class of ``config.backend`` (the one place the training loop depends on
    the backend): :class:`minibnn.device.DeviceLoop` for ``"cuda"`` (device-resident
    training), :class:`HostLoop` otherwise."""
    if config.backend == "cuda":
        from .device import DeviceLoop
        return DeviceLoop
    return HostLoop


def make_loop(session):
    """The loop object of ``session`` (see :func:`loop_class`)."""
    return loop_class(session.config)(session)


def run_epoch(session, state, should_stop):
    """Train from ``state.batch`` to the end of the epoch or until ``should_stop()``
    (checked after each mini-batch); updates ``state`` in place and returns it."""
    loop, cfg = session.loop, session.config
    bs, n_batches = cfg.batch_size, session.n_batches
    t0 = time.time()
    loop.begin(state)
    while state.batch < n_batches:
        loop.step(state, state.batch * bs, (state.batch + 1) * bs)
        state.batch += 1
        kill_point("batch")
        if session.bar.due(state.batch, n_batches):
            loop.sync(state)
            session.bar.update(state.epoch + 1, cfg.epochs, state.batch, n_batches,
                               state.seen / max(1e-9, state.seconds + time.time() - t0),
                               state.loss_sum / state.seen, state.wrong / state.seen)
        if should_stop():
            break
    loop.sync(state)
    state.seconds += time.time() - t0
    session.bar.end_epoch()
    return state


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------

def _better(val_err, best):
    if best["epoch"] < 0:
        return True
    b = best["val_error"]
    return val_err < (math.nan if b is None else b)


class Session:
    """What one call of :func:`train` works with: the config, the data splits (host
    arrays), the model, optimizer, schedule and loss built from the config, the data
    order's generator, the progress bar and, once a checkpoint is loaded, ``loop`` (see
    :func:`make_loop`)."""

    def __init__(self, config, dataset, progress):
        self.config = config
        self.x_train, self.y_train = dataset.x_train, dataset.y_train
        self.x_val, self.y_val = dataset.x_val, dataset.y_val
        self.x_test, self.y_test = dataset.x_test, dataset.y_test
        self.model = registry.make_model(config, self.x_train.shape[1:],
                                         getattr(dataset, "n_classes", 10))
        self.opt = registry.make_optimizer(config, self.model)
        self.schedule = registry.make_schedule(config)
        self.loss_fn = registry.make_loss(config.loss)
        self.data_rng = np.random.default_rng(config.seed)
        self.n = len(self.x_train)
        self.n_batches = self.n // config.batch_size
        if self.n_batches == 0:
            raise ValueError(f"batch size {config.batch_size} is larger than the training set "
                             f"({self.n} images)")
        self.bar = Progress(enabled=progress)
        self.loop = None            # make_loop(self), once the checkpoint is loaded

    def restore(self, ckpt):
        """Load model, optimizer and random state from ``ckpt``; errors name its file."""
        try:
            self.model.load_state_dict(ckpt.model_state, source=f"{ckpt.path}: model")
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        self._check_optimizer_state(ckpt)
        try:
            self.opt.load_state_dict(ckpt.optim_state)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{ckpt.path}: optimizer state: {exc}") from None
        try:
            _restore_rng_states(self.model, self.data_rng, ckpt.meta["rng"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{ckpt.path}: random generator state is not valid "
                             f"({type(exc).__name__}: {exc})") from None

    def _check_optimizer_state(self, ckpt):
        """Per-parameter optimizer arrays (``"<slot>/<param>"``, Bop's ``"fp/..."``) must
        have the parameter's shape, and an optimizer that took a step must hold its
        moments; errors name the file (the optimizer's own ``load_state_dict`` checks
        the rest)."""
        params = {name: p.shape for name, p, _g, _i in self.model.parameters()}
        state = ckpt.optim_state
        for key, arr in state.items():
            name = key.rpartition("/")[2]
            if "/" in key and name in params and arr.shape != params[name]:
                raise ValueError(f"{ckpt.path}: optimizer state optim/{key} has shape "
                                 f"{arr.shape}, parameter {name!r} has shape {params[name]}")
        optimizers = [("", self.opt)]
        if getattr(self.opt, "fp_optimizer", None) is not None:
            optimizers.append(("fp/", self.opt.fp_optimizer))
        for prefix, opt in optimizers:
            t = state.get(prefix + "t")
            steps = int(np.asarray(t)) if t is not None and np.asarray(t).size == 1 else 0
            for slot in getattr(opt, "slots", ()):
                if steps > 0 and not any(k.startswith(f"{prefix}{slot}/") for k in state):
                    raise ValueError(f"{ckpt.path}: optimizer state lacks the {slot!r} moments "
                                     f"(optim/{prefix}{slot}/*) after {steps} steps")

    def checkpoint(self, run, state, best, elapsed, epoch_state=None):
        """Write ``last.npz``: the run stands at ``state`` (epoch, batch) with ``best``."""
        epoch, batch = state
        run_state, meta = {}, dict(config=dataclasses.asdict(self.config), epoch=epoch,
                                   batch=batch, rng=_rng_states(self.model, self.data_rng),
                                   best=best, elapsed=elapsed)
        if epoch_state is not None:
            run_state, meta["epoch_acc"] = epoch_state.to_checkpoint()
        run.save_last(self.loop.host_model().state_dict(), self.opt.state_dict(), meta,
                      run_state)


def _load_data(config, download):
    from .data import load_dataset

    kw = dict(data_dir=config.data_dir, limit_train=config.limit_train)
    if registry.accepts(load_dataset, "download"):
        kw["download"] = download
    return load_dataset(config.dataset, **kw)


def _open_run(out_dir, config, resume, extend_epochs, log, own_data=False):
    """``(RunDir, config, Checkpoint or None)``, the directory created and config.json
    written; every check that can refuse the run comes before anything is written."""
    from .kernels import get_backend

    run, ckpt = RunDir(out_dir), None
    if resume:
        ckpt = run.load_last()
        config, changes = resume_config(ckpt.meta["config"], config, extend_epochs,
                                        source=ckpt.path, own_data=own_data)
        for k, v in changes.items():
            log(f"resume: {k} {v!r} for this session (stored: {ckpt.meta['config'][k]!r})")
    else:
        if extend_epochs is not None:
            raise ValueError("extend_epochs continues a stored run: it needs resume=True")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        config.validated(own_data)
    get_backend(config.backend)  # an unavailable backend fails here, before any file is made
    loop_class(config).check(config)
    run.create()
    run.write_config(dataclasses.asdict(config))
    return run, config, ckpt


class _Stopper:
    """Stop between mini-batches on Ctrl-C, or after ``limit`` mini-batches (tests)."""

    def __init__(self, flag, limit):
        self.flag, self.limit, self.batches = flag, limit, 0

    @property
    def requested(self):
        return self.flag.set or (self.limit is not None and self.batches >= self.limit)

    def after_batch(self):
        self.batches += 1
        return self.requested


def train(config, out_dir, resume=False, dataset=None, progress=True, log=print,
          stop_after_batches=None, extend_epochs=None, download=True):
    """Train ``config`` into ``out_dir``; returns the summary dict.

    ``config``: a :class:`TrainConfig`; on resume it may also be ``None`` or a mapping of
    the settings asked for (see :func:`resume_config`).  ``dataset``: an already loaded
    :class:`minibnn.data.Dataset` (else loaded from ``config``; ``download=False``
    forbids fetching a missing dataset); with one, ``config.dataset`` is only its label
    and the model follows its image shape and ``n_classes``.  ``stop_after_batches``: stop (as Ctrl-C would)
    after that many mini-batches of this call -- used by the tests.  ``extend_epochs``:
    with ``resume``, train N epochs past the stored plan.
    """
    run, config, ckpt = _open_run(out_dir, config, resume, extend_epochs, log,
                                  own_data=dataset is not None)
    s = Session(config, dataset if dataset is not None else _load_data(config, download),
                progress)
    best = {"val_error": math.inf, "test_error": math.nan, "epoch": -1}
    elapsed_before, epoch, state = 0.0, 0, None
    if ckpt is not None:
        s.restore(ckpt)
        epoch, best, elapsed_before = ckpt.epoch, ckpt.meta["best"], ckpt.meta["elapsed"]
    s.loop = make_loop(s)
    if ckpt is not None:
        if ckpt.batch:
            state = EpochState.from_checkpoint(ckpt, s.loop.new_tracker(), s.n)
        dropped = run.trim_metrics(epoch)
        log(f"resumed from {run.last_path}: epoch {epoch}, batch {ckpt.batch}"
            + (f" ({dropped} metrics row(s) past the checkpoint dropped)" if dropped else ""))
    else:
        run.start_metrics()
    t_start = time.time()

    def elapsed():
        return elapsed_before + time.time() - t_start

    with _InterruptFlag() as flag:
        stop = _Stopper(flag, stop_after_batches)
        while epoch < config.epochs:
            lr = float(s.schedule(epoch))
            s.opt.lr = lr
            if state is None:
                state = EpochState(epoch, s.data_rng.permutation(s.n), s.loop.new_tracker())
            run_epoch(s, state, stop.after_batch)
            if state.batch < s.n_batches:
                s.checkpoint(run, (epoch, state.batch), best, elapsed(), state)
                log(f"stopped in epoch {epoch + 1} after batch {state.batch}; resume with --resume")
                break
            best = _end_epoch(s, run, state, lr, best, elapsed, log)
            epoch, state = epoch + 1, None
            s.checkpoint(run, (epoch, 0), best, elapsed())
            if stop.requested and epoch < config.epochs:
                log(f"stopped after epoch {epoch}; resume with --resume")
                break

    summary = dict(best_epoch=best["epoch"], best_val_error=best["val_error"],
                   test_error_at_best=best["test_error"], total_seconds=elapsed(),
                   finished=epoch >= config.epochs, epochs_planned=config.epochs)
    run.write_summary(summary)
    return summary


def _end_epoch(s, run, state, lr, best, elapsed, log):
    """Evaluate, append the epoch's row, save ``best.npz`` if it improved; returns ``best``."""
    row = _epoch_row(s, state, lr, elapsed)
    run.append_metrics(row)
    improved = _better(row["val_error"], best)
    if improved:
        best = {"val_error": row["val_error"], "test_error": row["test_error"],
                "epoch": state.epoch + 1}
        run.save_best(s.loop.host_model())
    log(f"epoch {state.epoch + 1:3d}/{s.config.epochs}  lr {lr:.2e}  "
        f"loss {row['train_loss']:.4f}  train {100 * row['train_error']:5.2f}%  "
        f"val {100 * row['val_error']:5.2f}%  test {100 * row['test_error']:5.2f}%  "
        f"{row['seconds']:6.1f}s" + ("  *" if improved else ""))
    return best


def _epoch_row(s, state, lr, elapsed):
    """The ``metrics.jsonl`` row of the finished epoch ``state``."""
    cfg = s.config
    t0 = time.time()
    val_err = s.loop.evaluate(s.x_val, s.y_val, cfg.eval_batch_size)
    test_err = s.loop.evaluate(s.x_test, s.y_test, cfg.eval_batch_size)
    row = dict(epoch=state.epoch + 1, lr=lr, train_loss=state.loss_sum / max(1, state.seen),
               train_error=state.wrong / max(1, state.seen), val_error=val_err,
               test_error=test_err, seconds=state.seconds + time.time() - t0, elapsed=elapsed())
    row.update(state.tracker.summary(s.loop.host_model()))
    return row
