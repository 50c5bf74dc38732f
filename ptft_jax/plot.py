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

import numpy as np

from ptft_jax import cli, errors
from ptft_jax.figures import _pyplot, plot_attention, plot_curves, plot_learning_curve


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
