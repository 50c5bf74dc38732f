"""Documents streamed from a corpus of any size, one at a time with where each came from.

A corpus is a file, a folder (every corpus file under it, recursively) or a glob of them, in
sorted path order: ``.txt`` (one document a line), ``.jsonl`` (one JSON object a line, its
text field), ``.csv`` (a header row; its text column) and ``.parquet`` (its text column), each
optionally gzip (``.gz``) or zstd (``.zst``) compressed; a Hugging Face hub dataset
(``hf:<name>[:<config>]``, its train split streamed); or a built-in source. Nothing is read
ahead: memory stays flat whatever the corpus size.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import logging
import pathlib
from collections.abc import Iterator

from ptft_jax.data.files import empty_text
from ptft_jax.errors import DataError

log = logging.getLogger(__name__)

KINDS = (".txt", ".jsonl", ".csv", ".parquet")
COMPRESSED = (".gz", ".zst")


def _format(path: pathlib.Path) -> str:
    """The corpus format of ``path`` (its suffix, a compression suffix aside), or ''."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes and suffixes[-1] in KINDS else ""


def files(source: str) -> list[pathlib.Path]:
    """The corpus files of ``source`` (a file, a folder or a glob), sorted."""
    path = pathlib.Path(source).expanduser()
    if any(c in source for c in "*?["):
        found = [pathlib.Path(p) for p in glob.glob(str(path), recursive=True)]
    elif path.is_dir():
        found = list(path.rglob("*"))
    elif path.is_file():
        found = [path]
    else:
        raise DataError(f"data.source {source!r} does not exist; point it at the corpus.")
    found = sorted(p for p in found if p.is_file() and _format(p))
    if not found:
        raise DataError(
            f"data.source {source!r} holds no corpus file; use {', '.join(KINDS)} files "
            "(optionally .gz or .zst)."
        )
    return found


def _open(path: pathlib.Path):
    """A binary stream of ``path``'s decompressed bytes."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise DataError(
                f"{path} is zstd-compressed; pip install zstandard to read it."
            ) from None
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))  # noqa: SIM115
    return open(path, "rb")  # noqa: SIM115


def _lines(path: pathlib.Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a text file, or one sentence naming the line not in UTF-8."""
    with _open(path) as raw:
        for n, line in enumerate(raw, 1):
            try:
                yield n, line.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path} line {n} is not valid UTF-8 (byte {e.start}); re-encode the file "
                    "as UTF-8, for example with `iconv -f latin1 -t utf-8`."
                ) from None


def _field(row: dict, field: str, where: str) -> str:
    if field not in row:
        raise DataError(
            f"{where} has no {field!r} field (it has {', '.join(map(repr, row)) or 'none'}); "
            "set --config.data.text_field."
        )
    value = row[field]
    if value is not None and not isinstance(value, str):
        raise DataError(f"{where}: {field!r} is not text; write it as a string.")
    return value or ""


def _csv_documents(path: pathlib.Path, field: str) -> Iterator[tuple[str, str]]:
    """``(where, text)`` of each row of a CSV file, named by the line the row starts on."""
    from ptft_jax.data.files import csv_field_limit

    csv_field_limit()  # a long text is one cell, not an error
    with io.TextIOWrapper(_open(path), encoding="utf-8-sig", newline="") as text:
        reader, header, end = csv.reader(text), None, 0  # end: the last line read so far
        try:
            for cells in reader:
                first, end = end + 1, reader.line_num  # a quoted cell can span lines
                if not cells:  # a blank line is no row
                    continue
                if header is None:
                    header = cells
                    continue
                # A missing cell is empty (as csv.DictReader's restval makes it).
                row = dict(zip(header, [*cells, *[None] * len(header)], strict=False))
                yield f"{path} line {first}", _field(row, field, f"{path} line {first}")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path} is not valid UTF-8 (byte {e.start}); re-encode it as UTF-8."
            ) from None
        except csv.Error as e:
            raise DataError(
                f"{path} is not valid CSV (line {end + 1}: {e}); fix the quoting or export it "
                "again."
            ) from None


def _documents_of(path: pathlib.Path, field: str) -> Iterator[tuple[str, str]]:
    form = _format(path)
    if form == ".txt":  # a blank line is no document
        for n, line in _lines(path):
            if line.strip():
                yield f"{path} line {n}", line.rstrip("\r\n")
    elif form == ".jsonl":
        for n, line in _lines(path):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise DataError(
                    f"{path} line {n} is not valid JSON ({e}); fix that line."
                ) from None
            if not isinstance(row, dict):
                raise DataError(f"{path} line {n} holds no JSON object; write one object a line.")
            yield f"{path} line {n}", _field(row, field, f"{path} line {n}")
    elif form == ".csv":
        yield from _csv_documents(path, field)
    else:
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        if field not in table.schema_arrow.names:
            raise DataError(f"{path} has no {field!r} column; set --config.data.text_field.")
        n = 0
        for batch in table.iter_batches(columns=[field], batch_size=4096):
            for value in batch.column(0).to_pylist():
                n += 1
                yield f"{path} row {n}", _field({field: value}, field, f"{path} row {n}")


def inputs(source: str) -> list[str]:
    """The inputs of ``source`` that are packed separately: each corpus file (sorted), or a
    built-in or hub source as one input."""
    if source.startswith(("builtin:", "hf:")):
        return [source]
    return [str(p) for p in files(source)]


def documents(source: str, field: str = "text", skip_empty=False) -> Iterator[tuple[str, str]]:
    """``(where, text)`` of every document of ``source``, in order (``input_documents``)."""
    for name in inputs(source):
        yield from input_documents(name, field, skip_empty)


def input_documents(name: str, field: str = "text", skip_empty=False) -> Iterator[tuple[str, str]]:
    """``(where, text)`` of every document of one input (``inputs``). A record whose text is
    empty stops the stream naming it, or with ``skip_empty`` (``data.skip_empty_texts``) is left
    out with one line that counts them; the blank lines of .txt files are no documents."""
    if name.startswith("builtin:"):
        from ptft_jax.data import sources

        for records in sources.load_records(name, fields=(field,), skip_empty=skip_empty).values():
            for record in records:
                yield sources.origin(record), sources.text_of(record, field)
        return
    if name.startswith("hf:"):
        docs = _hub(name.removeprefix("hf:"), field)
    else:
        docs = _documents_of(pathlib.Path(name), field)
    left_out, first = 0, ""
    for where, text in docs:
        if text.strip():
            yield where, text
            continue
        if not skip_empty:
            raise empty_text(where, field)
        left_out, first = left_out + 1, first or where
    if left_out:
        s = "s" * (left_out != 1)
        log.info("left out %d record%s with an empty %r (first at %s)", left_out, s, field, first)


def _hub(spec: str, field: str) -> Iterator[tuple[str, str]]:
    """A hub dataset's train split in streaming mode: rows arrive as they download."""
    import datasets

    name, _, config = spec.partition(":")
    try:
        rows = datasets.load_dataset(name, config or None, split="train", streaming=True)
        for n, row in enumerate(rows, 1):
            yield f"hf:{spec} train row {n}", _field(row, field, f"hf:{spec} train row {n}")
    except (ConnectionError, FileNotFoundError, ValueError) as e:
        raise DataError(
            f"Could not stream hf:{spec} ({type(e).__name__}); check the name, or download the "
            "data where you are online and point data.source at the files."
        ) from None


def size(source: str) -> int:
    """Bytes of the corpus on disk when they are about the bytes of its text (uncompressed
    text files), for a progress bar's total; else 0 (unknown)."""
    if source.startswith(("builtin:", "hf:")):
        return 0
    paths = files(source)
    if any(p.suffix.lower() in COMPRESSED or _format(p) == ".parquet" for p in paths):
        return 0
    return sum(p.stat().st_size for p in paths)
