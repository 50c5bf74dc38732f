"""Predict with a trained workdir.

    python -m ptft_jax.predict --workdir W --text "Paris is the [MASK] of France." [--top_k 5]
    python -m ptft_jax.predict --workdir W --text "great film" [--text_pair "..."] [--file F]

MLM workdirs print one JSON line per text: the top-k fills (softmax probabilities) of each
``[MASK]`` in order. Classification workdirs print ``{"text", "label", "probs"}`` per input
(regression: ``{"text", "score"}``); ``--file`` holds one text, or one JSON object with the
run's text field (and pair field), per line.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from ptft_jax import cli, config, metrics, steps, workdir
from ptft_jax.data import sources
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
    graphdef, _ = steps.abstract_model(run.model_cfg, config.model_task(run.cfg))

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


def classify(run: workdir.Run, texts: list[str], pairs: list[str] | None = None) -> list[dict]:
    """Class probabilities (or the regression score) of each text / pair."""
    cfg = run.cfg
    enc = run.tokenizer(
        texts,
        pairs,
        padding=True,
        truncation=True,
        max_length=cfg.data.max_seq_length,
        return_tensors="np",
    )
    graphdef, _ = steps.abstract_model(run.model_cfg, config.model_task(cfg))

    @jax.jit
    def forward(params, ids, mask, types):
        return nnx.merge(graphdef, params)(ids, mask, types)

    with jax.set_mesh(run.mesh):
        logits = np.asarray(
            jax.device_get(
                forward(
                    run.params,
                    enc["input_ids"].astype(np.int32),
                    enc["attention_mask"].astype(np.int32),
                    enc["token_type_ids"].astype(np.int32),
                )
            )
        )
    names = workdir.label_names(run)
    out = []
    for i, text in enumerate(texts):
        row = {"text": text} if pairs is None else {"text": text, "text_pair": pairs[i]}
        if run.model_cfg.num_labels == 1:
            row["score"] = float(logits[i, 0])
        else:
            p = np.exp(logits[i] - logits[i].max())
            p /= p.sum()
            row["label"] = names[int(p.argmax())]
            row["probs"] = {name: float(v) for name, v in zip(names, p, strict=True)}
        out.append(row)
    return out


def _read_file(path: str, text_field: str, pair_field: str) -> tuple[list[str], list[str]]:
    """Texts (and pairs) of ``--file``: one text, or one JSON object with the run's text field
    (and pair field), per line; blank lines are skipped."""
    if not pathlib.Path(path).is_file():
        raise DataError(f"--file {path} does not exist; check the path.")
    lines = sources.read_text(pathlib.Path(path)).splitlines()
    texts, pairs = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = line
        if not isinstance(obj, dict):
            texts.append(line)
            pairs.append("")
            continue
        for field in filter(None, (text_field, pair_field)):
            if not isinstance(obj.get(field, ""), str):
                raise DataError(f"{path} line {n}: {field!r} is not text; write it as a string.")
        if text_field not in obj:
            raise DataError(
                f"{path} line {n} has no {text_field!r} (the field this run was trained on; it "
                f"has {', '.join(repr(k) for k in obj) or 'no fields'}); add it."
            )
        texts.append(obj[text_field])
        pairs.append(obj.get(pair_field, "") if pair_field else "")
    if not texts:
        raise DataError(f"--file {path} has no text (every line is blank); add one text a line.")
    return texts, pairs


def _read_inputs(cfg, texts, pairs, path) -> tuple[list[str], list[str] | None]:
    if path:
        texts, pairs = _read_file(path, cfg.data.text_field, cfg.data.text_pair_field)
        return texts, (pairs if any(pairs) else None)
    if pairs and len(pairs) != len(texts):
        raise DataError("Give one --text_pair per --text, or none.")
    if not any(t.strip() for t in texts):
        raise DataError('--text is empty; pass the text to predict, as in --text "great film".')
    return list(texts), (list(pairs) if pairs else None)


@cli.guarded
def main(argv) -> None:
    del argv
    metrics.quiet_logs()
    f = flags.FLAGS
    if not f.workdir or not (f.text or f.file):
        cli.fail('pass --workdir W and --text "..." (or --file F).')
    run = workdir.load(f.workdir)
    texts, pairs = _read_inputs(run.cfg, f.text, f.text_pair, f.file)
    if config.model_task(run.cfg) == "contrastive":
        raise config.ConfigError(
            "A contrastive run predicts no labels; export it (a BertModel) for embeddings."
        )
    if config.model_task(run.cfg) == "mlm":
        rows = fill_mask(run, texts, f.top_k)
    else:
        rows = classify(run, texts, pairs)
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A ptft_jax run folder.")
    flags.DEFINE_multi_string("text", [], "Input text; repeat for several.")
    flags.DEFINE_multi_string("text_pair", [], "Second text of a pair, one per --text.")
    flags.DEFINE_string("file", "", "One text or JSON object (text, text_pair) per line.")
    flags.DEFINE_integer("top_k", 5, "Fills to list per [MASK].")
    app.run(main, flags_parser=cli.parse_absl_flags)
