"""A suite task's examples: read from its source, mapped to the job's splits, capped as the suite
file says, and written once as ``S/data/<task>/{train,validation,test}.jsonl``.

Every job of the task (each learning rate, seed and starting point) and the TF-IDF baseline read
those files, so they see the same examples. Caps subsample with a fixed seed (the training split
stratified by label), so the same suite file gives the same files; each cap is said in one line.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib

import numpy as np

from ptft_jax.data import classify, glue, sources, squad, tagging
from ptft_jax.errors import DataError
from ptft_jax.suitespec import TaskSpec

log = logging.getLogger(__name__)


def _source_splits(spec: TaskSpec, data_dir: str, base: pathlib.Path) -> dict[str, list[dict]]:
    source = spec.source
    if source.startswith("glue:"):
        return glue.load_glue(source.removeprefix("glue:"), data_dir or None)
    if not source.startswith(("builtin:", "hf:")):
        path = pathlib.Path(source).expanduser()
        source = str(path if path.is_absolute() else base / path)  # beside the suite file
    return sources.load_records(source, conll=spec.tagging)


def _normalised(spec: TaskSpec, records: list[dict]) -> list[dict]:
    if spec.tagging:  # rows {"tokens", "tags"}, checked as the job will check them
        pairs = tagging.sentences(records, spec.tokens_field, spec.tags_field, spec.name)
        return [{"tokens": words, "tags": tags} for words, tags in pairs]
    if spec.answering:  # rows {"question", "context", "answers"}, checked as the job will
        squad.check_answers(records, "question", "context", "answers", allow_empty=False)
        keep = ("id", "question", "context", "answers")
        return [{k: r[k] for k in keep if k in r} for r in records]
    fields = [("text", spec.text_field)]
    if spec.text_pair_field:
        fields.append(("text_pair", spec.text_pair_field))
    out = []
    for record in records:
        row = {name: sources.text_of(record, field) for name, field in fields}
        if spec.label_field not in record or classify.missing(record[spec.label_field]):
            raise DataError(
                f"{sources.origin(record)} has no {spec.label_field!r} (task {spec.name}'s label "
                "field); fill it in or set label_field in the suite file."
            )
        row["label"] = record[spec.label_field]
        out.append(row)
    return out


def _cap(spec: TaskSpec, split: str, rows: list[dict], n: int) -> list[dict]:
    if n <= 0 or len(rows) <= n:
        return rows
    if split == "train" and spec.task == "classification" and not spec.regression:
        kept = classify.subsample(rows, "label", n, seed=0)
    else:
        kept = [rows[i] for i in np.sort(np.random.default_rng(0).permutation(len(rows))[:n])]
    log.info(
        "%s: %s split capped to %d of %d examples (the suite file's max_%s_examples)",
        spec.name,
        split,
        n,
        len(rows),
        "train" if split == "train" else "eval",
    )
    return kept


def load_task(spec: TaskSpec, data_dir: str, base: pathlib.Path) -> dict[str, list[dict]]:
    """``{job split: rows}`` of ``spec``, rows ``{"text", ["text_pair"], "label"}`` (a tagging
    task's: ``{"tokens", "tags"}``), capped.
    ``base`` is the suite file's folder (a relative path source is read from there)."""
    loaded = _source_splits(spec, data_dir, base)
    out = {}
    for split, src in spec.splits:
        if src not in loaded:
            raise DataError(
                f"task {spec.name}: {spec.source} has no {src!r} split (it has "
                f"{', '.join(loaded)}); map the task's {split} split to one of those with "
                "splits = {...} in the suite file."
            )
        rows = _normalised(spec, loaded[src])
        cap = spec.max_train_examples if split == "train" else spec.max_eval_examples
        out[split] = _cap(spec, split, rows, cap)
    return out


def num_labels(spec: TaskSpec, rows: dict[str, list[dict]]) -> int:
    """The classifier's outputs: 1 for a regression, else the training split's classes (names,
    or the largest class id + 1)."""
    if spec.regression:
        return 1
    if spec.tagging:
        return len(tagging.label_names([(r["tokens"], r["tags"]) for r in rows["train"]]))
    if spec.answering:
        return 2  # a start and an end
    names = classify.label_names(rows["train"], "label", None)
    return len(names) if names is not None else classify.class_count(rows["train"], "label", None)


def write_task(folder: pathlib.Path, rows: dict[str, list[dict]]) -> pathlib.Path:
    """Writes ``rows`` as ``folder/<split>.jsonl`` (each file atomically) and returns ``folder``;
    a file that already holds the same rows is left as it is."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, records in rows.items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        path = folder / f"{split}.jsonl"
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return folder
