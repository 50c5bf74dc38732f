"""Predict with a trained workdir.

    python -m ptft_jax.predict --workdir W --text "Paris is the [MASK] of France." [--top_k 5]

MLM workdirs print one JSON line per text: the top-k fills (softmax probabilities) of each
``[MASK]`` in order.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from ptft_jax import config, metrics, steps, workdir
from ptft_jax.data.sources import DataError


def fill_mask(run: workdir.Run, texts: list[str], top_k: int = 5) -> list[dict]:
    """Top-k fills for every ``[MASK]`` of every text (one padded batch)."""
    tok = run.tokenizer
    enc = tok(
        texts,
        padding=True,
        truncation=True,
        max_length=run.model_cfg.max_position_embeddings,
        return_tensors="np",
    )
    ids = enc["input_ids"]
    is_mask = ids == tok.mask_token_id
    for text, row in zip(texts, is_mask, strict=True):
        if not row.any():
            raise DataError(f"{text!r} has no {tok.mask_token}; put one where a word is missing.")
    k = int(is_mask.sum(1).max())
    positions = np.zeros((len(texts), k), np.int32)
    for i, row in enumerate(is_mask):
        where = np.flatnonzero(row)
        positions[i, : len(where)] = where
    graphdef, _ = steps.abstract_model(run.model_cfg, run.cfg.task)

    @jax.jit
    def probabilities(params, ids, mask, types, positions):
        logits = nnx.merge(graphdef, params)(ids, mask, types, positions)
        return jax.lax.top_k(jax.nn.softmax(logits, axis=-1), top_k)

    with jax.set_mesh(run.mesh):
        scores, top = jax.device_get(
            probabilities(
                run.params,
                ids.astype(np.int32),
                enc["attention_mask"].astype(np.int32),
                enc.get("token_type_ids", np.zeros_like(ids)).astype(np.int32),
                jnp.asarray(positions),
            )
        )
    out = []
    for i, text in enumerate(texts):
        fills = [
            [
                {"token": tok.convert_ids_to_tokens(int(t)), "score": float(s)}
                for t, s in zip(top[i, j], scores[i, j], strict=True)
            ]
            for j in range(int(is_mask[i].sum()))
        ]
        out.append({"text": text, "fills": fills})
    return out


def main(argv) -> None:
    del argv
    metrics.quiet_logs()
    if not flags.FLAGS.workdir or not flags.FLAGS.text:
        print('error: pass --workdir W and at least one --text "...".', file=sys.stderr)
        sys.exit(2)
    try:
        run = workdir.load(flags.FLAGS.workdir)
        if run.cfg.task != "mlm":
            raise config.ConfigError(
                f"predict supports MLM workdirs; {flags.FLAGS.workdir} is {run.cfg.task!r}."
            )
        for row in fill_mask(run, flags.FLAGS.text, flags.FLAGS.top_k):
            print(json.dumps(row))
    except (config.ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A ptft_jax run folder.")
    flags.DEFINE_multi_string("text", [], "Input text; repeat for several.")
    flags.DEFINE_integer("top_k", 5, "Fills to list per [MASK].")
    app.run(main)
