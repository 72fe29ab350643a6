"""Pictures of a run, drawn from its ``metrics.jsonl`` (matplotlib: the ``plot`` extra).

* :func:`plot_curves` -- train / validation / test error and training loss per epoch,
  plus the flip ratio and the STE-cancelled fraction per layer when recorded;
* :func:`plot_latent_histograms` -- latent-weight histograms per layer at chosen epochs.
"""

import json
import os

import numpy as np


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


def plot_curves(run_dir, out=None):
    """Write ``curves.png`` (or ``out``) for ``run_dir``; returns the path."""
    plt = _pyplot()
    rows = read_metrics(run_dir)
    ep = [r["epoch"] for r in rows]
    has_flip = any(r.get("flip_ratio") for r in rows)
    has_ste = any(r.get("ste_cancel") for r in rows)
    n = 2 + has_flip + has_ste
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.6))
    ax = axes[0]
    for key, label in (("train_error", "train"), ("val_error", "validation"), ("test_error", "test")):
        ax.plot(ep, [100 * r[key] for r in rows], marker=".", label=label)
    ax.set_xlabel("epoch"), ax.set_ylabel("error (%)"), ax.set_title("error")
    ax.set_yscale("log"), ax.grid(alpha=0.3), ax.legend()
    ax = axes[1]
    ax.plot(ep, [r["train_loss"] for r in rows], marker=".", color="C3")
    ax.set_xlabel("epoch"), ax.set_ylabel("training loss"), ax.set_title("loss")
    ax.set_yscale("log"), ax.grid(alpha=0.3)
    i = 2
    for key, title, ylabel in (("flip_ratio", "binary weights flipped per epoch", "flipped (%)"),
                               ("ste_cancel", "inputs with |x| > 1 (STE gradient cancelled)",
                                "cancelled (%)")):
        if not any(r.get(key) for r in rows):
            continue
        ax = axes[i]
        names = sorted({k for r in rows for k in r.get(key, {})}, key=lambda s: [int(t) if t.isdigit() else t for t in s.split(".")])
        for name in names:
            ax.plot(ep, [100 * r.get(key, {}).get(name, np.nan) for r in rows], marker=".", label=f"layer {name}")
        ax.set_xlabel("epoch"), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=9)
        if key == "flip_ratio":
            ax.set_yscale("log")
        ax.grid(alpha=0.3), ax.legend(fontsize=7)
        i += 1
    fig.tight_layout()
    out = out or os.path.join(run_dir, "curves.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_latent_histograms(run_dir, epochs=None, out=None):
    """Histograms of latent weights per binary layer at ``epochs`` (default: first, middle,
    last recorded).  Writes ``latent_hist.png`` (or ``out``); returns the path."""
    plt = _pyplot()
    rows = [r for r in read_metrics(run_dir) if r.get("latent_hist")]
    if not rows:
        raise ValueError(f"{run_dir}: metrics.jsonl has no latent_hist entries")
    if epochs is None:
        picks = sorted({0, len(rows) // 2, len(rows) - 1})
        chosen = [rows[i] for i in picks]
    else:
        chosen = [r for r in rows if r["epoch"] in set(epochs)]
    names = list(chosen[0]["latent_hist"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names):
        for r in chosen:
            counts = np.asarray(r["latent_hist"][name], dtype=float)
            edges = np.linspace(-1, 1, len(counts) + 1)
            ax.stairs(counts / counts.sum(), edges, label=f"epoch {r['epoch']}")
        ax.set_title(f"latent weights {name}", fontsize=9)
        ax.set_xlabel("w"), ax.set_yscale("log"), ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction"), axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    out = out or os.path.join(run_dir, "latent_hist.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
