"""One local file as records: plain text (a record a non-blank line), JSON (a list of objects,
or one object a line), CSV, Parquet, and CoNLL columns (a record a sentence). Each record knows
where it came from (``path line N``), for the one sentence that names a bad record.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import pathlib
import sys

from ptft_jax.data.builtin import DataError

SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".parquet", ".conll")


class Record(dict):
    """A record's fields, and where it came from (``path line N``), for error messages."""

    __slots__ = ("origin",)

    def __init__(self, fields, origin: str):
        super().__init__(fields)
        self.origin = origin


def origin(record: dict) -> str:
    """Where ``record`` came from (``data/train.csv line 7``), for an error message."""
    return getattr(record, "origin", "a record")


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
    if path.suffix.lower() == ".json" and is_squad(text):  # one record a question
        return read_squad(path)
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


def is_squad(text: str) -> bool:
    """Whether a .json file's text is one SQuAD object (``{"data": [{"title", "paragraphs":
    [{"context", "qas": [...]}]}]}``)."""
    head = text.lstrip()[:4096]
    return head.startswith("{") and '"data"' in head and "\n{" not in head.strip()


def read_squad(path) -> list[dict]:
    """One record a question of the SQuAD file at ``path``."""
    try:
        articles = json.loads(read_text(path))["data"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not a SQuAD file ({e}); fix it or write JSON lines.") from None
    out = []
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            for q in paragraph.get("qas", []):
                answers = [] if q.get("is_impossible") else q.get("answers", [])
                fields = {
                    "id": str(q.get("id", len(out))),
                    "title": article.get("title", ""),
                    "question": q.get("question", ""),
                    "context": paragraph.get("context", ""),
                    "answers": {
                        "text": [x.get("text", "") for x in answers],
                        "answer_start": [x.get("answer_start", -1) for x in answers],
                    },
                }
                where = f"{path} article {a + 1} paragraph {p + 1} question {fields['id']}"
                out.append(Record(fields, where))
    return out


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


def _read_conll(path: pathlib.Path) -> list[dict]:
    """CoNLL columns: a token a line, its first column the word and its last the tag (columns
    split by tabs when the first token line has one, else by spaces), a blank line between
    sentences, ``-DOCSTART-`` lines skipped. Records ``{"tokens", "tags"}``, each from the line
    its sentence starts on; a line with another column count than the first stops the run."""
    records, tokens, tags, start, columns, tabs = [], [], [], 0, None, False
    lines = read_text(path).splitlines()
    for n, line in enumerate([*lines, ""], 1):
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                records.append(Record({"tokens": tokens, "tags": tags}, f"{path} line {start}"))
            tokens, tags = [], []
            continue
        if columns is None:
            tabs = "\t" in line
        cells = line.rstrip("\r\n").split("\t") if tabs else line.split()
        columns = len(cells) if columns is None else columns
        if len(cells) != columns or columns < 2:
            raise DataError(
                f"{path} line {n} has {len(cells)} column{'s' * (len(cells) != 1)} but "
                f"{'the lines before have' if columns >= 2 and n > 1 else 'a token line needs'} "
                f"{max(columns, 2)}; give every token line its word first and its tag last."
            )
        start = start if tokens else n
        tokens.append(cells[0])
        tags.append(cells[-1])
    return records


def read_file(path: pathlib.Path, conll: bool = False) -> list[dict]:
    """The records of ``path`` by its extension; ``conll``: a ``.txt`` file is CoNLL columns
    (token classification's), as a ``.conll`` file always is."""
    suffix = path.suffix.lower()
    if suffix == ".conll" or (conll and suffix == ".txt"):
        return _read_conll(path)
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


def empty_text(where: str, field: str) -> DataError:
    """The one sentence for a record whose text field ``field`` is empty, at ``where``."""
    return DataError(
        f"{where} has an empty {field!r}; fill it in, remove that record, or set "
        "--config.data.skip_empty_texts=True to leave such records out."
    )
