"""The prepared token store: a corpus tokenized once and packed into fixed-length blocks in
ArrayRecord shards, read back with random access (Grain's ``ArrayRecordDataSource``) so a
training process holds no more than its batches, whatever the corpus size.

    DIR/manifest.json          written last: format, sequence length, tokenizer fingerprint,
                               the held-out rule, sources, and per split its shards with their
                               block and token counts (a folder without it is unfinished)
    DIR/tokenizer/             the tokenizer the blocks were made with
    DIR/<split>/NNNNN.array_record   one record per block: its real tokens (no padding)

A block is ``[CLS] tokens [SEP]`` with documents concatenated, each followed by ``[SEP]``,
exactly as ``pipeline.pack`` cuts them. A document is held out for ``validation`` by a hash
of its text, so it stays where it is when the corpus grows.
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


def stream_of(documents: list[np.ndarray], sep_id: int) -> np.ndarray:
    """Documents' ids concatenated, each non-empty one followed by [SEP] (``Packer.feed``)."""
    pieces = [p for d in documents if len(d) for p in (d, [sep_id])]
    return np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, np.int64)


@dataclasses.dataclass
class Shards:
    """Writes one split's blocks into ArrayRecord shards of ``per_shard`` blocks, each under a
    temporary name until it is complete."""

    folder: pathlib.Path
    dtype: str
    per_shard: int
    done: list = dataclasses.field(default_factory=list)  # {"file", "blocks", "tokens"}

    def __post_init__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writer, self._blocks, self._tokens = None, 0, 0

    def write(self, block: np.ndarray) -> None:
        from array_record.python.array_record_module import ArrayRecordWriter

        if self._writer is None:
            self._name = f"{len(self.done):05d}.array_record"
            self._writer = ArrayRecordWriter(
                str(self.folder / f".{self._name}.tmp"), "group_size:1"
            )
        self._writer.write(block.astype(self.dtype).tobytes())
        self._blocks, self._tokens = self._blocks + 1, self._tokens + len(block)
        if self._blocks == self.per_shard:
            self.close()

    def write_all(self, blocks: np.ndarray) -> None:
        """Write full blocks ``[n, seq_len]``."""
        for block in blocks.astype(self.dtype):
            self.write(block)

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        os.replace(self.folder / f".{self._name}.tmp", self.folder / self._name)
        size = (self.folder / self._name).stat().st_size
        record = {"file": self._name, "blocks": self._blocks, "tokens": self._tokens}
        self.done.append({**record, "bytes": size})
        self._writer, self._blocks, self._tokens = None, 0, 0


def write_manifest(out: pathlib.Path, manifest: dict) -> None:
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)


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
        self.seq_len, self.pad_id = manifest["seq_len"], pad_id
        self.dtype = np.dtype(manifest["dtype"])
        self.source = grain.sources.ArrayRecordDataSource([str(p) for p in paths])
        self.count = sum(s["blocks"] for s in shards)
        if len(self.source) != self.count:
            raise DataError(
                f"The {split} shards of {folder} hold {len(self.source)} blocks but its manifest "
                f"says {self.count}; a shard is damaged: prepare the folder again."
            )

    def __len__(self) -> int:
        return self.count

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        records = self.source.__getitems__([int(i) for i in idx])
        ids = np.full((len(records), self.seq_len), self.pad_id, np.int32)
        lengths = np.zeros(len(records), np.int64)
        for r, record in enumerate(records):
            block = np.frombuffer(record, self.dtype)
            ids[r, : len(block)], lengths[r] = block, len(block)
        return ids, lengths


def open_split(folder, split: str, pad_id: int) -> StoreBlocks:
    folder = pathlib.Path(folder).expanduser()
    return StoreBlocks(folder, split, read_manifest(folder), pad_id)


def as_blocks(blocks: list[np.ndarray], seq_len: int, pad_id: int) -> Blocks:
    """In-memory ``Blocks`` of a list of blocks (for tests and small splits)."""
    ids = np.full((len(blocks), seq_len), pad_id, np.int32)
    for r, b in enumerate(blocks):
        ids[r, : len(b)] = b
    return Blocks(ids=ids, lengths=np.array([len(b) for b in blocks], np.int64))
