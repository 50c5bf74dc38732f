"""Writing the token store (``store.py`` holds its format and reads it): tokenize and pack a
corpus's inputs with the functions both writers run, the local process pool of ``python -m
ptft_jax.prepare`` and its Apache Beam pipeline (``beam.py``), so the two write the same records.

A worker process loads the tokenizer once (``start_worker``) and turns chunks of documents into
each split's token stream (``encode``); one ``Unit`` per input packs those streams, in order,
into that input's shards (``Packer``/``NextTokenPacker``: the blocks ``pipeline.pack`` and
``causal.pack_stream`` cut in memory; ``Shards``: ArrayRecord files written under a temporary
name until complete), and writes the input's record last.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Iterable, Iterator

import numpy as np

from ptft_jax.data import coverage, store, stream, tokenize

CHUNK = 512  # documents per tokenization job
_WORKER = {}


def separators(tokenizer, blocks: str) -> dict[str, int]:
    """The ids a packer of ``blocks`` records needs: ``sep`` ends every document ([SEP], or
    the end of text for next-token blocks), ``cls`` starts an MLM block."""
    if blocks == "next_token":
        return {"sep": tokenize.end_of_text_id(tokenizer)}
    return tokenize.special_ids(tokenizer)


def start_worker(tokenizer_dir: str, fraction: float, blocks: str, segmenter: str = "") -> None:
    """Load the store's tokenizer in this process, for ``encode`` and ``pack_input``; with a
    word ``segmenter``, ``encode`` also marks the tokens that continue a word (``segment.py``)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism
    tokenizer = tokenize.load_tokenizer(tokenizer_dir)
    # encode() calls the Rust tokenizer directly, which applies the padding and truncation a
    # tokenizer.json may carry (sentence-transformers' pad every text to 128): documents are
    # tokenized whole, without either.
    tokenizer.backend_tokenizer.no_padding()
    tokenizer.backend_tokenizer.no_truncation()
    _WORKER.update(tokenizer=tokenizer, fraction=fraction, blocks=blocks, segmenter=segmenter)
    _WORKER["ids"] = separators(tokenizer, blocks)
    _WORKER["unknown"] = coverage.unknown_id(tokenizer)
    if segmenter:
        _WORKER["by_piece"] = tokenize.word_continuations(tokenizer)


def encode(texts: list[str]) -> dict:
    """One chunk of documents as each split's token stream (``stream_of``), with counts;
    with a word segmenter also each split's stream of word flags (``<split>_words``: 1 where a
    token continues a word, 0 at the separators)."""
    backend, segmenter = _WORKER["tokenizer"].backend_tokenizer, _WORKER["segmenter"]
    if segmenter:  # the offsets locate each token in the text the segmenter cuts into words
        from ptft_jax.data import segment

        full = backend.encode_batch(texts, add_special_tokens=False)
        encoded = [e.ids for e in full]
        words = [
            segment.continues(t, np.array(e.offsets, np.int64).reshape(-1, 2),
                              _WORKER["by_piece"][np.array(e.ids, np.int64)], segmenter)
            for t, e in zip(texts, full, strict=True)
        ]  # fmt: skip
    else:  # the Rust tokenizer without offsets or masks: the same ids, faster
        encoded = [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
        words = [None] * len(texts)
    split = {name: [] for name in store.SPLITS}
    flags = {name: [] for name in store.SPLITS}
    for text, ids, w in zip(texts, encoded, words, strict=True):
        held = "validation" if store.held_out(text, _WORKER["fraction"]) else "train"
        split[held].append(np.asarray(ids, np.int32))
        flags[held].append(w)
    out = {name: stream_of(docs, _WORKER["ids"]["sep"]) for name, docs in split.items()}
    if segmenter:
        out |= {f"{name}_words": stream_of(f, 0) for name, f in flags.items()}
    out["documents"], out["tokens"] = len(texts), sum(map(len, encoded))
    unk = _WORKER["unknown"]
    out["unknown"] = 0 if unk is None else sum(ids.count(unk) for ids in encoded)
    out["bytes"] = sum(len(t.encode("utf-8")) for t in texts)
    return out


def chunks(
    todo: Iterable[tuple[int, str]], field: str, skip_empty: bool = False
) -> Iterator[tuple[tuple, list[str]]]:
    """``((input index, last), texts)``: the documents of each input of ``todo`` in chunks of
    ``CHUNK``; the last chunk of an input says so (it may be empty). An empty text stops it, or
    with ``skip_empty`` is left out (``stream.input_documents``)."""
    for index, name in todo:
        chunk = []
        for _, text in stream.input_documents(name, field, skip_empty):
            chunk.append(text)
            if len(chunk) == CHUNK:
                yield (index, False), chunk
                chunk = []
        yield (index, True), chunk


def dtype_of(tokenizer) -> str:
    """The narrowest type that holds every token id."""
    return "uint16" if len(tokenizer) <= 2**16 else "int32"


def pack_input(
    out: pathlib.Path, index, name: str, field: str, seq_len: int, per_shard, skip_empty=False
):
    """Tokenize and pack one whole input in this process (after ``start_worker``): its shards
    and record (``Unit``)."""
    ids, dtype, blocks = _WORKER["ids"], dtype_of(_WORKER["tokenizer"]), _WORKER["blocks"]
    words = bool(_WORKER["segmenter"])
    unit = Unit(out, index, name, seq_len, ids, dtype, per_shard, blocks, words)
    for _, texts in chunks([(index, name)], field, skip_empty):
        unit.add(encode(texts))
    return unit.finish()


class Packer:
    """Streams documents' token ids into ``[CLS] body [SEP]`` blocks of ``seq_len``: the same
    blocks as ``pipeline.pack`` on the whole list, without holding it."""

    def __init__(self, seq_len: int, cls_id: int, sep_id: int):
        self.body, self.cls, self.sep = seq_len - 2, cls_id, sep_id
        self.rest = np.zeros(0, np.int64)

    def feed(self, stream: np.ndarray) -> np.ndarray:
        """Append ``stream`` (documents' ids, each followed by [SEP]); returns the complete
        blocks ``[n, seq_len]`` it makes."""
        buffer = np.concatenate([self.rest, stream.astype(np.int64)])
        n = len(buffer) // self.body
        self.rest = buffer[n * self.body :].copy()
        bodies = buffer[: n * self.body].reshape(n, self.body)
        column = np.ones((n, 1), np.int64)
        return np.concatenate([column * self.cls, bodies, column * self.sep], axis=1)

    def add(self, ids: np.ndarray) -> list[np.ndarray]:
        """Add one document; returns the blocks it completes."""
        if not len(ids):
            return []
        return list(self.feed(np.append(np.asarray(ids, np.int64), self.sep)))

    def finish(self) -> list[np.ndarray]:
        """The last, shorter block (if any tokens are left)."""
        if not len(self.rest):
            return []
        block = np.concatenate([[self.cls], self.rest, [self.sep]]).astype(np.int64)
        self.rest = np.zeros(0, np.int64)
        return [block]


class NextTokenPacker:
    """Streams documents' token ids into next-token windows of ``seq_len + 1`` tokens that
    start every ``seq_len``: the blocks of ``causal.pack_stream`` on the whole list."""

    def __init__(self, seq_len: int):
        self.seq_len = seq_len
        self.rest = np.zeros(0, np.int64)

    def feed(self, stream: np.ndarray) -> np.ndarray:
        """Append ``stream`` (documents' ids, each followed by the end of text); returns the
        complete windows ``[n, seq_len + 1]``. Each window's last token starts the next."""
        buffer = np.concatenate([self.rest, stream.astype(np.int64)])
        n = max((len(buffer) - 1) // self.seq_len, 0)
        starts = np.arange(n) * self.seq_len
        windows = buffer[starts[:, None] + np.arange(self.seq_len + 1)]
        self.rest = buffer[n * self.seq_len :].copy()
        return windows

    def finish(self) -> list[np.ndarray]:
        """The last, shorter window, when it predicts at least one token."""
        rest, self.rest = self.rest, np.zeros(0, np.int64)
        return [rest] if len(rest) > 1 else []


def packer(blocks: str, seq_len: int, ids: dict):
    """The packer of one split's stream for records of kind ``blocks`` (``BLOCKS``)."""
    if blocks == "next_token":
        return NextTokenPacker(seq_len)
    return Packer(seq_len, ids["cls"], ids["sep"])


def stream_of(documents: list[np.ndarray], sep_id: int) -> np.ndarray:
    """Documents' ids concatenated, each non-empty one followed by [SEP] (``Packer.feed``)."""
    pieces = [p for d in documents if len(d) for p in (d, [sep_id])]
    return np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, np.int64)


@dataclasses.dataclass
class Shards:
    """Writes one input's blocks of one split into ArrayRecord shards of ``per_shard`` blocks,
    named ``<input>-<shard>.array_record``, each under a temporary name until it is complete."""

    folder: pathlib.Path
    dtype: str
    per_shard: int
    unit: int  # the input's index: its shards are named after it
    done: list = dataclasses.field(default_factory=list)  # {"file", "blocks", "tokens", "bytes"}

    def __post_init__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writer, self._blocks, self._tokens = None, 0, 0

    def write(self, block: np.ndarray, words: np.ndarray | None = None) -> None:
        from array_record.python.array_record_module import ArrayRecordWriter

        if self._writer is None:
            self._name = f"{self.unit:05d}-{len(self.done):05d}.array_record"
            # One record a chunk (random access reads one block); uncompressed: token ids hardly
            # compress, and the default brotli took four times as long to write.
            options = "group_size:1,uncompressed"
            self._writer = ArrayRecordWriter(str(self.folder / f".{self._name}.tmp"), options)
        flags = b"" if words is None else words.astype(np.uint8).tobytes()
        self._writer.write(block.astype(self.dtype).tobytes() + flags)
        self._blocks, self._tokens = self._blocks + 1, self._tokens + len(block)
        if self._blocks == self.per_shard:
            self.close()

    def write_all(self, blocks, words=None) -> None:
        for block, flags in zip(
            blocks, [None] * len(blocks) if words is None else words, strict=True
        ):
            self.write(block, flags)

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        os.replace(self.folder / f".{self._name}.tmp", self.folder / self._name)
        size = (self.folder / self._name).stat().st_size
        record = {"file": self._name, "blocks": self._blocks, "tokens": self._tokens}
        self.done.append({**record, "bytes": size})
        self._writer, self._blocks, self._tokens = None, 0, 0


class Unit:
    """Packs one input (a corpus file, or the whole of a built-in or hub source) into its own
    shards: its blocks depend on nothing else, so inputs can be written in any order or on any
    machine (the Beam pipeline), and a rerun skips the inputs whose record ``DIR/.done/N.json``
    exists. The record, written last, lists the input's shards and counts."""

    def __init__(
        self, out: pathlib.Path, index, name: str, seq_len, ids, dtype, per_shard, blocks, words
    ):
        self.out, self.index, self.name = out, index, name
        self.packers = {s: packer(blocks, seq_len, ids) for s in store.SPLITS}
        # Word flags (``words``: a segmenter's) are cut exactly as the ids: 0 at [CLS] and [SEP].
        self.words = {s: Packer(seq_len, 0, 0) for s in store.SPLITS} if words else None
        self.shards = {s: Shards(out / s, dtype, per_shard, index) for s in store.SPLITS}
        self.documents = self.tokens = self.bytes = self.unknown = 0

    def add(self, encoded: dict) -> None:
        """Add one chunk of documents as the tokenizing workers return it (split streams and
        counts)."""
        for split in store.SPLITS:
            words = self.words and self.words[split].feed(encoded[f"{split}_words"])
            self.shards[split].write_all(self.packers[split].feed(encoded[split]), words)
        self.documents += encoded["documents"]
        self.tokens += encoded["tokens"]
        self.bytes += encoded["bytes"]
        self.unknown += encoded["unknown"]

    def finish(self) -> dict:
        for split in store.SPLITS:
            words = self.words and self.words[split].finish()
            self.shards[split].write_all(self.packers[split].finish(), words)
            self.shards[split].close()
        record = {"input": self.name, "documents": self.documents, "tokens": self.tokens}
        record |= {
            "bytes": self.bytes,
            "unknown": self.unknown,
            "shards": {s: self.shards[s].done for s in store.SPLITS},
        }
        _write_json(unit_record(self.out, self.index), record)
        return record


def unit_record(out: pathlib.Path, index: int) -> pathlib.Path:
    return out / ".done" / f"{index:05d}.json"


def finished_units(out: pathlib.Path) -> dict[int, dict]:
    """The records of the inputs already packed into ``out`` (by index)."""
    done = {}
    for path in sorted((out / ".done").glob("*.json")):
        done[int(path.stem)] = json.loads(path.read_text())
    return done


def clear_unit(out: pathlib.Path, index: int) -> None:
    """Remove an unfinished input's shards (complete or temporary) before it is written again."""
    for split in store.SPLITS:
        for pattern in (f"{index:05d}-*.array_record", f".{index:05d}-*.array_record.tmp"):
            for path in (out / split).glob(pattern):
                path.unlink()
    unit_record(out, index).unlink(missing_ok=True)


def _write_json(path: pathlib.Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def write_manifest(out: pathlib.Path, manifest: dict) -> None:
    _write_json(out / store.MANIFEST, manifest)
