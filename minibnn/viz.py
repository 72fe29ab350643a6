"""Pictures of a run, drawn from its ``metrics.jsonl`` (matplotlib: the ``plot`` extra).

* :func:`plot_curves` -- error (train / validation / test) and training loss per epoch,
  plus, when recorded, the fraction of binary weights flipped per epoch with the
  learning rate drawn on the same panel, and the STE-cancelled fraction of each sign's
  inputs;
* :func:`plot_latent_histograms` -- latent-weight histograms per binary layer at chosen
  epochs, epoch 0 (the initialization) included.

Layers are named as a reader knows them, ``dense 1 (784->2048)``, ``conv 3 (128->256,
3x3)``, ``sign after dense 1``, from the architecture stored in the run's ``best.npz``
or ``last.npz``; without one they are named by their index in the ``Sequential``.

The train error of a row is the running average over the epoch's mini-batches, in
training mode (batch statistics, dropout, weights changing during the epoch), so it
is not comparable with the validation and test errors, which are measured in eval mode
at the end of the epoch; the legend says so.
"""

import json
import os

import numpy as np

#: the checkpoint files whose ``architecture`` entry names the layers (first found wins)
_ARCH_FILES = ("best.npz", "last.npz")


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("plotting needs matplotlib: pip install 'minibnn[plot]' "
                           "(or pip install matplotlib)") from exc
    return plt


def read_metrics(run_dir):
    """The list of per-epoch dicts in ``run_dir/metrics.jsonl``."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}: is it a minibnn run directory?")
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise ValueError(f"{path} is empty: the run has not finished an epoch yet")
    return rows


def read_architecture(run_dir):
    """The run's architecture (``[{"class", "config"}, ...]`` as written by
    :meth:`minibnn.model.Sequential.save`), from ``best.npz`` or ``last.npz``; None when
    neither holds one."""
    for name in _ARCH_FILES:
        path = os.path.join(run_dir, name)
        if not os.path.exists(path):
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                if "architecture" in z.files:
                    arch = json.loads(str(z["architecture"]))
                    if isinstance(arch, list):
                        return arch
        except (OSError, ValueError):
            continue
    return None


def layer_names(architecture):
    """Readable names by layer index (str): binary and float products are numbered from
    1 in order (``dense 2 (2048->2048)``, ``conv 1 (3->128, 3x3)``), a sign activation is
    ``sign after <the product before it>``.  ``{}`` for None."""
    names = {}
    if not architecture:
        return names
    counts = {"dense": 0, "conv": 0}
    last = None
    for i, entry in enumerate(architecture):
        cls, cfg = entry.get("class", ""), entry.get("config", {})
        if cls in ("BinaryDense", "Dense"):
            counts["dense"] += 1
            last = f"dense {counts['dense']} ({cfg.get('in_features')}->{cfg.get('out_features')})"
            names[str(i)] = last
        elif cls in ("BinaryConv2D", "Conv2D"):
            counts["conv"] += 1
            k = cfg.get("kernel")
            last = f"conv {counts['conv']} ({cfg.get('in_ch')}->{cfg.get('out_ch')}, {k}x{k})"
            names[str(i)] = last
        elif cls == "SignActivation":
            names[str(i)] = f"sign after {last.split(' (')[0]}" if last else f"sign (layer {i})"
    return names


def _readable(key, names):
    """``"2.w"`` / ``"5"`` -> the layer's readable name (its index when unknown)."""
    index, _, param = key.partition(".")
    name = names.get(index)
    if name is None:
        return f"layer {key}"
    return name if param in ("", "w") else f"{name} {param}"


def _key_order(key):
    return [int(t) if t.isdigit() else t for t in key.split(".")]


def _colors(plt, n):
    """n colours in layer order (first layer dark, last bright) that stay distinct."""
    cmap = plt.get_cmap("viridis" if n > 4 else "tab10")
    if n <= 4:
        return [cmap(i) for i in range(n)]
    return [cmap(0.85 * i / (n - 1)) for i in range(n)]


_MARKERS = "o^sDvP*Xh<>p"


def _percent_axis(ax, values):
    """A log axis in percent with plain-number ticks (0.5, 1, 2, 5, 10 ...)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.set_yscale("log")
    values = [v for v in values if v > 0 and np.isfinite(v)]
    if not values:
        return
    lo, hi = min(values), max(values)
    candidates = [m * d for d in (1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100) for m in (1, 2, 5)]
    ticks = [t for t in candidates if lo / 1.25 <= t <= hi * 1.25]
    if len(ticks) < 3:                         # a narrow range: finer steps
        candidates = sorted(m * d for d in (1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100)
                            for m in (1, 1.5, 2, 3, 5, 7))
        ticks = [t for t in candidates if lo / 1.25 <= t <= hi * 1.25]
    if len(ticks) < 2:                         # still one: the neighbours around the data
        below = [t for t in candidates if t <= lo]
        above = [t for t in candidates if t >= hi]
        ticks = sorted(set(below[-1:] + ticks + above[:1]))
        lo, hi = min(lo, ticks[0] * 1.25), max(hi, ticks[-1] / 1.25)
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(_PlainFormatter())
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(lo / 1.25, hi * 1.25)


class _PlainFormatter:
    """Tick labels ``0.5``, ``2``, ``10`` rather than ``5x10^-1`` (a matplotlib
    Formatter built lazily, so that importing this module does not import matplotlib)."""

    def __new__(cls):
        from matplotlib.ticker import FuncFormatter

        return FuncFormatter(lambda v, _pos: f"{v:g}")


def plot_curves(run_dir, out=None):
    """Write ``curves.png`` (or ``out``) for ``run_dir``; returns the path.

    Panels: error in % (log axis with plain ticks; the train error is the running average
    of the training-mode epoch), training loss, the fraction of binary weights flipped
    during each epoch per layer with the learning rate on a second axis, and the fraction
    of each sign's inputs with |x| > 1 (STE gradient cancelled); the last two when the run
    recorded them.  Layers are named from the run's architecture (see
    :func:`layer_names`); legends sit beside the panels, not on the data."""
    plt = _pyplot()
    rows = read_metrics(run_dir)
    names = layer_names(read_architecture(run_dir))
    ep = [r["epoch"] for r in rows]
    panels = ["error", "loss"] + [k for k in ("flip_ratio", "ste_cancel")
                                  if any(r.get(k) for r in rows)]
    ncols = 2
    nrows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(nrows, ncols, figsize=(13.5, 4.0 * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    from matplotlib.ticker import MaxNLocator
    for ax in flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    ax = flat[0]
    labelled = (("train_error", "train (running average over the epoch,\ntraining mode: "
                 "dropout, batch statistics)", "C0", "o"),
                ("val_error", "validation (eval mode, end of epoch)", "C1", "s"),
                ("test_error", "test (eval mode, end of epoch)", "C2", "^"))
    values = []
    for key, label, color, marker in labelled:
        ys = [100 * r[key] for r in rows]
        values += ys
        ax.plot(ep, ys, marker=marker, ms=4, color=color, label=label)
    _percent_axis(ax, values)
    ax.set_xlabel("epoch"), ax.set_ylabel("error (%)"), ax.set_title("error", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)

    ax = flat[1]
    ax.plot(ep, [r["train_loss"] for r in rows], marker="o", ms=4, color="C3")
    ax.set_xlabel("epoch"), ax.set_ylabel("training loss (squared hinge, running average)",
                                          fontsize=8)
    ax.set_title("training loss", fontsize=10)
    ax.set_yscale("log"), ax.grid(alpha=0.3, which="both")

    for ax, key in zip(flat[2:], panels[2:]):
        keys = sorted({k for r in rows for k in r.get(key, {})}, key=_key_order)
        colors = _colors(plt, len(keys))
        for j, (k, color) in enumerate(zip(keys, colors)):
            ax.plot(ep, [100 * r.get(key, {}).get(k, np.nan) for r in rows],
                    marker=_MARKERS[j % len(_MARKERS)], ms=4, color=color,
                    label=_readable(k, names))
        ax.set_xlabel("epoch"), ax.grid(alpha=0.3, which="both")
        if key == "flip_ratio":
            vals = [100 * v for r in rows for v in r.get(key, {}).values()]
            _percent_axis(ax, vals)
            ax.set_ylabel("weights flipped in the epoch (%)", fontsize=8)
            ax.set_title("binary weights whose sign changed during the epoch", fontsize=10)
            lrs = [r.get("lr") for r in rows]
            handles, labels = ax.get_legend_handles_labels()
            if all(isinstance(v, (int, float)) and v > 0 for v in lrs):
                ax2 = ax.twinx()
                (line,) = ax2.plot(ep, lrs, color="0.35", ls="--", lw=1.5)
                ax2.set_yscale("log")
                ax2.set_ylabel("learning rate (dashed)", fontsize=8, color="0.35")
                ax2.tick_params(axis="y", colors="0.35", labelsize=8)
                handles.append(line)
                labels.append("learning rate (right axis)")
            ax.legend(handles, labels, fontsize=7.5, loc="upper left",
                      bbox_to_anchor=(1.2, 1.0), borderaxespad=0)
        else:
            ax.set_ylabel("inputs with |x| > 1 (%)", fontsize=8)
            ax.set_title("sign inputs outside the STE window (gradient cancelled)",
                         fontsize=10)
            ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      borderaxespad=0)
    fig.tight_layout()
    out = out or os.path.join(run_dir, "curves.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def initial_latent_histograms(run_dir, names, bins):
    """Histograms (``bins`` equal bins over [-1, 1]) of the binary params ``names`` of
    the run's model at initialization, rebuilt from its architecture and seed (the
    layers draw their weights from ``SeedSequence(seed)``, so this is the epoch-0 model
    exactly); None when the run's files do not allow it."""
    arch = read_architecture(run_dir)
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            seed = json.load(f)["seed"]
        from .model import Sequential

        model = Sequential.from_architecture(arch, seed=seed)
        params = {name: p for name, p, _g, info in model.parameters() if info.get("binary")}
        return {n: np.histogram(params[n], bins=bins, range=(-1.0, 1.0))[0].tolist()
                for n in names}
    except Exception:  # noqa: BLE001 -- any missing piece: draw without epoch 0
        return None


def plot_latent_histograms(run_dir, epochs=None, out=None):
    """Histograms of latent weights per binary layer at ``epochs`` (default: 0, i.e.
    the initialization, then the first, middle and last recorded epoch).  Linear axes,
    fraction of the layer's weights per bin; the outermost bins hold the weights clipped
    to exactly +-1.  Writes ``latent_hist.png`` (or ``out``); returns the path."""
    plt = _pyplot()
    rows = [r for r in read_metrics(run_dir) if r.get("latent_hist")]
    if not rows:
        raise ValueError(f"{run_dir}: metrics.jsonl has no latent_hist entries")
    keys = sorted(rows[0]["latent_hist"], key=_key_order)
    bins = len(rows[0]["latent_hist"][keys[0]])
    init = initial_latent_histograms(run_dir, keys, bins)
    by_epoch = {r["epoch"]: r["latent_hist"] for r in rows}
    if init is not None:
        by_epoch[0] = init
    if epochs is None:
        recorded = [r["epoch"] for r in rows]
        picks = sorted({recorded[0], recorded[len(recorded) // 2], recorded[-1]})
        epochs = ([0] if init is not None else []) + picks
    chosen = [e for e in epochs if e in by_epoch]
    if not chosen:
        raise ValueError(f"{run_dir}: none of the epochs {list(epochs)} has latent histograms")
    names = layer_names(read_architecture(run_dir))
    ncols = min(len(keys), 4)
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.7 * ncols, 3.1 * nrows), squeeze=False)
    # the initialization in dashed black, the epochs in distinct tab10 colours
    palette = iter(["C0", "C1", "C3", "C2", "C4", "C5", "C6", "C8", "C9"] * 4)
    styles = {e: (("k", "--") if e == 0 else (next(palette), "-")) for e in chosen}
    edges = np.linspace(-1, 1, bins + 1)
    for ax in axes.ravel()[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.ravel(), keys):
        for e in chosen:
            counts = np.asarray(by_epoch[e][key], dtype=float)
            label = "epoch 0 (initialization)" if e == 0 else f"after epoch {e}"
            color, ls = styles[e]
            ax.stairs(100 * counts / counts.sum(), edges, color=color, ls=ls, lw=1.6,
                      label=label)
        ax.set_title(f"latent weights, {_readable(key, names)}", fontsize=9)
        ax.set_xlabel("latent weight w (clipped to [-1, 1])", fontsize=8)
        ax.set_ylabel(f"% of the layer's weights per bin\n(bin width {2 / bins:g})",
                      fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7.5, loc="lower center")
    fig.tight_layout()
    out = out or os.path.join(run_dir, "latent_hist.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
