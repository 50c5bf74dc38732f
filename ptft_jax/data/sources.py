"""Where records come from: local files and folders, the Hugging Face hub, built-in samples.

Every source becomes ``{split: [record, ...]}`` with plain-Python dict records; choosing the
text and label fields is left to the tokenizer step.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import pathlib
import sys

import numpy as np

from ptft_jax.data import builtin
from ptft_jax.data.builtin import DataError

__all__ = ["DataError", "Record", "csv_field_limit", "load_records", "origin", "read_text"]
__all__ += ["split_labeled", "text_of"]
log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".parquet")
# File stems a split folder may use, and the split each one means.
SPLIT_STEMS = {
    "train": "train",
    "validation": "validation",
    "dev": "validation",
    "val": "validation",
    "test": "test",
}
_HINT = "set --config.data.source to a file, folder, hf:<name> or builtin:<name>"


class Record(dict):
    """A record's fields, and where it came from (``path line N``), for error messages."""

    __slots__ = ("origin",)

    def __init__(self, fields, origin: str):
        super().__init__(fields)
        self.origin = origin


def origin(record: dict) -> str:
    """Where ``record`` came from (``data/train.csv line 7``), for an error message."""
    return getattr(record, "origin", "a record")


def split_labeled(records: list[dict], fields=("text",)) -> dict[str, list[dict]]:
    """Splits labeled records 80/10/10 the one way used everywhere: drop exact duplicates of the
    text ``fields`` (the text, or text and pair; keep the first), permute with
    ``numpy.random.default_rng(0)``, cut at 80% and 90%."""
    seen: set[tuple] = set()
    unique = []
    for record in records:
        key = tuple(text_of(record, f) for f in fields)
        if key not in seen:
            seen.add(key)
            unique.append(record)
    n = len(unique)
    order = np.random.default_rng(0).permutation(n)
    cuts = {"train": (0, int(0.8 * n)), "validation": (int(0.8 * n), int(0.9 * n))}
    cuts["test"] = (int(0.9 * n), n)
    return {split: [unique[i] for i in order[a:b]] for split, (a, b) in cuts.items()}


def text_of(record: dict, field: str) -> str:
    """Returns ``record[field]`` as text, or raises DataError naming the fields the record has."""
    if field not in record:
        have = ", ".join(repr(k) for k in record) or "none"
        raise DataError(
            f"{origin(record)} has no field {field!r} (its fields: {have}); set "
            "--config.data.text_field (or text_pair_field) to one of its fields."
        )
    value = record[field]
    if not isinstance(value, str):
        raise DataError(
            f"{origin(record)}: field {field!r} holds {type(value).__name__} {value!r:.40}, not "
            "text; set --config.data.text_field (or text_pair_field) to a field that holds text."
        )
    return value


def read_text(path: pathlib.Path) -> str:
    """The text of ``path``, or DataError naming the first byte that is not UTF-8."""
    try:
        # utf-8-sig: spreadsheet exports start with a byte-order mark that would rename a column.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not valid UTF-8 (byte {e.start}); re-encode it as UTF-8, for example "
            f"with `iconv -f latin1 -t utf-8`."
        ) from None


def _read_json(path: pathlib.Path) -> list[dict]:
    text = read_text(path)
    if text.lstrip().startswith("["):  # one JSON list of objects
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path} is not valid JSON (line {e.lineno}: {e.msg}); fix it, or write one JSON "
                "object per line."
            ) from None
        where = [f"{path} item {i}" for i in range(len(rows))]
    else:  # JSON lines
        rows, where = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path} line {n} is not valid JSON ({e.msg}: {line.strip()!r:.60}); fix or "
                    "remove that line."
                ) from None
            where.append(f"{path} line {n}")
    for row, at in zip(rows, where, strict=True):
        if not isinstance(row, dict):
            raise DataError(f"{at} holds {row!r:.40}, not a JSON object; write one object a line.")
    return [Record(row, at) for row, at in zip(rows, where, strict=True)]


def _column_type(values: list[str]) -> type:
    # CSV has no types; a column is numeric only if every filled cell is, so labels "0"/"1"
    # become ints (an empty cell None) while a text column with one number-looking cell stays
    # text.
    filled = [v for v in values if v.strip()]
    for number in (int, float):
        try:
            for v in filled:
                number(v)
        except (TypeError, ValueError):
            continue
        return number if filled else str
    return str


def csv_field_limit() -> int:
    """Lets a CSV cell be as long as the platform allows (Python's csv stops at 131,072
    characters by default) and returns that limit."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return limit
        except OverflowError:  # the C long is narrower than sys.maxsize (Windows)
            limit //= 2


def _csv_rows(path: pathlib.Path, text: str) -> tuple[list[list[str]], list[int]]:
    """The non-blank rows of a CSV text and the line each starts on (a quoted cell can span
    lines), or DataError naming the line where the row that does not parse starts."""
    limit = csv_field_limit()
    # newline="" keeps line breaks inside quoted cells as part of the text.
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, firsts, end = [], [], 0  # end: the last line read so far
    try:
        for cells in reader:
            first, end = end + 1, reader.line_num
            if cells:  # a blank line is no row
                rows.append(cells)
                firsts.append(first)
    except csv.Error as e:
        if "field limit" in str(e):
            raise DataError(
                f"{path} line {end + 1} has text longer than the limit of {limit:,} characters "
                "for one CSV cell; split that text into shorter records or write JSON lines."
            ) from None
        raise DataError(
            f"{path} is not valid CSV (line {end + 1}: {e}); fix the quoting or export it again."
        ) from None
    tail = "".join(io.StringIO(text, newline="").readlines()[firsts[-1] - 1 :] if rows else [])
    if _unclosed(tail):
        raise DataError(
            f"{path} line {firsts[-1]} opens a quote that is never closed (the rest of the file "
            "would be one cell); close it or export the file again."
        )
    return rows, firsts


def _unclosed(tail: str) -> bool:
    """Whether the CSV text of a file's last row ends inside a quoted cell: Python's lenient
    reader takes the rest of the file as that cell instead of saying so."""
    try:
        list(csv.reader(io.StringIO(tail, newline=""), strict=True))
    except csv.Error as e:
        return "unexpected end of data" in str(e)
    return False


def _read_csv(path: pathlib.Path) -> list[dict]:
    rows, firsts = _csv_rows(path, read_text(path))
    header, rows, firsts = (rows or [[]])[0], rows[1:], firsts[1:]
    for cells, first in zip(rows, firsts, strict=True):
        if len(cells) > len(header):
            raise DataError(
                f"{path} line {first} has more cells than the header; fix that row's quoting."
            )
    # A missing cell at a row's end is an empty one (as csv.DictReader's restval makes it).
    rows = [dict(itertools.zip_longest(header, cells, fillvalue="")) for cells in rows]
    kinds = {col: _column_type([row[col] for row in rows]) for col in header}

    def cell(col: str, value: str):
        return None if kinds[col] is not str and not value.strip() else kinds[col](value)

    return [
        Record({col: cell(col, v) for col, v in row.items()}, f"{path} line {first}")
        for row, first in zip(rows, firsts, strict=True)
    ]


def _read_parquet(path: pathlib.Path) -> list[dict]:
    # pyarrow comes with `datasets`; imported here so text-only runs skip its import time.
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    return [Record(row, f"{path} row {i + 1}") for i, row in enumerate(rows)]


def _read_file(path: pathlib.Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = enumerate(read_text(path).splitlines(), 1)
        return [Record({"text": line}, f"{path} line {n}") for n, line in lines if line.strip()]
    if suffix in (".json", ".jsonl"):
        return _read_json(path)
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise DataError(
        f"data.source {path} has the unsupported extension {path.suffix!r}; use one of "
        f"{', '.join(SUFFIXES)}."
    )


def _read_folder(folder: pathlib.Path) -> dict[str, list[dict]]:
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
        return {split: _read_file(by_split[split]) for split in order if split in by_split}
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
        split: [Record(r, f"hf:{spec} {split} row {i + 1}") for i, r in enumerate(ds.to_list())]
        for split, ds in loaded.items()
    }


def _load_builtin(name: str) -> dict[str, list[dict]]:
    if name not in builtin.TEXT_BUILTINS:
        known = ", ".join(f"builtin:{n}" for n in builtin.TEXT_BUILTINS)
        hint = " (it holds weights: use it as init_from)" if name in builtin.BUILTINS else ""
        raise DataError(f"Unknown data source 'builtin:{name}'{hint}; use one of {known}.")
    records = [
        Record(r, f"builtin:{name} record {i + 1}")
        for i, r in enumerate(builtin.load_builtin_texts(name))
    ]
    # Unlabeled text has no fixed split: the caller holds out its own eval slice.
    return split_labeled(records) if "label" in records[0] else {"train": records}


def _only_empty(source: str, split: str) -> DataError:
    return DataError(
        f"data.source {source!r} has only empty texts in its {split} split; fill in the text "
        "field or point data.source at the right file."
    )


def _has_text(record: dict) -> bool:
    return any(isinstance(v, str) and v.strip() for v in record.values())


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
                raise DataError(
                    f"{origin(record)} has an empty {empty[0]!r}; fill it in, remove that "
                    "record, or set --config.data.skip_empty_texts=True to leave such records "
                    "out."
                )
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
    source: str, split: str | None = None, fields=(), skip_empty: bool = False
) -> dict[str, list[dict]]:
    """Loads ``data.source`` as ``{split: records}``; with ``split`` only that split.

    ``source`` is ``builtin:<name>``, ``hf:<name>[:<config>]``, a file (.txt, .json, .jsonl,
    .csv, .parquet), a folder of train/validation(dev, val)/test files, or a folder of .txt
    documents (all in "train"). A record whose text ``fields`` (the fields a task reads) are
    empty stops the run naming it, or with ``skip_empty`` (``data.skip_empty_texts``) is left
    out with one line that counts them; blank lines of .txt files are no records. Raises
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
        splits = _read_folder(path) if path.is_dir() else {"train": _read_file(path)}
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
