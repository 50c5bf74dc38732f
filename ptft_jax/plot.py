"""Pictures of a run (matplotlib: ``pip install -e ".[plot]"``).

    python -m ptft_jax.plot attention --workdir W --text "..." [--text_pair "..."] --out attn.png
    python -m ptft_jax.plot curves --workdir W --out curves.png

``attention``: one panel per layer and head (``--layers``/``--heads`` pick some), the tokens on
both axes, rows attending to columns. ``curves``: train and validation loss, and the task's
metric, against the step, from ``W/metrics.jsonl``. The few-shot learning curve trains, so it
is its own entry point: ``python -m ptft_jax.learning_curve``.
``python -m ptft_jax.evaluate`` also writes ``W/confusion_<split>.png`` for classification.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

from ptft_jax import cli
from ptft_jax.figures import _pyplot, plot_attention, plot_curves


def attention_maps(run, text: str, text_pair: str | None = None):
    """``(tokens, probs[layers, heads, L, L])`` of the run's encoder on one input (no dropout).

    The run's forward pass gives each layer's input; the probabilities are recomputed from it
    with that layer's own query and key projections (BERT's layer layout), exactly as the
    layer computes them, so the model needs no extra output.
    """
    import jax

    from ptft_jax import models, steps

    enc = run.tokenizer(text, text_pair, truncation=True, max_length=run.cfg.data.max_seq_length)
    ids = np.asarray([enc["input_ids"]], np.int32)
    batch = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.asarray([enc.get("token_type_ids", [0] * ids.shape[1])], np.int32),
    }
    forward = steps.jit_forward(run.model_cfg, run.task.head, run.mesh, hidden_states=True)
    with jax.set_mesh(run.mesh):
        hidden = [np.asarray(x[0], np.float32) for x in jax.device_get(forward(run.params, batch))]
    layers = jax.device_get(run.params)[models.get(run.model_cfg.family).BACKBONE]["encoder"]
    cfg, probs = run.model_cfg, []
    for i, x in enumerate(hidden[:-1]):
        attn = layers["layer"][i]["attention"]["self"]
        q, k = (
            (x @ attn[name]["kernel"] + attn[name]["bias"]).reshape(
                len(x), cfg.num_attention_heads, cfg.head_dim
            )
            for name in ("query", "key")
        )
        logits = np.einsum("qnh,knh->nqk", q, k) / np.sqrt(cfg.head_dim)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        probs.append(e / e.sum(-1, keepdims=True))
    return run.tokenizer.convert_ids_to_tokens(enc["input_ids"]), np.stack(probs)


def main(argv=None) -> None:
    p = cli.ArgumentParser(prog="python -m ptft_jax.plot", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="picture", required=True)
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
    args = p.parse_args(argv)
    if args.picture == "curves":
        fig = plot_curves(pathlib.Path(args.workdir), args.out)
    else:
        from ptft_jax import workdir

        run = workdir.load(args.workdir)
        if run.model_cfg.family != "bert":
            cli.fail(
                f"{args.workdir} holds a {run.model_cfg.family} model; attention maps read "
                "BERT's query and key layers only, so plot curves for it instead."
            )
        tokens, probs = attention_maps(run, args.text, args.text_pair)

        def pick(spec):
            return [int(x) for x in spec.split(",")] if spec else None

        title = f"Attention of {pathlib.Path(args.workdir).name}: rows query, columns key"
        fig = plot_attention(tokens, probs, args.out, pick(args.layers), pick(args.heads), title)
    _pyplot().close(fig)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    cli.guarded(main)()
