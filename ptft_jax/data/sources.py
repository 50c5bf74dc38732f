"""Where records come from: local files (``files.py``) and folders, the Hugging Face hub,
built-in samples.

Every source becomes ``{split: [record, ...]}`` with plain-Python dict records; choosing the
text and label fields is left to the tokenizer step, but a record whose text field is empty
is named here (or, with ``data.skip_empty_texts``, left out with a line that counts them).
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np

from ptft_jax.data import builtin, builtin_texts
from ptft_jax.data.builtin import DataError
from ptft_jax.data.files import (
    SUFFIXES,
    Record,
    csv_field_limit,
    empty_text,
    origin,
    read_file,
    read_text,
    text_of,
)

__all__ = ["DataError", "Record", "csv_field_limit", "load_records", "origin", "read_text"]
__all__ += ["split_labeled", "text_of"]
log = logging.getLogger(__name__)

# File stems a split folder may use, and the split each one means.
SPLIT_STEMS = {
    "train": "train",
    "validation": "validation",
    "dev": "validation",
    "valid": "validation",
    "val": "validation",
    "test": "test",
}
_HINT = "set --config.data.source to a file, folder, hf:<name> or builtin:<name>"


def split_labeled(records: list[dict], fields=("text",), key=None) -> dict[str, list[dict]]:
    """Splits labeled records 80/10/10 the one way used everywhere: drop exact duplicates of the
    text ``fields`` (the text, or text and pair; ``key(record)``: another hashable text, such
    as a sentence's words; keep the first), permute with ``numpy.random.default_rng(0)``, cut
    at 80% and 90%."""
    seen: set[tuple] = set()
    unique = []
    for record in records:
        key_of = tuple(text_of(record, f) for f in fields) if key is None else key(record)
        if key_of not in seen:
            seen.add(key_of)
            unique.append(record)
    n = len(unique)
    order = np.random.default_rng(0).permutation(n)
    cuts = {"train": (0, int(0.8 * n)), "validation": (int(0.8 * n), int(0.9 * n))}
    cuts["test"] = (int(0.9 * n), n)
    return {split: [unique[i] for i in order[a:b]] for split, (a, b) in cuts.items()}


def _read_folder(folder: pathlib.Path, conll: bool = False) -> dict[str, list[dict]]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    by_split: dict[str, pathlib.Path] = {}
    for path in files:
        split = SPLIT_STEMS.get(path.stem.lower())
        if split is None:
            continue
        if split in by_split:
            raise DataError(
                f"data.source {folder} has two files for the {split} split ({by_split[split].name}"
                f" and {path.name}); keep only one."
            )
        by_split[split] = path
    if by_split and "train" not in by_split:
        have = [split for split in ("validation", "test") if split in by_split]
        suffix = by_split[have[0]].suffix.lower()
        others = ", ".join(x for x in (".jsonl", ".csv", ".parquet", ".txt") if x != suffix)
        raise DataError(
            f"data.source {str(folder)!r} has no train file, only {' and '.join(have)}; add "
            f"train{suffix} (or {others}) there."
        )
    if by_split:
        order = ("train", "validation", "test")
        return {split: read_file(by_split[split], conll) for split in order if split in by_split}
    docs = [(p, read_text(p)) for p in files if p.suffix.lower() == ".txt"]
    if not docs:
        raise DataError(
            f"data.source {folder} has no train/validation/test file and no .txt files; add "
            f"train.jsonl (or .csv, .parquet, .txt), or point data.source at a file."
        )
    return {"train": [Record({"text": doc}, str(p)) for p, doc in docs if doc.strip()]}


def _load_hub(spec: str) -> dict[str, list[dict]]:
    # datasets imports slowly and is only needed for hub names.
    import datasets

    name, _, config = spec.partition(":")
    try:
        loaded = datasets.load_dataset(name, config or None)
    except ConnectionError:
        raise DataError(
            f"Could not reach the Hugging Face hub to load hf:{spec}; download the data elsewhere "
            "and set data.source=/path/to/file.jsonl (or a folder of train/validation/test files)."
        ) from None
    except (FileNotFoundError, ValueError) as e:
        raise DataError(
            f"Could not load hf:{spec} ({e}); check the dataset and config name."
        ) from e
    return {
        split: [
            Record(_tag_names(r, ds.features), f"hf:{spec} {split} row {i + 1}")
            for i, r in enumerate(ds.to_list())
        ]
        for split, ds in loaded.items()
    }


def _tag_names(row: dict, features) -> dict:
    """``row`` with each list of class ids (a sequence of ClassLabel: ``ner_tags``) as the
    class names, which tags are read by (B-PER, I-PER, O)."""
    for name, feature in features.items():
        inner = getattr(feature, "feature", None)  # Sequence / List of one feature
        names = getattr(inner, "names", None)
        if names and isinstance(row.get(name), list):
            row = {**row, name: [names[i] for i in row[name]]}
    return row


def _load_builtin(name: str) -> dict[str, list[dict]]:
    if name not in builtin_texts.TEXT_BUILTINS:
        known = ", ".join(f"builtin:{n}" for n in builtin_texts.TEXT_BUILTINS)
        hint = " (it holds weights: use it as init_from)" if name in builtin.BUILTINS else ""
        raise DataError(f"Unknown data source 'builtin:{name}'{hint}; use one of {known}.")
    if name in builtin_texts.OFFICIAL_SPLITS:  # published with its splits: kept as they are
        return builtin_texts.load_builtin_splits(name)
    records = [
        Record(r, f"builtin:{name} record {i + 1}")
        for i, r in enumerate(builtin_texts.load_builtin_texts(name))
    ]
    if "tags" in records[0]:  # tagged sentences (token classification): split by their words
        splits = split_labeled(records, key=lambda r: tuple(r["tokens"]))
    elif "label" not in records[0]:  # unlabeled text: the caller holds out its own eval slice
        return {"train": records}
    else:
        splits = split_labeled(records)
    kept = sum(map(len, splits.values()))
    if kept < len(records):
        log.info(
            "builtin:%s: %d of %d records repeat an earlier record's text and are left out (the "
            "80/10/10 split keeps the first of each text)",
            name,
            len(records) - kept,
            len(records),
        )
    return splits


def _only_empty(source: str, split: str) -> DataError:
    return DataError(
        f"data.source {source!r} has only empty texts in its {split} split; fill in the text "
        "field or point data.source at the right file."
    )


def _has_text(record: dict) -> bool:  # some text, or a list of tokens
    return any(
        (isinstance(v, str) and v.strip()) or isinstance(v, list) and v for v in record.values()
    )


def _blank(record: dict, field: str) -> bool:  # has ``field``, but empty, spaces or null
    value = record.get(field, 0)
    return value is None or (isinstance(value, str) and not value.strip())


def _without_empty_texts(source, splits: dict, fields, skip: bool) -> dict[str, list[dict]]:
    """``splits`` less the records whose text ``fields`` are empty: the first stops the run,
    naming it, unless ``skip`` (data.skip_empty_texts), which leaves them out with one line."""
    out, left_out, named, first = {}, 0, [], None
    for name, records in splits.items():
        kept = []
        for record in records:
            empty = [f for f in fields if _blank(record, f)]
            if not empty:
                kept.append(record)
                continue
            if not skip:
                raise empty_text(origin(record), empty[0])
            left_out += 1
            first = record if first is None else first
            named += [f for f in empty if f not in named]
        if not kept:
            raise _only_empty(source, name)
        out[name] = kept
    if left_out:
        log.info(
            "left out %d record%s with an empty %s (first at %s): data.skip_empty_texts is on",
            left_out,
            "s" * (left_out != 1),
            " or ".join(map(repr, named)),
            origin(first),
        )
    return out


def load_records(
    source: str, split: str | None = None, fields=(), skip_empty: bool = False, conll=False
) -> dict[str, list[dict]]:
    """Loads ``data.source`` as ``{split: records}``; with ``split`` only that split.

    ``source`` is ``builtin:<name>``, ``hf:<name>[:<config>]``, a file (.txt, .json, .jsonl,
    .csv, .parquet), a folder of train/validation(dev, val)/test files, or a folder of .txt
    documents (all in "train"). A record whose text ``fields`` (the fields a task reads) are
    empty stops the run naming it, or with ``skip_empty`` (``data.skip_empty_texts``) is left
    out with one line that counts them; blank lines of .txt files are no records; ``conll``:
    .txt files hold CoNLL columns, a record a sentence (.conll files always do). Raises
    DataError with the fix for anything a user can get wrong.
    """
    if source.startswith("builtin:"):
        splits = _load_builtin(source.removeprefix("builtin:"))
    elif source.startswith("hf:"):
        splits = _load_hub(source.removeprefix("hf:"))
    else:
        path = pathlib.Path(source).expanduser()
        if not path.exists():
            raise DataError(f"data.source {source!r} does not exist; {_HINT}.")
        splits = _read_folder(path, conll) if path.is_dir() else {"train": read_file(path, conll)}
    for name, records in splits.items():
        if not records:
            raise DataError(
                f"data.source {source!r} has no records (in its {name} split); add records or "
                "point data.source at data that has them."
            )
        if not any(_has_text(r) for r in records):
            raise _only_empty(source, name)
    if split is not None:
        if split not in splits:
            raise DataError(
                f"data.source {source!r} has no {split} split (it has {', '.join(splits)}); add "
                f"a {split} file or choose one of those splits."
            )
        splits = {split: splits[split]}
    fields = tuple(f for f in fields if f)
    return _without_empty_texts(source, splits, fields, skip_empty) if fields else splits
