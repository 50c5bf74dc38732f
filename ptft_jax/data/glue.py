"""GLUE's tasks as records: from a local folder in GLUE's own layout, or from the hub.

``load_glue(task, data_dir)`` reads the train and dev files of one task (GLUE hides its test
labels, so test files are never read) into ``{split: [Record, ...]}`` with the fields
``text``, ``text_pair`` (pair tasks only) and ``label``: a class id in the hub's order, so the
local files' label names map to the same ids (class 1 is the positive class whose F1 MRPC and
QQP report), or a float for STS-B. WNLI is left out, as the papers that report GLUE do.
"""

from __future__ import annotations

import logging
import pathlib
from typing import NamedTuple

from ptft_jax.data.files import Record
from ptft_jax.errors import DataError

log = logging.getLogger(__name__)

HUB_NAME = "nyu-mll/glue"
TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
# Class names in the hub's order (the id of a name is its place); STS-B is a regression.
LABELS: dict[str, tuple[str, ...]] = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "stsb": (),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
}
LEFT_OUT = {"wnli": " (WNLI is left out, as the papers that report GLUE do)"}
SPLITS: dict[str, tuple[str, ...]] = {task: ("train", "validation") for task in TASKS}
SPLITS["mnli"] = ("train", "validation_matched", "validation_mismatched")


class Layout(NamedTuple):
    """Where a task lives in GLUE's folder and which columns hold what."""

    folder: str  # the task's folder in GLUE's layout
    text: str | int  # the column (by header name; by position in a file with no header)
    pair: str | int | None
    label: str | int
    hub: tuple[str, str | None]  # the hub's text and pair fields
    files: tuple[str, ...] = ("train.tsv", "dev.tsv")  # one per split of SPLITS[task]


LAYOUTS: dict[str, Layout] = {
    # CoLA has no header: source, label, original label, sentence
    "cola": Layout("CoLA", 3, None, 1, ("sentence", None)),
    "sst2": Layout("SST-2", "sentence", None, "label", ("sentence", None)),
    "mrpc": Layout("MRPC", "#1 String", "#2 String", "Quality", ("sentence1", "sentence2")),
    "stsb": Layout("STS-B", "sentence1", "sentence2", "score", ("sentence1", "sentence2")),
    "qqp": Layout("QQP", "question1", "question2", "is_duplicate", ("question1", "question2")),
    "mnli": Layout(
        "MNLI",
        "sentence1",
        "sentence2",
        "gold_label",
        ("premise", "hypothesis"),
        ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"),
    ),
    "qnli": Layout("QNLI", "question", "sentence", "label", ("question", "sentence")),
    "rte": Layout("RTE", "sentence1", "sentence2", "label", ("sentence1", "sentence2")),
}


def _check_task(task: str) -> Layout:
    if task not in LAYOUTS:
        hint = LEFT_OUT.get(task, "")
        raise DataError(
            f"Unknown GLUE task {task!r}{hint}; use one of {', '.join(TASKS)} (with --tasks)."
        )
    return LAYOUTS[task]


def label_id(task: str, value: str, where: str) -> int | float:
    """The label of a GLUE file's cell: STS-B's score as a float; otherwise the class id of a
    label name (``entailment``) or of an id written out (``0``, ``1``)."""
    names = LABELS[task]
    if not names:
        try:
            return float(value)
        except ValueError:
            pass
    elif value in names:
        return names.index(value)
    elif value.isdigit() and int(value) < len(names):
        return int(value)
    expected = "a number from 0 to 5" if not names else ", ".join(names)
    raise DataError(
        f"{where} has the label {value!r:.40}, not one of GLUE {task}'s ({expected}); fix that "
        "line or download GLUE again."
    )


def _columns(layout: Layout, header: list[str], path: pathlib.Path) -> list[int]:
    """The positions of the text, pair and label columns in ``header``."""
    wanted = [c for c in (layout.text, layout.pair, layout.label) if c is not None]
    if all(isinstance(c, int) for c in wanted):
        return wanted
    for column in wanted:
        if column not in header:
            raise DataError(
                f"{path} has no column {column!r} in its header ({' '.join(header)[:80]!r}); "
                f"it is not GLUE's {layout.folder}/{path.name}: download GLUE again in its own "
                "layout."
            )
    return [header.index(c) for c in wanted]


def read_tsv(task: str, path: pathlib.Path, short: list[str]) -> list[Record]:
    """The records of one GLUE file. Cells are split on tabs alone, with no quote handling
    (GLUE's text holds stray quotes that a CSV reader would run across lines); a row with too
    few cells is appended to ``short`` as ``path line N`` instead of a record."""
    layout = LAYOUTS[task]
    # utf-8-sig: GLUE's MRPC files keep the byte-order mark of Microsoft's original.
    with path.open(encoding="utf-8-sig", newline="\n") as f:
        lines = [line.rstrip("\n").rstrip("\r") for line in f]
    headed = not isinstance(layout.text, int)
    header = lines[0].split("\t") if headed and lines else []
    where = _columns(layout, header, path)
    first = 2 if headed else 1
    out, bad = [], 0
    for n, line in enumerate(lines[first - 1 :], first):
        if not line:
            continue
        cells = line.split("\t")
        if len(cells) <= max(where):
            short.append(f"{path} line {n}")
            bad += 1
            continue
        origin = f"{path} line {n}"
        fields = {"text": cells[where[0]]}
        if layout.pair is not None:
            fields["text_pair"] = cells[where[1]]
        fields["label"] = label_id(task, cells[where[-1]], origin)
        out.append(Record(fields, origin))
    if bad and not out:
        raise DataError(
            f"Every row of {path} has too few tab-separated cells (at least {max(where) + 1} "
            "expected); it is not a GLUE file: download GLUE again in its own layout."
        )
    return out


def _load_local(task: str, data_dir: str) -> dict[str, list[Record]]:
    layout = LAYOUTS[task]
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"GLUE folder {data_dir} does not exist; pass --data_dir a folder in GLUE's own "
            "layout (CoLA/train.tsv, SST-2/dev.tsv, ...)."
        )
    paths = [root / layout.folder / name for name in layout.files]
    for path in paths:
        if not path.is_file():
            raise DataError(
                f"GLUE folder {data_dir} has no {layout.folder}/{path.name}; download GLUE into "
                f"{data_dir} (its own layout) or run a subset with --tasks."
            )
    short: list[str] = []
    splits = {
        split: read_tsv(task, path, short) for split, path in zip(SPLITS[task], paths, strict=True)
    }
    if short:
        log.warning(
            "GLUE %s: left out %d row%s with too few tab-separated cells (first at %s)",
            task,
            len(short),
            "s" * (len(short) != 1),
            short[0],
        )
    return splits


def _load_hub(task: str) -> dict[str, list[Record]]:
    # datasets imports slowly and is only needed without a local folder.
    import datasets

    try:
        loaded = datasets.load_dataset(HUB_NAME, task)
    except ConnectionError:
        raise DataError(
            f"Could not reach the Hugging Face hub to load {HUB_NAME} ({task}); pass --data_dir "
            "with a folder in GLUE's own layout (CoLA/train.tsv, MNLI/dev_matched.tsv, ...)."
        ) from None
    text, pair = LAYOUTS[task].hub
    out = {}
    for split in SPLITS[task]:
        records = []
        for i, row in enumerate(loaded[split].to_list()):
            fields = {"text": row[text]}
            if pair is not None:
                fields["text_pair"] = row[pair]
            fields["label"] = int(row["label"]) if LABELS[task] else float(row["label"])
            records.append(Record(fields, f"hf:{HUB_NAME}/{task} {split} row {i + 1}"))
        out[split] = records
    return out


def load_glue(task: str, data_dir: str | None = None) -> dict[str, list[Record]]:
    """Returns GLUE ``task``'s labeled splits (``SPLITS[task]``: ``train`` and ``validation``;
    for mnli ``validation_matched`` and ``validation_mismatched``) as records ``{"text",
    "text_pair" (pair tasks), "label"}``, read from ``data_dir`` in GLUE's own layout, or from
    the hub's ``nyu-mll/glue`` without one. Raises DataError naming the fix for an unknown task,
    a missing file, a file with another header, a label that is not the task's, or an
    unreachable hub."""
    _check_task(task)
    return _load_local(task, data_dir) if data_dir else _load_hub(task)
