"""Predict with a trained workdir.

    python -m ptft_jax.predict --workdir W --text "Paris is the [MASK] of France." [--top_k 5]
    python -m ptft_jax.predict --workdir W --text "great film" [--text_pair "..."] [--file F]
    python -m ptft_jax.predict --workdir W --question "Who ...?" --context "..."

MLM workdirs print one JSON line per text: the top-k fills (softmax probabilities) of each
``[MASK]`` in order. Classification workdirs print ``{"text", "label", "probs"}`` per input
(regression: ``{"text", "score"}``); token classification workdirs ``{"text", "entities"}``
(type, text, character span, score), question answering ones ``{"question", "answer",
"start", "end", "score"}``; ``--file`` holds one text, or one JSON object with the
run's text field (and pair field), per line. The model is the best checkpoint when the run
keeps one (classification, ``W/best``), else the last; ``--checkpoint best|last|STEP`` picks
another, and an info line on standard error names the one used and its step.
"""

from __future__ import annotations

import json
import logging
import pathlib

from absl import app, flags

from ptft_jax import cli, metrics, steps, workdir
from ptft_jax.data import sources
from ptft_jax.data.sources import DataError

log = logging.getLogger("ptft_jax.predict")  # also when run as __main__


def predict(run: workdir.Run, texts: list[str], pairs=None, top_k: int = 5) -> list[dict]:
    """The task's rows for ``texts`` (and ``pairs``): fills of each ``[MASK]`` for MLM,
    labels and probabilities (or scores) for classification."""
    forward = steps.jit_forward(run.model_cfg, run.task.head, run.mesh)
    return run.task.predict(run, texts, pairs, top_k, forward)


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
    given, given_pairs = f.text + f.question, f.text_pair + f.context  # a question's context
    if not f.workdir or not (given or f.file):
        cli.fail('pass --workdir W and --text "..." (or --file F).')
    run = workdir.load(f.workdir, f.checkpoint)
    texts, pairs = _read_inputs(run.cfg, given, given_pairs, f.file)
    rows = predict(run, texts, pairs, f.top_k)
    log.info("%s", run.describe())  # once the inputs passed: a mistake stays one line
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A ptft_jax run folder.")
    flags.DEFINE_multi_string("text", [], "Input text; repeat for several.")
    flags.DEFINE_multi_string("text_pair", [], "Second text of a pair, one per --text.")
    flags.DEFINE_multi_string("question", [], "Question answering: a question; repeat for several.")
    flags.DEFINE_multi_string("context", [], "Question answering: the context of each --question.")
    flags.DEFINE_string("file", "", "One text or JSON object (text, text_pair) per line.")
    flags.DEFINE_integer("top_k", 5, "Fills to list per [MASK].")
    flags.DEFINE_string(
        "checkpoint",
        None,
        "best (W/best), last (the newest of W/checkpoints) or one of its kept steps; default: "
        "best when the run keeps one (classification), else last.",
    )
    app.run(main, flags_parser=cli.parse_absl_flags)
