"""Pictures of a run (matplotlib: ``pip install -e ".[plot]"``).

    python -m ptft_jax.plot attention --workdir W --text "..." [--text_pair "..."] --out attn.png
    python -m ptft_jax.plot curves --workdir W --out curves.png
    python -m ptft_jax.plot learning_curve --config configs/minilm_mr.py --workdir W \
        --sizes 16,64,256,1024 --out learning_curve.png

``attention``: one panel per layer and head (``--layers``/``--heads`` pick some), the tokens on
both axes, rows attending to columns. ``curves``: train and validation loss, and the task's
metric, against the step, from ``W/metrics.jsonl``. ``learning_curve``: fine-tunes the config
once per training-set size N (``data.max_train_examples``: a stratified, seeded subsample) into
``W/n<N>``, the same ``--steps`` at every N, and plots test accuracy against N
(``W/learning_curve.json`` has the numbers).
``python -m ptft_jax.evaluate`` also writes ``W/confusion_<split>.png`` for classification.
"""

from __future__ import annotations

import json
import pathlib
import sys
import textwrap

import numpy as np

from ptft_jax import cli, errors

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


def attention_maps(run, text: str, text_pair: str | None = None):
    """``(tokens, probs[layers, heads, L, L])`` of the run's encoder on one input (no dropout).

    The probabilities are recomputed from each layer's input with that layer's own query and
    key projections, exactly as the layer computes them, so the model needs no extra output.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ptft_jax import config, steps

    enc = run.tokenizer(text, text_pair, truncation=True, max_length=run.cfg.data.max_seq_length)
    ids = np.asarray([enc["input_ids"]], np.int32)
    types = np.asarray([enc.get("token_type_ids", [0] * ids.shape[1])], np.int32)
    mask = np.ones_like(ids)
    graphdef, _ = steps.abstract_model(run.model_cfg, config.model_task(run.cfg))
    cfg = run.model_cfg

    @jax.jit
    def maps(params):
        bert = nnx.merge(graphdef, params).bert
        hidden = bert(ids, mask, types, return_all_hidden=True)["hidden_states"]
        out = []
        for layer, x in zip(bert.encoder.layer, hidden[:-1], strict=True):
            attn = layer.attention.self
            q = attn.query(x).reshape(*x.shape[:2], cfg.num_attention_heads, cfg.head_dim)
            k = attn.key(x).reshape(*x.shape[:2], cfg.num_attention_heads, cfg.head_dim)
            logits = jnp.einsum("bqnh,bknh->bnqk", q, k, preferred_element_type=jnp.float32)
            out.append(jax.nn.softmax(logits / np.sqrt(cfg.head_dim), axis=-1)[0])
        return jnp.stack(out)

    with jax.set_mesh(run.mesh):
        probs = np.asarray(jax.device_get(maps(run.params)))
    return run.tokenizer.convert_ids_to_tokens(enc["input_ids"]), probs


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


def learning_curve(cfg, workdir: pathlib.Path, sizes, steps: int = 150, evals: int = 3):
    """Fine-tune ``cfg`` at every size in ``sizes`` for the same ``steps`` steps (a small set
    is seen for more epochs), evaluating on the validation split at step 0 and ``evals`` times
    more; the config's ``metric_for_best`` picks the checkpoint the test split scores. Returns
    one row per size, also in ``W/learning_curve.json``."""
    from ptft_jax.train import run

    rows = []
    for n in sizes:
        c = cfg.copy_and_resolve_references()
        c.data.max_train_examples = n
        c.train.update(epochs=0, steps=steps, eval_every=max(1, -(-steps // evals)))
        summary = run(c, workdir / f"n{n}")
        rows.append({"n": n, "steps": summary["step"], **summary["test"]})
        (workdir / "learning_curve.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


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


def main(argv=None) -> None:
    p = cli.ArgumentParser(prog="python -m ptft_jax.plot", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    a = sub.add_parser("attention", help="attention maps of one input")
    a.add_argument("--workdir", required=True)
    a.add_argument("--text", required=True)
    a.add_argument("--text_pair")
    a.add_argument("--layers", help="comma-separated layer indices (default: all)")
    a.add_argument("--heads", help="comma-separated head indices (default: all)")
    a.add_argument("--out", default="attention.png")
    c = sub.add_parser("curves", help="loss and metric against the step")
    c.add_argument("--workdir", required=True)
    c.add_argument("--out", default="curves.png")
    lc = sub.add_parser("learning_curve", help="fine-tune at several sizes, plot test accuracy")
    lc.add_argument("--config", required=True, help="a classification config file")
    lc.add_argument("--workdir", required=True)
    lc.add_argument("--sizes", default="16,64,256,1024")
    lc.add_argument("--steps", type=int, default=150, help="training steps at every size")
    lc.add_argument("--evals", type=int, default=3, help="validation passes per size")
    lc.add_argument("--out", default="learning_curve.png")
    args = p.parse_args(argv)
    if args.kind == "learning_curve":
        import importlib.util

        if min(args.steps, args.evals) < 1:
            p.error("--steps and --evals must be at least 1.")
        problem = cli.config_file_problem(args.config)
        if problem:
            raise errors.UserError(problem)
        spec = importlib.util.spec_from_file_location("ptft_jax_config", args.config)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sizes = [int(x) for x in args.sizes.split(",")]
        work = pathlib.Path(args.workdir)
        rows = learning_curve(module.get_config(), work, sizes, args.steps, args.evals)
        title = f"{pathlib.Path(args.config).stem}: test score against training set size"
        fig = plot_learning_curve(rows, args.out, title)
    elif args.kind == "curves":
        fig = plot_curves(pathlib.Path(args.workdir), args.out)
    else:
        from ptft_jax import workdir

        run = workdir.load(args.workdir)
        tokens, probs = attention_maps(run, args.text, args.text_pair)

        def pick(spec):
            return [int(x) for x in spec.split(",")] if spec else None

        title = f"Attention of {pathlib.Path(args.workdir).name}: rows query, columns key"
        fig = plot_attention(tokens, probs, args.out, pick(args.layers), pick(args.heads), title)
    _pyplot().close(fig)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    cli.guarded(main)()
