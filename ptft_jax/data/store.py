"""The prepared token store: a corpus tokenized once and packed into fixed-length blocks in
ArrayRecord shards, read back with random access (Grain's ``ArrayRecordDataSource``) so a
training process holds no more than its batches, whatever the corpus size.

    DIR/manifest.json          written last: format, sequence length, tokenizer fingerprint,
                               the held-out rule, sources, and per split its shards with their
                               block and token counts (a folder without it is unfinished)
    DIR/tokenizer/             the tokenizer the blocks were made with
    DIR/<split>/NNNNN.array_record   one record per block: its real tokens (no padding);
                               with a word segmenter (manifest ``word_segmenter``) followed by
                               one byte per token, 1 where it continues a word (``segment.py``)

The manifest's ``blocks`` says what a record is, for the task that reads it:

* ``mlm``: ``[CLS] tokens [SEP]`` with documents concatenated, each followed by ``[SEP]``,
  exactly as ``pipeline.pack`` cuts them (``max_seq_length`` tokens).
* ``next_token`` (task ``causal_lm``): documents each followed by the end-of-text token, cut
  into windows of ``max_seq_length + 1`` tokens that start every ``max_seq_length``, exactly as
  ``causal.pack_stream`` cuts them: the model reads the first L and predicts the last L.

A document is held out for ``validation`` by a hash of its text, so it stays where it is when
the corpus grows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib

import numpy as np

from ptft_jax.data.pipeline import Blocks
from ptft_jax.errors import DataError

FORMAT = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "validation")
BLOCKS = ("mlm", "next_token")  # what a record is (the module doc); manifests before: mlm


def is_store(source: str) -> bool:
    """Whether ``source`` is a finished prepared folder."""
    return (pathlib.Path(source).expanduser() / MANIFEST).is_file()


def held_out(text: str, fraction: float) -> bool:
    """Whether a document is in the held-out split: the first 8 bytes of its BLAKE2b hash, read
    as a fraction of 2**64, fall below ``fraction``."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


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


def width(manifest: dict) -> int:
    """The tokens of a full record: ``max_seq_length``, one more for next-token windows."""
    return manifest["seq_len"] + int(manifest.get("blocks", "mlm") == "next_token")


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
        self.packers = {s: packer(blocks, seq_len, ids) for s in SPLITS}
        # Word flags (``words``: a segmenter's) are cut exactly as the ids: 0 at [CLS] and [SEP].
        self.words = {s: Packer(seq_len, 0, 0) for s in SPLITS} if words else None
        self.shards = {s: Shards(out / s, dtype, per_shard, index) for s in SPLITS}
        self.documents = self.tokens = self.bytes = 0

    def add(self, encoded: dict) -> None:
        """Add one chunk of documents as the tokenizing workers return it (split streams and
        counts)."""
        for split in SPLITS:
            words = self.words and self.words[split].feed(encoded[f"{split}_words"])
            self.shards[split].write_all(self.packers[split].feed(encoded[split]), words)
        self.documents += encoded["documents"]
        self.tokens += encoded["tokens"]
        self.bytes += encoded["bytes"]

    def finish(self) -> dict:
        for split in SPLITS:
            words = self.words and self.words[split].finish()
            self.shards[split].write_all(self.packers[split].finish(), words)
            self.shards[split].close()
        record = {"input": self.name, "documents": self.documents, "tokens": self.tokens}
        record |= {"bytes": self.bytes, "shards": {s: self.shards[s].done for s in SPLITS}}
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
    for split in SPLITS:
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
    _write_json(out / MANIFEST, manifest)


def read_manifest(folder: pathlib.Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        raise DataError(
            f"{folder / MANIFEST} is missing or unreadable; prepare the folder again with "
            "python -m ptft_jax.prepare."
        ) from None
    if manifest.get("format") != FORMAT:
        raise DataError(
            f"{folder} was prepared in format {manifest.get('format')}, not {FORMAT}; prepare it "
            "again with this version of ptft_jax."
        )
    return manifest


class StoreBlocks:
    """One split of a prepared folder as ``Blocks`` read on demand: ``take(idx)`` reads just
    those blocks (random access), padded to the sequence length."""

    types = labels = None  # packed blocks: no sentence pairs

    def __init__(self, folder: pathlib.Path, split: str, manifest: dict, pad_id: int):
        import grain

        shards = manifest["splits"][split]["shards"]
        paths = [folder / split / s["file"] for s in shards]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataError(
                f"{missing[0]} is missing from the prepared folder {folder}; prepare it again."
            )
        for path, shard in zip(paths, shards, strict=True):
            if path.stat().st_size != shard.get("bytes", path.stat().st_size):
                raise DataError(
                    f"{path} has {path.stat().st_size} bytes but the manifest says "
                    f"{shard['bytes']}: it is damaged; prepare the folder again."
                )
        self.seq_len, self.pad_id = width(manifest), pad_id
        self.has_words = bool(manifest.get("word_segmenter"))
        self.folder, self.split, self.shards = folder, split, shards
        self.dtype = np.dtype(manifest["dtype"])
        try:
            self.source = grain.sources.ArrayRecordDataSource([str(p) for p in paths])
        except RuntimeError as e:  # a shard's index or headers fail their hashes
            raise DataError(
                f"A shard of {folder / split} is damaged ({str(e).split(';')[0]}); prepare the "
                "folder again."
            ) from None
        self.count = sum(s["blocks"] for s in shards)
        if len(self.source) != self.count:
            raise DataError(
                f"The {split} shards of {folder} hold {len(self.source)} blocks but its manifest "
                f"says {self.count}; a shard is damaged: prepare the folder again."
            )

    def __len__(self) -> int:
        return self.count

    def _damaged(self, idx: np.ndarray) -> str:
        """The first shard among those holding blocks ``idx`` that fails to read."""
        ends = np.cumsum([s["blocks"] for s in self.shards])
        for shard in sorted(set(np.searchsorted(ends, idx, side="right").tolist())):
            start = int(ends[shard - 1]) if shard else 0
            try:
                self.source.__getitems__(list(range(start, int(ends[shard]))))
            except RuntimeError:
                return self.shards[shard]["file"]
        return "a shard"  # not found again: the damage is in what the batch read

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.rows(idx)[:2]

    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(ids, lengths, word flags or None)`` of blocks ``idx``, read once."""
        try:
            records = self.source.__getitems__([int(i) for i in idx])
        except RuntimeError as e:  # Riegeli checks every chunk's hash as it reads
            if "orrupt" not in str(e):
                raise
            raise DataError(
                f"{self.folder / self.split / self._damaged(idx)} is damaged "
                f"({str(e).split(';')[0]}); prepare the folder again."
            ) from None
        ids = np.full((len(records), self.seq_len), self.pad_id, np.int32)
        lengths = np.zeros(len(records), np.int64)
        words = np.zeros(ids.shape, bool) if self.has_words else None
        for r, record in enumerate(records):
            n = len(record) // (self.dtype.itemsize + self.has_words)
            ids[r, :n], lengths[r] = np.frombuffer(record, self.dtype, n), n
            if words is not None:
                words[r, :n] = np.frombuffer(record, np.uint8, n, n * self.dtype.itemsize)
        return ids, lengths, words


def open_split(folder, split: str, pad_id: int) -> StoreBlocks:
    folder = pathlib.Path(folder).expanduser()
    return StoreBlocks(folder, split, read_manifest(folder), pad_id)


def check_blocks(folder, manifest: dict, task) -> None:
    """One sentence when the folder's kind of block is not what ``task`` reads."""
    blocks = manifest.get("blocks", "mlm")
    if blocks != task.store_blocks:
        raise DataError(
            f"{folder} holds {blocks} blocks, which task={task.name} does not read; prepare the "
            f"corpus again with a task={task.name} config, or train task={_READER[blocks]}."
        )


def open_for(data_cfg, task, tokenizer, pad_id: int) -> tuple[StoreBlocks, StoreBlocks]:
    """The train and validation blocks of the prepared folder ``data.source``, checked against
    the run: the task's kind of block (``task.store_blocks``), the sequence length and the
    tokenizer; one sentence naming the fix for each mismatch."""
    from ptft_jax.data import tokenize

    folder = data_cfg.source
    manifest = read_manifest(pathlib.Path(folder).expanduser())
    check_blocks(folder, manifest, task)
    if manifest["seq_len"] != data_cfg.max_seq_length:
        raise DataError(
            f"{folder} holds blocks of {manifest['seq_len']} tokens but data.max_seq_length is "
            f"{data_cfg.max_seq_length}; set --config.data.max_seq_length={manifest['seq_len']} "
            "or prepare the corpus again."
        )
    if manifest["tokenizer"] != tokenize.tokenizer_fingerprint(tokenizer):
        raise DataError(
            f"{folder} was tokenized with another tokenizer than data.tokenizer="
            f"{data_cfg.tokenizer}; drop --config.data.tokenizer (the folder's is used) or "
            "prepare the corpus again with this one."
        )
    wanted, found = data_cfg.get("word_segmenter", ""), manifest.get("word_segmenter", "")
    if wanted and not found.startswith(f"{wanted}-"):
        raise DataError(
            f"{folder} was prepared without data.word_segmenter={wanted!r}, so its blocks mark "
            f"no words{f' ({found})' if found else ''}; prepare the corpus again with it, or "
            "drop the segmenter."
        )
    path = pathlib.Path(folder).expanduser()
    return tuple(StoreBlocks(path, split, manifest, pad_id) for split in SPLITS)


def held_out_split(data_cfg, task, tokenizer, pad_id: int, split: str) -> StoreBlocks:
    """The ``validation`` blocks of a prepared folder, as training read them; a folder has no
    ``test`` split (one sentence)."""
    if split != "validation":
        raise DataError(
            f"{data_cfg.source} is a prepared folder: it holds train and validation blocks, no "
            f"{split} split; evaluate --split=validation, or prepare the test text on its own "
            "and pass it with --config.data.source."
        )
    return open_for(data_cfg, task, tokenizer, pad_id)[1]


_READER = {"mlm": "mlm", "next_token": "causal_lm"}  # the task that trains on each kind


def as_blocks(blocks: list[np.ndarray], seq_len: int, pad_id: int) -> Blocks:
    """In-memory ``Blocks`` of a list of blocks (for tests and small splits)."""
    ids = np.full((len(blocks), seq_len), pad_id, np.int32)
    for r, b in enumerate(blocks):
        ids[r, : len(b)] = b
    return Blocks(ids=ids, lengths=np.array([len(b) for b in blocks], np.int64))
