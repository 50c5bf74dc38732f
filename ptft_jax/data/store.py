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
the corpus grows. ``writer.py`` writes the folder; this module reads it.
"""

from __future__ import annotations

import hashlib
import json
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


def width(manifest: dict) -> int:
    """The tokens of a full record: ``max_seq_length``, one more for next-token windows."""
    return manifest["seq_len"] + int(manifest.get("blocks", "mlm") == "next_token")


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
