"""The figures: training curves, attention maps, a confusion matrix, a learning curve.

Each function draws data it is given into a PNG (matplotlib, the ``plot`` extra) and returns the
figure; ``python -m ptft_jax.plot`` and ``evaluate`` gather the data.
"""

from __future__ import annotations

import pathlib
import textwrap

import numpy as np

from ptft_jax import errors
from ptft_jax.suite_report import NAMES, row_label

METRICS = ("accuracy", "f1", "mcc", "pearson", "spearman", "mlm_accuracy", "nsp_accuracy")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise errors.UserError(
            'plots need matplotlib; install it with pip install -e ".[plot]".'
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fit(title: str, width_in: float, fontsize: float = 12.0) -> str:
    """``title`` wrapped onto lines that fit ``width_in`` inches (an average glyph is about
    0.6 em wide), so that no title is cut off at the figure's edge."""
    return textwrap.fill(title, max(20, int(width_in * 72 / (0.6 * fontsize))))


def plot_attention(tokens, probs, out, layers=None, heads=None, title=""):
    """A grid of heatmaps: rows are layers, columns heads; token labels on the outer panels."""
    plt = _pyplot()
    layers = list(range(probs.shape[0])) if layers is None else layers
    heads = list(range(probs.shape[1])) if heads is None else heads
    n = len(tokens)
    cell = max(1.6, 0.16 * n)  # inches per panel: labels of long inputs stay apart
    fig, axes = plt.subplots(
        len(layers),
        len(heads),
        figsize=(cell * len(heads) + 1.5, cell * len(layers) + 1.2),
        squeeze=False,
        constrained_layout=True,
    )
    font = max(4.0, min(9.0, 72 * 0.8 * cell / n))
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r][c]
            # Each panel spans 0 to its own largest probability: long inputs spread attention
            # thin, and a shared 0..1 scale would show them as flat colour.
            ax.imshow(probs[layer, head], cmap="viridis", vmin=0.0, vmax=probs[layer, head].max())
            ax.set_xticks(range(n))
            ax.set_yticks(range(n))
            ax.set_xticklabels(tokens if r == len(layers) - 1 else [], rotation=90, fontsize=font)
            ax.set_yticklabels(tokens if c == 0 else [], fontsize=font)
            if r == 0:
                ax.set_title(f"head {head}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"layer {layer}\n(query)", fontsize=9)
    fig.suptitle(
        _fit(
            (title or "Attention probabilities (rows: query token, columns: key token)")
            + "; colour from 0 to each panel's maximum",
            cell * len(heads) + 1.5,
        )
    )
    fig.savefig(out, dpi=110)
    return fig  # the caller closes it (plt.close) once done with it


def plot_curves(workdir: pathlib.Path, out):
    """Loss (train and validation) and the task's metric against the step."""
    plt = _pyplot()
    from ptft_jax.metrics import read_rows

    if not (workdir / "metrics.jsonl").is_file():
        what = "holds no metrics.jsonl" if workdir.is_dir() else "does not exist"
        raise errors.UserError(f"--workdir {workdir} {what}; pass the --workdir of a training run.")
    rows = read_rows(workdir / "metrics.jsonl")
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "validation"]
    if not train and not val:
        raise errors.UserError(f"{workdir / 'metrics.jsonl'} has no rows yet; train first.")
    metric = next((m for m in METRICS if any(m in r for r in val)), None)
    fig, axes = plt.subplots(1, 2 if metric else 1, figsize=(11, 4), squeeze=False)
    ax = axes[0][0]
    for split, data, style in (("train", train, "-"), ("validation", val, "o-")):
        if data:
            ax.plot([r["step"] for r in data], [r["loss"] for r in data], style, label=split)
    ax.set(xlabel="step", ylabel="loss", title="Loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if metric:
        ax = axes[0][1]
        for split, data, style in (("train", train, "-"), ("validation", val, "o-")):
            points = [(r["step"], r[metric]) for r in data if metric in r]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=split)
        ax.set(xlabel="step", ylabel=metric.replace("_", " "), title=metric.replace("_", " "))
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(_fit(f"Training curves of {workdir.name}", 0.9 * 11), fontsize=12)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return fig  # the caller closes it (plt.close) once done with it


def plot_confusion(matrix, names, out, title: str):
    """Counts, rows the true class and columns the predicted one, each cell labelled."""
    plt = _pyplot()
    cm = np.asarray(matrix)
    size = max(4.0, 0.7 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted label", ylabel="true label")
    fig.suptitle(_fit(title, 0.9 * size), fontsize=12)  # centred on the figure, not the axes
    for (i, j), v in np.ndenumerate(cm):
        color = "white" if v > cm.max() / 2 else "black"
        ax.text(j, i, str(v), ha="center", va="center", color=color)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return fig  # the caller closes it (plt.close) once done with it


def plot_learning_curve(rows: list[dict], out, title: str):
    """Test accuracy (and macro-F1 when present) against the number of training examples."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    n = [r["n"] for r in rows]
    for key, style in (("accuracy", "o-"), ("f1", "s--")):
        if all(key in r for r in rows):
            ax.plot(n, [r[key] for r in rows], style, label=f"test {key}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(n, [str(x) for x in n])
    ax.set(xlabel="training examples (stratified subsample)", ylabel="test score")
    fig.suptitle(_fit(title, 0.9 * 6.5), fontsize=12)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return fig


def plot_suite(report: dict, suite, out):
    """A suite's scores per task, one bar per starting point (median, with the min-max over
    seeds as a whisker) and the average; with several pretraining checkpoints, each task's score
    and the average against the pretraining step instead, the baselines as flat lines."""
    plt = _pyplot()
    specs = [t for t in suite.tasks if t.name in report["tasks"]]
    names = [t.heading for t in specs] + ["average"]
    steps = [k for k in report["starts"] if k.startswith("step ")]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * len(names) + 2), 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def value(key, spec):
        return report["tasks"][spec.name]["scores"].get(key)

    if len(steps) > 1:
        x = [int(k.split()[1]) for k in steps]
        for i, spec in enumerate(specs):
            ys = [(value(k, spec) or {}).get("median", np.nan) for k in steps]
            ax.plot(x, ys, "o-", color=colors[i % len(colors)], label=spec.heading)
        avg = [report["average"].get(k) for k in steps]
        ax.plot(x, [np.nan if a is None else a for a in avg], "k-o", lw=2.5, label="average")
        for key, style in (("random", "--"), ("tfidf", ":")):
            if report["average"].get(key) is not None:
                label = f"{NAMES[key]} (average)"
                ax.axhline(report["average"][key], color="k", ls=style, label=label)
        ax.set(xlabel="pretraining step", ylabel="score (median over seeds)")
    else:
        keys = report["starts"]
        width = 0.8 / len(keys)
        for j, key in enumerate(keys):
            meds, lo, hi = [], [], []
            for spec in specs:
                got = value(key, spec) or {"median": np.nan, "min": np.nan, "max": np.nan}
                meds.append(got["median"])
                lo.append(got["median"] - got["min"])
                hi.append(got["max"] - got["median"])
            avg = report["average"].get(key)
            meds.append(np.nan if avg is None else avg)
            lo.append(0.0)
            hi.append(0.0)
            xs = np.arange(len(names)) + (j - (len(keys) - 1) / 2) * width
            label = row_label(key, report["init_from"])
            ax.bar(xs, meds, width, yerr=[lo, hi], capsize=3, label=label, color=colors[j])
        ax.set_xticks(np.arange(len(names)), names)
        ax.set(ylabel="score (median over seeds)")
    fig.suptitle(_fit(f"{report['suite']}: {report['init_from']}", 0.9 * 6.5), fontsize=12)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return fig
