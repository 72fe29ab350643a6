"""The ``minibnn`` command line (also ``python -m minibnn``).

    minibnn train --dataset mnist --hidden 4096 --depth 3 --epochs 10 --out runs/mnist
    minibnn train --out runs/mnist --resume [--extend-epochs 20]
    minibnn plot runs/mnist
    minibnn export runs/mnist/best.npz --out mnist.bnn [--first-layer bitplane]
    minibnn eval mnist.bnn --dataset mnist [--backend cpu]
    minibnn summary mnist.bnn

Every bad input ends the command with exit status 2 and one line on stderr,
``minibnn CMD: error: ...``, naming the flag or the file and the problem.  The names
behind ``--optimizer``, ``--dataset``, ... come from :mod:`minibnn.registry`.
"""

from . import keep_large_allocations, quiet_blas_spin

quiet_blas_spin()  # before anything imports numpy (see its docstring)
keep_large_allocations()  # per-step backward buffers are reused, not page-faulted in

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from . import registry  # noqa: E402
from .checks import check_int, check_real_scalar  # noqa: E402
from .train import TrainConfig  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """argparse with errors as exactly one line, ``PROG: error: MESSAGE`` (no usage)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def _one_line(text):
    return " ".join(str(text).split())


# -- argument types: the checks of minibnn.checks, as argparse types ----------------
def _int_type(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        try:
            return check_int(value, "value", minimum=minimum)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = "int"
    return parse


def _float_type(lo=None, hi=None, lo_open=False, hi_open=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        try:
            return check_real_scalar(value, "value", lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = "float"
    return parse


def _dataset_type(text):
    names = registry.datasets()
    if text in names:
        return text
    if text.startswith(registry.NPZ_PREFIX) and len(text) > len(registry.NPZ_PREFIX):
        return text
    raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from "
                                     f"{', '.join(names)}, or {registry.NPZ_PREFIX}PATH)")


def _input_shape_arg(text):
    parts = text.replace("x", ",").split(",")     # 1,28,28 or 1x28x28
    try:
        if any(not p.strip() for p in parts):
            raise ValueError(text)
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must look like 1,28,28, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"input shape must be positive integers, got {text!r}")
    return shape


def _has_download():
    from .data import load_dataset
    return registry.accepts(load_dataset, "download")


def _has_stochastic_weights():
    from . import zoo
    return all(registry.accepts(b, "stochastic_weights") for b in zoo.ARCHITECTURES.values())


def _default_backend():
    from .kernels.backend import resolve_name
    return resolve_name(None)


# -- train -------------------------------------------------------------------------
def _add_train(sub):
    p = sub.add_parser("train", help="train a BNN on a dataset",
                       description="Train a binarized network; writes config.json, metrics.jsonl, "
                                   "best.npz, last.npz and summary.json into --out.")
    d = TrainConfig()
    pos1, pos0 = _int_type(1), _int_type(0)
    prob = _float_type(lo=0.0, hi=1.0, hi_open=True)
    positive = _float_type(lo=0.0, lo_open=True)
    # settings default to "not given" (SUPPRESS) so that --resume can tell which were asked for
    g = p.add_argument_group("run settings (stored in the run; --resume refuses different ones)",
                             argument_default=argparse.SUPPRESS)
    g.add_argument("--dataset", type=_dataset_type, metavar="NAME",
                   help=f"{', '.join(registry.datasets())}, or {registry.NPZ_PREFIX}PATH "
                        f"(default: {d.dataset})")
    g.add_argument("--arch", choices=registry.architectures(),
                   help="default: mnist_mlp for MNIST-like data, the paper's ConvNet for cifar10/svhn")
    g.add_argument("--hidden", type=pos1, help=f"MLP width (paper: 4096; default {d.hidden})")
    g.add_argument("--depth", type=pos1, help=f"MLP hidden layers (paper: 3; default {d.depth})")
    g.add_argument("--width", type=positive, help=f"ConvNet channel multiplier (default {d.width})")
    g.add_argument("--epochs", type=pos1, help=f"default {d.epochs}")
    g.add_argument("--batch-size", type=pos1, help=f"default {d.batch_size}")
    g.add_argument("--lr-start", type=positive, help=f"default {d.lr_start}")
    g.add_argument("--lr-end", type=positive, help=f"default {d.lr_end}")
    g.add_argument("--schedule", choices=list(registry.SCHEDULES), help=f"default {d.schedule}")
    g.add_argument("--optimizer", choices=list(registry.OPTIMIZERS), help=f"default {d.optimizer}")
    g.add_argument("--bn", choices=list(registry.BN_KINDS), help=f"default {d.bn}")
    g.add_argument("--loss", choices=list(registry.LOSSES), help=f"default {d.loss}")
    g.add_argument("--dropout-in", type=prob, help=f"in [0, 1) (default {d.dropout_in})")
    g.add_argument("--dropout-hidden", type=prob, help=f"in [0, 1) (default {d.dropout_hidden})")
    g.add_argument("--seed", type=pos0, help=f"integer >= 0 (default {d.seed})")
    g.add_argument("--backend", choices=list(registry.backends()),
                   help="kernels (default: $MINIBNN_BACKEND, else the kernels' default); may "
                        "change on --resume")
    g.add_argument("--limit-train", type=pos1, help="use only the first N training images")
    g.add_argument("--data-dir", help="dataset root (else $MINIBNN_DATA, else ~/.minibnn/data); "
                                      "may change on --resume")
    if _has_stochastic_weights():
        g.add_argument("--stochastic-weights", action="store_true",
                       help="binarize the weights stochastically in training (the paper's "
                            "stochastic binarization)")
    g.add_argument("--grad-dtype", choices=list(registry.grad_dtypes()),
                   help=f"precision of the binary dense layers' backward products: float32, or "
                        f"bfloat16 (the upstream gradient rounded to 8 bits, float32 sums; "
                        f"AVX512-BF16 CPUs, cpu backends) (default {d.grad_dtype})")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.npz with the settings stored there (giving "
                        "different run settings is an error that lists them)")
    p.add_argument("--extend-epochs", type=pos1, default=None, metavar="N",
                   help="with --resume: train N more epochs than the run planned (also a "
                        "finished run); the learning-rate schedule keeps the original horizon, "
                        "so exponential decay continues at the same factor per epoch (below "
                        "--lr-end)")
    if _has_download():
        p.add_argument("--no-download", action="store_true",
                       help="fail if the dataset is missing instead of downloading it")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")


def _cmd_train(args, parser):
    from .train import train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields}
    if args.extend_epochs is not None and not args.resume:
        parser.error("--extend-epochs continues a stored run: it needs --resume")
    if args.resume:
        config = given
    else:
        given.setdefault("backend", _default_backend())
        config = TrainConfig(**given)
    summary = train(config, args.out, resume=args.resume, progress=not args.no_progress,
                    extend_epochs=args.extend_epochs,
                    download=not getattr(args, "no_download", False))
    print(json.dumps(summary))
    return 0 if summary["finished"] else 130


# -- plot ----------------------------------------------------------------------------
def _add_plot(sub):
    p = sub.add_parser("plot", help="draw error/loss curves (and weight statistics) of a run",
                       description="Draw RUN_DIR/curves.png and latent_hist.png (needs the "
                                   "optional plot extra: pip install 'minibnn[plot]').")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="PNG path (default RUN_DIR/curves.png)")


def _cmd_plot(args, parser):
    from .viz import read_metrics

    # a missing or empty metrics.jsonl is named before matplotlib is even needed
    read_metrics(args.run_dir)
    if importlib.util.find_spec("matplotlib") is None:
        raise RuntimeError("plotting needs matplotlib: pip install 'minibnn[plot]' "
                           "(or pip install matplotlib)")
    from .viz import plot_curves, plot_latent_histograms

    paths = [plot_curves(args.run_dir, args.out)]
    try:
        paths.append(plot_latent_histograms(args.run_dir))
    except ValueError:
        pass  # no latent histograms recorded: the curves are all there is
    for p in paths:
        print(p)
    return 0


# -- the packed model: export, eval, summary -----------------------------------------
def _add_export(sub):
    p = sub.add_parser("export", help="fold a trained model into bits and integer thresholds (.bnn)",
                       description="Export a trained model (Sequential .npz, e.g. RUN_DIR/best.npz) "
                                   "as a packed .bnn file run with XNOR-popcount only.")
    p.add_argument("model", help="a Sequential.save .npz (e.g. RUN_DIR/best.npz)")
    p.add_argument("--out", required=True, help="the .bnn file to write")
    p.add_argument("--first-layer", choices=["float", "bitplane"], default="float",
                   help="float: the first layer as the float model computes it; bitplane: "
                        "8-bit pixels as 8 binary bit planes (exact integers)")
    p.add_argument("--input-shape", type=_input_shape_arg, default=None,
                   help="per-sample input shape, e.g. 1,28,28 (default: from RUN_DIR/config.json, "
                        "else inferred)")


def _add_eval(sub):
    p = sub.add_parser("eval", help="test error and speed of a packed .bnn model",
                       description="Evaluate a .bnn model on a dataset's test split; prints JSON.")
    p.add_argument("model", help="a .bnn file from `minibnn export`")
    p.add_argument("--dataset", type=_dataset_type, required=True, metavar="NAME",
                   help=f"{', '.join(registry.datasets())}, or {registry.NPZ_PREFIX}PATH")
    p.add_argument("--backend", choices=list(registry.backends()), default=None,
                   help="kernels (default: $MINIBNN_BACKEND, else the kernels' default)")
    p.add_argument("--data-dir", default=None, help="dataset root (else $MINIBNN_DATA, else ~/.minibnn/data)")
    p.add_argument("--batch-size", type=_int_type(1), default=1000)
    p.add_argument("--limit", type=_int_type(1), default=None, help="use only the first N test images")


def _add_summary(sub):
    p = sub.add_parser("summary", help="per-layer table: shapes, params, bits, memory, MACs",
                       description="Summarize a model (.npz or .bnn): output shapes, parameters, "
                                   "bits per weight, packed vs float32 memory, binary vs float MACs.")
    p.add_argument("model", help="a Sequential.save .npz or a .bnn file")
    p.add_argument("--input-shape", type=_input_shape_arg, default=None,
                   help="per-sample input shape for a .npz model (default: inferred)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _read_model_file(path, load, what):
    """``load(path)``, with what a damaged file raises turned into ``ValueError`` naming it."""
    from .checkpoint import FILE_ERRORS

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, expected {what}")
    try:
        return load(path)
    except FILE_ERRORS as exc:
        msg = str(exc)
        if isinstance(exc, ValueError) and path in msg:
            raise                                   # already names the file
        raise ValueError(f"{path}: not a readable {what} ({type(exc).__name__}: {msg})") from exc


def _run_input_shape(model_path):
    """Input shape from the run directory's config.json (dataset), if there is one."""
    cfg = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    try:
        with open(cfg) as f:
            dataset = json.load(f).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None
    return registry.input_shape(dataset) if isinstance(dataset, str) else None


def _cmd_export(args, parser):
    from .model import Sequential
    from .packed import export

    if os.path.isdir(args.out):
        raise ValueError(f"--out {args.out}: is a directory, expected the .bnn file to write")
    model = _read_model_file(args.model, Sequential.load, "Sequential .npz model")
    shape = args.input_shape or _run_input_shape(args.model)
    packed = export(model, args.out, first_layer=args.first_layer, input_shape=shape)
    n_float = sum(p.size for _, p, _, _ in model.parameters()) + sum(b.size for _, b in model.buffers())
    size = os.path.getsize(args.out)
    print(json.dumps({"out": os.fspath(args.out), "first_layer": args.first_layer,
                      "input_shape": list(packed.input_shape), "file_bytes": size,
                      "float32_bytes": 4 * int(n_float),
                      "ratio": round(4 * int(n_float) / size, 2)}))
    return 0


def _cmd_eval(args, parser):
    import time

    import numpy as np

    from .checks import check_finite
    from .data import load_dataset
    from .packed import PackedModel

    backend = args.backend or _default_backend()
    model = _read_model_file(args.model, lambda p: PackedModel.load(p, backend=backend),
                             ".bnn model")
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    x, y = ds.x_test, ds.y_test
    if args.limit is not None:
        x, y = x[:args.limit], y[:args.limit]
    if len(y) == 0:
        raise ValueError(f"--dataset {args.dataset}: the test split is empty")
    check_finite(x, f"--dataset {args.dataset}: the test images")
    model.predict(x[:min(len(x), args.batch_size)])          # warm-up (JIT, caches)
    t0 = time.perf_counter()
    pred = model.predict(x, batch_size=args.batch_size)
    seconds = time.perf_counter() - t0
    errors = int(np.sum(pred != y))
    print(json.dumps({"model": args.model, "dataset": args.dataset, "n": int(len(y)),
                      "test_error": errors / len(y), "errors": errors,
                      "images_per_s": len(y) / seconds if seconds > 0 else None,
                      "seconds": seconds, "batch_size": args.batch_size,
                      "backend": model.backend, "device_resident": model.device_resident,
                      "first_layer": model.first_layer}))
    return 0


def _cmd_summary(args, parser):
    from .summary import load_any, summary

    model = _read_model_file(args.model, load_any, "model file (.npz or .bnn)")
    print(summary(model, input_shape=args.input_shape, as_json=args.json))
    return 0


# -- features of other layers, wired when they are there -------------------------------
def _add_fetch(sub):
    names = list(registry.fetchable())
    p = sub.add_parser("fetch", help="download a dataset (or import a local copy) into the data dir",
                       description="Download and verify a dataset into the data directory, or "
                                   "import it from a local copy with --from.")
    p.add_argument("dataset", choices=names)
    p.add_argument("--from", dest="source", default=None, metavar="COPY",
                   help="import from a local copy (a directory or archive) instead of downloading")
    p.add_argument("--data-dir", default=None, help="dataset root (else $MINIBNN_DATA, else ~/.minibnn/data)")


def _cmd_fetch(args, parser):
    from .data import fetch_dataset

    result = fetch_dataset(args.dataset, data_dir=args.data_dir, source=args.source, progress=True)
    if result is not None:
        print(os.fspath(result) if isinstance(result, (str, os.PathLike)) else result)
    return 0


def _add_selftest(sub):
    p = sub.add_parser("selftest", help="check that the kernels give the right answers here",
                       description="Run the kernels against their NumPy twins on this machine.")
    p.add_argument("--backend", choices=["cpu", "cuda", "all"], default="cpu",
                   help="all: every backend available here")
    p.add_argument("--examples", type=_int_type(1), default=None,
                   help="examples per check (default: the selftest's)")


def _cmd_selftest(args, parser):
    from .selftest import main_selftest

    kw = {} if args.examples is None else {"examples": args.examples}
    rc = main_selftest(args.backend, **kw)
    return int(rc or 0)


def _has_fetch():
    from . import data
    return callable(getattr(data, "fetch_dataset", None))


def _has_selftest():
    return importlib.util.find_spec("minibnn.selftest") is not None


COMMANDS = {"train": (_add_train, _cmd_train), "plot": (_add_plot, _cmd_plot),
            "export": (_add_export, _cmd_export), "eval": (_add_eval, _cmd_eval),
            "summary": (_add_summary, _cmd_summary)}
OPTIONAL_COMMANDS = {"fetch": (_has_fetch, _add_fetch, _cmd_fetch),
                     "selftest": (_has_selftest, _add_selftest, _cmd_selftest)}


def _error_message(exc):
    """One line for a known error class; a file error names the file."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        return f"{where}: {exc.strerror}"
    return _one_line(exc) or type(exc).__name__


def build_parser():
    parser = _Parser(prog="minibnn", description="Binarized Neural Networks from scratch")
    sub = parser.add_subparsers(dest="command", required=True)
    handlers = {}
    for name, (add, cmd) in COMMANDS.items():
        add(sub)
        handlers[name] = cmd
    for name, (present, add, cmd) in OPTIONAL_COMMANDS.items():
        if present():
            add(sub)
            handlers[name] = cmd
    return parser, sub, handlers


def main(argv=None):
    from .kernels.backend import BackendUnavailable

    parser, sub, handlers = build_parser()
    args = parser.parse_args(argv)
    cmd_parser = sub.choices[args.command]
    try:
        return handlers[args.command](args, cmd_parser)
    except (ValueError, OSError, BackendUnavailable, RuntimeError) as exc:
        # ValueError covers DataError and every "bad file/setting" message; OSError a file
        # that cannot be read or written; RuntimeError a missing optional dependency or a
        # failed download.  Programming errors (TypeError, AttributeError, ...) keep their
        # traceback.
        print(f"minibnn {args.command}: error: {_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minibnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
